"""The recovery kit: one password-protected file that turns a new device into this user.

A kit holds the node's user identity (Ed25519 signing seed and X25519 encryption secret) and,
for every tenant the node belongs to, everything its keystore holds for it (`TenantSecrets`:
every key version, the admin seed on the admin's node, the database registry) plus the tenant
log (sealed, admin-signed membership entries), so a node restored from it (`Node.restore`)
knows at once who belongs to each tenant and can verify peers. It holds none of the user's
entries, so a restored node writes only after its first sync (`restore_guard`).
It never holds the libp2p peer seed (a new device gets a new peer id), documents or the store:
those come back from any peer or mirror of the tenants.

Anyone holding the file and its password becomes this user. File format, version 2 (integers
big-endian, varint = minimal LEB128)::

    magic        4 bytes  b"MDRK"
    version      u8       2 (1 is still read: it has no per-tenant identities)
    opslimit     u64      argon2id passes
    memlimit     u64      argon2id memory in bytes (both bounded like the keystore's)
    salt         16 bytes
    nonce        24 bytes
    ciphertext   varint length + XChaCha20-Poly1305 of the payload, with every byte before it
                 as associated data (the key is argon2id of the NFC-normalised password)

    payload:
      created_ms     u64
      identity       name (varint length <= 512 + UTF-8), signing seed 32, encryption secret 32
      tenant count   varint (<= 1024), tenants in ascending id order, each:
        tenant_id    16 bytes (must equal the id derived from the admin key)
        name         varint length <= 512 + UTF-8
        admin_key    32 bytes
        admin_seed   u8 0 (not the admin) or 1, then 32 bytes (must match the admin key)
        identity     version 2 only: u8 0 (the tenant uses the node's identity) or 1, then
                     the tenant's member identity (name, signing seed 32, encryption
                     secret 32: `TenantSecrets.identity`)
        keys         varint count (1-1024), each: key_id 16, name (varint length <= 64 +
                     ASCII), version varint (1 .. 2**32-1), secret 32, created_ms u64
        databases    varint count (<= 4096), each name (varint length <= 64 + ASCII)
        tenant log   varint count (<= 100000), each varint length (<= 64 KiB) + sealed entry
      invite identities  version 2 only: varint count (<= 64), each an identity as above
                     (handed out for invites not yet joined: `Node.invite_identity`)

Nothing is in the clear but the magic, the version and the KDF parameters: a found kit does not
say whose it is. A later format adds fields under a new version number; readers refuse versions
they do not know.
Decoding is strict (one encoding per kit, every count and length bounded, every key checked)
and raises only :class:`DecodeError`; a wrong password (or an altered file) raises
:class:`WrongPasswordError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import nacl.public

from .codec import Reader, Writer
from .crypto import aead
from .crypto.keystore import KdfProfile
from .crypto.signing import SEED_SIZE, SigningKeyPair
from .entry import KEY_ID_SIZE, TENANT_ID_SIZE, TENANT_LOG, Entry, validate_database_name
from .errors import DecodeError, MindooError, WrongPasswordError
from .identity import MAX_NAME_BYTES, PUBLIC_KEY_SIZE, UserIdentity, check_signing_key
from .invite_identities import MAX_INVITE_IDENTITIES
from .key_transfer import read_password_sealed, seal_with_password
from .keyring import MEMBERSHIP_KEY, KeyRing, TenantKey, validate_key_name
from .store import EntryStore
from .tenant_secrets import TenantSecrets, tenant_id_for, validate_tenant_name


class KitTenant(Protocol):
    """A tenant as a recovery kit reads it (`Tenant` provides it)."""

    @property
    def id(self) -> bytes: ...

    @property
    def secrets(self) -> TenantSecrets: ...


class KitSource(Protocol):
    """What a recovery kit is made from (`Node` provides it; no import of it here)."""

    @property
    def identity(self) -> UserIdentity: ...

    @property
    def store(self) -> EntryStore: ...

    def tenants(self) -> Sequence[KitTenant]: ...

    def waiting_invite_identities(self) -> list[UserIdentity]: ...


KIT_MAGIC = b"MDRK"
KIT_VERSION = 2
KIT_VERSION_WITHOUT_TENANT_IDENTITIES = 1
MAX_KIT_SIZE = 64 * 1024 * 1024
"""A kit over this size is refused unread (the keystore's own limit)."""
MAX_TENANTS = 1024
MAX_KEYS_PER_TENANT = 1024
MAX_KEY_NAME_SIZE = 64
MAX_KEY_VERSION = (1 << 32) - 1
MAX_DATABASES_PER_TENANT = 4096
MAX_DATABASE_NAME_SIZE = 64
MAX_LOG_ENTRIES = 100_000
MAX_LOG_ENTRY_SIZE = 64 * 1024
MIN_PASSWORD_CHARS = 8
"""A kit makes its holder this user: it is not protected by a password shorter than this."""
DEFAULT_KDF = KdfProfile.MODERATE
"""Kits are long-lived files kept off the device: argon2id with 256 MiB and 3 passes."""

_KIT_WHAT = "the recovery kit"


@dataclass(frozen=True)
class RecoveredTenant:
    """One tenant in a kit: its keystore secrets and its tenant log."""

    secrets: TenantSecrets = field(repr=False)
    tenant_log: list[bytes] = field(repr=False)
    """Sealed tenant-log entries (the node that restores verifies them like any arrival)."""

    @property
    def tenant_id(self) -> bytes:
        return self.secrets.tenant_id

    @property
    def name(self) -> str:
        return self.secrets.name

    @property
    def is_admin(self) -> bool:
        return self.secrets.admin_seed is not None

    def __repr__(self) -> str:  # never show a secret
        return (
            f"RecoveredTenant(name={self.name!r}, id={self.tenant_id.hex()},"
            f" admin={self.is_admin}, keys={len(self.secrets.keyring)})"
        )


@dataclass(frozen=True)
class RecoveryKit:
    """What a recovery kit holds, decoded and checked (see the module docstring)."""

    identity: UserIdentity
    tenants: list[RecoveredTenant]
    created_ms: int
    invite_identities: list[UserIdentity] = field(default_factory=list, repr=False)
    """Identities handed out for invites and not yet joined with (so the restored node can
    still join those invites)."""

    def __post_init__(self) -> None:
        if len(self.tenants) > MAX_TENANTS:
            raise ValueError(f"a recovery kit holds at most {MAX_TENANTS} tenants")
        if len(self.invite_identities) > MAX_INVITE_IDENTITIES:
            raise ValueError(f"a recovery kit holds at most {MAX_INVITE_IDENTITIES} invite ids")
        ids = [t.tenant_id for t in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError("a recovery kit holds each tenant once")
        if not 0 <= self.created_ms < 1 << 64:
            raise ValueError("created_ms must fit in 64 bits")
        for index, tenant in enumerate(self.tenants):
            try:
                _check_tenant(tenant)
            except ValueError as exc:
                raise ValueError(f"tenant {index} ({tenant.name!r}): {exc}") from None


def export_recovery_kit(node: KitSource, password: str, kdf: KdfProfile = DEFAULT_KDF) -> bytes:
    """The recovery kit of ``node``: its identity and every tenant it belongs to, under
    ``password`` (argon2id with ``kdf``'s limits). The plaintext never touches the disk.

    Raises :class:`WrongPasswordError` for a password shorter than `MIN_PASSWORD_CHARS`
    characters and :class:`MindooError` when the kit would exceed `MAX_KIT_SIZE`.
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise WrongPasswordError(
            f"a recovery kit needs a password of at least {MIN_PASSWORD_CHARS} characters:"
            " whoever has the file and the password becomes you"
        )
    tenants = [
        RecoveredTenant(
            secrets=tenant.secrets,
            tenant_log=[e.raw for e in node.store.iter_entries(tenant.id, TENANT_LOG)],
        )
        for tenant in node.tenants()
    ]
    try:
        kit = RecoveryKit(
            node.identity,
            tenants,
            created_ms=int(time.time() * 1000),
            invite_identities=node.waiting_invite_identities()[-MAX_INVITE_IDENTITIES:],
        )
    except ValueError as exc:
        raise MindooError(f"this node cannot be put in a recovery kit: {exc}") from None
    return seal_recovery_kit(kit, password, kdf)


def seal_recovery_kit(
    kit: RecoveryKit, password: str, kdf: KdfProfile = DEFAULT_KDF, *, version: int = KIT_VERSION
) -> bytes:
    """The kit file of ``kit`` under ``password`` (`export_recovery_kit` checks the password
    first). ``version`` 1 writes the format earlier programs wrote (tests of old kits): a
    kit with per-tenant or invite identities raises ValueError there, MindooError when the
    file would exceed `MAX_KIT_SIZE`."""
    if version not in (KIT_VERSION, KIT_VERSION_WITHOUT_TENANT_IDENTITIES):
        raise ValueError(f"no recovery kit version {version}")
    payload = _encode_payload(kit, version)
    data = seal_with_password(Writer().raw(KIT_MAGIC).u8(version), payload, password, kdf)
    if len(data) > MAX_KIT_SIZE:
        raise MindooError(
            f"the recovery kit would be {len(data)} bytes, over the limit of {MAX_KIT_SIZE}"
        )
    return data


def read_recovery_kit(data: bytes, password: str) -> RecoveryKit:
    """Open and decode a recovery kit.

    Raises :class:`DecodeError` for anything that is not a well-formed kit (wrong magic or
    version, truncated, trailing bytes, argon2id limits out of bounds, an invalid field) and
    :class:`WrongPasswordError` when the password is empty or wrong (or the file was altered).
    Nothing is written anywhere.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"recovery kit: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_KIT_SIZE:
        raise DecodeError(f"recovery kit: {len(data)} bytes, over the limit {MAX_KIT_SIZE}")
    r = Reader(data, "recovery kit")
    if r.fixed(len(KIT_MAGIC), "magic") != KIT_MAGIC:
        raise DecodeError("not a mindoo recovery kit (bad magic)")
    version = r.u8("version")
    if version not in (KIT_VERSION, KIT_VERSION_WITHOUT_TENANT_IDENTITIES):
        raise DecodeError(
            f"recovery kit: unsupported version {version} (this program reads versions"
            f" {KIT_VERSION_WITHOUT_TENANT_IDENTITIES} and {KIT_VERSION})"
        )
    sealed = read_password_sealed(r, data, MAX_KIT_SIZE)
    return _decode_payload(sealed.open(password, _KIT_WHAT), version)


# -- encoding ------------------------------------------------------------------------------
def _encode_payload(kit: RecoveryKit, version: int = KIT_VERSION) -> bytes:
    """The payload in ``version`` (version 1 only for tests of old kits: it drops the
    per-tenant and invite identities, so only a kit without them can be written in it)."""
    w = Writer().u64(kit.created_ms)
    _write_identity(w, kit.identity)
    tenants = sorted(kit.tenants, key=lambda t: t.tenant_id)
    w.varint(len(tenants))
    for tenant in tenants:
        secrets = tenant.secrets
        w.fixed(secrets.tenant_id, TENANT_ID_SIZE).text(secrets.name)
        w.fixed(secrets.admin_key, PUBLIC_KEY_SIZE)
        if secrets.admin_seed is None:
            w.u8(0)
        else:
            w.u8(1).fixed(secrets.admin_seed, SEED_SIZE)
        if version >= KIT_VERSION:
            _write_optional_identity(w, secrets.identity)
        elif secrets.identity is not None:
            raise ValueError("a version 1 kit cannot hold a per-tenant identity")
        keys = _canonical_keys(secrets.keyring)
        w.varint(len(keys))
        for key in keys:
            w.fixed(key.key_id, KEY_ID_SIZE).text(key.name).varint(key.version)
            w.fixed(key.secret, aead.KEY_SIZE).u64(key.created_ms)
        databases = sorted(secrets.databases)
        w.varint(len(databases))
        for name in databases:
            w.text(name)
        w.varint(len(tenant.tenant_log))
        for raw in tenant.tenant_log:
            w.blob(raw)
    if version >= KIT_VERSION:
        w.varint(len(kit.invite_identities))
        for waiting in kit.invite_identities:
            _write_identity(w, waiting)
    elif kit.invite_identities:
        raise ValueError("a version 1 kit cannot hold invite identities")
    return w.getvalue()


def _write_identity(w: Writer, identity: UserIdentity) -> None:
    w.text(identity.name)
    w.fixed(identity.signing.seed, SEED_SIZE)
    w.fixed(bytes(identity.encryption), aead.KEY_SIZE)


def _write_optional_identity(w: Writer, identity: UserIdentity | None) -> None:
    if identity is None:
        w.u8(0)
    else:
        w.u8(1)
        _write_identity(w, identity)


def _decode_payload(payload: bytes, version: int = KIT_VERSION) -> RecoveryKit:
    """Strictly decode the protected payload of a kit of ``version``; DecodeError only."""
    r = Reader(payload, "recovery kit payload")
    created_ms = r.u64("created_ms")
    identity = _read_identity(r)
    count = r.varint("tenant count", max_value=MAX_TENANTS)
    tenants: list[RecoveredTenant] = []
    previous = b""
    for index in range(count):
        tenant = _read_tenant(r, index, version)
        if tenant.tenant_id <= previous:
            raise DecodeError(f"{r.what}: tenants out of order or repeated at tenant {index}")
        previous = tenant.tenant_id
        tenants.append(tenant)
    waiting: list[UserIdentity] = []
    if version >= KIT_VERSION:
        waiting_count = r.varint("invite identity count", max_value=MAX_INVITE_IDENTITIES)
        waiting = [_read_identity(r) for _ in range(waiting_count)]
    r.end()
    try:
        return RecoveryKit(identity, tenants, created_ms, invite_identities=waiting)
    except ValueError as exc:
        raise DecodeError(f"{r.what}: {exc}") from None


def _read_identity(r: Reader) -> UserIdentity:
    name = r.text("identity name", MAX_NAME_BYTES)
    seed = r.fixed(SEED_SIZE, "identity signing seed")
    secret = r.fixed(aead.KEY_SIZE, "identity encryption secret")
    try:
        return UserIdentity(name, SigningKeyPair(seed), nacl.public.PrivateKey(secret))
    except ValueError as exc:  # InvalidNameError is a ValueError
        raise DecodeError(f"{r.what}: invalid identity: {exc}") from None


def _read_tenant(r: Reader, index: int, version: int) -> RecoveredTenant:
    where = f"tenant {index}"
    tenant_id = r.fixed(TENANT_ID_SIZE, f"{where} id")
    name = r.text(f"{where} name", MAX_NAME_BYTES)
    admin_key = r.fixed(PUBLIC_KEY_SIZE, f"{where} admin key")
    flag = r.u8(f"{where} admin seed flag")
    if flag not in (0, 1):
        raise DecodeError(f"{r.what}: {where} admin seed flag is {flag}, not 0 or 1")
    admin_seed = r.fixed(SEED_SIZE, f"{where} admin seed") if flag else None
    identity: UserIdentity | None = None
    if version >= KIT_VERSION:
        has_identity = r.u8(f"{where} identity flag")
        if has_identity not in (0, 1):
            raise DecodeError(f"{r.what}: {where} identity flag is {has_identity}, not 0 or 1")
        identity = _read_identity(r) if has_identity else None
    key_count = r.varint(f"{where} key count", max_value=MAX_KEYS_PER_TENANT)
    keys: list[TenantKey] = []
    for k in range(key_count):
        key_id = r.fixed(KEY_ID_SIZE, f"{where} key {k} id")
        key_name = r.text(f"{where} key {k} name", MAX_KEY_NAME_SIZE)
        version = r.varint(f"{where} key {k} version", max_value=MAX_KEY_VERSION)
        secret = r.fixed(aead.KEY_SIZE, f"{where} key {k} secret")
        key_created = r.u64(f"{where} key {k} created_ms")
        try:
            keys.append(
                TenantKey(key_id, validate_key_name(key_name), version, secret, key_created)
            )
        except ValueError as exc:  # InvalidNameError is a ValueError
            raise DecodeError(f"{r.what}: {where} key {k}: {exc}") from None
    if len({key.key_id for key in keys}) != len(keys):
        raise DecodeError(f"{r.what}: {where}: a key id is repeated")
    if keys != _canonical_keys(keys):
        raise DecodeError(f"{r.what}: {where}: keys are not in (name, version, id) order")
    keyring = KeyRing(keys)
    db_count = r.varint(f"{where} database count", max_value=MAX_DATABASES_PER_TENANT)
    databases = [r.text(f"{where} database {d}", MAX_DATABASE_NAME_SIZE) for d in range(db_count)]
    if databases != sorted(databases):
        raise DecodeError(f"{r.what}: {where} databases are not in order")
    log_count = r.varint(f"{where} tenant log count", max_value=MAX_LOG_ENTRIES)
    log = [r.blob(f"{where} log entry {e}", MAX_LOG_ENTRY_SIZE) for e in range(log_count)]
    secrets = TenantSecrets(
        tenant_id=tenant_id,
        name=name,
        admin_key=admin_key,
        admin_seed=admin_seed,
        keyring=keyring,
        databases=databases,
        identity=identity,
    )
    return RecoveredTenant(secrets, log)


def _canonical_keys(keys: Iterable[TenantKey]) -> list[TenantKey]:
    """The order keys are written in (one encoding per kit)."""
    return sorted(keys, key=lambda k: (k.name, k.version, k.key_id))


def _check_tenant(tenant: RecoveredTenant) -> None:
    """Raise ValueError unless ``tenant`` is consistent (the same rules encode and decode)."""
    secrets = tenant.secrets
    validate_tenant_name(secrets.name)
    if len(secrets.tenant_id) != TENANT_ID_SIZE:
        raise ValueError(f"a tenant id is {TENANT_ID_SIZE} bytes")
    check_signing_key(secrets.admin_key)
    if tenant_id_for(secrets.admin_key) != secrets.tenant_id:
        raise ValueError("the tenant id does not match the admin key")
    if secrets.admin_seed is not None and (
        len(secrets.admin_seed) != SEED_SIZE
        or SigningKeyPair(secrets.admin_seed).public_key != secrets.admin_key
    ):
        raise ValueError("the admin seed does not match the admin key")
    if not 1 <= len(secrets.keyring) <= MAX_KEYS_PER_TENANT:
        raise ValueError(f"a tenant holds 1-{MAX_KEYS_PER_TENANT} key versions")
    if MEMBERSHIP_KEY not in secrets.keyring.names():
        raise ValueError(f"the {MEMBERSHIP_KEY!r} key is missing")
    if any(key.version > MAX_KEY_VERSION for key in secrets.keyring):
        raise ValueError(f"key versions must be at most {MAX_KEY_VERSION}")
    _check_databases(secrets.databases)
    _check_tenant_log(tenant.tenant_log, secrets.tenant_id)


def _check_databases(names: Sequence[str]) -> None:
    if len(names) > MAX_DATABASES_PER_TENANT:
        raise ValueError(f"at most {MAX_DATABASES_PER_TENANT} databases per tenant")
    for name in names:
        validate_database_name(name)
    if len(set(names)) != len(names):
        raise ValueError("a database is listed twice")


def _check_tenant_log(log: Sequence[bytes], tenant_id: bytes) -> None:
    if len(log) > MAX_LOG_ENTRIES:
        raise ValueError(f"at most {MAX_LOG_ENTRIES} tenant log entries")
    for index, raw in enumerate(log):
        if not isinstance(raw, bytes) or len(raw) > MAX_LOG_ENTRY_SIZE:
            raise ValueError(f"tenant log entry {index} is not bytes of <= {MAX_LOG_ENTRY_SIZE}")
        try:
            entry = Entry.decode(raw, f"tenant log entry {index}")
        except DecodeError as exc:
            raise ValueError(str(exc)) from None
        if entry.tenant_id != tenant_id or entry.database != TENANT_LOG:
            raise ValueError(f"tenant log entry {index} is not from this tenant's log")
