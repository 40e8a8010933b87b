"""The parts `NodeDaemon` composes, driven directly (no sockets; a fake host and trio's
autojump clock where time matters): the connection requests' bound and concurrency, the peer
workers (coalesced wakes, refused peers, the keepalive closing a silent path), which tenants a
session round proves toward a peer, what a session confirms peers hold, the control methods'
parameter checks, the event stream's entry messages, calls carried over to the loop thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import pytest
import trio
import trio.testing
from helpers import seal_entry

from mindoo_p2p.control import EventHub
from mindoo_p2p.crypto.signing import SigningKeyPair
from mindoo_p2p.daemon.activity import Activity
from mindoo_p2p.daemon.connection_requests import ConnectionRequests, Dial, Disconnect
from mindoo_p2p.daemon.control_handlers import command_params, control_handlers, since_ms_param
from mindoo_p2p.daemon.held_ledger import HeldLedger, confirmed
from mindoo_p2p.daemon.loop_thread import LoopThread
from mindoo_p2p.daemon.node_access import NodeAccess
from mindoo_p2p.daemon.peer_table import PeerTable
from mindoo_p2p.daemon.peer_workers import PeerWorkers, keepalive_state
from mindoo_p2p.daemon.scheduler import SyncScheduler
from mindoo_p2p.daemon.stored_entries import entry_messages
from mindoo_p2p.daemon.sync_sessions import SyncSessions
from mindoo_p2p.http.metrics import DaemonMetrics
from mindoo_p2p.net.framing import TransportError
from mindoo_p2p.net.host import ConnectionEvent, PeerHost
from mindoo_p2p.net.keepalive import Liveness
from mindoo_p2p.net.peer_identity import peer_id_of
from mindoo_p2p.node import Node
from mindoo_p2p.sync.auth import ProofGate
from mindoo_p2p.sync.protocol import DEFAULT_LIMITS, SyncReport

TENANT = bytes(16)


# -- connection requests -------------------------------------------------------------------
def test_connection_requests_past_the_bound_are_dropped_not_blocking() -> None:
    requests = ConnectionRequests(capacity=2)
    assert requests.offer(Dial("/ip4/127.0.0.1/tcp/1", remember=False))
    assert requests.offer(Disconnect("peer"))
    assert not requests.offer(Disconnect("another"))  # full: dropped at once
    requests.close()
    assert not requests.offer(Disconnect("late"))  # stopping: dropped, no error


async def test_a_request_that_fails_unexpectedly_is_logged_and_the_others_carried_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Attack: a request whose carrying out raises something other than a TransportError (a
    dial of an address an mDNS announcement from anyone on the LAN carried, that the dialer
    chokes on). That escaped `ConnectionRequests.run`, in the daemon's main nursery, and ended
    the daemon; now it is logged with its traceback and the next request is carried out."""
    requests = ConnectionRequests(capacity=4, concurrency=1)
    done: list[str] = []

    async def carry_out(request: Dial | Disconnect) -> None:
        if isinstance(request, Dial):
            raise ValueError(f"invalid multiaddr {request.addr!r}")
        done.append(request.peer_id)

    assert requests.offer(Dial("/ip4/not-an-address", remember=False))
    assert requests.offer(Disconnect("next"))
    requests.close()
    with trio.fail_after(10):
        await requests.run(carry_out)
    assert done == ["next"]
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert record.exc_info[0] is ValueError


async def test_connection_requests_run_at_most_the_concurrency_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    requests = ConnectionRequests(capacity=16, concurrency=2)
    running: list[str] = []
    most = 0
    done: list[str] = []

    async def carry_out(request: Dial | Disconnect) -> None:
        nonlocal most
        assert isinstance(request, Disconnect)
        running.append(request.peer_id)
        most = max(most, len(running))
        await trio.sleep(1)
        running.remove(request.peer_id)
        if request.peer_id == "unreachable":
            raise TransportError("no route")  # logged, never raised out of `run`
        done.append(request.peer_id)

    for peer in ("a", "unreachable", "b", "c", "d"):
        assert requests.offer(Disconnect(peer))
    requests.close()
    start = trio.current_time()
    await requests.run(carry_out)
    assert most == 2
    assert sorted(done) == ["a", "b", "c", "d"]
    assert trio.current_time() - start == pytest.approx(3)  # five requests, two at a time


