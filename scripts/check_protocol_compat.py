#!/usr/bin/env python3
"""Check sync compatibility with the REAL code of older commits (by default 063fa60, sync
protocol version 1, and 3d3bd70, version 2; each responder denies any other HELLO version).

The old tree (``git archive COMMIT``, or ``--old-tree DIR``) is copied under the package name
``mindoo_p2p_old`` (its own absolute imports renamed; nothing else changed) and imported beside
this tree's ``mindoo_p2p``: the old `run_initiator` / `run_responder`, its sync state machines,
its handshake and its `MemorySyncStore` (which verifies every entry it ingests) run unchanged,
against this tree's, over in-memory framed streams in one trio run. Entry bytes are sealed here
(the entry format did not change) and handed to each side as raw bytes.

Cases (each: one tenant, the tenant log and three databases):

- ``new->old``: this tree's initiator, as `SyncSessions.sync_tenant` runs it (a version from
  the `PeerTable`, `run_with_version_fallback`), toward an old responder; the stores differ both
  ways. Expected toward an older version: each newer HELLO denied (5 points each), one version
  at a time, then a session of the old version on a new stream (063fa60: HELLO 3 and 2
  denied, then version 1; 3d3bd70: HELLO 3 denied, then version 2); the stores converge; the
  old responder counts each pushed entry under its own database (version 1 counts them under
  the database last asked about: one scope at a time). Toward a tree of our own version: one
  HELLO, no denial, no penalty, the same counts.
- ``new->old again``: the same peer table: straight to the version spoken, no denial, no penalty.
- ``new->old idle`` and ``old->new idle``: two stores in sync, each direction: the session
  ends well and moves nothing (the old side's version: FINISHED is sent and awaited, as it
  expects, even though nothing was pushed).
- ``new(empty)->old``: bulk catch-up (index pages and fetches) from an old responder.
- ``old->new`` and ``old(empty)->new``: the old initiator toward this tree's responder.
- a control (toward a version-1 tree only): version 1 but with perf-rounds' scopes in one
  flight (several scopes' first reconciliation requests before the answers): the stores still
  converge (the old responder answers and stores them) but it counts our pushes under the
  wrong databases, which is why version 1 reconciles one scope at a time. The case is ok when
  that miscount shows.

Prints one JSON object per old commit (``--json``: indented) and a one-line summary each on
stderr; exits 1 when a case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mindoo_p2p.crypto import SigningKeyPair  # noqa: E402
from mindoo_p2p.daemon import PeerTable  # noqa: E402
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind  # noqa: E402
from mindoo_p2p.sync import driver as new_driver  # noqa: E402
from mindoo_p2p.sync.messages import PROTOCOL_VERSION, Hello, decode_message  # noqa: E402
from mindoo_p2p.sync.protocol import SyncInitiator  # noqa: E402
from mindoo_p2p.testing.memory_sync import MemorySyncStore, memory_frame_pair  # noqa: E402

OLD_NAME = "mindoo_p2p_old"
NAMES = (TENANT_LOG, "notes", "tasks", "zeta")
PEER_NEW, PEER_OLD = b"peer-new", b"peer-old"
BASE_MS = 1_760_000_000_000


@dataclass
class Member:
    """A tenant authority (duck-typed: the same protocol in both trees)."""

    tenant_id: bytes
    member_key: SigningKeyPair
    members: set[bytes]

    def may_replicate(self, member_key: bytes) -> bool:
        return member_key in self.members

    def membership_evidence(self) -> bytes:
        return b""

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        return False


def load_old_tree(commit: str, old_tree: Path | None, workdir: Path) -> ModuleType:
    """The old ``mindoo_p2p`` package, imported as ``mindoo_p2p_old``."""
    source = old_tree
    if source is None:
        source = workdir / "old"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    package = workdir / "pkg" / OLD_NAME
    shutil.copytree(source / "mindoo_p2p", package)
    pattern = re.compile(r"\bmindoo_p2p\b")
    for path in package.rglob("*.py"):
        text = path.read_text()
        renamed = pattern.sub(OLD_NAME, text)
        if renamed != text:
            path.write_text(renamed)
    sys.path.insert(0, str(workdir / "pkg"))
    import importlib

    importlib.import_module(f"{OLD_NAME}.sync.driver")
    importlib.import_module(f"{OLD_NAME}.testing.memory_sync")
    return sys.modules[OLD_NAME]


class Fixture:
    """One tenant, two members, entry bytes sealed here."""

    def __init__(self) -> None:
        self.tenant = os.urandom(16)
        self.key = os.urandom(32)
        self.author = SigningKeyPair.generate()
        self.seq = 0
        new_key, old_key = SigningKeyPair.generate(), SigningKeyPair.generate()
        members = {new_key.public_key, old_key.public_key}
        self.new_authority = Member(self.tenant, new_key, members)
        self.old_authority = Member(self.tenant, old_key, members)

    def raws(self, per_db: int, offset_ms: int) -> list[bytes]:
        out = []
        for db in NAMES:
            for i in range(per_db):
                self.seq += 1
                in_log = db == TENANT_LOG
                out.append(
                    Entry.seal(
                        kind=EntryKind.MEMBERSHIP if in_log else EntryKind.CHANGE,
                        tenant_id=self.tenant,
                        database=db,
                        document_id=NO_DOCUMENT if in_log else os.urandom(16),
                        author=self.author,
                        author_seq=self.seq,
                        timestamp_ms=BASE_MS + offset_ms + i * 1000,
                        deps=[],
                        key_id=bytes(16),
                        key=self.key,
                        payload=os.urandom(64),
                    ).raw
                )
        return out


def new_store(fx: Fixture, raws: list[bytes]) -> MemorySyncStore:
    store = MemorySyncStore(fx.tenant)
    store.add_own(Entry.decode(raw) for raw in raws)
    return store


def old_store(old: ModuleType, fx: Fixture, raws: list[bytes]) -> Any:
    store = old.testing.memory_sync.MemorySyncStore(fx.tenant)
    store.add_own(old.entry.Entry.decode(raw) for raw in raws)
    return store


def per_db(report: Any, field: str) -> dict[str, int]:
    return {name: getattr(db, field) for name, db in sorted(report.databases.items())}


def expected_per_db(raws: list[bytes]) -> dict[str, int]:
    counts = dict.fromkeys(NAMES, 0)
    for raw in raws:
        counts[Entry.decode(raw).database] += 1
    return dict(sorted(counts.items()))


async def new_to_old(
    old: ModuleType, fx: Fixture, mine: MemorySyncStore, theirs: Any, table: PeerTable
) -> dict[str, Any]:
    """This tree's initiator (with the version fallback) toward the old responder."""
    hellos: list[int] = []
    penalties: list[int] = []
    old_reports: list[Any] = []

    async def attempt(version: int) -> Any:
        near, far = memory_frame_pair()
        outcome: list[Any] = []

        class Watch:  # the old responder's end, noting the HELLO version it receives
            first = True

            async def send_frame(self, data: bytes) -> None:
                await far.send_frame(data)

            async def receive_frame(self) -> bytes:
                frame = await far.receive_frame()
                if self.first:
                    self.first = False
                    message = decode_message(frame)
                    if isinstance(message, Hello):
                        hellos.append(message.version)
                return frame

            async def close(self) -> None:
                await far.close()

        async def respond() -> None:
            try:
                old_reports.append(
                    await old.sync.driver.run_responder(
                        Watch(),
                        PEER_OLD,
                        PEER_NEW,
                        {fx.tenant: (fx.old_authority, theirs)},
                        on_penalty=lambda peer, points, reason: penalties.append(points),
                    )
                )
            except Exception as exc:  # reported as the case's outcome
                old_reports.append(exc)

        attempts[0] += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            try:
                outcome.append(
                    await new_driver.run_initiator(
                        near, PEER_NEW, PEER_OLD, fx.new_authority, mine, version=version
                    )
                )
            except new_driver.VersionRefused as exc:
                outcome.append(exc)
            finally:
                await near.close()
        if isinstance(outcome[0], new_driver.VersionRefused):
            raise outcome[0]
        return outcome[0]

    attempts = [0]
    started = time.perf_counter()
    report = await new_driver.run_with_version_fallback(
        attempt, table.sync_version("old"), lambda v: table.version_refused("old", v)
    )
    served = old_reports[-1]
    return {
        "hellos": hellos,
        "sessions": attempts[0],
        "old_penalty_points": sum(penalties),
        "protocol_version": report.protocol_version,
        "received": report.received,
        "sent": report.sent,
        "old_received_per_db": per_db(served, "received") if served is not None else None,
        "new_sent_per_db": per_db(report, "sent"),
        "seconds": round(time.perf_counter() - started, 3),
    }


