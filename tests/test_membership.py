"""Membership records (codec, fuzz) and the MembershipLog state machine."""

from __future__ import annotations

import os
from itertools import count

import pytest
from helpers import seal_entry
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import DecodeError, VerificationError
from mindoo_p2p.identity import PublicIdentity, UserIdentity
from mindoo_p2p.keyring import MEMBERSHIP_KEY, TenantKey
from mindoo_p2p.membership import (
    MEMBER_ACTIONS,
    Member,
    MembershipAction,
    MembershipLog,
    MembershipRecord,
)

TENANT_ID = os.urandom(16)
ADMIN = SigningKeyPair.generate()
MEMBERSHIP = TenantKey.generate(MEMBERSHIP_KEY)
ALICE = UserIdentity.generate("Alice")
BOB = UserIdentity.generate("Bob")
STRANGER = UserIdentity.generate("Stranger")
_SEQ = count(1)


def record(action: MembershipAction, who: UserIdentity, role: str = "member") -> MembershipRecord:
    return MembershipRecord(action=action, member=who.public(), role=role)


def seal(
    payload: bytes,
    *,
    author: SigningKeyPair = ADMIN,
    kind: EntryKind = EntryKind.MEMBERSHIP,
    database: str = TENANT_LOG,
    tenant_id: bytes = TENANT_ID,
) -> Entry:
    return seal_entry(
        kind=kind,
        tenant_id=tenant_id,
        database=database,
        document_id=NO_DOCUMENT,
        author=author,
        author_seq=next(_SEQ),
        timestamp_ms=1_700_000_000_000,
        key_id=MEMBERSHIP.key_id,
        key=MEMBERSHIP.secret,
        payload=payload,
    )


def membership_entry(rec: MembershipRecord, **kwargs: object) -> Entry:
    return seal(rec.encode(), **kwargs)  # type: ignore[arg-type]


def written_by(who: UserIdentity, tenant_id: bytes = TENANT_ID) -> Entry:
    return Entry.seal(
        kind=EntryKind.CHANGE,
        tenant_id=tenant_id,
        database="contacts",
        document_id=os.urandom(16),
        author=who.signing,
        author_seq=1,
        timestamp_ms=1_700_000_000_000,
        deps=[],
        key_id=os.urandom(16),
        key=os.urandom(32),
        payload=b"change",
    )


# -- records ---------------------------------------------------------------------------------
@pytest.mark.parametrize("action", sorted(MEMBER_ACTIONS))
@pytest.mark.parametrize("role", ["admin", "member"])
def test_record_round_trip(action: MembershipAction, role: str) -> None:
    rec = record(action, ALICE, role)
    data = rec.encode()
    assert data[:5] == b"MDMR\x01"
    assert MembershipRecord.decode(data) == rec


def test_record_decode_errors() -> None:
    good = record(MembershipAction.ADD, ALICE).encode()
    cases = {
        "bad magic": b"XXXX" + good[4:],
        "unsupported version": good[:4] + b"\x02" + good[5:],
        "unknown action": good[:5] + b"\x03" + good[6:],
        "trailing": good + b"\x00",
        "unknown role": good[:-7] + b"\x06" + b"owner!",
        "over the limit": good + bytes(5000),
    }
    for message, data in cases.items():
        with pytest.raises(DecodeError, match=message):
            MembershipRecord.decode(data)
    for size in range(len(good)):
        with pytest.raises(DecodeError):
            MembershipRecord.decode(good[:size])
    with pytest.raises(DecodeError, match="expected bytes"):
        MembershipRecord.decode("text")  # type: ignore[arg-type]


def test_record_rejects_invalid_fields() -> None:
    with pytest.raises(ValueError, match="role"):
        MembershipRecord(MembershipAction.ADD, ALICE.public(), "owner")
    with pytest.raises(ValueError, match="action"):
        MembershipRecord(1, ALICE.public(), "member")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_record_decode_fuzz_random_bytes(data: bytes) -> None:
    try:
        decoded = MembershipRecord.decode(data)
    except DecodeError:
        return
    assert decoded.encode() == data  # whatever decodes is canonical


