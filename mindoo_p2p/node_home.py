"""The node home on disk: where it is, what it holds, and a new one built from a recovery kit.

A node home holds::

    keystore.bin    every private key and tenant key, encrypted (argon2id + XChaCha20-Poly1305)
    identity.json   this node's public identity (name and public keys), to send to an admin
    store/          the LMDB append-only log of sealed entries and its indexes

The keystore makes a node: a home is initialised when it holds ``keystore.bin``. A restore
(`build_restored_home`) builds the home in a staging directory inside it and moves the keystore
in last, so a failure leaves no node behind. `Node` (node.py) opens what this module lays out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from .admission import VerifiedEntry
from .crypto.keystore import KdfProfile, Keystore
from .entry import Entry
from .errors import KeystoreError, VerificationError
from .home_files import IDENTITY_FILE, write_private
from .invite_identities import KEYSTORE_FIELD as INVITE_IDENTITIES_FIELD
from .invite_identities import keystore_field
from .recovery import MIN_PASSWORD_CHARS, RecoveryKit
from .restore_guard import RESTORED_KEY, initial_marks
from .store import AppendResult
from .writer import now_ms

KEYSTORE_FILE = "keystore.bin"
STORE_DIR = "store"
KEYSTORE_FORMAT = 1


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``MINDOO_HOME``, else ``$XDG_DATA_HOME/mindoo``, else ``~/.local/share/mindoo``
    (variables from ``environ``, default: this process's environment)."""
    if environ is None:
        environ = os.environ
    env = environ.get("MINDOO_HOME")
    if env:
        return Path(env).expanduser()
    xdg = environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mindoo"


def is_initialized(home: Path | str) -> bool:
    return (Path(home) / KEYSTORE_FILE).exists()


def check_new_node_password(password: str) -> None:
    """A new node password must have `MIN_PASSWORD_CHARS` characters: it is all that stands
    between a stolen disk and the node's keys (argon2id makes each guess costly, not a short
    password long)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise KeystoreError(
            f"the node password must have at least {MIN_PASSWORD_CHARS} characters: it protects"
            " the node's keys"
        )


def keystore_secret(keystore: Keystore, field: str, size: int = 32) -> bytes:
    """The random secret kept in the keystore under ``field`` (hex), created on first use; two
    processes creating it at once agree on the first one saved."""
    stored = keystore.read().get(field)
    if stored is None:
        fresh = os.urandom(size).hex()

        def mutate(contents: dict[str, Any]) -> None:
            contents.setdefault(field, fresh)

        stored = keystore.update(mutate)[field]
    return bytes.fromhex(stored)


def replace_keystore_secret(keystore: Keystore, field: str, secret: bytes) -> None:
    """Replace the secret under ``field`` (the old one is destroyed)."""

    def mutate(contents: dict[str, Any]) -> None:
        contents[field] = secret.hex()

    keystore.update(mutate)


def check_restore_target(home: Path, password: str) -> None:
    """A recovery kit restores into a new home only, under a new node password."""
    if is_initialized(home):
        raise KeystoreError(
            f"a node already exists in {home}: a recovery kit restores into a new home only"
        )
    check_new_node_password(password)


class IngestingNode(Protocol):
    """What a restore asks of the staged node: to store the kit's tenant logs."""

    def ingest(self, entries: Sequence[Entry | bytes | VerifiedEntry]) -> AppendResult: ...


OpenStaged = Callable[[Path, Keystore], AbstractContextManager[IngestingNode]]
"""``open_staged(stage, keystore)``: the node being built in the staging directory, opened."""


def build_restored_home(
    home: Path,
    recovered: RecoveryKit,
    password: str,
    *,
    kdf: KdfProfile,
    open_staged: OpenStaged,
) -> None:
    """Lay out a new node home in ``home`` from an opened recovery kit: the kit's identity and
    tenants (keys, admin seeds, database registry, each marked restored), their tenant logs
    (verified and stored like any arrival), a keystore under ``password`` and a fresh libp2p
    peer seed (a new device has a new peer id). Built in a staging directory, the keystore moved
    in last; on any failure nothing stays (a home this call created is removed). Raises
    KeystoreError when ``home`` holds a node or stray node files, or cannot be written;
    VerificationError when a tenant log does not verify."""
    check_restore_target(home, password)
    for name in (IDENTITY_FILE, STORE_DIR):
        if os.path.lexists(home / name):
            raise KeystoreError(
                f"{home} holds {name} but no keystore: restore into a new or empty directory"
            )
    created_home = not home.exists()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    stage = Path(tempfile.mkdtemp(prefix=".restore-", dir=home))
    moved: list[Path] = []
    try:
        keystore = Keystore.create(
            stage / KEYSTORE_FILE,
            password,
            {
                "format": KEYSTORE_FORMAT,
                "identity": recovered.identity.to_secret_dict(),
                "tenants": {t.tenant_id.hex(): t.secrets.to_dict() for t in recovered.tenants},
                "peer_seed": os.urandom(32).hex(),
                INVITE_IDENTITIES_FIELD: keystore_field(recovered.invite_identities),
                RESTORED_KEY: initial_marks((t.tenant_id for t in recovered.tenants), now_ms()),
            },
            kdf=kdf,
        )
        write_private(stage / IDENTITY_FILE, recovered.identity.public().to_json().encode())
        with open_staged(stage, keystore) as staged:
            for tenant in recovered.tenants:
                rejected = staged.ingest(tenant.tenant_log).rejected
                if rejected:
                    raise VerificationError(
                        f"the tenant log of {tenant.name!r} in the recovery kit does not"
                        f" verify: {rejected[0].reason}"
                    )
        os.rename(stage / STORE_DIR, home / STORE_DIR)
        moved.append(home / STORE_DIR)
        for name in (IDENTITY_FILE, KEYSTORE_FILE):  # the keystore last: it makes a node
            os.link(stage / name, home / name)  # never replaces a file that appeared
            moved.append(home / name)
    except BaseException as exc:
        for path in reversed(moved):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if created_home:
            shutil.rmtree(home, ignore_errors=True)
        if isinstance(exc, OSError):
            raise KeystoreError(f"cannot restore into {home}: {exc.strerror or exc}") from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


__all__ = [
    "KEYSTORE_FILE",
    "KEYSTORE_FORMAT",
    "STORE_DIR",
    "build_restored_home",
    "check_new_node_password",
    "check_restore_target",
    "default_home",
    "is_initialized",
    "keystore_secret",
    "replace_keystore_secret",
]
