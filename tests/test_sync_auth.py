"""Per-tenant peer authentication (mindoo_p2p.sync.auth), sans I/O, plus the driver's handling.

Membership comes from a real MembershipLog fed with admin-signed records. Every way to fail the
initiator's proof must end in the same bytes on the initiator's side: one CHALLENGE (a random
nonce) and the one-byte DENIED, after the same work on the responder's side.
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import trio

from mindoo_p2p.crypto import SigningKeyPair
from mindoo_p2p.crypto import aead as aead_module
from mindoo_p2p.crypto.signing import verify_signature
from mindoo_p2p.entry import NO_DOCUMENT, TENANT_LOG, Entry, EntryKind
from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.membership import MembershipAction, MembershipLog, MembershipRecord
from mindoo_p2p.sync.auth import (
    DENIED_FRAME,
    AuthDenied,
    AuthInitiator,
    AuthResponder,
    InitiatorState,
    ProofGate,
    ResponderState,
    Role,
    SessionBinding,
    seal_credential,
    signed_message,
    tenant_tag,
)
from mindoo_p2p.sync.driver import (
    DENIAL_PENALTY,
    run_initiator,
    run_responder,
)
from mindoo_p2p.sync.messages import (
    PROTOCOL_VERSION,
    Challenge,
    Credential,
    CredentialKind,
    Hello,
    InitiatorProof,
    MessageType,
    ProtocolViolation,
    decode_message,
    encode_message,
)
from mindoo_p2p.tenant import tenant_id_for
from mindoo_p2p.testing.memory_sync import MemorySyncStore, memory_frame_pair

PEER_A = b"\x00\x24\x08\x01\x12\x20" + b"A" * 32
PEER_B = b"\x00\x24\x08\x01\x12\x20" + b"B" * 32
_seq = itertools.count(1)


@dataclass
class LogAuthority:
    """A TenantAuthority answering from a MembershipLog, counting the questions asked."""

    tenant_id: bytes
    member_key: SigningKeyPair
    log: MembershipLog
    asked: list[bytes] = field(default_factory=list)

    def may_replicate(self, member_key: bytes) -> bool:
        self.asked.append(member_key)
        return self.log.is_member(member_key)

    def membership_evidence(self) -> bytes:
        return b""

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        return False


class TenantFixture:
    """A tenant with an admin key and a membership log driven by sealed records."""

    def __init__(self) -> None:
        self.admin = SigningKeyPair.generate()
        self.tenant_id = tenant_id_for(self.admin.public_key)
        self.log = MembershipLog(self.tenant_id, self.admin.public_key)

    def _apply(self, action: MembershipAction, user: UserIdentity) -> None:
        record = MembershipRecord(action, user.public(), "member")
        entry = Entry.seal(
            kind=EntryKind.MEMBERSHIP,
            tenant_id=self.tenant_id,
            database=TENANT_LOG,
            document_id=NO_DOCUMENT,
            author=self.admin,
            author_seq=next(_seq),
            timestamp_ms=1_700_000_000_000,
            deps=(),
            key_id=bytes(16),
            key=bytes(32),
            payload=record.encode(),
        )
        self.log.apply(entry, record)

    def member(self, name: str) -> UserIdentity:
        user = UserIdentity.generate(name)
        self._apply(MembershipAction.ADD, user)
        return user

    def revoke(self, user: UserIdentity) -> None:
        self._apply(MembershipAction.REVOKE, user)

    def authority(self, user: UserIdentity) -> LogAuthority:
        return LogAuthority(self.tenant_id, user.signing, self.log)


@dataclass
class Transcript:
    to_initiator: list[bytes] = field(default_factory=list)
    to_responder: list[bytes] = field(default_factory=list)


def pump(initiator: AuthInitiator, responder: AuthResponder) -> Transcript:
    """Move frames between the two machines until neither has anything more to do."""
    seen = Transcript()
    for _ in range(20):
        moved = False
        frame = initiator.next_frame()
        if frame is not None:
            seen.to_responder.append(frame)
            moved = True
            if responder.wants_frame:
                responder.receive(frame)
        frame = responder.next_frame()
        if frame is not None:
            seen.to_initiator.append(frame)
            moved = True
            if initiator.wants_frame:
                initiator.receive(frame)
        if not moved:
            return seen
    raise AssertionError("the handshake did not settle")


def assert_generic_denial(seen: Transcript) -> None:
    """The initiator received a bare challenge and the one denial: nothing else."""
    assert len(seen.to_initiator) == 2
    challenge, denial = seen.to_initiator
    assert len(challenge) == 33 and challenge[0] == MessageType.CHALLENGE
    assert decode_message(challenge) == Challenge(challenge[1:])
    assert denial == DENIED_FRAME == bytes((MessageType.DENIED,))


# --- success -----------------------------------------------------------------------------------


def test_both_sides_prove_membership() -> None:
    tenant = TenantFixture()
    alice, bob = tenant.member("alice"), tenant.member("bob")
    mine, theirs = tenant.authority(alice), tenant.authority(bob)
    initiator = AuthInitiator(PEER_A, PEER_B, mine)
    responder = AuthResponder(PEER_B, PEER_A, [theirs])
    seen = pump(initiator, responder)
    assert initiator.state is InitiatorState.AUTHENTICATED
    assert responder.state is ResponderState.AUTHENTICATED
    assert responder.authority is theirs
    assert responder.peer_member_key == alice.signing.public_key
    assert initiator.peer_member_key == bob.signing.public_key
    # Each side asked its membership about the other's key, once.
    assert theirs.asked == [alice.signing.public_key]
    assert mine.asked == [bob.signing.public_key]
    # The handshake is four frames and names the tenant only blinded.
    assert [f[0] for f in seen.to_responder] == [MessageType.HELLO, MessageType.INITIATOR_PROOF]
    assert [f[0] for f in seen.to_initiator] == [MessageType.CHALLENGE, MessageType.RESPONDER_PROOF]
    wire = b"".join(seen.to_responder + seen.to_initiator)
    assert tenant.tenant_id not in wire
    assert alice.signing.public_key not in wire and bob.signing.public_key not in wire


def test_responder_finds_the_tenant_among_several() -> None:
    tenants = [TenantFixture() for _ in range(4)]
    users = [t.member(f"user{i}") for i, t in enumerate(tenants)]
    served = [t.authority(t.member("server")) for t in tenants]
    for tenant, user, expected in zip(tenants, users, served, strict=True):
        initiator = AuthInitiator(PEER_A, PEER_B, tenant.authority(user))
        responder = AuthResponder(PEER_B, PEER_A, served)
        pump(initiator, responder)
        assert initiator.state is InitiatorState.AUTHENTICATED
        assert responder.authority is expected


# --- the same denial, whatever the cause -------------------------------------------------------

DenialCase = Callable[[], tuple[AuthInitiator, AuthResponder]]


def _wrong_tenant() -> tuple[AuthInitiator, AuthResponder]:
    mine, served = TenantFixture(), TenantFixture()
    user = mine.member("alice")
    return (
        AuthInitiator(PEER_A, PEER_B, mine.authority(user)),
        AuthResponder(PEER_B, PEER_A, [served.authority(served.member("server"))]),
    )


def _non_member() -> tuple[AuthInitiator, AuthResponder]:
    tenant = TenantFixture()
    stranger = UserIdentity.generate("mallory")  # knows the tenant id, never added
    return (
        AuthInitiator(PEER_A, PEER_B, tenant.authority(stranger)),
        AuthResponder(PEER_B, PEER_A, [tenant.authority(tenant.member("server"))]),
    )


def _revoked_member() -> tuple[AuthInitiator, AuthResponder]:
    tenant = TenantFixture()
    user = tenant.member("alice")
    tenant.revoke(user)
    return (
        AuthInitiator(PEER_A, PEER_B, tenant.authority(user)),
        AuthResponder(PEER_B, PEER_A, [tenant.authority(tenant.member("server"))]),
    )


def _swapped_peer_ids() -> tuple[AuthInitiator, AuthResponder]:
    tenant = TenantFixture()
    user = tenant.member("alice")
    return (
        AuthInitiator(PEER_B, PEER_A, tenant.authority(user)),  # binds the wrong way round
        AuthResponder(PEER_B, PEER_A, [tenant.authority(tenant.member("server"))]),
    )


def _other_peer_id() -> tuple[AuthInitiator, AuthResponder]:
    tenant = TenantFixture()
    user = tenant.member("alice")
    return (
        AuthInitiator(b"relay" + PEER_A, PEER_B, tenant.authority(user)),  # a proof for elsewhere
        AuthResponder(PEER_B, PEER_A, [tenant.authority(tenant.member("server"))]),
    )


@pytest.mark.parametrize(
    "case",
    [_wrong_tenant, _non_member, _revoked_member, _swapped_peer_ids, _other_peer_id],
    ids=lambda case: case.__name__.strip("_"),
)
def test_every_failure_gets_the_same_denial(case: DenialCase) -> None:
    initiator, responder = case()
    seen = pump(initiator, responder)
    assert responder.state is ResponderState.DENIED and responder.refused_peer
    assert initiator.state is InitiatorState.DENIED and not initiator.refused_peer
    assert_generic_denial(seen)


def test_replayed_proof_is_denied() -> None:
    tenant = TenantFixture()
    user = tenant.member("alice")
    served = [tenant.authority(tenant.member("server"))]
    first = pump(
        AuthInitiator(PEER_A, PEER_B, tenant.authority(user)), AuthResponder(PEER_B, PEER_A, served)
    )
    hello, proof = first.to_responder
    # An eavesdropper replays both frames of the accepted session to a new responder session.
    responder = AuthResponder(PEER_B, PEER_A, served)
    responder.receive(hello)
    challenge = responder.next_frame()
    assert challenge is not None and challenge != first.to_initiator[0]  # a fresh nonce
    responder.receive(proof)
    assert responder.next_frame() == DENIED_FRAME
    assert responder.state is ResponderState.DENIED
    assert_generic_denial(Transcript(to_initiator=[challenge, DENIED_FRAME]))


def test_mirror_grant_slot_is_not_accepted_yet() -> None:
    tenant = TenantFixture()
    node_key = SigningKeyPair.generate()
    responder = AuthResponder(PEER_B, PEER_A, [tenant.authority(tenant.member("server"))])
    nonce = b"\x11" * 32
    responder.receive(encode_message(Hello(PROTOCOL_VERSION, nonce)))
    challenge = decode_message(responder.next_frame() or b"")
    assert isinstance(challenge, Challenge)
    binding = SessionBinding(PEER_A, PEER_B, nonce, challenge.nonce)
    grant = b"admin-signed mirror grant"
    kind = CredentialKind.MIRROR_GRANT
    signature = node_key.sign(
        signed_message(tenant.tenant_id, binding, Role.INITIATOR, kind, node_key.public_key, grant)
    )
    credential = Credential(kind, node_key.public_key, signature, grant)
    sealed = seal_credential(tenant.tenant_id, binding, Role.INITIATOR, credential)
    responder.receive(encode_message(InitiatorProof(tenant_tag(tenant.tenant_id, binding), sealed)))
    assert responder.next_frame() == DENIED_FRAME


def test_denial_costs_the_same_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown tenant and a failed proof both cost one AEAD open, one signature check and
    one tag comparison per tenant held."""
    counts = {"decrypt": 0, "verify": 0, "compare": 0}

    def counting(name: str, function: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object) -> object:
            counts[name] += 1
            return function(*args)

        return wrapper

    monkeypatch.setattr(aead_module, "decrypt", counting("decrypt", aead_module.decrypt))
    monkeypatch.setattr(
        "mindoo_p2p.sync.auth.verify_signature", counting("verify", verify_signature)
    )
    monkeypatch.setattr("hmac.compare_digest", counting("compare", hmac.compare_digest))
    work = []
    for case in (_wrong_tenant, _non_member, _revoked_member, _swapped_peer_ids):
        for key in counts:
            counts[key] = 0
        initiator, responder = case()
        assert_generic_denial(pump(initiator, responder))
        work.append(dict(counts))
    assert work == [{"decrypt": 1, "verify": 1, "compare": 1}] * 4