_GOOD_RECORD = record(MembershipAction.REVOKE, BOB, "admin").encode()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_GOOD_RECORD) - 1),
    st.integers(min_value=1, max_value=255),
    st.binary(max_size=4),
)
def test_record_decode_fuzz_mutations(index: int, mask: int, tail: bytes) -> None:
    mutated = bytearray(_GOOD_RECORD)
    mutated[index] ^= mask
    for data in (bytes(mutated), _GOOD_RECORD + tail, bytes(mutated[:index])):
        try:
            decoded = MembershipRecord.decode(data)
        except DecodeError:
            continue
        assert decoded.encode() == data  # whatever decodes is canonical


# -- the log ---------------------------------------------------------------------------------
def apply(log: MembershipLog, rec: MembershipRecord, **kwargs: object) -> Entry:
    """Seal, decode from raw, verify, decrypt, decode the record, apply: the real pipeline."""
    entry = Entry.decode(membership_entry(rec, **kwargs).raw)
    entry.verify_signature()
    decoded = MembershipRecord.decode(entry.decrypt(MEMBERSHIP.secret))
    assert log.authorize_record(entry, decoded) is None
    log.apply(entry, decoded)
    return entry


def test_admin_adds_member_who_may_then_write() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    assert log.authorize_author(written_by(ALICE)) is not None
    added = apply(log, record(MembershipAction.ADD, ALICE))
    assert log.is_member(ALICE.signing.public_key)
    assert log.authorize_author(written_by(ALICE)) is None
    assert log.members() == [
        Member(identity=ALICE.public(), role="member", added_entry=added.id, revoked_entry=None)
    ]
    assert log.member(ALICE.signing.public_key) == log.members()[0]


def test_admin_key_may_write_without_being_a_member() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    entry = seal(b"x", kind=EntryKind.CHANGE, database="contacts")
    assert log.authorize_author(entry) is None
    assert not log.is_member(ADMIN.public_key)


def test_stranger_is_rejected() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    apply(log, record(MembershipAction.ADD, ALICE))
    reason = log.authorize_author(written_by(STRANGER))
    assert reason == (f"author {STRANGER.fingerprint} is not a member of tenant {TENANT_ID.hex()}")
    assert not log.is_member(STRANGER.signing.public_key)


def test_entry_of_another_tenant_is_rejected() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    apply(log, record(MembershipAction.ADD, ALICE))
    reason = log.authorize_author(written_by(ALICE, tenant_id=os.urandom(16)))
    assert reason is not None and "belongs to tenant" in reason


def test_revoked_member_is_rejected() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    added = apply(log, record(MembershipAction.ADD, ALICE))
    apply(log, record(MembershipAction.ADD, BOB, "admin"))
    revoked = apply(log, record(MembershipAction.REVOKE, ALICE))
    reason = log.authorize_author(written_by(ALICE))
    assert reason is not None and "was revoked" in reason and "Alice" in reason
    assert not log.is_member(ALICE.signing.public_key)
    assert log.authorize_author(written_by(BOB)) is None
    alice, bob = log.members()
    assert (alice.identity.name, alice.added_entry, alice.revoked_entry) == (
        "Alice",
        added.id,
        revoked.id,
    )
    assert not alice.active and bob.active and bob.role == "admin"
    # a second revocation is accepted and keeps the first
    apply(log, record(MembershipAction.REVOKE, ALICE))
    assert log.members()[0].revoked_entry == revoked.id
    # a revoked key cannot come back
    readd = membership_entry(record(MembershipAction.ADD, ALICE))
    reason = log.authorize_record(readd, record(MembershipAction.ADD, ALICE))
    assert reason is not None and "revoked" in reason


