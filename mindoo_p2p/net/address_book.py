"""The address book: which peers this node knows how to reach, and how reaching them went.

`AddressBook` is pure data (no I/O): peer id -> known dial addresses, the last time a connection
succeeded, the last error, the count of failures since the last success and a name the user
gave it; and the node's own peer id, which it never holds as a peer. It serializes to
JSON; the caller persists that text atomically (write a temporary file, fsync, rename).

Everything is bounded and validated, on insert and on load: at most `MAX_PEERS` peers, at most
`MAX_ADDRS_PER_PEER` addresses each, every address a ``/ip4|ip6|dns/.../tcp/PORT/p2p/PEER_ID``
multiaddr whose peer id is the entry's, error texts truncated. JSON that breaks any rule raises
:class:`~mindoo_p2p.errors.DecodeError`.

`Backoff` is the redial policy: exponential with jitter between ``min_delay`` (1 s) and
``max_delay`` (5 min); a success resets the failure count, so the next delay starts over.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..errors import DecodeError
from .peer_identity import parse_dial_addr, parse_peer_id

FORMAT_VERSION = 2
"""Version 2 added a name per peer and the book's own peer id (``self``); version 1 (neither)
still loads."""
MAX_NAME = 64
MAX_PEERS = 1024
MAX_ADDRS_PER_PEER = 8
MAX_ADDR_TEXT = 256
MAX_ERROR_TEXT = 200
MAX_JSON_SIZE = 4 * 1024 * 1024
MAX_FAILURES = 1_000_000


def _validate_addr(addr: str, peer_id: str | None = None) -> str:
    """Return the peer id named by the dial address ``addr`` (``ValueError`` if invalid)."""
    _, named = parse_dial_addr(addr)
    if peer_id is not None and named != peer_id:
        raise ValueError(f"address {addr!r} names another peer than {peer_id}")
    return named


@dataclass(frozen=True)
class PeerRecord:
    """What the address book knows about one peer (immutable snapshot)."""

    peer_id: str
    addrs: tuple[str, ...] = ()
    """Dial addresses, best first (the last one that worked leads)."""
    last_connected: float | None = None
    """Wall-clock time (Unix seconds) of the last successful connection."""
    last_error: str | None = None
    failures: int = 0
    """Failed dial rounds since the last success."""
    name: str | None = None
    """A name the user gave the peer (`AddressBook.set_name`)."""

    def to_json(self) -> dict[str, object]:
        return {
            "peer_id": self.peer_id,
            "addrs": list(self.addrs),
            "last_connected": self.last_connected,
            "last_error": self.last_error,
            "failures": self.failures,
            "name": self.name,
        }

    @classmethod
    def from_json(cls, value: object, version: int = FORMAT_VERSION) -> PeerRecord:
        if not isinstance(value, dict):
            raise DecodeError("address book: a peer entry is not an object")
        fields = {"peer_id", "addrs", "last_connected", "last_error", "failures"}
        if version >= 2:
            fields.add("name")
        if set(value) != fields:
            raise DecodeError("address book: a peer entry has missing or unknown fields")
        name = value.get("name")
        if name is not None:
            try:
                validate_peer_name(name)
            except ValueError as exc:
                raise DecodeError(f"address book: {exc}") from None
        peer_id = value["peer_id"]
        addrs = value["addrs"]
        last_connected = value["last_connected"]
        last_error = value["last_error"]
        failures = value["failures"]
        try:
            if not isinstance(peer_id, str):
                raise ValueError("peer_id is not a string")
            parse_peer_id(peer_id)
            if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS_PER_PEER:
                raise ValueError("addrs is not a list of at most MAX_ADDRS_PER_PEER")
            for addr in addrs:
                if not isinstance(addr, str):
                    raise ValueError("an address is not a string")
                _validate_addr(addr, peer_id)
            if len(set(addrs)) != len(addrs):
                raise ValueError("duplicate addresses")
        except ValueError as exc:
            raise DecodeError(f"address book: invalid peer entry: {exc}") from exc
        if last_connected is not None and not (
            isinstance(last_connected, int | float)
            and not isinstance(last_connected, bool)
            and math.isfinite(last_connected)
            and last_connected >= 0
        ):
            raise DecodeError("address book: last_connected is not a time")
        if last_error is not None and (
            not isinstance(last_error, str) or len(last_error) > MAX_ERROR_TEXT
        ):
            raise DecodeError("address book: last_error is not a short string")
        if (
            not isinstance(failures, int)
            or isinstance(failures, bool)
            or not 0 <= failures <= MAX_FAILURES
        ):
            raise DecodeError("address book: failures is not a small count")
        return cls(
            peer_id=peer_id,
            addrs=tuple(addrs),
            last_connected=None if last_connected is None else float(last_connected),
            last_error=last_error,
            failures=failures,
            name=name,
        )


def validate_peer_name(name: object) -> str:
    """A peer name: 1-64 printable characters, no surrounding spaces, not a peer id."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_NAME
        or not name.isprintable()
        or name != name.strip()
    ):
        raise ValueError(
            f"invalid peer name {name!r}: 1-{MAX_NAME} printable characters, no leading or"
            " trailing spaces"
        )
    try:
        parse_peer_id(name)
    except ValueError:
        return name
    raise ValueError(f"invalid peer name {name!r}: it is a peer id")


