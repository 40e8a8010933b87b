"""AddressBook (validation, bounds, JSON), Backoff, and the dialer's schedule on a fake host."""

from __future__ import annotations

import itertools
import json
import os
import random

import pytest
import trio
import trio.testing

from mindoo_p2p.errors import DecodeError
from mindoo_p2p.net.address_book import (
    MAX_ADDRS_PER_PEER,
    MAX_ERROR_TEXT,
    AddressBook,
    Backoff,
    PeerRecord,
)
from mindoo_p2p.net.dialer import maintain_connections
from mindoo_p2p.net.host import DialError
from mindoo_p2p.net.peer_identity import (
    parse_dial_addr,
    parse_listen_addr,
    peer_id_of,
    peer_public_key,
)


def new_peer() -> str:
    return peer_id_of(os.urandom(32))


def addr_of(peer_id: str, port: int = 4001, host: str = "127.0.0.1") -> str:
    return f"/ip4/{host}/tcp/{port}/p2p/{peer_id}"


# -- peer ids and addresses ------------------------------------------------------------------


def test_peer_id_is_deterministic_and_embeds_the_public_key() -> None:
    from mindoo_p2p.crypto.signing import SigningKeyPair

    seed = bytes(range(32))
    assert peer_id_of(seed) == peer_id_of(seed)
    assert peer_id_of(seed).startswith("12D3KooW")
    assert peer_public_key(peer_id_of(seed)) == SigningKeyPair(seed).public_key
    with pytest.raises(ValueError):
        peer_id_of(b"short")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a multiaddr",
        "/ip4/127.0.0.1/tcp/4001",  # no peer id
        "/ip4/127.0.0.1/udp/4001/p2p/{peer}",
        "/ip4/127.0.0.1/tcp/0/p2p/{peer}",
        "/ip4/127.0.0.1/tcp/4001/ws/p2p/{peer}",
        "/ip4/127.0.0.1/tcp/4001/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # RSA-style
        "/ip4/127.0.0.1/tcp/4001/p2p/{peer}" + "/tcp/1" * 60,
    ],
)
def test_bad_dial_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dial_addr(text.format(peer=new_peer()))


def test_dial_address_splits_into_transport_and_peer() -> None:
    peer = new_peer()
    transport, named = parse_dial_addr(addr_of(peer))
    assert named == peer
    assert str(transport) == "/ip4/127.0.0.1/tcp/4001"
    assert str(parse_listen_addr("/ip6/::1/tcp/0")) == "/ip6/::1/tcp/0"
    with pytest.raises(ValueError):
        parse_listen_addr(addr_of(peer))


# -- AddressBook -------------------------------------------------------------------------------


def test_json_round_trip_keeps_everything() -> None:
    book = AddressBook()
    alice, bob = new_peer(), new_peer()
    book.add(addr_of(alice, 4001))
    book.add(addr_of(alice, 4002))
    book.add(addr_of(bob, 5001))
    book.record_success(alice, addr_of(alice, 4002), now=1_700_000_000.5)
    assert book.record_failure(bob, "connection refused") == 1
    assert book.record_failure(bob, "connection refused again") == 2

    text = book.to_json()
    again = AddressBook.from_json(text)
    assert again.records() == book.records()
    assert again.to_json() == text
    alice_record = again.get(alice)
    assert alice_record == PeerRecord(
        peer_id=alice,
        addrs=(addr_of(alice, 4002), addr_of(alice, 4001)),  # the one that worked leads
        last_connected=1_700_000_000.5,
        last_error=None,
        failures=0,
    )
    bob_record = again.get(bob)
    assert bob_record is not None
    assert (bob_record.failures, bob_record.last_error) == (2, "connection refused again")


def test_success_resets_failures() -> None:
    book = AddressBook()
    peer = new_peer()
    book.add(addr_of(peer))
    for _ in range(5):
        book.record_failure(peer, "down")
    book.record_success(peer, addr_of(peer), now=10.0)
    record = book.get(peer)
    assert record is not None and record.failures == 0 and record.last_error is None


def test_bounds_on_addresses_peers_and_error_text() -> None:
    book = AddressBook(max_peers=3)
    peer = new_peer()
    for port in range(4000, 4000 + MAX_ADDRS_PER_PEER + 5):
        book.add(addr_of(peer, port))
    addrs = book.addrs(peer)
    assert len(addrs) == MAX_ADDRS_PER_PEER
    assert addrs[0] == addr_of(peer, 4000)  # early addresses are kept, the last slot churns
    book.record_failure(peer, "x" * 10_000)
    record = book.get(peer)
    assert record is not None and record.last_error is not None
    assert len(record.last_error) == MAX_ERROR_TEXT

    good, bad = new_peer(), new_peer()
    book.add(addr_of(good))
    book.record_success(good, addr_of(good), now=100.0)
    book.add(addr_of(bad))
    book.record_failure(bad, "down")
    newcomer = new_peer()
    book.add(addr_of(newcomer))
    assert len(book) == 3
    assert good in book and newcomer in book
    assert bad not in book or peer not in book  # a never-connected peer was evicted


