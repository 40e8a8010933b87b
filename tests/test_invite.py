"""Invitations: round trip, someone else's invite, garbage, tampering, unverifiable invites."""

from __future__ import annotations

import dataclasses
import os
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.codec import Writer
from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.errors import DecodeError, MindooError, VerificationError
from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.invite import (
    Invite,
    InviteNotForYouError,
    open_invite,
    seal_invite,
    verify_invite,
)
from mindoo_p2p.keyring import DEFAULT_KEY, MEMBERSHIP_KEY, TenantKey
from mindoo_p2p.membership import MembershipAction, MembershipRecord

TENANT_ID = os.urandom(16)
ADMIN_KEY = SigningKeyPair.generate()
DEFAULT = TenantKey.generate(DEFAULT_KEY)
MEMBERSHIP = TenantKey.generate(MEMBERSHIP_KEY)
ALICE = UserIdentity.generate("Alice")  # the inviting admin user
BOB = UserIdentity.generate("Bob")  # the invitee
CAROL = UserIdentity.generate("Carol")
_SEQ = count(1)


def membership_entry(
    action: MembershipAction, who: UserIdentity, author: SigningKeyPair = ADMIN_KEY
) -> bytes:
    record = MembershipRecord(action=action, member=who.public(), role="member")
    return Entry.seal(
        kind=EntryKind.MEMBERSHIP,
        tenant_id=TENANT_ID,
        database=TENANT_LOG,
        document_id=NO_DOCUMENT,
        author=author,
        author_seq=next(_SEQ),
        timestamp_ms=1_700_000_000_000,
        deps=[],
        key_id=MEMBERSHIP.key_id,
        key=MEMBERSHIP.secret,
        payload=record.encode(),
    ).raw


def make_invite(**changes: object) -> Invite:
    invite = Invite(
        tenant_id=TENANT_ID,
        tenant_name="ACME Corp",
        admin_key=ADMIN_KEY.public_key,
        keys=[DEFAULT, MEMBERSHIP],
        membership_entries=[
            membership_entry(MembershipAction.ADD, ALICE),
            membership_entry(MembershipAction.ADD, BOB),
        ],
        inviter=ALICE.public(),
        invitee=BOB.public(),
        created_ms=1_700_000_000_999,
    )
    return dataclasses.replace(invite, **changes)  # type: ignore[arg-type]


def test_invite_round_trip() -> None:
    invite = make_invite()
    data = seal_invite(invite)
    assert data[:5] == b"MDIV\x01"
    opened = open_invite(data, BOB)
    assert opened == invite
    assert [k.secret for k in opened.keys] == [DEFAULT.secret, MEMBERSHIP.secret]
    assert opened.keyring().current(DEFAULT_KEY) == DEFAULT
    assert opened.inviter == ALICE.public()
    # only the invitee's name and fingerprint are in the clear
    for secret in (DEFAULT.secret, MEMBERSHIP.secret, b"ACME Corp", ADMIN_KEY.public_key):
        assert secret not in data
    assert b"Bob" in data


def test_someone_elses_invite_names_its_invitee() -> None:
    data = seal_invite(make_invite())
    with pytest.raises(InviteNotForYouError) as caught:
        open_invite(data, CAROL)
    message = str(caught.value)
    assert message.startswith(f"this invite is for Bob {BOB.fingerprint}, not for you")
    assert isinstance(caught.value, MindooError)


@pytest.mark.parametrize(
    "data",
    [b"", b"MD", b"hello world, not an invite", os.urandom(2000), b"MDIV", b"MDIV\x01"],
)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        open_invite(data, BOB)


def test_wrong_magic_and_version() -> None:
    data = seal_invite(make_invite())
    with pytest.raises(DecodeError, match="not a mindoo invite"):
        open_invite(b"MDKS" + data[4:], BOB)
    with pytest.raises(DecodeError, match="unsupported invite version 2"):
        open_invite(data[:4] + b"\x02" + data[5:], BOB)


def test_every_truncation_is_a_decode_error() -> None:
    data = seal_invite(make_invite())
    for size in range(len(data)):
        with pytest.raises(DecodeError):
            open_invite(data[:size], BOB)
    with pytest.raises(DecodeError, match="trailing"):
        open_invite(data + b"\x00", BOB)


