"""Identities handed out for invites, waiting in the keystore for the join that uses them.

A user joins each tenant under a member identity of its own (`TenantSecrets.identity`), so its
tenants share no key. The admin must know that identity before inviting, so the invitee hands
out a fresh one (`Node.invite_identity`, `mindoo whoami --out FILE`; a device's request is
signed with one too) and keeps its private half here until `Node.join` makes it the tenant's.

Keystore field ``invite_identities``: a list of `UserIdentity.to_secret_dict`, oldest first;
the newest `MAX_INVITE_IDENTITIES` are kept (an older identity file can no longer be joined
with: ask for a new invite).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .crypto.keystore import Keystore
from .identity import UserIdentity

MAX_INVITE_IDENTITIES = 64
KEYSTORE_FIELD = "invite_identities"


class WaitingInviteIdentities:
    """The invite identities of one node's keystore."""

    def __init__(self, keystore: Keystore, user_name: str) -> None:
        self._keystore = keystore
        self._user_name = user_name

    def new(self) -> UserIdentity:
        """A fresh identity with the user's name, saved before it is returned."""
        fresh = UserIdentity.generate(self._user_name)

        def mutate(contents: dict[str, Any]) -> None:
            waiting = contents.setdefault(KEYSTORE_FIELD, [])
            waiting.append(fresh.to_secret_dict())
            del waiting[:-MAX_INVITE_IDENTITIES]

        self._keystore.update(mutate)
        return fresh

    def all(self) -> list[UserIdentity]:
        """The waiting identities, oldest first."""
        stored = self._keystore.read().get(KEYSTORE_FIELD, [])
        return [UserIdentity.from_secret_dict(d) for d in stored]

    def forget(self, used: UserIdentity) -> None:
        """Drop ``used`` once a tenant holds it (it lives on in that tenant's secrets)."""
        seed = used.signing.seed.hex()

        def mutate(contents: dict[str, Any]) -> None:
            waiting = contents.get(KEYSTORE_FIELD, [])
            contents[KEYSTORE_FIELD] = [d for d in waiting if d.get("signing_seed") != seed]

        self._keystore.update(mutate)


def keystore_field(identities: Iterable[UserIdentity]) -> list[dict[str, Any]]:
    """The keystore field holding ``identities`` (a restored node's, from its kit)."""
    return [identity.to_secret_dict() for identity in identities]


__all__ = ["MAX_INVITE_IDENTITIES", "WaitingInviteIdentities", "keystore_field"]
