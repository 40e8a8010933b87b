"""Per-tenant peer authentication, sans I/O: two state machines that turn frames into frames.

The handshake (I = initiator, R = responder; peer ids are the libp2p ones of the connection)::

    I -> R  HELLO(version, nonce_i)     (R denies a version it does not speak: nothing else
                                         is denied before the proofs, see `refused_version`)
    R -> I  CHALLENGE(nonce_r)
    I -> R  INITIATOR_PROOF(tag, seal_I(credential_I))      or DENIED
    R -> I  RESPONDER_PROOF(seal_R(credential_R))           or DENIED
    (I -> R DENIED if R's proof fails; otherwise the sync protocol starts with I's DATABASE_LIST)

with ``binding = (peer_i, peer_r, nonce_i, nonce_r)`` and ``tenant_id`` the tenant I wants:

- ``tag = HMAC-SHA256(tenant_id, "tag" domain || binding)``: the tenant, blinded. R recomputes
  it for every tenant it holds (all of them, comparing in constant time, no early exit).
- ``credential = (kind, member_key, signature, mirror grant slot)``; the signature is by the
  member key over ``role || SHA-256(domain || tenant_id || binding) || kind || member_key ||
  SHA-256(grant)``. Binding both peer ids and both fresh nonces makes a proof useless on any
  other connection or session; the role byte keeps R from reflecting I's proof back.
- ``seal_X`` is XChaCha20-Poly1305 under ``HMAC-SHA256(tenant_id, "seal" domain || role ||
  binding)``: a peer that does not know the tenant id cannot even see which member key talks.
- Each side asks its :class:`TenantAuthority` whether the other's key may replicate the tenant
  now (membership and revocation are checked on every session; nothing is cached here).

What a peer that cannot prove learns: R answers an unknown tenant, a replayed or misbound
proof, a bad signature, a non-member or a revoked member with the same one-byte DENIED, after
the same work (a tag per tenant held, one AEAD open and one signature check, on decoys when the
tenant is unknown; then a membership question only for a valid signature), and before saying
anything else. I reveals nothing more (no database, no id) until R has proven itself; a
responder that knows the tenant id without being a member (a revoked one) can still open I's
sealed credential and learn which member key dialed it. That key is the member's in this
tenant only (a member identity per tenant, `TenantSecrets.identity`), so proofs for two tenants
name unrelated keys; the libp2p peer id, the same in every session, is what still ties them.
Mirror grants have a typed slot in :class:`Credential` but are not accepted yet (a grant is
denied like any failed proof).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..crypto import aead
from ..crypto.signing import SigningKeyPair, verify_signature
from ..entry import TENANT_ID_SIZE
from ..errors import DecodeError, MindooError, VerificationError
from .messages import (
    MIN_PROTOCOL_VERSION,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    Challenge,
    Credential,
    CredentialKind,
    Denied,
    Hello,
    InitiatorProof,
    Message,
    ProtocolViolation,
    ResponderProof,
    decode_message,
    encode_message,
)

MAX_PEER_ID_SIZE = 255
_TAG_DOMAIN = b"mindoo/sync-auth/v1/tag\x00"
_SEAL_DOMAIN = b"mindoo/sync-auth/v1/seal\x00"
_SIGN_DOMAIN = b"mindoo/sync-auth/v1/sign\x00"
_TRANSCRIPT_DOMAIN = b"mindoo/sync-auth/v1/transcript\x00"
_ZERO_NONCE = bytes(aead.NONCE_SIZE)

DENIED_FRAME = encode_message(Denied())
"""The one denial, byte for byte, whatever its cause."""


class AuthDenied(MindooError):
    """The session was refused: by the peer (it says no more than that) or by us."""


class AuthStateError(MindooError, RuntimeError):
    """A handshake method called in a state that does not allow it (a bug in the caller)."""


class TenantAuthority(Protocol):
    """What the handshake needs to know about one tenant on this node."""

    @property
    def tenant_id(self) -> bytes:
        """The tenant's 16-byte id."""
        ...

    @property
    def member_key(self) -> SigningKeyPair:
        """This node's member signing key in the tenant."""
        ...

    def may_replicate(self, member_key: bytes) -> bool:
        """True when ``member_key`` belongs to a current (not revoked) member, asked anew on
        every session."""
        ...

    def membership_evidence(self) -> bytes:
        """The sealed tenant-log entry that added this node's member key (b"" if unknown)."""
        ...

    def admit(self, member_key: bytes, evidence: bytes) -> bool:
        """Verify ``evidence`` (a sealed membership entry adding ``member_key``), store it if
        valid, and return whether ``member_key`` may now replicate."""
        ...


