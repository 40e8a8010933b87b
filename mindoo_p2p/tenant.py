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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .crypto import SigningKeyPair
from .entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind, validate_database_name
from .errors import DecodeError, InvalidNameError, MindooError, MissingKeyError, NotFoundError
from .identity import PublicIdentity
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey, validate_key_name
from .membership import (
    MAX_KEY_VERSION,
    KeyAnnouncement,
    Member,
    MembershipAction,
    MembershipLog,
    MembershipRecord,
    TenantLogRecord,
    decode_tenant_log_record,
)

if TYPE_CHECKING:
    from .database import Database
    from .node import Node

TENANT_NAME_MAX = 128


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
        return None

    def add_member(self, identity: PublicIdentity, role: str = "member") -> Entry:
        return self._membership_entry(MembershipRecord(MembershipAction.ADD, identity, role))

    def revoke_member(self, identity: PublicIdentity) -> Entry:
        return self._membership_entry(MembershipRecord(MembershipAction.REVOKE, identity, "member"))

    def _membership_entry(self, record: TenantLogRecord) -> Entry:
        if self._secrets.admin_seed is None:
            what = "create keys" if isinstance(record, KeyAnnouncement) else "change membership"
            raise MissingKeyError(
                f"this node does not hold the admin key of tenant {self.name!r}:"
                f" only the tenant admin can {what}"
            )
        admin = SigningKeyPair(self._secrets.admin_seed)
        entry = self.seal(
            kind=EntryKind.MEMBERSHIP,
            database=TENANT_LOG,
            document_id=NO_DOCUMENT,
            deps=(),
            key=self.keyring.current(MEMBERSHIP_KEY),
            payload=record.encode(),
            author=admin,
        )
        self._node.commit([entry])
        return entry

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
        """Rebuild membership state from the tenant log in the store."""
        self.membership = MembershipLog(self.id, self.admin_key)
        entries = list(self._node.store.iter_entries(self.id, TENANT_LOG))
        entries.sort(key=lambda e: (e.header.author_seq, e.timestamp_ms))
        for entry in entries:
            self.authorize(entry)

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
        self._membership_entry(KeyAnnouncement(key.key_id, key.name, key.version))
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
        with self._node.batch():
            for info in held:
                if not info.announced:
                    self._membership_entry(KeyAnnouncement(info.key_id, name, info.version))
            self._membership_entry(KeyAnnouncement(key.key_id, key.name, key.version))
        return key

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
    def seal(
        self,
        *,
        kind: EntryKind,
        database: str,
        document_id: bytes,
        deps: Sequence[bytes],
        key: TenantKey,
        payload: bytes,
        author: SigningKeyPair | None = None,
    ) -> Entry:
        signer = author or self._node.identity.signing
        return Entry.seal(
            kind=kind,
            tenant_id=self.id,
            database=database,
            document_id=document_id,
            author=signer,
            author_seq=self._node.next_author_seq(self.id, signer.public_key),
            timestamp_ms=now_ms(),
            deps=tuple(deps),
            key_id=key.key_id,
            key=key.secret,
            payload=payload,
        )

    def key_for_writing(self, key_id: bytes | None, name: str = DEFAULT_KEY) -> TenantKey:
        """The newest version of the key a document uses (given one of its key ids)."""
        if key_id is not None:
            if not self.keyring.has_id(key_id):
                raise MissingKeyError(f"no key {self.key_label(key_id)} for this document")
            name = self.keyring.by_id(key_id).name
        return self.keyring.current(name)

    def find_database(self, name: str) -> Database:
        if name not in self.databases() and name not in self._databases:
            raise NotFoundError(f"no database {name!r} in tenant {self.name!r}")
        return self.open_db(name)
