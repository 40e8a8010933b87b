"""`ProcessCluster`: nodes as real `mindoo node run` daemon processes on loopback.

For tests that need what in-process nodes cannot show: separate processes, SIGKILL at any
moment, the CLI and the control socket end to end. Nodes are prepared in the test process
(homes, tenants, invites) before their daemons start; afterwards everything goes through the
daemons' control sockets, and convergence is checked by reading their stores (LMDB allows
readers beside the daemon)::

    with ProcessCluster(tmp_path) as cluster:
        cluster.prepare(3, tenant="acme")
        cluster.start_all()
        cluster.connect_topology("line")
        cluster.cli(0, "db", "create", "acme", "notes")
        doc = cluster.cli(0, "doc", "create", "acme", "notes", '{"a": 1}').strip()
        cluster.wait_converged(timeout=30)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..control import ControlClient, control_socket
from ..crypto.keystore import KdfProfile
from ..errors import MindooError
from ..node import Node
from ..store import EntryStore
from .cluster import DEFAULT_PASSWORD, ConvergenceError


@dataclass
class DaemonProcess:
    index: int
    name: str
    home: Path
    process: subprocess.Popen[str] | None = None
    peer_id: str | None = None
    addr: str | None = None


class ProcessCluster:
    """Daemon processes on 127.0.0.1; use as a context manager (stops every process)."""

    def __init__(self, root: Path | str, *, password: str = DEFAULT_PASSWORD) -> None:
        self.root = Path(root)
        self.password = password
        self.nodes: list[DaemonProcess] = []
        self.edges: set[tuple[int, int]] = set()

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for member in self.nodes:
            self._stop(member, signal.SIGKILL)

    # -- preparation (no daemon running) ------------------------------------------------------
    def prepare(self, count: int, *, tenant: str | None = None) -> None:
        """Create ``count`` node homes; with ``tenant``, node 0 creates it and invites all."""
        for _ in range(count):
            index = len(self.nodes)
            name = f"node{index}"
            home = self.root / name
            Node.init(home, self.password, name=name, kdf=KdfProfile.TESTING).close()
            self.nodes.append(DaemonProcess(index, name, home))
        if tenant is not None:
            with Node.open(self.nodes[0].home, self.password) as admin:
                created = admin.create_tenant(tenant)
                for member in self.nodes[1:]:
                    with Node.open(member.home, self.password) as node:
                        node.join(admin.invite(created, node.public_identity()))

    # -- processes ----------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MINDOO_PASSWORD"] = self.password
        env.pop("MINDOO_HOME", None)
        return env

    def start(self, index: int, *, timeout: float = 30.0) -> None:
        """Start node ``index``'s daemon (on its previous port when it ran before)."""
        member = self.nodes[index]
        listen = member.addr.rsplit("/p2p/", 1)[0] if member.addr else "/ip4/127.0.0.1/tcp/0"
        command = [sys.executable, "-m", "cli.main", "--home", str(member.home), "--json"]
        command += ["node", "run", "--listen", listen]
        process = subprocess.Popen(
            command,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        member.process = process
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = process.stdout.readline()  # printed once listening
        if not line or time.monotonic() > deadline:
            self._stop(member, signal.SIGKILL)
            raise MindooError(f"daemon {member.name} did not start")
        info = json.loads(line)
        member.peer_id = info["peer_id"]
        member.addr = info["listen_addrs"][0]

    def start_all(self) -> None:
        for member in self.nodes:
            self.start(member.index)

    def _stop(self, member: DaemonProcess, signum: int) -> None:
        process = member.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        member.process = None

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``'s daemon (no clean shutdown)."""
        self._stop(self.nodes[index], signal.SIGKILL)

    def stop(self, index: int) -> int:
        """SIGTERM node ``index``'s daemon; its exit code."""
        member = self.nodes[index]
        process = member.process
        if process is None:
            return 0
        self._stop(member, signal.SIGTERM)
        return process.returncode

    def restart(self, index: int, *, redial: bool = True) -> None:
        """Kill and start node ``index`` again; ``redial=False`` leaves reconnecting to its
        own address book (as after a reboot)."""
        self.kill(index)
        self.start(index)
        if not redial:
            return
        for a, b in sorted(self.edges):
            if index in (a, b):
                other = b if a == index else a
                if self.nodes[other].process is not None:
                    self._dial(index, other)

    # -- control ------------------------------------------------------------------------------
    def control(self, index: int) -> ControlClient:
        return ControlClient(control_socket(self.nodes[index].home), timeout=60)

    def cli(self, index: int, *argv: str) -> str:
        """Run a mindoo command through node ``index``'s daemon; its stdout (MindooError on
        a non-zero exit)."""
        reply: dict[str, Any] = self.control(index).call(
            "cli", {"argv": ["--home", str(self.nodes[index].home), *argv], "cwd": str(self.root)}
        )
        if reply["exit_code"] != 0:
            raise MindooError(f"mindoo {' '.join(argv)} failed: {reply['stderr'].strip()}")
        return str(reply["stdout"])

    def status(self, index: int) -> dict[str, Any]:
        result: dict[str, Any] = self.control(index).call("status")
        return result

    def _dial(self, a: int, b: int) -> None:
        addr = self.nodes[b].addr
        assert addr is not None
        self.control(a).call("peers.add", {"addr": addr})

    def connect(self, a: int, b: int) -> None:
        self.edges.add((min(a, b), max(a, b)))
        self._dial(a, b)

    def connect_topology(self, kind: str) -> None:
        n = len(self.nodes)
        if kind == "line":
            pairs = [(i, i + 1) for i in range(n - 1)]
        elif kind == "star":
            pairs = [(0, i) for i in range(1, n)]
        elif kind == "full":
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        else:
            raise ValueError(f"unknown topology {kind!r}")
        for a, b in pairs:
            self.connect(a, b)

    # -- convergence --------------------------------------------------------------------------
    def entry_ids(self, index: int) -> set[bytes]:
        with EntryStore(self.nodes[index].home / "store", readonly=True) as store:
            return {entry.id for entry in store.iter_entries()}

    def divergence(self) -> list[str]:
        running = [m for m in self.nodes if m.process is not None]
        held = {m.index: self.entry_ids(m.index) for m in running}
        union: set[bytes] = set().union(*held.values()) if held else set()
        return [
            f"{self.nodes[i].name} misses {len(union - ids)} of {len(union)} entries"
            for i, ids in sorted(held.items())
            if union - ids
        ]

    def wait_converged(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.divergence():
                return
            time.sleep(0.1)
        lines = self.divergence()
        if lines:
            raise ConvergenceError(
                f"daemons did not converge within {timeout} s:\n  " + "\n  ".join(lines)
            )
