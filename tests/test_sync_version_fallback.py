"""A version-3 initiator toward a version-1 responder (063fa60 and earlier): it falls back, one
version at a time (3 denied, then 2 denied), to a version-1 session on a new stream, speaks
exactly what the old responder expects (its list first, one scope at a time), remembers the
peer's version in the peer table, and cannot be made to loop. The old responder here is
faithful: the current one constrained to version 1 (no list announced first) behind the old
HELLO check (any version but 1 gets the one DENIED). scripts/check_protocol_compat.py runs the
real 063fa60 (version 1) and 3d3bd70 (version 2) code the same way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from helpers import seal_entry, two_writers_converge
from sync_helpers import AUTHORITY_A, AUTHORITY_B, TENANT

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.daemon import PeerTable, sync_sessions
from mindoo_p2p.daemon.peer_table import VERSION_RECHECK_MAX_SECONDS, VERSION_RECHECK_SECONDS
from mindoo_p2p.entry import TENANT_LOG, Entry
from mindoo_p2p.sync.auth import DENIED_FRAME, AuthInitiator
from mindoo_p2p.sync.driver import (
    VersionRefused,
    run_initiator,
    run_responder,
    run_with_version_fallback,
)
from mindoo_p2p.sync.messages import (
    DatabaseList,
    Entries,
    EntryFragment,
    FetchRequest,
    Hello,
    IndexRequest,
    ReconRequest,
    decode_message,
)
from mindoo_p2p.sync.protocol import SyncReport
from mindoo_p2p.testing import Cluster
from mindoo_p2p.testing.memory_sync import MemoryFrameStream, MemorySyncStore, memory_frame_pair

DOC_KEY = os.urandom(32)
AUTHOR = SigningKeyPair.generate()
BASE_MS = 1_760_000_000_000
PEER_A, PEER_B = b"peer-A", b"peer-B"
NAMES = (TENANT_LOG, "notes", "tasks", "zeta")
_seq = iter(range(1, 1 << 40))


def seal(database: str, timestamp: int) -> Entry:
    return seal_entry(
        tenant_id=TENANT,
        database=database,
        author=AUTHOR,
        author_seq=next(_seq),
        timestamp_ms=timestamp,
        key_id=bytes(16),
        key=DOC_KEY,
        payload=os.urandom(48),
    )


def differing_stores() -> tuple[MemorySyncStore, MemorySyncStore]:
    """Two stores sharing 100 entries per database, each with a few of its own in each."""
    shared = [seal(db, BASE_MS + i * 1000) for db in NAMES for i in range(100)]
    mine, theirs = MemorySyncStore(TENANT), MemorySyncStore(TENANT)
    mine.add_own([*shared, *(seal(db, BASE_MS + 10**7 + i) for db in NAMES for i in range(5))])
    theirs.add_own(
        [*shared, *(seal(db, BASE_MS + 2 * 10**7 + i) for db in NAMES for i in range(3))]
    )
    return mine, theirs


class ReplayStream:
    """A stream end that returns ``first`` before reading on, and logs what it receives."""

    def __init__(self, inner: Any, first: bytes, log: list[bytes]) -> None:
        self.inner, self.pending, self.log = inner, [first], log

    async def send_frame(self, data: bytes) -> None:
        await self.inner.send_frame(data)

    async def receive_frame(self) -> bytes:
        frame = self.pending.pop() if self.pending else await self.inner.receive_frame()
        self.log.append(frame)
        return frame

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class OldResponder:
    """A version-1 responder: denies a HELLO of any other version (as 063fa60 did), else
    answers the version-1 way (it never announces its list first)."""

    store: MemorySyncStore
    speaks: frozenset[int] = frozenset({1})
    hellos: list[int] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    """Every frame the initiator sent in the sessions it served."""
    reports: list[SyncReport | None] = field(default_factory=list)

    async def serve(self, stream: MemoryFrameStream) -> None:
        first = await stream.receive_frame()
        hello = decode_message(first)
        assert isinstance(hello, Hello)
        self.hellos.append(hello.version)
        if hello.version not in self.speaks:
            await stream.send_frame(DENIED_FRAME)
            await stream.close()
            return
        replay = ReplayStream(stream, first, self.received)
        tenants = {TENANT: (AUTHORITY_B, self.store)}
        self.reports.append(await run_responder(replay, PEER_B, PEER_A, tenants))


async def sync_with(responder: OldResponder, table: PeerTable, store: MemorySyncStore) -> object:
    """What `SyncSessions.sync_tenant` does: sessions on new streams, versions from the table."""

    async def attempt(version: int) -> SyncReport:
        near, far = memory_frame_pair()
        outcome: list[SyncReport | VersionRefused] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(responder.serve, far)
            try:
                outcome.append(
                    await run_initiator(near, PEER_A, PEER_B, AUTHORITY_A, store, version=version)
                )
            except VersionRefused as exc:  # raised outside the nursery, not in a group
                outcome.append(exc)
            finally:
                await near.close()
        if isinstance(outcome[0], VersionRefused):
            raise outcome[0]
        return outcome[0]

    with trio.fail_after(30):
        try:
            return await run_with_version_fallback(
                attempt, table.sync_version("old"), lambda v: table.version_refused("old", v)
            )
        except VersionRefused as exc:
            return exc


def one_scope_at_a_time(frames: Sequence[bytes], names: Sequence[str]) -> list[str]:
    """What in the initiator's frames breaks the version-1 responder's assumptions: requests
    reach the databases in order (it reconciled one at a time), and every pushed entry is of
    the database last asked about (that is where 063fa60 counts it). Empty when none."""
    problems: list[str] = []
    last: int | None = None
    for frame in frames:
        message = decode_message(frame)
        if isinstance(message, ReconRequest | IndexRequest | FetchRequest):
            if last is not None and message.database < last:
                problems.append(f"a request for database {message.database} after {last}")
            last = message.database
        elif isinstance(message, EntryFragment):
            problems.append("an entry fragment (not expected of small entries)")
        elif isinstance(message, Entries):
            for raw in message.raws:
                named = Entry.decode(raw).database
                if last is None or named != names[last]:
                    problems.append(f"a pushed {named} entry counted under {last}")
    return problems


async def test_initiator_falls_back_to_v1_toward_an_old_responder_and_converges() -> None:
    mine, theirs = differing_stores()
    old = OldResponder(theirs)
    table = PeerTable(clock=lambda: 0.0)
    report = await sync_with(old, table, mine)
    assert isinstance(report, SyncReport), report
    assert old.hellos == [3, 2, 1]  # denied at each HELLO, then a new session of version 1
    assert report.protocol_version == 1
    assert mine.ids() == theirs.ids()
    assert one_scope_at_a_time(old.received[2:], NAMES) == []  # after HELLO and proof
    assert isinstance(decode_message(old.received[2]), DatabaseList)  # our list comes first
    # Remembered: the next session goes to version 1 straight away.
    assert table.sync_version("old") == 1
    old.hellos.clear()
    again = await sync_with(old, table, mine)
    assert isinstance(again, SyncReport) and old.hellos == [1]


async def test_the_one_scope_check_tells_a_version_2_session_apart() -> None:
    """The check above has teeth: a version-2 session (scopes in one flight) fails it. A
    responder of version 2 (3d3bd70) denies our HELLO of 3: one version-2 session follows."""
    mine, theirs = differing_stores()
    current = OldResponder(theirs, speaks=frozenset({1, 2}))
    report = await sync_with(current, PeerTable(), mine)
    assert isinstance(report, SyncReport) and report.protocol_version == 2
    assert current.hellos == [3, 2] and mine.ids() == theirs.ids()
    assert one_scope_at_a_time(current.received[2:], NAMES) != []


async def test_a_responder_of_version_3_is_asked_once_and_converges() -> None:
    mine, theirs = differing_stores()
    current = OldResponder(theirs, speaks=frozenset({1, 2, 3}))
    report = await sync_with(current, PeerTable(), mine)
    assert isinstance(report, SyncReport) and report.protocol_version == 3
    assert current.hellos == [3] and mine.ids() == theirs.ids()
    assert report.peer_added == 4 * 5  # it pushed: FINISHED came, with what they did


async def test_a_peer_that_denies_every_version_gets_one_session_per_version() -> None:
    mine, theirs = differing_stores()
    stubborn = OldResponder(theirs, speaks=frozenset())
    table = PeerTable(clock=lambda: 0.0)
    outcome = await sync_with(stubborn, table, mine)
    assert isinstance(outcome, VersionRefused) and outcome.version == 1
    assert stubborn.hellos == [3, 2, 1]
    stubborn.hellos.clear()
    assert isinstance(await sync_with(stubborn, table, mine), VersionRefused)
    assert stubborn.hellos == [1]  # the table remembers: no new probe of version 3 or 2 yet


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_peer_table_remembers_an_old_peer_and_rechecks_with_backoff() -> None:
    clock = FakeClock()
    table = PeerTable(clock=clock)
    assert table.sync_version("p") == 3
    assert table.version_refused("p", 3) == 2
    assert table.sync_version("p") == 2
    table.connected("p")
    table.disconnected("p")  # kept across reconnects: an old node never forgets our probes
    assert table.sync_version("p") == 2
    clock.now += VERSION_RECHECK_SECONDS
    assert table.sync_version("p") == 3  # time to see whether it upgraded
    assert table.version_refused("p", 3) == 2  # it did not: the wait doubles
    clock.now += VERSION_RECHECK_SECONDS
    assert table.sync_version("p") == 2
    clock.now += VERSION_RECHECK_SECONDS
    assert table.sync_version("p") == 3
    for _ in range(40):  # the wait is capped
        table.version_refused("p", 3)
    clock.now += VERSION_RECHECK_MAX_SECONDS - 1
    assert table.sync_version("p") == 2
    clock.now += 1
    assert table.sync_version("p") == 3


async def test_a_recheck_of_a_version_1_peer_costs_one_denied_hello() -> None:
    """A version-1 node (063fa60) scores every HELLO it denies and never forgets: a recheck
    asks one version above the remembered one (2, not 3 then 2), so each costs one denial,
    and the wait still doubles. Once it upgrades, the probe's session lifts the cap."""
    mine, theirs = differing_stores()
    old = OldResponder(theirs)
    clock = FakeClock()
    table = PeerTable(clock=clock)
    assert isinstance(await sync_with(old, table, mine), SyncReport)
    assert old.hellos == [3, 2, 1]  # first contact: every version down to the one it speaks
    waits = []
    for _ in range(4):
        old.hellos.clear()
        assert table.sync_version("old") == 1
        recheck_at = table.peer("old").version_recheck_at
        waits.append(recheck_at - clock.now)
        clock.now = recheck_at
        assert isinstance(await sync_with(old, table, mine), SyncReport)
        assert old.hellos == [2, 1]  # one denial per recheck
    assert waits == [VERSION_RECHECK_SECONDS * 2**n for n in range(1, 5)]  # 2 refusals first
    old.speaks = frozenset({1, 2, 3})  # it upgraded
    old.hellos.clear()
    clock.now = table.peer("old").version_recheck_at
    report = await sync_with(old, table, mine)
    assert isinstance(report, SyncReport) and old.hellos == [2]
    table.peer_speaks("old", report.protocol_version)  # what SyncSessions does with a report
    assert table.sync_version("old") == 3