def test_flipped_sealed_byte_is_detected() -> None:
    data = seal_invite(make_invite())
    for index in (len(data) - 1, len(data) - 100, len(data) // 2 + 40):
        bad = bytearray(data)
        bad[index] ^= 0x20
        with pytest.raises(VerificationError, match="damaged or altered"):
            open_invite(bytes(bad), BOB)


def test_clear_header_must_match_sealed_content() -> None:
    data = seal_invite(make_invite())
    header_size = 4 + 1 + 8 + 1 + len("Bob")
    relabelled = Writer().raw(data[:13]).text("Bobby").raw(data[header_size:]).getvalue()
    with pytest.raises(VerificationError, match="clear header does not match"):
        open_invite(relabelled, BOB)
    control = Writer().raw(data[:13]).text("Bob\x1b[31m").raw(data[header_size:]).getvalue()
    with pytest.raises(DecodeError, match="printable"):
        open_invite(control, BOB)


def test_invite_must_make_the_invitee_a_member() -> None:
    without_bob = make_invite(membership_entries=[membership_entry(MembershipAction.ADD, ALICE)])
    with pytest.raises(VerificationError, match="does not make Bob"):
        open_invite(seal_invite(without_bob), BOB)
    revoked = make_invite(
        membership_entries=[
            membership_entry(MembershipAction.ADD, BOB),
            membership_entry(MembershipAction.REVOKE, BOB),
        ]
    )
    with pytest.raises(VerificationError, match="does not make Bob"):
        verify_invite(revoked)


def test_membership_entries_must_be_signed_by_the_admin() -> None:
    forged = make_invite(
        membership_entries=[membership_entry(MembershipAction.ADD, BOB, author=ALICE.signing)]
    )
    with pytest.raises(VerificationError, match="not by the admin key"):
        open_invite(seal_invite(forged), BOB)
    tampered_entry = bytearray(membership_entry(MembershipAction.ADD, BOB))
    tampered_entry[-1] ^= 1  # breaks the signature
    with pytest.raises(VerificationError, match="bad signature"):
        verify_invite(make_invite(membership_entries=[bytes(tampered_entry)]))
    with pytest.raises(DecodeError):
        verify_invite(make_invite(membership_entries=[b"not an entry"]))


def test_invite_must_carry_the_tenant_keys() -> None:
    with pytest.raises(VerificationError, match="lacks the tenant's '\\$membership' key"):
        open_invite(seal_invite(make_invite(keys=[DEFAULT])), BOB)
    with pytest.raises(VerificationError, match="lacks the tenant's 'default' key"):
        verify_invite(make_invite(keys=[MEMBERSHIP]))
    other_membership = TenantKey.generate(MEMBERSHIP_KEY, version=2)
    with pytest.raises(VerificationError, match="key the invite lacks"):
        verify_invite(make_invite(keys=[DEFAULT, other_membership]))


def test_invite_for_the_wrong_person_inside() -> None:
    # sealed to Bob's key, but the sealed payload names Carol as the invitee
    impostor = dataclasses.replace(
        make_invite(),
        invitee=dataclasses.replace(CAROL.public(), encryption_key=BOB.public().encryption_key),
    )
    with pytest.raises(VerificationError, match="names Carol"):
        open_invite(seal_invite(impostor), BOB)


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant_id": b"short"},
        {"tenant_name": ""},
        {"tenant_name": "line\nbreak"},
        {"admin_key": bytes(32)},
        {"keys": []},
        {"membership_entries": [b"x" * 70_000]},
        {"created_ms": -1},
    ],
)
def test_invalid_invites_cannot_be_built(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_invite(**changes)


_SEALED = seal_invite(make_invite())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=len(_SEALED) - 1))
def test_fuzz_only_mindoo_errors_escape(noise: bytes, index: int) -> None:
    candidates = [
        noise,
        b"MDIV\x01" + noise,
        _SEALED[:index] + noise,
        _SEALED[:index] + bytes([_SEALED[index] ^ 0xFF]) + _SEALED[index + 1 :],
    ]
    for data in candidates:
        try:
            open_invite(data, BOB)
        except MindooError:
            continue
        assert data == _SEALED
