"""Part (e) of bench_sync: end to end between real daemon processes, bytes on the wire counted.

Two member homes, ``a`` (the tenant admin) and ``b``, each hold N entries of one database
(N small documents, one entry each); ``d`` of them differ, d/2 written only on each side. A
third home ``c`` is an empty member. Every daemon is a separate ``mindoo node run`` process on
127.0.0.1. ``b`` and ``c`` reach ``a`` only through a :class:`CountingRelay`, a TCP relay in
this process that counts every byte each way (Noise, Yamux, sync frames and gossip alike), so
"bytes" is what a network would carry. Scenarios, in order:

- ``first_sync``: ``b`` is told ``a``'s relayed address (``peers.add``); timed from that call
  until both stores hold the union (N + d/2 each). Sessions and the last session's own report
  (rounds, elapsed time), where the daemon's status gives them.
- ``idle_resync``: both in sync; ``b`` is asked to sync now (``sync`` over its control
  socket); timed until its session count grows, with the session's own elapsed time (this
  ``seconds`` includes the benchmark's own status polling, every POLL_S, beside the session);
  then ``quiet_sessions_ms``: IDLE_REPEATS more idle sessions, each read from the status only
  IDLE_GAP_S after it was asked for, so no status call runs beside it (the status scans every
  document: at 10^6 polling made the figures seconds, not milliseconds). A session's
  ``elapsed_ms`` counts from opening its stream to its end (perf-idle; before, from its first
  frame). ``quiet_sessions_cpu_ms``: the CPU time both daemons used over each of those windows,
  and ``quiet_background_cpu_ms`` over as many windows of the same length without a session
  (timers, keepalive): the difference of their means is a session's CPU (the summary's).
- ``warm_resync``: ``b`` stops; ``a`` gets ``WARM_WRITES`` new documents (written through the
  CLI, which forwards to ``a``'s daemon); ``b`` starts again and redials from its address book;
  timed from its daemon answering until it holds them.
- ``clone``: ``c`` starts with the relayed address as bootstrap; timed from its daemon
  answering until it holds every entry; with its resident memory and the store sizes on disk.

``bytes_up`` is what the dialing side sent, ``bytes_down`` what it received. Bytes are read
when the scenario's condition is met and again after ``SETTLE_S`` (follow-up sessions, gossip)
as ``bytes_settled``. Entry counts are polled every ``POLL_S`` from the stores themselves
(read-only, in this process: the daemon's status counts documents by a scan, about a second
per call at 10^6); session counts and reports come from the daemon's status.
``--daemons-homes DIR`` builds the homes once into DIR and copies them for each run, so runs of
two versions of the code (a store of the older schema is upgraded when its daemon starts,
before the timing begins) start from the same homes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import trio

from mindoo_p2p.control import ControlClient, control_socket
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node
from mindoo_p2p.store import EntryStore

PASSWORD = "bench-sync"
TENANT = "bench"
DATABASE = "e2e"
BATCH = 1000
WARM_WRITES = 10
POLL_S = 0.02
SETTLE_S = 3.0
SCENARIO_TIMEOUT_S = 1800.0
RELAY_BUFFER = 256 * 1024
IDLE_REPEATS = 30
IDLE_GAP_S = 0.5


class CountingRelay:
    """A TCP relay on 127.0.0.1 (its own trio loop in a thread) that forwards every connection
    to ``target_port`` and counts the bytes each way. ``target_port`` may change while it runs
    (a restarted daemon); connections already made keep their target."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)

    def __enter__(self) -> CountingRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the byte-counting relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._cancel is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(10)

    def counts(self) -> tuple[int, int]:
        return self.up, self.down

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as scope:
            self._cancel = scope
            self._ready.set()
            await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, True, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, False, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        upward: bool,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some(RELAY_BUFFER):
                if upward:
                    self.up += len(data)
                else:
                    self.down += len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


