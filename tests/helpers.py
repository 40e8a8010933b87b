"""Helpers shared by the test modules, one copy of each.

=======================  ==========================================================================
`eventually`             await until a condition holds (trio), bounded unless the caller bounds it
`wait_for`               the same for synchronous tests (subprocesses), always bounded
`seal_entry`             a sealed entry with test defaults (kind and document follow the database)
`numbered_change`        a tiny change whose document id and timestamp are its author sequence
`forge`                  a change entry hand-signed with a node's key (a thief holding the key)
`copy_tenant`            hand a tenant's entries from one node to another (verified on arrival)
`two_writers_converge`   two cluster daemons each write to tenant acme, connect and converge
`running_daemon`         a `NodeDaemon` on loopback for the duration of a ``with`` block
`daemon_process`         ``mindoo node run`` as a real process on loopback, stopped afterwards
`run_cli_main`           `cli.main.main` in-process on an argv, with a password and stdin
=======================  ==========================================================================
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mindoo_p2p.config import NodeConfig
from mindoo_p2p.crypto.signing import SigningKeyPair
from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.entry import NO_DOCUMENT, NO_PREV, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.net.host import HostConfig
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant
from mindoo_p2p.testing import Cluster

LOOPBACK = NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), sync_interval_s=3600)
"""A daemon listening on loopback only, syncing on demand (no periodic rounds in tests)."""
FAST = HostConfig(dial_timeout=5, stream_timeout=10, close_timeout=2)
"""Host timeouts short enough for tests."""


# -- waiting ---------------------------------------------------------------------------------------
async def eventually(
    check: Callable[[], object], *, timeout: float | None = 15, poll: float = 0.02
) -> None:
    """Return once ``check()`` is true, polling every ``poll`` seconds; trio.TooSlowError
    after ``timeout`` seconds (None: the caller bounds the wait, e.g. with trio.fail_after)."""
    with trio.fail_after(timeout) if timeout is not None else _unbounded():
        while not check():
            await trio.sleep(poll)


@contextmanager
def _unbounded() -> Iterator[None]:
    yield


def wait_for(check: Callable[[], bool], timeout: float = 20.0, poll: float = 0.1) -> None:
    """Return once ``check()`` is true (polling, in real time); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


# -- entries and nodes -----------------------------------------------------------------------------
class MemoryPositions:
    """An in-memory `store.AuthorPositions` for driving the sealers without a store: each
    (tenant, author) at its number in ``last`` (0 when absent), its last entry id a hash of
    the three; ``asked`` records which chains the sealer asked about."""

    def __init__(self, last: dict[tuple[bytes, bytes], int] | None = None) -> None:
        self.last = dict(last or {})
        self.asked: list[tuple[bytes, bytes]] = []

    def last_seq(self, tenant_id: bytes, author: bytes) -> int:
        self.asked.append((tenant_id, author))
        return self.last.get((tenant_id, author), 0)

    def last_entry_id(self, tenant_id: bytes, author: bytes) -> bytes:
        last = self.last.get((tenant_id, author), 0)
        if last == 0:
            return NO_PREV
        return hashlib.sha256(tenant_id + author + last.to_bytes(8, "big")).digest()


def seal_entry(
    *,
    tenant_id: bytes,
    database: str,
    author: SigningKeyPair,
    author_seq: int,
    timestamp_ms: int,
    key_id: bytes,
    key: bytes,
    payload: bytes,
    kind: EntryKind | None = None,
    document_id: bytes | None = None,
    deps: Iterable[bytes] = (),
    prev: bytes | None = None,
) -> Entry:
    """An entry sealed with these fields (format 2 when ``prev`` is given: the author's
    previous entry id, ``NO_PREV`` for its first). By default its kind is MEMBERSHIP in the
    tenant log and CHANGE elsewhere, and its document NO_DOCUMENT in the tenant log and a fresh
    random id elsewhere."""
    in_log = database == TENANT_LOG
    return Entry.seal(
        kind=kind if kind is not None else EntryKind.MEMBERSHIP if in_log else EntryKind.CHANGE,
        tenant_id=tenant_id,
        database=database,
        document_id=(
            document_id if document_id is not None else NO_DOCUMENT if in_log else os.urandom(16)
        ),
        author=author,
        author_seq=author_seq,
        timestamp_ms=timestamp_ms,
        deps=list(deps),
        key_id=key_id,
        key=key,
        payload=payload,
        prev=prev,
    )