def test_record_success_refuses_an_address_of_another_peer() -> None:
    book = AddressBook()
    alice, bob = new_peer(), new_peer()
    book.add(addr_of(alice))
    with pytest.raises(ValueError):
        book.record_success(alice, addr_of(bob), now=1.0)
    assert book.record_failure(new_peer(), "unknown peer") == 0
    assert book.remove(alice) and not book.remove(alice)


def _valid_document() -> dict[str, object]:
    peer = new_peer()
    return {
        "version": 1,
        "peers": [
            {
                "peer_id": peer,
                "addrs": [addr_of(peer)],
                "last_connected": None,
                "last_error": None,
                "failures": 0,
            }
        ],
    }


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.update(version=2),
        lambda d: d.update(extra=1),
        lambda d: d.update(peers={}),
        lambda d: d["peers"].append(d["peers"][0]),  # duplicate peer
        lambda d: d["peers"][0].update(peer_id="12D3KooWnotreally"),
        lambda d: d["peers"][0].update(addrs=["/ip4/1.2.3.4/tcp/1/p2p/" + new_peer()]),
        lambda d: d["peers"][0].update(addrs="one"),
        lambda d: d["peers"][0].update(addrs=[d["peers"][0]["addrs"][0]] * 2),
        lambda d: d["peers"][0].update(addrs=[addr_of(new_peer(), p) for p in range(9)]),
        lambda d: d["peers"][0].update(failures=-1),
        lambda d: d["peers"][0].update(failures=True),
        lambda d: d["peers"][0].update(failures=10**9),
        lambda d: d["peers"][0].update(last_connected="yesterday"),
        lambda d: d["peers"][0].update(last_connected=float("nan")),
        lambda d: d["peers"][0].update(last_error="e" * 1000),
        lambda d: d["peers"][0].pop("failures"),
        lambda d: d["peers"][0].update(surprise=1),
    ],
)
def test_invalid_json_is_refused(corrupt: object) -> None:
    document = _valid_document()
    AddressBook.from_json(json.dumps(document))  # valid before corruption
    assert callable(corrupt)
    corrupt(document)
    with pytest.raises(DecodeError):
        AddressBook.from_json(json.dumps(document))


def test_non_json_and_oversized_input_are_refused() -> None:
    for text in ["", "{", "[]", "null", '{"version": 1}', "[" * 100_000]:
        with pytest.raises(DecodeError):
            AddressBook.from_json(text)
    with pytest.raises(DecodeError):
        AddressBook.from_json(" " * (5 * 1024 * 1024))
    document = {"version": 1, "peers": [None] * 2000}
    with pytest.raises(DecodeError):
        AddressBook.from_json(json.dumps(document))


# -- Backoff -----------------------------------------------------------------------------------


def test_backoff_grows_exponentially_within_bounds() -> None:
    backoff = Backoff(jitter=0.0)
    delays = [backoff.delay(failures) for failures in range(12)]
    assert delays[0] == 0.0
    assert delays[1:6] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[-1] == 300.0
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert backoff.delay(10**6) == 300.0  # huge counts neither overflow nor exceed the cap


def test_backoff_jitter_spreads_delays_but_respects_bounds() -> None:
    backoff = Backoff(jitter=0.2, rng=random.Random(42))
    samples = [backoff.delay(4) for _ in range(500)]
    assert all(6.4 <= s <= 8.0 for s in samples)
    assert len({round(s, 6) for s in samples}) > 100
    capped = [backoff.delay(50) for _ in range(200)]
    assert all(240.0 <= s <= 300.0 for s in capped)
    assert all(backoff.delay(1) >= 1.0 for _ in range(100))
    with pytest.raises(ValueError):
        Backoff(min_delay=0)
    with pytest.raises(ValueError):
        Backoff(min_delay=5, max_delay=1)
    with pytest.raises(ValueError):
        Backoff(jitter=1.0)


# -- the dialer's schedule, on a fake host and a mock clock ------------------------------------


