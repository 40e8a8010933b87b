"""Verifier worker processes (`crypto.verify_workers`): exactly libsodium's verdicts, and no
entry lost or accepted when a worker crashes, hangs or answers out of protocol."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD
from helpers import numbered_change

from mindoo_p2p import admission
from mindoo_p2p.crypto import signing, verify_workers
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.crypto.signing import SigningKeyPair
from mindoo_p2p.crypto.verify_worker_process import (
    MAX_FRAME,
    MAX_MESSAGE,
    FrameError,
    Triple,
    check_request,
    check_signature,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
    read_body,
)
from mindoo_p2p.crypto.verify_workers import (
    MAX_FAILURES,
    MAX_WORKERS,
    VerifyWorkers,
    default_command,
    default_workers,
    worker_environment,
)
from mindoo_p2p.entry import Entry
from mindoo_p2p.errors import MindooError
from mindoo_p2p.node import Node
from mindoo_p2p.rejection import RejectionKind
from mindoo_p2p.store import AppendResult

L = 2**252 + 27742317777372353535851937790883648493
"""The order of the Ed25519 base point: S must be below it (libsodium refuses S + L)."""
MakeNode = Callable[[str], Node]
IDENTITY = (1).to_bytes(32, "little")
"""The encoding of the neutral point: a small-order public key or R."""


def vectors() -> list[tuple[str, Triple, bool]]:
    """(name, triple, libsodium's verdict) for each rule the acceptance rule applies."""
    key, other = SigningKeyPair.generate(), SigningKeyPair.generate()
    message = b"mindoo entry bytes" * 10
    good = key.sign(message)
    s_value = int.from_bytes(good[32:], "little")
    flipped = bytes([good[0] ^ 1]) + good[1:]
    s_flipped = good[:40] + bytes([good[40] ^ 1]) + good[41:]
    return [
        ("valid", (key.public_key, message, good), True),
        ("valid, empty message", (key.public_key, b"", key.sign(b"")), True),
        ("bad signature (R altered)", (key.public_key, message, flipped), False),
        ("bad signature (S altered)", (key.public_key, message, s_flipped), False),
        ("message altered", (key.public_key, message + b"!", good), False),
        ("wrong key", (other.public_key, message, good), False),
        ("truncated signature", (key.public_key, message, good[:63]), False),
        ("truncated key", (key.public_key[:31], message, good), False),
        # [S]B = R + [k]A holds for A = R = the neutral point and S = 0 (a ZIP-215 verifier
        # accepts it): libsodium refuses small-order keys and R.
        ("small-order key and R", (IDENTITY, message, IDENTITY + bytes(32)), False),
        ("small-order R", (key.public_key, message, IDENTITY + good[32:]), False),
        # S + L verifies the same equation; libsodium requires the canonical S < L.
        (
            "non-canonical S",
            (key.public_key, message, good[:32] + (s_value + L).to_bytes(32, "little")),
            False,
        ),
        ("non-canonical key encoding", (b"\xff" * 32, message, good), False),
    ]


@pytest.fixture
def workers() -> Iterator[VerifyWorkers]:
    pool = VerifyWorkers(2)
    yield pool
    pool.close()


def test_workers_give_exactly_libsodiums_verdicts(workers: VerifyWorkers) -> None:
    named = vectors()
    triples = [triple for _, triple, _ in named] * 20  # several chunks, mixed in each
    expected = [verdict for _, _, verdict in named] * 20
    assert [check_signature(*t) for t in triples] == expected  # the rule itself
    assert signing.verify_signature is check_signature  # one rule for the whole node
    assert workers.submit(triples)() == expected
    assert workers.failures_total == 0 and len(workers.pids) == 2


def test_a_bad_signature_mid_batch_is_refused_alone_through_the_workers(
    workers: VerifyWorkers,
) -> None:
    previous = signing.use_verify_workers(workers)
    try:
        author = SigningKeyPair.generate()
        raws = [numbered_change(author, seq).raw for seq in range(1, 301)]
        forged = bytearray(raws[150])
        forged[-1] ^= 1
        raws[150] = bytes(forged)
        checked = admission.check_entries(raws, lambda ids: ())
    finally:
        signing.use_verify_workers(previous)
    assert [r.kind for r in checked.rejected] == [RejectionKind.BAD_SIGNATURE]
    assert len(checked.verified) == 299 and workers.failures_total == 0


def batch(count: int = 200) -> tuple[list[Triple], list[bool]]:
    key = SigningKeyPair.generate()
    triples: list[Triple] = []
    for i in range(count):
        message = i.to_bytes(4, "big") * 20
        signature = key.sign(message)
        if i % 9 == 4:
            signature = signature[:10] + bytes([signature[10] ^ 0x20]) + signature[11:]
        triples.append((key.public_key, message, signature))
    return triples, [i % 9 != 4 for i in range(count)]


def fake_worker(source: str) -> list[str]:
    return [sys.executable, "-c", source]


CRASHES = "import sys; sys.stdin.buffer.read(4); sys.exit(3)"
HANGS = "import sys, time; sys.stdin.buffer.read(4); time.sleep(60)"
# Reads each request and answers with one verdict too many, each byte 2.
MISANSWERS = """
import sys
while True:
    head = sys.stdin.buffer.read(4)
    if not head:
        break
    body = sys.stdin.buffer.read(int.from_bytes(head, "big"))
    count = int.from_bytes(body[:4], "big") + 1
    answer = count.to_bytes(4, "big") + b"\\x02" * count
    sys.stdout.buffer.write(len(answer).to_bytes(4, "big") + answer)
    sys.stdout.buffer.flush()
"""


@pytest.mark.parametrize("source", [CRASHES, HANGS, MISANSWERS], ids=["crash", "hang", "amiss"])
def test_a_failing_worker_loses_and_accepts_nothing(source: str) -> None:
    """Every chunk a crashed, hung or lying-in-shape worker held is checked by the caller:
    the verdicts are exactly the rule's, forged signatures stay refused. A worker that dies or
    answers out of shape fails its chunks at once: the caller does not wait for the answer
    timeout (30 s here) before checking them, including the chunk whose answer was wrong."""
    triples, expected = batch()
    hangs = source == HANGS
    pool = VerifyWorkers(2, fake_worker(source), answer_timeout_s=0.5 if hangs else 30.0)
    try:
        started = time.monotonic()
        assert pool.submit(triples)() == expected
        assert hangs or time.monotonic() - started < 5.0  # well under the 30 s timeout
        assert pool.failures_total >= 1
    finally:
        pool.close()


def test_hung_workers_cost_one_answer_timeout_together() -> None:
    """Four hung workers, two chunks each: the batch waits one timeout in all (one deadline
    for the batch), not one per chunk in turn (6 s here)."""
    triples, expected = batch(400)
    pool = VerifyWorkers(4, fake_worker(HANGS), answer_timeout_s=1.5)
    try:
        started = time.monotonic()
        assert pool.submit(triples)() == expected
        assert time.monotonic() - started < 4.0
        assert pool.failures_total == 4
    finally:
        pool.close()


def test_a_killed_worker_is_reaped(tmp_path: Path) -> None:
    """A worker killed for failing is waited for: no zombie stays, even when the pool gave up
    and keeps the dead worker in its place."""
    pids = tmp_path / "pids"
    source = f"import os; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); " + CRASHES
    triples, expected = batch(70)
    pool = VerifyWorkers(1, fake_worker(source))
    try:
        for _ in range(MAX_FAILURES):
            assert pool.submit(triples)() == expected
        assert not pool.usable
        started = [int(line) for line in pids.read_text().split()]
        assert len(started) == MAX_FAILURES
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in started):
            time.sleep(0.01)
        assert [p for p in started if Path(f"/proc/{p}").exists()] == []  # reaped, not zombies
    finally:
        pool.close()