async def old_to_new(
    old: ModuleType, fx: Fixture, mine: Any, theirs: MemorySyncStore
) -> dict[str, Any]:
    """The old initiator toward this tree's responder."""
    near, far = old.testing.memory_sync.memory_frame_pair()
    served: list[Any] = []
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:

        async def respond() -> None:
            served.append(
                await new_driver.run_responder(
                    far, PEER_NEW, PEER_OLD, {fx.tenant: (fx.new_authority, theirs)}
                )
            )

        nursery.start_soon(respond)
        report = await old.sync.driver.run_initiator(
            near, PEER_OLD, PEER_NEW, fx.old_authority, mine
        )
    return {
        "protocol_version": served[0].protocol_version,
        "received": report.received,
        "sent": report.sent,
        "new_received_per_db": per_db(served[0], "received"),
        "old_sent_per_db": per_db(report, "sent"),
        "seconds": round(time.perf_counter() - started, 3),
    }


async def run_cases(old: ModuleType, shared: int, unique: int, bulk: int) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    # What to expect depends on the old tree's version: an older responder denies our HELLO
    # once (5 points) and the session falls back to its version; one of our version speaks it.
    old_version = old.sync.messages.PROTOCOL_VERSION
    spoken = min(old_version, PROTOCOL_VERSION)
    first_hellos = list(range(PROTOCOL_VERSION, spoken - 1, -1))  # one version at a time
    first_penalty = 5 * (PROTOCOL_VERSION - spoken)

    def case(name: str, ok: bool, detail: dict[str, Any]) -> None:
        cases.append({"case": name, "ok": ok, **detail})

    # new -> old, differing both ways; then again with the same peer table.
    fx = Fixture()
    common = fx.raws(shared, 0)
    mine_only, theirs_only = fx.raws(unique, 10**8), fx.raws(unique + 2, 2 * 10**8)
    mine = new_store(fx, common + mine_only)
    theirs = old_store(old, fx, common + theirs_only)
    table = PeerTable(clock=time.monotonic)
    detail = await new_to_old(old, fx, mine, theirs, table)
    converged = mine.ids() == theirs.ids()
    ok = (
        converged
        and detail["hellos"] == first_hellos
        and detail["protocol_version"] == spoken
        and detail["old_received_per_db"] == expected_per_db(mine_only)
        and detail["old_penalty_points"] == first_penalty
    )
    case("new->old", ok, {"converged": converged, **detail})
    more = fx.raws(3, 3 * 10**8)
    theirs.add_own(old.entry.Entry.decode(raw) for raw in more)
    detail = await new_to_old(old, fx, mine, theirs, table)
    converged = mine.ids() == theirs.ids()
    ok = converged and detail["hellos"] == [spoken] and detail["old_penalty_points"] == 0
    case("new->old again", ok, {"converged": converged, **detail})
    detail = await new_to_old(old, fx, mine, theirs, table)  # in sync now: an idle session
    ok = (
        mine.ids() == theirs.ids()
        and detail["hellos"] == [spoken]
        and detail["received"] == detail["sent"] == 0
        and detail["old_penalty_points"] == 0
    )
    case("new->old idle", ok, detail)
    if old_version == 1:
        await version_1_control(old, shared, unique, case)

    # new (empty) -> old: bulk catch-up.
    fx = Fixture()
    mine = new_store(fx, [])
    theirs = old_store(old, fx, fx.raws(bulk, 0))
    detail = await new_to_old(old, fx, mine, theirs, PeerTable())
    converged = mine.ids() == theirs.ids()
    case(
        "new(empty)->old",
        converged and detail["protocol_version"] == spoken,
        {"converged": converged, **detail},
    )

    # old -> new, differing both ways.
    fx = Fixture()
    common = fx.raws(shared, 0)
    old_only, new_only = fx.raws(unique, 10**8), fx.raws(unique + 2, 2 * 10**8)
    mine_old = old_store(old, fx, common + old_only)
    theirs_new = new_store(fx, common + new_only)
    detail = await old_to_new(old, fx, mine_old, theirs_new)
    converged = mine_old.ids() == theirs_new.ids()
    ok = (
        converged
        and detail["protocol_version"] == old_version
        and detail["new_received_per_db"] == expected_per_db(old_only)
    )
    case("old->new", ok, {"converged": converged, **detail})
    detail = await old_to_new(old, fx, mine_old, theirs_new)  # in sync now: an idle session
    ok = (
        mine_old.ids() == theirs_new.ids()
        and detail["protocol_version"] == old_version
        and detail["received"] == detail["sent"] == 0
    )
    case("old->new idle", ok, detail)

    # old (empty) -> new: bulk catch-up.
    fx = Fixture()
    mine_old = old_store(old, fx, [])
    theirs_new = new_store(fx, fx.raws(bulk, 0))
    detail = await old_to_new(old, fx, mine_old, theirs_new)
    converged = mine_old.ids() == theirs_new.ids()
    case("old(empty)->new", converged, {"converged": converged, **detail})
    return cases


