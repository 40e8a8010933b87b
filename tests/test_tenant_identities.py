"""Per-tenant member identities (issue 9, finding 6): tenants of one node share no key.

The attack: anyone who knows two tenant ids (they are in every clear header) and whom a member
dials opens the member's sealed sync proof for each tenant and reads the member key in it; with
one key for every tenant, the two proofs (and every entry header of both tenants) name the same
key, so the tenants are linked. With a member identity per tenant they name different keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from conftest import PASSWORD
from helpers import copy_tenant

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.entry import TENANT_LOG
from mindoo_p2p.errors import VerificationError
from mindoo_p2p.invite import InviteNotForYouError, invite_recipient_fingerprint
from mindoo_p2p.invite_identities import MAX_INVITE_IDENTITIES
from mindoo_p2p.node import Node
from mindoo_p2p.recovery import (
    RecoveredTenant,
    RecoveryKit,
    export_recovery_kit,
    read_recovery_kit,
    seal_recovery_kit,
)
from mindoo_p2p.sync.auth import AuthInitiator, Role, SessionBinding, open_credential
from mindoo_p2p.sync.messages import (
    Challenge,
    Hello,
    InitiatorProof,
    decode_message,
    encode_message,
)
from mindoo_p2p.sync.tenant_adapter import TenantSyncAuthority
from mindoo_p2p.tenant import Tenant

MakeNode = Callable[[str], Node]
OUTSIDER_PEER = b"outsider-peer-id"


def proof_key_seen_by_a_dialled_outsider(tenant: Tenant) -> bytes:
    """Run the member's side of the handshake toward an outsider that knows the tenant id
    (read from any header) and return the member key the outsider reads from the proof."""
    member = AuthInitiator(b"member-peer-id", OUTSIDER_PEER, TenantSyncAuthority(tenant))
    hello = decode_message(member.next_frame() or b"")
    assert isinstance(hello, Hello)
    challenge_nonce = os.urandom(32)
    member.receive(encode_message(Challenge(challenge_nonce)))
    proof = decode_message(member.next_frame() or b"")
    assert isinstance(proof, InitiatorProof)
    binding = SessionBinding(b"member-peer-id", OUTSIDER_PEER, hello.nonce, challenge_nonce)
    credential = open_credential(tenant.id, binding, Role.INITIATOR, proof.sealed_credential)
    assert credential is not None  # the outsider knows the tenant id: it opens the proof
    return credential.member_key


def authors(node: Node, tenant: Tenant) -> set[bytes]:
    return {e.author for e in node.store.iter_entries(tenant.id)}


def write_something(tenant: Tenant) -> None:
    tenant.create_db("notes").create_document({"text": "hello"})


def test_a_dialled_outsider_cannot_link_a_members_two_tenants(make_node: MakeNode) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    own = alice.create_tenant("alice-co")
    bobs = bob.create_tenant("bob-co")
    joined = alice.join(bob.invite(bobs, alice.invite_identity()))
    for tenant in (own, joined):
        write_something(tenant)
    seen = {proof_key_seen_by_a_dialled_outsider(t) for t in (own, joined)}
    assert len(seen) == 2  # two tenants, two unrelated keys
    node_key = alice.public_identity().signing_key
    assert node_key not in seen
    # the clear headers link nothing either: no author key of alice's appears in both
    alice_keys = {own.identity.signing.public_key, joined.identity.signing.public_key}
    assert seen == alice_keys
    assert authors(alice, own) & authors(alice, joined) == set()
    assert node_key not in authors(alice, own) | authors(alice, joined)


def test_an_invite_to_the_node_identity_still_links_as_documented(make_node: MakeNode) -> None:
    """The residue: an admin who invites the node's own identity (identity.json) puts that key
    in the tenant, and it is the same in every tenant joined that way."""
    alice, bob, carol = make_node("alice"), make_node("bob"), make_node("carol")
    first = alice.join(bob.invite(bob.create_tenant("b"), alice.public_identity()))
    second = alice.join(carol.invite(carol.create_tenant("c"), alice.public_identity()))
    node_key = alice.public_identity().signing_key
    assert proof_key_seen_by_a_dialled_outsider(first) == node_key
    assert proof_key_seen_by_a_dialled_outsider(second) == node_key


def test_a_device_gets_its_own_key_in_each_tenant(make_node: MakeNode) -> None:
    laptop, phone, bob = make_node("laptop"), make_node("phone"), make_node("bob")
    own = laptop.create_tenant("mine")
    bobs = laptop.join(bob.invite(bob.create_tenant("bobs"), laptop.invite_identity()))
    enrolled: list[Tenant] = []
    for tenant in (own, bobs):
        request = phone.device_request(tenant.identity.public())
        enrolled.append(phone.join(laptop.enroll_device(tenant, request)))
    device_keys = {t.identity.signing.public_key for t in enrolled}
    assert len(device_keys) == 2
    assert phone.public_identity().signing_key not in device_keys
    for tenant in enrolled:
        write_something(tenant)
        assert tenant.identity.signing.public_key in authors(phone, tenant)
    assert authors(phone, enrolled[0]) & authors(phone, enrolled[1]) == set()
    assert phone.waiting_invite_identities() == []  # both were used by their joins


def test_tenant_identities_and_waiting_invite_identities_survive_a_restart(
    make_node: MakeNode,
) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    own = alice.create_tenant("mine")
    waiting = alice.invite_identity()
    key = own.identity.signing.public_key
    home = alice.home
    alice.close()
    with Node.open(home, PASSWORD) as again:
        assert again.tenant("mine").identity.signing.public_key == key
        assert [i.public() for i in again.waiting_invite_identities()] == [waiting]
        joined = again.join(bob.invite(bob.create_tenant("bobs"), waiting))
        assert joined.identity.public() == waiting
        write_something(again.tenant("mine"))
        mine = again.tenant("mine")
        assert key in authors(again, mine)
        assert authors(again, mine) <= {key, mine.admin_key}
    with Node.open(home, PASSWORD) as third:
        assert third.tenant("bobs").identity.public() == waiting
        assert third.waiting_invite_identities() == []


def test_waiting_invite_identities_are_bounded(make_node: MakeNode) -> None:
    alice = make_node("alice")
    handed = [alice.invite_identity() for _ in range(MAX_INVITE_IDENTITIES + 3)]
    kept = [i.public() for i in alice.waiting_invite_identities()]
    assert kept == handed[3:]  # the oldest go first


def test_a_tenant_joined_with_the_node_identity_keeps_it_after_reopening(
    make_node: MakeNode,
) -> None:
    """A keystore entry without a tenant identity (what every earlier version wrote) keeps
    signing with the node's key: existing tenants are not re-keyed."""
    alice, bob = make_node("alice"), make_node("bob")
    alice.join(bob.invite(bob.create_tenant("bobs"), alice.public_identity()))
    home = alice.home
    alice.close()
    with Node.open(home, PASSWORD) as again:
        tenant = again.tenant("bobs")
        assert tenant.secrets.identity is None
        assert tenant.identity.signing.public_key == again.public_identity().signing_key
        write_something(tenant)
        assert again.public_identity().signing_key in authors(again, tenant)