def test_a_valid_signature_over_an_unframable_message_is_checked_in_process() -> None:
    """A message over a frame's bounds cannot go to a worker: it gets the rule's verdict in
    the calling thread (valid accepted, forged refused), not a blanket refusal."""
    key = SigningKeyPair.generate()
    big = b"x" * (MAX_MESSAGE + 1)
    signature = key.sign(big)
    forged = signature[:5] + bytes([signature[5] ^ 1]) + signature[6:]
    triples, expected = batch(70)
    items = [(key.public_key, big, signature), (key.public_key, big, forged), *triples]
    pool = VerifyWorkers(1)
    try:
        assert pool.submit(items)() == [True, False, *expected]
        assert pool.failures_total == 0
    finally:
        pool.close()


def test_a_worker_gets_no_mindoo_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node password (``MINDOO_PASSWORD``, how a daemon may get it) and every other
    ``MINDOO_*`` variable stay out of a worker's environment: a worker holds no secret."""
    monkeypatch.setenv("MINDOO_PASSWORD", PASSWORD)
    monkeypatch.setenv("MINDOO_HOME", "/somewhere")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    kept = worker_environment()
    assert kept["LC_ALL"] == "C.UTF-8" and kept["PATH"] == os.environ["PATH"]
    assert not [name for name in kept if name.startswith("MINDOO_")]
    triples, expected = batch()
    pool = VerifyWorkers(1)
    try:
        assert pool.submit(triples)() == expected
        (pid,) = pool.pids
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert [v for v in environ if v.startswith(b"MINDOO_")] == []
        assert PASSWORD.encode() not in b"\0".join(environ)
    finally:
        pool.close()


