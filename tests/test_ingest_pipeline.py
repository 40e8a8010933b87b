"""The sync session's ingest pipeline: batches of queued jobs, each job told its own share of
the outcome, in order; the queue bounded. Driven directly with a scripted runner (no streams),
then once through a whole session over memory streams."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from test_sync_driver_hooks import KEY_A, KEY_B, CheckedAuthority, Holder, sealed, sync_pair

from mindoo_p2p.rejection import Rejected, RejectionKind
from mindoo_p2p.sync import ingest_pipeline
from mindoo_p2p.sync.ingest_pipeline import IngestPipeline, IngestStages, split_outcome
from mindoo_p2p.sync.protocol import IngestJob, IngestOutcome, SyncLimits, SyncStore
from mindoo_p2p.testing.memory_sync import MemorySyncStore, memory_frame_pair

TENANT = os.urandom(16)


def entry_id(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def job(*raws: bytes, database: str = "notes") -> IngestJob:
    return IngestJob(database, tuple(raws))


class ScriptedRunner:
    """A runner that records each batch and, while ``gate`` is set, waits for it to open.
    It adds every entry except those starting with ``bad`` (rejected) or ``old`` (refused)."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.gate: trio.Event | None = None

    async def __call__(self, store: SyncStore, raws: Sequence[bytes]) -> IngestOutcome:
        self.batches.append(list(raws))
        if self.gate is not None:
            await self.gate.wait()
        added, rejected, refused = [], [], []
        for raw in raws:
            if raw.startswith(b"bad"):
                rejected.append(Rejected(entry_id(raw), RejectionKind.MALFORMED, "bad"))
            elif raw.startswith(b"old"):
                refused.append(Rejected(entry_id(raw), RejectionKind.NOT_A_MEMBER, "old"))
            elif entry_id(raw) not in added:
                added.append(entry_id(raw))
        return IngestOutcome(tuple(added), tuple(rejected), tuple(refused))


def test_each_job_gets_its_share_of_a_batch_outcome() -> None:
    jobs = [job(b"a1", b"bad1", b"x"), job(b"x", b"old1"), job(b"a2", b"bad1")]
    outcome = IngestOutcome(
        added=(entry_id(b"a1"), entry_id(b"x"), entry_id(b"a2")),
        rejected=(Rejected(entry_id(b"bad1"), RejectionKind.MALFORMED, "bad"),),
        refused=(Rejected(entry_id(b"old1"), RejectionKind.NOT_A_MEMBER, "old"),),
    )
    first, second, third = split_outcome(jobs, outcome)
    assert first.added == (entry_id(b"a1"), entry_id(b"x"))
    assert second.added == ()  # x was added once, counted in the first job that held it
    assert third.added == (entry_id(b"a2"),)
    assert [r.entry_id for r in first.rejected] == [entry_id(b"bad1")]
    assert [r.entry_id for r in third.rejected] == [entry_id(b"bad1")]
    assert [r.entry_id for r in second.refused] == [entry_id(b"old1")]
    assert not first.refused and not second.rejected
    assert split_outcome(jobs[:1], outcome) == [outcome]


