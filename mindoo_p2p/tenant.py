"""Tenants: an organisation or group, created on a device, with members, keys and databases.

A tenant is identified by 16 bytes derived from its admin public key
(``SHA-256("mindoo/tenant/v1" + admin_key)[:16]``): the admin key is random, so the id is too,
and an invite or a peer cannot pair a tenant id with a different admin key. The admin key signs
the membership records of the tenant log; the creator's node holds it. Every member holds the
tenant's default key (documents) and membership key (the tenant log).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .crypto import SigningKeyPair
from .entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind, validate_database_name
from .errors import (
    DecodeError,
    InvalidNameError,
    MindooError,
    MissingKeyError,
    NotFoundError,
    VerificationError,
)
from .identity import PublicIdentity
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey, validate_key_name
from .membership import (
    MAX_KEY_VERSION,
    DeviceEnrolment,
    DeviceRevocation,
    KeyAnnouncement,
    Member,
    MembershipAction,
    MembershipLog,
    MembershipRecord,
    Revocation,
    TenantLogRecord,
    decode_tenant_log_record,
)
from .writer import Dependency, Draft, EntryWriter

if TYPE_CHECKING:
    from .database import Database
    from .node import Node

TENANT_NAME_MAX = 128
RESERVED_ROTATION = frozenset({DEFAULT_KEY, MEMBERSHIP_KEY})
"""Keys `rotate_keys_held` does not list by name (default first; the membership key is
never rotated)."""


def tenant_id_for(admin_key: bytes) -> bytes:
    return hashlib.sha256(b"mindoo/tenant/v1" + admin_key).digest()[:16]


def validate_tenant_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= TENANT_NAME_MAX
        or not name.isprintable()
        or name != name.strip()
    ):
        raise InvalidNameError(
            f"invalid tenant name {name!r}: 1-{TENANT_NAME_MAX} printable characters,"
            " no leading or trailing spaces"
        )
    return name


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TenantSecrets:
    """What the keystore holds for one tenant."""

    tenant_id: bytes
    name: str
    admin_key: bytes
    admin_seed: bytes | None
    keyring: KeyRing
    databases: list[str] = field(default_factory=list)
    """Databases created on this node (they are listed even while empty)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "admin_key": self.admin_key.hex(),
            "keys": self.keyring.to_list(),
            "databases": sorted(self.databases),
        }
        if self.admin_seed is not None:
            data["admin_seed"] = self.admin_seed.hex()
        return data

    @classmethod
    def from_dict(cls, tenant_id_hex: str, data: dict[str, Any]) -> TenantSecrets:
        seed = data.get("admin_seed")
        return cls(
            tenant_id=bytes.fromhex(tenant_id_hex),
            name=data["name"],
            admin_key=bytes.fromhex(data["admin_key"]),
            admin_seed=bytes.fromhex(seed) if seed else None,
            keyring=KeyRing.from_list(data["keys"]),
            databases=[validate_database_name(d) for d in data.get("databases", [])],
        )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key version in the tenant's key directory (never its secret)."""

    key_id: bytes
    name: str
    version: int
    held: bool
    """This node holds the secret."""
    announced: bool
    """The tenant log announced it (named keys, and ``default`` once rotated; never the
    membership key)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id.hex(),
            "name": self.name,
            "version": self.version,
            "held": self.held,
            "announced": self.announced,
        }


class Tenant:
    """A tenant as this node sees it. Obtain it from `Node.create_tenant` / `Node.tenant`."""

    def __init__(self, node: Node, secrets: TenantSecrets) -> None:
        self._node = node
        self._secrets = secrets
        self.membership = MembershipLog(secrets.tenant_id, secrets.admin_key)
        self._databases: dict[str, Database] = {}
        self._membership_entries: dict[bytes, Entry] = {}
        self._membership_log_seq = 0
        """The tenant log's last feed sequence when `membership` was loaded from the store."""
        self._keys_log_seq = 0
        """The tenant log's last feed sequence when the keystore's keys were last looked at."""
        self._enforced: tuple[MembershipLog, int] | None = None
        """The membership log and its `cuts_revision` that `enforce_revocations` last brought
        the store in line with."""

    # -- identity ----------------------------------------------------------------------------
    @property
    def id(self) -> bytes:
        return self._secrets.tenant_id

    @property
    def id_hex(self) -> str:
        return self._secrets.tenant_id.hex()

    @property
    def name(self) -> str:
        return self._secrets.name

    @property
    def admin_key(self) -> bytes:
        return self._secrets.admin_key

    @property
    def is_admin(self) -> bool:
        return self._secrets.admin_seed is not None

    @property
    def keyring(self) -> KeyRing:
        return self._secrets.keyring

    @property
    def secrets(self) -> TenantSecrets:
        return self._secrets

    @property
    def node(self) -> Node:
        return self._node

    def __repr__(self) -> str:
        return f"Tenant(name={self.name!r}, id={self.id_hex})"

    # -- databases ---------------------------------------------------------------------------
    def open_db(self, name: str) -> Database:
        """The database called ``name`` (created on first write; names are validated)."""
        from .database import Database

        validate_database_name(name)
        db = self._databases.get(name)
        if db is None:
            db = Database(self, name)
            self._databases[name] = db
        return db

    def forget_document(self, database: str, document_id: bytes) -> None:
        db = self._databases.get(database)
        if db is not None:
            db.forget_document(document_id)

    def create_db(self, name: str) -> Database:
        """Create (register) a database on this node; it exists for peers once written to."""
        validate_database_name(name)
        if name not in self._secrets.databases:
            self._secrets.databases.append(name)
            self._node.save_tenant(self._secrets)
        return self.open_db(name)

    def databases(self) -> list[str]:
        """Databases created here or holding at least one entry on this node, sorted."""
        stored = {d for d in self._node.store.databases(self.id) if d != TENANT_LOG}
        return sorted(stored | set(self._secrets.databases))

    # -- membership --------------------------------------------------------------------------
    def members(self) -> list[Member]:
        return self.membership.members()

    def member_name(self, signing_key: bytes) -> str | None:
        if signing_key == self.admin_key:
            return "(tenant admin)"
        for member in self.membership.members():
            if member.identity.signing_key == signing_key:
                return member.identity.name
        device = self.membership.device(signing_key)
        if device is not None:
            user = self.membership.member(device.user_key)
            user_name = user.identity.name if user is not None else "?"
            return f"{user_name} ({device.identity.name})"
        return None

    def add_member(self, identity: PublicIdentity, role: str = "member") -> Entry:
        return self._membership_entry(MembershipRecord(MembershipAction.ADD, identity, role))

    def revoke_member(
        self, identity: PublicIdentity, *, accept_through: int | None = None
    ) -> Entry:
        """Revoke a member (admin only): from now on every node rejects its new entries.

        The revocation names the last ``author_seq`` of the member that this node has stored:
        those entries stay accepted everywhere, even where they arrive later; every entry with
        a higher sequence number is rejected on arrival, or retracted where it was stored
        before the revocation got there (see :mod:`mindoo_p2p.membership`). ``accept_through``
        names another last accepted sequence number (e.g. 0: nothing of the member stays,
        when its key leaked long ago). Raises NotFoundError
        when ``identity`` was never added, MissingKeyError when this node is not the admin.
        Revoking does not rotate keys: see `rotate_key` (history the member could read stays
        readable to it either way).
        """
        member = self.membership.member(identity.signing_key)
        if member is None:
            raise NotFoundError(f"{identity} is not a member of tenant {self.name!r}")
        key = identity.signing_key
        cuts = {key: self._cut(key, accept_through)}
        for device in self.membership.devices(key):  # every device of the member, at what we hold
            held = self._stored_last_seq(device.identity.signing_key)
            cuts[device.identity.signing_key] = held if accept_through is None else 0
        return self._membership_entry(Revocation.of(key, cuts))

    def rotate_keys_held(self) -> list[TenantKey]:
        """Rotate ``default`` and every named key this node holds (admin only): what to do
        after a revocation, since nobody can know which keys a member copied. Returns the new
        versions. Later changes use them; what the revoked member could read before stays
        readable to it, and remaining members need the new versions (`Node.export_key`)."""
        names = [DEFAULT_KEY, *(n for n in self.keyring.names() if n not in RESERVED_ROTATION)]
        return [self.rotate_key(name) for name in dict.fromkeys(names)]

    def _stored_last_seq(self, signing_key: bytes) -> int:
        return self._node.store.next_author_seq(self.id, signing_key) - 1

    def _cut(self, signing_key: bytes, accept_through: int | None) -> int:
        """The last author_seq a revocation of ``signing_key`` accepts: ``accept_through``, or
        by default the highest this node holds."""
        if accept_through is None:
            return self._stored_last_seq(signing_key)
        if isinstance(accept_through, int) and accept_through >= 0:
            return accept_through
        raise ValueError("accept_through must be an int >= 0")

    # -- devices -----------------------------------------------------------------------------
    def enroll_device(self, device: PublicIdentity) -> Entry:
        """Enroll ``device`` (another node of this node's user, with its own signing key) as a
        device of this node's user, signed with this node's identity. Use `Node.enroll_device`,
        which also seals the keys for the device. Raises VerificationError when the tenant log
        refuses it (this node is not a member, is a device itself, the key is taken, ...)."""
        me = self._node.identity.signing
        if self.membership.member(me.public_key) is None:
            raise VerificationError(
                f"this node is not a member of tenant {self.name!r} (a device cannot enroll"
                " devices: enroll from the user's first node)"
            )
        return self._membership_entry(DeviceEnrolment(me.public_key, device), author=me)

    def revoke_device(self, device_key: bytes, *, accept_through: int | None = None) -> Entry:
        """Revoke one device (by its signing key): the user's other devices are untouched.

        Signed by this node's identity when it is the device's user, else by the admin key.
        The cut is the device's last entry this node holds unless ``accept_through`` says
        otherwise. NotFoundError when the key is not an enrolled device.
        """
        device = self.membership.device(device_key)
        if device is None:
            raise NotFoundError(f"{device_key.hex()[:16]} is not a device in tenant {self.name!r}")
        cut = self._cut(device_key, accept_through)
        record = DeviceRevocation(device.user_key, device_key, cut)
        me = self._node.identity.signing
        return self._membership_entry(
            record, author=me if me.public_key == device.user_key else None
        )

    def enforce_new_revocations(self) -> list[Entry]:
        """`enforce_revocations` when the revocations changed since it last ran, else nothing
        (one comparison of the cuts: cheap enough to call after every ingest)."""
        if (self.membership, self.membership.cuts_revision) == self._enforced:
            return []
        return self.enforce_revocations()

    def enforce_revocations(self) -> list[Entry]:
        """Retract the stored entries that a revocation no longer accepts; return them.

        Run after revocations land (and when the node opens, which repairs a crash between
        storing a revocation and retracting): entries stored before the revocation arrived,
        by a revoked key, above its cut, become unreadable here like on every node that
        received the revocation first. Documents they touched are dropped from the caches and
        re-materialized without them on the next read. Cheap when nothing is left to retract
        (one lookup per revoked key).
        """
        retracted: list[Entry] = []
        while True:
            stored = self._node.store.authors(self.id)
            newly: list[Entry] = []
            for key, cut in sorted(self.membership.cuts().items()):
                if stored.get(key, 0) > cut:
                    newly += self._node.store.retract_authored_after(self.id, key, cut)
            if not newly:
                self._enforced = (self.membership, self.membership.cuts_revision)
                return retracted
            retracted += newly
            for entry in newly:
                self.forget_document(entry.database, entry.document_id)
            if not any(entry.database == TENANT_LOG for entry in newly):
                continue
            self.load_membership()  # a retracted membership record changes who may write

    def _membership_entry(
        self, record: TenantLogRecord, author: SigningKeyPair | None = None
    ) -> Entry:
        """Seal and store a tenant-log record now, signed by the admin key (or ``author``),
        and return its entry. Not inside a write batch (the entry exists once the batch
        commits): use `_write_record` there."""
        if self.writer.current_batch is not None:
            raise MindooError(
                "this tenant-log change returns its stored entry: make it outside a write batch"
            )
        stored: list[Entry] = []
        self._write_record(record, author, on_sealed=stored.append)
        return stored[0]

    def _write_record(
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
        draft = self.draft(
            kind=EntryKind.MEMBERSHIP,
            database=TENANT_LOG,
            document_id=NO_DOCUMENT,
            deps=(),
            key=self.keyring.current(MEMBERSHIP_KEY),
            payload=record.encode(),
            author=author,
            on_sealed=on_sealed,
        )
        self.writer.write([draft])

    def authorize(self, entry: Entry) -> str | None:
        """Store-side check for an entry of this tenant (see `Node.authorize`)."""
        if entry.database == TENANT_LOG:
            if entry.kind is not EntryKind.MEMBERSHIP:
                return f"unexpected entry kind {entry.kind.name} in the tenant log"
            if not self.keyring.has_id(entry.header.key_id):
                return "membership record encrypted with an unknown key"
            try:
                payload = entry.decrypt(self.keyring.by_id(entry.header.key_id).secret)
                record = decode_tenant_log_record(payload)
            except (MindooError, DecodeError) as exc:
                return f"unreadable membership record: {exc}"
            reason = self.membership.authorize_record(entry, record)
            if reason is None:
                self.membership.apply(entry, record)
            return reason
        if entry.kind not in (EntryKind.CHANGE, EntryKind.DELETE):
            return f"unexpected entry kind {entry.kind.name} in database {entry.database!r}"
        if entry.document_id == NO_DOCUMENT:
            return "document entry without a document id"
        return self.membership.authorize_author(entry)

    def membership_entry_of(self, signing_key: bytes) -> Entry | None:
        """The stored tenant-log entry that added ``signing_key`` as a member, if any."""
        cached = self._membership_entries.get(signing_key)
        if cached is not None:
            return cached
        for entry in self._node.store.iter_entries(self.id, TENANT_LOG):
            if not self.keyring.has_id(entry.header.key_id):
                continue
            try:
                record = decode_tenant_log_record(
                    entry.decrypt(self.keyring.by_id(entry.header.key_id).secret)
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
        if self.membership.is_member(signing_key):
            return True
        try:
            entry = Entry.decode(evidence, "membership evidence")
        except DecodeError:
            return False
        if entry.tenant_id != self.id or entry.database != TENANT_LOG:
            return False
        self._node.ingest([entry])
        return self.membership.is_member(signing_key)

    def load_membership(self) -> None:
        """Rebuild membership state from the tenant log in the store (retracted records
        left out), applying records until no more apply (a record stored before what it
        builds on applies on a later pass)."""
        self.membership = MembershipLog(self.id, self.admin_key)
        self._membership_log_seq = self._node.store.last_seq(self.id, TENANT_LOG)
        pending = list(self._node.store.iter_entries(self.id, TENANT_LOG))
        pending.sort(key=lambda e: (e.header.author_seq, e.timestamp_ms))
        while pending:
            left = [entry for entry in pending if self.authorize(entry) is not None]
            if len(left) == len(pending):
                return
            pending = left

    def refresh_membership(self) -> None:
        """Bring membership up to date with the stored tenant log when it grew since it was
        loaded (another process that has the home open, the CLI or a script, wrote to it), then
        retract what revocations new to this process no longer accept. One read when nothing
        changed. A record this process stored itself also counts as growth (one rebuild)."""
        if self._node.store.last_seq(self.id, TENANT_LOG) != self._membership_log_seq:
            self.load_membership()
        if not self._node.store.readonly:
            self.enforce_new_revocations()

    # -- named keys --------------------------------------------------------------------------
    def create_key(self, name: str) -> TenantKey:
        """Create a named key (version 1, random id), keep it in the keystore and announce its
        id, name and version (never its secret) in the tenant log. Admin only.

        Raises :class:`MissingKeyError` on a node without the admin key and
        :class:`InvalidNameError` for a bad or reserved name or a name already in use. The key
        is saved before it is announced: a crash in between leaves a held, unannounced key
        (listed by :meth:`key_directory`), never an announced key whose secret is lost.
        """
        validate_key_name(name)
        if name in (DEFAULT_KEY, MEMBERSHIP_KEY):
            raise InvalidNameError(f"key name {name!r} is reserved")
        if not self.is_admin:
            raise MissingKeyError(
                f"this node does not hold the admin key of tenant {self.name!r}:"
                " only the tenant admin can create keys"
            )
        if name in self.key_names():
            raise InvalidNameError(f"a key called {name!r} exists already in tenant {self.name!r}")
        key = TenantKey.generate(name)
        self.keyring.add(key)
        self._node.save_tenant(self._secrets)
        self._write_record(KeyAnnouncement(key.key_id, key.name, key.version))
        return key

    def rotate_key(self, name: str) -> TenantKey:
        """Create the next version of key ``name`` (newest known version + 1, new random id,
        new secret), keep it in the keystore and announce it in the tenant log. Admin only.

        From then on this node writes with the new version (:meth:`KeyRing.current`), for new
        documents and for new changes to older ones; holders of older versions still read what
        those versions sealed. Works for named keys and for ``default``; older versions held
        here but never announced (``default`` version 1, a key whose announcement a crash
        prevented) are announced in the same write batch, so every version can travel in key
        files. Raises :class:`MissingKeyError` without the admin key or without the key
        itself, :class:`InvalidNameError` for ``$membership`` or a bad name,
        :class:`NotFoundError` for a key the tenant does not have. Like :meth:`create_key`,
        the key is saved before it is announced.
        """
        validate_key_name(name)
        if name == MEMBERSHIP_KEY:
            raise InvalidNameError(f"the {MEMBERSHIP_KEY!r} key cannot be rotated")
        if not self.is_admin:
            raise MissingKeyError(
                f"this node does not hold the admin key of tenant {self.name!r}:"
                " only the tenant admin can rotate keys"
            )
        versions = [info for info in self.key_directory() if info.name == name]
        if not versions:
            raise NotFoundError(f"no key {name!r} in tenant {self.name!r}")
        held = [info for info in versions if info.held]
        if not held:
            raise MissingKeyError(f"no key {name!r} on this node: it cannot be rotated here")
        newest = max(info.version for info in versions)
        if newest >= MAX_KEY_VERSION:
            raise InvalidNameError(f"key {name!r} has reached its last version {newest}")
        key = TenantKey.generate(name, version=newest + 1)
        self.keyring.add(key)
        self._node.save_tenant(self._secrets)
        with self.writer.batch():
            for info in held:
                if not info.announced:
                    self._write_record(KeyAnnouncement(info.key_id, name, info.version))
            self._write_record(KeyAnnouncement(key.key_id, key.name, key.version))
        return key

    def shred_key(self, name: str) -> list[int]:
        """Crypto-shredding: destroy every version of key ``name`` held on this node, so that
        this node can never read again what those versions sealed. Returns the destroyed
        versions, sorted. Any member may shred its own copies; the admin too.

        Steps, each safe to crash after (a crash before step 3 leaves the key held: run it
        again): 1. find the documents of this tenant with at least one entry sealed under the
        key (entry headers only, no decryption; one scan of the tenant's entries) or a snapshot
        sealed under it; 2. delete their snapshot rows: a snapshot is materialized state, and a
        document mixing keys may have one under another key; 3. remove the versions from the
        keyring in place (every `Database` of the tenant shares it) and save the keystore (on
        failure they are put back and the error raised); 4. drop those documents from the
        in-memory caches. Reading them then raises "no key 'NAME' for this document".

        The log is never touched: the entries stay stored, verified, listed and synced, as
        ciphertext. Erasure is complete only once every other holder shreds too and every
        key file exported earlier is destroyed (see docs/architecture.md). Older copies of
        the keystore file (backups, file-system snapshots) still hold the key under the
        password.

        Raises :class:`InvalidNameError` for ``default`` (every document not under a named
        key would become unreadable: rotate it instead), ``$membership`` (the tenant log
        needs it) or a bad name, :class:`MissingKeyError` when this node holds no version
        of the key, :class:`MindooError` inside a write batch.
        """
        validate_key_name(name)
        if name == DEFAULT_KEY:
            raise InvalidNameError(
                f"the {DEFAULT_KEY!r} key cannot be shredded: every document not under a named"
                " key would become unreadable; rotate it instead, and keep personal data under"
                " named keys so that it can be shredded"
            )
        if name == MEMBERSHIP_KEY:
            raise InvalidNameError(
                f"the {MEMBERSHIP_KEY!r} key cannot be shredded: it opens the tenant log"
                " (members and key announcements), which every member and mirror needs"
            )
        doomed = [key for key in self.keyring if key.name == name]
        if not doomed:
            raise MissingKeyError(f"no key {name!r} on this node: there is nothing to shred")
        if self.writer.current_batch is not None:
            raise MindooError("a key cannot be shredded inside a write batch")
        doomed_ids = {key.key_id for key in doomed}
        store = self._node.store
        affected: dict[str, set[bytes]] = {}
        for database in store.databases(self.id):
            if database == TENANT_LOG:
                continue
            found = affected.setdefault(database, set())
            for entry in store.iter_entries(self.id, database):
                if entry.header.key_id in doomed_ids:
                    found.add(entry.document_id)
            for document_id in store.documents(self.id, database):
                snapshot = store.get_snapshot(self.id, database, document_id)
                if snapshot is not None and snapshot[1][:16] in doomed_ids:
                    found.add(document_id)
        for database, document_ids in affected.items():
            store.delete_snapshots(self.id, database, document_ids)
        for key in doomed:
            self.keyring.discard(key.key_id)
        try:
            self._node.save_tenant(self._secrets, dropped_key_ids=doomed_ids)
        except BaseException:
            for key in doomed:
                self.keyring.add(key)
            raise
        for database, document_ids in affected.items():
            for document_id in document_ids:
                self.forget_document(database, document_id)
        return sorted(key.version for key in doomed)

    def key_directory(self) -> list[KeyInfo]:
        """Every key version this node knows of: announced in the tenant log, held here, or
        both; sorted by name and version. Secrets are not part of it."""
        infos: dict[bytes, KeyInfo] = {}
        for announced in self.membership.key_directory():
            infos[announced.key_id] = KeyInfo(
                announced.key_id,
                announced.name,
                announced.version,
                held=self.keyring.has_id(announced.key_id),
                announced=True,
            )
        for key in self.keyring:
            if key.key_id not in infos:
                infos[key.key_id] = KeyInfo(
                    key.key_id, key.name, key.version, held=True, announced=False
                )
        return sorted(infos.values(), key=lambda k: (k.name, k.version, k.key_id))

    def key_names(self) -> list[str]:
        """The names of every key announced in the tenant log or held here, sorted."""
        return sorted({info.name for info in self.key_directory()})

    def key_name_for(self, key_id: bytes) -> str | None:
        """The name of the key with this id (from the keys held, else the tenant log)."""
        if self.keyring.has_id(key_id):
            return self.keyring.by_id(key_id).name
        announced = self.membership.announced_key(key_id)
        return announced.name if announced is not None else None

    def key_label(self, key_id: bytes) -> str:
        """``'name'`` for error messages, or the key id in hex when the name is unknown."""
        name = self.key_name_for(key_id)
        return repr(name) if name is not None else key_id.hex()

    def announcement_entries(self, key_ids: Sequence[bytes]) -> list[Entry]:
        """The stored tenant-log entries that announced these key ids (those found)."""
        wanted = {self.membership.announced_key(k) for k in key_ids}
        entry_ids = {a.entry_id for a in wanted if a is not None}
        found = (self._node.store.get(entry_id) for entry_id in sorted(entry_ids))
        return [entry for entry in found if entry is not None]

    # -- sealing -----------------------------------------------------------------------------
    @property
    def writer(self) -> EntryWriter:
        """Seals and stores this node's own entries (numbered inside the write transaction)."""
        return self._node.writer

    def draft(
        self,
        *,
        kind: EntryKind,
        database: str,
        document_id: bytes,
        deps: Sequence[Dependency],
        key: TenantKey,
        payload: bytes,
        author: SigningKeyPair | None = None,
        change_hash: bytes | None = None,
        on_sealed: Callable[[Entry], None] | None = None,
    ) -> Draft:
        """An own entry of this tenant to hand to `writer`: signed by ``author`` (this node's
        identity by default), stamped now; its sequence number is given when it is sealed."""
        return Draft(
            kind=kind,
            tenant_id=self.id,
            database=database,
            document_id=document_id,
            signer=author or self._node.identity.signing,
            key=key,
            payload=payload,
            timestamp_ms=now_ms(),
            deps=tuple(deps),
            change_hash=change_hash,
            on_sealed=on_sealed,
        )

    def key_for_writing(self, key_id: bytes | None, name: str = DEFAULT_KEY) -> TenantKey:
        """The newest version of the key a document uses (given one of its key ids), or of
        key ``name`` for a new document.

        Every new key version is announced in the tenant log, so when the stored log grew
        (one read), the keystore is looked at for versions another process that has this home
        open saved (`Node.learn_saved_keys`): a rotation there is used here from the next
        write on, not after a restart.
        """
        log_seq = self._node.store.last_seq(self.id, TENANT_LOG)
        if log_seq != self._keys_log_seq:
            self._keys_log_seq = log_seq
            self._node.learn_saved_keys(self._secrets)
        if key_id is not None:
            if not self.keyring.has_id(key_id):
                raise MissingKeyError(f"no key {self.key_label(key_id)} for this document")
            name = self.keyring.by_id(key_id).name
        return self.keyring.current(name)

    def find_database(self, name: str) -> Database:
        if name not in self.databases() and name not in self._databases:
            raise NotFoundError(f"no database {name!r} in tenant {self.name!r}")
        return self.open_db(name)
