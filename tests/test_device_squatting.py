"""Device squatting (issue 9, finding 5): an enrolment needs the device's own signature, and
the admin's ADD of a key wins over any enrolment of it, on every node whatever the order."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
from test_membership import ADMIN, ALICE, BOB, TENANT_ID, membership_entry, record, seal

from mindoo_p2p.device_request import DeviceRequest
from mindoo_p2p.entry import Entry
from mindoo_p2p.errors import DecodeError, VerificationError
from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.membership import (
    DeviceEnrolment,
    DeviceRevocation,
    MembershipAction,
    MembershipLog,
    TenantLogRecord,
    decode_tenant_log_record,
)
from mindoo_p2p.node import Node
from mindoo_p2p.rejection import RejectionKind

MakeNode = Callable[[str], Node]
CAROL = UserIdentity.generate("Carol")
PHONE = UserIdentity.generate("phone")
VICTIM = UserIdentity.generate("victim")


def user_entry(rec: TenantLogRecord, author: UserIdentity) -> Entry:
    return seal(rec.encode(), author=author.signing)


def proven(user: UserIdentity, device: UserIdentity) -> DeviceEnrolment:
    return DeviceEnrolment.of(DeviceRequest.sign(device, user.signing.public_key))


# -- the proof -------------------------------------------------------------------------------


def test_a_device_request_round_trips_and_only_its_device_can_make_it() -> None:
    request = DeviceRequest.sign(PHONE, ALICE.signing.public_key)
    assert DeviceRequest.decode(request.encode()) == request
    request.check()
    # Bound to the user: the same signature does not enroll the phone as Bob's.
    stolen = dataclasses.replace(request, user_key=BOB.signing.public_key)
    with pytest.raises(VerificationError, match="not signed by that device's key"):
        stolen.check()
    enrolment = DeviceEnrolment.of(request)
    encoded = enrolment.encode()
    assert encoded[4] == 5  # record version 5 carries the proof
    assert decode_tenant_log_record(encoded) == enrolment and enrolment.proven()
    for size in range(len(encoded)):
        with pytest.raises(DecodeError):
            decode_tenant_log_record(encoded[:size])
    with pytest.raises(DecodeError, match="bad magic"):
        DeviceRequest.decode(b"XXXX" + request.encode()[4:])


def test_an_enrolment_with_a_forged_proof_is_refused() -> None:
    """Alice (a member) enrolls the victim's public key as her device, signing the proof with
    her own key: every node refuses the record."""
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    add = membership_entry(record(MembershipAction.ADD, ALICE))
    log.apply(add, record(MembershipAction.ADD, ALICE))
    message = DeviceRequest.sign(VICTIM, ALICE.signing.public_key)
    forged = DeviceEnrolment(
        ALICE.signing.public_key, VICTIM.public(), ALICE.signing.sign(b"anything" * 8)
    )
    entry = user_entry(forged, ALICE)
    refusal = log.check_record(entry, forged)
    assert refusal is not None and refusal.kind is RejectionKind.NOT_PERMITTED
    assert "proof is not that device's signature" in refusal.message
    assert log.check_record(entry, DeviceEnrolment.of(message)) is None


def test_the_api_refuses_a_request_not_signed_by_the_device(make_node: MakeNode) -> None:
    admin, laptop, victim = make_node("admin"), make_node("laptop"), make_node("victim")
    tenant = admin.create_tenant("acme")
    laptop.join(admin.invite(tenant, laptop.public_identity()))
    user_key = laptop.public_identity().signing_key
    real = victim.device_request(user_key)
    squat = dataclasses.replace(real, proof=laptop.identity.signing.sign(b"x"))
    with pytest.raises(VerificationError, match="not signed by that device's key"):
        laptop.enroll_device(laptop.tenant("acme"), squat)
    for_bob = victim.device_request(admin.public_identity())
    with pytest.raises(VerificationError, match="not of this node's user"):
        laptop.enroll_device(laptop.tenant("acme"), for_bob)
    assert laptop.tenant("acme").membership.devices() == []


# -- the admin's ADD always wins, in any order -------------------------------------------------


def universe() -> list[tuple[Entry, TenantLogRecord]]:
    """Users Alice and Carol; the phone enrolled by Alice (proven) and by Carol (a legacy,
    unproven record); the victim enrolled by Alice (legacy) and then added by the admin as a
    member in their own right; the phone revoked by Alice and re-enrolled by her."""
    legacy_phone = DeviceEnrolment(CAROL.signing.public_key, PHONE.public())
    legacy_victim = DeviceEnrolment(ALICE.signing.public_key, VICTIM.public())
    revoke = DeviceRevocation(ALICE.signing.public_key, PHONE.signing.public_key, 0)
    add_records = [record(MembershipAction.ADD, who) for who in (ALICE, CAROL, VICTIM)]
    items: list[tuple[Entry, TenantLogRecord]] = [
        (membership_entry(rec), rec) for rec in add_records
    ]
    for rec, author in (
        (proven(ALICE, PHONE), ALICE),
        (legacy_phone, CAROL),
        (legacy_victim, ALICE),
        (revoke, ALICE),
        (proven(ALICE, PHONE), ALICE),  # the same record again, in another entry
    ):
        items.append((user_entry(rec, author), rec))
    return items


def outcome(order: list[tuple[Entry, TenantLogRecord]]) -> tuple[object, ...]:
    """Apply records in passes until none applies (the admission pipeline's rule); return
    everything the log says about every key, and which entries it accepted."""
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    pending = list(order)
    accepted: set[bytes] = set()
    while pending:
        left = []
        for entry, rec in pending:
            if log.check_record(entry, rec) is None:
                log.apply(entry, rec)
                accepted.add(entry.id)
            else:
                left.append((entry, rec))
        if len(left) == len(pending):
            break
        pending = left
    keys = [who.signing.public_key for who in (ALICE, CAROL, VICTIM, PHONE)]
    return (
        frozenset(accepted),
        tuple(log.is_member(k) for k in keys),
        tuple(log.cut_of(k) for k in keys),
        tuple(log.device(k) for k in keys),
        tuple(sorted((d.identity.signing_key, d.user_key) for d in log.devices())),
        tuple(sorted(log.cuts().items())),
    )


def test_every_arrival_order_ends_in_the_same_state() -> None:
    items = universe()
    expected = outcome(items)
    accepted, members, cuts, devices, _, _ = expected  # type: ignore[misc]
    assert accepted == {entry.id for entry, _ in items}  # every node stores every record
    assert members == (True, True, True, False)  # the phone is revoked
    victim_device, phone_device = devices[2], devices[3]  # type: ignore[index]
    assert victim_device is None  # the admin's ADD won over Alice's enrolment
    assert phone_device.user_key == ALICE.signing.public_key and phone_device.proven
    assert cuts == (None, None, None, 0)
    rng = random.Random(20261204)
    for _ in range(200):
        order = items[:]
        rng.shuffle(order)
        assert outcome(order) == expected


def test_the_add_wins_over_an_earlier_enrolment_for_authorship() -> None:
    """Before the fix, a node that saw Alice's enrolment of the victim first refused the
    admin's ADD (and the other way round): replicas diverged. Now the ADD lands either way
    and the victim's entries are the victim's."""
    items = universe()
    enrol_victim = next(i for i in items if getattr(i[1], "device", None) == VICTIM.public())
    add_victim = next(i for i in items if getattr(i[1], "member", None) == VICTIM.public())
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    add_alice = items[0]
    for entry, rec in (add_alice, enrol_victim, add_victim):
        assert log.check_record(entry, rec) is None
        log.apply(entry, rec)
    assert log.member(VICTIM.signing.public_key) is not None
    assert log.device(VICTIM.signing.public_key) is None
    assert log.devices(ALICE.signing.public_key) == []


def test_a_chained_device_revocation_names_its_entry_only_for_the_winning_claim() -> None:
    """A DEVICE_REVOKE of record version 4 (per-author hash chains) names the device's last
    accepted entry id at its cut; it is kept per (user, device) pair in the registry, so a
    revocation by the user whose claim lost names nothing the chain rules would accept, in
    either order."""
    phone = PHONE.signing.public_key
    mine, theirs = b"\x01" * 32, b"\x02" * 32
    adds = [record(MembershipAction.ADD, who) for who in (ALICE, CAROL)]
    base = [(membership_entry(rec), rec) for rec in adds]
    claims: list[tuple[Entry, TenantLogRecord]] = [
        (user_entry(rec, author), rec)
        for rec, author in (
            (proven(ALICE, PHONE), ALICE),
            (DeviceEnrolment(CAROL.signing.public_key, PHONE.public()), CAROL),
        )
    ]
    revocations: list[tuple[Entry, TenantLogRecord]] = [
        (user_entry(rec, author), rec)
        for rec, author in (
            (DeviceRevocation(ALICE.signing.public_key, phone, 3, mine), ALICE),
            (DeviceRevocation(CAROL.signing.public_key, phone, 3, theirs), CAROL),
        )
    ]
    for order in (revocations, revocations[::-1]):
        log = MembershipLog(TENANT_ID, ADMIN.public_key)
        for entry, rec in [*base, *claims, *order]:
            log.apply(entry, rec)
        point = log.cut_point(phone)
        assert point is not None and point.seq == 3
        assert point.entry_ids == frozenset({mine})
        assert log.cut_points()[phone] == point
        assert point.names_another(3, theirs) and not point.names_another(3, mine)
        copy = log.copy()
        assert copy.cut_point(phone) == point