def test_shares_use_the_ids_a_session_computed_without_hashing_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that carries its entries' ids (the initiator hashed each fetched entry to match
    it with its request) is split by them: the same shares, no second SHA-256."""
    plain = [job(b"a1", b"bad1", b"x"), job(b"x", b"old1")]
    outcome = IngestOutcome(
        added=(entry_id(b"a1"), entry_id(b"x")),
        rejected=(Rejected(entry_id(b"bad1"), RejectionKind.MALFORMED, "bad"),),
        refused=(Rejected(entry_id(b"old1"), RejectionKind.NOT_A_MEMBER, "old"),),
    )
    expected = split_outcome(plain, outcome)
    carrying = [
        IngestJob(j.database, j.raws, (), tuple(entry_id(raw) for raw in j.raws)) for j in plain
    ]

    def no_hash(data: bytes) -> object:
        raise AssertionError("hashed again")

    monkeypatch.setattr(ingest_pipeline.hashlib, "sha256", no_hash)
    assert split_outcome(carrying, outcome) == expected


async def test_jobs_queued_while_a_batch_is_stored_make_up_the_next_batch() -> None:
    runner = ScriptedRunner()
    runner.gate = trio.Event()
    reported: list[tuple[IngestJob, IngestOutcome]] = []
    pipeline = IngestPipeline(
        MemorySyncStore(TENANT),
        IngestStages.single(runner),
        lambda j, o: reported.append((j, o)),
        queue_jobs=8,
    )
    jobs = [job(f"e{i}".encode(), f"f{i}".encode()) for i in range(5)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        await pipeline.put(jobs[0])
        await trio.testing.wait_all_tasks_blocked()
        assert runner.batches == [[b"e0", b"f0"]]  # stored at once: nothing else was waiting
        for each in jobs[1:]:
            await pipeline.put(each)
        runner.gate.set()
        pipeline.close()
    assert runner.batches[1] == [raw for each in jobs[1:] for raw in each.raws]
    assert pipeline.batches == 2
    assert [j for j, _ in reported] == jobs  # reported in the order received
    for each, outcome in reported:
        assert outcome.added == tuple(entry_id(raw) for raw in each.raws)


async def test_a_batch_stops_at_commit_bytes_and_the_queue_is_bounded() -> None:
    runner = ScriptedRunner()
    runner.gate = trio.Event()
    pipeline = IngestPipeline(
        MemorySyncStore(TENANT),
        IngestStages.single(runner),
        lambda j, o: None,
        commit_bytes=10,
        queue_jobs=2,
    )
    jobs = [job(bytes([65 + i]) * 4) for i in range(6)]  # 4 bytes each
    puts_done = 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        await pipeline.put(jobs[0])
        await trio.testing.wait_all_tasks_blocked()

        async def producer() -> None:
            nonlocal puts_done
            for each in jobs[1:]:
                await pipeline.put(each)
                puts_done += 1
            pipeline.close()

        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        # One job in the runner, two in the queue, the producer waits with the fourth.
        assert len(runner.batches) == 1 and puts_done == 3
        runner.gate.set()
    assert [len(batch) for batch in runner.batches] == [1, 3, 2]  # 3 x 4 bytes reach 10


async def test_a_runner_error_fails_the_pipeline() -> None:
    async def broken(store: SyncStore, raws: Sequence[bytes]) -> IngestOutcome:
        raise RuntimeError("disk on fire")

    pipeline = IngestPipeline(
        MemorySyncStore(TENANT), IngestStages.single(broken), lambda j, o: None
    )
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await pipeline.put(job(b"x"))
            pipeline.close()
    assert caught.group_contains(RuntimeError, match="disk on fire")


async def test_a_session_stores_many_frames_in_fewer_batches_than_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a whole session with a slow store: frames keep arriving while a batch is stored,
    so batches span several frames, and every entry lands."""
    entries = sealed(1200, KEY_B, TENANT, payload_size=2000)
    source, target = MemorySyncStore(TENANT), MemorySyncStore(TENANT)
    source.add_own(entries)
    calls: list[int] = []

    async def slow_ingest(store: SyncStore, raws: Sequence[bytes]) -> IngestOutcome:
        calls.append(len(raws))
        await trio.sleep(0.05)  # autojump clock: a slow disk, no real waiting
        return store.ingest(raws)

    with trio.fail_after(60):
        report = await sync_pair(
            memory_frame_pair(buffer=4),
            (CheckedAuthority(TENANT, KEY_A, Holder()), target),
            (CheckedAuthority(TENANT, KEY_B, Holder()), source),
            initiator_options={"run_ingest": slow_ingest},
        )
    assert report.received == 1200 and len(target) == 1200
    frames_with_entries = report.frames_received
    assert sum(calls) == 1200
    assert len(calls) < frames_with_entries / 2


async def test_two_stages_check_the_next_batch_while_one_commits_and_commit_in_order() -> None:
    events: list[str] = []
    commit_gate = trio.Event()

    async def check(store: SyncStore, raws: Sequence[bytes]) -> object:
        events.append("check " + b",".join(raws).decode())
        return list(raws)

    async def commit(store: SyncStore, checked: object) -> IngestOutcome:
        assert isinstance(checked, list)
        events.append("commit " + b",".join(checked).decode())
        await commit_gate.wait()
        return IngestOutcome(added=tuple(entry_id(raw) for raw in checked))

    reported: list[IngestJob] = []
    pipeline = IngestPipeline(
        MemorySyncStore(TENANT), IngestStages(check, commit), lambda j, o: reported.append(j)
    )
    jobs = [job(b"a"), job(b"b"), job(b"c")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        await pipeline.put(jobs[0])
        await trio.testing.wait_all_tasks_blocked()
        await pipeline.put(jobs[1])
        await trio.testing.wait_all_tasks_blocked()
        # "b" was checked while "a" is still committing.
        assert events == ["check a", "commit a", "check b"]
        await pipeline.put(jobs[2])
        commit_gate.set()
        pipeline.close()
    assert events == ["check a", "commit a", "check b", "commit b", "check c", "commit c"]
    assert reported == jobs


async def test_a_long_push_to_a_slow_store_is_not_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The initiator pushes entries for far longer than the idle bound while the responder
    stores them slowly and says nothing until it has (FINISHED): the session completes,
    since the responder keeps taking frames in. (The push sessions of a 10^6 clone timed out
    this way: the pushing side heard nothing for 30 s.)"""
    entries = sealed(1600, KEY_A, TENANT, payload_size=16_000)
    pusher, slow = MemorySyncStore(TENANT), MemorySyncStore(TENANT)
    pusher.add_own(entries)
    idle = 4.0

    async def slow_ingest(store: SyncStore, raws: Sequence[bytes]) -> IngestOutcome:
        await trio.sleep(1.5)
        return store.ingest(raws)

    started = trio.current_time()
    report = await sync_pair(
        memory_frame_pair(),
        (CheckedAuthority(TENANT, KEY_A, Holder()), pusher),
        (CheckedAuthority(TENANT, KEY_B, Holder()), slow),
        initiator_options={"limits": SyncLimits(idle_seconds=idle)},
        responder_options={"run_ingest": slow_ingest, "limits": SyncLimits(idle_seconds=idle)},
    )
    assert trio.current_time() - started > 2 * idle  # the push outlasted the idle bound
    assert report.sent == 1600 and len(slow) == 1600
