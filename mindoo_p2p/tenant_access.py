"""A tenant's access work: who may write (members, devices, revocation), on this node.

`TenantAccess` holds the tenant's membership snapshot (`MembershipLog`, immutable once
published: the admission pipeline builds the next one on a copy and `Node.ingest` or the
writer's commit publishes it after the commit), brings it up to date with the stored tenant
log when another process that has the home open wrote to it (`refresh_membership`), writes
tenant-log records (admin or user signed) as drafts through the `EntryWriter`, and enforces
revocations on the store. It knows nothing of keys beyond the
membership key that seals its records (key work lives in `tenant_keys`), and nothing of the
node: its collaborators are the store, the writer and the ingest function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import admission
from .chains import ForkPoint
from .crypto import SigningKeyPair
from .device_request import DeviceRequest
from .entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from .errors import DecodeError, MindooError, MissingKeyError, NotFoundError, VerificationError
from .identity import PublicIdentity, UserIdentity, fingerprint_of
from .keyring import MEMBERSHIP_KEY, TenantKey
from .membership import Member, MembershipLog
from .membership_records import (
    DeviceEnrolment,
    DeviceRevocation,
    KeyAnnouncement,
    MembershipAction,
    MembershipRecord,
    Revocation,
    TenantLogRecord,
    decode_tenant_log_record,
)
from .store import EntryStore
from .tenant_collaborators import EntryWriter, Ingest
from .tenant_secrets import TenantSecrets
from .writer import Draft


@dataclass(frozen=True, slots=True)
class RevocationPlan:
    """A revocation about to be written, and what its author should be warned of."""

    revocation: Revocation
    warnings: tuple[str, ...]
    """Gaps and forks: a cut above the end of the unbroken chain held here, entries stored
    above a gap, a fork."""


class TenantAccess:
    """Members, devices and revocation of one tenant. Made by `Tenant`."""

    def __init__(
        self,
        secrets: TenantSecrets,
        *,
        identity: UserIdentity,
        store: EntryStore,
        writer: EntryWriter,
        ingest: Ingest,
        forget_document: Callable[[str, bytes], None],
    ) -> None:
        self._secrets = secrets
        self._identity = identity
        self._store = store
        self._writer = writer
        self._ingest = ingest
        self._forget_document = forget_document
        self._membership = MembershipLog(secrets.tenant_id, secrets.admin_key)
        self._membership_entries: dict[bytes, Entry] = {}
        self._membership_log_seq = 0
        """The tenant log's last feed sequence when the snapshot was rebuilt from the store."""
        self._forks_seen: tuple[ForkPoint, ...] = tuple(store.forks(secrets.tenant_id))
        """The forks the store had when `forget_forked` last looked (after every write that
        this process made or ingested): an immutable snapshot, `published_view` reads it."""
        self._enforced: tuple[MembershipLog, int] | None = None
        """The membership snapshot and its `cuts_revision` that `enforce_revocations` last
        brought the store in line with."""

    @property
    def tenant_id(self) -> bytes:
        return self._secrets.tenant_id

    @property
    def name(self) -> str:
        return self._secrets.name

    # -- the membership snapshot -------------------------------------------------------------
    @property
    def membership(self) -> MembershipLog:
        """The tenant's current membership: an immutable snapshot (never mutated once
        published; `publish_membership` replaces it), safe to read from any thread."""
        return self._membership

    def publish_membership(self, membership: MembershipLog) -> None:
        """Make ``membership`` the current snapshot: after the entries that built it are
        committed (`Node.ingest`), or when rebuilt from the store."""
        if membership.tenant_id != self.tenant_id:
            raise ValueError("a membership log of another tenant")
        self._membership = membership

    def publish_committed(self, membership: MembershipLog, log_entries: int) -> None:
        """Publish the snapshot a commit built from ``log_entries`` tenant-log records of
        this tenant (`Node.ingest`, an own write). When the stored log grew by exactly those
        records since the snapshot was last brought up to date, it is up to date again (the
        next `refresh_membership` rebuilds nothing); when another process wrote to the log
        in between, the next refresh rebuilds from the store."""
        expected = self._membership_log_seq + log_entries
        self.publish_membership(membership)
        if self._store.last_seq(self.tenant_id, TENANT_LOG) == expected:
            self._membership_log_seq = expected

    def view(self) -> admission.TenantView:
        """What the admission pipeline checks this tenant's entries against (a snapshot):
        membership, membership keys and the forks the store recorded."""
        return admission.TenantView.of(
            self.tenant_id,
            self._membership,
            self._membership_keys(),
            self._store.forks(self.tenant_id),
        )

    def published_view(self) -> admission.TenantView:
        """`view` from published snapshots only, without reading the store: the membership
        snapshot and the forks as last seen after a write (`forget_forked`); no membership
        keys (for entries that are not tenant-log records: gossip). Safe from any thread."""
        return admission.TenantView.of(self.tenant_id, self._membership, (), self._forks_seen)

    def _membership_keys(self) -> list[tuple[bytes, bytes]]:
        return [(k.key_id, k.secret) for k in self._secrets.keyring if k.name == MEMBERSHIP_KEY]

    def load_membership(self) -> None:
        """Rebuild membership state from the tenant log in the store (retracted records
        left out), applying records until no more apply (a record stored before what it
        builds on applies on a later pass): the admission pipeline's rule."""
        self._membership_log_seq = self._store.last_seq(self.tenant_id, TENANT_LOG)
        stored = [
            admission.trust_stored(e) for e in self._store.iter_entries(self.tenant_id, TENANT_LOG)
        ]
        empty = admission.TenantView.of(
            self.tenant_id,
            MembershipLog(self.tenant_id, self._secrets.admin_key),
            self._membership_keys(),
        )
        self.publish_membership(admission.apply_tenant_log(empty, stored).membership)

    def refresh_membership(self) -> None:
        """Bring the snapshot up to date with the stored tenant log when it grew since it was
        rebuilt (another process that has the home open, the CLI or a script, wrote to it),
        then retract what revocations new to this process no longer accept. One read when
        nothing changed."""
        if self._store.last_seq(self.tenant_id, TENANT_LOG) != self._membership_log_seq:
            self.load_membership()
        if not self._store.readonly:
            self.enforce_new_revocations()

    # -- members -----------------------------------------------------------------------------
    def members(self) -> list[Member]:
        return self._membership.members()

    def member_name(self, signing_key: bytes) -> str | None:
        if signing_key == self._secrets.admin_key:
            return "(tenant admin)"
        membership = self._membership
        for member in membership.members():
            if member.identity.signing_key == signing_key:
                return member.identity.name
        device = membership.device(signing_key)
        if device is not None:
            user = membership.member(device.user_key)
            user_name = user.identity.name if user is not None else "?"
            return f"{user_name} ({device.identity.name})"
        return None

    def add_member(self, identity: PublicIdentity, role: str = "member") -> Entry:
        return self.append_record(MembershipRecord(MembershipAction.ADD, identity, role))

    def revoke_member(
        self,
        identity: PublicIdentity,
        *,
        accept_through: int | None = None,
        accept_entry: bytes | None = None,
        with_records: Sequence[TenantLogRecord] = (),
    ) -> Entry:
        """See `Tenant.revoke_member`; ``with_records`` are written in the same batch, after
        the revocation (the membership key's rotation)."""
        plan = self.revocation_plan(
            identity, accept_through=accept_through, accept_entry=accept_entry
        )
        return self._append_records([plan.revocation, *with_records])

    def revocation_plan(
        self,
        identity: PublicIdentity,
        *,
        accept_through: int | None = None,
        accept_entry: bytes | None = None,
    ) -> RevocationPlan:
        """The revocation `revoke_member` would write, and what to warn about (gaps)."""
        membership = self._membership
        if membership.member(identity.signing_key) is None:
            raise NotFoundError(f"{identity} is not a member of tenant {self.name!r}")
        if accept_through is not None and accept_entry is not None:
            raise ValueError("name the cut by sequence number or by entry id, not both")
        key = identity.signing_key
        warnings: list[str] = []
        seqs: dict[bytes, int] = {}
        ids: dict[bytes, bytes | None] = {}
        seqs[key], ids[key] = self._cut(key, accept_through, accept_entry, warnings)
        for device in membership.devices(key):  # every device of the member, at what we hold
            device_key = device.identity.signing_key
            if accept_through is None and accept_entry is None:
                seqs[device_key], ids[device_key] = self._cut(device_key, None, None, warnings)
            else:
                seqs[device_key], ids[device_key] = 0, None
        return RevocationPlan(Revocation.of(key, seqs, ids), tuple(warnings))

    def holders_except(self, excluded: set[bytes]) -> list[PublicIdentity]:
        """Every current member (mirrors too) and active device, but ``excluded`` signing
        keys: who must receive a new membership key version."""
        membership = self._membership
        found = [m.identity for m in membership.members() if m.active]
        found += [d.identity for d in membership.devices()]
        return [
            who
            for who in found
            if who.signing_key not in excluded and membership.is_member(who.signing_key)
        ]

    def signing_keys_of(self, identity: PublicIdentity) -> set[bytes]:
        """The member's signing key and those of its devices."""
        devices = self._membership.devices(identity.signing_key)
        return {identity.signing_key, *(d.identity.signing_key for d in devices)}

    def _cut(
        self,
        signing_key: bytes,
        accept_through: int | None,
        accept_entry: bytes | None,
        warnings: list[str],
    ) -> tuple[int, bytes | None]:
        """The last author_seq (and entry id) a revocation of ``signing_key`` accepts: by
        default the end of its contiguous, fork-free chain here; or ``accept_through``; or the
        entry ``accept_entry``. Gaps and forks are added to ``warnings``."""
        tenant_id = self.tenant_id
        head_seq, head_id = self._store.chain_head(tenant_id, signing_key)
        highest = self._store.next_author_seq(tenant_id, signing_key) - 1
        who = self.member_name(signing_key) or signing_key.hex()[:16]
        fork = self._store.fork_of(tenant_id, signing_key)
        if fork is not None:
            warnings.append(f"{who} forked at #{fork.seq}: its entries from there on are withdrawn")
        if accept_entry is not None:
            entry = self._store.get(accept_entry)
            if entry is None or entry.tenant_id != tenant_id or entry.author != signing_key:
                raise NotFoundError(
                    f"entry {accept_entry.hex()[:16]} is not an entry of {who} stored here"
                )
            seq: int = entry.author_seq
            entry_id: bytes | None = entry.id
        elif accept_through is not None:
            if not isinstance(accept_through, int) or accept_through < 0:
                raise ValueError("accept_through must be an int >= 0")
            seq = accept_through
            held = self._store.ids_at(tenant_id, signing_key, seq) if seq else []
            entry_id = held[0] if len(held) == 1 else None
        else:
            seq, entry_id = head_seq, head_id
        if seq > head_seq:
            warnings.append(
                f"{who}: this node holds #{head_seq} as the end of an unbroken chain, the cut"
                f" is at #{seq}: entries #{head_seq + 1}..#{seq} that are missing here will be"
                " accepted wherever they arrive (sync first, or cut lower)"
            )
        if highest > max(seq, head_seq):
            warnings.append(
                f"{who}: entries up to #{highest} are stored, above a gap or a fork after"
                f" #{head_seq}; the revocation does not accept them"
            )
        return seq, entry_id

    # -- devices -----------------------------------------------------------------------------
    def enroll_device(self, request: DeviceRequest) -> Entry:
        """See `Tenant.enroll_device`."""
        if not isinstance(request, DeviceRequest):
            raise TypeError(
                "enroll_device takes the device's DeviceRequest (made on the device with"
                " Node.device_request), which proves that the device holds its key"
            )
        me = self._identity.signing
        membership = self._membership
        if membership.member(me.public_key) is None:
            raise VerificationError(
                f"this node is not a member of tenant {self.name!r} (a device cannot enroll"
                " devices: enroll from the user's first node)"
            )
        if request.user_key != me.public_key:
            raise VerificationError(
                f"this device request asks to be a device of {fingerprint_of(request.user_key)},"
                f" not of this node's user {self._identity.public()} in tenant {self.name!r}"
                " (the device asks with your identity in this tenant: 'mindoo whoami --tenant"
                f" {self.name} --out FILE')"
            )
        request.check()
        device = request.device
        if membership.member(device.signing_key) is not None:
            raise VerificationError(
                f"{device} cannot be enrolled as a device: its key is a member's"
            )
        known = membership.device(device.signing_key)
        if known is not None and known.user_key != me.public_key:
            raise VerificationError(f"{device} is enrolled already as another user's device")
        if known is not None and not known.active:
            raise VerificationError(
                f"{device} cannot be enrolled again after its revocation: the device needs a"
                " new identity"
            )
        return self.append_record(DeviceEnrolment.of(request), author=me)

    def revoke_device(
        self,
        device_key: bytes,
        *,
        accept_through: int | None = None,
        with_records: Sequence[TenantLogRecord] = (),
    ) -> Entry:
        """See `Tenant.revoke_device`; ``with_records`` (the membership key's rotation) are
        written with it when the admin key signs it (on the admin's node)."""
        device = self._membership.device(device_key)
        if device is None:
            raise NotFoundError(f"{device_key.hex()[:16]} is not a device in tenant {self.name!r}")
        seq, entry_id = self._cut(device_key, accept_through, None, [])
        record = DeviceRevocation(device.user_key, device_key, seq, entry_id)
        me = self._identity.signing
        if self._secrets.admin_seed is None and me.public_key == device.user_key:
            return self.append_record(record, author=me)
        return self._append_records([record, *with_records])

    # -- revocation --------------------------------------------------------------------------
    def enforce_new_revocations(self) -> list[Entry]:
        """`enforce_revocations` when the revocations changed since it last ran, else nothing
        (one comparison of the cuts: cheap enough to call after every ingest)."""
        membership = self._membership
        if self._enforced == (membership, membership.cuts_revision):
            return []
        return self.enforce_revocations()

    def enforce_revocations(self) -> list[Entry]:
        """See `Tenant.enforce_revocations`."""
        retracted: list[Entry] = []
        self.check_cut_entries(None)
        while True:
            stored = self._store.authors(self.tenant_id)
            newly: list[Entry] = []
            membership = self._membership
            for key, cut in sorted(membership.cuts().items()):
                if stored.get(key, 0) > cut:
                    newly += self._store.retract_authored_after(self.tenant_id, key, cut)
            if not newly:
                self._enforced = (membership, membership.cuts_revision)
                return retracted
            retracted += newly
            for entry in newly:
                self._forget_document(entry.database, entry.document_id)
            if not any(entry.database == TENANT_LOG for entry in newly):
                continue
            self.load_membership()  # a retracted membership record changes who may write

    def check_cut_entries(self, entries: list[Entry] | None) -> list[Entry]:
        """Record a fork for every revoked key that has an entry at its cut's sequence number
        other than the entry the cut names (`chains` rule (c)); ``entries``: only where those
        (just stored) land, None: every cut. Returns the entries that withdrew."""
        points = self._membership.cut_points()
        if entries is not None:
            points = {
                e.author: points[e.author]
                for e in entries
                if e.author in points and points[e.author].names_another(e.author_seq, e.id)
            }
        forked: list[tuple[bytes, int]] = []
        for key, point in sorted(points.items()):
            if point.entry_ids and point.seq > 0:
                held = self._store.ids_at(self.tenant_id, key, point.seq)
                if any(point.names_another(point.seq, entry_id) for entry_id in held):
                    forked.append((key, point.seq))
        return self._settle_forks(forked)

    def _settle_forks(self, forked: list[tuple[bytes, int]]) -> list[Entry]:
        withdrawn: list[Entry] = []
        for key, seq in forked:
            known = self._store.fork_of(self.tenant_id, key)
            if known is not None and known.seq <= seq:
                continue
            withdrawn += self._store.entries_of_author_from(self.tenant_id, key, seq)
            self._store.record_fork(self.tenant_id, key, seq)
        self.forget_withdrawn(withdrawn)
        return withdrawn

    def forget_withdrawn(self, entries: list[Entry]) -> None:
        """Drop the cached documents that held ``entries`` (now withdrawn); reload membership
        when a tenant-log record is among them."""
        for entry in entries:
            self._forget_document(entry.database, entry.document_id)
        if any(entry.database == TENANT_LOG for entry in entries):
            self.load_membership()

    def forget_forked(self) -> list[Entry]:
        """After a write: when the store recorded new forks in this tenant (it withdraws the
        entries inside its write transaction), drop the cached documents they touched."""
        forks = tuple(self._store.forks(self.tenant_id))
        if forks == self._forks_seen:
            return []
        seen = {fork.author: fork.seq for fork in self._forks_seen}
        self._forks_seen = forks
        withdrawn: list[Entry] = []
        for fork in forks:
            if seen.get(fork.author) != fork.seq:
                withdrawn += self._store.entries_of_author_from(
                    self.tenant_id, fork.author, fork.seq
                )
        self.forget_withdrawn(withdrawn)
        return withdrawn

    # -- tenant-log records ------------------------------------------------------------------
    def append_record(self, record: TenantLogRecord, author: SigningKeyPair | None = None) -> Entry:
        """Seal and store a tenant-log record now, signed by the admin key (or ``author``),
        and return its entry. Not inside a write batch (the entry exists once the batch
        commits): use `write_record` there."""
        if self._writer.current_batch is not None:
            raise MindooError(
                "this tenant-log change returns its stored entry: make it outside a write batch"
            )
        stored: list[Entry] = []
        self.write_record(record, author, on_sealed=stored.append)
        return stored[0]

    def _append_records(self, records: Sequence[TenantLogRecord]) -> Entry:
        """Seal and store admin-signed records in one write batch; return the first's entry."""
        if self._writer.current_batch is not None:
            raise MindooError(
                "this tenant-log change returns its stored entry: make it outside a write batch"
            )
        stored: list[Entry] = []
        with self._writer.batch():
            for record in records:
                self.write_record(record, on_sealed=stored.append)
        return stored[0]

    def membership_key_for_writing(self) -> TenantKey:
        """The membership key version tenant-log records are sealed under: the newest one
        held that the log announces (a version saved but never announced, by a rotation a
        crash cut short, is never used: nobody else could read it), else the newest held."""
        keyring = self._secrets.keyring
        held = {k.key_id for k in keyring if k.name == MEMBERSHIP_KEY}
        newest = self._membership.newest_membership_key(held)
        return keyring.by_id(newest) if newest is not None else keyring.current(MEMBERSHIP_KEY)

    def write_record(
        self,
        record: TenantLogRecord,
        author: SigningKeyPair | None = None,
        *,
        on_sealed: Callable[[Entry], None] | None = None,
    ) -> None:
        """Seal and store a tenant-log record (now, or when the open batch commits), signed by
        the admin key (or ``author``)."""
        if author is None:
            if self._secrets.admin_seed is None:
                what = "create keys" if isinstance(record, KeyAnnouncement) else "change membership"
                raise MissingKeyError(
                    f"this node does not hold the admin key of tenant {self.name!r}:"
                    f" only the tenant admin can {what}"
                )
            author = SigningKeyPair(self._secrets.admin_seed)
        draft = Draft(
            kind=EntryKind.MEMBERSHIP,
            tenant_id=self.tenant_id,
            database=TENANT_LOG,
            document_id=NO_DOCUMENT,
            signer=author,
            key=self.membership_key_for_writing(),
            payload=record.encode(),
            on_sealed=on_sealed,
        )
        self._writer.write([draft])

    def membership_entry_of(self, signing_key: bytes) -> Entry | None:
        """The stored tenant-log entry that added ``signing_key`` as a member, if any."""
        cached = self._membership_entries.get(signing_key)
        if cached is not None:
            return cached
        keyring = self._secrets.keyring
        for entry in self._store.iter_entries(self.tenant_id, TENANT_LOG):
            if not keyring.has_id(entry.header.key_id):
                continue
            try:
                record = decode_tenant_log_record(
                    entry.decrypt(keyring.by_id(entry.header.key_id).secret)
                )
            except MindooError:
                continue
            if isinstance(record, MembershipRecord) and record.action is MembershipAction.ADD:
                self._membership_entries[record.member.signing_key] = entry
            elif isinstance(record, DeviceEnrolment):
                self._membership_entries[record.device.signing_key] = entry
        return self._membership_entries.get(signing_key)

    def admit(self, signing_key: bytes, evidence: bytes) -> bool:
        """Store ``evidence`` (a sealed membership entry from a peer) if it is valid, then say
        whether ``signing_key`` is a current member. Nothing unverified is trusted."""
        if self._membership.is_member(signing_key):
            return True
        try:
            entry = Entry.decode(evidence, "membership evidence")
        except DecodeError:
            return False
        if entry.tenant_id != self.tenant_id or entry.database != TENANT_LOG:
            return False
        self._ingest([entry])
        return self._membership.is_member(signing_key)


__all__ = ["RevocationPlan", "TenantAccess"]
