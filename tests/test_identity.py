"""User identities: identity files, secret round trips, sealed boxes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mindoo_p2p.crypto import verify_signature
from mindoo_p2p.errors import DecodeError, InvalidNameError, VerificationError
from mindoo_p2p.identity import (
    PublicIdentity,
    UserIdentity,
    open_sealed,
    seal_to,
)

ALICE = UserIdentity.generate("Alice Example")
BOB = UserIdentity.generate("Bob")


def identity_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ALICE.public().to_json())
    document.update(changes)
    return document


def test_public_identity_json_round_trip() -> None:
    public = ALICE.public()
    text = public.to_json()
    assert json.loads(text) == {
        "type": "mindoo-identity",
        "version": 1,
        "name": "Alice Example",
        "signing_key": ALICE.signing.public_key.hex(),
        "encryption_key": bytes(ALICE.encryption.public_key).hex(),
    }
    assert PublicIdentity.from_json(text) == public
    assert PublicIdentity.from_json(text.encode()) == public
    assert public.fingerprint == hashlib.sha256(public.signing_key).hexdigest()[:16]
    assert public.fingerprint == ALICE.fingerprint
    assert str(public) == f"Alice Example ({public.fingerprint})"


def test_unicode_name_round_trip() -> None:
    public = UserIdentity.generate("Zoë 山田 \U0001f600").public()
    assert PublicIdentity.from_json(public.to_json()) == public


def _doc_json(**changes: Any) -> str:
    return json.dumps(identity_document(**changes))


MALFORMED: list[tuple[str | bytes, str]] = [
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('"mindoo-identity"', "not a JSON object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b" " * 20_000, "over the limit"),
    ("[" * 5000 + "]" * 5000, "not valid JSON"),
    (_doc_json(type="mindoo-invite"), "not a mindoo identity"),
    (_doc_json(version=2), "unsupported version"),
    (_doc_json(version="1"), "unsupported version"),
    (_doc_json(version=True), "unsupported version"),
    (_doc_json(version=1.0), "unsupported version"),
    (_doc_json(comment="hi"), "unexpected \\['comment'\\]"),
    (
        json.dumps({k: v for k, v in identity_document().items() if k != "encryption_key"}),
        "missing \\['encryption_key'\\]",
    ),
    (_doc_json()[:-1] + ', "name": "Mallory"}', "duplicate key"),
    (_doc_json(name=None), "name must be a string"),
    (_doc_json(name=""), "1-128 characters"),
    (_doc_json(name="x" * 129), "1-128 characters"),
    (_doc_json(name="evil\x1b[2Jname"), "printable"),
    (_doc_json(name=" padded"), "printable"),
    (_doc_json(signing_key=ALICE.signing.public_key.hex().upper()), "64 lowercase hex"),
    (_doc_json(signing_key=ALICE.signing.public_key.hex()[:-2]), "64 lowercase hex"),
    (_doc_json(signing_key=12), "64 lowercase hex"),
    (_doc_json(signing_key="00" * 32), "not a valid Ed25519"),
    (_doc_json(encryption_key="00" * 32), "low-order"),
    (_doc_json(signing_key=float("nan")), "not valid JSON"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_identity_files_are_rejected(text: str | bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        PublicIdentity.from_json(text)


def test_from_json_rejects_non_text() -> None:
    with pytest.raises(DecodeError, match="expected text"):
        PublicIdentity.from_json(42)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_from_json_fuzz_raises_decode_error_only(data: str | bytes) -> None:
    try:
        parsed = PublicIdentity.from_json(data)
    except DecodeError:
        return
    assert PublicIdentity.from_json(parsed.to_json()) == parsed


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_from_json_fuzz_mutated_field_values(data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(["type", "version", "name", "signing_key", "encryption_key"]))
    value = data.draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=80),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=5,
        )
    )
    text = _doc_json(**{field: value})
    try:
        parsed = PublicIdentity.from_json(text)
    except DecodeError:
        return
    assert parsed.to_json() == PublicIdentity.from_json(parsed.to_json()).to_json()


def test_public_identity_validates_on_construction() -> None:
    good = ALICE.public()
    with pytest.raises(InvalidNameError):
        PublicIdentity("", good.signing_key, good.encryption_key)
    with pytest.raises(ValueError, match="32-byte"):
        PublicIdentity("A", good.signing_key[:31], good.encryption_key)
    with pytest.raises(ValueError, match="low-order"):
        PublicIdentity("A", good.signing_key, bytes(32))
    with pytest.raises(InvalidNameError):
        UserIdentity.generate("tab\tname")


def test_secret_dict_round_trip() -> None:
    secret = ALICE.to_secret_dict()
    restored = UserIdentity.from_secret_dict(json.loads(json.dumps(secret)))
    assert restored.public() == ALICE.public()
    assert restored.signing.seed == ALICE.signing.seed
    signature = restored.signing.sign(b"message")
    assert verify_signature(ALICE.signing.public_key, b"message", signature)
    assert ALICE.signing.seed.hex() not in repr(restored)
    assert bytes(ALICE.encryption).hex() not in repr(restored)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": 3},
        {"name": ""},
        {"signing_seed": "zz" * 32},
        {"signing_seed": "00" * 31},
        {"encryption_secret": None},
    ],
)
def test_malformed_secret_dict(changes: dict[str, Any]) -> None:
    data = ALICE.to_secret_dict() | changes
    with pytest.raises(DecodeError, match="stored identity"):
        UserIdentity.from_secret_dict(data)


def test_sealed_box_round_trip_and_wrong_recipient() -> None:
    plaintext = b"tenant keys for alice"
    sealed = seal_to(ALICE.public().encryption_key, plaintext)
    assert len(sealed) == len(plaintext) + 48
    assert plaintext not in sealed
    assert open_sealed(ALICE, sealed) == plaintext
    assert seal_to(ALICE.public().encryption_key, plaintext) != sealed  # ephemeral sender key
    with pytest.raises(VerificationError, match="addressed to someone else"):
        open_sealed(BOB, sealed)
    altered = bytearray(sealed)
    altered[-1] ^= 1
    with pytest.raises(VerificationError):
        open_sealed(ALICE, bytes(altered))
    with pytest.raises(VerificationError):
        open_sealed(ALICE, sealed[:20])
    with pytest.raises(ValueError):
        seal_to(bytes(32), plaintext)