# -- keepalive status ----------------------------------------------------------------------
def test_keepalive_state_keeps_the_last_answer_while_pings_go_unanswered() -> None:
    liveness = Liveness(last_answer=0.0)
    liveness.answered(5.0, 0.0123)
    answered = keepalive_state(None, liveness, now_ms=1_000)
    assert answered == {"rtt_ms": 12.3, "last_answer_ms": 1_000, "unanswered_pings": 0}
    liveness.missed()
    liveness.missed()
    silent = keepalive_state(answered, liveness, now_ms=9_000)
    assert silent == {"rtt_ms": 12.3, "last_answer_ms": 1_000, "unanswered_pings": 2}
    assert keepalive_state(None, Liveness(0.0, unanswered=1), now_ms=5)["last_answer_ms"] is None


# -- what a session confirms ---------------------------------------------------------------
def _report(role: str, **databases: dict[str, Any]) -> SyncReport:
    report = SyncReport(TENANT, role)
    for name, fields in databases.items():
        db = report.database(name)
        for field, value in fields.items():
            setattr(db, field, value)
    return report


def test_an_initiator_confirms_the_settled_databases_only() -> None:
    positions = {"log": 4, "notes": 9, "tasks": 2, "absent": 7}
    report = _report(
        "initiator",
        log={"settled": True},
        notes={"settled": True, "unavailable": 1},  # something we asked for never came
        tasks={"settled": False},
    )
    assert confirmed(report, positions) == [("log", 4)]
    report.peer_refused = 1  # the peer did not take all we pushed: nothing counts
    assert confirmed(report, positions) == []


def test_a_responder_confirms_the_reconciled_databases() -> None:
    positions = {"log": 4, "notes": 9, "tasks": 2}
    report = _report(
        "responder",
        log={"recon_rounds": 1},
        notes={"recon_rounds": 2, "rejected": 1},  # a forged entry: doubtful
        tasks={"recon_rounds": 0},
    )
    assert confirmed(report, positions) == [("log", 4)]


def test_a_responder_confirms_the_databases_held_alike_without_reconciling() -> None:
    """Version 3: both summaries showed the database alike, so the initiator did not
    reconcile it, yet it holds everything we held when the session started."""
    positions = {"log": 4, "notes": 9, "tasks": 2}
    report = _report(
        "responder",
        log={"alike": True},
        notes={"alike": True, "rejected": 1},
        tasks={"alike": False},  # not reconciled and not alike (e.g. forgotten there)
    )
    assert confirmed(report, positions) == [("log", 4)]


# -- control parameters --------------------------------------------------------------------
def test_command_params_name_what_is_wrong() -> None:
    assert command_params({"argv": ["status"], "cwd": "/tmp"}) == (["status"], "/tmp", {})
    good = {"argv": ["a"], "cwd": "/", "env": {"MINDOO_PASSWORD": "x"}}
    assert command_params(good)[2] == {"MINDOO_PASSWORD": "x"}
    with pytest.raises(ValueError, match="'argv'"):
        command_params({"argv": "status", "cwd": "/"})
    with pytest.raises(ValueError, match="'argv'"):
        command_params({"argv": ["ok", 3], "cwd": "/"})
    with pytest.raises(ValueError, match="'cwd'"):
        command_params({"argv": []})
    with pytest.raises(ValueError, match="'env'"):
        command_params({"argv": [], "cwd": "/", "env": {"A": 1}})


def test_since_ms_must_be_a_time() -> None:
    assert since_ms_param({"since_ms": 0}) == 0
    for bad in (None, -1, True, 1.5, "1"):
        with pytest.raises(ValueError, match="since_ms"):
            since_ms_param({"since_ms": bad})


class FakeDaemon:
    """What the control methods ask of a daemon, recorded."""

    def __init__(self, runs_commands: bool) -> None:
        self.runs_commands = runs_commands
        self.commands: list[tuple[list[str], str, dict[str, str]]] = []
        self.stopped = False

    async def status_off_loop(self) -> dict[str, Any]:
        return {"peers": []}

    async def add_peer(self, addr: str) -> str:
        raise TransportError(f"cannot reach {addr}")

    def wake_peers(self, except_peer: str | None = None) -> int:
        return 3

    def sync_progress(self, since_ms: int) -> dict[str, Any]:
        return {"since_ms": since_ms}

    async def run_command(self, argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, Any]:
        self.commands.append((argv, cwd, env))
        return {"exit_code": 0}

    def stop(self) -> None:
        self.stopped = True

    def http_login(self) -> dict[str, Any]:
        return {}

    def http_info(self) -> dict[str, Any]:
        return {}