def test_record_not_signed_by_admin_is_rejected() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    apply(log, record(MembershipAction.ADD, ALICE))
    rec = record(MembershipAction.ADD, STRANGER)
    forged = membership_entry(rec, author=ALICE.signing)  # a member, but not the admin
    reason = log.authorize_record(forged, rec)
    assert reason is not None and "not by the admin key" in reason
    with pytest.raises(VerificationError, match="not by the admin key"):
        log.apply(forged, rec)
    assert not log.is_member(STRANGER.signing.public_key)
    assert [m.identity.name for m in log.members()] == ["Alice"]
    # nor may a member revoke another one
    revoke = record(MembershipAction.REVOKE, ALICE)
    with pytest.raises(VerificationError):
        log.apply(membership_entry(revoke, author=STRANGER.signing), revoke)
    assert log.is_member(ALICE.signing.public_key)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant_id": bytes(16)}, "belongs to tenant"),
        ({"database": "contacts"}, "not the tenant log"),
        ({"kind": EntryKind.CHANGE}, "not MEMBERSHIP"),
    ],
)
def test_misplaced_membership_entries_are_rejected(kwargs: dict[str, object], message: str) -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    rec = record(MembershipAction.ADD, ALICE)
    entry = membership_entry(rec, **kwargs)
    reason = log.authorize_record(entry, rec)
    assert reason is not None and message in reason
    with pytest.raises(VerificationError, match=message):
        log.apply(entry, rec)
    assert log.members() == []


def test_revoke_of_unknown_and_changing_add_are_rejected() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    revoke = record(MembershipAction.REVOKE, STRANGER)
    reason = log.authorize_record(membership_entry(revoke), revoke)
    assert reason is not None and "not a member" in reason
    first = apply(log, record(MembershipAction.ADD, ALICE))
    again = record(MembershipAction.ADD, ALICE, "admin")
    reason = log.authorize_record(membership_entry(again), again)
    assert reason is not None and "already a member" in reason
    renamed = MembershipRecord(
        MembershipAction.ADD,
        PublicIdentity("Alice II", ALICE.signing.public_key, ALICE.public().encryption_key),
        "member",
    )
    reason = log.authorize_record(membership_entry(renamed), renamed)
    assert reason is not None and "another identity" in reason
    # the same ADD sent again (a re-sent invite) is accepted and changes nothing
    apply(log, record(MembershipAction.ADD, ALICE))
    assert log.members() == [Member(ALICE.public(), "member", first.id)]


def test_apply_is_idempotent_per_entry() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    rec = record(MembershipAction.ADD, ALICE)
    entry = membership_entry(rec)
    log.apply(entry, rec)
    assert log.authorize_record(entry, rec) is None
    log.apply(entry, rec)
    log.apply(Entry.decode(entry.raw), rec)
    assert len(log.members()) == 1
    revoke = record(MembershipAction.REVOKE, ALICE)
    revoke_entry = membership_entry(revoke)
    log.apply(revoke_entry, revoke)
    log.apply(revoke_entry, revoke)
    log.apply(entry, rec)  # replaying the old ADD does not resurrect the member
    assert not log.is_member(ALICE.signing.public_key)


def test_members_are_listed_in_order_of_addition() -> None:
    log = MembershipLog(TENANT_ID, ADMIN.public_key)
    people = [UserIdentity.generate(f"user {i}") for i in range(5)]
    for person in people:
        apply(log, record(MembershipAction.ADD, person))
    apply(log, record(MembershipAction.REVOKE, people[2]))
    assert [m.identity.name for m in log.members()] == [f"user {i}" for i in range(5)]
    assert [m.active for m in log.members()] == [True, True, False, True, True]


def test_log_validates_its_roots() -> None:
    with pytest.raises(ValueError):
        MembershipLog(b"short", ADMIN.public_key)
    with pytest.raises(ValueError):
        MembershipLog(TENANT_ID, b"short")
