"""User identities: a display name, an Ed25519 signing key and an X25519 encryption key.

A :class:`PublicIdentity` is what a user hands to an admin (as an identity file, see
:meth:`PublicIdentity.to_json`) to be invited; a :class:`UserIdentity` holds the private halves
and lives only in the keystore (:meth:`UserIdentity.to_secret_dict`). Sealed boxes
(:func:`seal_to`, :func:`open_sealed`) carry secrets to one identity's encryption key.

Every public key is validated on construction: the signing key must be a canonical Ed25519
point outside the small-order subgroup, and the encryption key must not be a low-order X25519
point (which would make every shared secret zero).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import nacl.bindings
import nacl.exceptions
import nacl.public

from .codec import Reader, Writer
from .crypto.signing import SigningKeyPair
from .errors import DecodeError, InvalidNameError, VerificationError

IDENTITY_FILE_TYPE = "mindoo-identity"
IDENTITY_FILE_VERSION = 1
MAX_IDENTITY_FILE_SIZE = 16 * 1024
"""An identity file is a few hundred bytes; anything over this bound is refused unparsed."""

PUBLIC_KEY_SIZE = 32
MAX_NAME_CHARS = 128
MAX_NAME_BYTES = 4 * MAX_NAME_CHARS
"""The UTF-8 bound of a name in binary encodings (4 bytes per code point at most)."""
FINGERPRINT_HEX_CHARS = 16
FINGERPRINT_SIZE = FINGERPRINT_HEX_CHARS // 2

_HEX_KEY_RE = re.compile(r"[0-9a-f]{64}")
_IDENTITY_FILE_FIELDS = frozenset({"type", "version", "name", "signing_key", "encryption_key"})
_X25519_PROBE_SCALAR = bytes(range(1, 33))


def validate_display_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is 1-128 printable characters with no surrounding whitespace.

    Raises :class:`InvalidNameError` (a ``ValueError``) otherwise. Printable-only keeps names
    that arrive from other people's files free of control and terminal escape characters.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} must be a string, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidNameError(f"{what} must be 1-{MAX_NAME_CHARS} characters, got {len(name)}")
    if not name.isprintable() or name != name.strip():
        raise InvalidNameError(
            f"{what} {name!r} must be printable characters without leading or trailing spaces"
        )
    return name


def fingerprint_bytes(signing_key: bytes) -> bytes:
    """The first 8 bytes of SHA-256 of an Ed25519 public key (the fingerprint, in binary)."""
    return hashlib.sha256(signing_key).digest()[:FINGERPRINT_SIZE]


def fingerprint_of(signing_key: bytes) -> str:
    """The 16 hex characters that name a signing key to humans."""
    return fingerprint_bytes(signing_key).hex()


def check_signing_key(key: bytes) -> None:
    """Raise ValueError unless ``key`` is a usable Ed25519 public key."""
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
        raise ValueError("a signing key is a 32-byte Ed25519 public key")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
        raise ValueError("the signing key is not a valid Ed25519 public key")


def check_encryption_key(key: bytes) -> None:
    """Raise ValueError unless ``key`` is a usable X25519 public key (not of low order)."""
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
        raise ValueError("an encryption key is a 32-byte X25519 public key")
    try:
        nacl.bindings.crypto_scalarmult(_X25519_PROBE_SCALAR, key)
    except nacl.exceptions.CryptoError:
        raise ValueError("the encryption key is a low-order X25519 point") from None


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """The public half of a user identity: what others need to verify and encrypt to a user."""

    name: str
    signing_key: bytes
    """Ed25519 public key, 32 bytes."""
    encryption_key: bytes
    """X25519 public key, 32 bytes."""

    def __post_init__(self) -> None:
        validate_display_name(self.name, "identity name")
        check_signing_key(self.signing_key)
        check_encryption_key(self.encryption_key)

    @property
    def fingerprint(self) -> str:
        """The first 16 hex characters of SHA-256 of the signing key."""
        return fingerprint_of(self.signing_key)

    def to_json(self) -> str:
        """The identity file text (JSON, keys in hex), ending with a newline."""
        document = {
            "type": IDENTITY_FILE_TYPE,
            "version": IDENTITY_FILE_VERSION,
            "name": self.name,
            "signing_key": self.signing_key.hex(),
            "encryption_key": self.encryption_key.hex(),
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> PublicIdentity:
        """Parse an identity file strictly; raises :class:`DecodeError` and nothing else.

        Refused: more than 16 KiB, invalid UTF-8, invalid JSON (including NaN/Infinity and
        duplicate keys), anything but an object with exactly the five fields of
        :meth:`to_json`, another type or version, a bad name, keys that are not 64 lowercase
        hex characters or not valid public keys.
        """
        if isinstance(text, bytes | bytearray):
            if len(text) > MAX_IDENTITY_FILE_SIZE:
                _bad(f"{len(text)} bytes, over the limit of {MAX_IDENTITY_FILE_SIZE}")
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                _bad("not UTF-8 text")
        if not isinstance(text, str):
            _bad(f"expected text, got {type(text).__name__}")
        if len(text) > MAX_IDENTITY_FILE_SIZE:
            _bad(f"{len(text)} characters, over the limit of {MAX_IDENTITY_FILE_SIZE}")
        try:
            document = json.loads(
                text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant
            )
        except (ValueError, RecursionError) as exc:
            _bad(f"not valid JSON ({exc})")
        if not isinstance(document, dict):
            _bad("not a JSON object")
        if document.get("type") != IDENTITY_FILE_TYPE:
            _bad(f"not a mindoo identity (type must be {IDENTITY_FILE_TYPE!r})")
        version = document.get("version")
        if type(version) is not int or version != IDENTITY_FILE_VERSION:
            _bad(f"unsupported version {version!r} (this program reads version 1)")
        if set(document) != _IDENTITY_FILE_FIELDS:
            missing = sorted(_IDENTITY_FILE_FIELDS - set(document))
            extra = sorted(set(document) - _IDENTITY_FILE_FIELDS)
            _bad(f"wrong fields (missing {missing}, unexpected {extra})")
        name = document["name"]
        if not isinstance(name, str):
            _bad("name must be a string")
        signing_key = _hex_key(document["signing_key"], "signing_key")
        encryption_key = _hex_key(document["encryption_key"], "encryption_key")
        try:
            return cls(name=name, signing_key=signing_key, encryption_key=encryption_key)
        except ValueError as exc:
            _bad(str(exc))

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


def _bad(reason: str) -> NoReturn:
    raise DecodeError(f"identity file: {reason}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def _hex_key(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not _HEX_KEY_RE.fullmatch(value):
        _bad(f"{field} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def write_public_identity(w: Writer, identity: PublicIdentity) -> None:
    """Append the canonical binary form: name (varint length + UTF-8), signing key, enc key."""
    w.text(identity.name)
    w.fixed(identity.signing_key, PUBLIC_KEY_SIZE)
    w.fixed(identity.encryption_key, PUBLIC_KEY_SIZE)


def read_public_identity(r: Reader, field: str) -> PublicIdentity:
    """Read what :func:`write_public_identity` wrote; raises DecodeError only."""
    name = r.text(f"{field} name", MAX_NAME_BYTES)
    signing_key = r.fixed(PUBLIC_KEY_SIZE, f"{field} signing key")
    encryption_key = r.fixed(PUBLIC_KEY_SIZE, f"{field} encryption key")
    try:
        return PublicIdentity(name=name, signing_key=signing_key, encryption_key=encryption_key)
    except ValueError as exc:
        raise DecodeError(f"{r.what}: invalid {field}: {exc}") from None


class UserIdentity:
    """A user's private identity. Its secrets belong in the keystore and nowhere else."""

    __slots__ = ("encryption", "name", "signing")

    def __init__(
        self, name: str, signing: SigningKeyPair, encryption: nacl.public.PrivateKey
    ) -> None:
        self.name: str = validate_display_name(name, "identity name")
        self.signing: SigningKeyPair = signing
        self.encryption: nacl.public.PrivateKey = encryption

    @classmethod
    def generate(cls, name: str) -> UserIdentity:
        """A new identity with fresh random keys."""
        return cls(name, SigningKeyPair.generate(), nacl.public.PrivateKey.generate())

    def public(self) -> PublicIdentity:
        return PublicIdentity(
            name=self.name,
            signing_key=self.signing.public_key,
            encryption_key=bytes(self.encryption.public_key),
        )

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.signing.public_key)

    def to_secret_dict(self) -> dict[str, Any]:
        """The identity with its private keys in hex, for the keystore only."""
        return {
            "name": self.name,
            "signing_seed": self.signing.seed.hex(),
            "encryption_secret": bytes(self.encryption).hex(),
        }

    @classmethod
    def from_secret_dict(cls, data: dict[str, Any]) -> UserIdentity:
        """Rebuild from :meth:`to_secret_dict`; raises DecodeError on any malformed field."""
        if not isinstance(data, dict):
            raise DecodeError("stored identity: not an object")
        name = data.get("name")
        seed = _secret_hex(data.get("signing_seed"), "signing_seed")
        secret = _secret_hex(data.get("encryption_secret"), "encryption_secret")
        if not isinstance(name, str):
            raise DecodeError("stored identity: name must be a string")
        try:
            return cls(name, SigningKeyPair(seed), nacl.public.PrivateKey(secret))
        except ValueError as exc:
            raise DecodeError(f"stored identity: {exc}") from None

    def __repr__(self) -> str:  # never show a secret
        return f"UserIdentity(name={self.name!r}, fingerprint={self.fingerprint})"


