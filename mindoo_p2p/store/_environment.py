"""Opening the LMDB environment of a store: flags, schema check, one handle per process.

LMDB forbids opening the same environment twice in one process (its fcntl locks belong to the
process), so every `EntryStore` on the same directory in this process shares one reference-
counted :class:`SharedEnvironment`, with one write lock. A read-only store may share a writable
environment (it simply never writes); a writable store cannot share a read-only one.

A writable open upgrades a store of an older schema version (`UPGRADABLE_SCHEMA_VERSIONS`) in
place, in the same write transaction as the version bump (see :mod:`._upgrade`); a read-only
open refuses it with a StoreError saying so.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from ..errors import StoreError
from ._layout import (
    LEGACY_MARKER,
    LEGACY_TABLE_NAMES,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    TABLE_NAMES,
    UPGRADABLE_SCHEMA_VERSIONS,
    Tables,
    open_tables,
    pack_schema_version,
    unpack_schema_version,
)
from ._upgrade import upgrade

MAX_READERS = 256
"""Reader slots of a home's LMDB environment: every open read transaction of EVERY process
on the home (daemon sessions, status, the CLI, scripts) takes one, and with all of them taken
each new read fails (`EntryStore` raises StoreError naming the cause). Sync sessions hold
their long-lived reconciliation snapshots within a bound far below this: one each plus a
process-wide `~mindoo_p2p.sync.snapshot_budget.SnapshotBudget` of extra ones (64)."""


@dataclass(eq=False)
class SharedEnvironment:
    """One open LMDB environment and the handles every store on it uses."""

    key: tuple[int, int]
    env: lmdb.Environment
    tables: Tables
    readonly: bool
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 1


_REGISTRY: dict[tuple[int, int], SharedEnvironment] = {}
_REGISTRY_LOCK = threading.Lock()


def acquire(path: Path, *, map_size: int, readonly: bool) -> SharedEnvironment:
    """Open the store environment in directory ``path``, or share the one already open.

    A writable open creates the directory (mode 0700) and, in a fresh environment, the
    sub-databases and schema version. Raises StoreError when the directory is not an entry
    store, has another schema version, or cannot be opened.
    """
    if readonly:
        if not (path / "data.mdb").is_file():
            raise StoreError(f"no entry store at {path}")
    else:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {path}: {exc}") from exc
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise StoreError(f"cannot open the entry store at {path}: {exc}") from exc
    key = (stat.st_dev, stat.st_ino)
    with _REGISTRY_LOCK:
        shared = _REGISTRY.get(key)
        if shared is not None:
            if shared.readonly and not readonly:
                raise StoreError(f"the entry store at {path} is already open read-only here")
            shared.users += 1
            return shared
        env = _open_env(path, map_size=map_size, readonly=readonly)
        try:
            tables = _open_tables(env, path, readonly=readonly)
            if not readonly:
                env.reader_check()  # free reader slots of processes that died
        except lmdb.Error as exc:
            env.close()
            raise StoreError(f"cannot open the entry store at {path}: {exc}") from exc
        except BaseException:
            env.close()
            raise
        shared = SharedEnvironment(key, env, tables, readonly)
        _REGISTRY[key] = shared
        return shared


def release(shared: SharedEnvironment) -> None:
    """Give back one use of ``shared``; the last one closes the environment."""
    with _REGISTRY_LOCK:
        shared.users -= 1
        if shared.users > 0:
            return
        if _REGISTRY.get(shared.key) is shared:
            del _REGISTRY[shared.key]
    with shared.write_lock:
        shared.env.close()


def _open_env(path: Path, *, map_size: int, readonly: bool) -> lmdb.Environment:
    try:
        return lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            readonly=readonly,
            create=not readonly,
            sync=True,
            metasync=True,
            mode=0o600,
            max_dbs=len(TABLE_NAMES) + len(LEGACY_TABLE_NAMES) + 2,
            max_readers=MAX_READERS,
            lock=True,
        )
    except lmdb.Error as exc:
        raise StoreError(f"cannot open the entry store at {path}: {exc}") from exc


def _open_tables(env: lmdb.Environment, path: Path, *, readonly: bool) -> Tables:
    if readonly:
        try:
            # Without a transaction: py-lmdb then keeps the handles valid for later reads.
            tables = open_tables(env, None, create=False)
        except lmdb.NotFoundError:
            _refuse_old_version_readonly(env, path)
            raise StoreError(f"{path} is not an entry store") from None
        with env.begin() as txn:
            stored = txn.get(SCHEMA_KEY, db=tables.meta)
    else:
        with env.begin(write=True) as txn:
            names = {name for name, _ in txn.cursor()}
            if names - {name.encode() for name in TABLE_NAMES + LEGACY_TABLE_NAMES}:
                raise StoreError(f"{path} holds another LMDB database, not an entry store")
            meta = env.open_db(b"meta", txn=txn, create=True)
            stored = txn.get(SCHEMA_KEY, db=meta)
            version = None if stored is None else unpack_schema_version(stored)
            if version != SCHEMA_VERSION and version not in UPGRADABLE_SCHEMA_VERSIONS and names:
                raise StoreError(
                    f"entry store {path} has schema version {version}; this code reads version"
                    f" {SCHEMA_VERSION}"
                )
            if LEGACY_MARKER in names and b"recon_idx" in names:
                # Schemas 1-3 kept it as a plain table; schema 4 opens it DUPSORT. Rebuilt below.
                txn.drop(env.open_db(b"recon_idx", txn=txn, create=False), delete=True)
            tables = open_tables(env, txn, create=True)
            if stored is None and not names:
                stored = pack_schema_version(SCHEMA_VERSION)
                txn.put(SCHEMA_KEY, stored, db=tables.meta)
            elif version in UPGRADABLE_SCHEMA_VERSIONS:
                # Convert the layout and build what the old version lacks, once, atomically
                # with the version bump.
                upgrade(env, txn, tables, version, names)
                stored = pack_schema_version(SCHEMA_VERSION)
                txn.put(SCHEMA_KEY, stored, db=tables.meta)
    version = None if stored is None else unpack_schema_version(stored)
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"entry store {path} has schema version {version}; this code reads version"
            f" {SCHEMA_VERSION}"
        )
    return tables


def _refuse_old_version_readonly(env: lmdb.Environment, path: Path) -> None:
    """A read-only open cannot upgrade: say so when the store is of an older schema version."""
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            stored = txn.get(SCHEMA_KEY, db=meta)
    except lmdb.Error:
        return
    version = None if stored is None else unpack_schema_version(stored)
    if version in UPGRADABLE_SCHEMA_VERSIONS:
        raise StoreError(
            f"entry store {path} has schema version {version}; open it once writable to upgrade"
            f" it to version {SCHEMA_VERSION} (this builds its missing indexes)"
        )
