"""Forged invites (issue 9, finding 4), on real nodes: a mirror reads the tenant log and holds
the membership key, so it could seal an invite to a newcomer carrying the real log and a
default key of its own choosing. Invites are now signed by the admin and every key they carry
must be the one the admin announced (with its commitment)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.errors import VerificationError
from mindoo_p2p.invite import Invite, InviteKind, seal_invite
from mindoo_p2p.keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing, TenantKey
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant, TenantSecrets, tenant_id_for

MakeNode = Callable[[str], Node]


def forged_invite(mirror: Node, tenant_id: bytes, newcomer: Node, kind: InviteKind) -> bytes:
    """What a mirror can build from what it holds: the tenant log as stored, the real
    membership key and a default key it chose; signed with its own key."""
    tenant = mirror.tenant(tenant_id)
    chosen = TenantKey.generate(DEFAULT_KEY)
    invite = Invite(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        admin_key=tenant.admin_key,
        keys=[chosen, tenant.keyring.current(MEMBERSHIP_KEY)],
        membership_entries=[e.raw for e in mirror.store.iter_entries(tenant.id, TENANT_LOG)],
        inviter=mirror.public_identity(),
        invitee=newcomer.public_identity(),
        created_ms=1_700_000_000_000,
        kind=kind,
    )
    # An invite must be signed by the admin key, which the mirror does not hold; an
    # enrolment by the inviter, which the mirror is, but the log enrolls no device of it.
    signature = mirror.identity.signing.sign(invite.statement())
    return seal_invite(dataclasses.replace(invite, signature=signature))


@pytest.mark.parametrize("kind", [InviteKind.INVITE, InviteKind.ENROLMENT])
def test_a_mirror_cannot_hand_a_newcomer_a_default_key_of_its_choosing(
    make_node: MakeNode, kind: InviteKind
) -> None:
    admin, mirror, newcomer = make_node("admin"), make_node("mirror"), make_node("newcomer")
    tenant = admin.create_tenant("acme")
    mirror.join(admin.invite(tenant, mirror.public_identity(), role="mirror"))
    genuine = admin.invite(tenant, newcomer.public_identity())  # the admin adds the newcomer
    mirror.ingest([e.raw for e in admin.store.iter_entries(tenant.id, TENANT_LOG)])
    forged = forged_invite(mirror, tenant.id, newcomer, kind)
    expected = "not signed by the tenant's admin key" if kind is InviteKind.INVITE else "device"
    with pytest.raises(VerificationError, match=expected):
        newcomer.join(forged)
    assert newcomer.tenants() == []
    joined = newcomer.join(genuine)
    assert joined.keyring.current(DEFAULT_KEY) == tenant.keyring.current(DEFAULT_KEY)


def old_tenant(admin: Node, name: str) -> Tenant:
    """A tenant as the previous release created it: the admin's ADD only, no key announced."""
    signer = SigningKeyPair.generate()
    secrets = TenantSecrets(
        tenant_id=tenant_id_for(signer.public_key),
        name=name,
        admin_key=signer.public_key,
        admin_seed=signer.seed,
        keyring=KeyRing([TenantKey.generate(DEFAULT_KEY), TenantKey.generate(MEMBERSHIP_KEY)]),
    )
    admin.save_tenant(secrets)
    admin.reload()
    tenant = admin.tenant(name)
    tenant.add_member(admin.public_identity(), role="admin")
    return tenant


def test_a_tenant_from_before_announcements_gets_them_from_the_admins_next_invite(
    make_node: MakeNode,
) -> None:
    admin, laptop, phone = make_node("admin"), make_node("laptop"), make_node("phone")
    tenant = old_tenant(admin, "legacy")
    assert [k for k in tenant.key_directory() if k.announced] == []
    laptop.join(admin.invite(tenant, laptop.public_identity()))
    assert {(k.name, k.announced) for k in tenant.key_directory()} == {
        (DEFAULT_KEY, True),
        (MEMBERSHIP_KEY, True),
    }
    # The laptop (a member) can now enroll its phone: every key it holds is announced.
    request = phone.device_request(laptop.public_identity())
    phone.join(laptop.enroll_device(laptop.tenant("legacy"), request))
    phone_tenant = phone.tenant("legacy")
    assert phone_tenant.membership.is_member(phone_tenant.identity.signing.public_key)


def test_an_enrolment_is_refused_while_a_held_key_is_unannounced(make_node: MakeNode) -> None:
    admin, laptop, phone = make_node("admin"), make_node("laptop"), make_node("phone")
    tenant = old_tenant(admin, "legacy")
    tenant.add_member(laptop.public_identity())
    # The laptop got the keys the old way (an invite of the previous release): unannounced.
    laptop_secrets = TenantSecrets(
        tenant_id=tenant.id,
        name=tenant.name,
        admin_key=tenant.admin_key,
        admin_seed=None,
        keyring=KeyRing(list(tenant.keyring)),
    )
    laptop.save_tenant(laptop_secrets)
    laptop.reload()
    laptop.ingest([e.raw for e in admin.store.iter_entries(tenant.id, TENANT_LOG)])
    request = phone.device_request(laptop.public_identity())
    with pytest.raises(VerificationError, match="not yet announced"):
        laptop.enroll_device(laptop.tenant("legacy"), request)
    assert laptop.tenant("legacy").membership.devices() == []