def test_the_recovery_kit_restores_every_tenant_identity(make_node: MakeNode) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    own = alice.create_tenant("mine")
    bobs = alice.join(bob.invite(bob.create_tenant("bobs"), alice.invite_identity()))
    waiting = alice.invite_identity()
    kit = export_recovery_kit(alice, "kit password 123", kdf=KdfProfile.TESTING)
    home = alice.home.parent / "restored"
    with Node.restore(home, kit, "kit password 123", PASSWORD, kdf=KdfProfile.TESTING) as new:
        for before, holder in ((own, alice), (bobs, bob)):
            after = new.tenant(before.name)
            assert after.identity.public() == before.identity.public()
            # A restored node writes once it synced (the restore guard): here by copying a
            # peer's entries, then settling.
            copy_tenant(holder, new, before)
            assert new.settle_restored(after).cleared
            write_something(after)  # admitted: the restored key is this tenant's member key
            assert before.identity.signing.public_key in authors(new, after)
        assert [i.public() for i in new.waiting_invite_identities()] == [waiting]
        second = bob.create_tenant("bobs-second")
        assert new.join(bob.invite(second, waiting)).identity.public() == waiting


def test_a_version_1_kit_still_restores(make_node: MakeNode) -> None:
    """Kits written before per-tenant identities (version 1) restore their tenants on the
    node's identity, as they were."""
    alice, bob = make_node("alice"), make_node("bob")
    tenant = alice.join(bob.invite(bob.create_tenant("bobs"), alice.public_identity()))
    log = [e.raw for e in alice.store.iter_entries(tenant.id, TENANT_LOG)]
    old = RecoveryKit(alice.identity, [RecoveredTenant(tenant.secrets, log)], created_ms=1)
    data = seal_recovery_kit(old, "kit password 123", KdfProfile.TESTING, version=1)
    assert data[4] == 1
    opened = read_recovery_kit(data, "kit password 123")
    assert opened.tenants[0].secrets.identity is None
    home = alice.home.parent / "restored"
    with Node.restore_kit(home, opened, PASSWORD, kdf=KdfProfile.TESTING) as new:
        restored = new.tenant("bobs")
        assert restored.identity.public() == alice.public_identity()
        copy_tenant(bob, new, tenant)  # a restored node writes once it synced
        assert new.settle_restored(restored).cleared
        write_something(restored)


