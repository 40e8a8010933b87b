"""The membership log: who may write to a tenant, derived from its membership records. Pure.

The records (what a MEMBERSHIP entry of the tenant log carries, and their byte encoding with
the version table) live in `membership_records`; this module re-exports the names other
modules and tests import from here.

:class:`MembershipLog` is the state machine the records drive. Its rules (all of them live
here):

- A record is acceptable only in a MEMBERSHIP entry of this tenant's log, authored by the admin
  key. The caller has already checked the entry's signature and decrypted the record from it.
- ADD admits a signing key that the log has never seen. Adding a current member again with
  the same identity and role is accepted and changes nothing (a re-sent invite); with another
  name, encryption key or role it is refused (changing a member is not supported yet).
  Re-adding a revoked key is refused: a revoked key may have been compromised, so its owner
  must come back with a new identity.
- REVOKE must name a key the log knows; revoking an already revoked member again is accepted.
- Revocation is deterministic: every node ends with the same accepted entries, whatever order
  it received entries and revocations in. A :class:`Revocation` carries *cuts*: for the
  member's signing key (and, later, each of its devices) the last ``author_seq`` the admin
  accepts. An entry by a revoked key is accepted when its ``author_seq`` is at most the key's
  cut, whenever it arrives (a late delivery of an old entry still lands), and rejected above it
  (a backdated timestamp changes nothing: the author's own sequence number decides). When
  several revocations name the same key, the smallest cut wins (a rule independent of their
  order). A cut of record version 4 also names the *id* of the last accepted entry
  (:meth:`cut_point`): with per-author hash chains (`mindoo_p2p.chains`) that fixes the whole
  chain the revocation accepts, so an entry minted later at a sequence number within the cut
  is a fork (two entries at one number, or one at the cut that is not the entry it names),
  which withdraws the author from there on and is never accepted itself; the tenant enforces
  the "not the named entry" case (`TenantAccess.enforce_revocations`), the store the others.
  Entries above the cut that a node stored before the revocation reached it are retracted
  (:meth:`cuts` lists what to enforce; `Tenant.enforce_revocations` does it). A
  version-1 REVOKE (written before cuts existed) is a cut at 0: nothing of that key is
  accepted.
- Applying the same entry twice changes nothing (idempotent per entry id).
- KEY_ANNOUNCE (:class:`KeyAnnouncement`) tells every member and mirror which key id has which
  name and version, and (version 5) the key's commitment, against which invites, enrolments
  and key files are checked. It is refused when the key id was announced with another name,
  version or commitment, or when another key id was announced for the same name and version;
  announcing the same key again changes nothing, and a version-5 announcement of a key
  announced in version 2 adds its commitment. Key announcements build the key directory
  (:meth:`key_directory`). Every key version is announced: ``default`` and ``$membership``
  version 1 when the tenant is created (or, for a tenant created earlier, by the admin's next
  invite, key rotation or export), each rotation its next version. ``$membership`` is only
  announced with its commitment.
- An ordinary entry is authorized when its author is the admin key, a current member (not a
  mirror), or a revoked member and the entry's ``author_seq`` is within the member's cut.
- Devices: a member (the *user*, identified by the signing key it was added with) may enroll
  further devices, each with its own signing key (DEVICE_ADD), and revoke one of them
  (DEVICE_REVOKE, with a cut like a Revocation's). These two records are signed by the user's
  own key or by the admin key; a user may have at most MAX_CUTS - 1 devices, mirrors none. A
  device writes as its user (same role); revoking a device limits that device only;
  revoking the user limits every device too (each at the cut the Revocation names for it,
  0 when it names none). A version-5 enrolment carries the device's own signature naming its
  user (a member cannot enroll someone else's key); one with a bad proof is refused. The
  outcome never depends on arrival order (`membership_devices`): every acceptable enrolment
  of a key is kept, the proven one with the smallest entry id wins over legacy (version-3,
  unproven) ones, and the admin's ADD of a key always wins over any enrolment of it (the
  enrolment stays stored, inert), so a member-add and a device-add of one key no longer
  refuse each other. A device revocation names (user, device) and limits the device while
  that user's enrolment is the winner; re-enrolling a revoked device leaves it revoked.
- Records that arrive before what they build on (a REVOKE before its ADD) are refused and
  land when offered again after it; sync offers them again, so the final state is the same.
"""

from __future__ import annotations

import dataclasses

