"""The one py-libp2p release whose internals this package patches, checked on import.

`_swarm`, `_libp2p_stack` (the host), `_yamux_window` (Yamux) and `_gossip_pubsub` (GossipSub)
override private methods and attributes of py-libp2p; each imports this module first, so
another release fails loudly at import instead of misbehaving quietly.
"""

from __future__ import annotations

from importlib.metadata import version

SUPPORTED_LIBP2P_VERSION = "0.8.1"
_installed_libp2p = version("libp2p")
if _installed_libp2p != SUPPORTED_LIBP2P_VERSION:  # pragma: no cover - guards upgrades
    raise ImportError(
        f"mindoo_p2p.net patches py-libp2p {SUPPORTED_LIBP2P_VERSION} internals (inbound slot"
        f" release, dial policy, GossipSub admission, Yamux window release); found libp2p"
        f" {_installed_libp2p}: re-check the patches in mindoo_p2p/net/_swarm.py,"
        " _libp2p_stack.py, _gossip_pubsub.py and _yamux_window.py against the new release"
        " before changing the pin"
    )

__all__ = ["SUPPORTED_LIBP2P_VERSION"]