def test_initiator_refuses_a_responder_that_cannot_prove() -> None:
    tenant = TenantFixture()
    user, server = tenant.member("alice"), tenant.member("server")
    responder = AuthResponder(PEER_B, PEER_A, [tenant.authority(server)])
    initiator = AuthInitiator(PEER_A, PEER_B, tenant.authority(user))
    tenant.revoke(server)  # the initiator now knows the responder's key is revoked
    seen = pump(initiator, responder)
    assert initiator.state is InitiatorState.DENIED and initiator.refused_peer
    assert seen.to_responder[-1] == DENIED_FRAME  # the initiator's only word after that


def test_handshake_protocol_errors() -> None:
    tenant = TenantFixture()
    served = [tenant.authority(tenant.member("server"))]
    responder = AuthResponder(PEER_B, PEER_A, served)
    with pytest.raises(ProtocolViolation):
        responder.receive(b"\x01garbage")
    responder = AuthResponder(PEER_B, PEER_A, served)
    with pytest.raises(ProtocolViolation):  # a proof before any hello
        responder.receive(encode_message(InitiatorProof(b"t" * 32, b"s" * 40)))
    responder = AuthResponder(PEER_B, PEER_A, served)
    responder.receive(encode_message(Hello(PROTOCOL_VERSION + 1, b"n" * 32)))
    assert responder.next_frame() == DENIED_FRAME  # another version: the same denial
    initiator = AuthInitiator(PEER_A, PEER_B, tenant.authority(tenant.member("alice")))
    initiator.next_frame()
    with pytest.raises(ProtocolViolation):
        initiator.receive(encode_message(Hello(1, b"n" * 32)))


