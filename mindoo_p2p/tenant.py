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
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from .membership import Member, MembershipAction, MembershipLog, MembershipRecord

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

    def _membership_entry(self, record: MembershipRecord) -> Entry:
        if self._secrets.admin_seed is None:
            raise MissingKeyError(
                f"this node does not hold the admin key of tenant {self.name!r}:"
                " only the tenant admin can change membership"
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
                record = MembershipRecord.decode(payload)
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
                record = MembershipRecord.decode(
                    entry.decrypt(self.keyring.by_id(entry.header.key_id).secret)
                )
            except MindooError:
                continue
            if record.action is MembershipAction.ADD:
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
                raise MissingKeyError(f"no key for this document on this node ({key_id.hex()})")
            name = self.keyring.by_id(key_id).name
        return self.keyring.current(name)

    def find_database(self, name: str) -> Database:
        if name not in self.databases() and name not in self._databases:
            raise NotFoundError(f"no database {name!r} in tenant {self.name!r}")
        return self.open_db(name)