class FakeHost:
    """Records dials; a peer is reachable only while it is in ``up``."""

    def __init__(self) -> None:
        self.peer_id = new_peer()
        self.up: set[str] = set()
        self.connected: set[str] = set()
        self.dials: list[tuple[float, str]] = []

    async def connect(self, addr: str) -> str:
        _, peer = parse_dial_addr(addr)
        self.dials.append((trio.current_time(), addr))
        await trio.sleep(0.01)
        if peer not in self.up:
            raise DialError(f"{addr}: connection refused")
        self.connected.add(peer)
        return peer

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected


async def test_dialer_backs_off_then_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    host = FakeHost()
    peer = new_peer()
    book = AddressBook()
    backoff = Backoff(min_delay=1.0, max_delay=8.0, jitter=0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: maintain_connections(host, book, [addr_of(peer)], backoff=backoff)
        )
        await trio.sleep(30)
        times = [t for t, _ in host.dials]
        gaps = [round(b - a) for a, b in itertools.pairwise(times)]
        # 1, 2, 4, 8 s between rounds, then capped at 8 s.
        assert gaps[:5] == [1, 2, 4, 8, 8], gaps
        assert max(gaps) == 8
        record = book.get(peer)
        assert record is not None and record.failures == len(times)

        host.up.add(peer)
        await trio.sleep(10)
        assert host.is_connected(peer)
        record = book.get(peer)
        assert record is not None and record.failures == 0
        dials_when_connected = len(host.dials)

        await trio.sleep(20)  # connected: no more dials
        assert len(host.dials) == dials_when_connected

        host.connected.discard(peer)  # the connection drops: redialed within a few seconds
        await trio.sleep(3)
        assert host.is_connected(peer)
        nursery.cancel_scope.cancel()
    assert all(addr == addr_of(peer) for _, addr in host.dials)


async def test_dialer_tries_every_address_and_skips_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost()
    peer = new_peer()
    book = AddressBook()
    book.add(addr_of(peer, 1111))
    book.add(addr_of(peer, 2222))
    book.add(addr_of(host.peer_id, 3333))  # our own address, e.g. learned from a peer
    host.up.add(peer)
    saved: list[str] = []
    with trio.move_on_after(5):
        await maintain_connections(host, book, on_change=lambda b: saved.append(b.to_json()))
    assert [addr for _, addr in host.dials] == [addr_of(peer, 1111)]
    assert saved and AddressBook.from_json(saved[-1]).get(peer) == book.get(peer)

    # The first address dies: the second one is tried in the same round and then leads.
    host.connected.clear()
    failing = FakeHost()
    failing.peer_id = host.peer_id
    failing.up.add(peer)

    async def refuse_first(addr: str) -> str:
        if addr.endswith(f"/1111/p2p/{peer}"):
            failing.dials.append((trio.current_time(), addr))
            raise DialError("refused")
        return await FakeHost.connect(failing, addr)

    failing.connect = refuse_first  # type: ignore[method-assign]
    with trio.move_on_after(5):
        await maintain_connections(failing, book)
    assert [addr for _, addr in failing.dials] == [addr_of(peer, 1111), addr_of(peer, 2222)]
    assert book.addrs(peer)[0] == addr_of(peer, 2222)


async def test_dialer_bounds_concurrent_dials(autojump_clock: trio.testing.MockClock) -> None:
    host = FakeHost()
    book = AddressBook()
    peers = [new_peer() for _ in range(10)]
    for peer in peers:
        book.add(addr_of(peer))
    active = 0
    peak = 0

    async def slow_connect(addr: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await trio.sleep(1)
        active -= 1
        raise DialError("slow and down")

    host.connect = slow_connect  # type: ignore[method-assign]
    with trio.move_on_after(3):
        await maintain_connections(host, book, max_concurrent_dials=3)
    assert peak == 3
    with pytest.raises(ValueError):
        await maintain_connections(host, book, max_concurrent_dials=0)


async def test_a_recently_connected_peer_is_redialed_within_seconds_after_a_long_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 120 s partition: exponential backoff alone waited up to 64 s after the heal."""
    host = FakeHost()
    peer = new_peer()
    book = AddressBook()
    host.up.add(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: maintain_connections(
                host,
                book,
                [addr_of(peer)],
                backoff=Backoff(jitter=0.0),
                wall_clock=trio.current_time,
            )
        )
        await trio.sleep(2)
        assert host.is_connected(peer)
        host.up.discard(peer)
        host.connected.discard(peer)  # the keepalive closed the dead path
        cut_at = trio.current_time()
        await trio.sleep(120)
        during = [t for t, _ in host.dials if t > cut_at]
        assert max(b - a for a, b in itertools.pairwise(during)) <= 2.1
        host.up.add(peer)
        healed_at = trio.current_time()
        while not host.is_connected(peer):
            await trio.sleep(0.1)
        assert trio.current_time() - healed_at <= 2.1
        nursery.cancel_scope.cancel()
