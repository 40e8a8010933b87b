"""The membership key is rotated on revocation (issue 9, low): the new version is granted in
the tenant log to every remaining holder, so a revoked member cannot read later records."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_membership import ADMIN, ALICE, BOB, TENANT_ID, membership_entry, record, seal

from mindoo_p2p.entry import TENANT_LOG, Entry
from mindoo_p2p.errors import DecodeError, MindooError
from mindoo_p2p.keyring import MEMBERSHIP_KEY, TenantKey
from mindoo_p2p.membership import (
    MembershipAction,
    MembershipKeyGrant,
    MembershipLog,
    decode_tenant_log_record,
)
from mindoo_p2p.node import Node
from mindoo_p2p.rejection import RejectionKind

MakeNode = Callable[[str], Node]


def tenant_log(node: Node, tenant_id: bytes) -> list[bytes]:
    return [e.raw for e in node.store.iter_entries(tenant_id, TENANT_LOG)]


def readable(node: Node, tenant_id: bytes, entries: list[Entry]) -> list[bool]:
    """Which of ``entries`` the node's membership keys open."""
    keyring = node.tenant(tenant_id).keyring
    found = []
    for entry in entries:
        try:
            entry.decrypt(keyring.by_id(entry.header.key_id).secret)
            found.append(True)
        except MindooError:
            found.append(False)
    return found


def test_the_grant_record_round_trips_and_decodes_strictly() -> None:
    key = TenantKey.generate(MEMBERSHIP_KEY, version=2)
    (grant,) = MembershipKeyGrant.seal(key, [ALICE.public(), BOB.public(), ALICE.public()])
    assert len(grant.grants) == 2
    encoded = grant.encode()
    assert encoded[4:6] == b"\x05\x06"  # record version 5, action KEY_GRANT
    assert decode_tenant_log_record(encoded) == grant
    for size in range(len(encoded)):
        with pytest.raises(DecodeError):
            decode_tenant_log_record(encoded[:size])
    with pytest.raises(ValueError, match="only the '\\$membership' key"):
        MembershipKeyGrant.seal(TenantKey.generate("default"), [ALICE.public()])
    many = MembershipKeyGrant.seal(key, [type(ALICE).generate(f"u{i}").public() for i in range(70)])
    assert [len(g.grants) for g in many] == [32, 32, 6]


def test_only_the_admin_grants_and_a_grant_announces_its_key() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    add = membership_entry(record(MembershipAction.ADD, ALICE))
    log.apply(add, record(MembershipAction.ADD, ALICE))
    key = TenantKey.generate(MEMBERSHIP_KEY, version=2)
    (grant,) = MembershipKeyGrant.seal(key, [ALICE.public()])
    forged = seal(grant.encode(), author=ALICE.signing)
    refusal = log.check_record(forged, grant)
    assert refusal is not None and refusal.kind is RejectionKind.NOT_A_MEMBER
    entry = seal(grant.encode())
    log.apply(entry, grant)
    announced = log.announced_key(key.key_id)
    assert announced is not None and announced.matches(key)
    assert [sealed for _, sealed in log.key_grants(ALICE.signing.public_key)] == [
        grant.sealed_for(ALICE.signing.public_key)
    ]
    assert log.key_grants(BOB.signing.public_key) == []


def test_a_revoked_member_cannot_read_the_tenant_logs_later_records(make_node: MakeNode) -> None:
    admin, bob, mallory, mirror = (make_node(n) for n in ("admin", "bob", "mallory", "mirror"))
    laptop_phone = make_node("phone")
    tenant = admin.create_tenant("acme")
    for node in (bob, mallory):
        node.join(admin.invite(tenant, node.public_identity()))
    mirror.join(admin.invite(tenant, mirror.public_identity(), role="mirror"))
    bob.ingest(tenant_log(admin, tenant.id))
    request = laptop_phone.device_request(bob.public_identity())
    laptop_phone.join(bob.enroll_device(bob.tenant("acme"), request))
    admin.ingest(tenant_log(bob, tenant.id))
    old_key = tenant.keyring.current(MEMBERSHIP_KEY)

    revocation = tenant.revoke_member(mallory.public_identity())
    assert revocation.header.key_id == old_key.key_id  # mallory may read her own revocation
    new_key = tenant.keyring.current(MEMBERSHIP_KEY)
    assert new_key.version == 2
    carol = make_node("carol")
    later = tenant.add_member(carol.public_identity())  # written after the rotation
    assert later.header.key_id == new_key.key_id

    # Mallory gets every byte of the log (a copy of a store, a careless mirror) and tries the
    # keys she holds: the records written after her revocation stay closed to her.
    log = [Entry.decode(raw) for raw in tenant_log(admin, tenant.id)]
    mallory.ingest([e.raw for e in log])
    assert readable(mallory, tenant.id, [revocation, later]) == [True, False]
    assert not mallory.tenant("acme").keyring.has_id(new_key.key_id)

    # Everyone else learns the new version from the log itself and reads on.
    for node in (bob, mirror, laptop_phone):
        result = node.ingest([e.raw for e in log])
        node.ingest([e.raw for e in log])  # what a batch could not read yet lands next time
        assert node.tenant("acme").keyring.has_id(new_key.key_id), (node.home, result)
        assert readable(node, tenant.id, [later]) == [True]
        assert node.tenant("acme").membership.is_member(carol.public_identity().signing_key)

    # A newcomer's invite carries both versions and checks out against the log.
    carol.join(admin.invite(tenant, carol.public_identity()))
    held = {k.version for k in carol.tenant("acme").keyring if k.name == MEMBERSHIP_KEY}
    assert held == {1, 2}


def test_a_rotation_cut_short_never_seals_records_under_the_unannounced_version(
    make_node: MakeNode,
) -> None:
    admin, bob = make_node("admin"), make_node("bob")
    tenant = admin.create_tenant("acme")
    bob.join(admin.invite(tenant, bob.public_identity()))
    old_key = tenant.keyring.current(MEMBERSHIP_KEY)
    tenant.keys.prepare_membership_rotation(set())  # saved, but its records never written
    assert tenant.keyring.current(MEMBERSHIP_KEY).version == 2
    entry = tenant.add_member(make_node("carol").public_identity())
    assert entry.header.key_id == old_key.key_id
    bob.ingest(tenant_log(admin, tenant.id))
    assert len(bob.tenant("acme").members()) == 3
    # Nor is it handed on: an invite carries only the versions the log announces.
    dave = make_node("dave")
    dave.join(admin.invite(tenant, dave.public_identity()))
    assert [k.version for k in dave.tenant("acme").keyring if k.name == MEMBERSHIP_KEY] == [1]
