"""Building the py-libp2p host of a `PeerHost` from its parts: TCP + Noise + Yamux, nothing else.

py-libp2p's `new_host` also offers TLS, SECIO and *plaintext* to any peer that asks; this host
is assembled by hand so that a connection is always authenticated and encrypted with Noise. It
serves ping (liveness) and no identify, runs no mDNS, UPnP or bootstrap, and its swarm and
upgrader are the patched ones of :mod:`._swarm`. The default `ConnectionConfig` waits 250 ms
for extra dials after the first one succeeds: ``max_connections_per_peer=1`` makes a loopback
connect take milliseconds.
"""

from __future__ import annotations

from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL_ID
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH_PROTOCOL_ID
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore
from libp2p.rcmgr import new_resource_manager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP

from . import _libp2p_pin  # noqa: F401  (refuses a py-libp2p release these patches do not fit)
from ._swarm import MindooSwarm, MindooUpgrader
from .host_config import HostConfig
from .inbound_policy import InboundPolicy


class QuietHost(BasicHost):
    """py-libp2p's `BasicHost` that never runs identify toward a peer: we neither serve
    identify (see `build_libp2p_host`) nor use what it learns (no address discovery; every
    stream negotiates its protocol itself), and asking peers that do not serve it only logs
    an error per connection."""

    def _should_identify_peer(self, peer_id: ID) -> bool:
        return False


def build_libp2p_host(key_pair: KeyPair, config: HostConfig) -> tuple[BasicHost, MindooSwarm]:
    """The py-libp2p host of identity ``key_pair`` (not running yet) and its patched swarm,
    whose upgrader admits every peer until `PeerHost.set_peer_gate` says otherwise."""
    peer_id = ID.from_pubkey(key_pair.public_key)
    peerstore = PeerStore()
    peerstore.add_key_pair(peer_id, key_pair)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    upgrader = MindooUpgrader(
        secure_transports_by_protocol={NOISE_PROTOCOL_ID: noise},
        muxer_transports_by_protocol={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )
    connection_config = ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=config.max_connections,
        min_connections=0,
        low_watermark=config.max_connections,
        high_watermark=config.max_connections,
        dial_timeout=config.dial_timeout,
    )
    swarm = MindooSwarm(
        peer_id,
        peerstore,
        upgrader,
        transports=[TCP()],
        retry_config=RetryConfig(max_retries=0),
        connection_config=connection_config,
    )
    swarm.inbound_policy = InboundPolicy(config.inbound)
    upgrader.swarm = swarm
    upgrader.peer_allowed = lambda _peer: True
    swarm.set_resource_manager(new_resource_manager())
    host = QuietHost(
        network=swarm,
        enable_mDNS=False,
        enable_upnp=False,
        bootstrap=None,
        disable_identify_address_discovery=True,
    )
    # Serve only what peers need: identify (and its push) would tell anyone who connects
    # every protocol this node speaks and its listen addresses. Ping stays (liveness).
    for unneeded in (IDENTIFY_PROTOCOL_ID, IDENTIFY_PUSH_PROTOCOL_ID):
        host.remove_stream_handler(unneeded)
    return host, swarm


__all__ = ["QuietHost", "build_libp2p_host"]
