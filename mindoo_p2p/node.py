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

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .crypto.keystore import KdfProfile, Keystore
from .crypto.signing import SigningKeyPair
from .entry import TENANT_LOG, Entry, tenant_id_of_raw
from .errors import (
    DecodeError,
    InvalidNameError,
    KeystoreError,
    MindooError,
    MissingKeyError,
    NotFoundError,
    VerificationError,
)
from .identity import PublicIdentity, UserIdentity
from .invite import Invite, open_invite, seal_invite
from .key_transfer import (
    KeyTransfer,
    open_key_file,
    protect_key_with_password,
    read_key_file_info,
    seal_key_to,
)
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from .membership import ROLE_MIRROR
from .recovery import read_recovery_kit
from .store import AppendResult, EntryStore, FsckReport
from .tenant import Tenant, TenantSecrets, now_ms, tenant_id_for, validate_tenant_name
from .writer import Draft, LocalWriter

KEYSTORE_FILE = "keystore.bin"
IDENTITY_FILE = "identity.json"
STORE_DIR = "store"
KEYSTORE_FORMAT = 1


def default_home() -> Path:
    """``MINDOO_HOME``, else ``$XDG_DATA_HOME/mindoo``, else ``~/.local/share/mindoo``."""
    env = os.environ.get("MINDOO_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
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
        self._tenants: dict[bytes, Tenant] = {}
        self._listeners: list[Callable[[list[Entry], bool], None]] = []
        self.writer = LocalWriter(
            store,
            self.authorize,
            before_commit=self._before_own_write,
            on_committed=self._own_entries_stored,
            on_discarded=self._own_drafts_discarded,
        )
        """Numbers, seals and stores this node's own entries (see `mindoo_p2p.writer`)."""
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
        if not password:
            raise KeystoreError("a password is required to protect the node's keys")
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = UserIdentity.generate(name or os.environ.get("USER") or "mindoo user")
        Keystore.create(
            home / KEYSTORE_FILE,
            password,
            {"format": KEYSTORE_FORMAT, "identity": identity.to_secret_dict(), "tenants": {}},
            kdf=kdf,
        )
        _write_atomic(home / IDENTITY_FILE, identity.public().to_json().encode())
        return cls.open(home, password)

    @classmethod
    def open(cls, home: Path | str, password: str) -> Node:
        """Open an initialised home. WrongPasswordError when the password is wrong."""
        home = Path(home).expanduser()
        if not is_initialized(home):
            raise KeystoreError(f"no node in {home}: run 'mindoo init' first")
        keystore = Keystore.unlock(home / KEYSTORE_FILE, password)
        store = EntryStore(home / STORE_DIR)
        try:
            return cls(home, keystore, store)
        except BaseException:
            store.close()
            raise

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
        home = Path(home).expanduser()
        if is_initialized(home):
            raise KeystoreError(
                f"a node already exists in {home}: a recovery kit restores into a new home only"
            )
        if not password:
            raise KeystoreError("a password is required to protect the node's keys")
        recovered = read_recovery_kit(kit, kit_password)
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
                },
                kdf=kdf,
            )
            _write_atomic(stage / IDENTITY_FILE, recovered.identity.public().to_json().encode())
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
            tenant = Tenant(self, TenantSecrets.from_dict(tenant_hex, data))
            self._tenants[tenant_id] = tenant
            tenant.load_membership()
            if not self.store.readonly:
                tenant.enforce_revocations()

    def reload(self) -> None:
        """Pick up tenants another process added to the keystore."""
        self._load_tenants(self._keystore.read())

    def create_tenant(self, name: str) -> Tenant:
        """A new tenant with this node's user as admin and first member."""
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
        )
        self.save_tenant(secrets)
        tenant = Tenant(self, secrets)
        self._tenants[secrets.tenant_id] = tenant
        tenant.add_member(self.identity.public(), role="admin")
        return tenant

    def save_tenant(self, secrets: TenantSecrets, *, dropped_key_ids: Iterable[bytes] = ()) -> None:
        """Write the tenant's secrets to the keystore, merged with what another process that
        has this home open saved since this one read them: the key versions and databases
        either holds are kept (except ``dropped_key_ids``, shredded here), and ``secrets``
        learns those the other process added. Overwriting lost them (a key another process
        created disappeared from the keystore while its announcement stayed)."""
        dropped = set(dropped_key_ids)

        def mutate(contents: dict[str, Any]) -> None:
            tenants = contents.setdefault("tenants", {})
            stored = tenants.get(secrets.tenant_id.hex())
            if stored is not None:
                on_disk = TenantSecrets.from_dict(secrets.tenant_id.hex(), stored)
                for key in on_disk.keyring:
                    if key.key_id not in dropped:
                        secrets.keyring.add(key)
                secrets.databases.extend(d for d in on_disk.databases if d not in secrets.databases)
            tenants[secrets.tenant_id.hex()] = secrets.to_dict()

        self._keystore.update(mutate)

    def learn_saved_keys(self, secrets: TenantSecrets) -> None:
        """Add to ``secrets`` the key versions saved in the keystore that it lacks (created,
        rotated or imported by another process that has this home open), so that writes here
        use the newest version. Never removes a key. Best effort: when the keystore cannot be
        read (re-keyed by a password change elsewhere), the keys held stay as they are."""
        try:
            stored = self._keystore.read().get("tenants", {}).get(secrets.tenant_id.hex())
        except KeystoreError:
            return
        if stored is not None:
            for key in TenantSecrets.from_dict(secrets.tenant_id.hex(), stored).keyring:
                secrets.keyring.add(key)

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
        tenant.add_member(invitee, role=role)
        wanted = (MEMBERSHIP_KEY,) if role == ROLE_MIRROR else (DEFAULT_KEY, MEMBERSHIP_KEY)
        return self._sealed_invite(tenant, invitee, [k for k in tenant.keyring if k.name in wanted])

    def enroll_device(self, tenant: Tenant, device: PublicIdentity) -> bytes:
        """Enroll ``device`` (a new node of this node's user: laptop + phone) and return the
        sealed enrolment for it to `join`: like an invite, with every key this node holds, but
        the device signs with its own key, so losing it means revoking that device only
        (`Tenant.revoke_device`). The admin key never travels."""
        tenant.enroll_device(device)
        return self._sealed_invite(tenant, device, list(tenant.keyring))

    def _sealed_invite(
        self, tenant: Tenant, invitee: PublicIdentity, keys: list[TenantKey]
    ) -> bytes:
        """An invite sealed to ``invitee``: ``keys`` and the whole tenant log so far."""
        log = [e.raw for e in self.store.iter_entries(tenant.id, TENANT_LOG)]
        return seal_invite(
            Invite(
                tenant_id=tenant.id,
                tenant_name=tenant.name,
                admin_key=tenant.admin_key,
                keys=keys,
                membership_entries=log,
                inviter=self.identity.public(),
                invitee=invitee,
                created_ms=now_ms(),
            )
        )

    def join(self, invite_bytes: bytes) -> Tenant:
        """Import a sealed invite addressed to this node's identity."""
        invite = open_invite(invite_bytes, self.identity)
        if tenant_id_for(invite.admin_key) != invite.tenant_id:
            raise VerificationError("invite names a tenant id that does not match its admin key")
        existing = self._tenants.get(invite.tenant_id)
        if existing is not None:
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
            )
            self.save_tenant(secrets)
            tenant = Tenant(self, secrets)
            self._tenants[invite.tenant_id] = tenant
        result = self.ingest(invite.membership_entries)
        if not tenant.membership.is_member(self.identity.signing.public_key):
            reasons = "; ".join(r.reason for r in result.rejected) or "no membership record"
            raise VerificationError(f"the invite does not make this node a member: {reasons}")
        return tenant

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
        it was never rotated).
        """
        if (to is None) == (password is None):
            raise ValueError("give exactly one of to= or password=")
        if name == MEMBERSHIP_KEY:
            raise InvalidNameError(f"the {name!r} key travels with invites, not key files")
        keys = [k for k in tenant.keyring if k.name == name]
        if not keys:
            raise MissingKeyError(f"no key {name!r} on this node")
        if to is not None:
            member = tenant.membership.member(to.signing_key)
            if member is not None and member.role == ROLE_MIRROR:
                raise VerificationError(
                    f"{to} is a mirror of tenant {tenant.name!r}: mirrors hold no keys"
                )
            if member is not None and not member.active:
                raise VerificationError(f"{to} was revoked from tenant {tenant.name!r}")
            device = tenant.membership.device(to.signing_key)
            if device is not None and not tenant.membership.is_member(to.signing_key):
                raise VerificationError(
                    f"{to} is a revoked device (or of a revoked user) of tenant {tenant.name!r}"
                )
        unannounced = [k for k in keys if tenant.membership.announced_key(k.key_id) is None]
        if unannounced and name == DEFAULT_KEY:
            raise VerificationError(
                f"the {DEFAULT_KEY!r} key of tenant {tenant.name!r} was never rotated: members"
                " receive it with their invite"
            )
        if unannounced:
            raise VerificationError(
                f"key {name!r} version {unannounced[0].version} was never announced in the"
                " tenant log, so no other node would accept it"
            )
        entries = tenant.announcement_entries([k.key_id for k in keys])
        transfer = KeyTransfer(tenant.id, name, keys, [e.raw for e in entries])
        if to is not None:
            return seal_key_to(transfer, to)
        assert password is not None
        return protect_key_with_password(transfer, password, kdf)

    def import_key(self, data: bytes, password: str | None = None) -> ImportedKey:
        """Import a key file made by :meth:`export_key` (``password`` for password files).

        The key versions are accepted only as announced by the tenant log under the admin's
        signature (the file's announcement entries are verified and stored first). Raises
        DecodeError for garbage, NotFoundError for a tenant this node has not joined,
        KeyFileNotForYouError / WrongPasswordError when the file is not for this node or the
        password is wrong, VerificationError when this node is a mirror of the tenant or a key
        does not match its announcement. Importing keys already held changes nothing.
        """
        info = read_key_file_info(data)
        tenant = self._tenants.get(info.tenant_id)
        if tenant is None:
            raise NotFoundError(
                f"this key file is for tenant {info.tenant_id.hex()}, which this node has not"
                " joined"
            )
        me = tenant.membership.member(self.identity.signing.public_key)
        if me is not None and me.role == ROLE_MIRROR:
            raise VerificationError(
                f"this node is a mirror of tenant {tenant.name!r}: mirrors hold no document keys"
            )
        transfer = open_key_file(data, self.identity, password)
        entries = [Entry.decode(raw, "key file announcement") for raw in transfer.announcements]
        for entry in entries:
            if entry.tenant_id != tenant.id or entry.database != TENANT_LOG:
                raise VerificationError("the key file carries an entry from outside the tenant log")
        self.ingest(entries)
        for key in transfer.keys:
            announced = tenant.membership.announced_key(key.key_id)
            if announced is None or (announced.name, announced.version) != (key.name, key.version):
                raise VerificationError(
                    f"key {key.name!r} version {key.version} ({key.key_id.hex()}) is not the"
                    f" one the admin of tenant {tenant.name!r} announced"
                )
        added = [key.version for key in transfer.keys if tenant.keyring.add(key)]
        if added:
            self.save_tenant(tenant.secrets)
        return ImportedKey(tenant=tenant, name=transfer.name, added_versions=sorted(added))

    # -- writing -----------------------------------------------------------------------------
    def authorize(self, entry: Entry) -> str | None:
        """Whether an entry that verified (hash, signature) may be stored here."""
        tenant = self._tenants.get(entry.tenant_id)
        if tenant is None:
            return f"unknown tenant {entry.tenant_id.hex()}"
        return tenant.authorize(entry)

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
        """Own entries pass the membership check against the stored tenant log."""
        self._refresh_membership(d.tenant_id for d in drafts)

    def _refresh_membership(self, tenant_ids: Iterable[bytes | None]) -> None:
        """Bring the membership of these tenants up to date with the stored tenant log, which
        another process that has this home open (the CLI, a script) may have changed."""
        for tenant_id in dict.fromkeys(tenant_ids):
            tenant = self._tenants.get(tenant_id) if tenant_id is not None else None
            if tenant is not None:
                tenant.refresh_membership()

    def _own_entries_stored(self, entries: list[Entry]) -> None:
        self._enforce_revocations([e.id for e in entries])
        for listener in list(self._listeners):
            listener(entries, True)

    def _own_drafts_discarded(self, drafts: Sequence[Draft]) -> None:
        """Drafts that were never stored: drop cached documents that hold them, and membership
        state the refused or failed write may have advanced."""
        for tenant_id in dict.fromkeys(d.tenant_id for d in drafts):
            tenant = self._tenants.get(tenant_id)
            if tenant is not None:
                tenant.load_membership()
        for draft in drafts:
            tenant = self._tenants.get(draft.tenant_id)
            if tenant is not None:
                tenant.forget_document(draft.database, draft.document_id)

    def ingest(
        self, entries: Sequence[Entry | bytes], *, sealed_here: bool = False
    ) -> AppendResult:
        """Verify and store entries from elsewhere (another node, a bundle, an invite).

        ``sealed_here`` is for this node's own freshly sealed entries: their signatures are
        not checked again (membership still is).
        """
        self._refresh_membership(_tenant_id_of(item) for item in entries)
        try:
            result = self.store.append(entries, authorize=self.authorize, sealed_here=sealed_here)
            result = self._retry_tenant_log(entries, result, sealed_here)
        except BaseException:
            # Membership state may have been advanced for a batch that did not commit.
            for tenant in self._tenants.values():
                tenant.load_membership()
            raise
        self._enforce_revocations(result.added)
        if self._listeners and result.added:
            given = {e.id: e for e in entries if isinstance(e, Entry)}
            added = [given.get(i) or self.store.get(i) for i in result.added]
            stored = [e for e in added if e is not None]
            for listener in list(self._listeners):
                listener(stored, sealed_here)
        return result

    def _retry_tenant_log(
        self, entries: Sequence[Entry | bytes], result: AppendResult, sealed_here: bool
    ) -> AppendResult:
        """Offer refused tenant-log entries again while others land: a record may build on one
        that sorted after it in the batch (a user's device enrolment, sealed with the user's
        sequence numbers, before the admin's ADD of that user)."""
        refused = {r.entry_id for r in result.rejected}
        if not refused or not result.added:
            return result
        by_id: dict[bytes, Entry | bytes] = {}
        for item in entries:
            entry_id = item.id if isinstance(item, Entry) else hashlib.sha256(item).digest()
            if entry_id in refused and _in_tenant_log(item):
                by_id[entry_id] = item
        added = list(result.added)
        rejected = list(result.rejected)
        while by_id:
            again = self.store.append(
                list(by_id.values()), authorize=self.authorize, sealed_here=sealed_here
            )
            if not again.added:
                break
            added += again.added
            for entry_id in again.added:
                by_id.pop(entry_id, None)
            landed = set(again.added)
            rejected = [r for r in rejected if r.entry_id not in landed]
        return AppendResult(added, result.duplicates, rejected)

    def _enforce_revocations(self, added: Sequence[bytes]) -> None:
        """After entries land, retract what newly applied revocations no longer accept."""
        if added:
            for tenant in self._tenants.values():
                tenant.enforce_new_revocations()

    # -- maintenance -------------------------------------------------------------------------
    def fsck(self) -> FsckReport:
        return self.store.fsck()


def _tenant_id_of(item: Entry | bytes) -> bytes | None:
    if isinstance(item, Entry):
        return item.tenant_id
    return tenant_id_of_raw(bytes(item)) if isinstance(item, bytes | bytearray) else None


def _in_tenant_log(item: Entry | bytes) -> bool:
    if isinstance(item, Entry):
        return item.database == TENANT_LOG
    try:
        return Entry.decode(item).database == TENANT_LOG
    except DecodeError:
        return False


@dataclass(frozen=True)
class ImportedKey:
    """What :meth:`Node.import_key` did."""

    tenant: Tenant
    name: str
    added_versions: list[int]
    """The versions new to this node (empty when it held them all already)."""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


__all__ = ["MindooError", "Node", "default_home", "is_initialized"]
