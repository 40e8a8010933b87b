"""`Cluster`: script whole clusters of nodes on loopback, for your tests and ours.

In-process nodes run their daemons in the cluster's trio nursery; they can be connected in
topologies, partitioned and healed, killed and restarted (from the same home, so they resume
where they stopped), and `wait_converged` fails with a readable diff of who misses what::

    async with Cluster(tmp_path) as cluster:
        await cluster.start(5)
        cluster.create_tenant("acme")             # node 0 is admin; every node joins
        await cluster.connect_topology("line")
        doc = cluster.db(0, "acme", "contacts").create_document({"name": "Ada"})
        await cluster.wait_converged(timeout=10)
        assert cluster.db(4, "acme", "contacts").get(doc) == {"name": "Ada"}

Every address is 127.0.0.1; mDNS is never used.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from ..config import NodeConfig
from ..crypto.keystore import KdfProfile
from ..daemon import NodeDaemon
from ..database import Database
from ..document_identity import KeyFamilies, membership_secrets
from ..entry import TENANT_LOG
from ..errors import MindooError
from ..materializer import DocumentMaterializer
from ..net.host import HostConfig
from ..node import Node

LOOPBACK_LISTEN = ("/ip4/127.0.0.1/tcp/0",)
DEFAULT_PASSWORD = "mindoo-cluster-test"


class ConvergenceError(AssertionError):
    """`wait_converged` timed out; the message lists what each node misses."""


@dataclass
class ClusterNode:
    """One node of a cluster."""

    index: int
    name: str
    home: Path
    node: Node | None = None
    daemon: NodeDaemon | None = None
    scope: trio.CancelScope | None = None
    addr: str | None = None
    """Its listen address (kept across restarts: the node listens on the same port again)."""
    peer_id: str | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def running(self) -> bool:
        return self.daemon is not None

    def require(self) -> Node:
        if self.node is None:
            raise MindooError(f"cluster node {self.name} is not running")
        return self.node


class Cluster:
    """A set of in-process nodes on loopback; use as ``async with Cluster(root) as c``."""

    def __init__(
        self,
        root: Path | str,
        *,
        password: str = DEFAULT_PASSWORD,
        sync_interval_s: float = 30.0,
        host_config: HostConfig | None = None,
    ) -> None:
        self.root = Path(root)
        self.password = password
        self.sync_interval_s = sync_interval_s
        self.host_config = host_config or HostConfig(
            dial_timeout=5, stream_timeout=10, close_timeout=2
        )
        self.nodes: list[ClusterNode] = []
        self.edges: set[tuple[int, int]] = set()
        self._partitioned: set[tuple[int, int]] = set()
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Cluster:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        for member in self.nodes:
            if member.scope is not None:
                member.scope.cancel()
        try:
            result: bool | None = await self._nursery_cm.__aexit__(exc_type, exc, tb)
        finally:
            for member in self.nodes:
                if member.node is not None:
                    member.node.close()
                    member.node = None
        return result

    async def start(self, count: int, *, names: Sequence[str] | None = None) -> list[ClusterNode]:
        """Create and start ``count`` new nodes (named node0, node1, ... by default)."""
        created = []
        for i in range(count):
            index = len(self.nodes)
            name = names[i] if names else f"node{index}"
            home = self.root / name
            node = Node.init(home, self.password, name=name, kdf=KdfProfile.TESTING)
            member = ClusterNode(index, name, home, node=node)
            self.nodes.append(member)
            await self._run(member)
            created.append(member)
        return created

    async def _run(self, member: ClusterNode) -> None:
        assert self._nursery is not None and member.node is not None
        listen = (member.addr.rsplit("/p2p/", 1)[0],) if member.addr else LOOPBACK_LISTEN
        config = NodeConfig(listen=listen, sync_interval_s=self.sync_interval_s)
        daemon = NodeDaemon(member.node, config, host_config=self.host_config, control=False)
        member.daemon = daemon
        member.done = trio.Event()
        scope = trio.CancelScope()
        member.scope = scope

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await daemon.run(task_status=task_status)
            finally:
                member.done.set()

        await self._nursery.start(run)
        member.addr = daemon.listen_addrs()[0]
        member.peer_id = daemon.peer_id

    async def kill(self, index: int) -> None:
        """Stop a node's daemon and close its store (its home stays)."""
        member = self.nodes[index]
        if member.scope is not None:
            member.scope.cancel()
            await member.done.wait()
        member.daemon = None
        member.scope = None
        if member.node is not None:
            member.node.close()
            member.node = None

    async def add_home(self, home: Path | str, *, name: str | None = None) -> ClusterNode:
        """Add and start a node from an existing home (one `Node.restore` made, say), opened
        with the cluster's password. It joins no topology edge until you `connect` it."""
        index = len(self.nodes)
        home = Path(home)
        node = Node.open(home, self.password)
        member = ClusterNode(index, name or home.name, home, node=node)
        self.nodes.append(member)
        await self._run(member)
        return member

    async def wipe(self, index: int) -> None:
        """Kill a node and delete its home: a lost or wiped device. It cannot restart; its
        index stays taken (add a restored device with `add_home`)."""
        await self.kill(index)
        shutil.rmtree(self.nodes[index].home)

    def files_containing(self, index: int, needles: Iterable[bytes]) -> list[tuple[Path, bytes]]:
        """Every (file, needle) where a file under node ``index``'s home holds ``needle`` in its
        raw bytes: how a test proves that a mirror's disk holds no plaintext. Kill the node
        first to scan what it flushed."""
        wanted = list(needles)
        found: list[tuple[Path, bytes]] = []
        for path in sorted(self.nodes[index].home.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                found.extend((path, needle) for needle in wanted if needle in data)
        return found

    async def restart(self, index: int) -> None:
        """Start a killed node again from its home, on the same address; reconnect its edges."""
        member = self.nodes[index]
        if member.running:
            await self.kill(index)
        member.node = Node.open(member.home, self.password)
        await self._run(member)
        for a, b in sorted(self.edges):
            if index in (a, b) and (min(a, b), max(a, b)) not in self._partitioned:
                other = b if a == index else a
                if self.nodes[other].running:
                    await self._dial(index, other)

    # -- tenants -----------------------------------------------------------------------------
    def create_tenant(
        self,
        name: str = "acme",
        *,
        admin: int = 0,
        members: Sequence[int] | None = None,
        mirrors: Sequence[int] = (),
    ) -> None:
        """Create a tenant on node ``admin``; ``members`` (default: every other node) join as
        members and ``mirrors`` as keyless mirrors."""
        admin_node = self.nodes[admin].require()
        tenant = admin_node.create_tenant(name)
        if members is None:
            members = [m.index for m in self.nodes if m.index != admin and m.index not in mirrors]
        for index, role in [(i, "member") for i in members] + [(i, "mirror") for i in mirrors]:
            if index == admin:
                continue
            node = self.nodes[index].require()
            node.join(admin_node.invite(tenant, node.public_identity(), role=role))

    def db(self, index: int, tenant: str, database: str) -> Database:
        """Database ``database`` of node ``index``, created there when it does not exist
        (tests name a database on every node they read it from, before it arrives)."""
        return self.nodes[index].require().tenant(tenant).create_db(database)

    # -- topology ----------------------------------------------------------------------------
    async def _dial(self, a: int, b: int) -> None:
        da, nb = self.nodes[a].daemon, self.nodes[b]
        assert da is not None and nb.addr is not None
        await da.add_peer(nb.addr)

    async def connect(self, a: int, b: int) -> None:
        """Connect nodes ``a`` and ``b`` (``a`` dials)."""
        self.edges.add((min(a, b), max(a, b)))
        await self._dial(a, b)

    async def connect_topology(
        self, kind: str, *, seed: int | None = None, degree: int = 2
    ) -> None:
        """``line``, ``ring``, ``star`` (node 0 in the middle), ``full`` or ``random`` (a random
        spanning tree plus extra edges up to ``degree`` per node on average; connected)."""
        n = len(self.nodes)
        pairs: set[tuple[int, int]] = set()
        if kind in ("line", "ring"):
            pairs = {(i, i + 1) for i in range(n - 1)}
            if kind == "ring" and n > 2:
                pairs.add((0, n - 1))
        elif kind == "star":
            pairs = {(0, i) for i in range(1, n)}
        elif kind == "full":
            pairs = {(i, j) for i in range(n) for j in range(i + 1, n)}
        elif kind == "random":
            rng = random.Random(seed)
            order = list(range(n))
            rng.shuffle(order)
            for i in range(1, n):
                a, b = order[i], order[rng.randrange(i)]
                pairs.add((min(a, b), max(a, b)))
            target = max(n - 1, n * degree // 2)
            while len(pairs) < min(target, n * (n - 1) // 2):
                a, b = rng.sample(range(n), 2)
                pairs.add((min(a, b), max(a, b)))
        else:
            raise ValueError(f"unknown topology {kind!r}")
        for a, b in sorted(pairs):
            await self.connect(a, b)

    async def partition(self, *groups: Sequence[int]) -> None:
        """Cut every connection between nodes of different groups until `heal`."""
        where = {i: g for g, members in enumerate(groups) for i in members}
        for a in range(len(self.nodes)):
            for b in range(a + 1, len(self.nodes)):
                if a in where and b in where and where[a] != where[b]:
                    self._partitioned.add((a, b))
                    da, db_ = self.nodes[a].daemon, self.nodes[b].daemon
                    pa, pb = self.nodes[a].peer_id, self.nodes[b].peer_id
                    assert pa is not None and pb is not None
                    if da is not None:
                        await da.block_peer(pb)
                    if db_ is not None:
                        await db_.block_peer(pa)

    async def heal(self) -> None:
        """Undo every partition and reconnect the topology's edges."""
        cut, self._partitioned = self._partitioned, set()
        for a, b in cut:
            for x, y in ((a, b), (b, a)):
                daemon, peer = self.nodes[x].daemon, self.nodes[y].peer_id
                if daemon is not None and peer is not None:
                    daemon.unblock_peer(peer)
        for a, b in sorted(cut & self.edges):
            if self.nodes[a].running and self.nodes[b].running:
                await self._dial(a, b)

    # -- convergence -------------------------------------------------------------------------
    def entry_sets(
        self, among: Sequence[int] | None = None
    ) -> dict[int, dict[tuple[str, str], set[bytes]]]:
        """Per running node (of ``among``, default all): (tenant, database) -> entry ids held."""
        result: dict[int, dict[tuple[str, str], set[bytes]]] = {}
        for member in self.nodes:
            if member.node is None or (among is not None and member.index not in among):
                continue
            names = {t.id: t.name for t in member.node.tenants()}
            held: dict[tuple[str, str], set[bytes]] = {}
            for entry in member.node.store.iter_entries():
                key = (names.get(entry.tenant_id, entry.tenant_id.hex()), entry.database)
                held.setdefault(key, set()).add(entry.id)
            result[member.index] = held
        return result

    def divergence(self, among: Sequence[int] | None = None) -> list[str]:
        """Readable lines naming what each running node misses (empty when converged)."""
        sets = self.entry_sets(among)
        union: dict[tuple[str, str], set[bytes]] = {}
        for held in sets.values():
            for key, ids in held.items():
                union.setdefault(key, set()).update(ids)
        lines = []
        for index, held in sorted(sets.items()):
            for key, ids in sorted(union.items()):
                missing = ids - held.get(key, set())
                if missing:
                    sample = ", ".join(sorted(m.hex()[:12] for m in missing)[:5])
                    more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
                    lines.append(
                        f"{self.nodes[index].name} misses {len(missing)} of {len(ids)} entries"
                        f" of {key[0]}/{key[1]}: {sample}{more}"
                    )
        return lines

    def fingerprints(
        self, among: Sequence[int] | None = None
    ) -> dict[int, dict[tuple[bytes, str], tuple[int, bytes]]]:
        """Per running node (of ``among``, default all): (tenant id, database) -> (items,
        fingerprint) of its reconciliation index, for every database holding items.

        Cheap (one read transaction and an O(log n) range fingerprint per database, whatever
        the store's size), and equal for two nodes holding the same entries: different
        fingerprints prove a divergence without scanning. (Entries of timestamp 2^64-1 are
        never reconciled, so they are not counted: only `divergence` sees them.)
        """
        result: dict[int, dict[tuple[bytes, str], tuple[int, bytes]]] = {}
        for member in self.nodes:
            if member.node is None or (among is not None and member.index not in among):
                continue
            store = member.node.store
            held: dict[tuple[bytes, str], tuple[int, bytes]] = {}
            for tenant_id in store.tenants():
                for database in store.databases(tenant_id):
                    with store.recon_snapshot(tenant_id, database) as items:
                        size = items.size()
                        if size:
                            held[(tenant_id, database)] = (size, items.fingerprint(0, size))
            result[member.index] = held
        return result

    def document_heads(
        self, among: Sequence[int] | None = None
    ) -> dict[int, dict[tuple[str, str, bytes], tuple[bytes, ...]]]:
        """Per running node (of ``among``): (tenant, database, document id) -> the document's
        materialized Automerge heads, for every document the node reads whole (it holds the
        key of every change: a change it cannot open would make its heads differ rightly).

        Materialized afresh from the store (no snapshots, no cache shared with the node), on
        the calling thread."""
        result: dict[int, dict[tuple[str, str, bytes], tuple[bytes, ...]]] = {}
        for member in self.nodes:
            if member.node is None or (among is not None and member.index not in among):
                continue
            held: dict[tuple[str, str, bytes], tuple[bytes, ...]] = {}
            store = member.node.store
            for tenant in member.node.tenants():
                families = KeyFamilies(
                    tenant.id,
                    tenant.key_names,
                    tenant.key_name_for,
                    partial(membership_secrets, tenant.keyring),
                )
                for database in store.databases(tenant.id):
                    if database == TENANT_LOG:
                        continue
                    docs = DocumentMaterializer(
                        store,
                        tenant.id,
                        database,
                        tenant.keyring,
                        max_cached=1,
                        use_snapshots=False,
                        families=families,
                    )
                    for document_id in store.documents(tenant.id, database):
                        try:
                            md = docs.load(document_id, must_exist=False)
                        except MindooError:
                            continue
                        if not md.unreadable:
                            heads = tuple(md.doc.heads())
                            held[(tenant.name, database, document_id)] = heads
            result[member.index] = held
        return result

    def head_divergence(self, among: Sequence[int] | None = None) -> list[str]:
        """Readable lines naming the documents whose materialized heads differ between
        running nodes that read them whole (meaningful once their entry sets agree: equal
        entries must give equal documents)."""
        by_document: dict[tuple[str, str, bytes], dict[int, tuple[bytes, ...]]] = {}
        for index, held in self.document_heads(among).items():
            for key, heads in held.items():
                by_document.setdefault(key, {})[index] = heads
        lines = []
        for (tenant, database, document_id), per_node in sorted(by_document.items()):
            if len(set(per_node.values())) > 1:
                shown = "; ".join(
                    f"{self.nodes[i].name}: {','.join(h.hex()[:12] for h in hs) or '-'}"
                    for i, hs in sorted(per_node.items())
                )
                lines.append(
                    f"document {document_id.hex()} of {tenant}/{database} has different"
                    f" heads: {shown}"
                )
        return lines

    async def wait_converged(
        self,
        timeout: float = 30.0,
        *,
        among: Sequence[int] | None = None,
        poll: float = 0.05,
        check_heads: bool = True,
    ) -> None:
        """Wait until every running node (of ``among``) holds the same entries;
        ConvergenceError with a readable diff otherwise.

        Every ``poll`` seconds it compares the nodes' `fingerprints`; only when they all agree
        does it confirm with a full scan (`divergence`), in a worker thread so the nodes'
        event loop goes on meanwhile, and at most once per distinct set of fingerprints.
        Once the entries agree, ``check_heads`` compares the documents' heads as well
        (`head_divergence`, once): equal entries with different heads raise ConvergenceError
        at once, since no further sync can change them.
        """
        scanned: list[dict[int, dict[tuple[bytes, str], tuple[int, bytes]]]] = []
        with trio.move_on_after(timeout):
            while True:
                prints = self.fingerprints(among)
                agree = len({tuple(sorted(held.items())) for held in prints.values()}) <= 1
                if agree and prints not in scanned:
                    lines = await trio.to_thread.run_sync(self.divergence, among)
                    if not lines:
                        split = self.head_divergence(among) if check_heads else []
                        if split:
                            raise ConvergenceError(
                                "the nodes hold the same entries but their documents differ:"
                                "\n  " + "\n  ".join(split)
                            )
                        return
                    scanned[:] = [prints]
                await trio.sleep(poll)
        lines = await trio.to_thread.run_sync(self.divergence, among)
        if lines:
            raise ConvergenceError(
                f"cluster did not converge within {timeout} s:\n  " + "\n  ".join(lines)
            )
