"""The node: one device's home directory opened with its password.

A node home holds::

    keystore.bin    every private key and tenant key, encrypted (argon2id + XChaCha20-Poly1305)
    identity.json   this node's public identity (name and public keys), to send to an admin
    store/          the LMDB append-only log of sealed entries and its indexes

`Node` is the embedding API: tenants, databases, documents, invites, import/export and fsck all
start here. It is meant for one thread (the daemon's trio thread, a script, the CLI); two
processes may open the same home at once (LMDB and the keystore lock serialise their writes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import admission
from .admission import VerifiedEntry
from .crypto.keystore import KdfProfile, Keystore
from .crypto.signing import SigningKeyPair
from .device_request import DeviceRequest
from .entry import TENANT_LOG, Entry
from .errors import (
    InvalidNameError,
    KeystoreError,
    MindooError,
    NotFoundError,
    VerificationError,
)
from .home_files import IDENTITY_FILE, ensure_identity_file, secure_home, write_private
from .identity import PublicIdentity, UserIdentity
from .index import QueryIndex, ViewCatalog, index_path
from .invite import (
    Invite,
    InviteKind,
    InviteNotForYouError,
    invite_recipient_fingerprint,
    open_checked_invite,
    seal_invite,
)
from .invite_identities import KEYSTORE_FIELD as INVITE_IDENTITIES_FIELD
from .invite_identities import WaitingInviteIdentities, keystore_field
from .key_transfer import (
    KeyFile,
    read_key_file,
)
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from .membership import MembershipLog
from .membership_records import (
    ROLE_MIRROR,
    KeyAnnouncement,
    MembershipAction,
    MembershipRecord,
)
from .recovery import MIN_PASSWORD_CHARS, RecoveryKit, read_recovery_kit
from .rejection import Rejected, RejectionKind
from .restore_guard import RESTORED_KEY, RestoreGuard, Settlement, initial_marks
from .store import AppendResult, EntryStore, FsckProblem, FsckReport
from .tenant import Tenant, TenantSecrets, now_ms, tenant_id_for, validate_tenant_name
from .writer import Draft, LocalWriter

KEYSTORE_FILE = "keystore.bin"
STORE_DIR = "store"
KEYSTORE_FORMAT = 1


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``MINDOO_HOME``, else ``$XDG_DATA_HOME/mindoo``, else ``~/.local/share/mindoo``
    (variables from ``environ``, default: this process's environment)."""
    if environ is None:
        environ = os.environ
    env = environ.get("MINDOO_HOME")
    if env:
        return Path(env).expanduser()
    xdg = environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mindoo"


def is_initialized(home: Path | str) -> bool:
    return (Path(home) / KEYSTORE_FILE).exists()