def test_peer_table_lifts_the_cap_when_the_peer_speaks_a_newer_version() -> None:
    table = PeerTable(clock=FakeClock())
    table.version_refused("p", 3)
    table.peer_speaks("p", 2)  # our version-2 session: nothing new
    assert table.sync_version("p") == 2
    table.peer_speaks("p", 3)  # it started a version-3 session with us: it upgraded
    assert table.sync_version("p") == 3
    assert table.peer("p").version_refusals == 0
    assert table.version_refused("p", 1) is None  # nothing older than version 1


def test_peer_table_version_memory_is_bounded_with_the_table() -> None:
    table = PeerTable(max_peers=4, clock=FakeClock())
    for index in range(50):
        table.version_refused(f"p{index}", 2)
    assert len(table) <= 4


def test_handshake_announces_the_version_asked_for() -> None:
    hello = AuthInitiator(PEER_A, PEER_B, AUTHORITY_A, 1).next_frame()
    assert hello is not None
    message = decode_message(hello)
    assert isinstance(message, Hello) and message.version == 1
    for bad in (0, 4):
        with pytest.raises(ValueError, match="version"):
            AuthInitiator(PEER_A, PEER_B, AUTHORITY_A, bad)


# --- the daemon, over libp2p on loopback -------------------------------------------------------