async def test_control_methods_check_before_they_ask_the_daemon() -> None:
    refusing = FakeDaemon(runs_commands=False)
    handlers = control_handlers(refusing)
    with pytest.raises(ValueError, match="does not run CLI commands"):
        await handlers["cli"]({"argv": ["status"], "cwd": "/"})
    daemon = FakeDaemon(runs_commands=True)
    handlers = control_handlers(daemon)
    with pytest.raises(ValueError, match="'cwd'"):
        await handlers["cli"]({"argv": ["status"]})
    assert daemon.commands == []
    assert await handlers["cli"]({"argv": ["status"], "cwd": "/"}) == {"exit_code": 0}
    assert daemon.commands == [(["status"], "/", {})]
    assert await handlers["sync"]({}) == {"woken": 3}
    assert await handlers["sync.progress"]({"since_ms": 7}) == {"since_ms": 7}
    failed = await handlers["peers.add"]({"addr": "/ip4/127.0.0.1/tcp/9"})
    assert failed["added"] is True and failed["connected"] is False
    assert "cannot reach" in failed["error"]
    with pytest.raises(ValueError, match="'addr'"):
        await handlers["peers.add"]({})
    assert await handlers["stop"]({}) == {"stopping": True} and daemon.stopped
    assert await handlers["ping"]({}) == "pong"


# -- event stream messages -----------------------------------------------------------------
def test_entry_messages_carry_ids_and_names_never_content() -> None:
    entry = seal_entry(
        tenant_id=TENANT,
        database="notes",
        author=SigningKeyPair.generate(),
        author_seq=1,
        timestamp_ms=1234,
        key_id=bytes(16),
        key=bytes(32),
        payload=b"secret words",
    )
    (local,) = entry_messages([entry], {TENANT: "acme"}, local=True)
    assert local == {
        "type": "entry",
        "origin": "local",
        "tenant": TENANT.hex(),
        "tenant_name": "acme",
        "database": "notes",
        "document_id": entry.document_id.hex(),
        "entry_id": entry.id.hex(),
        "kind": "change",
        "timestamp_ms": 1234,
    }
    (remote,) = entry_messages([entry], {}, local=False)
    assert remote["origin"] == "peer" and remote["tenant_name"] is None


# -- the loop thread -----------------------------------------------------------------------
async def test_a_call_from_a_worker_thread_runs_on_the_loop_thread() -> None:
    loop = LoopThread()
    assert loop.call(threading.get_ident) == threading.get_ident()  # not attached: direct
    loop.attach()
    loop_thread = threading.get_ident()
    assert loop.on_loop()
    seen = await trio.to_thread.run_sync(lambda: (loop.on_loop(), loop.call(threading.get_ident)))
    assert seen == (False, loop_thread)


# -- peer workers (a fake host; the autojump clock) ----------------------------------------
class FakeHost:
    """What `PeerWorkers` and `SyncSessions` ask of a host, in memory."""

    def __init__(self, *, ping_fails: bool = False) -> None:
        self.peer_id = peer_id_of(bytes(32))
        self._events, self.connection_events = trio.open_memory_channel[ConnectionEvent](16)
        self.connected: set[str] = set()
        self.dialled_peers: set[str] = set()
        self.disconnects: list[str] = []
        self.ping_fails = ping_fails

    def connect(self, peer_id: str, *, dialled: bool) -> None:
        self.connected.add(peer_id)
        if dialled:
            self.dialled_peers.add(peer_id)
        self._events.send_nowait(ConnectionEvent(peer_id, True))

    def connected_peers(self) -> list[str]:
        return sorted(self.connected)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected

    def dialled(self, peer_id: str) -> bool:
        return peer_id in self.dialled_peers

    def remote_address(self, peer_id: str) -> str:
        return f"/ip4/127.0.0.1/tcp/4001/p2p/{peer_id}"

    async def ping(self, peer_id: str) -> float:
        if self.ping_fails:
            raise TransportError("no answer")
        return 0.001

    async def disconnect(self, peer_id: str) -> None:
        self.disconnects.append(peer_id)
        if peer_id in self.connected:
            self.connected.discard(peer_id)
            self._events.send_nowait(ConnectionEvent(peer_id, False))


