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
    OutdatedInviteError,
    open_invite,
    seal_invite,
    verify_invite,
)
from mindoo_p2p.keyring import DEFAULT_KEY, MEMBERSHIP_KEY, TenantKey
from mindoo_p2p.membership import (
    KeyAnnouncement,
    MembershipAction,
    MembershipRecord,
    TenantLogRecord,
)

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
    return record_entry(MembershipRecord(action=action, member=who.public(), role="member"), author)


def announcement(key: TenantKey, *, committed: bool = True) -> bytes:
    record = KeyAnnouncement.of(key)
    if not committed:
        record = dataclasses.replace(record, commitment=None)
    return record_entry(record)


def record_entry(record: TenantLogRecord, author: SigningKeyPair = ADMIN_KEY) -> bytes:
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


ANNOUNCEMENTS = [announcement(DEFAULT), announcement(MEMBERSHIP)]


def make_invite(signer: SigningKeyPair | None = ADMIN_KEY, **changes: object) -> Invite:
    """An invite of Bob, signed by ``signer`` (the admin key by default) after ``changes``."""
    invite = Invite(
        tenant_id=TENANT_ID,
        tenant_name="ACME Corp",
        admin_key=ADMIN_KEY.public_key,
        keys=[DEFAULT, MEMBERSHIP],
        membership_entries=[
            membership_entry(MembershipAction.ADD, ALICE),
            *ANNOUNCEMENTS,
            membership_entry(MembershipAction.ADD, BOB),
        ],
        inviter=ALICE.public(),
        invitee=BOB.public(),
        created_ms=1_700_000_000_999,
    )
    invite = dataclasses.replace(invite, **changes)  # type: ignore[arg-type]
    if signer is None:
        return invite
    return dataclasses.replace(invite, signature=signer.sign(invite.statement()))


def test_invite_round_trip() -> None:
    invite = make_invite()
    data = seal_invite(invite)
    assert data[:5] == b"MDIV\x02"
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
    [b"", b"MD", b"hello world, not an invite", os.urandom(2000), b"MDIV", b"MDIV\x02"],
)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        open_invite(data, BOB)


def test_wrong_magic_and_version() -> None:
    data = seal_invite(make_invite())
    with pytest.raises(DecodeError, match="not a mindoo invite"):
        open_invite(b"MDKS" + data[4:], BOB)
    with pytest.raises(DecodeError, match="unsupported invite version 3"):
        open_invite(data[:4] + b"\x03" + data[5:], BOB)


def test_an_unsigned_invite_of_format_1_is_refused_with_the_reason() -> None:
    data = seal_invite(make_invite())
    with pytest.raises(OutdatedInviteError, match=r"format 1.*not signed.*ask for a new invite"):
        open_invite(data[:4] + b"\x01" + data[5:], BOB)


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
    without_bob = make_invite(
        membership_entries=[membership_entry(MembershipAction.ADD, ALICE), *ANNOUNCEMENTS]
    )
    with pytest.raises(VerificationError, match="does not make Bob"):
        open_invite(seal_invite(without_bob), BOB)
    revoked = make_invite(
        membership_entries=[
            *ANNOUNCEMENTS,
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
    impostor = make_invite(
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
        b"MDIV\x02" + noise,
        _SEALED[:index] + noise,
        _SEALED[:index] + bytes([_SEALED[index] ^ 0xFF]) + _SEALED[index + 1 :],
    ]
    for data in candidates:
        try:
            open_invite(data, BOB)
        except MindooError:
            continue
        assert data == _SEALED


# -- forged invites (issue 9, finding 4) -------------------------------------------------------


def test_an_invite_not_signed_by_the_admin_is_refused() -> None:
    """A mirror reads the tenant log and holds the membership key: it could seal an invite
    carrying the real log and keys, but it cannot sign it with the admin key."""
    mirror = SigningKeyPair.generate()
    for signer in (mirror, None):
        with pytest.raises(VerificationError, match="not signed by the tenant's admin key"):
            open_invite(seal_invite(make_invite(signer=signer)), BOB)
    # A signature covers the keys: swapping one after signing breaks it.
    signed = make_invite()
    swapped = dataclasses.replace(signed, keys=[TenantKey.generate(DEFAULT_KEY), MEMBERSHIP])
    with pytest.raises(VerificationError, match="not signed"):
        verify_invite(swapped)


def test_a_default_key_the_admin_never_announced_is_refused() -> None:
    """The attack of finding 4: the real membership key and log, and a default key of the
    forger's choosing (here even with a valid signature, as if the admin key had signed it)."""
    chosen = TenantKey.generate(DEFAULT_KEY)
    with pytest.raises(VerificationError, match=r"'default' version 1 .* never announced"):
        verify_invite(make_invite(keys=[chosen, MEMBERSHIP]))
    # The real key id and name with another secret: the commitment gives it away.
    same_id = dataclasses.replace(chosen, key_id=DEFAULT.key_id)
    with pytest.raises(VerificationError, match="not the one announced"):
        verify_invite(make_invite(keys=[same_id, MEMBERSHIP]))
    # An announcement from before commitments existed does not vouch for a secret.
    legacy = [announcement(DEFAULT, committed=False), announcement(MEMBERSHIP)]
    entries = [membership_entry(MembershipAction.ADD, BOB), *legacy]
    with pytest.raises(VerificationError, match="announced without its commitment"):
        verify_invite(make_invite(membership_entries=entries))


def test_a_second_key_of_one_name_and_version_is_refused() -> None:
    twin = TenantKey.generate(DEFAULT_KEY)
    entries = [
        membership_entry(MembershipAction.ADD, BOB),
        *ANNOUNCEMENTS,
        announcement(twin),  # the log itself refuses a second default version 1
    ]
    with pytest.raises(VerificationError, match="another key"):
        verify_invite(make_invite(membership_entries=entries))
    with pytest.raises(VerificationError, match="second key 'default' version 1"):
        verify_invite(make_invite(keys=[DEFAULT, twin, MEMBERSHIP]))