async def test_daemons_sync_through_responders_that_speak_only_version_1(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both daemons' responders behave as 063fa60's (HELLO 3 or 2 denied, else the version-1 way):
    their initiators fall back, the nodes converge and each remembers the other's version."""
    plain = sync_sessions.run_responder
    hellos: list[int] = []

    async def old_responder(stream: Any, *args: Any, **kwargs: Any) -> SyncReport | None:
        first = await stream.receive_frame()
        hello = decode_message(first)
        assert isinstance(hello, Hello)
        hellos.append(hello.version)
        if hello.version != 1:
            await stream.send_frame(DENIED_FRAME)
            return None
        return await plain(ReplayStream(stream, first, []), *args, **kwargs)

    monkeypatch.setattr(sync_sessions, "run_responder", old_responder)
    await two_writers_converge(cluster)
    assert hellos[0] == 3 and 2 in hellos and 1 in hellos
    daemon, peer = cluster.nodes[0].daemon, cluster.nodes[1].peer_id  # 0 dialled 1
    assert daemon is not None and peer is not None
    assert daemon.peer_table.sync_version(peer) == 1
    with trio.fail_after(10):  # the entries may arrive before the session is recorded
        while daemon.peer_table.peer(peer).last_session is None:
            await trio.sleep(0.05)
    last = daemon.peer_table.peer(peer).last_session
    assert last is not None and last["protocol_version"] == 1
    assert hellos.count(3) <= 2 and hellos.count(2) <= 2  # one probe per initiating side