class Workers:
    """`PeerWorkers` over a `FakeHost`, recording sessions (each takes 1 s) and lost proofs."""

    def __init__(self, host: FakeHost, keepalive: tuple[float, float] | None = None) -> None:
        self.host = host
        self.table = PeerTable()
        self.scheduler = SyncScheduler(sync_interval_s=1000, gossip=True)
        self.sessions: list[tuple[float, str]] = []
        self.forgotten: list[str] = []
        self.workers = PeerWorkers(
            cast(PeerHost, host),
            self.table,
            self.scheduler,
            Activity(EventHub(), DaemonMetrics()),
            sync_with_peer=self.session,
            on_disconnected=self.forgotten.append,
            keepalive=keepalive,
        )

    async def session(self, peer_id: str) -> None:
        self.sessions.append((trio.current_time(), peer_id))
        await trio.sleep(1)


async def test_a_connected_peer_gets_a_worker_whose_wakes_coalesce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost()
    w = Workers(host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.workers.watch)
        host.connect("bob", dialled=True)
        await trio.testing.wait_all_tasks_blocked()
        state = w.table.get("bob")
        assert state is not None and state.connected
        assert state.address == host.remote_address("bob")
        start = trio.current_time()
        w.workers.wake("bob")
        await trio.sleep(0.5)  # a session runs: three more wakes make one more session
        for _ in range(3):
            w.workers.wake("bob")
        await trio.sleep(5)
        assert [(round(t - start, 3), p) for t, p in w.sessions] == [(0, "bob"), (1, "bob")]
        await host.disconnect("bob")
        await trio.testing.wait_all_tasks_blocked()
        assert w.forgotten == ["bob"]
        w.workers.wake("bob")  # no worker any more: nothing runs
        await trio.sleep(5)
        assert len(w.sessions) == 2
        nursery.cancel_scope.cancel()


async def test_a_refused_peer_is_disconnected_and_gets_no_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost()
    w = Workers(host)
    w.table.block("mallory")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.workers.watch)
        host.connect("mallory", dialled=False)
        await trio.testing.wait_all_tasks_blocked()
        assert host.disconnects == ["mallory"]
        w.workers.wake("mallory")
        await trio.sleep(5)
        assert w.sessions == []
        nursery.cancel_scope.cancel()


async def test_a_silent_path_is_closed_by_the_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost(ping_fails=True)
    w = Workers(host, keepalive=(1.0, 3.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.workers.watch)
        host.connect("bob", dialled=True)
        await trio.sleep(10)
        assert host.disconnects == ["bob"]
        state = w.table.get("bob")
        assert state is not None and not state.connected
        assert state.dead_path is not None and "no answer" in state.dead_path  # status shows why
        nursery.cancel_scope.cancel()


# -- which tenants a session round proves toward a peer ------------------------------------
async def test_sessions_prove_only_toward_a_dialled_peer_or_tenants_it_proved(
    make_node: Callable[[str], Node],
) -> None:
    node = make_node("alice")
    acme, globex, initech = (node.create_tenant(n) for n in ("acme", "globex", "initech"))
    host = FakeHost()
    host.connect("dialled", dialled=True)
    host.connect("inbound", dialled=False)
    table, gate = PeerTable(), ProofGate()
    sessions = SyncSessions(
        node,
        cast(PeerHost, host),
        NodeAccess(node),
        peer_table=table,
        scheduler=SyncScheduler(sync_interval_s=1000, gossip=True),
        activity=Activity(EventHub(), DaemonMetrics()),
        proof_gate=gate,
        held=HeldLedger(node.home),
        limits=DEFAULT_LIMITS,
        penalize=lambda peer, points, reason: None,
        refresh_admission=lambda peer_id: None,
    )
    assert list(sessions.tenants_to_prove("dialled")) == [acme, globex, initech]
    assert list(sessions.tenants_to_prove("inbound")) == []  # it proved nothing: no HELLO
    gate.peer_proved("inbound", globex.id)
    assert list(sessions.tenants_to_prove("inbound")) == [globex]
    table.denied("dialled", acme.id)  # the peer does not share acme
    assert list(sessions.tenants_to_prove("dialled")) == [globex, initech]
