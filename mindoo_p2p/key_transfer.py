"""Moving a named tenant key between nodes: a key file sealed to a person or to a password.

A key file carries every version of one key (a named key, or the ``default`` key once it was
rotated; never the membership key), and the tenant-log entries that announced
them (admin-signed, so the importer can check that the key really is the tenant's key of that
name). Secrets never travel in the clear: the payload is either sealed (libsodium sealed box) to
the recipient's X25519 key, or encrypted with XChaCha20-Poly1305 under a key derived from a
password with argon2id (like the keystore). File format, version 1 (integers big-endian,
varint = minimal LEB128)::

    magic        4 bytes  b"MDKX"
    version      u8       1
    protection   u8       1 = sealed to an identity, 2 = password
    tenant_id    16 bytes (in the clear: lets the importer say "wrong tenant")
    key name     varint length <= 64 + ASCII (in the clear, for messages)
    protection 1: recipient fingerprint 8 bytes, recipient name (varint length <= 512 + UTF-8),
                  sealed payload (varint length + sealed box)
    protection 2: opslimit u64, memlimit u64, salt 16, nonce 24,
                  ciphertext (varint length + AEAD, with every byte before it as associated data)

    payload:
      tenant_id  16 bytes, key name (as above), both checked against the clear copies
      keys       varint count (1-1024), each: key_id 16, version varint (1 .. 2**32-1),
                 secret 32, created_ms u64
      entries    varint count (<= 1024), each varint length (<= 64 KiB) + sealed tenant-log entry

The clear part of a sealed file is not authenticated; it only serves messages and is checked
against the sealed copy. A sealed box does not say who sealed it and a password proves only
that the sender knew it, so the importer (`Node.import_key`) accepts keys only as announced by
the tenant log under the admin's signature.
"""

from __future__ import annotations

import enum
import os
import unicodedata
from dataclasses import dataclass, field

import nacl.pwhash.argon2id as argon2id

from .codec import Reader, Writer
from .crypto import aead
from .crypto.keystore import MAX_MEMLIMIT, MAX_OPSLIMIT, MIN_MEMLIMIT, MIN_OPSLIMIT, KdfProfile
from .entry import TENANT_ID_SIZE
from .errors import DecodeError, InvalidNameError, VerificationError, WrongPasswordError
from .identity import (
    PublicIdentity,
    UserIdentity,
    read_addressed,
    write_addressed,
)
from .keyring import MEMBERSHIP_KEY, TenantKey, validate_key_name

KEY_FILE_MAGIC = b"MDKX"
KEY_FILE_VERSION = 1
MAX_KEY_FILE_SIZE = 2 * 1024 * 1024
MAX_KEY_VERSIONS = 1024
MAX_ENTRIES = 1024
MAX_ENTRY_SIZE = 64 * 1024
MAX_KEY_NAME_SIZE = 64
MAX_KEY_VERSION = (1 << 32) - 1
KEY_ID_SIZE = 16
SALT_SIZE = 16


class Protection(enum.IntEnum):
    SEALED = 1
    """Sealed box to one identity's X25519 key."""
    PASSWORD = 2
    """argon2id-derived key + XChaCha20-Poly1305."""


class KeyFileNotForYouError(VerificationError):
    """The key file is sealed to someone else's identity."""