def test_the_keystore_never_holds_a_tenant_identity_in_clear(make_node: MakeNode) -> None:
    alice = make_node("alice")
    tenant = alice.create_tenant("mine")
    seed = tenant.identity.signing.seed
    alice.invite_identity()
    everything = b"".join(
        p.read_bytes() for p in alice.home.rglob("*") if p.is_file() and "index" not in p.parts
    )
    assert seed not in everything and seed.hex().encode() not in everything
    for waiting in alice.waiting_invite_identities():
        secret = waiting.signing.seed
        assert secret not in everything and secret.hex().encode() not in everything
    identity_file = json.loads((alice.home / "identity.json").read_text())
    assert identity_file["signing_key"] == alice.public_identity().signing_key.hex()


def test_a_device_request_naming_the_node_identity_is_refused_with_the_way_out(
    make_node: MakeNode,
) -> None:
    laptop, phone = make_node("laptop"), make_node("phone")
    tenant = laptop.create_tenant("mine")
    request = phone.device_request(laptop.public_identity())  # not laptop's key in "mine"
    with pytest.raises(VerificationError, match="whoami --tenant mine"):
        laptop.enroll_device(tenant, request)
    assert tenant.membership.devices() == []


def test_join_tries_only_the_identity_the_invite_names(make_node: MakeNode) -> None:
    alice, bob = make_node("alice"), make_node("bob")
    for _ in range(5):
        alice.invite_identity()
    wanted = alice.invite_identity()
    invite = bob.invite(bob.create_tenant("bobs"), wanted)
    assert invite_recipient_fingerprint(invite) == wanted.fingerprint
    assert invite_recipient_fingerprint(b"MDIV") is None
    assert invite_recipient_fingerprint(b"not an invite at all") is None
    assert alice.join(invite).identity.public() == wanted
    assert len(alice.waiting_invite_identities()) == 5
    stranger = make_node("carol").invite_identity()
    with pytest.raises(InviteNotForYouError, match="not for you"):
        alice.join(bob.invite(bob.create_tenant("other"), stranger))
