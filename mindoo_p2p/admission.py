"""The admission pipeline: every check on an entry that arrives from elsewhere, run once.

Everything that decides whether an arriving entry may be stored lives here, whatever brought
it (sync, gossip, a bundle, an invite, a key file, a recovery kit) and whoever asks (`Node`,
the daemon's gossip validator, the sync adapter, bundle checks, fsck's re-verification).
Pure: no I/O, no clock, no trio; the caller supplies what the store holds and the tenants'
membership snapshots, and stores what this module accepts.

The rules, in the order they run (each entry meets each step at most once):

1. **Decode** (`decode`): bytes are decoded strictly with `Entry.decode`; an `Entry` object
   must carry ``id == SHA-256(raw)``. Otherwise: `RejectionKind.MALFORMED`.
2. **Duplicates** (`check_entries`): an id the store holds already, or one repeated in the
   batch, is not checked further (a repeat shares the fate of its first copy).
3. **Signature** (`check_entries`, `verify_one`): Ed25519 over the signed part, in bulk on
   every core (`crypto.verify_many`). Otherwise: `RejectionKind.BAD_SIGNATURE`. What passes
   is a :class:`VerifiedEntry`, the proof that steps 1-3 ran; only this module makes them
   (and `trust_own_seal`, for entries this process has just signed itself). Whoever holds
   one never decodes or verifies it again.
4. **Tenant, kind, membership** (`admit`, `check_gossip`): against a :class:`TenantView`, an
   immutable snapshot of the tenant's membership log (never mutated once taken; a worker
   thread may read it while the trio thread builds the next one).
   - No view for the entry's tenant: `UNKNOWN_TENANT`.
   - Tenant-log entries must be MEMBERSHIP entries whose record decrypts with a membership key
     of the view (`UNEXPECTED_KIND`, `UNREADABLE_RECORD`) and that the membership rules accept
     (`MembershipLog.check_record`: its kinds). They are taken in (author_seq, timestamp_ms)
     order and applied to a private *working copy* of the snapshot's log, in passes until a
     pass applies nothing: a record may build on one that sorts after it (a user's device
     enrolment, sealed with the user's sequence numbers, before the admin's ADD of that
     user). The result depends only on the set of records offered and on the snapshot, never
     on their order in the batch.
   - Every other entry must be a CHANGE or DELETE with a document id (`UNEXPECTED_KIND`) whose
     author the working log (the batch's records included) accepts
     (`MembershipLog.check_author`: `NOT_A_MEMBER`, `NOT_PERMITTED`, `REVOKED_ABOVE_CUT`).
   - Chains (`mindoo_p2p.chains`), for every entry, tenant-log records included: an entry of
     an author that forked, above its fork point (or at it, once the evidence kept there is
     complete), is `FORKED` (the view's ``forks``, what the store recorded). A fork that the
     batch itself reveals is found by the store, in its write transaction, which withdraws
     the author from the fork point on; an entry whose predecessor is missing is admitted
     (with a gap): every link is checked when both its ends are stored.
   - Gossip (`check_gossip`) carries no tenant-log entry and only the tenants held here
     (`MISROUTED`: a topic is per tenant and database, so the forwarder sent what it must not).
5. **Store**, by the caller: it writes the accepted entries in commit order (the tenant log
   first) in one transaction, and only *then* publishes the working log as the tenant's new
   snapshot (`Admission.memberships`). A failed write leaves every snapshot as it was.

Which rejection kinds blame the sender (penalise a peer) is decided in one place:
`RejectionKind.sender_at_fault` (`mindoo_p2p.rejection`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .chains import ForkPoint
from .crypto.signing import verify_many_later, verify_signature
from .entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from .errors import DecodeError, MindooError
from .membership import MembershipLog
from .membership_records import TenantLogRecord, decode_tenant_log_record
from .rejection import Rejected, RejectionKind

BAD_SIGNATURE = "bad signature"
ID_MISMATCH = "entry id does not match its bytes"

_MINT = object()


@dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """An entry that decoded strictly, whose id is the hash of its bytes and whose signature
    verified. Made only by this module: holding one means steps 1-3 ran, once."""

    entry: Entry
    _mint: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise TypeError("a VerifiedEntry is made by mindoo_p2p.admission only")

    @property
    def id(self) -> bytes:
        return self.entry.id

    @property
    def raw(self) -> bytes:
        return self.entry.raw

    @property
    def tenant_id(self) -> bytes:
        return self.entry.tenant_id

    @property
    def database(self) -> str:
        return self.entry.database


_SET_ENTRY = vars(VerifiedEntry)["entry"].__set__
_SET_MINT = vars(VerifiedEntry)["_mint"].__set__


def _verified(entry: Entry) -> VerifiedEntry:
    # Through the slots' own setters: the frozen dataclass's __init__ and __post_init__ were
    # 3 µs an entry of a catch-up (issue 8); this module is the only one that mints.
    item: VerifiedEntry = object.__new__(VerifiedEntry)
    _SET_ENTRY(item, entry)
    _SET_MINT(item, _MINT)
    return item


def trust_stored(entry: Entry) -> VerifiedEntry:
    """An entry read back from this node's store: it was verified when it arrived, and the
    store checks its id on every read (fsck re-checks signatures). Used to rebuild state
    (membership) from the store without verifying everything again."""
    if not isinstance(entry, Entry):
        raise TypeError(f"trust_stored takes an Entry, not {type(entry).__name__}")
    return _verified(entry)


def checked_earlier(raw: bytes, verified_ids: Collection[bytes]) -> VerifiedEntry | bytes:
    """Bytes this process checked before (a bundle's first pass): a `VerifiedEntry` when their
    hash is among ``verified_ids`` (decoded again, not verified again), else the bytes as they
    are, for the full pipeline (the file may have changed since)."""
    if hashlib.sha256(raw).digest() not in verified_ids:
        return raw
    entry = decode(raw)
    return raw if isinstance(entry, Rejected) else _verified(entry)


def trust_own_seal(entry: Entry) -> VerifiedEntry:
    """An entry this process has just sealed with its own key: it cannot carry a bad signature
    or a wrong id, so neither is checked (membership still is, by `admit`). Never use it for
    an entry that came from elsewhere."""
    if not isinstance(entry, Entry):
        raise TypeError(f"trust_own_seal takes an Entry, not {type(entry).__name__}")
    return _verified(entry)


@dataclass(frozen=True)
class TenantView:
    """What step 4 needs of a tenant: an immutable snapshot. ``membership`` is never mutated
    after the view is made (`admit` works on a copy)."""

    tenant_id: bytes
    membership: MembershipLog
    membership_keys: Mapping[bytes, bytes]
    """Key id -> secret of the tenant's membership key versions (to read tenant-log records)."""
    forks: Mapping[bytes, ForkPoint] = field(default_factory=lambda: MappingProxyType({}))
    """Author key -> where it forked (the store's record), for the authors that did."""

    @classmethod
    def of(
        cls,
        tenant_id: bytes,
        membership: MembershipLog,
        keys: Iterable[tuple[bytes, bytes]],
        forks: Iterable[ForkPoint] = (),
    ) -> TenantView:
        return cls(
            tenant_id,
            membership,
            MappingProxyType(dict(keys)),
            MappingProxyType({fork.author: fork for fork in forks}),
        )


def check_chain(view: TenantView, entry: Entry) -> Rejected | None:
    """The chain step for one entry: `FORKED` when its author's fork withdraws it."""
    fork = view.forks.get(entry.author)
    if fork is None or not fork.refuses(entry):
        return None
    return Rejected(
        entry.id,
        RejectionKind.FORKED,
        (
            f"author {entry.author.hex()[:16]} forked at #{fork.seq} (two entries at one"
            f" sequence number, or two different predecessors): its entries from there on are"
            f" withdrawn; this entry is #{entry.author_seq}"
        ),
    )


# -- steps 1-3 ----------------------------------------------------------------------------------
def decode(item: Entry | bytes, what: str = "entry") -> Entry | Rejected:
    """Step 1 for one item: the Entry, or a MALFORMED rejection. TypeError for an item that is
    neither an Entry nor bytes."""
    if isinstance(item, Entry):
        actual = hashlib.sha256(item.raw).digest()
        if actual != item.id:
            return Rejected(actual, RejectionKind.MALFORMED, ID_MISMATCH)
        return item
    if not isinstance(item, bytes | bytearray | memoryview):
        raise TypeError(f"expected Entry or bytes items, not {type(item).__name__}")
    data = bytes(item)
    try:
        return Entry.decode(data, what)
    except DecodeError as exc:
        return Rejected(
            hashlib.sha256(data).digest(), RejectionKind.MALFORMED, f"decode error: {exc}"
        )


def verify_one(entry: Entry) -> VerifiedEntry | Rejected:
    """Step 3 for one decoded entry (the caller did step 1)."""
    if verify_signature(entry.header.author, entry.signed_message, entry.signature):
        return _verified(entry)
    return Rejected(entry.id, RejectionKind.BAD_SIGNATURE, BAD_SIGNATURE)


def verify_all(entries: Sequence[Entry]) -> list[VerifiedEntry | Rejected]:
    """Step 3 for decoded entries, in bulk on every core; one result per entry, in order."""
    return _verify_later(entries)()


def _verify_later(entries: Sequence[Entry]) -> Callable[[], list[VerifiedEntry | Rejected]]:
    """`verify_all` started on the pool; the returned function waits for its results."""
    verdicts = verify_many_later(
        [(e.header.author, e.signed_message, e.signature) for e in entries]
    )

    def results() -> list[VerifiedEntry | Rejected]:
        return [
            _verified(e) if ok else Rejected(e.id, RejectionKind.BAD_SIGNATURE, BAD_SIGNATURE)
            for e, ok in zip(entries, verdicts(), strict=True)
        ]

    return results


CHECK_CHUNK = 512
"""Items `check_entries` decodes before it hands their signatures to the pool: the pool checks
one chunk while the caller decodes the next (a batch of thousands no longer leaves the cores
idle while it is decoded)."""


@dataclass(slots=True)
class CheckedBatch:
    """Steps 1-3 over an offered batch."""

    verified: list[VerifiedEntry]
    """New entries that passed, in the order offered."""
    duplicates: list[bytes]
    """Ids the store held already (first copies only)."""
    rejected: list[Rejected]
    repeats: list[bytes]
    """Ids offered again later in the batch: they share their first copy's fate."""
    order: dict[bytes, int]
    """Id -> position of its first copy in the batch (to report rejections in offered order)."""


Screen = Callable[[Entry], Rejected | None]
"""A check of a freshly decoded entry's clear header (its tenant, for a tenant's sync
session), run before duplicates and signatures: a refused entry goes no further."""


def check_entries(
    items: Sequence[Entry | bytes | VerifiedEntry],
    stored: Callable[[list[bytes]], Collection[bytes]],
    *,
    own_seals: bool = False,
    screen: Screen | None = None,
) -> CheckedBatch:
    """Steps 1-3 over ``items``. ``stored(ids)`` returns those of ``ids`` the store holds
    (asked once per `CHECK_CHUNK` items). A `VerifiedEntry` is taken as it is.
    ``own_seals=True``: the items are this process's fresh seals (`trust_own_seal`): ids and
    signatures are not checked. ``screen`` sees each entry decoded here (not a
    `VerifiedEntry`) before anything else is done with it.

    Chunk by chunk: decode, set duplicates aside, start the signature checks on the workers,
    go on with the next chunk; then collect the verdicts in the order offered. The outcome is
    the same as checking the batch in one piece."""
    return start_checks(items, stored, own_seals=own_seals, screen=screen).result()


class PendingChecks:
    """`check_entries` begun by `start_checks`: decoded and set apart, signatures being
    checked (on the verifier workers); `result` waits for them."""

    def __init__(
        self,
        partial: CheckedBatch,
        pending: list[
            tuple[list[Entry | VerifiedEntry], Callable[[], list[VerifiedEntry | Rejected]]]
        ],
    ) -> None:
        self._partial = partial
        self._pending = pending
        self._done = False

    def result(self) -> CheckedBatch:
        """The checked batch, as `check_entries` returns it (the same object on every call)."""
        if not self._done:
            verified, rejected = self._partial.verified, self._partial.rejected
            for new, results in self._pending:
                checked = iter(results())
                for item in new:
                    result = item if isinstance(item, VerifiedEntry) else next(checked)
                    if isinstance(result, Rejected):
                        rejected.append(result)
                    else:
                        verified.append(result)
            self._pending = []
            self._done = True
        return self._partial


def start_checks(
    items: Sequence[Entry | bytes | VerifiedEntry],
    stored: Callable[[list[bytes]], Collection[bytes]],
    *,
    own_seals: bool = False,
    screen: Screen | None = None,
) -> PendingChecks:
    """`check_entries` up to the signature verdicts: every item decoded, duplicates set aside
    (``stored`` asked now), every signature handed to the workers; returns at once, and
    `PendingChecks.result` collects the verdicts. The caller may do other work meanwhile
    (`EntryIntake.ingest_batches` commits the previous batch)."""
    rejected: list[Rejected] = []
    repeats: list[bytes] = []
    duplicates: list[bytes] = []
    order: dict[bytes, int] = {}
    pending: list[tuple[list[Entry | VerifiedEntry], Callable[[], list[VerifiedEntry | Rejected]]]]
    pending = []
    for start in range(0, len(items), CHECK_CHUNK):
        fresh: list[Entry | VerifiedEntry] = []
        for index, item in enumerate(items[start : start + CHECK_CHUNK], start):
            decoded: Entry | VerifiedEntry | Rejected
            if isinstance(item, VerifiedEntry):
                decoded = item
            elif own_seals and isinstance(item, Entry):
                decoded = trust_own_seal(item)
            else:
                decoded = decode(item)
                if screen is not None and not isinstance(decoded, Rejected):
                    decoded = screen(decoded) or decoded
            if isinstance(decoded, Rejected):
                order.setdefault(decoded.entry_id, index)
                rejected.append(decoded)
                continue
            if decoded.id in order:
                repeats.append(decoded.id)
                continue
            order[decoded.id] = index
            fresh.append(decoded)
        if not fresh:
            continue
        held = set(stored([e.id for e in fresh]))
        if held:
            duplicates += [e.id for e in fresh if e.id in held]
            fresh = [e for e in fresh if e.id not in held]
        unverified = [e for e in fresh if isinstance(e, Entry)]
        pending.append((fresh, _verify_later(unverified)))
    return PendingChecks(CheckedBatch([], duplicates, rejected, repeats, order), pending)


# -- step 4 -------------------------------------------------------------------------------------
def read_record(view: TenantView, entry: Entry) -> TenantLogRecord | Rejected:
    """The record a tenant-log entry carries, or why it cannot be read."""
    if entry.kind is not EntryKind.MEMBERSHIP:
        return Rejected(
            entry.id,
            RejectionKind.UNEXPECTED_KIND,
            f"unexpected entry kind {entry.kind.name} in the tenant log",
        )
    secret = view.membership_keys.get(entry.header.key_id)
    if secret is None:
        return Rejected(
            entry.id,
            RejectionKind.UNREADABLE_RECORD,
            "membership record encrypted with an unknown key",
        )
    try:
        return decode_tenant_log_record(entry.decrypt(secret))
    except (MindooError, DecodeError) as exc:
        return Rejected(
            entry.id, RejectionKind.UNREADABLE_RECORD, f"unreadable membership record: {exc}"
        )


_DOCUMENT_KINDS = frozenset((EntryKind.CHANGE, EntryKind.DELETE))


def check_document_entry(membership: MembershipLog, entry: Entry) -> Rejected | None:
    """Step 4 for an entry outside the tenant log: kind, document id, author."""
    if entry.kind not in _DOCUMENT_KINDS:
        return Rejected(
            entry.id,
            RejectionKind.UNEXPECTED_KIND,
            f"unexpected entry kind {entry.kind.name} in database {entry.database!r}",
        )
    if entry.document_id == NO_DOCUMENT:
        return Rejected(
            entry.id, RejectionKind.UNEXPECTED_KIND, "document entry without a document id"
        )
    return membership.check_author(entry)


@dataclass(slots=True)
class TenantLogOutcome:
    """Tenant-log records run against a working copy of a membership log."""

    membership: MembershipLog
    """The working log with every accepted record applied (a new object)."""
    accepted: list[VerifiedEntry]
    """In the order they applied."""
    rejected: list[Rejected]


def apply_tenant_log(view: TenantView, entries: Iterable[VerifiedEntry]) -> TenantLogOutcome:
    """Apply tenant-log records to a copy of ``view.membership`` in passes until none applies
    (see the module rules). ``view`` is not changed. Used for arrivals and to rebuild a
    tenant's membership from its stored log."""
    working = view.membership.copy()
    pending: list[tuple[VerifiedEntry, TenantLogRecord]] = []
    rejected: list[Rejected] = []
    for item in sorted(entries, key=_log_order):
        refusal = check_chain(view, item.entry)
        if refusal is not None:
            rejected.append(refusal)
            continue
        record = read_record(view, item.entry)
        if isinstance(record, Rejected):
            rejected.append(record)
        else:
            pending.append((item, record))
    accepted: list[VerifiedEntry] = []
    while pending:
        left: list[tuple[VerifiedEntry, TenantLogRecord]] = []
        refusals: list[Rejected] = []
        for item, record in pending:
            refusal = working.check_record(item.entry, record)
            if refusal is None:
                working.apply(item.entry, record)
                accepted.append(item)
            else:
                left.append((item, record))
                refusals.append(refusal)
        if len(left) == len(pending):
            rejected += refusals
            break
        pending = left
    return TenantLogOutcome(working, accepted, rejected)


def _log_order(item: VerifiedEntry) -> tuple[int, int, bytes]:
    header = item.entry.header
    return (header.author_seq, header.timestamp_ms, item.id)


@dataclass(slots=True)
class Admission:
    """Step 4 over verified entries of any tenants."""

    accepted: list[VerifiedEntry]
    """To store, in commit order: each tenant's log records first, then the other entries in
    the order given."""
    rejected: list[Rejected]
    memberships: dict[bytes, MembershipLog]
    """Tenant id -> the new membership log, for tenants whose log accepted records: publish
    it after the accepted entries are committed."""


def admit(views: Mapping[bytes, TenantView], verified: Sequence[VerifiedEntry]) -> Admission:
    """Step 4: which of ``verified`` the tenants' membership (``views``, by tenant id) accepts.
    Pure: the views are not changed."""
    rejected: list[Rejected] = []
    logs: dict[bytes, list[VerifiedEntry]] = {}
    others: list[VerifiedEntry] = []
    for item in verified:
        header = item.entry.header
        if header.tenant_id not in views:
            rejected.append(
                Rejected(
                    item.id,
                    RejectionKind.UNKNOWN_TENANT,
                    f"unknown tenant {header.tenant_id.hex()}",
                )
            )
        elif header.database == TENANT_LOG:
            logs.setdefault(header.tenant_id, []).append(item)
        else:
            others.append(item)
    accepted: list[VerifiedEntry] = []
    memberships: dict[bytes, MembershipLog] = {}
    for tenant_id, records in logs.items():
        outcome = apply_tenant_log(views[tenant_id], records)
        accepted += outcome.accepted
        rejected += outcome.rejected
        if outcome.accepted:
            memberships[tenant_id] = outcome.membership
    # Per tenant: its view, the membership that applies, and the authors found free to write
    # (`check_author` accepted one of their entries and no revocation cuts them, so it accepts
    # every entry of theirs in this tenant: only kind, document id and chain stay per entry).
    tenants: dict[bytes, tuple[TenantView, MembershipLog, set[bytes]]] = {}
    for item in others:
        entry = item.entry
        header = entry.header
        tenant = tenants.get(header.tenant_id)
        if tenant is None:
            view = views[header.tenant_id]
            membership = memberships.get(header.tenant_id) or view.membership
            tenant = tenants[header.tenant_id] = (view, membership, set())
        view, membership, free = tenant
        if (
            header.author in free
            and header.kind in _DOCUMENT_KINDS
            and header.document_id != NO_DOCUMENT
        ):
            refusal = check_chain(view, entry) if view.forks else None
        else:
            refusal = check_document_entry(membership, entry) or check_chain(view, entry)
            if refusal is None and membership.cut_of(header.author) is None:
                free.add(header.author)
        if refusal is None:
            accepted.append(item)
        else:
            rejected.append(refusal)
    return Admission(accepted, rejected, memberships)


def check_gossip(
    raw: bytes, view_of: Callable[[bytes], TenantView | None]
) -> VerifiedEntry | Rejected:
    """Steps 1, 3 and 4 for one entry that arrived by gossip (the validator's whole work):
    membership and chains, so an entry that a known fork withdraws is `FORKED` here, before
    gossip forwards it, not only at ingest.

    ``view_of(tenant_id)`` returns the tenant's current `TenantView` (or None for a tenant not
    held here; its membership keys may be left out: gossip carries no tenant-log entry); it
    may be called from a worker thread, so it must only read immutable snapshots. The
    returned `VerifiedEntry` goes to ingest as it is: nothing is decoded or verified twice.
    """
    entry = decode(raw, "gossip entry")
    if isinstance(entry, Rejected):
        return entry
    if entry.database == TENANT_LOG:
        return Rejected(
            entry.id, RejectionKind.MISROUTED, "a tenant-log entry by gossip (it travels by sync)"
        )
    view = view_of(entry.tenant_id)
    if view is None:
        return Rejected(
            entry.id,
            RejectionKind.MISROUTED,
            f"gossip entry of tenant {entry.tenant_id.hex()}, which no topic here carries",
        )
    verified = verify_one(entry)
    if isinstance(verified, Rejected):
        return verified
    refusal = check_document_entry(view.membership, entry) or check_chain(view, entry)
    return verified if refusal is None else refusal


__all__ = [
    "BAD_SIGNATURE",
    "Admission",
    "CheckedBatch",
    "PendingChecks",
    "Screen",
    "TenantLogOutcome",
    "TenantView",
    "VerifiedEntry",
    "admit",
    "apply_tenant_log",
    "check_chain",
    "check_document_entry",
    "check_entries",
    "check_gossip",
    "checked_earlier",
    "decode",
    "read_record",
    "start_checks",
    "trust_own_seal",
    "trust_stored",
    "verify_all",
    "verify_one",
]
