"""Several devices, one person: enrolment, device-only revocation, user revocation, refusals."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_membership import ALICE, BOB

from mindoo_p2p.device_request import DeviceRequest
from mindoo_p2p.errors import DecodeError, NotFoundError, VerificationError
from mindoo_p2p.identity import PublicIdentity
from mindoo_p2p.membership import (
    DeviceEnrolment,
    DeviceRevocation,
    Revocation,
    decode_tenant_log_record,
)
from mindoo_p2p.node import Node
from mindoo_p2p.tenant import Tenant
from mindoo_p2p.testing import Cluster

MakeNode = Callable[[str], Node]


# -- records ---------------------------------------------------------------------------------


def test_device_records_round_trip() -> None:
    enrolment = DeviceEnrolment(ALICE.signing.public_key, BOB.public())
    revocation = DeviceRevocation(ALICE.signing.public_key, BOB.signing.public_key, 12)
    for record in (enrolment, revocation):
        assert decode_tenant_log_record(record.encode()) == record
    with pytest.raises(ValueError, match="own signing key"):
        DeviceEnrolment(ALICE.signing.public_key, ALICE.public())


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 300), mask=st.integers(1, 255))
def test_device_record_decode_fuzz(index: int, mask: int) -> None:
    data = bytearray(DeviceEnrolment(ALICE.signing.public_key, BOB.public()).encode())
    data[index % len(data)] ^= mask
    try:
        decoded = decode_tenant_log_record(bytes(data))
    except DecodeError:
        return
    assert decoded.encode() == bytes(data)


# -- nodes -----------------------------------------------------------------------------------


def setup(make_node: MakeNode) -> tuple[Node, Node, Node, Tenant]:
    """The admin's node, Alice's laptop (a member) and Alice's phone (enrolled by the laptop)."""
    admin, laptop, phone = make_node("admin"), make_node("laptop"), make_node("phone")
    tenant = admin.create_tenant("acme")
    laptop.join(admin.invite(tenant, laptop.public_identity()))
    phone.join(enrolment(laptop, phone))
    admin.ingest([e.raw for e in laptop.store.iter_entries(tenant.id)])
    return admin, laptop, phone, tenant


def enrolment(user: Node, device: Node) -> bytes:
    """The enrolment of ``device`` by ``user`` in acme (from the device's signed request)."""
    user_in_acme = user.tenant("acme").identity.public()
    return user.enroll_device(user.tenant("acme"), device.device_request(user_in_acme))


def in_acme(node: Node) -> PublicIdentity:
    """The identity ``node`` has in acme (a device's key there is its own, fresh one)."""
    return node.tenant("acme").identity.public()


def share(source: Node, *targets: Node) -> None:
    raws = [e.raw for e in source.store.iter_entries()]
    for target in targets:
        target.ingest(raws)


def test_an_enrolled_device_writes_with_its_own_key_and_reads_the_users_keys(
    make_node: MakeNode,
) -> None:
    admin, laptop, phone, tenant = setup(make_node)
    secret_doc = laptop.tenant("acme").create_db("hr").create_document({"s": 1})
    laptop_tenant = laptop.tenant("acme")
    phone_tenant = phone.tenant("acme")
    assert phone_tenant.membership.is_member(in_acme(phone).signing_key)
    device = tenant.membership.device(in_acme(phone).signing_key)
    assert device is not None and device.user_key == laptop.public_identity().signing_key
    assert tenant.member_name(in_acme(phone).signing_key) == "laptop (phone)"

    doc = phone_tenant.create_db("notes").create_document({"from": "phone"})
    share(phone, admin, laptop)
    assert tenant.create_db("notes").get(doc) == {"from": "phone"}
    assert laptop_tenant.create_db("notes").get(doc) == {"from": "phone"}
    authors = {e.author for e in admin.store.iter_entries(tenant.id, "notes")}
    assert authors == {in_acme(phone).signing_key}  # the device's own key
    share(laptop, phone)
    assert phone_tenant.create_db("hr").get(secret_doc) == {"s": 1}


def test_a_named_key_the_user_holds_reaches_the_device(make_node: MakeNode) -> None:
    admin, laptop, _, tenant = setup(make_node)
    tenant.create_key("confidential")
    laptop.import_key(admin.export_key(tenant, "confidential", to=laptop.public_identity()), None)
    tablet = make_node("tablet")
    tablet.join(enrolment(laptop, tablet))
    assert "confidential" in tablet.tenant("acme").keyring.names()