from .entry import TENANT_ID_SIZE, TENANT_LOG, Entry, EntryKind
from .errors import VerificationError
from .identity import PUBLIC_KEY_SIZE, fingerprint_of
from .keyring import MEMBERSHIP_KEY
from .membership_devices import Device, DeviceRegistry, name_cut_entry
from .membership_key_grant import MembershipKeyGrant
from .membership_records import (
    CHAINED_CUT_VERSION,
    MAX_CUTS,
    MAX_KEY_VERSION,
    MEMBER_ACTIONS,
    ROLE_MIRROR,
    Cut,
    DeviceEnrolment,
    DeviceRevocation,
    KeyAnnouncement,
    MembershipAction,
    MembershipRecord,
    Revocation,
    TenantLogRecord,
    decode_tenant_log_record,
)
from .membership_types import AnnouncedKey, CutPoint, Member
from .rejection import Rejected, RejectionKind

__all__ = [
    "CHAINED_CUT_VERSION",
    "MAX_CUTS",
    "MAX_KEY_VERSION",
    "MEMBER_ACTIONS",
    "ROLE_MIRROR",
    "AnnouncedKey",
    "Cut",
    "CutPoint",
    "DeviceEnrolment",
    "DeviceRevocation",
    "KeyAnnouncement",
    "Member",
    "MembershipAction",
    "MembershipKeyGrant",
    "MembershipLog",
    "MembershipRecord",
    "Revocation",
    "TenantLogRecord",
    "decode_tenant_log_record",
]