class Node:
    """A node opened from its home directory. Use `Node.init` once, then `Node.open`."""

    def __init__(self, home: Path, keystore: Keystore, store: EntryStore) -> None:
        self.home = home
        self._keystore = keystore
        self.store = store
        contents = keystore.read()
        self.identity = UserIdentity.from_secret_dict(contents["identity"])
        self._waiting = WaitingInviteIdentities(keystore, self.identity.name)
        self._tenants: dict[bytes, Tenant] = {}
        self._listeners: list[Callable[[list[Entry], bool], None]] = []
        self._index: QueryIndex | None = None
        self.restore_guard = RestoreGuard(keystore, contents)
        """The tenants restored from a recovery kit that refuse own writes until a sync or
        the user's confirmation (`mindoo_p2p.restore_guard`)."""
        self.writer = LocalWriter(
            store,
            self._admit_own,
            before_commit=self._before_own_write,
            on_committed=self._own_entries_stored,
            on_discarded=self._own_drafts_discarded,
        )
        """Numbers, seals and stores this node's own entries inside the write transaction,
        admitted by the admission pipeline (see `mindoo_p2p.writer`): what tenants and
        databases write through."""
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
        """Open an initialised home. WrongPasswordError when the password is wrong."""
        home = Path(home).expanduser()
        if not is_initialized(home):
            raise KeystoreError(f"no node in {home}: run 'mindoo init' first")
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
        _check_restore_target(Path(home).expanduser(), password)
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
        _check_restore_target(home, password)
        for name in (IDENTITY_FILE, STORE_DIR):
            if os.path.lexists(home / name):
                raise KeystoreError(
                    f"{home} holds {name} but no keystore: restore into a new or empty directory"
                )
        created_home = not home.exists()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        stage = Path(tempfile.mkdtemp(prefix=".restore-", dir=home))
        moved: list[Path] = []
        try:
            keystore = Keystore.create(
                stage / KEYSTORE_FILE,
                password,
                {
                    "format": KEYSTORE_FORMAT,
                    "identity": recovered.identity.to_secret_dict(),
                    "tenants": {t.tenant_id.hex(): t.secrets.to_dict() for t in recovered.tenants},
                    "peer_seed": os.urandom(32).hex(),
                    INVITE_IDENTITIES_FIELD: keystore_field(recovered.invite_identities),
                    RESTORED_KEY: initial_marks((t.tenant_id for t in recovered.tenants), now_ms()),
                },
                kdf=kdf,
            )
            write_private(stage / IDENTITY_FILE, recovered.identity.public().to_json().encode())
            with cls(stage, keystore, EntryStore(stage / STORE_DIR)) as staged:
                for tenant in recovered.tenants:
                    rejected = staged.ingest(tenant.tenant_log).rejected
                    if rejected:
                        raise VerificationError(
                            f"the tenant log of {tenant.name!r} in the recovery kit does not"
                            f" verify: {rejected[0].reason}"
                        )
            os.rename(stage / STORE_DIR, home / STORE_DIR)
            moved.append(home / STORE_DIR)
            for name in (IDENTITY_FILE, KEYSTORE_FILE):  # the keystore last: it makes a node
                os.link(stage / name, home / name)  # never replaces a file that appeared
                moved.append(home / name)
        except BaseException as exc:
            for path in reversed(moved):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if created_home:
                shutil.rmtree(home, ignore_errors=True)
            if isinstance(exc, OSError):
                raise KeystoreError(f"cannot restore into {home}: {exc.strerror or exc}") from None
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return cls.open(home, password)

    def close(self) -> None:
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
        seed = self._keystore.read().get("peer_seed")
        if seed is None:
            fresh = os.urandom(32).hex()

            def mutate(contents: dict[str, Any]) -> None:
                contents.setdefault("peer_seed", fresh)

            seed = self._keystore.update(mutate)["peer_seed"]
        return bytes.fromhex(seed)

    @property
    def index(self) -> QueryIndex:
        """The query index (views, queries, full-text search), opened on first use: an
        encrypted SQLCipher file in ``HOME/index`` under a random key kept in the keystore."""
        if self._index is None:
            stored = self._keystore.read().get("index_key")
            if stored is None:
                fresh = os.urandom(32).hex()

                def mutate(contents: dict[str, Any]) -> None:
                    contents.setdefault("index_key", fresh)

                stored = self._keystore.update(mutate)["index_key"]
            self._index = QueryIndex(
                self.home,
                bytes.fromhex(stored),
                self,
                save_key=self._save_index_key,
                settings=self._keystore,
            )
        return self._index

    def _save_index_key(self, key: bytes) -> None:
        """Replace the query index's key in the keystore (the old one is destroyed)."""

        def mutate(contents: dict[str, Any]) -> None:
            contents["index_key"] = key.hex()

        self._keystore.update(mutate)

    @property
    def views(self) -> ViewCatalog:
        """View definitions: shared by a tenant (documents of its ``mindoo.views`` database)
        or private to this node (in the keystore); `ViewCatalog.reader` reads one."""
        return ViewCatalog(self, self._keystore)

    def add_listener(self, listener: Callable[[list[Entry], bool], None]) -> None:
        """Call ``listener(entries, local)`` after entries are stored (``local``: written here)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[list[Entry], bool], None]) -> None:
        self._listeners.remove(listener)

    # -- tenants -----------------------------------------------------------------------------
    def _load_tenants(self, contents: dict[str, Any]) -> None:
        for tenant_hex, data in contents.get("tenants", {}).items():
            tenant_id = bytes.fromhex(tenant_hex)
            if tenant_id in self._tenants:
                continue
            tenant = self._make_tenant(TenantSecrets.from_dict(tenant_hex, data))
            self._tenants[tenant_id] = tenant
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

    def reload(self) -> None:
        """Pick up tenants another process added to the keystore."""
        self._load_tenants(self._keystore.read())

    def create_tenant(self, name: str) -> Tenant:
        """A new tenant with this node's user as admin and first member, under a member
        identity of its own (fresh keys, the user's name): nothing this node signs in it
        shares a key with its other tenants."""
        validate_tenant_name(name)
        if any(t.name == name for t in self.tenants()):
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
        self.save_tenant(secrets)
        tenant = self._make_tenant(secrets)
        self._tenants[secrets.tenant_id] = tenant
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
        has this home open saved since this one read them: the key versions and databases
        either holds are kept (except ``dropped_key_ids``, shredded here), and ``secrets``
        learns those the other process added. Overwriting lost them (a key another process
        created disappeared from the keystore while its announcement stayed). The database
        lists merge by `TenantSecrets.merge_databases` with this save's ``created_database``
        or ``forgotten_database``."""
        dropped = set(dropped_key_ids)

        def mutate(contents: dict[str, Any]) -> None:
            tenants = contents.setdefault("tenants", {})
            stored = tenants.get(secrets.tenant_id.hex())
            on_disk = None
            if stored is not None:
                on_disk = TenantSecrets.from_dict(secrets.tenant_id.hex(), stored)
                if on_disk.identity is not None:  # a tenant's identity never changes
                    secrets.identity = on_disk.identity
                for key in on_disk.keyring:
                    if key.key_id not in dropped:
                        secrets.keyring.add(key)
            secrets.merge_databases(on_disk, created=created_database, forgotten=forgotten_database)
            tenants[secrets.tenant_id.hex()] = secrets.to_dict()

        self._keystore.update(mutate)
        if dropped and (self._index is not None or index_path(self.home).exists()):
            tenant = self._tenants.get(secrets.tenant_id)
            if tenant is not None:  # a shred: what the index holds under the keys goes now
                self.index.purge_unreadable(tenant)

    def learn_saved_keys(self, secrets: TenantSecrets) -> None:
        """Add to ``secrets`` the key versions saved in the keystore that it lacks (created,
        rotated or imported by another process that has this home open), so that writes here
        use the newest version. Never removes a key. Takes the keystore's database lists
        (created and forgotten databases). Best effort: when the keystore cannot be read
        (re-keyed by a password change elsewhere), the keys held stay as they are."""
        try:
            stored = self._keystore.read().get("tenants", {}).get(secrets.tenant_id.hex())
        except KeystoreError:
            return
        if stored is not None:
            on_disk = TenantSecrets.from_dict(secrets.tenant_id.hex(), stored)
            for key in on_disk.keyring:
                secrets.keyring.add(key)
            secrets.merge_databases(on_disk)

    def tenants(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: (t.name, t.id))

    def tenant_or_none(self, tenant_id: bytes) -> Tenant | None:
        """The tenant with this id, or None when this node does not hold it."""
        return self._tenants.get(tenant_id)

    def tenant(self, name_or_id: str | bytes) -> Tenant:
        """A tenant by name or by id (bytes or hex, or a unique hex prefix of 8+ chars)."""
        if isinstance(name_or_id, bytes):
            found = self._tenants.get(name_or_id)
            if found:
                return found
            raise NotFoundError(f"no tenant {name_or_id.hex()} on this node")
        by_name = [t for t in self._tenants.values() if t.name == name_or_id]
        if len(by_name) == 1:
            return by_name[0]
        key = name_or_id.lower()
        by_id = [t for t in self._tenants.values() if len(key) >= 8 and t.id_hex.startswith(key)]
        if len(by_id) == 1:
            return by_id[0]
        if len(by_name) > 1 or len(by_id) > 1:
            raise NotFoundError(f"{name_or_id!r} names several tenants: use the tenant id")
        raise NotFoundError(f"no tenant {name_or_id!r} on this node")

    # -- invites -----------------------------------------------------------------------------
    def invite(self, tenant: Tenant, invitee: PublicIdentity, role: str = "member") -> bytes:
        """Add ``invitee`` and return the sealed invite to send them out of band.

        ``role="mirror"`` grants replication without any document key: the invitee (a backup
        or relay node) stores, verifies and serves the tenant's ciphertext but cannot read it.
        """
        tenant.keys.announce_held_keys()  # a tenant from before every version was announced
        tenant.add_member(invitee, role=role)
        wanted = (MEMBERSHIP_KEY,) if role == ROLE_MIRROR else (DEFAULT_KEY, MEMBERSHIP_KEY)
        keys = tenant.keys.shareable([k for k in tenant.keyring if k.name in wanted])
        seed = tenant.secrets.admin_seed
        assert seed is not None  # add_member refuses on a node without the admin key
        return self._sealed_invite(tenant, invitee, keys, InviteKind.INVITE, SigningKeyPair(seed))

    def invite_identity(self) -> PublicIdentity:
        """A fresh identity (new keys, this user's name) for one invite: hand its identity
        file to the admin. `join` finds it by the invite's recipient and makes it this
        node's member identity in that tenant, so the tenant shares no key with this node's
        other tenants (the node's own identity, `public_identity`, links every tenant it is
        invited with). The private half waits in the keystore (`invite_identities`)."""
        return self._waiting.new().public()

    def waiting_invite_identities(self) -> list[UserIdentity]:
        """The identities handed out by `invite_identity` (or `device_request`) that no join
        has used yet, oldest first."""
        return self._waiting.all()

    def _invite_identities(self) -> list[UserIdentity]:
        """Every identity an invite to this node may be sealed to: the waiting invite
        identities, the tenants' member identities, the node's own."""
        found = self.waiting_invite_identities()
        found += [t.secrets.identity for t in self._tenants.values() if t.secrets.identity]
        return [*found, self.identity]

    def device_request(self, user: PublicIdentity | bytes) -> DeviceRequest:
        """This node's request to be enrolled as a device of ``user`` (their member identity
        in the tenant, `Tenant.identity`, or its signing key), signed with a fresh identity
        of this device (`invite_identity`): hand ``request.encode()`` to the user's node,
        which enrolls it with `enroll_device`; `join` of the enrolment makes that identity
        this device's key in the tenant, shared with no other tenant."""
        user_key = user.signing_key if isinstance(user, PublicIdentity) else user
        return DeviceRequest.sign(self._waiting.new(), user_key)

    def enroll_device(self, tenant: Tenant, request: DeviceRequest | bytes) -> bytes:
        """Enroll the device that made ``request`` (`device_request` on a new node of this
        node's user: laptop + phone) and return the sealed enrolment for it to `join`: like
        an invite, with every key this node holds, signed by this node's key; the device
        signs with its own key, so losing it means revoking that device only
        (`Tenant.revoke_device`). The admin key never travels. Raises VerificationError
        when a key held here is not announced (with its commitment) in the tenant log: the
        device could not check it (the admin's next invite, key rotation or export
        announces it), or when the request is not this user's or not signed by the device."""
        if isinstance(request, bytes | bytearray | memoryview):
            request = DeviceRequest.decode(bytes(request))
        keys = tenant.keys.shareable(list(tenant.keyring))
        unannounced = tenant.keys.unannounced(keys)
        if unannounced:
            key = unannounced[0]
            raise VerificationError(
                f"key {key.name!r} version {key.version} of tenant {tenant.name!r} is not yet"
                " announced with its commitment in the tenant log, so the device could not"
                " check it: the admin's node announces it on its next invite, key rotation or"
                " key export"
            )
        tenant.enroll_device(request)
        device = request.device
        signer = tenant.identity.signing
        return self._sealed_invite(tenant, device, keys, InviteKind.ENROLMENT, signer)

    def _sealed_invite(
        self,
        tenant: Tenant,
        invitee: PublicIdentity,
        keys: list[TenantKey],
        kind: InviteKind,
        signer: SigningKeyPair,
    ) -> bytes:
        """An invite sealed to ``invitee``: ``keys`` and the whole tenant log so far, signed
        by ``signer``."""
        log = [e.raw for e in self.store.iter_entries(tenant.id, TENANT_LOG)]
        invite = Invite(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            admin_key=tenant.admin_key,
            keys=keys,
            membership_entries=log,
            inviter=tenant.identity.public(),
            invitee=invitee,
            created_ms=now_ms(),
            kind=kind,
        )
        return seal_invite(invite.signed(signer))

    def join(self, invite_bytes: bytes) -> Tenant:
        """Import a sealed invite addressed to one of this node's identities: a waiting
        invite identity (`invite_identity`, `device_request`) becomes this node's member
        identity in a new tenant; an invite to the node's own identity makes that one the
        member identity (as before per-tenant identities); a later invite into a tenant
        held here (new keys) is addressed to that tenant's identity."""
        invite, log, recipient = self._open_invite(invite_bytes)
        if tenant_id_for(invite.admin_key) != invite.tenant_id:
            raise VerificationError("invite names a tenant id that does not match its admin key")
        existing = self._tenants.get(invite.tenant_id)
        if existing is not None:
            for key in invite.keys:
                existing.keys.check_no_twin(key)
            for key in invite.keys:
                existing.keyring.add(key)
            self.save_tenant(existing.secrets)
            tenant = existing
        else:
            secrets = TenantSecrets(
                tenant_id=invite.tenant_id,
                name=invite.tenant_name,
                admin_key=invite.admin_key,
                admin_seed=None,
                keyring=KeyRing(list(invite.keys)),
                identity=recipient if recipient is not self.identity else None,
            )
            self.save_tenant(secrets)
            tenant = self._make_tenant(secrets)
            self._tenants[invite.tenant_id] = tenant
            if secrets.identity is not None:
                self._waiting.forget(secrets.identity)
        result = self.ingest(log)
        if not tenant.membership.is_member(tenant.identity.signing.public_key):
            reasons = "; ".join(r.reason for r in result.rejected) or "no membership record"
            raise VerificationError(f"the invite does not make this node a member: {reasons}")
        return tenant

    def _open_invite(self, data: bytes) -> tuple[Invite, list[VerifiedEntry], UserIdentity]:
        """Open an invite with whichever of this node's identities it is sealed to; raise
        what opening it with the node's own identity raises when none fits. Only the
        identities whose fingerprint the invite names in the clear are tried."""
        named = invite_recipient_fingerprint(data)
        for candidate in self._invite_identities():
            if candidate.fingerprint != named:
                continue
            try:
                invite, log = open_checked_invite(data, candidate)
            except InviteNotForYouError:
                continue
            return invite, log, candidate
        invite, log = open_checked_invite(data, self.identity)  # raises "not for you"
        return invite, log, self.identity

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
        tenant = self._tenants.get(key_file.info.tenant_id)
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

    def _before_own_write(self, drafts: Sequence[Draft]) -> None:
        """Refuse a write in a tenant restored from a recovery kit and not synced yet
        (`restore_guard`). Own entries are admitted against the stored tenant log, which
        another process that has this home open may have changed: bring the snapshots up to
        date first."""
        tenant_ids = list(dict.fromkeys(d.tenant_id for d in drafts))
        self.restore_guard.check_writes((t, self._tenant_label(t)) for t in tenant_ids)
        self._refresh_membership(tenant_ids)

    def _tenant_label(self, tenant_id: bytes) -> str:
        tenant = self._tenants.get(tenant_id)
        return tenant.name if tenant is not None else tenant_id.hex()

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

    def _refresh_membership(self, tenant_ids: Iterable[bytes]) -> None:
        """Bring the membership of these tenants up to date with the stored tenant log, which
        another process that has this home open (the CLI, a script) may have changed."""
        for tenant_id in dict.fromkeys(tenant_ids):
            tenant = self._tenants.get(tenant_id)
            if tenant is not None:
                tenant.refresh_membership()

    def _admit_own(self, verified: Sequence[VerifiedEntry]) -> admission.Admission:
        """Step 4 of the admission pipeline for a write's own entries (called by the writer
        inside the write transaction; the entries come marked by `admission.trust_own_seal`).
        Pure: the new membership is published by `_own_entries_stored`, after the commit."""
        return admission.admit(self._views({v.tenant_id for v in verified}), verified)

    def _views(self, tenant_ids: Iterable[bytes]) -> dict[bytes, admission.TenantView]:
        return {
            tenant_id: tenant.view()
            for tenant_id in tenant_ids
            if (tenant := self._tenants.get(tenant_id)) is not None
        }

    def _own_entries_stored(
        self, entries: list[Entry], memberships: Mapping[bytes, MembershipLog]
    ) -> None:
        """After an own write committed: publish the membership its records built, retract
        what new revocations no longer accept, tell the listeners."""
        self._publish_committed(memberships, entries)
        self._enforce_revocations(entries)
        for listener in list(self._listeners):
            listener(entries, True)

    def _publish_committed(
        self, memberships: Mapping[bytes, MembershipLog], stored: Sequence[Entry]
    ) -> None:
        """Publish the membership snapshots a commit built (only after the commit)."""
        for tenant_id, membership in memberships.items():
            log_entries = sum(
                1 for e in stored if e.tenant_id == tenant_id and e.database == TENANT_LOG
            )
            self._tenants[tenant_id].publish_committed(membership, log_entries)

    def _own_drafts_discarded(self, drafts: Sequence[Draft]) -> None:
        """Drafts that were never stored: drop cached documents that hold them (no snapshot
        changed: membership is published only after a commit)."""
        for draft in drafts:
            tenant = self._tenants.get(draft.tenant_id)
            if tenant is not None:
                tenant.forget_document(draft.database, draft.document_id)

    def ingest(self, entries: Sequence[Entry | bytes | VerifiedEntry]) -> AppendResult:
        """Verify, admit and store entries from elsewhere (another node, a bundle, an invite).

        Every entry goes through the admission pipeline (`mindoo_p2p.admission`) once: decode,
        id, signature (skipped for a `VerifiedEntry`, which has been through it), then tenant,
        kind and membership against each tenant's membership snapshot. The accepted entries
        are stored in one write transaction; only then do the tenants publish their new
        membership (records of the batch applied). First, the membership of the tenants
        involved is brought up to date with the stored tenant log (another process that has
        this home open may have changed it). This node's own new entries take the writer's
        path (`writer`), through the same membership step.
        """
        checked = admission.check_entries(entries, self._stored_ids)
        checked.verified = self._drop_forgotten(checked.verified, checked.rejected)
        tenant_ids = {v.tenant_id for v in checked.verified}
        self._refresh_membership(tenant_ids)  # another process may have changed the tenant log
        admitted = admission.admit(self._views(tenant_ids), checked.verified)
        stored = self.store.append(admitted.accepted) if admitted.accepted else None
        added = stored.added if stored is not None else []
        accepted = {v.id: v.entry for v in admitted.accepted}
        stored_entries = [accepted[i] for i in added]
        self._publish_committed(admitted.memberships, stored_entries)
        duplicates = checked.duplicates + (stored.duplicates if stored is not None else [])
        rejected = [
            *checked.rejected,
            *admitted.rejected,
            *(stored.rejected if stored is not None else []),
        ]
        refusals = {r.entry_id: r for r in rejected}
        for entry_id in checked.repeats:
            refusal = refusals.get(entry_id)
            if refusal is None:
                duplicates.append(entry_id)
            else:
                rejected.append(refusal)
        rejected.sort(key=lambda r: checked.order.get(r.entry_id, len(entries)))
        result = AppendResult(added, duplicates, rejected)
        self._enforce_revocations(stored_entries)
        if self._listeners and result.added:
            for listener in list(self._listeners):
                listener(stored_entries, False)
        return result

    def _drop_forgotten(
        self, verified: list[VerifiedEntry], rejected: list[Rejected]
    ) -> list[VerifiedEntry]:
        """``verified`` without the entries of databases forgotten here (`Tenant.forget_db`),
        each refused into ``rejected`` as NOT_REPLICATED."""
        kept: list[VerifiedEntry] = []
        for v in verified:
            tenant = self._tenants.get(v.tenant_id)
            if tenant is not None and not tenant.replicates(v.database):
                rejected.append(
                    Rejected(
                        v.id,
                        RejectionKind.NOT_REPLICATED,
                        f"database {v.database!r} is forgotten on this node",
                    )
                )
            else:
                kept.append(v)
        return kept

    def _stored_ids(self, ids: list[bytes]) -> set[bytes]:
        return set(ids).difference(self.store.missing(ids))

    def _enforce_revocations(self, added: Sequence[Entry]) -> None:
        """After entries land, retract what newly applied revocations no longer accept, record
        the forks an entry at a revocation cut reveals, and drop the cached documents of
        entries a fork withdrew (the store withdrew them in its write transaction)."""
        if added:
            tenant_ids = {entry.tenant_id for entry in added}
            for tenant in self._tenants.values():
                tenant.enforce_new_revocations()
                if tenant.id in tenant_ids:
                    access = tenant.access
                    access.check_cut_entries([e for e in added if e.tenant_id == tenant.id])
                    access.forget_forked()

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


def _check_restore_target(home: Path, password: str) -> None:
    if is_initialized(home):
        raise KeystoreError(
            f"a node already exists in {home}: a recovery kit restores into a new home only"
        )
    check_new_node_password(password)


def check_new_node_password(password: str) -> None:
    """A new node password must have `MIN_PASSWORD_CHARS` characters: it is all that stands
    between a stolen disk and the node's keys (argon2id makes each guess costly, not a short
    password long)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise KeystoreError(
            f"the node password must have at least {MIN_PASSWORD_CHARS} characters: it protects"
            " the node's keys"
        )


__all__ = ["MindooError", "Node", "default_home", "is_initialized"]