@dataclass(frozen=True)
class KeyTransfer:
    """What a key file carries: one tenant key's versions and their announcements."""

    tenant_id: bytes
    name: str
    keys: list[TenantKey] = field(repr=False)
    announcements: list[bytes] = field(repr=False)
    """Raw sealed tenant-log entries that announced the keys."""

    def __post_init__(self) -> None:
        if not isinstance(self.tenant_id, bytes) or len(self.tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        validate_key_name(self.name)
        if self.name == MEMBERSHIP_KEY:
            raise ValueError(f"the {self.name!r} key travels with invites, not key files")
        if not 1 <= len(self.keys) <= MAX_KEY_VERSIONS:
            raise ValueError(f"a key file carries 1-{MAX_KEY_VERSIONS} key versions")
        for key in self.keys:
            if not isinstance(key, TenantKey) or key.name != self.name:
                raise ValueError(f"every key version must be a TenantKey named {self.name!r}")
            if key.version > MAX_KEY_VERSION:
                raise ValueError(f"key versions must be at most {MAX_KEY_VERSION}")
        if len(self.announcements) > MAX_ENTRIES or any(
            not isinstance(raw, bytes) or len(raw) > MAX_ENTRY_SIZE for raw in self.announcements
        ):
            raise ValueError(f"at most {MAX_ENTRIES} entries of at most {MAX_ENTRY_SIZE} bytes")


def seal_key_to(transfer: KeyTransfer, recipient: PublicIdentity) -> bytes:
    """A key file only ``recipient`` can open."""
    w = _clear_header(transfer, Protection.SEALED)
    write_addressed(w, recipient, _encode_payload(transfer))
    return _bounded(w.getvalue())


def protect_key_with_password(
    transfer: KeyTransfer, password: str, kdf: KdfProfile = KdfProfile.INTERACTIVE
) -> bytes:
    """A key file anyone who knows ``password`` can open (argon2id with ``kdf``'s limits)."""
    if not password:
        raise WrongPasswordError("a key file needs a non-empty password")
    w = _clear_header(transfer, Protection.PASSWORD)
    return _bounded(seal_with_password(w, _encode_payload(transfer), password, kdf))


@dataclass(frozen=True, slots=True)
class KeyFileInfo:
    """The clear part of a key file (unauthenticated: for messages and prompts only)."""

    protection: Protection
    tenant_id: bytes
    name: str


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A key file whose clear header was read, once (`read_key_file`): what `open_key_file`
    opens without reading the header again."""

    info: KeyFileInfo
    data: bytes = field(repr=False)
    body_offset: int
    """Where the sealed part starts."""


def read_key_file(data: bytes) -> KeyFile:
    """Read a key file's clear header; DecodeError when ``data`` is not a key file."""
    r = _reader(data)
    info = _read_clear_header(r)
    return KeyFile(info, bytes(data), r.pos)


def read_key_file_info(data: bytes) -> KeyFileInfo:
    """The clear header of a key file; DecodeError when it is not one."""
    return read_key_file(data).info


def open_key_file(
    file: KeyFile | bytes, identity: UserIdentity, password: str | None = None
) -> KeyTransfer:
    """Open a key file (read by `read_key_file`, or its bytes) with this node's ``identity``
    (sealed files) or ``password``.

    Raises :class:`DecodeError` for anything that is not a well-formed key file,
    :class:`KeyFileNotForYouError` when it is sealed to someone else,
    :class:`WrongPasswordError` when the password is missing or wrong (or the file altered),
    :class:`VerificationError` when a sealed file was altered or its clear part lies.
    """
    if not isinstance(file, KeyFile):
        file = read_key_file(file)
    info, data = file.info, file.data
    r = Reader(data, "key file")
    r.fixed(file.body_offset, "clear header")  # read once by read_key_file: skipped here
    if info.protection is Protection.SEALED:
        payload = read_addressed(
            r,
            identity,
            what="key file",
            max_size=MAX_KEY_FILE_SIZE,
            not_for_you=KeyFileNotForYouError,
        ).payload
    else:
        sealed = read_password_sealed(r, data, MAX_KEY_FILE_SIZE)
        payload = sealed.open(password, f"the key file of {info.name!r}")
    transfer = _decode_payload(payload)
    if transfer.tenant_id != info.tenant_id or transfer.name != info.name:
        raise VerificationError("the key file's clear header does not match its sealed content")
    return transfer


# -- password protection (shared with the recovery kit) ------------------------------------
def derive_password_key(password: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """The XChaCha20-Poly1305 key argon2id derives from ``password`` (Unicode NFC, UTF-8).

    Callers bound ``opslimit`` and ``memlimit`` first (see `read_password_sealed`).
    """
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    return bytes(argon2id.kdf(aead.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit))


def seal_with_password(w: Writer, payload: bytes, password: str, kdf: KdfProfile) -> bytes:
    """Finish a password-protected file whose clear header is in ``w``; the whole file.

    Appends opslimit u64, memlimit u64 (``kdf``'s argon2id limits), a random 16-byte salt, a
    random 24-byte nonce, then the ciphertext as a blob (varint length + bytes):
    XChaCha20-Poly1305 of ``payload`` under the key `derive_password_key` derives, with every
    byte before the ciphertext (the caller's header included) as associated data. Callers
    refuse empty passwords before calling.
    """
    salt = os.urandom(SALT_SIZE)
    nonce = aead.random_nonce()
    w.u64(kdf.opslimit).u64(kdf.memlimit).fixed(salt, SALT_SIZE).fixed(nonce, aead.NONCE_SIZE)
    header = w.getvalue()
    key = derive_password_key(password, salt, kdf.opslimit, kdf.memlimit)
    return header + Writer().blob(aead.encrypt(key, nonce, payload, header)).getvalue()


@dataclass(frozen=True, slots=True)
class PasswordSealed:
    """The protected part of a file `read_password_sealed` parsed (not yet decrypted)."""

    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    header: bytes = field(repr=False)
    """Every byte before the ciphertext: the associated data."""
    ciphertext: bytes = field(repr=False)

    def open(self, password: str | None, what: str) -> bytes:
        """The payload. :class:`WrongPasswordError` when ``password`` is missing or does not
        open it (a wrong password, or an altered file); ``what`` names the file in messages
        ("the key file of 'hr'")."""
        if not password:
            raise WrongPasswordError(f"{what} is protected by a password: give it")
        key = derive_password_key(password, self.salt, self.opslimit, self.memlimit)
        try:
            return aead.decrypt(key, self.nonce, self.ciphertext, self.header)
        except VerificationError:
            raise WrongPasswordError(
                f"wrong password for {what} (or the file was altered)"
            ) from None


def read_password_sealed(r: Reader, data: bytes, max_size: int) -> PasswordSealed:
    """Read to the end of ``r`` (a reader over ``data``) what `seal_with_password` appended.

    Raises :class:`DecodeError` only: truncated or trailing bytes, a ciphertext over
    ``max_size``, or argon2id limits outside [MIN, MAX_OPSLIMIT] x [MIN, MAX_MEMLIMIT] of the
    keystore (checked here, before any key derivation, so a crafted file cannot make us spend
    unbounded memory or time).
    """
    opslimit = r.u64("opslimit")
    memlimit = r.u64("memlimit")
    salt = r.fixed(SALT_SIZE, "salt")
    nonce = r.fixed(aead.NONCE_SIZE, "nonce")
    header = bytes(data[: r.pos])
    ciphertext = r.blob("ciphertext", max_size)
    r.end()
    if not (MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT and MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT):
        raise DecodeError(
            f"{r.what}: refusing argon2id limits opslimit={opslimit} memlimit={memlimit}"
        )
    return PasswordSealed(opslimit, memlimit, salt, nonce, header, ciphertext)


# -- internals -----------------------------------------------------------------------------
def _clear_header(transfer: KeyTransfer, protection: Protection) -> Writer:
    w = Writer().raw(KEY_FILE_MAGIC).u8(KEY_FILE_VERSION).u8(int(protection))
    return w.fixed(transfer.tenant_id, TENANT_ID_SIZE).text(transfer.name)


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_KEY_FILE_SIZE:
        raise ValueError(f"the key file is {len(data)} bytes, over the limit {MAX_KEY_FILE_SIZE}")
    return data


def _reader(data: bytes) -> Reader:
    what = "key file"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise DecodeError(f"{what}: {len(data)} bytes, over the limit {MAX_KEY_FILE_SIZE}")
    return Reader(data, what)


def _read_clear_header(r: Reader) -> KeyFileInfo:
    if r.fixed(len(KEY_FILE_MAGIC), "magic") != KEY_FILE_MAGIC:
        raise DecodeError("not a mindoo key file (bad magic)")
    version = r.u8("version")
    if version != KEY_FILE_VERSION:
        raise DecodeError(f"{r.what}: unsupported key file version {version}")
    value = r.u8("protection")
    try:
        protection = Protection(value)
    except ValueError:
        raise DecodeError(f"{r.what}: unknown protection {value}") from None
    tenant_id = r.fixed(TENANT_ID_SIZE, "tenant id")
    name = _key_name(r)
    return KeyFileInfo(protection, tenant_id, name)


def _key_name(r: Reader) -> str:
    name = r.text("key name", MAX_KEY_NAME_SIZE)
    try:
        return validate_key_name(name)
    except InvalidNameError as exc:
        raise DecodeError(f"{r.what}: {exc}") from None


def _encode_payload(transfer: KeyTransfer) -> bytes:
    w = Writer().fixed(transfer.tenant_id, TENANT_ID_SIZE).text(transfer.name)
    w.varint(len(transfer.keys))
    for key in transfer.keys:
        w.fixed(key.key_id, KEY_ID_SIZE).varint(key.version)
        w.fixed(key.secret, aead.KEY_SIZE).u64(key.created_ms)
    w.varint(len(transfer.announcements))
    for raw in transfer.announcements:
        w.blob(raw)
    return w.getvalue()


def _decode_payload(payload: bytes) -> KeyTransfer:
    """Strictly decode the protected payload; DecodeError only."""
    r = Reader(payload, "key file payload")
    tenant_id = r.fixed(TENANT_ID_SIZE, "tenant id")
    name = _key_name(r)
    count = r.varint("key count", max_value=MAX_KEY_VERSIONS)
    keys: list[TenantKey] = []
    for index in range(count):
        key_id = r.fixed(KEY_ID_SIZE, f"key {index} id")
        version = r.varint(f"key {index} version", max_value=MAX_KEY_VERSION)
        secret = r.fixed(aead.KEY_SIZE, f"key {index} secret")
        created_ms = r.u64(f"key {index} created_ms")
        try:
            keys.append(TenantKey(key_id, name, version, secret, created_ms))
        except ValueError as exc:
            raise DecodeError(f"{r.what}: invalid key {index}: {exc}") from None
    entry_count = r.varint("entry count", max_value=MAX_ENTRIES)
    entries = [r.blob(f"entry {index}", MAX_ENTRY_SIZE) for index in range(entry_count)]
    r.end()
    try:
        return KeyTransfer(tenant_id=tenant_id, name=name, keys=keys, announcements=entries)
    except ValueError as exc:
        raise DecodeError(f"{r.what}: {exc}") from None