def numbered_change(
    author: SigningKeyPair, seq: int, tenant_id: bytes = bytes(16), prev: bytes | None = None
) -> Entry:
    """A change of ``author`` numbered ``seq``, its document id and timestamp ``seq`` too."""
    return seal_entry(
        tenant_id=tenant_id,
        database="notes",
        document_id=seq.to_bytes(16, "big"),
        author=author,
        author_seq=seq,
        timestamp_ms=seq,
        key_id=bytes(16),
        key=bytes(32),
        payload=b"x",
        prev=prev,
    )


def forge(
    node: Node, tenant: Tenant, seq: int, prev: bytes | None, text: bytes = b"forged"
) -> Entry:
    """An entry signed by ``node``'s key, crafted by hand (as a thief holding the key would)."""
    key = node.tenant("acme").keyring.current("default")
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=tenant.id,
        database="notes",
        document_id=os.urandom(16),
        author=node.identity.signing,
        author_seq=seq,
        timestamp_ms=int(time.time() * 1000),
        deps=[],
        key_id=key.key_id,
        key=key.secret,
        payload=text,
        prev=prev,
    )


def copy_tenant(src: Node, dst: Node, tenant: Tenant) -> int:
    """Copy every entry of ``tenant`` from ``src`` to ``dst`` (verified by ``dst``; none may be
    rejected); how many were new to ``dst``."""
    result = dst.ingest([e.raw for e in src.store.iter_entries(tenant.id)])
    assert not result.rejected, result.rejected
    return len(result.added)


async def two_writers_converge(cluster: Cluster) -> None:
    """Start two daemons of ``cluster`` in tenant ``acme``, each writing one document; connect
    them, wait for convergence, and check both read both documents."""
    await cluster.start(2)
    cluster.create_tenant("acme")
    docs = [cluster.db(i, "acme", "notes").create_document({"by": i}) for i in range(2)]
    await cluster.connect(0, 1)
    await cluster.wait_converged(timeout=30)
    for i in range(2):
        for j, doc in enumerate(docs):
            assert cluster.db(i, "acme", "notes").get(doc) == {"by": j}


@asynccontextmanager
async def running_daemon(
    node: Node, config: NodeConfig = LOOPBACK, **options: Any
) -> AsyncIterator[NodeDaemon]:
    """``node``'s daemon, listening (on loopback by default, control socket off, `FAST`
    timeouts; ``options`` go to NodeDaemon), cancelled when the block ends."""
    options.setdefault("host_config", FAST)
    options.setdefault("control", False)
    daemon = NodeDaemon(node, config, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            nursery.cancel_scope.cancel()


# -- processes and the CLI -------------------------------------------------------------------------
@contextmanager
def daemon_process(
    home: Path, cwd: Path, env: dict[str, str], options: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """``mindoo --home HOME --json node run`` on loopback as a real process (``env``: its
    environment, from cli_helpers.cli_env), once it listens: the process and the identity it
    printed. Its HTTP API listens on a free port (``--http-port 0``, overridable in ``options``),
    so daemons of tests running at once never contend for the default port. Stopped with
    SIGTERM afterwards (killed if it does not stop in 20 s)."""
    from cli_helpers import mindoo_command

    proc = subprocess.Popen(
        [*mindoo_command(), "--home", str(home), "--json", "node", "run",
         "--listen", "/ip4/127.0.0.1/tcp/0", "--http-port", "0", *options],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the daemon prints its identity once listening
        assert line, proc.stderr.read() if proc.stderr else "the daemon did not start"
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run_cli_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    password: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    """Run the console script's `cli.main.main` in-process on ``mindoo ARGS`` with
    MINDOO_PASSWORD ``password`` and ``stdin`` as the answer to any question; (exit code,
    stdout, stderr)."""
    from cli.main import main

    monkeypatch.setenv("MINDOO_PASSWORD", password)
    monkeypatch.setattr(sys, "argv", ["mindoo", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
