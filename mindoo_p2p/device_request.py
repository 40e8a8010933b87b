"""A device's signed request to be enrolled as a device of a user: its proof of possession.

A user enrolls another node of theirs (a phone next to a laptop) as a *device*: a key that
writes as the user. Without a proof, a member could enroll anyone's public key as its own
device (identity files are handed around to be invited), so the key would write as the wrong
person, and the admin's later ADD of that key would split nodes. So the device signs, with
the key being enrolled, a statement naming the user it belongs to::

    proof = Ed25519_device(DOMAIN || user_key || device signing key || device encryption key
                           || device name (varint length + UTF-8))

The DEVICE_ADD record (`membership.DeviceEnrolment`, record version 5) carries the proof, and
every node checks it before applying the record. The statement names no tenant: it says
"this key belongs to the person with user key U", which holds in every tenant of U, so one
request enrolls the device in each of U's tenants.

Request file, version 1 (handed from the device to the user's first node)::

    magic      4 bytes  b"MDDR"
    version    u8       1
    user_key   32 bytes (Ed25519)
    device     name (varint length <= 512 + UTF-8), Ed25519 key 32, X25519 key 32
    proof      64 bytes
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Writer
from .crypto.signing import SIGNATURE_SIZE, verify_signature
from .errors import DecodeError, VerificationError
from .identity import (
    PUBLIC_KEY_SIZE,
    PublicIdentity,
    UserIdentity,
    check_signing_key,
    fingerprint_of,
    read_public_identity,
    write_public_identity,
)

REQUEST_MAGIC = b"MDDR"
REQUEST_VERSION = 1
MAX_REQUEST_SIZE = 4096
_PROOF_DOMAIN = b"mindoo/device-of/v1\x00"


def device_proof_message(user_key: bytes, device: PublicIdentity) -> bytes:
    """The bytes a device signs to say that it is a device of ``user_key``."""
    w = Writer().raw(_PROOF_DOMAIN).fixed(user_key, PUBLIC_KEY_SIZE)
    write_public_identity(w, device)
    return w.getvalue()


def device_proof_valid(user_key: bytes, device: PublicIdentity, proof: bytes) -> bool:
    """True when ``proof`` is ``device``'s signature saying it is a device of ``user_key``."""
    if not isinstance(proof, bytes) or len(proof) != SIGNATURE_SIZE:
        return False
    return verify_signature(device.signing_key, device_proof_message(user_key, device), proof)


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A device's request to be enrolled as a device of the user ``user_key``, signed by the
    device's own key. Validated on construction (ValueError); :meth:`check` verifies the
    proof."""

    user_key: bytes
    device: PublicIdentity
    proof: bytes

    def __post_init__(self) -> None:
        check_signing_key(self.user_key)
        if not isinstance(self.device, PublicIdentity):
            raise ValueError("device must be a PublicIdentity")
        if self.device.signing_key == self.user_key:
            raise ValueError("a device has its own signing key, not the user's")
        if not isinstance(self.proof, bytes) or len(self.proof) != SIGNATURE_SIZE:
            raise ValueError(f"a device proof is a {SIGNATURE_SIZE}-byte signature")

    @classmethod
    def sign(cls, device: UserIdentity, user_key: bytes) -> DeviceRequest:
        """The request of the node holding ``device`` to be a device of ``user_key``."""
        public = device.public()
        proof = device.signing.sign(device_proof_message(user_key, public))
        return cls(user_key, public, proof)

    def check(self) -> None:
        """Raise :class:`VerificationError` unless the device's key signed this request."""
        if not device_proof_valid(self.user_key, self.device, self.proof):
            raise VerificationError(
                f"the device request of {self.device} is not signed by that device's key"
            )

    def encode(self) -> bytes:
        w = Writer().raw(REQUEST_MAGIC).u8(REQUEST_VERSION).fixed(self.user_key, PUBLIC_KEY_SIZE)
        write_public_identity(w, self.device)
        return w.fixed(self.proof, SIGNATURE_SIZE).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> DeviceRequest:
        """Strictly decode a request file; DecodeError for anything else (the proof is not
        checked here: see :meth:`check`)."""
        what = "device request"
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_REQUEST_SIZE:
            raise DecodeError(f"{what}: {len(data)} bytes, over the limit {MAX_REQUEST_SIZE}")
        r = Reader(data, what)
        if r.fixed(len(REQUEST_MAGIC), "magic") != REQUEST_MAGIC:
            raise DecodeError("not a mindoo device request (bad magic)")
        version = r.u8("version")
        if version != REQUEST_VERSION:
            raise DecodeError(f"{what}: unsupported version {version}")
        user_key = r.fixed(PUBLIC_KEY_SIZE, "user key")
        device = read_public_identity(r, "device")
        proof = r.fixed(SIGNATURE_SIZE, "proof")
        r.end()
        try:
            return cls(user_key, device, proof)
        except ValueError as exc:
            raise DecodeError(f"{what}: {exc}") from None

    def __str__(self) -> str:
        return f"{self.device} as a device of {fingerprint_of(self.user_key)}"


__all__ = [
    "DeviceRequest",
    "device_proof_message",
    "device_proof_valid",
]