class MembershipLog:
    """Who may write to a tenant, derived from its membership entries. Pure state machine.

    Feed it the tenant log's membership records in log order through :meth:`apply`; ask it
    about ordinary entries with :meth:`authorize_author`.
    """

    __slots__ = (
        "_admin_key",
        "_applied",
        "_cut_ids",
        "_cuts",
        "_cuts_revision",
        "_devices",
        "_key_grants",
        "_keys",
        "_members",
        "_tenant_id",
    )

    def __init__(self, tenant_id: bytes, admin_key: bytes) -> None:
        if not isinstance(tenant_id, bytes) or len(tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        if not isinstance(admin_key, bytes) or len(admin_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"admin_key must be a {PUBLIC_KEY_SIZE}-byte Ed25519 public key")
        self._tenant_id = tenant_id
        self._admin_key = admin_key
        self._members: dict[bytes, Member] = {}
        """By signing key, in order of addition."""
        self._applied: set[bytes] = set()
        self._keys: dict[bytes, AnnouncedKey] = {}
        """The key directory: announced keys by key id."""
        self._cuts: dict[bytes, dict[bytes, int]] = {}
        """Revoked member key -> signing key -> the smallest cut any revocation names."""
        self._cut_ids: dict[bytes, dict[int, frozenset[bytes]]] = {}
        """Signing key -> seq -> the entry ids REVOKE records name as the last accepted at seq
        (DEVICE_REVOKE records name theirs in the registry, per (user, device) pair)."""
        self._devices = DeviceRegistry()
        """Device enrolments and revocations (a member's key is never a device), with the
        cuts and entry ids DEVICE_REVOKE records name."""
        self._key_grants: dict[tuple[bytes, bytes], bytes] = {}
        """(membership key id, recipient signing key) -> the sealed secret (the smallest, if
        several records grant it)."""
        self._cuts_revision = 0
        """Counts the records that may have changed `cuts` (see :attr:`cuts_revision`)."""

    def copy(self) -> MembershipLog:
        """An independent copy: applying records to it leaves this log unchanged (how a
        published snapshot stays immutable while the next one is built)."""
        twin = MembershipLog(self._tenant_id, self._admin_key)
        twin._members = dict(self._members)
        twin._applied = set(self._applied)
        twin._keys = dict(self._keys)
        twin._cuts = {key: dict(cuts) for key, cuts in self._cuts.items()}
        twin._cut_ids = {key: dict(named) for key, named in self._cut_ids.items()}
        twin._devices = self._devices.copy()
        twin._key_grants = dict(self._key_grants)
        twin._cuts_revision = self._cuts_revision
        return twin

    @property
    def tenant_id(self) -> bytes:
        return self._tenant_id

    @property
    def admin_key(self) -> bytes:
        return self._admin_key

    # -- membership records ----------------------------------------------------------------
    def authorize_record(self, entry: Entry, record: TenantLogRecord) -> str | None:
        """None if ``record`` (decrypted from ``entry``) may be applied, else the reason
        (:meth:`check_record`'s message)."""
        refusal = self.check_record(entry, record)
        return None if refusal is None else refusal.message

    def check_record(self, entry: Entry, record: TenantLogRecord) -> Rejected | None:
        """None if ``record`` (decrypted from ``entry``) may be applied, else the refusal.

        Does not change state. Assumes the entry's signature was verified.
        """
        label = f"membership entry {entry.id.hex()[:16]}"
        if entry.tenant_id != self._tenant_id:
            return _refuse(
                entry,
                RejectionKind.MISROUTED,
                f"{label} belongs to tenant {entry.tenant_id.hex()}, not {self._tenant_id.hex()}",
            )
        if entry.database != TENANT_LOG:
            return _refuse(
                entry,
                RejectionKind.UNEXPECTED_KIND,
                f"{label} is in database {entry.database!r}, not the tenant log",
            )
        if entry.kind != EntryKind.MEMBERSHIP:
            return _refuse(
                entry,
                RejectionKind.UNEXPECTED_KIND,
                f"{label} has kind {entry.kind.name}, not MEMBERSHIP",
            )
        if entry.id in self._applied:
            return None
        if isinstance(record, DeviceEnrolment | DeviceRevocation):
            return self._check_device_record(label, entry, record)
        if entry.author != self._admin_key:
            return _refuse(
                entry,
                RejectionKind.NOT_A_MEMBER,
                (
                    f"{label} is signed by {fingerprint_of(entry.author)}, not by the admin key"
                    f" {fingerprint_of(self._admin_key)} of tenant {self._tenant_id.hex()}"
                ),
            )
        if isinstance(record, KeyAnnouncement):
            return self._check_announcement(label, entry, record)
        if isinstance(record, MembershipKeyGrant):
            return self._check_announcement(label, entry, _announcement_of(record))
        if isinstance(record, Revocation):
            if record.member_key not in self._members:
                return _refuse(
                    entry,
                    RejectionKind.MISSING_DEPENDENCY,
                    f"{label} revokes {fingerprint_of(record.member_key)}, who is not a member",
                )
            return None
        member = record.member
        known = self._members.get(member.signing_key)
        if record.action is MembershipAction.ADD:
            # A key enrolled as a device may still be added: the admin's ADD always wins
            # (the enrolment stays recorded, inert), whichever arrived first.
            if known is not None and known.revoked_entry is not None:
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} adds {member}, whose key was revoked; a revoked key cannot be"
                        " added again"
                    ),
                )
            if known is not None and (known.identity != member or known.role != record.role):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} adds {member} as {record.role!r}, who is already a member as"
                        f" {known.role!r} with"
                        f" {'the same' if known.identity == member else 'another'}"
                        " identity; changing a member is not supported"
                    ),
                )
        elif known is None:
            return _refuse(
                entry,
                RejectionKind.MISSING_DEPENDENCY,
                f"{label} revokes {member}, who is not a member",
            )
        return None

    def _check_device_record(
        self, label: str, entry: Entry, record: DeviceEnrolment | DeviceRevocation
    ) -> Rejected | None:
        user = self._members.get(record.user_key)
        if user is None:
            return _refuse(
                entry,
                RejectionKind.MISSING_DEPENDENCY,
                f"{label} names user {fingerprint_of(record.user_key)}, who is not a member",
            )
        if entry.author not in (self._admin_key, record.user_key):
            return _refuse(
                entry,
                RejectionKind.NOT_A_MEMBER,
                (
                    f"{label} is signed by {fingerprint_of(entry.author)}: device records are"
                    f" signed by their user {user.identity} or the admin key"
                ),
            )
        if entry.author == record.user_key:
            cut = self.cut_of(record.user_key)
            if cut is not None and entry.header.author_seq > cut:
                return _refuse(
                    entry,
                    RejectionKind.REVOKED_ABOVE_CUT,
                    (
                        f"{label}: user {user.identity} was revoked after their entry #{cut};"
                        f" this entry is #{entry.header.author_seq}"
                    ),
                )
        if user.role == ROLE_MIRROR:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                f"{label}: {user.identity} is a mirror; mirrors have no devices",
            )
        if isinstance(record, DeviceRevocation):
            if not self._devices.claimed_by(record.user_key, record.device_key):
                return _refuse(
                    entry,
                    RejectionKind.MISSING_DEPENDENCY,
                    (
                        f"{label} revokes {fingerprint_of(record.device_key)}, which is not a"
                        f" device of {user.identity}"
                    ),
                )
            return None
        # Only rules that do not depend on what arrived before refuse an enrolment: a key
        # claimed otherwise, re-enrolled after its revocation or added as a member is
        # settled by `DeviceRegistry`'s ranking and by the ADD winning, on every node alike.
        key = record.device.signing_key
        if record.proof is not None and not record.proven():
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                (
                    f"{label} enrolls {record.device}, but its proof is not that device's"
                    " signature (a device enrolment must be signed by the device's own key)"
                ),
            )
        if key == self._admin_key:
            return _refuse(
                entry,
                RejectionKind.CONFLICT,
                f"{label} enrolls the tenant's admin key as a device",
            )
        if self._devices.claimed_by(record.user_key, key):
            return None
        count = self._devices.claims_of(record.user_key)
        if count >= MAX_CUTS - 1:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                f"{label}: {user.identity} has {count} devices already (the most there can be)",
            )
        return None

    def _check_announcement(
        self, label: str, entry: Entry, record: KeyAnnouncement
    ) -> Rejected | None:
        if record.name == MEMBERSHIP_KEY and record.commitment is None:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                f"{label} announces the {MEMBERSHIP_KEY!r} key without its commitment",
            )
        known = self._keys.get(record.key_id)
        if known is not None:
            if (known.name, known.version) != (record.name, record.version):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} announces key {record.key_id.hex()} as {record.name!r} version"
                        f" {record.version}, but it was announced as {known.name!r} version"
                        f" {known.version}"
                    ),
                )
            if (
                known.commitment is not None
                and record.commitment is not None
                and known.commitment != record.commitment
            ):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    f"{label} announces key {record.key_id.hex()} with another commitment",
                )
            return None
        for other in self._keys.values():
            if (other.name, other.version) == (record.name, record.version):
                return _refuse(
                    entry,
                    RejectionKind.CONFLICT,
                    (
                        f"{label} announces another key {record.key_id.hex()} as {record.name!r}"
                        f" version {record.version}, already key {other.key_id.hex()}"
                    ),
                )
        return None

    def apply(self, entry: Entry, record: TenantLogRecord) -> None:
        """Apply an accepted record; a second apply of the same entry changes nothing.

        Raises :class:`VerificationError` with the reason when :meth:`authorize_record` refuses
        it, so unauthorized records can never change the state.
        """
        if entry.id in self._applied:
            return
        refusal = self.check_record(entry, record)
        if refusal is not None:
            raise VerificationError(refusal.message)
        if isinstance(record, KeyAnnouncement):
            self._announce(entry, record)
            self._applied.add(entry.id)
            return
        if isinstance(record, MembershipKeyGrant):
            self._announce(entry, _announcement_of(record))
            for recipient, sealed in record.grants:
                known = self._key_grants.get((record.key_id, recipient))
                pair = (record.key_id, recipient)
                self._key_grants[pair] = sealed if known is None else min(known, sealed)
            self._applied.add(entry.id)
            return
        if isinstance(record, Revocation):
            self._revoke(entry, record.member_key, {c.signing_key: c.last_seq for c in record.cuts})
            for cut in record.cuts:
                self._name_cut_entry(cut.signing_key, cut.last_seq, cut.last_entry_id)
            self._applied.add(entry.id)
            return
        if isinstance(record, DeviceEnrolment):
            self._devices.enrol(record.device, record.user_key, entry.id, record.proven())
            self._cuts_revision += 1
            self._applied.add(entry.id)
            return
        if isinstance(record, DeviceRevocation):
            self._devices.revoke(
                record.user_key,
                record.device_key,
                entry.id,
                record.last_seq,
                record.last_entry_id,
            )
            self._cuts_revision += 1
            self._applied.add(entry.id)
            return
        key = record.member.signing_key
        if record.action is MembershipAction.ADD:
            if key not in self._members:
                self._members[key] = Member(
                    identity=record.member, role=record.role, added_entry=entry.id
                )
                self._cuts_revision += 1  # a device of that key, if any, no longer counts
        else:
            self._revoke(entry, key, {key: 0})  # a version-1 REVOKE accepts nothing more
        self._applied.add(entry.id)

    def _name_cut_entry(self, signing_key: bytes, seq: int, entry_id: bytes | None) -> None:
        """Note ``entry_id`` as the last entry a REVOKE accepts from ``signing_key`` at ``seq``
        (a DEVICE_REVOKE's is kept per (user, device) pair in the registry)."""
        name_cut_entry(self._cut_ids.setdefault(signing_key, {}), seq, entry_id)

    def _announce(self, entry: Entry, record: KeyAnnouncement) -> None:
        """Record an announcement (`_check_announcement` allowed it, so name, version and
        any commitment agree with what is known). The entries named are the smallest ids of
        those that announced the key and its commitment: the same in any arrival order."""
        known = self._keys.get(record.key_id)
        if known is None:
            known = AnnouncedKey(record.key_id, record.name, record.version, entry.id)
        known = dataclasses.replace(known, entry_id=min(known.entry_id, entry.id))
        if record.commitment is not None:
            first = known.commitment_entry
            known = dataclasses.replace(
                known,
                commitment=record.commitment,
                commitment_entry=entry.id if first is None else min(first, entry.id),
            )
        self._keys[record.key_id] = known

    def _revoke(self, entry: Entry, member_key: bytes, cuts: dict[bytes, int]) -> None:
        known = self._members[member_key]
        if known.revoked_entry is None:
            self._members[member_key] = dataclasses.replace(known, revoked_entry=entry.id)
        merged = self._cuts.setdefault(member_key, {})
        for key, last_seq in cuts.items():
            merged[key] = min(last_seq, merged.get(key, last_seq))
        self._cuts_revision += 1

    # -- ordinary entries ------------------------------------------------------------------
    def authorize_author(self, entry: Entry) -> str | None:
        """None if ``entry``'s author may write to this tenant now, else the reason
        (:meth:`check_author`'s message)."""
        refusal = self.check_author(entry)
        return None if refusal is None else refusal.message

    def check_author(self, entry: Entry) -> Rejected | None:
        """None if ``entry``'s author may write to this tenant now, else the refusal."""
        if entry.tenant_id != self._tenant_id:
            return _refuse(
                entry,
                RejectionKind.MISROUTED,
                (
                    f"entry {entry.id.hex()[:16]} belongs to tenant {entry.tenant_id.hex()},"
                    f" not {self._tenant_id.hex()}"
                ),
            )
        author = entry.author
        if author == self._admin_key:
            return None
        member = self._members.get(author)
        device = self._device(author)
        if device is not None:
            member = self._members.get(device.user_key)
        if member is None:
            return _refuse(
                entry,
                RejectionKind.NOT_A_MEMBER,
                f"author {fingerprint_of(author)} is not a member of tenant"
                f" {self._tenant_id.hex()}",
            )
        if member.role == ROLE_MIRROR:
            return _refuse(
                entry,
                RejectionKind.NOT_PERMITTED,
                (
                    f"author {member.identity} is a mirror of tenant {self._tenant_id.hex()}:"
                    " mirrors may not write"
                ),
            )
        cut = self.cut_of(author)
        if cut is not None and entry.header.author_seq > cut:
            who = f"device {device.identity} of {member.identity}" if device else member.identity
            return _refuse(
                entry,
                RejectionKind.REVOKED_ABOVE_CUT,
                (
                    f"author {who} was revoked from tenant {self._tenant_id.hex()}"
                    f" after their entry #{cut}; this entry is #{entry.header.author_seq}"
                ),
            )
        return None

    # -- revocation ------------------------------------------------------------------------
    def cut_of(self, signing_key: bytes) -> int | None:
        """The last ``author_seq`` still accepted from ``signing_key``: None when no revocation
        limits it (it may write), an int when one does (every revocation of the member that
        holds the key counts; the smallest cut wins; a key a revocation does not name gets 0)."""
        member_cuts = self._cuts.get(signing_key)
        if member_cuts is not None:
            return member_cuts.get(signing_key, 0)
        device = self._device(signing_key)
        if device is None:
            return None
        limits = []
        device_cut = self._devices.cut(signing_key)
        if device_cut is not None:
            limits.append(device_cut)
        user_cuts = self._cuts.get(device.user_key)
        if user_cuts is not None:
            limits.append(user_cuts.get(signing_key, 0))
        return min(limits) if limits else None

    def cut_point(self, signing_key: bytes) -> CutPoint | None:
        """Where revocations cut ``signing_key`` (:meth:`cut_of`) with the entry ids they name
        as its last accepted entry there; None when no revocation limits it."""
        cut = self.cut_of(signing_key)
        if cut is None:
            return None
        named = self._cut_ids.get(signing_key, {}).get(cut, frozenset())
        if self._device(signing_key) is not None:
            named |= self._devices.cut_entry_ids(signing_key, cut)
        return CutPoint(cut, named)

    def cut_points(self) -> dict[bytes, CutPoint]:
        """:meth:`cuts` with the entry ids each cut names."""
        return {key: point for key in self.cuts() if (point := self.cut_point(key)) is not None}

    @property
    def cuts_revision(self) -> int:
        """Grows whenever :meth:`cuts` may have changed (a revocation, or a device enrolled
        for a revoked user): a cheap way to know whether to enforce them again."""
        return self._cuts_revision

    def cuts(self) -> dict[bytes, int]:
        """Every signing key a revocation limits -> the last ``author_seq`` accepted from it:
        what a node enforces on the entries it already stored."""
        found: dict[bytes, int] = {}
        for key in [*self._cuts, *self._devices.device_keys()]:
            cut = self.cut_of(key)
            if cut is not None:
                found[key] = cut
        return found

    def is_member(self, signing_key: bytes) -> bool:
        """True when ``signing_key`` was added and not revoked, or is an active device of such
        a member (the admin key counts only if it was added as a member;
        :meth:`authorize_author` accepts it regardless)."""
        device = self._device(signing_key)
        if device is not None:
            if device.revoked_entry is not None:
                return False
            signing_key = device.user_key
        member = self._members.get(signing_key)
        return member is not None and member.revoked_entry is None

    def _device(self, signing_key: bytes) -> Device | None:
        """The winning enrolment of ``signing_key``, unless the key is a member's (the
        admin's ADD always wins over an enrolment)."""
        if signing_key in self._members:
            return None
        return self._devices.device(signing_key)

    def device(self, signing_key: bytes) -> Device | None:
        """The device record of ``signing_key``, revoked or not; None if never enrolled, or
        if the key is a member's."""
        return self._device(signing_key)

    def devices(self, user_key: bytes | None = None) -> list[Device]:
        """Every device enrolled (of ``user_key`` only, when given), in order of enrolment."""
        found = (self._device(key) for key in self._devices.device_keys())
        return [d for d in found if d is not None and (user_key is None or d.user_key == user_key)]

    def member(self, signing_key: bytes) -> Member | None:
        """The member record of ``signing_key``, revoked or not; None if never added."""
        return self._members.get(signing_key)

    def members(self) -> list[Member]:
        """Every member ever added, revoked ones included, in order of addition."""
        return list(self._members.values())

    # -- key directory ---------------------------------------------------------------------
    def key_directory(self) -> list[AnnouncedKey]:
        """Every announced key, sorted by name then version."""
        return sorted(self._keys.values(), key=lambda k: (k.name, k.version, k.key_id))

    def key_grants(self, recipient: bytes) -> list[tuple[AnnouncedKey, bytes]]:
        """The membership key versions granted to ``recipient`` (a signing key) in the log,
        each with its sealed secret, by version."""
        found = [
            (self._keys[key_id], sealed)
            for (key_id, to), sealed in self._key_grants.items()
            if to == recipient and key_id in self._keys
        ]
        return sorted(found, key=lambda pair: pair[0].version)

    def newest_membership_key(self, held: set[bytes]) -> bytes | None:
        """Of the key ids in ``held``, the announced ``$membership`` version that is newest
        (None when none is announced): what tenant-log records are sealed under."""
        announced = [
            k for k in self._keys.values() if k.name == MEMBERSHIP_KEY and k.key_id in held
        ]
        return max(announced, key=lambda k: k.version).key_id if announced else None

    def announced_key(self, key_id: bytes) -> AnnouncedKey | None:
        """The announcement of ``key_id``, or None when the log never announced it."""
        return self._keys.get(key_id)


def _announcement_of(grant: MembershipKeyGrant) -> KeyAnnouncement:
    """A key grant also announces the key it grants."""
    return KeyAnnouncement(grant.key_id, MEMBERSHIP_KEY, grant.version, grant.commitment)


def _refuse(entry: Entry, kind: RejectionKind, message: str) -> Rejected:
    return Rejected(entry.id, kind, message)
