"""Helpers shared by the parts of ``bench_sync.py`` that run nodes: fresh homes and their
documents, CPU and load readings, and ``mindoo node run`` child processes (`running_node`, also
handed to ``_bench_daemons.measure``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from mindoo_p2p.control import ControlClient, ControlError, control_socket
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node

PASSWORD = "bench-sync"
LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
REPO = Path(__file__).resolve().parent.parent
NODE_START_S = 600.0
"""Longest wait for a ``mindoo node run`` process to answer on its control socket (a home of
10^6 entries took over a minute to start on this loaded machine)."""
WRITE_BATCH = 1000
"""Documents per ``db.batch()`` in `write_documents`."""


def new_node(home: Path, name: str) -> Node:
    """A fresh node (cheap key derivation: the benchmark's keystores are throwaway)."""
    return Node.init(home, PASSWORD, name=name, kdf=KdfProfile.TESTING)


def write_documents(node: Node, tenant: str, database: str, count: int) -> None:
    """``count`` small documents, `WRITE_BATCH` per durable batch (one entry each)."""
    db = node.tenant(tenant).create_db(database)
    done = 0
    while done < count:
        with db.batch():
            for _ in range(min(WRITE_BATCH, count - done)):
                db.create_document({"n": done, "name": f"document {done}", "tags": ["bench"]})
                done += 1


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of ``process`` (all its threads, not its children)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class NodeProcess:
    """A ``mindoo node run`` child process listening on 127.0.0.1 (output in ``log``)."""

    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    peer_id: str = ""
    addr: str = ""
    answered_s: float = 0.0
    """Seconds from the process start until its status answered with a listen address."""
    settled_s: float = 0.0
    """Seconds from the process start until its status showed no long work (``busy``)."""

    def status(self) -> dict[str, Any]:
        """The daemon's status, asked over its control socket."""
        result = ControlClient(control_socket(self.home), timeout=10).call("status")
        if not isinstance(result, dict):
            raise ControlError(f"unexpected status reply {result!r}")
        return result

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log, "rb") as fh:
                kept = deque(fh, maxlen=lines)
        except OSError:
            return ""
        return " | ".join(line.decode(errors="replace").strip() for line in kept)


def stop_node(node: NodeProcess) -> None:
    """SIGTERM (the daemon stops cleanly), then SIGKILL after 10 s."""
    if node.process.poll() is None:
        node.process.terminate()
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


@contextmanager
def running_node(home: Path, bootstrap: Sequence[str] = ()) -> Iterator[NodeProcess]:
    """Run ``mindoo node run`` on the initialised ``home`` (127.0.0.1, a free port), dialing
    ``bootstrap``; yields once its daemon answers on the control socket; stops it on exit."""
    argv = [sys.executable, "-m", "cli.main", "--home", str(home), "node", "run"]
    argv += ["--listen", LOOPBACK_LISTEN]
    for addr in bootstrap:
        argv += ["--bootstrap", addr]
    log = home.parent / f"{home.name}.log"
    env = dict(os.environ, MINDOO_PASSWORD=PASSWORD)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    node = NodeProcess(home, process, log)
    try:
        started = time.monotonic()
        deadline = started + NODE_START_S
        while not node.addr:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mindoo node run on {home} exited with {process.returncode}: {node.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"mindoo node run on {home} did not start: {node.log_tail()}")
            try:
                status = node.status()
            except (ControlError, OSError):
                time.sleep(0.1)  # not listening yet
                continue
            addrs = status.get("listen_addrs") or []
            if addrs:
                node.peer_id, node.addr = str(status["peer_id"]), str(addrs[0])
                node.answered_s = time.monotonic() - started
        # Long start-up work (the durability count of a store copied without its saved count)
        # would share the CPU with what is measured: wait for it, and say how long it took.
        while node.status().get("busy"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mindoo node run on {home} stayed busy: {node.log_tail()}")
            time.sleep(0.1)
        node.settled_s = time.monotonic() - started
        yield node
    finally:
        stop_node(node)
