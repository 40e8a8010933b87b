"""What one sync session did, per database and in total (`SyncReport`, `DatabaseReport`): kept
up to date by the state machines after every frame, read by the daemon's status and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class DatabaseReport:
    """What one session did for one database, seen from one side."""

    database: str
    bulk: bool = False
    """The bulk catch-up (index paging) was used."""
    received: int = 0
    """Entries received from the peer and newly stored here."""
    sent: int = 0
    """Entries sent to the peer (fetched by it, or pushed to it)."""
    rejected: int = 0
    """Entries from the peer that failed verification."""
    refused: int = 0
    """Authentic entries from the peer that this node did not accept."""
    unavailable: int = 0
    """Ids we wanted that the peer did not deliver."""
    round_trips: int = 0
    """Requests answered (reconciliation, index pages and fetches)."""
    recon_rounds: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Progress (initiator; kept up to date after every frame received):
    peer_items: int = 0
    """Entries the peer holds, as its database list said at the start."""
    local_items: int = 0
    """Entries this node held at the start."""
    lacking: int = 0
    """Ids reconciliation (or the peer's index) showed we lack, not received yet."""
    peer_lacking: int = 0
    """Ids reconciliation showed the peer lacks, not sent yet."""
    settled: bool = False
    """Reconciliation of this database finished: ``lacking`` is all we lack."""
    alike: bool = False
    """(Version 3) both sides' summaries gave this database the same count and fingerprint:
    in sync without reconciling (``settled`` too at the initiator)."""

    @property
    def outstanding(self) -> int:
        """What we know we still lack from the peer: ``lacking``, and until reconciliation
        settles at least what the peer holds beyond what we hold and received."""
        if self.settled:
            return self.lacking
        beyond = self.peer_items - self.local_items - self.received - self.lacking
        return self.lacking + max(0, beyond)


@dataclass(slots=True)
class SyncReport:
    """What one session did, per database. Session totals include the handshake frames."""

    tenant_id: bytes
    role: str
    databases: dict[str, DatabaseReport] = field(default_factory=dict)
    current_database: str | None = None
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    elapsed_seconds: float = 0.0
    peer_added: int = 0
    """(Initiator) entries our pushes added at the peer, as the peer says."""
    peer_refused: int = 0
    """(Initiator) entries of our pushes the peer did not accept, as the peer says."""
    protocol_version: int = 0
    """The sync protocol version the session spoke (the initiator's HELLO; 0 before it)."""
    recon_round_trips: int = 0
    """(Initiator) reconciliation round trips on the session's critical path: the scopes
    reconcile side by side, so this is the longest chain of replies waited for, not the sum
    of every database's ``recon_rounds``."""

    def database(self, name: str) -> DatabaseReport:
        found = self.databases.get(name)
        if found is None:
            found = self.databases[name] = DatabaseReport(name)
        return found

    @property
    def received(self) -> int:
        return sum(each.received for each in self.databases.values())

    @property
    def sent(self) -> int:
        return sum(each.sent for each in self.databases.values())

    @property
    def rejected(self) -> int:
        return sum(each.rejected for each in self.databases.values())

    @property
    def round_trips(self) -> int:
        return sum(each.round_trips for each in self.databases.values())
