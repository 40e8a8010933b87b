"""The node daemon: a `Node` kept in sync with its peers over libp2p.

`NodeDaemon` (in `node_daemon`) is the composition root; the policy lives in small parts with
their own tests: `peer_table` (penalties, bans, bounds), `scheduler` (the wake rules, sans-I/O),
`entry_events` (stored entries as events with their origin, bounded), `node_access` (the Node
serialised, long work off the event loop), `gossip_bridge`, `peer_workers` (a session worker per
connected peer), `sync_sessions` (both sides of a session), `stored_entries` (stored entries to
peers and subscribers), `peer_directory` (the address book, the peer commands, mDNS),
`connection_requests` (dials and disconnects asked for by callbacks), `held_ledger` (what peers
hold), `control_handlers` (the control socket's methods), `long_work`, `loop_thread` and
`home_lock` (one daemon per home).
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