async def version_1_control(
    old: ModuleType, shared: int, unique: int, case: Callable[[str, bool, dict[str, Any]], None]
) -> None:
    """Toward a version-1 responder only: version 1 with perf-rounds' scopes in one flight
    (what this tree sent before the fix): the old responder counts pushed entries under the
    wrong databases."""
    fx = Fixture()
    common = fx.raws(shared, 0)
    mine_only = fx.raws(unique, 10**8)
    mine, theirs = new_store(fx, common + mine_only), old_store(old, fx, common)

    class ScopesInOneFlight(SyncInitiator):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._scopes = 8

    setattr(new_driver, "SyncInitiator", ScopesInOneFlight)  # noqa: B010 - a control only
    try:
        detail = await new_to_old(old, fx, mine, theirs, PeerTable())
    finally:
        setattr(new_driver, "SyncInitiator", SyncInitiator)  # noqa: B010
    converged = mine.ids() == theirs.ids()
    miscounted = detail["old_received_per_db"] != expected_per_db(mine_only)
    case(
        "control: v1 with scopes in one flight is miscounted",
        converged and miscounted,
        {"converged": converged, **detail},
    )


def unload_old_tree() -> None:
    """Forget the old package, so that another old tree can be loaded under the same name."""
    for name in [name for name in sys.modules if name.split(".")[0] == OLD_NAME]:
        del sys.modules[name]
    sys.path[:] = [entry for entry in sys.path if not entry.endswith("/pkg")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--old-commit",
        action="append",
        help="an older commit to check against (repeatable; default: 063fa60 and 3d3bd70)",
    )
    parser.add_argument(
        "--old-tree", type=Path, help="an extracted old tree (else git archive; one commit)"
    )
    parser.add_argument("--shared", type=int, default=1500, help="common entries per database")
    parser.add_argument("--unique", type=int, default=40, help="each side's own, per database")
    parser.add_argument("--bulk", type=int, default=2500, help="entries per database, bulk cases")
    parser.add_argument("--json", action="store_true", help="indented JSON")
    args = parser.parse_args()
    commits = args.old_commit or ["063fa60", "3d3bd70"]
    if args.old_tree is not None and len(commits) != 1:
        parser.error("--old-tree goes with exactly one --old-commit")
    all_ok = True
    for commit in commits:
        with tempfile.TemporaryDirectory(prefix="mindoo-compat-") as tmp:
            old = load_old_tree(commit, args.old_tree, Path(tmp))
            try:
                cases = trio.run(run_cases, old, args.shared, args.unique, args.bulk)
            finally:
                unload_old_tree()
        result = {
            "old_commit": commit,
            "old_protocol_version": old.sync.messages.PROTOCOL_VERSION,
            "new_protocol_version": PROTOCOL_VERSION,
            "cases": cases,
            "ok": all(each["ok"] for each in cases),
        }
        print(json.dumps(result, indent=2 if args.json else None))
        failed = [each["case"] for each in cases if not each["ok"]]
        print(
            f"protocol compat vs {commit} (v{result['old_protocol_version']}):"
            f" {len(cases) - len(failed)}/{len(cases)} cases converge as expected"
            + (f"; FAILED: {', '.join(failed)}" if failed else ""),
            file=sys.stderr,
        )
        all_ok = all_ok and result["ok"]
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
