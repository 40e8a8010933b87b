"""A tenant's key work: create, rotate, shred, export and import its keys, on this node.

`TenantKeys` keeps the key versions this node holds (`TenantSecrets.keyring`, saved through
`SaveSecrets`; versions another process saved are learnt through `LearnSavedKeys`), announces
new versions in the tenant log (through `TenantAccess.write_record`),
and moves keys out of band in key files (`key_transfer`). Who may write is the access work's
(`tenant_access`); the node is not a collaborator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .crypto.keystore import KdfProfile
from .entry import TENANT_LOG, Entry
from .errors import InvalidNameError, MindooError, MissingKeyError, NotFoundError, VerificationError
from .identity import PublicIdentity, UserIdentity, open_sealed
from .key_transfer import (
    KeyFile,
    KeyTransfer,
    open_key_file,
    protect_key_with_password,
    seal_key_to,
)
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey, validate_key_name
from .membership_key_grant import MembershipKeyGrant
from .membership_records import (
    MAX_KEY_VERSION,
    ROLE_MIRROR,
    KeyAnnouncement,
    TenantLogRecord,
)
from .store import EntryStore
from .tenant_access import TenantAccess
from .tenant_collaborators import EntryWriter, Ingest, LearnSavedKeys, SaveSecrets
from .tenant_secrets import TenantSecrets

RESERVED_ROTATION = frozenset({DEFAULT_KEY, MEMBERSHIP_KEY})
"""Keys `rotate_keys_held` does not list by name (default first; the membership key is
never rotated)."""


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


@dataclass(frozen=True, slots=True)
class KeyImport:
    """What `TenantKeys.import_file` did."""

    name: str
    added_versions: list[int]
    """The versions new to this node (empty when it held them all already)."""


class TenantKeys:
    """The keys of one tenant on this node. Made by `Tenant`."""

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
        access: TenantAccess,
        forget_document: Callable[[str, bytes], None],
    ) -> None:
        self._secrets = secrets
        self._identity = identity
        self._store = store
        self._writer = writer
        self._save_secrets = save_secrets
        self._learn_saved_keys = learn_saved_keys
        self._keys_log_seq = 0
        """The tenant log's last feed sequence when the keystore's keys were last looked at."""
        self._keys_checked_batch: int | None = None
        """The write batch (`EntryWriter.current_batch`) in which the log was last looked at."""
        self._ingest = ingest
        self._access = access
        self._forget_document = forget_document

    @property
    def tenant_id(self) -> bytes:
        return self._secrets.tenant_id

    @property
    def name(self) -> str:
        return self._secrets.name

    @property
    def keyring(self) -> KeyRing:
        return self._secrets.keyring

    def _require_admin(self, what: str) -> None:
        if self._secrets.admin_seed is None:
            raise MissingKeyError(
                f"this node does not hold the admin key of tenant {self.name!r}:"
                f" only the tenant admin can {what}"
            )

    # -- create, rotate, shred ---------------------------------------------------------------
    def create_key(self, name: str) -> TenantKey:
        """See `Tenant.create_key`."""
        validate_key_name(name)
        if name in (DEFAULT_KEY, MEMBERSHIP_KEY):
            raise InvalidNameError(f"key name {name!r} is reserved")
        self._require_admin("create keys")
        if name in self.key_names():
            raise InvalidNameError(f"a key called {name!r} exists already in tenant {self.name!r}")
        key = TenantKey.generate(name)
        self.keyring.add(key)
        self._save_secrets(self._secrets)
        self._access.write_record(KeyAnnouncement.of(key))
        return key

    def announce_held_keys(self) -> int:
        """Announce, with its commitment, every key version held here that the tenant log
        does not announce with one yet (admin only): the ``default`` and membership keys of
        a tenant created before every version was announced, a key whose announcement a
        crash prevented. Invites, enrolments and key files are checked against these
        announcements. Returns how many records were written (0: nothing to do)."""
        missing = self.unannounced(self.shareable(list(self.keyring)))
        if not missing:
            return 0
        self._require_admin("announce keys")
        with self._writer.batch():
            for key in missing:
                self._access.write_record(KeyAnnouncement.of(key))
        return len(missing)

    def shareable(self, keys: Sequence[TenantKey]) -> list[TenantKey]:
        """``keys`` without a membership key version that only a rotation cut short by a
        crash saved (never granted, never announced: nobody else holds it, and it is never
        used, see `TenantAccess.membership_key_for_writing`)."""
        membership = self._access.membership
        return [
            key
            for key in keys
            if key.name != MEMBERSHIP_KEY
            or key.version == 1
            or membership.announced_key(key.key_id) is not None
        ]

    def unannounced(self, keys: Sequence[TenantKey]) -> list[TenantKey]:
        """The versions of ``keys`` the tenant log does not announce with their commitment."""
        membership = self._access.membership
        return [
            key
            for key in keys
            if (known := membership.announced_key(key.key_id)) is None or not known.matches(key)
        ]

    def rotate_key(self, name: str) -> TenantKey:
        """See `Tenant.rotate_key`."""
        validate_key_name(name)
        if name == MEMBERSHIP_KEY:
            raise InvalidNameError(f"the {MEMBERSHIP_KEY!r} key cannot be rotated")
        self._require_admin("rotate keys")
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
        self._save_secrets(self._secrets)
        with self._writer.batch():
            for old in self.unannounced([k for k in self.keyring if k.name == name]):
                if old.key_id != key.key_id:
                    self._access.write_record(KeyAnnouncement.of(old))
            self._access.write_record(KeyAnnouncement.of(key))
        return key

    # -- the membership key ------------------------------------------------------------------
    def prepare_membership_rotation(self, excluded: set[bytes]) -> list[TenantLogRecord]:
        """A new ``$membership`` version, saved in the keystore, and the records that grant
        it to every current holder but the ``excluded`` signing keys (admin only): what a
        revocation writes with it, in one batch, so that the revoked member cannot read
        the tenant log's later records. The new version is used for writing once the log
        announces it (`TenantAccess.membership_key_for_writing`), so a crash before the
        batch commits leaves it held and unused."""
        self._require_admin("rotate the membership key")
        versions = [k.version for k in self.keyring if k.name == MEMBERSHIP_KEY]
        versions += [
            k.version for k in self._access.membership.key_directory() if k.name == MEMBERSHIP_KEY
        ]
        newest = max(versions)
        if newest >= MAX_KEY_VERSION:
            raise InvalidNameError(f"the {MEMBERSHIP_KEY!r} key has reached its last version")
        key = TenantKey.generate(MEMBERSHIP_KEY, version=newest + 1)
        self.keyring.add(key)
        self._save_secrets(self._secrets)
        recipients = self._access.holders_except(excluded)
        if not recipients:
            return [KeyAnnouncement.of(key)]
        return list(MembershipKeyGrant.seal(key, recipients))

    def learn_granted_keys(self) -> int:
        """Keep every membership key version the tenant log grants to this node's signing key
        that it does not hold yet (opened with its encryption key, checked against the
        granted commitment; a grant that does not open or match is skipped). Returns how many
        were learnt. Cheap when there is nothing new: one look at the membership snapshot."""
        me = self._identity
        learnt = 0
        for announced, sealed in self._access.membership.key_grants(me.signing.public_key):
            if self.keyring.has_id(announced.key_id):
                continue
            try:
                secret = open_sealed(me, sealed)
                key = TenantKey(announced.key_id, MEMBERSHIP_KEY, announced.version, secret, 0)
            except (MindooError, ValueError):
                continue
            if announced.matches(key):
                learnt += self.keyring.add(key)
        if learnt:
            self._save_secrets(self._secrets)
        return learnt

    def rotate_keys_held(self) -> list[TenantKey]:
        """See `Tenant.rotate_keys_held`."""
        names = [DEFAULT_KEY, *(n for n in self.keyring.names() if n not in RESERVED_ROTATION)]
        return [self.rotate_key(name) for name in dict.fromkeys(names)]

    def shred_key(self, name: str) -> list[int]:
        """See `Tenant.shred_key`."""
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
        if self._writer.current_batch is not None:
            raise MindooError("a key cannot be shredded inside a write batch")
        doomed_ids = {key.key_id for key in doomed}
        store, tenant_id = self._store, self.tenant_id
        affected: dict[str, set[bytes]] = {}
        for database in store.databases(tenant_id):
            if database == TENANT_LOG:
                continue
            found = affected.setdefault(database, set())
            for entry in store.iter_entries(tenant_id, database):
                if entry.header.key_id in doomed_ids:
                    found.add(entry.document_id)
            for document_id in store.documents(tenant_id, database):
                snapshot = store.get_snapshot(tenant_id, database, document_id)
                if snapshot is not None and snapshot[1][:16] in doomed_ids:
                    found.add(document_id)
        for database, document_ids in affected.items():
            store.delete_snapshots(tenant_id, database, document_ids)
        for key in doomed:
            self.keyring.discard(key.key_id)
        try:
            self._save_secrets(self._secrets, dropped_key_ids=doomed_ids)
        except BaseException:
            for key in doomed:
                self.keyring.add(key)
            raise
        for database, document_ids in affected.items():
            for document_id in document_ids:
                self._forget_document(database, document_id)
        return sorted(key.version for key in doomed)

    def check_no_twin(self, key: TenantKey) -> None:
        """Raise VerificationError when this node holds another key with ``key``'s name and
        version (a second key of one name and version is refused)."""
        for held in self.keyring:
            if (held.name, held.version) == (key.name, key.version) and held.key_id != key.key_id:
                raise VerificationError(
                    f"key {key.name!r} version {key.version} ({key.key_id.hex()}) is not the"
                    f" one this node holds ({held.key_id.hex()}): a second key of one name"
                    " and version is refused"
                )

    # -- the key directory -------------------------------------------------------------------
    def key_directory(self) -> list[KeyInfo]:
        """See `Tenant.key_directory`."""
        infos: dict[bytes, KeyInfo] = {}
        for announced in self._access.membership.key_directory():
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
        return sorted({info.name for info in self.key_directory()})

    def key_name_for(self, key_id: bytes) -> str | None:
        if self.keyring.has_id(key_id):
            return self.keyring.by_id(key_id).name
        announced = self._access.membership.announced_key(key_id)
        return announced.name if announced is not None else None

    def key_label(self, key_id: bytes) -> str:
        name = self.key_name_for(key_id)
        return repr(name) if name is not None else key_id.hex()

    def announcement_entries(self, key_ids: Sequence[bytes]) -> list[Entry]:
        membership = self._access.membership
        wanted = {membership.announced_key(k) for k in key_ids}
        entry_ids = {i for a in wanted if a is not None for i in a.entry_ids()}
        found = (self._store.get(entry_id) for entry_id in sorted(entry_ids))
        return [entry for entry in found if entry is not None]

    def key_for_writing(self, key_id: bytes | None, name: str = DEFAULT_KEY) -> TenantKey:
        """See `Tenant.key_for_writing`.

        Every new key version is announced in the tenant log, so when the stored log grew
        (one read), the keystore is looked at for versions another process that has this home
        open saved (`LearnSavedKeys`): a rotation there is used here from the next write on,
        not after a restart. Inside one write batch the log is read once, at its first change
        (a read per change cost a sixth of a batched write's time; the batch's changes are
        sealed together anyway).
        """
        batch = self._writer.current_batch
        if batch is None or batch != self._keys_checked_batch:
            self._keys_checked_batch = batch
            log_seq = self._store.last_seq(self.tenant_id, TENANT_LOG)
            if log_seq != self._keys_log_seq:
                self._keys_log_seq = log_seq
                self._learn_saved_keys(self._secrets)
        keyring = self._secrets.keyring
        if key_id is not None:
            if not keyring.has_id(key_id):
                raise MissingKeyError(f"no key {self.key_label(key_id)} for this document")
            name = keyring.by_id(key_id).name
        return keyring.current(name)

    # -- key files ---------------------------------------------------------------------------
    def export_key(
        self,
        name: str,
        *,
        to: PublicIdentity | None = None,
        password: str | None = None,
        kdf: KdfProfile = KdfProfile.INTERACTIVE,
    ) -> bytes:
        """See `Node.export_key`."""
        if (to is None) == (password is None):
            raise ValueError("give exactly one of to= or password=")
        if name == MEMBERSHIP_KEY:
            raise InvalidNameError(f"the {name!r} key travels with invites, not key files")
        keys = [k for k in self.keyring if k.name == name]
        if not keys:
            raise MissingKeyError(f"no key {name!r} on this node")
        membership = self._access.membership
        if to is not None:
            member = membership.member(to.signing_key)
            if member is not None and member.role == ROLE_MIRROR:
                raise VerificationError(
                    f"{to} is a mirror of tenant {self.name!r}: mirrors hold no keys"
                )
            if member is not None and not member.active:
                raise VerificationError(f"{to} was revoked from tenant {self.name!r}")
            device = membership.device(to.signing_key)
            if device is not None and not membership.is_member(to.signing_key):
                raise VerificationError(
                    f"{to} is a revoked device (or of a revoked user) of tenant {self.name!r}"
                )
        if self.unannounced(keys) and self._secrets.admin_seed is not None:
            self.announce_held_keys()
        unannounced = self.unannounced(keys)
        if unannounced:
            raise VerificationError(
                f"key {name!r} version {unannounced[0].version} was never announced with its"
                " commitment in the tenant log, so no other node would accept it (the admin's"
                " node announces it on its next invite, key rotation or key export)"
            )
        # With them, how the membership key versions that seal those announcements were
        # granted (a recipient that has not synced since a rotation learns them from these).
        granted = [k.key_id for k in self.keyring if k.name == MEMBERSHIP_KEY and k.version > 1]
        entries = self.announcement_entries([k.key_id for k in keys] + granted)
        transfer = KeyTransfer(self.tenant_id, name, keys, [e.raw for e in entries])
        if to is not None:
            return seal_key_to(transfer, to)
        assert password is not None
        return protect_key_with_password(transfer, password, kdf)

    def import_file(self, key_file: KeyFile, password: str | None = None) -> KeyImport:
        """Import a key file of this tenant (read once by `key_transfer.read_key_file`);
        see `Node.import_key`."""
        if key_file.info.tenant_id != self.tenant_id:
            raise ValueError("this key file is for another tenant")
        me = self._access.membership.member(self._identity.signing.public_key)
        if me is not None and me.role == ROLE_MIRROR:
            raise VerificationError(
                f"this node is a mirror of tenant {self.name!r}: mirrors hold no document keys"
            )
        transfer = open_key_file(key_file, self._identity, password)
        entries = [Entry.decode(raw, "key file announcement") for raw in transfer.announcements]
        for entry in entries:
            if entry.tenant_id != self.tenant_id or entry.database != TENANT_LOG:
                raise VerificationError("the key file carries an entry from outside the tenant log")
        # An announcement sealed under a membership key version this node learns from a
        # grant in the same file opens once the grant is stored: offer the entries again.
        if self._ingest(entries).rejected:
            self._ingest(entries)
        membership = self._access.membership
        for key in transfer.keys:
            announced = membership.announced_key(key.key_id)
            if announced is None or not announced.matches(key):
                legacy = announced is not None and announced.commitment is None
                raise VerificationError(
                    f"key {key.name!r} version {key.version} ({key.key_id.hex()}) is not the"
                    f" one the admin of tenant {self.name!r} announced"
                    + (
                        " (announced without a commitment: ask for a new key file)"
                        if legacy
                        else ""
                    )
                )
            self.check_no_twin(key)
        added = [key.version for key in transfer.keys if self.keyring.add(key)]
        if added:
            self._save_secrets(self._secrets)
        return KeyImport(name=transfer.name, added_versions=sorted(added))


__all__ = ["RESERVED_ROTATION", "KeyImport", "KeyInfo", "TenantKeys"]