def build_homes(root: Path, n: int, d: int) -> dict[str, Any]:
    """Homes a, b (N entries each, d differing) and c (empty member), all closed."""
    nodes = {
        name: Node.init(root / name, PASSWORD, name=name, kdf=KdfProfile.TESTING)
        for name in ("a", "b", "c")
    }
    try:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        tenant = a.create_tenant(TENANT)
        for joiner in (b, c):
            joiner.join(a.invite(tenant, joiner.public_identity()))
        a.tenant(TENANT).create_db(DATABASE)
        started = time.perf_counter()
        write_documents(a, n - d // 2)
        raws = [e.raw for e in a.store.iter_entries(a.tenant(TENANT).id, DATABASE)]
        written_s = time.perf_counter() - started
        started = time.perf_counter()
        for offset in range(0, len(raws), 2000):
            rejected = b.ingest(raws[offset : offset + 2000]).rejected
            if rejected:
                raise RuntimeError(f"b refused a common entry: {rejected[0]}")
        copied_s = time.perf_counter() - started
        del raws
        write_documents(a, d // 2)
        write_documents(b, d // 2)
        return {
            "write_s": round(written_s, 1),
            "copy_s": round(copied_s, 1),
            "tenant_id": a.tenant(TENANT).id.hex(),
        }
    finally:
        for node in nodes.values():
            node.close()


def write_documents(node: Node, count: int) -> None:
    db = node.tenant(TENANT).create_db(DATABASE)
    done = 0
    while done < count:
        with db.batch():
            for _ in range(min(BATCH, count - done)):
                db.create_document({"n": done, "name": f"document {done}", "tags": ["e2e"]})
                done += 1


class EntryCounter:
    """The benchmark database's entry count in a daemon's store, read in this process through a
    read-only `EntryStore` (one O(1) read: the status's per-database document count scans
    every document, about a second per call at 10^6, which polling would add to every figure)."""

    def __init__(self, home: Path, tenant_id: bytes) -> None:
        self._path = home / "store"
        self._tenant_id = tenant_id
        self._store: EntryStore | None = None

    def __call__(self) -> int:
        if self._store is None:
            self._store = EntryStore(self._path, readonly=True)
        return self._store.last_seq(self._tenant_id, DATABASE)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def prepared_homes(root: Path, n: int, d: int, homes: Path | None) -> dict[str, Any]:
    """Homes a, b, c in ``root``: built there, or copied from ``homes`` (built there first when
    it holds none yet, so several runs, and several versions of the code, start from the same
    homes; a store of an older schema is upgraded when its daemon starts)."""
    if homes is None:
        return build_homes(root, n, d)
    meta_file = homes / "bench.json"
    if not meta_file.exists():
        homes.mkdir(parents=True, exist_ok=True)
        meta = build_homes(homes, n, d)
        meta["n"], meta["d"] = n, d
        meta_file.write_text(json.dumps(meta))
    meta = json.loads(meta_file.read_text())
    if (meta["n"], meta["d"]) != (n, d):
        raise RuntimeError(f"{homes} holds homes of n={meta['n']} d={meta['d']}")
    for name in ("a", "b", "c"):
        shutil.copytree(homes / name, root / name)
    return {**meta, "reused": str(homes)}


def peer_row(status: dict[str, Any], peer_id: str) -> dict[str, Any]:
    for row in status.get("peers", []):
        if row.get("peer_id") == peer_id:
            return dict(row)
    return {}


def control(home: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    return ControlClient(control_socket(home), timeout=30).call(method, params or {})


def wait_for(condition: Callable[[], bool], what: str) -> float:
    """Poll ``condition`` every POLL_S; the perf_counter time it first held."""
    deadline = time.monotonic() + SCENARIO_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return time.perf_counter()


def store_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "store").glob("*.mdb"))


def cpu_ms(pids: list[int]) -> float:
    """The CPU time (user + system) the processes ``pids`` used so far, in ms."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total * 1000


def quiet_idle_sessions(
    home: Path, node: Any, peer_id: str, pids: list[int]
) -> tuple[list[float], list[float], list[float]]:
    """``IDLE_REPEATS`` idle sessions, each asked for with ``sync`` and read from the status
    ``IDLE_GAP_S`` later, so that no status call (whose document count scans every document,
    holding the interpreter) runs beside the session: their elapsed times, the CPU time the
    daemons ``pids`` used over each window, and over as many windows without a session (all
    sorted)."""
    elapsed, cpu, background = [], [], []
    for _ in range(IDLE_REPEATS):
        before = peer_row(node.status(), peer_id).get("sessions", 0)
        started = cpu_ms(pids)
        control(home, "sync")
        time.sleep(IDLE_GAP_S)
        used = cpu_ms(pids) - started
        row = peer_row(node.status(), peer_id)
        if row.get("sessions", 0) > before and row.get("last_session"):
            elapsed.append(float(row["last_session"]["elapsed_ms"]))
            cpu.append(round(used, 1))
        started = cpu_ms(pids)
        control(home, "ping")
        time.sleep(IDLE_GAP_S)
        background.append(round(cpu_ms(pids) - started, 1))
    return sorted(elapsed), sorted(cpu), sorted(background)


def session_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The peer's session count and, where the status has it, its last session's report."""
    return {"sessions": row.get("sessions"), "last_session": row.get("last_session")}


def measure(
    root: Path,
    n: int,
    d: int,
    running_node: Any,
    *,
    clone: bool = True,
    homes: Path | None = None,
) -> dict[str, Any]:
    """Run the four scenarios (without ``clone``: the first three); ``running_node`` is
    bench_sync's process context manager; ``homes``: see :func:`prepared_homes`."""
    result: dict[str, Any] = {"n": n, "d": d, "build": prepared_homes(root, n, d, homes)}
    tenant_id = bytes.fromhex(result["build"]["tenant_id"])
    counters = {name: EntryCounter(root / name, tenant_id) for name in ("a", "b", "c")}
    try:
        return _scenarios(root, n, d, running_node, clone, counters, result)
    finally:
        for counter in counters.values():
            counter.close()


def note_start(result: dict[str, Any], name: str, node: Any) -> None:
    """How long the daemon of home ``name`` took to answer ``status`` and to finish its
    start-up work (``busy`` empty; the timings begin after it): ``result["starts"]``."""
    result.setdefault("starts", []).append(
        {
            "home": name,
            "answered_s": round(node.answered_s, 3),
            "settled_s": round(node.settled_s, 3),
        }
    )


def _scenarios(
    root: Path,
    n: int,
    d: int,
    running_node: Any,
    clone: bool,
    counters: dict[str, EntryCounter],
    result: dict[str, Any],
) -> dict[str, Any]:
    union = n + d // 2
    with running_node(root / "a") as a, CountingRelay(int(a.addr.split("/")[4])) as relay:
        relayed = f"/ip4/127.0.0.1/tcp/{relay.port}/p2p/{a.peer_id}"
        note_start(result, "a", a)

        def both_hold(total: int) -> Callable[[], bool]:
            return lambda: counters["a"]() >= total and counters["b"]() >= total

        def scenario(started: float, done: float, before: tuple[int, int]) -> dict[str, Any]:
            at_done = relay.counts()
            time.sleep(SETTLE_S)
            settled = relay.counts()
            return {
                "seconds": round(done - started, 3),
                "bytes_up": at_done[0] - before[0],
                "bytes_down": at_done[1] - before[1],
                "bytes_settled": settled[0] + settled[1] - before[0] - before[1],
            }

        with running_node(root / "b") as b:
            note_start(result, "b", b)
            before = relay.counts()
            started = time.perf_counter()
            control(root / "b", "peers.add", {"addr": relayed})
            done = wait_for(both_hold(union), "the first sync")
            first = scenario(started, done, before)
            first.update(session_fields(peer_row(b.status(), a.peer_id)))
            result["first_sync"] = first

            sessions = peer_row(b.status(), a.peer_id).get("sessions", 0)
            before = relay.counts()
            started = time.perf_counter()
            control(root / "b", "sync")
            done = wait_for(
                lambda: peer_row(b.status(), a.peer_id).get("sessions", 0) > sessions,
                "the idle re-sync",
            )
            idle = scenario(started, done, before)
            idle.update(session_fields(peer_row(b.status(), a.peer_id)))
            quiet = quiet_idle_sessions(root / "b", b, a.peer_id, [a.process.pid, b.process.pid])
            idle["quiet_sessions_ms"], idle["quiet_sessions_cpu_ms"] = quiet[0], quiet[1]
            idle["quiet_background_cpu_ms"] = quiet[2]
            result["idle_resync"] = idle

        for i in range(WARM_WRITES):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "--home",
                    str(root / "a"),
                    "doc",
                    "create",
                    TENANT,
                    DATABASE,
                    f'{{"warm": {i}}}',
                ],
                check=True,
                capture_output=True,
                env=dict(os.environ, MINDOO_PASSWORD=PASSWORD),
            )
        before = relay.counts()
        with running_node(root / "b") as b:
            note_start(result, "b", b)
            started = time.perf_counter()
            done = wait_for(both_hold(union + WARM_WRITES), "the warm re-sync")
            warm = scenario(started, done, before)
            warm.update(session_fields(peer_row(b.status(), a.peer_id)))
            result["warm_resync"] = warm

        if not clone:
            return result
        total = union + WARM_WRITES
        before = relay.counts()
        with running_node(root / "c", bootstrap=[relayed]) as c:
            note_start(result, "c", c)
            started = time.perf_counter()
            done = wait_for(lambda: counters["c"]() >= total, "the clone")
            cloned = scenario(started, done, before)
            cloned["entries_per_s"] = round(total / max(done - started, 1e-9))
            cloned["rss_mb"] = round(psutil.Process(c.process.pid).memory_info().rss / 2**20, 1)
            cloned.update(session_fields(peer_row(c.status(), a.peer_id)))
        cloned["store_mb"] = round(store_bytes(root / "c") / 2**20, 1)
        cloned["source_store_mb"] = round(store_bytes(root / "a") / 2**20, 1)
        result["clone"] = cloned
    return result