class Role(enum.Enum):
    INITIATOR = b"I"
    RESPONDER = b"R"


# --- the cryptographic binding -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionBinding:
    """What every proof of a session is bound to: both libp2p peer ids and both fresh nonces."""

    initiator_peer: bytes
    responder_peer: bytes
    initiator_nonce: bytes
    responder_nonce: bytes

    def __post_init__(self) -> None:
        for peer in (self.initiator_peer, self.responder_peer):
            if type(peer) is not bytes or not 1 <= len(peer) <= MAX_PEER_ID_SIZE:
                raise ValueError(f"a peer id must be 1-{MAX_PEER_ID_SIZE} bytes")
        for nonce in (self.initiator_nonce, self.responder_nonce):
            if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
                raise ValueError(f"a nonce is {NONCE_SIZE} bytes")

    def encode(self) -> bytes:
        return b"".join(
            (
                bytes((len(self.initiator_peer),)),
                self.initiator_peer,
                bytes((len(self.responder_peer),)),
                self.responder_peer,
                self.initiator_nonce,
                self.responder_nonce,
            )
        )


def tenant_tag(tenant_id: bytes, binding: SessionBinding) -> bytes:
    """The blinded name of ``tenant_id`` in this session."""
    return hmac.digest(tenant_id, _TAG_DOMAIN + binding.encode(), "sha256")


def _transcript(tenant_id: bytes, binding: SessionBinding) -> bytes:
    return hashlib.sha256(_TRANSCRIPT_DOMAIN + tenant_id + binding.encode()).digest()


def _seal_key(tenant_id: bytes, binding: SessionBinding, role: Role) -> bytes:
    return hmac.digest(tenant_id, _SEAL_DOMAIN + role.value + binding.encode(), "sha256")


def signed_message(
    tenant_id: bytes,
    binding: SessionBinding,
    role: Role,
    kind: CredentialKind,
    member_key: bytes,
    evidence: bytes,
) -> bytes:
    """The bytes a credential's signature covers."""
    return b"".join(
        (
            _SIGN_DOMAIN,
            role.value,
            _transcript(tenant_id, binding),
            bytes((int(kind),)),
            member_key,
            hashlib.sha256(evidence).digest(),
        )
    )


def seal_credential(
    tenant_id: bytes, binding: SessionBinding, role: Role, credential: Credential
) -> bytes:
    """``credential`` sealed for ``tenant_id`` in this session and role."""
    key = _seal_key(tenant_id, binding, role)
    return aead.encrypt(key, _ZERO_NONCE, credential.encode(), _transcript(tenant_id, binding))


def make_credential(authority: TenantAuthority, binding: SessionBinding, role: Role) -> bytes:
    """Our sealed member credential for this session, in ``role``."""
    key = authority.member_key
    kind = CredentialKind.MEMBER_KEY
    evidence = authority.membership_evidence()
    message = signed_message(authority.tenant_id, binding, role, kind, key.public_key, evidence)
    credential = Credential(kind, key.public_key, key.sign(message), evidence)
    return seal_credential(authority.tenant_id, binding, role, credential)


