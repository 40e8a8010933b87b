"""Peer management (issue 10): names, remove, a list with state, address in use, last error
and failures; a node never holds its own address as a peer. Peers used to appear only as
52-character ids, with no way to remove one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import PASSWORD as CLI_PASSWORD
from cli_helpers import assert_one_line_error, mindoo
from helpers import eventually, running_daemon

from mindoo_p2p.address_book_file import ADDRESS_BOOK_FILE, load_address_book, save_address_book
from mindoo_p2p.commands import peer_list
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.errors import DecodeError
from mindoo_p2p.net.address_book import AddressBook
from mindoo_p2p.net.peer_identity import peer_id_of
from mindoo_p2p.node import Node

MakeNode = Callable[[str], Node]


def new_peer() -> str:
    return peer_id_of(os.urandom(32))


def addr_of(peer_id: str, port: int = 4001) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}"


def test_names_are_unique_valid_and_find_a_peer() -> None:
    book = AddressBook()
    laptop, phone = new_peer(), new_peer()
    book.add(addr_of(laptop))
    book.add(addr_of(phone))
    book.set_name(laptop, "laptop")
    assert book.find("laptop") == laptop and book.find(phone) == phone
    assert book.find(phone[:12]) == phone
    with pytest.raises(ValueError, match="already"):
        book.set_name(phone, "laptop")
    for bad in ("", " x", "x" * 65, "tab\there", phone):
        with pytest.raises(ValueError):
            book.set_name(phone, bad)
    with pytest.raises(LookupError, match="no peer 'tablet'"):
        book.find("tablet")
    with pytest.raises(LookupError):
        book.find("12D3Koo")  # too short a prefix to name anything
    again = AddressBook.from_json(book.to_json())
    assert again.get(laptop) == book.get(laptop)


def test_a_version_1_book_still_loads_and_is_written_as_version_2(tmp_path: Path) -> None:
    peer = new_peer()
    old = {
        "version": 1,
        "peers": [
            {
                "peer_id": peer,
                "addrs": [addr_of(peer)],
                "last_connected": 5.0,
                "last_error": None,
                "failures": 2,
            }
        ],
    }
    (tmp_path / ADDRESS_BOOK_FILE).write_text(json.dumps(old))
    book = load_address_book(tmp_path)
    record = book.get(peer)
    assert record is not None and record.failures == 2 and record.name is None
    book.set_name(peer, "mirror")
    save_address_book(tmp_path, book)
    written = json.loads((tmp_path / ADDRESS_BOOK_FILE).read_text())
    assert written["version"] == 2 and written["peers"][0]["name"] == "mirror"
    twice = json.loads(json.dumps(written))
    twice["peers"].append({**twice["peers"][0], "peer_id": (other := new_peer())})
    twice["peers"][1]["addrs"] = [addr_of(other)]
    with pytest.raises(DecodeError, match="two peers are called"):
        AddressBook.from_json(json.dumps(twice))


def test_a_node_never_holds_its_own_address() -> None:
    book = AddressBook()
    me = new_peer()
    book.add(addr_of(me))
    assert book.set_own_peer_id(me)  # added before the node knew its id: forgotten
    assert me not in book
    with pytest.raises(ValueError, match="own address"):
        book.add(addr_of(me, 5000))
    assert AddressBook.from_json(book.to_json()).own_peer_id == me


def test_cli_name_list_and_remove_without_a_daemon(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Node.init(home, CLI_PASSWORD, name="me", kdf=KdfProfile.TESTING).close()
    peer = new_peer()
    mindoo(home, "peers", "add", addr_of(peer)).ok()
    mindoo(home, "peers", "name", peer[:16], "laptop").ok()
    (row,) = mindoo(home, "peers", "list", json_output=True).ok().json()
    assert (row["name"], row["state"], row["failures"], row["addrs"]) == (
        "laptop",
        "disconnected",
        0,
        [addr_of(peer)],
    )
    assert mindoo(home, "peers", "list").ok().stdout.startswith(f"laptop  {peer}  disconnected")
    assert_one_line_error(mindoo(home, "peers", "name", "nobody", "x"), 1, "no peer 'nobody'")
    assert_one_line_error(mindoo(home, "peers", "name", "laptop", " bad"), 2, "invalid peer name")
    mindoo(home, "peers", "remove", "laptop").ok()
    assert mindoo(home, "peers", "list", json_output=True).ok().json() == []


async def test_the_daemon_lists_state_and_address_in_use_and_refuses_itself(
    make_node: MakeNode,
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.create_tenant("acme")
    bob.join(alice.invite(tenant, bob.public_identity()))
    async with running_daemon(alice) as a, running_daemon(bob) as b:
        with pytest.raises(ValueError, match="own address"):
            await a.add_peer(a.listen_addrs()[0])
        await b.add_peer(a.listen_addrs()[0])
        await eventually(lambda: a.peer_table.get(b.peer_id) is not None)
        b.name_peer(a.peer_id[:20], "alice")
        await eventually(lambda: peer_list(b.address_book, b.status()["peers"])[0]["connected"])
        (row,) = peer_list(b.address_book, b.status()["peers"])
        assert row["name"] == "alice" and row["state"] == "connected"
        assert row["address"] is not None and row["address"].endswith(a.peer_id)
        assert b.forget_peer("alice") == a.peer_id
        await eventually(lambda: b.host is not None and not b.host.is_connected(a.peer_id))
        assert a.peer_id not in b.address_book
