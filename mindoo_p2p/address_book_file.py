"""The node's address book on disk: ``peers.json`` in the node home, written atomically, 0600.

A ``peers.json`` that cannot be read (not JSON, not an address book, a field out of bounds) is
never overwritten: it is moved aside to ``peers.json.damaged`` (or ``peers.json.damaged.N``)
and a warning names the kept copy, so the daemon starts with an empty book and no peer address
is lost for good. A missing file is an empty book.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import MindooError
from .net.address_book import AddressBook

ADDRESS_BOOK_FILE = "peers.json"
FILE_MODE = 0o600
logger = logging.getLogger(__name__)


def load_address_book(home: Path) -> AddressBook:
    """The saved address book: empty when missing; when damaged, empty after the file was
    moved aside (see the module docstring)."""
    path = home / ADDRESS_BOOK_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AddressBook()
    except OSError as exc:
        raise MindooError(f"cannot read the address book {path}: {exc.strerror}") from None
    try:
        return AddressBook.from_json(data)
    except (MindooError, ValueError) as exc:
        kept = _move_aside(path)
        logger.warning(
            "the address book %s is damaged (%s): it was moved to %s and the node starts with"
            " no saved peers; add them again with 'mindoo peers add', or repair the file and"
            " move it back while the daemon is stopped",
            path,
            exc,
            kept,
        )
        return AddressBook()


def save_address_book(home: Path, book: AddressBook) -> None:
    """Write the book atomically (temporary file, fsync, rename), readable by its owner only."""
    path = home / ADDRESS_BOOK_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(book.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``NAME.damaged[.N]``; return the new path."""
    candidate = path.with_name(path.name + ".damaged")
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.damaged.{number}")
        number += 1
    os.replace(path, candidate)
    return candidate