def open_credential(
    tenant_id: bytes, binding: SessionBinding, role: Role, sealed: bytes
) -> Credential | None:
    """The credential sealed for ``tenant_id`` in this session and role, or None."""
    try:
        plain = aead.decrypt(
            _seal_key(tenant_id, binding, role),
            _ZERO_NONCE,
            sealed,
            _transcript(tenant_id, binding),
        )
        return Credential.decode(plain)
    except (VerificationError, DecodeError):
        return None


def _signature_valid(
    tenant_id: bytes, binding: SessionBinding, role: Role, credential: Credential
) -> bool:
    message = signed_message(
        tenant_id, binding, role, credential.kind, credential.member_key, credential.evidence
    )
    return verify_signature(credential.member_key, message, credential.signature)


_DECOY_SIGNER = SigningKeyPair(hashlib.sha256(b"mindoo/sync-auth/v1/decoy").digest())
_DECOY_CREDENTIAL = Credential(
    CredentialKind.MEMBER_KEY, _DECOY_SIGNER.public_key, _DECOY_SIGNER.sign(b"decoy")
)
"""Checked instead of a credential that did not open, so that a failure costs the same work."""


def check_credential(
    authority: TenantAuthority | None,
    binding: SessionBinding,
    role: Role,
    sealed: bytes,
    decoy_tenant: bytes,
) -> bytes | None:
    """The proven member key of the peer in ``role``, or None.

    Always does one AEAD open and one signature check (on decoys when ``authority`` is None or
    the credential does not open), then asks ``authority`` only about a valid member
    credential.
    """
    tenant_id = authority.tenant_id if authority is not None else decoy_tenant
    credential = open_credential(tenant_id, binding, role, sealed)
    subject = credential if credential is not None else _DECOY_CREDENTIAL
    valid = _signature_valid(tenant_id, binding, role, subject)
    if authority is None or credential is None or not valid:
        return None
    if credential.kind is not CredentialKind.MEMBER_KEY:
        return None  # mirror grants: the slot exists, verification comes later
    # Our membership log may be behind: the peer can carry the admin-signed record that added
    # it (verified, and stored, by the authority; never trusted blindly).
    admitted = authority.may_replicate(credential.member_key) or (
        bool(credential.evidence) and authority.admit(credential.member_key, credential.evidence)
    )
    if not admitted:
        return None
    return credential.member_key


def find_tenant(
    authorities: Iterable[TenantAuthority], binding: SessionBinding, tag: bytes
) -> TenantAuthority | None:
    """The authority whose tenant ``tag`` names, comparing against every tenant."""
    found: TenantAuthority | None = None
    for authority in authorities:
        if hmac.compare_digest(tenant_tag(authority.tenant_id, binding), tag):
            found = authority
    return found


# --- shared machinery --------------------------------------------------------------------------


def _decode(frame: bytes, expected: tuple[type, ...]) -> Message:
    """The message in ``frame`` if it is one of ``expected`` (or a DENIED), else a violation."""
    try:
        message = decode_message(frame)
    except DecodeError as exc:
        raise ProtocolViolation(f"undecodable handshake frame: {exc}") from None
    if not isinstance(message, (*expected, Denied)):
        names = " or ".join(kind.__name__ for kind in expected)
        raise ProtocolViolation(f"handshake: expected {names}, got {type(message).__name__}")
    return message


def _check_peer(peer: bytes, what: str) -> None:
    if type(peer) is not bytes or not 1 <= len(peer) <= MAX_PEER_ID_SIZE:
        raise ValueError(f"{what} must be 1-{MAX_PEER_ID_SIZE} bytes (the binary peer id)")


# --- the initiator -----------------------------------------------------------------------------


class InitiatorState(enum.Enum):
    SEND_HELLO = "send hello"
    AWAIT_CHALLENGE = "await challenge"
    SEND_PROOF = "send proof"
    AWAIT_PROOF = "await responder proof"
    SEND_REFUSAL = "send refusal"
    AUTHENTICATED = "authenticated"
    DENIED = "denied"