@dataclass
class AddressBook:
    """Known peers and their dial addresses; bounded, validated, JSON-serializable."""

    max_peers: int = MAX_PEERS
    _peers: dict[str, PeerRecord] = field(default_factory=dict, repr=False)
    own_peer_id: str | None = None
    """This node's own peer id, once known (the daemon sets it): `add` refuses it."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_peers <= MAX_PEERS:
            raise ValueError(f"max_peers must be in 1..{MAX_PEERS}")

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def peers(self) -> list[str]:
        """Known peer ids, in insertion order."""
        return list(self._peers)

    def get(self, peer_id: str) -> PeerRecord | None:
        return self._peers.get(peer_id)

    def addrs(self, peer_id: str) -> tuple[str, ...]:
        record = self._peers.get(peer_id)
        return record.addrs if record is not None else ()

    def records(self) -> list[PeerRecord]:
        return list(self._peers.values())

    # -- updates ------------------------------------------------------------------------------

    def add(self, addr: str) -> str:
        """Learn the dial address ``addr`` (``.../p2p/PEER_ID``); return its peer id.

        A new address goes last. When a peer already has `MAX_ADDRS_PER_PEER` addresses the
        last one is dropped; when the book is full, the least useful peer is evicted (never
        connected or longest ago, most failures). Raises ``ValueError`` for a bad address.
        """
        peer_id = _validate_addr(addr)
        if peer_id == self.own_peer_id:
            raise ValueError(f"{addr} is this node's own address, not a peer's")
        record = self._peers.get(peer_id)
        if record is None:
            if len(self._peers) >= self.max_peers:
                self._evict_one()
            self._peers[peer_id] = PeerRecord(peer_id=peer_id, addrs=(addr,))
        elif addr not in record.addrs:
            kept = record.addrs[: MAX_ADDRS_PER_PEER - 1]
            self._peers[peer_id] = replace(record, addrs=(*kept, addr))
        return peer_id

    def add_all(self, addrs: Iterable[str]) -> list[str]:
        return [self.add(addr) for addr in addrs]

    def remove(self, peer_id: str) -> bool:
        """Forget ``peer_id``; True if it was known."""
        return self._peers.pop(peer_id, None) is not None

    def set_own_peer_id(self, peer_id: str) -> bool:
        """Remember this node's own peer id and forget any entry of it (a node never is its
        own peer); True when one was forgotten."""
        parse_peer_id(peer_id)
        self.own_peer_id = peer_id
        return self.remove(peer_id)

    def set_name(self, peer_id: str, name: str | None) -> None:
        """Name a known peer (None: remove its name). ``ValueError`` for a bad name or one
        another peer has, ``KeyError`` for an unknown peer."""
        record = self._peers.get(peer_id)
        if record is None:
            raise KeyError(peer_id)
        if name is not None:
            validate_peer_name(name)
            if any(r.name == name and r.peer_id != peer_id for r in self._peers.values()):
                raise ValueError(f"another peer is called {name!r} already")
        self._peers[peer_id] = replace(record, name=name)

    def find(self, text: str) -> str:
        """The peer ``text`` names: its name, its peer id, or a unique prefix of its id of
        at least 8 characters. ``LookupError`` naming the problem otherwise."""
        for record in self._peers.values():
            if record.name == text or record.peer_id == text:
                return record.peer_id
        matches = [p for p in self._peers if len(text) >= 8 and p.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise LookupError(f"{text!r} names {len(matches)} peers: give more of the peer id")
        raise LookupError(f"no peer {text!r} in the address book (see 'mindoo peers list')")

    def record_success(self, peer_id: str, addr: str, now: float) -> None:
        """A connection to ``peer_id`` through ``addr`` succeeded at wall-clock ``now``.

        Resets the failure count and moves ``addr`` to the front. A peer not in the book (it
        was removed while the dial ran) stays out.
        """
        _validate_addr(addr, peer_id)
        record = self._peers.get(peer_id)
        if record is None:
            return
        others = tuple(a for a in record.addrs if a != addr)
        self._peers[peer_id] = replace(
            record,
            addrs=(addr, *others)[:MAX_ADDRS_PER_PEER],
            last_connected=now,
            last_error=None,
            failures=0,
        )

    def record_failure(self, peer_id: str, error: str) -> int:
        """A dial round to ``peer_id`` failed with ``error``; return the new failure count."""
        record = self._peers.get(peer_id)
        if record is None:
            return 0
        failures = min(record.failures + 1, MAX_FAILURES)
        self._peers[peer_id] = replace(record, last_error=_short(error), failures=failures)
        return failures

    def _evict_one(self) -> None:
        def usefulness(record: PeerRecord) -> tuple[float, int]:
            return (record.last_connected or 0.0, -record.failures)

        victim = min(self._peers.values(), key=usefulness)
        del self._peers[victim.peer_id]

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Canonical JSON text of the whole book."""
        document = {
            "version": FORMAT_VERSION,
            "self": self.own_peer_id,
            "peers": [record.to_json() for record in self._peers.values()],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, max_peers: int = MAX_PEERS) -> AddressBook:
        """Parse and validate JSON from `to_json`; :class:`DecodeError` on anything else."""
        if len(text) > MAX_JSON_SIZE:
            raise DecodeError("address book: file too large")
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"address book: not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise DecodeError("address book: not an address book document")
        version = document.get("version")
        if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
            raise DecodeError(f"address book: unsupported version {version!r}")
        expected = {"version", "peers"} | ({"self"} if version >= 2 else set())
        if set(document) != expected:
            raise DecodeError("address book: not an address book document")
        entries = document["peers"]
        if not isinstance(entries, list) or len(entries) > max_peers:
            raise DecodeError(f"address book: peers is not a list of at most {max_peers}")
        book = cls(max_peers=max_peers)
        own = document.get("self")
        if own is not None:
            try:
                if not isinstance(own, str):
                    raise ValueError("not a string")
                parse_peer_id(own)
            except ValueError as exc:
                raise DecodeError(f"address book: 'self' is not a peer id: {exc}") from None
            book.own_peer_id = own
        names: set[str] = set()
        for entry in entries:
            record = PeerRecord.from_json(entry, version)
            if record.name is not None:
                if record.name in names:
                    raise DecodeError(f"address book: two peers are called {record.name!r}")
                names.add(record.name)
            if record.peer_id in book._peers:
                raise DecodeError(f"address book: duplicate peer {record.peer_id}")
            book._peers[record.peer_id] = record
        return book


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


class Backoff:
    """Exponential redial delays with jitter.

    ``delay(failures)`` is 0 for 0 failures; otherwise
    ``min_delay * multiplier ** (failures - 1)`` capped at ``max_delay``, then reduced by a
    random fraction of up to ``jitter`` (so peers that failed together do not redial
    together), and never below ``min_delay``.
    """

    def __init__(
        self,
        min_delay: float = 1.0,
        max_delay: float = 300.0,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < min_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= max_delay")
        if multiplier < 1 or not 0 <= jitter < 1:
            raise ValueError("need multiplier >= 1 and 0 <= jitter < 1")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next dial after ``failures`` failures in a row."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 64)  # bounded: multiplier**64 already exceeds any cap
        base = min(self.max_delay, self.min_delay * self.multiplier**exponent)
        jittered = base * (1.0 - self.jitter * self._rng.random())
        return max(self.min_delay, jittered)
