"""Invites and device enrolments: sealing them for others, joining with one.

`Invitations` is the node's invite work, given narrow collaborators (never the node):

- `invite` adds a member (or a mirror: replication without any document key) and seals to
  them the keys their role gets and the whole tenant log so far, signed by the admin key;
- `invite_identity` / `device_request` hand out a fresh identity of this node, kept waiting in
  the keystore (`invite_identities`), so a tenant joined with it shares no key with the node's
  other tenants; `enroll_device` seals an enrolment for another device of this node's user;
- `join` opens an invite with whichever of this node's identities it is sealed to (only those
  whose fingerprint it names in the clear are tried), makes a waiting identity the member
  identity of the new tenant (or adds the keys of a later invite to a tenant held here), and
  stores the invite's tenant log through the admission pipeline; it fails unless that makes
  this node a member.
"""

from __future__ import annotations

from collections.abc import Callable

from .admission import VerifiedEntry
from .crypto.signing import SigningKeyPair
from .device_request import DeviceRequest
from .entry import TENANT_LOG
from .errors import VerificationError
from .identity import PublicIdentity, UserIdentity
from .invite import (
    Invite,
    InviteKind,
    InviteNotForYouError,
    invite_recipient_fingerprint,
    open_checked_invite,
    seal_invite,
)
from .invite_identities import WaitingInviteIdentities
from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from .membership_records import ROLE_MIRROR
from .store import EntryStore
from .tenant import Tenant, TenantSecrets, now_ms, tenant_id_for
from .tenant_collaborators import Ingest
from .tenant_registry import TenantRegistry

AdoptTenant = Callable[[TenantSecrets], Tenant]
"""Save a new tenant's secrets, compose it and hold it (the node's `_adopt`)."""


class Invitations:
    """The node's invite work; see the module docstring."""

    def __init__(
        self,
        identity: UserIdentity,
        store: EntryStore,
        tenants: TenantRegistry,
        waiting: WaitingInviteIdentities,
        *,
        save_tenant: Callable[[TenantSecrets], None],
        adopt: AdoptTenant,
        ingest: Ingest,
    ) -> None:
        self._identity = identity
        self._store = store
        self._tenants = tenants
        self._waiting = waiting
        self._save_tenant = save_tenant
        self._adopt = adopt
        self._ingest = ingest

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
        return self._sealed(tenant, invitee, keys, InviteKind.INVITE, SigningKeyPair(seed))

    def invite_identity(self) -> PublicIdentity:
        """A fresh identity (new keys, this user's name) for one invite: hand its identity
        file to the admin. `join` finds it by the invite's recipient and makes it this
        node's member identity in that tenant, so the tenant shares no key with this node's
        other tenants (the node's own identity links every tenant it is invited with). The
        private half waits in the keystore (`invite_identities`)."""
        return self._waiting.new().public()

    def waiting_identities(self) -> list[UserIdentity]:
        """The identities handed out by `invite_identity` (or `device_request`) that no join
        has used yet, oldest first."""
        return self._waiting.all()

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
        return self._sealed(tenant, device, keys, InviteKind.ENROLMENT, signer)

    def join(self, invite_bytes: bytes) -> Tenant:
        """Import a sealed invite addressed to one of this node's identities: a waiting
        invite identity (`invite_identity`, `device_request`) becomes this node's member
        identity in a new tenant; an invite to the node's own identity makes that one the
        member identity (as before per-tenant identities); a later invite into a tenant
        held here (new keys) is addressed to that tenant's identity."""
        invite, log, recipient = self._open(invite_bytes)
        if tenant_id_for(invite.admin_key) != invite.tenant_id:
            raise VerificationError("invite names a tenant id that does not match its admin key")
        existing = self._tenants.get(invite.tenant_id)
        if existing is not None:
            for key in invite.keys:
                existing.keys.check_no_twin(key)
            for key in invite.keys:
                existing.keyring.add(key)
            self._save_tenant(existing.secrets)
            tenant = existing
        else:
            secrets = TenantSecrets(
                tenant_id=invite.tenant_id,
                name=invite.tenant_name,
                admin_key=invite.admin_key,
                admin_seed=None,
                keyring=KeyRing(list(invite.keys)),
                identity=recipient if recipient is not self._identity else None,
            )
            tenant = self._adopt(secrets)
            if secrets.identity is not None:
                self._waiting.forget(secrets.identity)
        result = self._ingest(log)
        if not tenant.membership.is_member(tenant.identity.signing.public_key):
            reasons = "; ".join(r.reason for r in result.rejected) or "no membership record"
            raise VerificationError(f"the invite does not make this node a member: {reasons}")
        return tenant

    def _recipients(self) -> list[UserIdentity]:
        """Every identity an invite to this node may be sealed to: the waiting invite
        identities, the tenants' member identities, the node's own."""
        return [*self.waiting_identities(), *self._tenants.member_identities(), self._identity]

    def _open(self, data: bytes) -> tuple[Invite, list[VerifiedEntry], UserIdentity]:
        """Open an invite with whichever of this node's identities it is sealed to; raise
        what opening it with the node's own identity raises when none fits."""
        named = invite_recipient_fingerprint(data)
        for candidate in self._recipients():
            if candidate.fingerprint != named:
                continue
            try:
                invite, log = open_checked_invite(data, candidate)
            except InviteNotForYouError:
                continue
            return invite, log, candidate
        invite, log = open_checked_invite(data, self._identity)  # raises "not for you"
        return invite, log, self._identity

    def _sealed(
        self,
        tenant: Tenant,
        invitee: PublicIdentity,
        keys: list[TenantKey],
        kind: InviteKind,
        signer: SigningKeyPair,
    ) -> bytes:
        """An invite sealed to ``invitee``: ``keys`` and the whole tenant log so far, signed
        by ``signer``."""
        log = [e.raw for e in self._store.iter_entries(tenant.id, TENANT_LOG)]
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


__all__ = ["AdoptTenant", "Invitations"]
