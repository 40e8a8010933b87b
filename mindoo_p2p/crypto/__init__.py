"""Cryptographic primitives: Ed25519 signatures, XChaCha20-Poly1305, X25519 sealed boxes."""

from .aead import KEY_SIZE, NONCE_SIZE, decrypt, encrypt, random_key, random_nonce
from .signing import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    SigningKeyPair,
    verify_many,
    verify_signature,
)

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "SigningKeyPair",
    "decrypt",
    "encrypt",
    "random_key",
    "random_nonce",
    "verify_many",
    "verify_signature",
]
