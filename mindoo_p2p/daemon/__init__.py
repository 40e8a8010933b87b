"""The node daemon: a `Node` kept in sync with its peers over libp2p.

`NodeDaemon` (in `node_daemon`) is the composition root; the policy lives in small parts with
their own tests: `peer_table` (penalties, bans, bounds), `scheduler` (the wake rules, sans-I/O),
`entry_events` (stored entries as events with their origin, bounded), `node_access` (the Node
serialised, long work off the event loop) and `gossip_bridge`.
"""

from .entry_events import EntryEvent, EntryEventQueue, Origin, Resync
from .gossip_bridge import GOSSIP_PENALTY, PUBLISH_QUEUE, GossipBridge
from .node_access import NodeAccess
from .node_daemon import (
    LOCK_FILE,
    SYNC_PROTOCOL,
    CommandRunner,
    DaemonError,
    NodeDaemon,
    daemon_lock,
    now_ms,
)
from .peer_table import (
    BAN_SECONDS,
    BAN_THRESHOLD,
    MAX_PEER_STATES,
    DatabaseSyncState,
    PeerState,
    PeerTable,
)
from .scheduler import (
    CONNECT_FOLLOWER_DELAY,
    FORWARD_DELAY,
    REPAIR_DELAY,
    SyncScheduler,
    run_wakes,
)

__all__ = [
    "BAN_SECONDS",
    "BAN_THRESHOLD",
    "CONNECT_FOLLOWER_DELAY",
    "FORWARD_DELAY",
    "GOSSIP_PENALTY",
    "LOCK_FILE",
    "MAX_PEER_STATES",
    "PUBLISH_QUEUE",
    "REPAIR_DELAY",
    "SYNC_PROTOCOL",
    "CommandRunner",
    "DaemonError",
    "DatabaseSyncState",
    "EntryEvent",
    "EntryEventQueue",
    "GossipBridge",
    "NodeAccess",
    "NodeDaemon",
    "Origin",
    "PeerState",
    "PeerTable",
    "Resync",
    "SyncScheduler",
    "daemon_lock",
    "now_ms",
    "run_wakes",
]
