"""The node's address book on disk: ``peers.json`` in the node home, written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import MindooError
from .net.address_book import AddressBook

ADDRESS_BOOK_FILE = "peers.json"
logger = logging.getLogger(__name__)


def load_address_book(home: Path) -> AddressBook:
    """The saved address book (empty when missing; an unreadable one is logged and ignored)."""
    path = home / ADDRESS_BOOK_FILE
    if path.exists():
        try:
            return AddressBook.from_json(path.read_bytes())
        except (MindooError, ValueError, OSError) as exc:
            logger.warning("ignoring unreadable address book %s: %s", path, exc)
    return AddressBook()


def save_address_book(home: Path, book: AddressBook) -> None:
    path = home / ADDRESS_BOOK_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(book.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