def test_a_forked_child_does_not_keep_its_parents_workers() -> None:
    """After a fork, the child holds none of the workers' pipes (its parent's `close` ends
    them at once, by their input's end, not by a kill after a wait) and its copy of the pool
    starts workers of its own."""
    triples, expected = batch(300)
    pool = VerifyWorkers(2)
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()
    try:
        assert pool.submit(triples)() == expected
        processes = [worker.process for worker in pool._workers]
        child = os.fork()
        if child == 0:  # pragma: no cover (the child reports through the pipe)
            code = 1
            try:
                os.close(report_r)
                os.close(release_w)
                ok = pool.pids == [] and pool.submit(triples)() == expected
                ok = ok and all(pid not in pool.pids for pid in (p.pid for p in processes))
                pool.close()
                os.write(report_w, b"1" if ok else b"0")
                os.read(release_r, 1)  # alive until the parent has closed its workers
                code = 0
            finally:
                os._exit(code)
        os.close(report_w)
        os.close(release_r)
        ready, _, _ = select.select([report_r], [], [], 60)
        assert ready and os.read(report_r, 1) == b"1"  # the child verified with its own
        pool.close()
        assert [process.returncode for process in processes] == [0, 0]  # ended, not killed
        os.close(release_w)
        release_w = -1
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        pool.close()
        for fd in (report_r, release_w):
            if fd >= 0:
                os.close(fd)


def test_the_pool_stops_after_failures_in_a_row_and_callers_verify_in_process() -> None:
    triples, expected = batch(70)
    pool = VerifyWorkers(1, fake_worker(CRASHES))
    try:
        for _ in range(MAX_FAILURES):
            assert pool.submit(triples)() == expected
        assert not pool.usable
        previous = signing.use_verify_workers(pool)
        try:
            assert signing.verify_workers() is None  # unusable: the thread pool takes over
            assert signing.verify_many(triples) == expected
        finally:
            signing.use_verify_workers(previous)
    finally:
        pool.close()


def test_a_killed_worker_is_replaced(workers: VerifyWorkers) -> None:
    triples, expected = batch()
    assert workers.submit(triples)() == expected
    first = workers.pids
    threads = verify_threads()  # this pool's four, and those of any other pool here
    os.kill(first[0], signal.SIGKILL)
    assert workers.submit(triples)() == expected  # its chunks were checked in process
    assert workers.submit(triples)() == expected
    assert first[0] not in workers.pids and len(workers.pids) == 2
    assert workers.usable
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and verify_threads() > threads:
        time.sleep(0.01)
    assert verify_threads() == threads  # the dead worker's writer and reader threads ended


def verify_threads() -> int:
    return sum(t.name.startswith("mindoo-verify-") for t in threading.enumerate())


def test_a_worker_that_cannot_start_counts_as_a_failure() -> None:
    triples, expected = batch(70)
    pool = VerifyWorkers(1, ["/nonexistent/python"])
    try:
        for _ in range(MAX_FAILURES):
            assert pool.submit(triples)() == expected
        assert not pool.usable and pool.failures_total == MAX_FAILURES
    finally:
        pool.close()


def test_frames_round_trip_and_refuse_what_breaks_their_layout() -> None:
    named = [(t, ok) for _, t, ok in vectors() if len(t[0]) == 32 and len(t[2]) == 64]
    triples = [t for t, _ in named]
    frame = encode_request(triples)
    body = read_body(io.BytesIO(frame))
    assert body is not None and decode_request(body) == triples
    # The worker checks each item in place, by the same rule.
    assert check_request(body) == [ok for _, ok in named] == [check_signature(*t) for t in triples]
    for check in (decode_request, check_request):
        with pytest.raises(FrameError):
            check(body[:-1])  # the last message cut short
        with pytest.raises(FrameError):
            check(body + b"\x00")  # bytes after the last item
        with pytest.raises(FrameError):
            check((70_000).to_bytes(4, "big"))  # over MAX_ITEMS
        with pytest.raises(FrameError):
            check(body[:4] + (2**31).to_bytes(4, "big") + body[8:])  # a message past the end
        with pytest.raises(FrameError):
            check(body[:50])  # an item cut inside its key and signature
    with pytest.raises(FrameError):
        read_body(io.BytesIO((MAX_FRAME + 1).to_bytes(4, "big")))
    with pytest.raises(FrameError):
        read_body(io.BytesIO(frame[:-1]))
    answer = encode_answer([True, False, True])
    assert decode_answer(answer[4:], 3) == [True, False, True]
    with pytest.raises(FrameError):
        decode_answer(answer[4:], 4)
    with pytest.raises(FrameError):
        decode_answer(answer[4:9] + b"\x03" + answer[10:], 3)  # a verdict byte of 3


