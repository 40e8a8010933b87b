"""The node home's own hygiene: who may read and write it, and the derived ``identity.json``.

- **Permissions.** A home is the node's alone: the directory is kept 0700 and the files this
  module writes 0600. Opening a home that another user can *write* is refused (another account
  could swap the keystore or the store under the node); a home that others can merely read or
  enter is tightened to 0700, with a log line.
- **identity.json** holds this node's public identity (name and public keys), the file a user
  sends to a tenant admin. It is derived from the keystore, so it is checked on every open and
  rewritten from the keystore when it is missing, unreadable or names another identity; a
  damaged one is kept beside it as ``identity.json.damaged`` and the log says so. Nothing is
  lost either way: the keystore is the source of truth.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .errors import DecodeError, KeystoreError
from .identity import MAX_IDENTITY_FILE_SIZE, PublicIdentity

IDENTITY_FILE = "identity.json"
HOME_MODE = 0o700
FILE_MODE = 0o600
logger = logging.getLogger(__name__)


def secure_home(home: Path) -> None:
    """Refuse a home other users can write; tighten one they can read or enter to 0700."""
    info = home.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeystoreError(
            f"the node home {home} can be written by other users (mode {mode:o}): refusing to"
            f" open it; check nothing was changed, then make it yours alone (chmod 700 {home})"
        )
    if mode & 0o077 and info.st_uid == os.geteuid():
        os.chmod(home, HOME_MODE)
        logger.info("node home %s was mode %o; made it %o", home, mode, HOME_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically and durably, readable and writable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_identity_file(home: Path, identity: PublicIdentity) -> None:
    """Check ``HOME/identity.json`` against ``identity``; rewrite it when it is not it."""
    path = home / IDENTITY_FILE
    problem = _identity_file_problem(path, identity)
    if problem is None:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, FILE_MODE)
        return
    if path.exists():
        kept = path.with_name(path.name + ".damaged")
        os.replace(path, kept)
        logger.warning(
            "%s %s: rewrote it from the keystore (the old file is kept as %s)", path, problem, kept
        )
    write_private(path, identity.to_json().encode())


def _identity_file_problem(path: Path, identity: PublicIdentity) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "is missing"
    if len(data) > MAX_IDENTITY_FILE_SIZE:
        return "is too large"
    try:
        found = PublicIdentity.from_json(data.decode("utf-8", errors="replace"))
    except DecodeError as exc:
        return f"is damaged ({exc})"
    if found != identity:
        return "names another identity than this node's keystore"
    return None
