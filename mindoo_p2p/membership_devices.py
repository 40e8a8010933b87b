"""The devices of a tenant's users, derived from DEVICE_ADD / DEVICE_REVOKE records. Pure.

`MembershipLog` keeps one `DeviceRegistry`; its rules make the outcome a function of the
*set* of records applied, never of their order (every node agrees, whatever order sync
delivers them in):

- Every acceptable enrolment of a device key is kept as a *claim*. The claim that counts (the
  *winner*) is the smallest by (unproven, entry id): an enrolment the device proved (record
  version 5, `device_request`) beats every legacy one (version 3, written before proofs
  existed), and among equals the smaller entry id wins. An unproven claim can therefore never
  take a device away from a proven one.
- A member ADD always wins over any enrolment: `MembershipLog` ignores the registry for a key
  that is a member (a member's key is never a device, whichever record arrived first). The
  claims stay recorded, inert, so the entry sets of all nodes stay equal.
- A device revocation names the pair (user, device); it limits the device while the winning
  claim is that user's. Several revocations of one pair: the smallest cut wins, and the
  smallest entry id is the one reported.
- A chained revocation (record version 4, per-author hash chains) also names the device's
  last accepted entry id at its cut; the ids are kept per pair, so only the winning claim's
  revocations name the entry the chain rules accept at the cut (:func:`name_cut_entry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .identity import PublicIdentity


@dataclass(frozen=True, slots=True)
class Device:
    """A device a member enrolled: its own identity (signing key), and its user's key."""

    identity: PublicIdentity
    user_key: bytes
    added_entry: bytes
    revoked_entry: bytes | None = None
    proven: bool = True
    """The device signed its enrolment (record version 5); False for legacy records."""

    @property
    def active(self) -> bool:
        return self.revoked_entry is None

    def rank(self) -> tuple[bool, bytes]:
        """Smaller wins: proven before unproven, then the smaller entry id."""
        return (not self.proven, self.added_entry)


@dataclass(frozen=True, slots=True)
class _PairRevocation:
    entry_id: bytes
    last_seq: int
    named: dict[int, frozenset[bytes]] = field(default_factory=dict)
    """seq -> the entry ids the pair's revocations name as the last accepted at seq."""


def name_cut_entry(
    named: dict[int, frozenset[bytes]], seq: int, entry_id: bytes | None
) -> dict[int, frozenset[bytes]]:
    """``named`` with ``entry_id`` added as a last accepted entry at ``seq`` (unchanged when a
    revocation names no id: record versions below 4)."""
    if entry_id is not None:
        named[seq] = named.get(seq, frozenset()) | {entry_id}
    return named


class DeviceRegistry:
    """Claims and revocations of device keys (see the module docstring)."""

    __slots__ = ("_claims", "_revocations")

    def __init__(self) -> None:
        self._claims: dict[bytes, dict[bytes, Device]] = {}
        """Device key -> entry id of each acceptable enrolment -> the claim."""
        self._revocations: dict[tuple[bytes, bytes], _PairRevocation] = {}
        """(user key, device key) -> the smallest cut and entry id of its revocations."""

    def copy(self) -> DeviceRegistry:
        twin = DeviceRegistry()
        twin._claims = {key: dict(claims) for key, claims in self._claims.items()}
        twin._revocations = {
            pair: replace(known, named=dict(known.named))
            for pair, known in self._revocations.items()
        }
        return twin

    # -- records -----------------------------------------------------------------------------
    def enrol(self, device: PublicIdentity, user_key: bytes, entry_id: bytes, proven: bool) -> None:
        claims = self._claims.setdefault(device.signing_key, {})
        claims.setdefault(entry_id, Device(device, user_key, entry_id, proven=proven))

    def revoke(
        self,
        user_key: bytes,
        device_key: bytes,
        entry_id: bytes,
        last_seq: int,
        last_entry_id: bytes | None = None,
    ) -> None:
        """Record a DEVICE_REVOKE of the pair; ``last_entry_id`` is the entry a chained
        revocation names as the device's last accepted one at ``last_seq``."""
        pair = (user_key, device_key)
        known = self._revocations.get(pair)
        if known is None:
            named = name_cut_entry({}, last_seq, last_entry_id)
            self._revocations[pair] = _PairRevocation(entry_id, last_seq, named)
        else:
            named = name_cut_entry(dict(known.named), last_seq, last_entry_id)
            self._revocations[pair] = _PairRevocation(
                min(known.entry_id, entry_id), min(known.last_seq, last_seq), named
            )

    # -- questions ---------------------------------------------------------------------------
    def claimed_by(self, user_key: bytes, device_key: bytes) -> bool:
        """True when some acceptable enrolment names ``device_key`` as a device of the user."""
        claims = self._claims.get(device_key, {})
        return any(claim.user_key == user_key for claim in claims.values())

    def device(self, device_key: bytes) -> Device | None:
        """The winning claim of ``device_key`` (with its revocation, if any), or None."""
        claims = self._claims.get(device_key)
        if not claims:
            return None
        winner = min(claims.values(), key=Device.rank)
        revocation = self._revocations.get((winner.user_key, device_key))
        if revocation is not None:
            winner = replace(winner, revoked_entry=revocation.entry_id)
        return winner

    def cut(self, device_key: bytes) -> int | None:
        """The cut of the winning claim's revocations, or None when it is not revoked."""
        winner = self.device(device_key)
        if winner is None:
            return None
        revocation = self._revocations.get((winner.user_key, device_key))
        return None if revocation is None else revocation.last_seq

    def cut_entry_ids(self, device_key: bytes, seq: int) -> frozenset[bytes]:
        """The entry ids the winning claim's revocations name as the device's last accepted
        at ``seq`` (empty when none names one there)."""
        winner = self.device(device_key)
        if winner is None:
            return frozenset()
        revocation = self._revocations.get((winner.user_key, device_key))
        return frozenset() if revocation is None else revocation.named.get(seq, frozenset())

    def device_keys(self) -> list[bytes]:
        """Every device key with at least one claim, in order of first claim."""
        return list(self._claims)

    def claims_of(self, user_key: bytes) -> int:
        """How many device keys the user has claimed (won or not)."""
        return sum(
            1
            for claims in self._claims.values()
            if any(claim.user_key == user_key for claim in claims.values())
        )


__all__ = ["Device", "DeviceRegistry", "name_cut_entry"]