def test_revoking_a_lost_phone_leaves_the_laptop_alone(make_node: MakeNode) -> None:
    admin, laptop, phone, tenant = setup(make_node)
    pdb = phone.tenant("acme").create_db("notes")
    before = pdb.create_document({"n": "before"})
    share(phone, admin, laptop)
    laptop.tenant("acme").revoke_device(in_acme(phone).signing_key)
    share(laptop, admin)

    after = pdb.create_document({"n": "after the phone was lost"})  # the thief writes
    laptop_doc = laptop.tenant("acme").create_db("notes").create_document({"n": "laptop"})
    result = admin.ingest([e.raw for e in phone.store.iter_entries(tenant.id, "notes")])
    assert any("device phone" in r.reason and "revoked" in r.reason for r in result.rejected)
    share(laptop, admin)
    notes = tenant.create_db("notes")
    assert notes.get(before) == {"n": "before"}
    assert notes.get(laptop_doc) == {"n": "laptop"}
    assert after not in {d for d in notes.list_documents()}
    membership = tenant.membership
    assert not membership.is_member(in_acme(phone).signing_key)
    assert membership.is_member(laptop.public_identity().signing_key)


def test_the_admin_may_revoke_a_device_and_the_device_cannot_enroll_others(
    make_node: MakeNode,
) -> None:
    admin, laptop, phone, tenant = setup(make_node)
    with pytest.raises(VerificationError, match="cannot enroll"):
        enrolment(phone, make_node("watch"))
    entry = tenant.revoke_device(in_acme(phone).signing_key)
    assert entry.author == tenant.admin_key
    share(admin, laptop)
    assert not laptop.tenant("acme").membership.is_member(in_acme(phone).signing_key)
    again = DeviceRequest.sign(phone.tenant("acme").identity, in_acme(laptop).signing_key)
    with pytest.raises(VerificationError, match="again after its revocation"):
        laptop.enroll_device(laptop.tenant("acme"), again)
    with pytest.raises(NotFoundError):
        tenant.revoke_device(laptop.public_identity().signing_key)


def test_revoking_the_user_covers_every_device(make_node: MakeNode) -> None:
    admin, laptop, phone, tenant = setup(make_node)
    phone.tenant("acme").create_db("notes").create_document({"n": 1})
    share(phone, admin)
    entry = tenant.revoke_member(laptop.public_identity())
    secret = tenant.keyring.by_id(entry.header.key_id).secret
    record = decode_tenant_log_record(entry.decrypt(secret))
    assert isinstance(record, Revocation)
    phone_key = in_acme(phone).signing_key
    assert record.cut_of(phone_key) == 1  # what the admin held of the phone stays
    assert not tenant.membership.is_member(phone_key)
    late = phone.tenant("acme").create_db("notes").create_document({"n": 2})
    result = admin.ingest([e.raw for e in phone.store.iter_entries(tenant.id, "notes")])
    assert len(result.rejected) == 1
    assert late not in tenant.create_db("notes").list_documents()


def test_device_records_from_strangers_and_for_member_keys_are_refused(
    make_node: MakeNode,
) -> None:
    admin, laptop, _, tenant = setup(make_node)
    bob = make_node("bob")
    bob.join(admin.invite(tenant, bob.public_identity()))
    share(bob, laptop)
    with pytest.raises(VerificationError, match="key is a member's"):
        laptop.tenant("acme").enroll_device(  # bob's member key, as a device of laptop's user
            DeviceRequest.sign(bob.tenant("acme").identity, in_acme(laptop).signing_key)
        )
    mirror = make_node("mirror")
    mirror.join(admin.invite(tenant, mirror.public_identity(), role="mirror"))
    with pytest.raises(VerificationError, match="mirror"):
        mirror.tenant("acme").enroll_device(
            make_node("m2").device_request(mirror.public_identity())
        )


async def test_a_device_syncs_over_the_network_with_its_own_credentials(
    cluster: Cluster,
) -> None:
    with trio.fail_after(60):
        await cluster.start(3, names=["admin", "laptop", "phone"])
        cluster.create_tenant("acme", members=[1])
        laptop, phone = cluster.nodes[1].require(), cluster.nodes[2].require()
        phone.join(enrolment(laptop, phone))
        # The phone only ever talks to the admin's node, which learns of it through the
        # phone's own credential (the laptop's enrolment record) during the handshake.
        await cluster.connect(2, 0)
        doc = cluster.db(2, "acme", "notes").create_document({"from": "phone"})
        await cluster.connect(1, 0)
        await cluster.wait_converged(timeout=30)
        assert cluster.db(0, "acme", "notes").get(doc) == {"from": "phone"}
        assert cluster.db(1, "acme", "notes").get(doc) == {"from": "phone"}


def test_key_files_go_to_active_devices_only(make_node: MakeNode) -> None:
    admin, laptop, phone, tenant = setup(make_node)
    tenant.create_key("team")
    share(admin, laptop, phone)
    laptop.import_key(admin.export_key(tenant, "team", to=laptop.public_identity()), None)
    key_file = laptop.export_key(laptop.tenant("acme"), "team", to=in_acme(phone))
    assert phone.import_key(key_file, None).added_versions == [1]
    laptop.tenant("acme").revoke_device(in_acme(phone).signing_key)
    with pytest.raises(VerificationError, match="revoked device"):
        laptop.export_key(laptop.tenant("acme"), "team", to=in_acme(phone))