class InitiatorEvent(enum.Enum):
    HELLO_SENT = "hello sent"
    CHALLENGE_RECEIVED = "challenge received"
    PROOF_SENT = "proof sent"
    PEER_PROVEN = "responder proof accepted"
    PEER_REFUSED = "responder proof refused"
    REFUSAL_SENT = "refusal sent"
    DENIAL_RECEIVED = "denial received"


_I = InitiatorState
_IE = InitiatorEvent
_INITIATOR_TRANSITIONS: dict[tuple[InitiatorState, InitiatorEvent], InitiatorState] = {
    (_I.SEND_HELLO, _IE.HELLO_SENT): _I.AWAIT_CHALLENGE,
    (_I.AWAIT_CHALLENGE, _IE.CHALLENGE_RECEIVED): _I.SEND_PROOF,
    (_I.AWAIT_CHALLENGE, _IE.DENIAL_RECEIVED): _I.DENIED,
    (_I.SEND_PROOF, _IE.PROOF_SENT): _I.AWAIT_PROOF,
    (_I.AWAIT_PROOF, _IE.PEER_PROVEN): _I.AUTHENTICATED,
    (_I.AWAIT_PROOF, _IE.PEER_REFUSED): _I.SEND_REFUSAL,
    (_I.AWAIT_PROOF, _IE.DENIAL_RECEIVED): _I.DENIED,
    (_I.SEND_REFUSAL, _IE.REFUSAL_SENT): _I.DENIED,
}
_INITIATOR_EXPECTS: dict[InitiatorState, tuple[type, ...]] = {
    _I.AWAIT_CHALLENGE: (Challenge,),
    _I.AWAIT_PROOF: (ResponderProof,),
}