def _secret_hex(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not _HEX_KEY_RE.fullmatch(value):
        raise DecodeError(f"stored identity: {field} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def seal_to(recipient_encryption_key: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` anonymously to an X25519 public key (libsodium sealed box).

    The result is 48 bytes longer than the plaintext. Only the holder of the matching private
    key can open it; it does not say who sealed it.
    """
    check_encryption_key(recipient_encryption_key)
    box = nacl.public.SealedBox(nacl.public.PublicKey(recipient_encryption_key))
    return bytes(box.encrypt(bytes(plaintext)))


def open_sealed(identity: UserIdentity, ciphertext: bytes) -> bytes:
    """Open a sealed box addressed to ``identity``.

    Raises :class:`VerificationError` when it was sealed to another key, or altered, or is too
    short to be a sealed box.
    """
    try:
        return bytes(nacl.public.SealedBox(identity.encryption).decrypt(bytes(ciphertext)))
    except nacl.exceptions.CryptoError:
        raise VerificationError(
            "sealed box cannot be opened: it is addressed to someone else, or was altered"
        ) from None


@dataclass(frozen=True, slots=True)
class AddressedPayload:
    """What `read_addressed` found: the recipient named in the clear, and the opened payload."""

    fingerprint: str
    name: str
    payload: bytes


def write_addressed(w: Writer, recipient: PublicIdentity, plaintext: bytes) -> None:
    """Append ``plaintext`` sealed to ``recipient``, preceded by the recipient's fingerprint and
    name in the clear (so whoever opens the wrong file learns whom it is for)."""
    w.fixed(fingerprint_bytes(recipient.signing_key), FINGERPRINT_SIZE)
    w.text(recipient.name)
    w.blob(seal_to(recipient.encryption_key, plaintext))


def read_addressed(
    r: Reader,
    identity: UserIdentity,
    *,
    what: str,
    max_size: int,
    not_for_you: type[VerificationError],
) -> AddressedPayload:
    """Read what `write_addressed` wrote (to the end of ``r``) and open it with ``identity``.

    DecodeError on malformed bytes; ``not_for_you`` when it is addressed to someone else;
    VerificationError when it names us but was damaged or altered. ``what`` names the file in
    messages ("invite", "key file").
    """
    fingerprint = r.fixed(FINGERPRINT_SIZE, "recipient fingerprint").hex()
    name = r.text("recipient name", MAX_NAME_BYTES)
    try:
        validate_display_name(name, "recipient name")
    except InvalidNameError as exc:
        raise DecodeError(f"{r.what}: {exc}") from None
    sealed = r.blob("sealed payload", max_size)
    r.end()
    try:
        payload = open_sealed(identity, sealed)
    except VerificationError:
        if fingerprint != identity.fingerprint:
            raise not_for_you(
                f"this {what} is for {name} {fingerprint}, not for you"
                f" ({identity.name} {identity.fingerprint})"
            ) from None
        raise VerificationError(
            f"this {what} names you but cannot be opened: it was damaged or altered"
        ) from None
    return AddressedPayload(fingerprint, name, payload)
