"""Verifier worker processes: Ed25519 checks on the other cores, outside this process's GIL.

Why processes: libsodium releases the GIL for each signature, but a verifying *thread* must take
it back after every one (~55 µs of work), and beside one busy Python thread (decode, admission,
LMDB puts, the event loop) it gets it only every switch interval: 79 µs a signature alone
became 251 µs during an ingest. A worker process has its own interpreter; this process only
hands it a chunk of signatures at a time, so the GIL changes hands once per chunk, not once per
signature.

Arrangement (`VerifyWorkers`):

- ``workers`` processes, each started as ``python -P verify_worker_process.py`` (by path: a
  fresh interpreter that imports libsodium's binding and nothing of this package; not a fork
  of the node with its memory, threads and open files, and not multiprocessing's spawn, which
  runs the application's main script again). A worker holds no secret: it is sent public keys,
  signed messages and signatures, and it starts with a minimal environment (`worker_environment`:
  no ``MINDOO_*`` variable, so not the node password). It exits when its stdin ends (`close`, or
  this process's death closes the pipe; a forked child of this process closes its copies of the
  pipes at once, `_forget_workers_after_fork`, so it never keeps its parent's workers alive).
- Each worker has a writer thread and a reader thread here: the writer sends request frames as
  chunks are assigned (several may be in flight, so the worker never waits for this process to
  get the GIL back before it starts the next chunk); the reader takes answers in order and
  resolves each chunk's future. Frames and their bounds: `verify_worker_process`.
- `submit` splits a batch into chunks, spreads them over the workers, and returns a function
  that waits for the verdicts in order.

Failure never loses or accepts anything: a worker that exits, breaks a pipe, answers out of
protocol (wrong count, a byte other than 0 or 1, an answer nobody asked for) or does not answer
a chunk within ``answer_timeout_s`` is killed (and reaped), every chunk it held fails at once,
and the caller checks those chunks itself with the same rule (`check_signature`). One deadline
covers all the chunks of a batch, so hung workers cost one timeout, not one each. The next
`submit` starts a fresh worker in its place; after `MAX_FAILURES` failures in a row the pool
stops (`usable` is False) and callers verify in process.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO

from ..errors import MindooError
from .verify_worker_process import (
    FrameError,
    Triple,
    check_signature,
    decode_answer,
    encode_request,
    framable,
    read_body,
)

WORKER_SCRIPT = Path(__file__).with_name("verify_worker_process.py")

ANSWER_TIMEOUT_S = 30.0
"""How long a caller waits for one chunk's answer (a chunk is milliseconds of work, seconds on
a loaded machine) before it kills the worker and checks the chunk itself."""
MAX_FAILURES = 3
"""Worker failures in a row after which the pool stops and callers verify in process."""
STOP_TIMEOUT_S = 2.0
"""How long `close` waits for a worker to exit at the end of its input before killing it."""
CHUNKS_PER_WORKER = 2
"""A batch is cut into this many chunks per worker (two in flight keep a worker busy)."""
MIN_CHUNK = 64
"""Fewest signatures a chunk carries (a round trip costs about as much as one check)."""
MAX_CHUNK = 1024
"""Most signatures a chunk carries (a chunk's answer then comes back within ~60 ms)."""
WORKERS_ENV = "MINDOO_VERIFY_WORKERS"
"""Environment variable: the number of verifier workers (0: verify in this process), a whole
number from 0 to `MAX_WORKERS` in ASCII digits (`parse_workers_setting`)."""
MAX_WORKERS = 16
"""Most verifier workers `WORKERS_ENV` may ask for (more is refused, not silently capped)."""
_KEPT_ENV = frozenset({"PATH", "LANG", "PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH"})
"""Environment variables a worker keeps (with every ``LC_*``): what starting Python needs."""


class VerifyWorkerError(MindooError):
    """A verifier worker died, hung or answered out of protocol (its chunks are re-checked)."""


def default_command() -> list[str]:
    """How a worker is started: this interpreter on the worker script, without the script's
    directory on ``sys.path`` (-P: the package's modules stay out of the worker)."""
    return [sys.executable, "-P", str(WORKER_SCRIPT)]


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a worker starts with: of ``environ`` (default: this process's), only
    what Python needs to start (`_KEPT_ENV` and ``LC_*``); never a ``MINDOO_*`` variable."""
    if environ is None:
        environ = os.environ
    return {
        name: value
        for name, value in environ.items()
        if (name in _KEPT_ENV or name.startswith("LC_")) and not name.startswith("MINDOO_")
    }


def parse_workers_setting(value: str) -> int:
    """The worker count `WORKERS_ENV` = ``value`` asks for. MindooError, naming the variable
    and the value, unless it is ASCII digits only for a number from 0 to `MAX_WORKERS`."""
    # Length first: int() of thousands of digits raises ValueError, not a verdict.
    if not (value.isascii() and value.isdigit()) or len(value) > 3 or int(value) > MAX_WORKERS:
        raise MindooError(
            f"{WORKERS_ENV} must be a whole number of verifier workers from 0 to {MAX_WORKERS}"
            f" (digits only), not {value[:32]!r}{'...' if len(value) > 32 else ''}"
        )
    return int(value)


def check_workers_setting(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a malformed `WORKERS_ENV` in ``environ`` (default: this process's) with a clear
    MindooError; called when a node opens, so a bad value stops it at start, not mid-sync."""
    if environ is None:
        environ = os.environ
    configured = environ.get(WORKERS_ENV)
    if configured is not None:
        parse_workers_setting(configured)


def default_workers() -> int:
    """Verifier workers for this process: `WORKERS_ENV` when set (MindooError when malformed,
    `parse_workers_setting`), else one per core this process may run on (at most 4); 0 on a
    single core, where a worker would only add its messages, or when there is no interpreter
    to start."""
    configured = os.environ.get(WORKERS_ENV)
    if configured is not None:
        return parse_workers_setting(configured)
    if not sys.executable:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


class _Chunk:
    """Signatures sent to one worker as one request, and the future of their verdicts."""

    __slots__ = ("frame", "future", "items", "worker")

    def __init__(self, items: Sequence[Triple], worker: _Worker) -> None:
        self.items = items
        self.worker = worker
        self.frame: bytes | None = None
        self.future: Future[list[bool]] = Future()

    def fail(self, reason: str) -> None:
        with contextlib.suppress(Exception):  # already resolved: nothing to tell
            self.future.set_exception(VerifyWorkerError(reason))


class _Worker:
    """One worker process, its writer and reader threads, and the chunks it holds."""

    def __init__(self, command: Sequence[str], on_failure: Callable[[], None]) -> None:
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self._in_flight: collections.deque[_Chunk] = collections.deque()
        self._closing = False
        self.dead = False
        # Started and registered under the registry lock, so that a fork by another thread
        # cannot fall between the two (the child would keep this worker's pipes unknown to
        # the fork hooks). Popen without preexec_fn runs no fork hook: no deadlock.
        with _REGISTRY_LOCK:
            try:
                self.process = subprocess.Popen(
                    list(command),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=worker_environment(),
                )
            except OSError as exc:
                raise VerifyWorkerError(f"cannot start a verifier worker: {exc}") from None
            assert self.process.stdin is not None and self.process.stdout is not None
            self.pipe_fds = [self.process.stdin.fileno(), self.process.stdout.fileno()]
            """This end's pipe descriptors still open (changed under ``_lock``, read by
            `abandon_after_fork`)."""
            _LIVE_WORKERS.add(self)
        for target, role in ((self._write_loop, "writer"), (self._read_loop, "reader")):
            threading.Thread(target=target, name=f"mindoo-verify-{role}", daemon=True).start()

    @property
    def load(self) -> int:
        """Chunks assigned and not yet answered (a rough measure for spreading work)."""
        return self._outbox.qsize() + len(self._in_flight)

    def send(self, chunk: _Chunk) -> None:
        """Queue ``chunk`` for the worker; a worker that is gone fails it at once."""
        with self._lock:
            if not self.dead and not self._closing:  # after `stop`, the writer has ended
                self._outbox.put(chunk)
                return
        chunk.fail("the verifier worker is gone")

    def _write_loop(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        while True:
            chunk = self._outbox.get()
            if chunk is None:
                self._close_pipe(stdin)
                return
            with self._lock:
                if self.dead:
                    chunk.fail("the verifier worker is gone")
                    continue
                self._in_flight.append(chunk)
            try:
                frame = chunk.frame if chunk.frame is not None else encode_request(chunk.items)
                chunk.frame = None
                stdin.write(frame)
                stdin.flush()
            except (OSError, ValueError) as exc:  # ValueError: its pipe was closed (kill)
                self.die(f"the verifier worker's input broke ({exc})")

    def _read_loop(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        chunk: _Chunk | None = None
        try:
            while True:
                body = read_body(stdout)
                with self._lock:
                    if body is None:
                        if self._closing and not self._in_flight:
                            return
                        raise FrameError("the verifier worker stopped")
                    if not self._in_flight:
                        raise FrameError("an answer nobody asked for")
                    chunk = self._in_flight.popleft()
                verdicts = decode_answer(body, len(chunk.items))
                with contextlib.suppress(Exception):
                    chunk.future.set_result(verdicts)
                chunk = None
        except (FrameError, OSError, ValueError) as exc:
            self.die(f"verifier worker failed: {exc}")
            if chunk is not None:  # answered out of shape: no longer in flight, so not failed
                chunk.fail(f"verifier worker failed: {exc}")  # by `die`
        finally:
            self._close_pipe(stdout)

    def _close_pipe(self, pipe: IO[bytes]) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self.pipe_fds.remove(pipe.fileno())
            with contextlib.suppress(OSError, ValueError):
                pipe.close()

    def abandon_after_fork(self, devnull: int) -> None:
        """In a forked child (one thread, this worker's lock held by it): point this end's
        pipe descriptors at ``devnull``, so the child holds no pipe of its parent's worker
        (the worker still ends when the parent closes its input or dies), and mark the worker
        dead without touching its process, which is the parent's. The descriptors stay open
        (on /dev/null): file objects here may close them later without closing another file."""
        for fd in self.pipe_fds:
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
        self.dead = True
        self._closing = True

    def die(self, reason: str) -> None:
        """Count the failure, kill the process, fail every chunk it holds (their callers check
        them) and reap it."""
        with self._lock:
            if self.dead:
                return
            self.dead = True
            held = list(self._in_flight)
            self._in_flight.clear()
        if not self._closing:  # counted before any caller sees a chunk fail
            self._on_failure()
        with contextlib.suppress(OSError):
            self.process.kill()
        for chunk in held:
            chunk.fail(reason)
        while True:  # nothing is queued once ``dead`` is set (`send`): fail what was
            try:
                queued = self._outbox.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                queued.fail(reason)
        self._outbox.put(None)  # the writer thread ends
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT_S)  # reaped: no zombie (SIGKILL ends it at once)

    def stop(self) -> None:
        """End the worker's input after the chunks already sent, and wait for it to exit
        (killed after `STOP_TIMEOUT_S`)."""
        with self._lock:
            self._closing = True
            if not self.dead:
                self._outbox.put(None)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.die("the verifier worker did not stop")
            self.process.wait()


class VerifyWorkers:
    """``workers`` verifier processes (see the module docstring). Thread-safe."""

    def __init__(
        self,
        workers: int,
        command: Sequence[str] | None = None,
        *,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        if workers < 1:
            raise ValueError("VerifyWorkers needs at least one worker")
        self._count = workers
        self._command = list(command) if command is not None else default_command()
        self._timeout = answer_timeout_s
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._failures = 0
        self._closed = False
        self.failures_total = 0
        """Worker failures so far (each one's chunks were checked in process)."""
        with _REGISTRY_LOCK:
            _LIVE_POOLS.add(self)

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's workers (never stop or kill them: they are
        the parent's); the child's first `submit` starts its own."""
        self._lock = threading.Lock()  # a parent thread may have held it at the fork
        self._workers = []

    @property
    def workers(self) -> int:
        return self._count

    @property
    def usable(self) -> bool:
        """False once closed or after `MAX_FAILURES` failures in a row."""
        return not self._closed and self._failures < MAX_FAILURES

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now (benchmarks count their CPU)."""
        with self._lock:
            return [w.process.pid for w in self._workers if not w.dead]

    def _failed(self) -> None:
        with self._lock:
            self._failures += 1
            self.failures_total += 1

    def _live_workers(self) -> list[_Worker]:
        """The workers, a dead one replaced by a fresh process (started on first use)."""
        with self._lock:
            if self._closed:
                raise VerifyWorkerError("the verifier workers are closed")
            try:
                while len(self._workers) < self._count:
                    self._workers.append(_Worker(self._command, self._failed))
                for index, worker in enumerate(self._workers):
                    if worker.dead:
                        self._workers[index] = _Worker(self._command, self._failed)
            except VerifyWorkerError:
                self._failures += 1
                self.failures_total += 1
                raise
            return list(self._workers)

    def start(self) -> None:
        """Start the workers now rather than at the first batch (a daemon calls it when it
        starts, so its first large sync does not wait for the workers' interpreters, ~50 ms
        each). A worker that cannot start counts as a failure, as at a batch."""
        with contextlib.suppress(VerifyWorkerError):
            self._live_workers()

    def submit(self, items: Sequence[Triple]) -> Callable[[], list[bool]]:
        """Start checking ``items`` and return at once: the returned function waits for the
        verdicts (one per item, in order), checking in the calling thread whatever a worker
        failed to answer. An item that cannot be framed (wrong key or signature size) is
        refused, and one whose message is over a frame's bounds is checked in the calling
        thread before returning: the verdict is `check_signature`'s wherever it is computed."""
        framed: list[int] = []
        verdicts = [False] * len(items)
        for index, item in enumerate(items):
            if framable(item):
                framed.append(index)
            else:
                verdicts[index] = check_signature(*item)
        try:
            workers = self._live_workers() if framed else []
        except VerifyWorkerError:
            workers = []
        if not workers:
            for index in framed:
                verdicts[index] = check_signature(*items[index])
            return lambda: verdicts
        size = -(-len(framed) // (len(workers) * CHUNKS_PER_WORKER))
        size = max(MIN_CHUNK, min(MAX_CHUNK, size))
        order = sorted(workers, key=lambda worker: worker.load)
        chunks: list[tuple[list[int], _Chunk]] = []
        for number, start in enumerate(range(0, len(framed), size)):
            positions = framed[start : start + size]
            chunk = _Chunk([items[i] for i in positions], order[number % len(order)])
            chunks.append((positions, chunk))
        for _positions, chunk in chunks:
            try:
                chunk.frame = encode_request(chunk.items)
            except FrameError:  # huge messages: over a frame's bounds, checked here instead
                chunk.future.set_result([check_signature(*item) for item in chunk.items])
                continue
            chunk.worker.send(chunk)
        timeout = self._timeout

        def results() -> list[bool]:
            deadline = time.monotonic() + timeout  # one for the whole batch: hung workers
            for positions, chunk in chunks:  # cost one timeout together, not one each
                try:
                    answer = chunk.future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    chunk.worker.die(f"no answer from a verifier worker within {timeout:g} s")
                    answer = [check_signature(*item) for item in chunk.items]
                except (VerifyWorkerError, CancelledError):
                    answer = [check_signature(*item) for item in chunk.items]
                else:
                    with self._lock:
                        self._failures = 0
                for index, ok in zip(positions, answer, strict=True):
                    verdicts[index] = ok
            return verdicts

        return results

    def close(self) -> None:
        """Stop the workers (each finishes what it was sent, then exits; killed if it hangs).
        Chunks not answered by then are checked by their callers."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()


_REGISTRY_LOCK = threading.Lock()
_LIVE_WORKERS: weakref.WeakSet[_Worker] = weakref.WeakSet()
_LIVE_POOLS: weakref.WeakSet[VerifyWorkers] = weakref.WeakSet()
_FORKED_AWAY: list[_Worker] = []
"""In a forked child: its parent's workers, kept so that their file objects (whose locks a
parent thread may have held at the fork) are never finalized here."""
_HELD_AT_FORK: list[threading.Lock] = []


def _before_fork() -> None:
    _REGISTRY_LOCK.acquire()
    _HELD_AT_FORK[:] = [worker._lock for worker in list(_LIVE_WORKERS)]
    for lock in _HELD_AT_FORK:
        lock.acquire()


def _release_after_fork() -> None:
    for lock in _HELD_AT_FORK:
        lock.release()
    _HELD_AT_FORK.clear()
    _REGISTRY_LOCK.release()


def _forget_workers_after_fork() -> None:
    """In a forked child: hold no pipe of the parent's workers (or the parent's `close` could
    not end them, and they would outlive the parent) and let every pool start its own."""
    workers = list(_LIVE_WORKERS)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for worker in workers:
            worker.abandon_after_fork(devnull)
    finally:
        os.close(devnull)
    _FORKED_AWAY.extend(workers)
    _LIVE_WORKERS.clear()
    for pool in list(_LIVE_POOLS):
        pool.reset_after_fork()
    _release_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_release_after_fork,
        after_in_child=_forget_workers_after_fork,
    )
