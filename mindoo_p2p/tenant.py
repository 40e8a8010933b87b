"""Tenants: an organisation or group, created on a device, with members, keys and databases.

A tenant is identified by 16 bytes derived from its admin public key (`tenant_secrets`). The
admin key signs the membership records of the tenant log; the creator's node holds it. Every
member holds the tenant's default key (documents) and membership key (the tenant log).

`Tenant` composes two parts and its databases, and holds no reference to the node:

- its *access work* (`tenant_access.TenantAccess`): members, devices, revocation, the
  membership snapshot the admission pipeline checks against;
- its *key work* (`tenant_keys.TenantKeys`): create, rotate, shred, export and import keys.

Its collaborators are narrow (`tenant_collaborators`): the entry store (reads), an
`EntryWriter` (numbers, seals and commits this node's entries: the tenant hands it `Draft`s,
made by `Tenant.draft`), a `SaveSecrets` and a `LearnSavedKeys` function (the keystore) and an
`Ingest` function (the admission pipeline, for records received directly), and a `QueriesOf`
function (the node's query index, which its databases' `query`, `count` and `search` use).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from . import admission
from .crypto import SigningKeyPair
from .crypto.keystore import KdfProfile
from .database import Database
from .device_request import DeviceRequest
from .entry import TENANT_LOG, Entry, EntryKind, validate_database_name
from .errors import UnknownDatabaseError
from .identity import PublicIdentity, UserIdentity
from .key_transfer import KeyFile
from .keyring import DEFAULT_KEY, KeyRing, TenantKey
from .membership import Member, MembershipLog
from .membership_records import TenantLogRecord
from .store import EntryStore
from .tenant_access import RevocationPlan, TenantAccess
from .tenant_collaborators import (
    DatabaseQueries,
    EntryWriter,
    Ingest,
    LearnSavedKeys,
    QueriesOf,
    SaveSecrets,
)
from .tenant_keys import RESERVED_ROTATION, KeyImport, KeyInfo, TenantKeys
from .tenant_secrets import (
    TENANT_NAME_MAX,
    TenantSecrets,
    now_ms,
    tenant_id_for,
    validate_tenant_name,
)
from .writer import Dependency, Draft

__all__ = [
    "RESERVED_ROTATION",
    "TENANT_NAME_MAX",
    "KeyInfo",
    "Tenant",
    "TenantSecrets",
    "now_ms",
    "tenant_id_for",
    "validate_tenant_name",
]


class Tenant:
    """A tenant as this node sees it. Obtain it from `Node.create_tenant` / `Node.tenant`."""

    def __init__(
        self,
        secrets: TenantSecrets,
        *,
        identity: UserIdentity,
        store: EntryStore,
        writer: EntryWriter,
        save_secrets: SaveSecrets,
        learn_saved_keys: LearnSavedKeys,
        ingest: Ingest,
        queries: QueriesOf,
    ) -> None:
        self._secrets = secrets
        self._identity = identity
        self._store = store
        self._writer = writer
        self._save_secrets = save_secrets
        self._learn_saved_keys = learn_saved_keys
        self._databases: dict[str, Database] = {}
        self.access = TenantAccess(
            secrets,
            identity=identity,
            store=store,
            writer=writer,
            ingest=ingest,
            forget_document=self.forget_document,
        )
        """Members, devices and revocation."""
        self.keys = TenantKeys(
            secrets,
            identity=identity,
            store=store,
            writer=writer,
            save_secrets=save_secrets,
            learn_saved_keys=learn_saved_keys,
            ingest=ingest,
            access=self.access,
            forget_document=self.forget_document,
        )
        """Create, rotate, shred, export and import keys."""
        self._queries = queries
        """The node's query index, for `Database.query`, `count` and `search`."""

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
    def identity(self) -> UserIdentity:
        """This node's user identity in this tenant (who signs what this node writes here,
        and its sync proofs): the tenant's own (`TenantSecrets.identity`), or the node's for a
        tenant from before per-tenant identities."""
        return self._identity

    @property
    def store(self) -> EntryStore:
        return self._store

    @property
    def writer(self) -> EntryWriter:
        return self._writer

    def __repr__(self) -> str:
        return f"Tenant(name={self.name!r}, id={self.id_hex})"

    # -- databases ---------------------------------------------------------------------------
    def database_queries(self) -> DatabaseQueries:
        """The queries its databases answer (`Database.query`): the node's query index."""
        return self._queries()

    # A database exists here when it was created here (`create_db`, kept in the keystore) or
    # holds at least one entry (written here, or received by sync, gossip, a bundle), and was
    # not forgotten since (`forget_db`). Nothing else makes one: opening, reading or writing a
    # name that does not exist raises `UnknownDatabaseError` (a typo never becomes a database
    # that replicates everywhere).
    def open_db(self, name: str) -> Database:
        """The existing database called ``name``; `UnknownDatabaseError` (naming the existing
        ones and the closest name) when there is none. `create_db` makes one."""
        validate_database_name(name)
        db = self._databases.get(name)
        if db is None or name in self._secrets.forgotten:
            self.require_database(name)
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
        """Create (register) a database on this node, or open it when it exists; a forgotten
        one replicates again. Peers see it once it holds an entry."""
        validate_database_name(name)
        if name not in self._secrets.databases or name in self._secrets.forgotten:
            self._save_secrets(self._secrets, created_database=name)
        return self.open_db(name)

    def forget_db(self, name: str) -> None:
        """Stop holding database ``name`` here: it is no longer listed, opened, written, read,
        offered to peers, asked for, or subscribed to by gossip, and entries of it that arrive
        are refused (`RejectionKind.NOT_REPLICATED`, nobody's fault). Its stored entries stay
        in the store (append-only, sealed as ever) and are still served to members that ask
        for them; `create_db` brings it back with nothing to fetch again. Peers are not told:
        they keep it. `UnknownDatabaseError` when it does not exist."""
        self.require_database(name)
        self._save_secrets(self._secrets, forgotten_database=name)
        self._databases.pop(name, None)

    def replicates(self, name: str) -> bool:
        """False for a database forgotten here (`forget_db`); the tenant log always is."""
        return name not in self._secrets.forgotten

    def forgotten_databases(self) -> list[str]:
        """The databases forgotten here, sorted."""
        return sorted(self._secrets.forgotten)

    def databases(self) -> list[str]:
        """Databases created here or holding at least one entry on this node and not forgotten,
        sorted."""
        stored = {d for d in self._store.databases(self.id) if d != TENANT_LOG}
        return sorted((stored | set(self._secrets.databases)) - set(self._secrets.forgotten))

    def has_database(self, name: str) -> bool:
        """Whether database ``name`` exists here (see `databases`)."""
        if name in self._secrets.forgotten:
            return False
        return name in self._secrets.databases or name in self._store.databases(self.id)

    def require_database(self, name: str) -> None:
        """`UnknownDatabaseError` unless database ``name`` exists here. A miss looks at the
        keystore once (another process that has this home open may have created it)."""
        if name in self._databases and name not in self._secrets.forgotten:
            return  # opened here before, so it existed, and not forgotten since
        if self.has_database(name):
            return
        self._learn_saved_keys(self._secrets)
        if self.has_database(name):
            return
        existing = self.databases()
        close = difflib.get_close_matches(name, existing, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
        forgotten = name in self._secrets.forgotten
        listed = ", ".join(existing) if existing else "none"
        if forgotten:
            message = (
                f"database {name!r} of tenant {self.name!r} was forgotten on this node"
                " ('mindoo db create' or Tenant.create_db holds it again)"
            )
        else:
            hint = f"; did you mean {suggestion!r}?" if suggestion else ""
            message = (
                f"no database {name!r} in tenant {self.name!r}{hint} (databases: {listed};"
                " create one with 'mindoo db create' or Tenant.create_db)"
            )
        raise UnknownDatabaseError(
            message,
            database=name,
            tenant=self.name,
            existing=existing,
            suggestion=suggestion,
            forgotten=forgotten,
        )

    def find_database(self, name: str) -> Database:
        """`open_db` (kept for callers that named the check)."""
        return self.open_db(name)

    # -- drafting ----------------------------------------------------------------------------
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
        identity by default), stamped now (`writer.now_ms`); its sequence number is given when
        it is sealed, inside the write transaction that stores it."""
        return Draft(
            kind=kind,
            tenant_id=self.id,
            database=database,
            document_id=document_id,
            signer=author or self._identity.signing,
            key=key,
            payload=payload,
            deps=tuple(deps),
            change_hash=change_hash,
            on_sealed=on_sealed,
        )

    # -- access work (TenantAccess) ------------------------------------------------------------
    @property
    def membership(self) -> MembershipLog:
        """The tenant's current membership: an immutable snapshot (never mutated once
        published; `publish_membership` replaces it), safe to read from any thread."""
        return self.access.membership

    def publish_membership(self, membership: MembershipLog) -> None:
        """Make ``membership`` the current snapshot: after the entries that built it are
        committed (`Node.ingest`), or when rebuilt from the store."""
        self.access.publish_membership(membership)

    def publish_committed(self, membership: MembershipLog, log_entries: int) -> None:
        """`publish_membership` for the snapshot a commit of ``log_entries`` tenant-log
        records built (see `TenantAccess.publish_committed`); then keep the membership key
        versions it grants to this node."""
        self.access.publish_committed(membership, log_entries)
        if log_entries:
            self.keys.learn_granted_keys()

    def view(self) -> admission.TenantView:
        """What the admission pipeline checks this tenant's entries against (a snapshot)."""
        return self.access.view()

    def load_membership(self) -> None:
        """Rebuild membership state from the tenant log in the store (retracted records
        left out), applying records until no more apply (a record stored before what it
        builds on applies on a later pass): the admission pipeline's rule."""
        self.access.load_membership()
        self.keys.learn_granted_keys()

    def refresh_membership(self) -> None:
        """Bring membership up to date with the stored tenant log when another process that
        has this home open wrote to it, then enforce revocations new to this process."""
        self.access.refresh_membership()
        self.keys.learn_granted_keys()

    def members(self) -> list[Member]:
        return self.access.members()

    def member_name(self, signing_key: bytes) -> str | None:
        return self.access.member_name(signing_key)

    def add_member(self, identity: PublicIdentity, role: str = "member") -> Entry:
        return self.access.add_member(identity, role)

    def revoke_member(
        self,
        identity: PublicIdentity,
        *,
        accept_through: int | None = None,
        accept_entry: bytes | None = None,
    ) -> Entry:
        """Revoke a member (admin only): from now on every node rejects its new entries.

        The revocation names the last entry of the member it accepts, by ``author_seq`` and
        entry id: by default the end of the member's unbroken chain here (1, 2, 3, ... with no
        gap and no fork: an entry numbered far above what the member wrote pre-empts nothing).
        That entry and its predecessors stay accepted everywhere, even where they arrive later;
        every entry with a higher sequence number is rejected on arrival, or retracted where
        it was stored before the revocation got there, and an entry minted later below the cut
        is a fork (see :mod:`mindoo_p2p.chains`). ``accept_through`` names another last
        accepted sequence number (e.g. 0: nothing of the member stays, when its key leaked long
        ago), ``accept_entry`` another last accepted entry (by id; it must be stored here).
        `revocation_plan` says what the cut would be and warns about gaps. Raises
        NotFoundError when ``identity`` was never added (or ``accept_entry`` is not its entry),
        MissingKeyError when this node is not the admin.

        The membership key is rotated in the same batch: the new version is granted (sealed)
        to every remaining member, mirror and device in the tenant log itself, so the revoked
        member cannot read the log's later records (`membership_key_grant`). Document keys
        are not rotated here: see `rotate_keys_held` (history the member could read stays
        readable to it either way).
        """
        with_records: list[TenantLogRecord] = []
        member = self.access.membership.member(identity.signing_key)
        if self.is_admin and member is not None and member.active:  # revoked once: rotated
            excluded = self.access.signing_keys_of(identity)
            with_records = self.keys.prepare_membership_rotation(excluded)
        return self.access.revoke_member(
            identity,
            accept_through=accept_through,
            accept_entry=accept_entry,
            with_records=with_records,
        )

    def revocation_plan(
        self,
        identity: PublicIdentity,
        *,
        accept_through: int | None = None,
        accept_entry: bytes | None = None,
    ) -> RevocationPlan:
        """The revocation `revoke_member` would write with these arguments, and the warnings
        (gaps, forks) its author should see. Writes nothing (nor the membership key's rotation
        `revoke_member` adds to the batch)."""
        return self.access.revocation_plan(
            identity, accept_through=accept_through, accept_entry=accept_entry
        )

    def enroll_device(self, request: DeviceRequest) -> Entry:
        """Enroll the device that made ``request`` (another node of this node's user, with its
        own signing key, which signed the request) as a device of this node's user, signed
        with this node's identity. Use `Node.enroll_device`, which also seals the keys for
        the device. Raises VerificationError when the request is not for this user or not
        signed by the device, or the tenant log refuses it (this node is not a member, is a
        device itself, the key is a member's, ...)."""
        return self.access.enroll_device(request)

    def revoke_device(self, device_key: bytes, *, accept_through: int | None = None) -> Entry:
        """Revoke one device (by its signing key): the user's other devices are untouched.

        Signed by the admin key on the admin's node, which also rotates the membership key
        (see `revoke_member`); else by this node's identity when it is the device's user (no
        rotation: only the admin grants membership keys). The cut is the device's last entry
        this node holds unless ``accept_through`` says otherwise. NotFoundError when the key
        is not an enrolled device.
        """
        with_records: list[TenantLogRecord] = []
        device = self.access.membership.device(device_key)
        if self.is_admin and device is not None and device.active:
            with_records = self.keys.prepare_membership_rotation({device_key})
        return self.access.revoke_device(
            device_key, accept_through=accept_through, with_records=with_records
        )

    def enforce_new_revocations(self) -> list[Entry]:
        """`enforce_revocations` when the revocations changed since it last ran, else nothing
        (one comparison of the cuts: cheap enough to call after every ingest)."""
        return self.access.enforce_new_revocations()

    def enforce_revocations(self) -> list[Entry]:
        """Retract the stored entries that a revocation no longer accepts; return them.

        Run after revocations land (and when the node opens, which repairs a crash between
        storing a revocation and retracting): entries stored before the revocation arrived,
        by a revoked key, above its cut, become unreadable here like on every node that
        received the revocation first. Documents they touched are dropped from the caches and
        re-materialized without them on the next read. Cheap when nothing is left to retract
        (one lookup per revoked key).
        """
        return self.access.enforce_revocations()

    def _membership_entry(
        self, record: TenantLogRecord, author: SigningKeyPair | None = None
    ) -> Entry:
        """Seal and store a tenant-log record now, signed by the admin key (or ``author``),
        and return its entry (not inside a write batch)."""
        return self.access.append_record(record, author)

    def membership_entry_of(self, signing_key: bytes) -> Entry | None:
        """The stored tenant-log entry that added ``signing_key`` as a member, if any."""
        return self.access.membership_entry_of(signing_key)

    def admit(self, signing_key: bytes, evidence: bytes) -> bool:
        """Store ``evidence`` (a sealed membership entry from a peer) if it is valid, then say
        whether ``signing_key`` is a current member. Nothing unverified is trusted."""
        return self.access.admit(signing_key, evidence)

    # -- key work (TenantKeys) -----------------------------------------------------------------
    def create_key(self, name: str) -> TenantKey:
        """Create a named key (version 1, random id), keep it in the keystore and announce its
        id, name and version (never its secret) in the tenant log. Admin only.

        Raises :class:`MissingKeyError` on a node without the admin key and
        :class:`InvalidNameError` for a bad or reserved name or a name already in use. The key
        is saved before it is announced: a crash in between leaves a held, unannounced key
        (listed by :meth:`key_directory`), never an announced key whose secret is lost.
        """
        return self.keys.create_key(name)

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
        return self.keys.rotate_key(name)

    def rotate_keys_held(self) -> list[TenantKey]:
        """Rotate ``default`` and every named key this node holds (admin only): what to do
        after a revocation, since nobody can know which keys a member copied. Returns the new
        versions. Later changes use them; what the revoked member could read before stays
        readable to it, and remaining members need the new versions (`Node.export_key`)."""
        return self.keys.rotate_keys_held()

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
        return self.keys.shred_key(name)

    def key_directory(self) -> list[KeyInfo]:
        """Every key version this node knows of: announced in the tenant log, held here, or
        both; sorted by name and version. Secrets are not part of it."""
        return self.keys.key_directory()

    def key_names(self) -> list[str]:
        """The names of every key announced in the tenant log or held here, sorted."""
        return self.keys.key_names()

    def key_name_for(self, key_id: bytes) -> str | None:
        """The name of the key with this id (from the keys held, else the tenant log)."""
        return self.keys.key_name_for(key_id)

    def key_label(self, key_id: bytes) -> str:
        """``'name'`` for error messages, or the key id in hex when the name is unknown."""
        return self.keys.key_label(key_id)

    def announcement_entries(self, key_ids: Sequence[bytes]) -> list[Entry]:
        """The stored tenant-log entries that announced these key ids (those found)."""
        return self.keys.announcement_entries(key_ids)

    def key_for_writing(self, key_id: bytes | None, name: str = DEFAULT_KEY) -> TenantKey:
        """The newest version of the key a document uses (given one of its key ids), or of
        key ``name`` for a new document; versions another process that has this home open
        saved are picked up once the stored tenant log announces them."""
        return self.keys.key_for_writing(key_id, name)

    def export_key(
        self,
        name: str,
        *,
        to: PublicIdentity | None = None,
        password: str | None = None,
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> bytes:
        """A key file of key ``name`` (see `Node.export_key`)."""
        return self.keys.export_key(name, to=to, password=password, kdf=kdf)

    def import_key_file(self, key_file: KeyFile, password: str | None = None) -> KeyImport:
        """Import a key file of this tenant (see `Node.import_key`)."""
        return self.keys.import_file(key_file, password)