class AuthInitiator:
    """The dialing side's handshake for one tenant, announcing ``version`` in its HELLO (the
    newest by default; an older one toward a responder that refused it, `refused_version`).
    The handshake is the same in every version: only the sync phase after it differs.

    Drive it with :meth:`next_frame` (send what it returns until None) and :meth:`receive`
    (while :attr:`wants_frame`). It ends in ``AUTHENTICATED`` or ``DENIED``; a malformed or
    unexpected frame raises :class:`ProtocolViolation`.
    """

    def __init__(
        self,
        local_peer: bytes,
        remote_peer: bytes,
        authority: TenantAuthority,
        version: int = PROTOCOL_VERSION,
    ) -> None:
        _check_peer(local_peer, "local_peer")
        _check_peer(remote_peer, "remote_peer")
        if len(authority.tenant_id) != TENANT_ID_SIZE:
            raise ValueError(f"tenant_id must be {TENANT_ID_SIZE} bytes")
        if type(version) is not int or not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            raise ValueError(
                f"a HELLO announces a version from {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            )
        self._version = version
        self._local_peer = local_peer
        self._remote_peer = remote_peer
        self._authority = authority
        self._nonce = os.urandom(NONCE_SIZE)
        self._binding: SessionBinding | None = None
        self._peer_member_key: bytes | None = None
        self._refused_peer = False
        self._state = InitiatorState.SEND_HELLO

    @property
    def state(self) -> InitiatorState:
        return self._state

    @property
    def wants_frame(self) -> bool:
        return self._state in _INITIATOR_EXPECTS

    @property
    def finished(self) -> bool:
        return self._state in (InitiatorState.AUTHENTICATED, InitiatorState.DENIED)

    @property
    def authenticated(self) -> bool:
        """Both sides proved themselves: the sync phase may begin."""
        return self._state is InitiatorState.AUTHENTICATED

    @property
    def refused_peer(self) -> bool:
        """We refused the responder's proof (rather than being denied by it)."""
        return self._refused_peer

    @property
    def peer_member_key(self) -> bytes:
        """The responder's proven member key (only once authenticated)."""
        if self._state is not InitiatorState.AUTHENTICATED or self._peer_member_key is None:
            raise AuthStateError(f"the handshake is {self._state.value}, not authenticated")
        return self._peer_member_key

    def _move(self, event: InitiatorEvent) -> None:
        after = _INITIATOR_TRANSITIONS.get((self._state, event))
        if after is None:
            raise AuthStateError(f"handshake is {self._state.value}: {event.value} not allowed")
        self._state = after

    def next_frame(self) -> bytes | None:
        """The frame to send now, or None when we are waiting or done."""
        if self._state is InitiatorState.SEND_HELLO:
            self._move(InitiatorEvent.HELLO_SENT)
            return encode_message(Hello(self._version, self._nonce))
        if self._state is InitiatorState.SEND_PROOF:
            assert self._binding is not None
            tag = tenant_tag(self._authority.tenant_id, self._binding)
            sealed = make_credential(self._authority, self._binding, Role.INITIATOR)
            self._move(InitiatorEvent.PROOF_SENT)
            return encode_message(InitiatorProof(tag, sealed))
        if self._state is InitiatorState.SEND_REFUSAL:
            self._move(InitiatorEvent.REFUSAL_SENT)
            return DENIED_FRAME
        return None

    def receive(self, frame: bytes) -> None:
        """Process the responder's frame."""
        expected = _INITIATOR_EXPECTS.get(self._state)
        if expected is None:
            raise ProtocolViolation(f"handshake is {self._state.value}: no frame expected")
        message = _decode(frame, expected)
        if isinstance(message, Denied):
            self._move(InitiatorEvent.DENIAL_RECEIVED)
        elif isinstance(message, Challenge):
            self._binding = SessionBinding(
                self._local_peer, self._remote_peer, self._nonce, message.nonce
            )
            self._move(InitiatorEvent.CHALLENGE_RECEIVED)
        elif isinstance(message, ResponderProof):
            assert self._binding is not None
            key = check_credential(
                self._authority,
                self._binding,
                Role.RESPONDER,
                message.sealed_credential,
                self._authority.tenant_id,
            )
            self._peer_member_key = key
            self._refused_peer = key is None
            self._move(InitiatorEvent.PEER_REFUSED if key is None else InitiatorEvent.PEER_PROVEN)

    @property
    def version(self) -> int:
        """The protocol version our HELLO announces."""
        return self._version

    @property
    def refused_version(self) -> bool:
        """The responder denied our HELLO: a responder denies nothing else before the proofs,
        so it does not speak our protocol version (an older node)."""
        return self._state is InitiatorState.DENIED and self._binding is None


# --- the responder -----------------------------------------------------------------------------


class ResponderState(enum.Enum):
    AWAIT_HELLO = "await hello"
    SEND_CHALLENGE = "send challenge"
    AWAIT_PROOF = "await initiator proof"
    SEND_PROOF = "send proof"
    SEND_DENIAL = "send denial"
    AUTHENTICATED = "authenticated"
    DENIED = "denied"


class ResponderEvent(enum.Enum):
    HELLO_RECEIVED = "hello received"
    HELLO_REFUSED = "hello with another version"
    CHALLENGE_SENT = "challenge sent"
    PEER_PROVEN = "initiator proof accepted"
    PEER_REFUSED = "initiator proof refused"
    PROOF_SENT = "proof sent"
    DENIAL_SENT = "denial sent"
    DENIAL_RECEIVED = "denial received"


_R = ResponderState
_RE = ResponderEvent
_RESPONDER_TRANSITIONS: dict[tuple[ResponderState, ResponderEvent], ResponderState] = {
    (_R.AWAIT_HELLO, _RE.HELLO_RECEIVED): _R.SEND_CHALLENGE,
    (_R.AWAIT_HELLO, _RE.HELLO_REFUSED): _R.SEND_DENIAL,
    (_R.AWAIT_HELLO, _RE.DENIAL_RECEIVED): _R.DENIED,
    (_R.SEND_CHALLENGE, _RE.CHALLENGE_SENT): _R.AWAIT_PROOF,
    (_R.AWAIT_PROOF, _RE.PEER_PROVEN): _R.SEND_PROOF,
    (_R.AWAIT_PROOF, _RE.PEER_REFUSED): _R.SEND_DENIAL,
    (_R.AWAIT_PROOF, _RE.DENIAL_RECEIVED): _R.DENIED,
    (_R.SEND_PROOF, _RE.PROOF_SENT): _R.AUTHENTICATED,
    (_R.SEND_DENIAL, _RE.DENIAL_SENT): _R.DENIED,
}
_RESPONDER_EXPECTS: dict[ResponderState, tuple[type, ...]] = {
    _R.AWAIT_HELLO: (Hello,),
    _R.AWAIT_PROOF: (InitiatorProof,),
}


class AuthResponder:
    """The answering side's handshake, choosing among the tenants of ``authorities``.

    Same driving rules as :class:`AuthInitiator`. Once ``AUTHENTICATED``, :attr:`authority`
    is the tenant the initiator proved itself for. Its own proof is sent only after the
    initiator's was accepted; every refusal is :data:`DENIED_FRAME`.
    """

    def __init__(
        self, local_peer: bytes, remote_peer: bytes, authorities: Iterable[TenantAuthority]
    ) -> None:
        _check_peer(local_peer, "local_peer")
        _check_peer(remote_peer, "remote_peer")
        self._local_peer = local_peer
        self._remote_peer = remote_peer
        self._authorities = tuple(authorities)
        self._nonce = os.urandom(NONCE_SIZE)
        self._decoy_tenant = os.urandom(TENANT_ID_SIZE)
        self._peer_nonce: bytes | None = None
        self._binding: SessionBinding | None = None
        self._authority: TenantAuthority | None = None
        self._peer_member_key: bytes | None = None
        self._peer_version = 0
        self._refused_peer = False
        self._state = ResponderState.AWAIT_HELLO

    @property
    def state(self) -> ResponderState:
        return self._state

    @property
    def wants_frame(self) -> bool:
        return self._state in _RESPONDER_EXPECTS

    @property
    def finished(self) -> bool:
        return self._state in (ResponderState.AUTHENTICATED, ResponderState.DENIED)

    @property
    def authenticated(self) -> bool:
        """The initiator proved itself and our proof is out (or about to be): the sync
        phase may begin."""
        return self._state is ResponderState.AUTHENTICATED

    @property
    def authority(self) -> TenantAuthority:
        """The tenant the initiator proved itself for (only once authenticated)."""
        if self._state is not ResponderState.AUTHENTICATED or self._authority is None:
            raise AuthStateError(f"the handshake is {self._state.value}, not authenticated")
        return self._authority

    @property
    def refused_peer(self) -> bool:
        """We denied the initiator (rather than it giving up)."""
        return self._refused_peer

    @property
    def peer_version(self) -> int:
        """The protocol version the initiator's HELLO announced (0 before it arrived)."""
        return self._peer_version

    @property
    def peer_member_key(self) -> bytes:
        """The initiator's proven member key (only once authenticated)."""
        if self._state is not ResponderState.AUTHENTICATED or self._peer_member_key is None:
            raise AuthStateError(f"the handshake is {self._state.value}, not authenticated")
        return self._peer_member_key

    def _move(self, event: ResponderEvent) -> None:
        after = _RESPONDER_TRANSITIONS.get((self._state, event))
        if after is None:
            raise AuthStateError(f"handshake is {self._state.value}: {event.value} not allowed")
        self._state = after

    def next_frame(self) -> bytes | None:
        """The frame to send now, or None when we are waiting or done."""
        if self._state is ResponderState.SEND_CHALLENGE:
            self._move(ResponderEvent.CHALLENGE_SENT)
            return encode_message(Challenge(self._nonce))
        if self._state is ResponderState.SEND_PROOF:
            assert self._authority is not None and self._binding is not None
            sealed = make_credential(self._authority, self._binding, Role.RESPONDER)
            self._move(ResponderEvent.PROOF_SENT)
            return encode_message(ResponderProof(sealed))
        if self._state is ResponderState.SEND_DENIAL:
            self._move(ResponderEvent.DENIAL_SENT)
            return DENIED_FRAME
        return None

    def receive(self, frame: bytes) -> None:
        """Process the initiator's frame."""
        expected = _RESPONDER_EXPECTS.get(self._state)
        if expected is None:
            raise ProtocolViolation(f"handshake is {self._state.value}: no frame expected")
        message = _decode(frame, expected)
        if isinstance(message, Denied):
            self._move(ResponderEvent.DENIAL_RECEIVED)
        elif isinstance(message, Hello):
            if not MIN_PROTOCOL_VERSION <= message.version <= PROTOCOL_VERSION:
                self._refused_peer = True
                self._move(ResponderEvent.HELLO_REFUSED)
                return
            self._peer_version = message.version
            self._binding = SessionBinding(
                self._remote_peer, self._local_peer, message.nonce, self._nonce
            )
            self._move(ResponderEvent.HELLO_RECEIVED)
        elif isinstance(message, InitiatorProof):
            assert self._binding is not None
            authority = find_tenant(self._authorities, self._binding, message.tenant_tag)
            key = check_credential(
                authority,
                self._binding,
                Role.INITIATOR,
                message.sealed_credential,
                self._decoy_tenant,
            )
            if key is None:
                self._refused_peer = True
                self._move(ResponderEvent.PEER_REFUSED)
                return
            self._authority = authority
            self._peer_member_key = key
            self._move(ResponderEvent.PEER_PROVEN)


# --- toward whom we prove ----------------------------------------------------------------------


class ProofGate:
    """Toward whom this node proves membership, i.e. starts initiator sessions. Pure.

    A node proves a tenant only toward a peer it dialled (it chose that address: the address
    book, a bootstrap address, mDNS), or toward a peer that proved that very tenant to it
    first (as the initiator of a session this node answered, whose handshake authenticated).
    So a peer that connects to us learns nothing by waiting: we never start a session toward
    it, never send one HELLO per tenant we hold (which let it count our tenants) and never a
    sealed credential (which anyone knowing a tenant id, which every clear header carries,
    could open to learn which member key we prove with). It must prove first, as initiator,
    and gets the one generic denial when it cannot.

    The daemon tells it who proved what (`peer_proved`, from the sessions' handshakes) and
    when a peer's last connection closed (`forget`); whether we dialled the peer's connection
    is asked at the moment a session would start (a restarted peer may dial us instead).
    """

    __slots__ = ("_max_peers", "_proven")

    def __init__(self, max_peers: int = 4096) -> None:
        self._max_peers = max_peers
        self._proven: dict[str, set[bytes]] = {}
        """Connected peer -> the tenants it proved to us (at most the tenants we hold), the
        peer proven longest ago first; at most ``max_peers`` (a missed disconnect cannot
        grow it without bound: the oldest is forgotten and proves again)."""

    def peer_proved(self, peer_id: str, tenant_id: bytes) -> None:
        """A handshake with ``peer_id`` authenticated it as a member of ``tenant_id``."""
        tenants = self._proven.pop(peer_id, set())
        tenants.add(tenant_id)
        self._proven[peer_id] = tenants
        while len(self._proven) > self._max_peers:
            del self._proven[next(iter(self._proven))]

    def forget(self, peer_id: str) -> None:
        """``peer_id`` disconnected: it proves again on its next connection."""
        self._proven.pop(peer_id, None)

    def may_prove(self, peer_id: str, tenant_id: bytes, *, dialled: bool) -> bool:
        """True when this node may start a session for ``tenant_id`` toward ``peer_id``
        (``dialled``: its connection is one this node dialled)."""
        return dialled or tenant_id in self._proven.get(peer_id, ())
