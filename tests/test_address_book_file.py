"""peers.json on disk: a damaged file is kept and named, never silently dropped; 0600."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from mindoo_p2p.address_book_file import load_address_book, save_address_book
from mindoo_p2p.net.address_book import AddressBook
from mindoo_p2p.net.peer_identity import peer_id_of

PEER = peer_id_of(bytes(range(32)))
ADDR = f"/ip4/192.0.2.7/tcp/4001/p2p/{PEER}"


def test_a_saved_book_loads_back_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    book = AddressBook()
    book.add(ADDR)
    save_address_book(tmp_path, book)
    path = tmp_path / "peers.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.peer_id for r in load_address_book(tmp_path).records()] == [PEER]


def test_a_missing_book_is_empty(tmp_path: Path) -> None:
    assert list(load_address_book(tmp_path).records()) == []


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 99, "peers": []}', b"\x00\xff" * 10, b""]
)
def test_a_damaged_book_is_kept_aside_and_named(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: a damaged peers.json started the daemon with no peers and no word, and the
    next save overwrote it. Now the file is moved aside, a warning names it, and saving a new
    book does not touch the kept copy."""
    path = tmp_path / "peers.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        book = load_address_book(tmp_path)
    assert list(book.records()) == []
    kept = tmp_path / "peers.json.damaged"
    assert kept.read_bytes() == content
    assert not path.exists()
    assert "peers.json.damaged" in caplog.text and "mindoo peers add" in caplog.text
    book.add(ADDR)
    save_address_book(tmp_path, book)
    assert kept.read_bytes() == content
    path.write_bytes(b"again damaged")
    load_address_book(tmp_path)
    assert (tmp_path / "peers.json.damaged.1").read_bytes() == b"again damaged"
