"""The node: one device's home directory opened with its password.

`Node` is the embedding API: tenants, databases, documents, invites, import/export and fsck all
start here. It opens and closes the home (`node_home` lays it out: keystore, identity, store)
and composes the parts that do the work, each named for what it is:

=====================  ========================================================================
part                   what it owns
=====================  ========================================================================
`tenant_registry`      the tenants held, by id; lookups by name, id or id prefix
                       (`TenantRegistry`)
`intake`               where entries enter: `ingest` from elsewhere, the own-write hooks, the
                       listeners (`EntryIntake`)
`writer`               numbers, seals and commits own entries in the write transaction
                       (`LocalWriter`)
`invitations`          invites, device enrolments, joining (`Invitations`)
`restore_guard`        tenants restored from a recovery kit, refusing own writes until synced
`index` / `views`      the query index and view definitions (opened on first use)
=====================  ========================================================================

The node composes each `Tenant` with its narrow collaborators (never the node itself) and keeps
the tenants' secrets in the keystore (`tenant_keystore`). It is meant for one thread (the
daemon's trio thread, a script, the CLI); two processes may open the same home at once (LMDB
and the keystore lock serialise their writes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sealing_ahead
from .admission import VerifiedEntry
from .crypto.keystore import KdfProfile, Keystore
from .crypto.signing import SigningKeyPair
from .crypto.verify_workers import check_workers_setting
from .device_request import DeviceRequest
from .entry import Entry
from .entry_intake import EntryIntake
from .errors import InvalidNameError, KeystoreError, MindooError, NotFoundError
from .home_files import IDENTITY_FILE, ensure_identity_file, secure_home, write_private
from .identity import PublicIdentity, UserIdentity
from .index import QueryIndex, ViewCatalog, index_path
from .invite_identities import WaitingInviteIdentities
from .key_transfer import KeyFile, read_key_file
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from .membership_records import KeyAnnouncement, MembershipAction, MembershipRecord
from .node_home import (
    KEYSTORE_FILE,
    KEYSTORE_FORMAT,
    STORE_DIR,
    build_restored_home,
    check_new_node_password,
    check_restore_target,
    default_home,
    is_initialized,
    keystore_secret,
    replace_keystore_secret,
)
from .node_invites import Invitations
from .recovery import RecoveryKit, read_recovery_kit
from .restore_guard import RestoreGuard, Settlement
from .store import AppendResult, EntryStore, FsckProblem, FsckReport
from .tenant import Tenant, TenantSecrets, tenant_id_for, validate_tenant_name
from .tenant_keystore import learn_saved_keys, save_tenant_secrets
from .tenant_registry import TenantRegistry
from .writer import LocalWriter


class Node:
    """A node opened from its home directory. Use `Node.init` once, then `Node.open`."""

    def __init__(self, home: Path, keystore: Keystore, store: EntryStore) -> None:
        self.home = home
        self._keystore = keystore
        self.store = store
        contents = keystore.read()
        self.identity = UserIdentity.from_secret_dict(contents["identity"])
        self._index: QueryIndex | None = None
        self.tenant_registry = TenantRegistry()
        """The tenants this node holds (`tenants`, `tenant` and `tenant_or_none` read it)."""
        self.restore_guard = RestoreGuard(keystore, contents)
        """The tenants restored from a recovery kit that refuse own writes until a sync or
        the user's confirmation (`mindoo_p2p.restore_guard`)."""
        self.intake = EntryIntake(store, self.tenant_registry, self.restore_guard)
        """Where entries enter this node: `ingest`, the own-write hooks, the listeners."""
        self.writer = LocalWriter(
            store,
            self.intake.admit_own,
            before_commit=self.intake.check_own_writes,
            on_committed=self.intake.own_entries_stored,
            on_discarded=self.intake.own_drafts_discarded,
            seal_ahead=sealing_ahead.for_store(store),
        )
        """Numbers, seals and stores this node's own entries inside the write transaction,
        admitted by the admission pipeline (see `mindoo_p2p.writer`): what tenants and
        databases write through."""
        self.invitations = Invitations(
            self.identity,
            store,
            self.tenant_registry,
            WaitingInviteIdentities(keystore, self.identity.name),
            save_tenant=self.save_tenant,
            adopt=self._adopt,
            ingest=self.ingest,
        )
        """Invites, device enrolments and joining (`mindoo_p2p.node_invites`)."""
        self._load_tenants(contents)

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        home: Path | str,
        password: str,
        *,
        name: str | None = None,
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> Node:
        """Create a node home with a fresh user identity. Fails if one exists already."""
        home = Path(home).expanduser()
        if is_initialized(home):
            raise KeystoreError(f"a node already exists in {home}")
        check_new_node_password(password)
        check_workers_setting()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = UserIdentity.generate(name or os.environ.get("USER") or "mindoo user")
        Keystore.create(
            home / KEYSTORE_FILE,
            password,
            {"format": KEYSTORE_FORMAT, "identity": identity.to_secret_dict(), "tenants": {}},
            kdf=kdf,
        )
        write_private(home / IDENTITY_FILE, identity.public().to_json().encode())
        return cls.open(home, password)

    @classmethod
    def open(cls, home: Path | str, password: str) -> Node:
        """Open an initialised home. WrongPasswordError when the password is wrong; MindooError
        naming the variable when a setting in the environment is malformed."""
        home = Path(home).expanduser()
        if not is_initialized(home):
            raise KeystoreError(f"no node in {home}: run 'mindoo init' first")
        check_workers_setting()
        secure_home(home)
        keystore = Keystore.unlock(home / KEYSTORE_FILE, password)
        store = EntryStore(home / STORE_DIR)
        try:
            node = cls(home, keystore, store)
        except BaseException:
            store.close()
            raise
        ensure_identity_file(home, node.public_identity())
        return node

    @classmethod
    def restore(
        cls,
        home: Path | str,
        kit: bytes,
        kit_password: str,
        password: str,
        *,
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> Node:
        """Create a NEW node home from a recovery kit (`recovery.export_recovery_kit`).

        The home gets the kit's identity and tenants (keys, admin seeds, database registry),
        their tenant logs (verified and stored like any arrival, so the node knows its tenants'
        members at once), a keystore under ``password`` (argon2id with ``kdf``) and a fresh
        libp2p peer seed: a new device has a new peer id. Documents come back by syncing with
        any peer or mirror of the tenants.

        The kit is opened before anything is written. The home is built in a staging directory
        inside ``home`` and its keystore is moved in last, so a failure leaves no node behind.
        Raises DecodeError (not a kit, damaged) or WrongPasswordError (wrong kit password)
        with nothing written; KeystoreError when ``home`` holds a node already (or stray node
        files), or ``password`` is empty; VerificationError when a tenant log does not verify.
        """
        check_restore_target(Path(home).expanduser(), password)
        return cls.restore_kit(home, read_recovery_kit(kit, kit_password), password, kdf=kdf)

    @classmethod
    def restore_kit(
        cls,
        home: Path | str,
        recovered: RecoveryKit,
        password: str,
        *,
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> Node:
        """`restore` from a kit already opened with `recovery.read_recovery_kit` (so a caller
        that opened it to check the kit password does not derive its key, argon2id, again).
        Same errors as `restore`, except those of opening the kit."""
        home = Path(home).expanduser()
        build_restored_home(
            home,
            recovered,
            password,
            kdf=kdf,
            open_staged=lambda stage, keystore: cls(stage, keystore, EntryStore(stage / STORE_DIR)),
        )
        return cls.open(home, password)

    def close(self) -> None:
        self.writer.close()
        if self._index is not None:
            self._index.close()
            self._index = None
        self.store.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def public_identity(self) -> PublicIdentity:
        return self.identity.public()

    def peer_seed(self) -> bytes:
        """The 32-byte seed of this node's libp2p identity, created on first use.

        It is a private key, so it lives in the encrypted keystore; the peer id stays the same
        across restarts.
        """
        return keystore_secret(self._keystore, "peer_seed")

    @property
    def index(self) -> QueryIndex:
        """The query index (views, queries, full-text search), opened on first use: an
        encrypted SQLCipher file in ``HOME/index`` under a random key kept in the keystore."""
        if self._index is None:
            self._index = QueryIndex(
                self.home,
                keystore_secret(self._keystore, "index_key"),
                self,
                save_key=lambda key: replace_keystore_secret(self._keystore, "index_key", key),
                settings=self._keystore,
            )
        return self._index

    @property
    def views(self) -> ViewCatalog:
        """View definitions: shared by a tenant (documents of its ``mindoo.views`` database)
        or private to this node (in the keystore); `ViewCatalog.reader` reads one."""
        return ViewCatalog(self, self._keystore)

    def add_listener(self, listener: Callable[[list[Entry], bool], None]) -> None:
        """Call ``listener(entries, local)`` after entries are stored (``local``: written here)."""
        self.intake.add_listener(listener)

    def remove_listener(self, listener: Callable[[list[Entry], bool], None]) -> None:
        self.intake.remove_listener(listener)

    # -- tenants -----------------------------------------------------------------------------
    def _load_tenants(self, contents: dict[str, Any]) -> None:
        for tenant_hex, data in contents.get("tenants", {}).items():
            tenant_id = bytes.fromhex(tenant_hex)
            if tenant_id in self.tenant_registry:
                continue
            tenant = self._make_tenant(TenantSecrets.from_dict(tenant_hex, data))
            self.tenant_registry.add(tenant)
            tenant.load_membership()
            if not self.store.readonly:
                tenant.enforce_revocations()

    def _make_tenant(self, secrets: TenantSecrets) -> Tenant:
        """A tenant with its narrow collaborators (never the node itself). It signs with its
        own member identity (`TenantSecrets.identity`), or the node's for an older tenant."""
        return Tenant(
            secrets,
            identity=secrets.identity or self.identity,
            store=self.store,
            writer=self.writer,
            save_secrets=self.save_tenant,
            learn_saved_keys=self.learn_saved_keys,
            ingest=self.ingest,
            queries=lambda: self.index,
        )

    def _adopt(self, secrets: TenantSecrets) -> Tenant:
        """A new tenant: its secrets saved, composed and held."""
        self.save_tenant(secrets)
        tenant = self._make_tenant(secrets)
        self.tenant_registry.add(tenant)
        return tenant

    def reload(self) -> None:
        """Pick up tenants another process added to the keystore."""
        self._load_tenants(self._keystore.read())

    def create_tenant(self, name: str) -> Tenant:
        """A new tenant with this node's user as admin and first member, under a member
        identity of its own (fresh keys, the user's name): nothing this node signs in it
        shares a key with its other tenants."""
        validate_tenant_name(name)
        if self.tenant_registry.has_name(name):
            raise InvalidNameError(f"a tenant called {name!r} exists already on this node")
        admin = SigningKeyPair.generate()
        secrets = TenantSecrets(
            tenant_id=tenant_id_for(admin.public_key),
            name=name,
            admin_key=admin.public_key,
            admin_seed=admin.seed,
            keyring=KeyRing([TenantKey.generate(DEFAULT_KEY), TenantKey.generate(MEMBERSHIP_KEY)]),
            identity=UserIdentity.generate(self.identity.name),
        )
        tenant = self._adopt(secrets)
        with self.batch():  # the first member, and every key version announced
            tenant.access.write_record(
                MembershipRecord(MembershipAction.ADD, tenant.identity.public(), "admin")
            )
            for key in secrets.keyring:
                tenant.access.write_record(KeyAnnouncement.of(key))
        return tenant

    def save_tenant(
        self,
        secrets: TenantSecrets,
        *,
        dropped_key_ids: Iterable[bytes] = (),
        created_database: str | None = None,
        forgotten_database: str | None = None,
    ) -> None:
        """Write the tenant's secrets to the keystore, merged with what another process that
        has this home open saved since this one read them (`tenant_keystore`); when keys were
        shredded (``dropped_key_ids``), what the query index holds under them goes too."""
        dropped = list(dropped_key_ids)
        save_tenant_secrets(
            self._keystore,
            secrets,
            dropped_key_ids=dropped,
            created_database=created_database,
            forgotten_database=forgotten_database,
        )
        if dropped and (self._index is not None or index_path(self.home).exists()):
            tenant = self.tenant_registry.get(secrets.tenant_id)
            if tenant is not None:  # a shred: what the index holds under the keys goes now
                self.index.purge_unreadable(tenant)

    def learn_saved_keys(self, secrets: TenantSecrets) -> None:
        """Add to ``secrets`` the key versions (and database lists) saved in the keystore by
        another process that it lacks (`tenant_keystore.learn_saved_keys`)."""
        learn_saved_keys(self._keystore, secrets)

    def tenants(self) -> list[Tenant]:
        return self.tenant_registry.sorted()

    def tenant_or_none(self, tenant_id: bytes) -> Tenant | None:
        """The tenant with this id, or None when this node does not hold it."""
        return self.tenant_registry.get(tenant_id)

    def tenant(self, name_or_id: str | bytes) -> Tenant:
        """A tenant by name or by id (bytes or hex, or a unique hex prefix of 8+ chars)."""
        return self.tenant_registry.find(name_or_id)

    # -- invites (`Invitations`) -------------------------------------------------------------
    def invite(self, tenant: Tenant, invitee: PublicIdentity, role: str = "member") -> bytes:
        """Add ``invitee`` and return the sealed invite (`Invitations.invite`; ``role`` is
        ``member`` or ``mirror``, which gets no document key)."""
        return self.invitations.invite(tenant, invitee, role)

    def invite_identity(self) -> PublicIdentity:
        """A fresh identity for one invite (`Invitations.invite_identity`)."""
        return self.invitations.invite_identity()

    def waiting_invite_identities(self) -> list[UserIdentity]:
        """The identities handed out for invites that no join has used yet, oldest first."""
        return self.invitations.waiting_identities()

    def device_request(self, user: PublicIdentity | bytes) -> DeviceRequest:
        """This node's request to be enrolled as a device of ``user``
        (`Invitations.device_request`)."""
        return self.invitations.device_request(user)

    def enroll_device(self, tenant: Tenant, request: DeviceRequest | bytes) -> bytes:
        """Enroll the device that made ``request``; the sealed enrolment for it to `join`
        (`Invitations.enroll_device`)."""
        return self.invitations.enroll_device(tenant, request)

    def join(self, invite_bytes: bytes) -> Tenant:
        """Import a sealed invite addressed to one of this node's identities
        (`Invitations.join`)."""
        return self.invitations.join(invite_bytes)

    # -- named keys ------------------------------------------------------------------------
    def export_key(
        self,
        tenant: Tenant,
        name: str,
        *,
        to: PublicIdentity | None = None,
        password: str | None = None,
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> bytes:
        """A key file holding every version of key ``name``, sealed to ``to`` or protected by
        ``password`` (exactly one). The secrets never appear in the clear.

        Every version held travels, so the recipient reads what any of them sealed. The
        ``default`` key can be exported once it was rotated (its versions are then announced;
        members who join later get every version with their invite).

        Raises MissingKeyError when this node does not hold the key, InvalidNameError for the
        membership key (it travels with invites), VerificationError when ``to`` is a mirror or
        a revoked member of the tenant, or a version was never announced (for ``default``:
        it was never rotated). The key work is the tenant's (`tenant_keys.TenantKeys`).
        """
        return tenant.export_key(name, to=to, password=password, kdf=kdf)

    def import_key(self, data: bytes | KeyFile, password: str | None = None) -> ImportedKey:
        """Import a key file made by :meth:`export_key` (``password`` for password files);
        ``data`` may be a file already read by `key_transfer.read_key_file` (its header is
        not read again).

        The key versions are accepted only as announced by the tenant log under the admin's
        signature (the file's announcement entries are verified and stored first). Raises
        DecodeError for garbage, NotFoundError for a tenant this node has not joined,
        KeyFileNotForYouError / WrongPasswordError when the file is not for this node or the
        password is wrong, VerificationError when this node is a mirror of the tenant or a key
        does not match its announcement. Importing keys already held changes nothing.
        """
        key_file = data if isinstance(data, KeyFile) else read_key_file(data)
        tenant = self.tenant_registry.get(key_file.info.tenant_id)
        if tenant is None:
            raise NotFoundError(
                f"this key file is for tenant {key_file.info.tenant_id.hex()}, which this node"
                " has not joined"
            )
        done = tenant.import_key_file(key_file, password)
        return ImportedKey(tenant=tenant, name=done.name, added_versions=done.added_versions)

    # -- writing -----------------------------------------------------------------------------
    @property
    def current_batch(self) -> int | None:
        """The id of the open write batch, or None."""
        return self.writer.current_batch

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write in the block into one durable LMDB transaction (group commit).

        All or nothing: when the block raises, none of its writes is stored (and no sequence
        number is used).
        """
        with self.writer.batch():
            yield

    def ingest(self, entries: Sequence[Entry | bytes | VerifiedEntry]) -> AppendResult:
        """Verify, admit and store entries from elsewhere (another node, a bundle, an invite):
        each through the admission pipeline once, stored in one write transaction, the new
        membership published after the commit (`EntryIntake.ingest`). This node's own new
        entries take the writer's path (`writer`), through the same membership step."""
        return self.intake.ingest(entries)

    # -- restored tenants --------------------------------------------------------------------
    def is_restored(self, tenant: Tenant) -> bool:
        """Whether ``tenant`` was restored from a recovery kit and refuses own writes until it
        has synced (`settle_restored`) or the user confirmed (`confirm_chain_head`)."""
        return self.restore_guard.is_marked(tenant.id)

    def settle_restored(self, tenant: Tenant) -> Settlement:
        """A sync session for ``tenant`` completed with a peer (every database reconciled,
        nothing missing): lift the restore mark unless this node's chains of the user's
        authors (its key, and the admin key on the admin's node) have a gap. The daemon calls
        it at the end of each such session; a script that synced another way may call it."""

        def chains() -> list[tuple[bytes, int, int]]:
            # The user's key in this tenant (its own member or device identity, or the
            # node's for older tenants), and the admin key on the admin's node.
            authors = [tenant.identity.signing.public_key]
            if tenant.is_admin:
                authors.append(tenant.admin_key)
            return [
                (
                    author,
                    self.store.chain_head(tenant.id, author)[0],
                    self.store.next_author_seq(tenant.id, author) - 1,
                )
                for author in authors
            ]

        return self.restore_guard.settle(tenant.id, chains)

    def confirm_chain_head(self, tenant: Tenant) -> bool:
        """The user states that no other copy of this identity ever wrote in ``tenant`` (or
        that its entries are here): lift the restore mark without a sync. Whether it was
        marked."""
        return self.restore_guard.clear(tenant.id)

    # -- maintenance -------------------------------------------------------------------------
    def fsck(self) -> FsckReport:
        """The store's consistency check, then (when the store is sound) per readable
        document whether its materialized heads agree with its entries
        (`Database.head_mismatches`): a problem when the reading rules do not explain the
        difference, a notice when they do (a member's skipped change)."""
        report = self.store.fsck()
        if not report.ok:
            return report
        for tenant in self.tenants():
            for database in tenant.databases():
                for mismatch in tenant.open_db(database).head_mismatches():
                    found = FsckProblem(None, "document heads", mismatch.line)
                    (report.notices if mismatch.explained else report.problems).append(found)
        return report


@dataclass(frozen=True)
class ImportedKey:
    """What :meth:`Node.import_key` did."""

    tenant: Tenant
    name: str
    added_versions: list[int]
    """The versions new to this node (empty when it held them all already)."""


__all__ = [
    "KEYSTORE_FILE",
    "ImportedKey",
    "MindooError",
    "Node",
    "check_new_node_password",
    "default_home",
    "is_initialized",
]
