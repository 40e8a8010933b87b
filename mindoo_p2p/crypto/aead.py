"""Authenticated encryption: XChaCha20-Poly1305 (IETF) with 24-byte random nonces.

Random 192-bit nonces make nonce reuse under one key negligible however many entries a key
encrypts, which AES-GCM's 96-bit nonces cannot promise.
"""

from __future__ import annotations

import os

from nacl import bindings
from nacl.exceptions import CryptoError

from ..errors import VerificationError

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16


def random_key() -> bytes:
    return os.urandom(KEY_SIZE)


def random_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    return bytes(
        bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, key)
    )


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """The plaintext, or VerificationError when the key is wrong or any byte was changed."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    try:
        return bytes(
            bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ciphertext, associated_data, nonce, key
            )
        )
    except CryptoError as exc:
        raise VerificationError("decryption failed: wrong key or altered ciphertext") from exc
