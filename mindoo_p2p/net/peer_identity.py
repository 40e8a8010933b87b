"""The node's libp2p identity (an Ed25519 key pair derived from a 32-byte seed), peer ids,
and peer addresses (TCP multiaddrs that name the peer: ``/ip4/HOST/tcp/PORT/p2p/PEER_ID``).

The seed is a private key. The caller keeps it in the node's encrypted keystore and passes it
in; this module does no file I/O and never logs or stores it.

Peer ids accepted from the outside (configuration, address book, a peer's messages) must be
Ed25519 identity peer ids ("12D3KooW..."): the base58 of the 38-byte identity multihash that
embeds the 32-byte public key. :func:`parse_peer_id` checks exactly that, so a stored peer id
has a bounded size and names the key that authenticates the connection.
"""

from __future__ import annotations

import base58
import multiaddr  # type: ignore[import-untyped]
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

PEER_SEED_SIZE = 32
# Identity multihash (0x00, length 36) of the protobuf PublicKey {Type: Ed25519, Data: 32 bytes}.
_ED25519_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
_ED25519_PEER_ID_SIZE = len(_ED25519_PEER_ID_PREFIX) + 32
MAX_PEER_ID_TEXT = 64
"""An Ed25519 peer id is 52 base58 characters; anything longer than this is refused unread."""
MAX_MULTIADDR_TEXT = 256
_DIAL_HOST_PROTOCOLS = frozenset({"ip4", "ip6", "dns", "dns4", "dns6"})
_LISTEN_HOST_PROTOCOLS = frozenset({"ip4", "ip6"})


def peer_key_pair(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair for ``seed`` (exactly 32 bytes); deterministic."""
    if not isinstance(seed, bytes | bytearray) or len(seed) != PEER_SEED_SIZE:
        raise ValueError(f"a peer identity seed is {PEER_SEED_SIZE} bytes")
    return create_new_key_pair(bytes(seed))


def peer_id_of_key_pair(key_pair: KeyPair) -> str:
    """The base58 peer id of ``key_pair``."""
    return ID.from_pubkey(key_pair.public_key).to_base58()


def peer_id_of(seed: bytes) -> str:
    """The base58 peer id ("12D3KooW...") of the identity derived from ``seed``."""
    return peer_id_of_key_pair(peer_key_pair(seed))


def parse_peer_id(text: str) -> str:
    """Return ``text`` if it is an Ed25519 identity peer id, else raise ``ValueError``."""
    peer_public_key(text)
    return text


def peer_public_key(peer_id: str) -> bytes:
    """The 32-byte Ed25519 public key embedded in ``peer_id``; ``ValueError`` if none."""
    if not isinstance(peer_id, str) or not 0 < len(peer_id) <= MAX_PEER_ID_TEXT:
        raise ValueError("not a peer id: wrong type or length")
    try:
        raw = base58.b58decode(peer_id.encode("ascii"))
    except ValueError as exc:
        raise ValueError("not a peer id: not base58") from exc
    if len(raw) != _ED25519_PEER_ID_SIZE or not raw.startswith(_ED25519_PEER_ID_PREFIX):
        raise ValueError("not an Ed25519 identity peer id")
    if base58.b58encode(raw).decode("ascii") != peer_id:
        raise ValueError("not a canonical peer id")
    return raw[len(_ED25519_PEER_ID_PREFIX) :]


def to_libp2p_id(peer_id: str) -> ID:
    """The py-libp2p `ID` of a validated peer id string."""
    return ID(base58.b58decode(parse_peer_id(peer_id).encode("ascii")))


def parse_dial_addr(text: str) -> tuple[multiaddr.Multiaddr, str]:
    """Split ``/ip4|ip6|dns*/HOST/tcp/PORT/p2p/PEER_ID`` into (transport address, peer id).

    Raises ``ValueError`` for anything else: a dial address must name the peer, so Noise can
    check that the listener really is that peer.
    """
    if not isinstance(text, str) or not 0 < len(text) <= MAX_MULTIADDR_TEXT:
        raise ValueError("a multiaddr is a non-empty string of at most 256 characters")
    try:
        addr = multiaddr.Multiaddr(text)
        names = [protocol.name for protocol in addr.protocols()]
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise ValueError(f"not a multiaddr: {text!r}") from exc
    if len(names) != 3 or names[0] not in _DIAL_HOST_PROTOCOLS or names[1:] != ["tcp", "p2p"]:
        raise ValueError(f"expected /ip4|ip6|dns/HOST/tcp/PORT/p2p/PEER_ID, got {text!r}")
    peer_id = parse_peer_id(str(addr.value_for_protocol("p2p")))
    port = int(str(addr.value_for_protocol("tcp")))
    if not 0 < port < 65536:
        raise ValueError(f"bad TCP port in {text!r}")
    transport_addr = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
    return transport_addr, peer_id


def parse_listen_addr(text: str) -> multiaddr.Multiaddr:
    """Parse ``/ip4|ip6/ADDRESS/tcp/PORT`` (``ValueError`` for anything else)."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_MULTIADDR_TEXT:
        raise ValueError("a multiaddr is a non-empty string of at most 256 characters")
    try:
        addr = multiaddr.Multiaddr(text)
        names = [protocol.name for protocol in addr.protocols()]
    except Exception as exc:
        raise ValueError(f"not a multiaddr: {text!r}") from exc
    if len(names) != 2 or names[0] not in _LISTEN_HOST_PROTOCOLS or names[1] != "tcp":
        raise ValueError(f"a listen address is /ip4|ip6/ADDRESS/tcp/PORT, got {text!r}")
    return addr