def test_a_worker_refuses_a_malformed_request_and_exits() -> None:
    worker = subprocess.run(
        default_command(),
        input=(8).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x00" * 4,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert worker.returncode == 2 and worker.stdout == b""
    assert b"cut short" in worker.stderr


BAD_WORKER_COUNTS = ["two", "", "4.0", " 2 ", "+3", "1_0", "-5", "\u0663", str(MAX_WORKERS + 1)]


def test_the_worker_count_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, count in (("0", 0), ("3", 3), ("03", 3), (str(MAX_WORKERS), MAX_WORKERS)):
        monkeypatch.setenv("MINDOO_VERIFY_WORKERS", value)
        assert default_workers() == count
    for value in BAD_WORKER_COUNTS:  # "\u0663": an Arabic-Indic 3, a digit to str.isdigit
        monkeypatch.setenv("MINDOO_VERIFY_WORKERS", value)
        with pytest.raises(MindooError, match="MINDOO_VERIFY_WORKERS must be a whole number"):
            default_workers()
    # thousands of digits: int() alone would raise ValueError (Python's digit limit)
    monkeypatch.setenv("MINDOO_VERIFY_WORKERS", "9" * 5000)
    with pytest.raises(MindooError, match=r"not '9{32}'\.\.\."):
        default_workers()


def test_a_chunk_sent_to_a_stopping_worker_fails_at_once() -> None:
    """A submit racing `close` (its worker chosen just before the worker stopped) must not
    queue its chunk behind the writer's end, where nothing would answer it before the
    answer timeout: it fails at once, and its caller checks it in process."""
    triples, _ = batch(70)
    pool = VerifyWorkers(1)
    try:
        pool.submit(triples)()
        worker = pool._workers[0]
        worker.stop()
        chunk = verify_workers._Chunk(triples, worker)
        worker.send(chunk)
        assert chunk.future.done()
        with pytest.raises(verify_workers.VerifyWorkerError, match="gone"):
            chunk.future.result(0)
    finally:
        pool.close()


def test_a_bad_worker_count_stops_the_node_at_open(
    make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_node("alice").home
    for value in BAD_WORKER_COUNTS:
        monkeypatch.setenv("MINDOO_VERIFY_WORKERS", value)
        with pytest.raises(MindooError, match=re.escape(f"not {value!r}")):
            Node.open(home, PASSWORD)
        with pytest.raises(MindooError, match="MINDOO_VERIFY_WORKERS"):
            Node.init(home.parent / "bob", PASSWORD, kdf=KdfProfile.TESTING)
        assert not (home.parent / "bob" / "keystore.bin").exists()


def test_a_bad_worker_count_never_fails_a_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should a bad value reach the first large batch (no node opened), the batch is checked
    by the thread pool, with a warning, every time: verification never fails over a setting."""
    monkeypatch.setenv("MINDOO_VERIFY_WORKERS", "")
    for name in ("_WORKERS", "_WORKERS_PID", "_WORKERS_SET"):
        monkeypatch.setattr(signing, name, getattr(signing, name))
    signing._WORKERS_SET = False
    triples, expected = batch(200)
    with caplog.at_level(logging.WARNING, logger="mindoo_p2p.crypto.signing"):
        assert signing.verify_many(triples) == expected
        assert signing.verify_many(triples) == expected
    assert signing.verify_workers() is None
    assert [r.message for r in caplog.records].count(
        "MINDOO_VERIFY_WORKERS must be a whole number of verifier workers from 0 to"
        f" {MAX_WORKERS} (digits only), not ''; signatures are checked by threads of this process"
    ) == 1


def test_ingest_batches_equals_batch_by_batch_ingest(make_node: MakeNode) -> None:
    """`EntryIntake.ingest_batches` checks batch k+1 before batch k commits, with the same
    outcome as `ingest` batch by batch: a membership record of batch 1 authorizes the new
    member's entries in batch 2, a forged signature mid-batch is refused alone, an entry
    also in the next batch is a duplicate there."""
    alice, carol, dave = make_node("alice"), make_node("carol"), make_node("dave")
    tenant = alice.create_tenant("acme")
    carol.join(alice.invite(tenant, carol.public_identity()))
    dave.join(alice.invite(tenant, dave.public_identity()))
    held = {e.id for e in alice.store.iter_entries()}
    bob = make_node("bob")
    bob.join(alice.invite(tenant, bob.public_identity()))  # the ADD of bob, in alice's log
    notes = bob.tenant("acme").create_db("notes")
    for i in range(150):
        notes.create_document({"n": i})
    log = [e.raw for e in alice.store.iter_entries() if e.id not in held]
    bobs = [e.raw for e in bob.store.iter_entries(tenant.id, "notes")]
    forged = bytearray(bobs[70])
    forged[-1] ^= 1
    batches = [log, [*bobs[:70], bytes(forged), *bobs[71:120]], bobs[70:71] + bobs[100:]]

    def outcome(results: list[AppendResult]) -> list[tuple[object, ...]]:
        return [
            (
                sorted(r.added),
                sorted(r.duplicates),
                sorted((x.entry_id, x.kind) for x in r.rejected),
            )
            for r in results
        ]

    streamed = outcome(list(carol.intake.ingest_batches(batches)))
    assert streamed == outcome([dave.ingest(batch) for batch in batches])
    (added_log, _, refused_log), (added, _, refused), (added_last, duplicates, _) = streamed
    assert len(added_log) == len(log) and not refused_log
    assert [kind for _, kind in refused] == [RejectionKind.BAD_SIGNATURE] and len(added) == 119
    assert duplicates == sorted(Entry.decode(raw).id for raw in bobs[100:120])
    assert len(added_last) == 31  # the genuine #70 and the 30 after the second batch
    every = [Entry.decode(raw).id for raw in log + bobs]
    assert carol.store.missing(every) == [] and dave.store.missing(every) == []


def test_a_fork_while_a_worker_starts_leaves_the_child_none_of_its_pipes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that forks while another starts a worker (between its process starting and
    its registration with the fork hooks) must not leave the child holding the new worker's
    input: the start and the registration happen under the registry lock, which the fork
    hooks take first."""
    real_popen = subprocess.Popen
    started, go = threading.Event(), threading.Event()
    inodes: list[int] = []

    class SlowPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not started.is_set():
                inodes.append(os.fstat(self.stdin.fileno()).st_ino)
                started.set()
                go.wait(30)  # the other thread tries to fork now, before the registration

    monkeypatch.setattr(verify_workers.subprocess, "Popen", SlowPopen)
    triples, expected = batch(100)
    pool = VerifyWorkers(1)
    report_r, report_w = os.pipe()
    forked: list[int] = []

    def fork_now() -> None:
        started.wait(30)
        child = os.fork()
        if child == 0:  # pragma: no cover (the child reports through the pipe)
            held = 0
            for name in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    info = os.fstat(int(name))
                    held += stat.S_ISFIFO(info.st_mode) and info.st_ino == inodes[0]
            os.write(report_w, str(held).encode())
            os._exit(0)
        forked.append(child)

    verdicts: list[list[bool]] = []
    submitting = threading.Thread(target=lambda: verdicts.append(pool.submit(triples)()))
    forking = threading.Thread(target=fork_now)
    try:
        submitting.start()
        forking.start()
        assert started.wait(30)
        time.sleep(0.2)  # the forking thread reaches the fork (and, fixed, waits for the lock)
    finally:
        go.set()
        submitting.join(30)
        forking.join(30)
    os.close(report_w)
    try:
        assert forked and verdicts == [expected]
        assert os.read(report_r, 16) == b"0"  # the child holds no end of the worker's input
    finally:
        os.close(report_r)
        for child in forked:
            os.waitpid(child, 0)
        pool.close()


def test_workers_started_ahead_answer_the_first_batch() -> None:
    """`start` (what a daemon calls when it starts) runs every worker before any batch; the
    first batch then goes to them. A worker that cannot start counts as a failure."""
    triples, expected = batch(100)
    pool = VerifyWorkers(2)
    try:
        assert pool.pids == []
        pool.start()
        started = pool.pids
        assert len(started) == 2
        assert pool.submit(triples)() == expected
        assert pool.pids == started
    finally:
        pool.close()
    broken = VerifyWorkers(1, ["/nonexistent/mindoo-verifier"])
    try:
        broken.start()
        assert broken.failures_total == 1 and broken.pids == []
        assert broken.submit(triples)() == expected  # checked in this process
    finally:
        broken.close()
