"""Authenticated encryption: XChaCha20-Poly1305 (IETF) with 24-byte random nonces.

Random 192-bit nonces make nonce reuse under one key negligible however many entries a key
encrypts, which AES-GCM's 96-bit nonces cannot promise.
"""

from __future__ import annotations

import os
import threading

from nacl import bindings
from nacl._sodium import ffi, lib
from nacl.exceptions import CryptoError

from ..errors import VerificationError

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16


def random_key() -> bytes:
    return os.urandom(KEY_SIZE)


_NONCE_POOL_SIZE = 256
"""Nonces drawn from the OS per refill: one ``getrandom`` call per 256 nonces instead of one
per entry (the call was 6 % of sealing a local change under load)."""


class _NoncePool(threading.local):
    """Per-thread random bytes from ``os.urandom``, handed out 24 at a time, never twice.

    Tied to the process id: a forked child never hands out the bytes its parent had drawn
    (a nonce reused under one key would break XChaCha20-Poly1305's confidentiality)."""

    def __init__(self) -> None:
        self.pid = 0
        self.pool = b""
        self.offset = 0

    def take(self) -> bytes:
        offset = self.offset
        if offset >= len(self.pool) or self.pid != os.getpid():
            self.pid = os.getpid()
            self.pool = os.urandom(NONCE_SIZE * _NONCE_POOL_SIZE)
            offset = 0
        self.offset = offset + NONCE_SIZE
        return self.pool[offset : offset + NONCE_SIZE]


_nonces = _NoncePool()


def random_nonce() -> bytes:
    """24 fresh random bytes (from the OS's CSPRNG, drawn in blocks per thread and process)."""
    return _nonces.take()


_tls = threading.local()


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    # libsodium directly, into a reused per-thread buffer (PyNaCl's binding allocates and
    # re-checks its arguments on every call; entries are sealed on the hot write path).
    size = len(plaintext) + TAG_SIZE
    buf = getattr(_tls, "buf", None)
    if buf is None or len(buf) < size:
        buf = ffi.new("unsigned char[]", max(size, 4096))
        _tls.buf = buf
        _tls.out_len = ffi.new("unsigned long long *")
    rc = lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        buf,
        _tls.out_len,
        plaintext,
        len(plaintext),
        associated_data,
        len(associated_data),
        ffi.NULL,
        nonce,
        key,
    )
    if rc != 0:
        raise RuntimeError("libsodium XChaCha20-Poly1305 encryption failed")
    return bytes(ffi.buffer(buf, _tls.out_len[0]))


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