# --- through the driver ------------------------------------------------------------------------


async def _session(
    mine: LogAuthority, served: list[LogAuthority]
) -> tuple[object, object, list[tuple[bytes, int, str]], list[bytes]]:
    """Run both drivers over memory streams; what each returned or raised, the responder's
    penalties, and every frame the initiator received."""
    initiator_end, responder_end = memory_frame_pair()
    received: list[bytes] = []
    original = initiator_end.receive_frame

    async def recording() -> bytes:
        frame = await original()
        received.append(frame)
        return frame

    initiator_end.receive_frame = recording  # type: ignore[method-assign]
    penalties: list[tuple[bytes, int, str]] = []
    stores = {a.tenant_id: (a, MemorySyncStore(a.tenant_id)) for a in served}
    results: dict[str, object] = {}

    async def respond() -> None:
        results["responder"] = await run_responder(
            responder_end,
            PEER_B,
            PEER_A,
            stores,
            on_penalty=lambda *args: penalties.append(args),
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            try:
                results["initiator"] = await run_initiator(
                    initiator_end, PEER_A, PEER_B, mine, MemorySyncStore(mine.tenant_id)
                )
            except AuthDenied as exc:
                results["initiator"] = exc
    return results["initiator"], results["responder"], penalties, received


async def test_driver_denies_and_the_peer_learns_nothing() -> None:
    tenant, other = TenantFixture(), TenantFixture()
    served = [tenant.authority(tenant.member("server")), other.authority(other.member("s2"))]
    stranger = tenant.authority(UserIdentity.generate("mallory"))
    initiator_result, responder_result, penalties, received = await _session(stranger, served)
    assert isinstance(initiator_result, AuthDenied)
    assert responder_result is None
    assert penalties == [(PEER_A, DENIAL_PENALTY, "its proof was refused")]
    assert_generic_denial(Transcript(to_initiator=received))


async def test_membership_is_asked_on_every_session() -> None:
    tenant = TenantFixture()
    user = tenant.member("alice")
    server = tenant.authority(tenant.member("server"))
    mine = tenant.authority(user)
    first, answered, _, _ = await _session(mine, [server])
    assert not isinstance(first, AuthDenied) and answered is not None
    tenant.revoke(user)  # nothing may be cached: the next session must be denied
    second, refused, penalties, received = await _session(mine, [server])
    assert isinstance(second, AuthDenied) and refused is None
    assert server.asked == [user.signing.public_key, user.signing.public_key]
    assert_generic_denial(Transcript(to_initiator=received))
    assert len(penalties) == 1


async def test_driver_responder_refused_by_initiator() -> None:
    tenant = TenantFixture()
    user, server = tenant.member("alice"), tenant.member("server")
    initiator_end, responder_end = memory_frame_pair()
    store = MemorySyncStore(tenant.tenant_id)
    server_authority = tenant.authority(server)
    # The initiator's own view of membership (a log that never admitted the server).
    view = MembershipLog(tenant.tenant_id, tenant.admin.public_key)
    mine = LogAuthority(tenant.tenant_id, user.signing, view)
    outcomes: dict[str, BaseException] = {}

    async def respond() -> None:
        with pytest.raises(AuthDenied) as info:
            await run_responder(
                responder_end, PEER_B, PEER_A, {tenant.tenant_id: (server_authority, store)}
            )
        outcomes["responder"] = info.value

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            with pytest.raises(AuthDenied) as info:
                await run_initiator(
                    initiator_end, PEER_A, PEER_B, mine, MemorySyncStore(tenant.tenant_id)
                )
            outcomes["initiator"] = info.value
    assert mine.asked == [server.signing.public_key]
    assert "could not prove" in str(outcomes["initiator"])
    assert "refused our proof" in str(outcomes["responder"])


# --- toward whom we prove (issue 9, finding 6) -------------------------------------------------


def test_we_prove_only_toward_a_peer_we_dialled_or_that_proved_the_tenant_first() -> None:
    """Before: on an inbound connection the node started one initiator session per tenant it
    held, so whoever connected counted its tenants from the HELLOs, and with a tenant id (in
    every clear header) opened the INITIATOR_PROOF to learn the member key. Now an outsider
    that connects gets nothing unless it proves first, and then only the generic denial."""
    tenants = [TenantFixture() for _ in range(3)]
    served = [t.authority(t.member("server")) for t in tenants]
    gate = ProofGate()
    outsider, member_peer, dialled_peer = "outsider", "member", "dialled"
    assert not any(gate.may_prove(outsider, t.tenant_id, dialled=False) for t in tenants)

    # The outsider knows tenant 0's id and tries its own key: the one denial, nothing of ours.
    stranger = UserIdentity.generate("outsider")
    initiator = AuthInitiator(PEER_A, PEER_B, tenants[0].authority(stranger))
    responder = AuthResponder(PEER_B, PEER_A, served)
    seen = pump(initiator, responder)
    assert_generic_denial(seen)
    assert responder.state is ResponderState.DENIED
    assert not any(gate.may_prove(outsider, t.tenant_id, dialled=False) for t in tenants)

    # A member proves tenant 1 first (it is the initiator): we prove tenant 1 back in that
    # handshake, and may start tenant-1 sessions toward it later; never another tenant.
    bob = tenants[1].member("bob")
    initiator = AuthInitiator(PEER_A, PEER_B, tenants[1].authority(bob))
    responder = AuthResponder(PEER_B, PEER_A, served)
    seen = pump(initiator, responder)
    assert responder.state is ResponderState.AUTHENTICATED
    assert [f[0] for f in seen.to_initiator] == [MessageType.CHALLENGE, MessageType.RESPONDER_PROOF]
    gate.peer_proved(member_peer, responder.authority.tenant_id)
    assert gate.may_prove(member_peer, tenants[1].tenant_id, dialled=False)
    assert not gate.may_prove(member_peer, tenants[0].tenant_id, dialled=False)
    assert not gate.may_prove(member_peer, tenants[2].tenant_id, dialled=False)
    gate.forget(member_peer)  # it disconnected: it proves again next time
    assert not gate.may_prove(member_peer, tenants[1].tenant_id, dialled=False)

    # Toward a peer we dialled (an address we chose), we prove first, every tenant.
    assert all(gate.may_prove(dialled_peer, t.tenant_id, dialled=True) for t in tenants)


def test_the_proof_gate_is_bounded() -> None:
    gate = ProofGate(max_peers=3)
    tenant = bytes(16)
    for peer in ("a", "b", "c", "d"):
        gate.peer_proved(peer, tenant)
    assert not gate.may_prove("a", tenant, dialled=False)  # the oldest is forgotten
    assert all(gate.may_prove(p, tenant, dialled=False) for p in ("b", "c", "d"))