def quiet_cpu(idle: dict[str, Any]) -> str:
    """The quiet sessions' CPU, where the result has it: the mean over the windows with a
    session less the mean over those without (a window's figure has the 10 ms granularity of
    the kernel's accounting; the means over many windows do not)."""
    used, background = idle.get("quiet_sessions_cpu_ms"), idle.get("quiet_background_cpu_ms")
    if not used or not background:
        return ""
    per_session = statistics.mean(used) - statistics.mean(background)
    return f", CPU of both daemons {per_session:.1f} ms per session"


def summary(result: dict[str, Any]) -> str:
    first, idle, warm = result["first_sync"], result["idle_resync"], result["warm_resync"]
    clone = result.get("clone")

    def kb(row: dict[str, Any]) -> str:
        return f"{(row['bytes_up'] + row['bytes_down']) / 1024:.0f} KB"

    text = (
        f"daemons n={result['n']} d={result['d']}: first sync {first['seconds']} s {kb(first)},"
        f" idle re-sync {idle['seconds']} s {kb(idle)} (quiet sessions, median"
        f" {round(statistics.median(idle['quiet_sessions_ms'] or [0.0]), 2)} ms{quiet_cpu(idle)}),"
        f" warm re-sync {warm['seconds']} s"
        f" {kb(warm)}"
    )
    if clone:
        text += f", clone {clone['entries_per_s']}/s {kb(clone)} rss {clone['rss_mb']} MB"
    starts = result.get("starts") or []
    if starts:
        text += ", starts (status answered / settled, s): " + " ".join(
            f"{row['home']} {row['answered_s']}/{row['settled_s']}" for row in starts
        )
    return text
