"""Ed25519 signing keys and signature checks (PyNaCl / libsodium).

The acceptance rule is `verify_signature` (libsodium's ``crypto_sign_open``, defined once in
`verify_worker_process.check_signature`), wherever a signature is checked.

`verify_many` / `verify_many_later` check a batch on every core. On a machine with two cores or
more, a batch of at least `_PARALLEL_MIN` goes to verifier worker processes (`verify_workers`):
a thread of this process needs the GIL back after every signature, which a busy ingest hands
over only every switch interval. With no workers (one core, ``MINDOO_VERIFY_WORKERS=0``, or the
workers failed), a small thread pool checks it as before (libsodium releases the GIL).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import nacl.signing
from nacl._sodium import ffi, lib

from ..errors import MindooError
from .verify_worker_process import check_signature
from .verify_workers import VerifyWorkers, default_workers

logger = logging.getLogger(__name__)

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32


class SigningKeyPair:
    """An Ed25519 key pair. The seed is the private part: keep it in the keystore only."""

    __slots__ = ("_key", "_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._key.verify_key)
        self._secret: bytes = self._key._signing_key  # libsodium's 64-byte secret key

    @classmethod
    def generate(cls) -> SigningKeyPair:
        return cls(os.urandom(SEED_SIZE))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def secret_key(self) -> bytes:
        """libsodium's 64-byte Ed25519 secret key (the seed, then the public key), for the
        in-process native sealer (`native_seal`). Private: never to leave the process."""
        return self._secret

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        # libsodium's combined crypto_sign through a reused per-thread buffer: PyNaCl's
        # SigningKey.sign allocates and copies the whole message twice per call.
        size = len(message) + SIGNATURE_SIZE
        buf = getattr(_tls, "sign_buf", None)
        if buf is None or len(buf) < size:
            buf = ffi.new("unsigned char[]", max(size, 4096))
            _tls.sign_buf = buf
            _tls.sign_len = ffi.new("unsigned long long *")
        if lib.crypto_sign(buf, _tls.sign_len, message, len(message), self._secret) != 0:
            raise RuntimeError("libsodium crypto_sign failed")
        return bytes(ffi.buffer(buf, SIGNATURE_SIZE))

    def __repr__(self) -> str:
        return f"SigningKeyPair(public_key={self.public_key.hex()})"


_tls = threading.local()


verify_signature = check_signature
"""True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_PARALLEL_MIN = 64


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            workers = max(1, min(os.cpu_count() or 1, 4))
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="mindoo-verify")
        return _POOL


def _verify_chunk(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    return [verify_signature(pk, msg, sig) for pk, msg, sig in items]


def verify_many(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """Check many ``(public_key, message, signature)`` triples, on all cores for large batches."""
    return verify_many_later(items)()


def verify_many_later(items: Sequence[tuple[bytes, bytes, bytes]]) -> Callable[[], list[bool]]:
    """Start checking ``items`` as `verify_many` does and return at once: the returned function
    waits for the verdicts (in order). The caller goes on meanwhile (decoding the next part of
    a batch while the workers check this one). A small batch is checked before returning."""
    if len(items) < _PARALLEL_MIN:
        checked = _verify_chunk(items)
        return lambda: checked
    workers = verify_workers()
    if workers is not None:
        return workers.submit(items)
    pool = _pool()
    count = pool._max_workers
    step = max(_PARALLEL_MIN, -(-len(items) // (count * 4)))
    futures = [pool.submit(_verify_chunk, items[i : i + step]) for i in range(0, len(items), step)]

    def verdicts() -> list[bool]:
        results: list[bool] = []
        for future in futures:
            results.extend(future.result())
        return results

    return verdicts


_WORKERS: VerifyWorkers | None = None
_WORKERS_PID = 0
_WORKERS_SET = False


def verify_workers() -> VerifyWorkers | None:
    """This process's verifier workers (started on first use, stopped at exit), or None when
    batches are checked by the thread pool (see the module docstring). A forked child starts
    its own: it never writes to its parent's workers. A malformed ``MINDOO_VERIFY_WORKERS``
    (refused when a node opens, `verify_workers.check_workers_setting`) never fails a check
    here: it is logged once and the thread pool checks."""
    global _WORKERS, _WORKERS_PID, _WORKERS_SET
    with _POOL_LOCK:
        if not _WORKERS_SET or os.getpid() != _WORKERS_PID:
            try:
                count = default_workers()
            except MindooError as exc:
                logger.warning("%s; signatures are checked by threads of this process", exc)
                count = 0
            _WORKERS = VerifyWorkers(count) if count else None
            _WORKERS_PID = os.getpid()
            _WORKERS_SET = True
            if _WORKERS is not None:
                atexit.register(_WORKERS.close)
        workers = _WORKERS
    return workers if workers is not None and workers.usable else None


def use_verify_workers(workers: VerifyWorkers | None) -> VerifyWorkers | None:
    """Make ``workers`` this process's verifier workers (None: the thread pool); returns the
    previous ones, not closed (tests, benchmarks)."""
    global _WORKERS, _WORKERS_PID, _WORKERS_SET
    with _POOL_LOCK:
        previous = _WORKERS if os.getpid() == _WORKERS_PID else None
        _WORKERS, _WORKERS_PID, _WORKERS_SET = workers, os.getpid(), True
    return previous


def start_verify_workers() -> None:
    """Start this process's verifier workers now, if it uses any (`VerifyWorkers.start`)."""
    workers = verify_workers()
    if workers is not None:
        workers.start()
