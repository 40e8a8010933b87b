"""What binds a document's writers: its key family, in its id, and its actors, to their authors.

Members are not trusted by the rules (DESIGN.md, security stance), so neither the key a
document is sealed under nor the Automerge actor a change writes as may be taken from whatever
arrives first. Both are bound cryptographically instead, with no change to the entry format:

**Key family in the document id.** A document is created under one key *family* (the key's
name: ``default``, ``confidential``, ...; rotation makes new versions of a family, never a new
family) and its 16-byte id says which::

    document id   = family tag (8 bytes) || random (8 bytes)
    family tag    = HMAC-SHA-256(membership key, FAMILY_TAG_DOMAIN || tenant id || family)[:8]

keyed with the version of the tenant's membership key current at creation (readers try every
version they hold). The membership key is held by every member and mirror, never by
outsiders: a node that knows the family a key id belongs to (the keys it holds, and every
version the tenant log announces, mirrors included) checks an entry's ``key_id`` against its
document id without any document key, while whoever sees only clear headers (a stolen disk,
a copied bundle) cannot test guessed family names against document ids. An entry sealed under
another family is a bad entry: readers skip it (and report it); it can never decide which key
the document's later changes are sealed under. Making a document id carry a family's tag
takes the membership key; a member who holds it can create documents under any family name,
but never move an existing document to another family.

*Legacy ids* (documents created before this rule: 16 random bytes) match no family's tag
(except by a 2**-64 chance per family). They are read as before (each entry under whatever
key opens it), and new local changes go under the family of the document's root changes
(those with no causal parents), refused when the roots disagree (`legacy_family`).

**Actors bound to authors.** Every local Automerge change writes as a *bound actor*::

    bound actor   = author's Ed25519 public key[:16] || random (8 bytes)     (24 bytes)

The random part keeps actors unique per document object (one process, one cache entry): two
processes of one author editing one document never reuse an (actor, seq). A change whose actor
is 24 bytes long must carry its entry author's prefix; in a document with a family-bound id
every actor must be a bound actor. A member who forges the next (actor, seq) of an honest
writer therefore forges a change every reader skips, so it cannot displace the honest one.
Legacy actors (16 random bytes, written before this rule) are accepted in legacy documents.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable

from .keyring import DEFAULT_KEY, MEMBERSHIP_KEY, KeyRing

FAMILY_TAG_DOMAIN = b"mindoo/document-key-family/v1\x00"
FAMILY_TAG_SIZE = 8
DOCUMENT_ID_SIZE = 16

ACTOR_AUTHOR_PREFIX_SIZE = 16
ACTOR_SUFFIX_SIZE = 8
BOUND_ACTOR_SIZE = ACTOR_AUTHOR_PREFIX_SIZE + ACTOR_SUFFIX_SIZE


def family_tag(tenant_id: bytes, family: str, membership_secret: bytes) -> bytes:
    """The 8-byte tag of key family ``family`` in tenant ``tenant_id``, keyed with one version
    of the tenant's membership key."""
    message = FAMILY_TAG_DOMAIN + tenant_id + family.encode("utf-8")
    return hmac.digest(membership_secret, message, hashlib.sha256)[:FAMILY_TAG_SIZE]


def new_document_id(tenant_id: bytes, family: str, membership_secret: bytes) -> bytes:
    """A fresh document id bound to key family ``family`` (tagged with the current
    membership key version ``membership_secret``)."""
    tag = family_tag(tenant_id, family, membership_secret)
    return tag + os.urandom(DOCUMENT_ID_SIZE - FAMILY_TAG_SIZE)


class KeyFamilies:
    """Which key family a key id or a document id belongs to, as far as this node can tell.

    ``names()`` lists the families this node knows (held or announced); ``name_of(key_id)``
    names a key id's family (None when the id is neither held nor announced);
    ``tag_secrets()`` lists the membership key versions this node holds. ``default`` is
    always known.
    """

    def __init__(
        self,
        tenant_id: bytes,
        names: Callable[[], Iterable[str]],
        name_of: Callable[[bytes], str | None],
        tag_secrets: Callable[[], Iterable[bytes]],
    ) -> None:
        self._tenant_id = tenant_id
        self._names = names
        self._name_of = name_of
        self._tag_secrets = tag_secrets
        self._by_tag: dict[bytes, str] = {}
        self._refresh()

    @classmethod
    def of_keyring(cls, tenant_id: bytes, keyring: KeyRing) -> KeyFamilies:
        """The families of the keys ``keyring`` holds (no announcements)."""
        return cls(
            tenant_id,
            keyring.names,
            lambda k: keyring.by_id(k).name if keyring.has_id(k) else None,
            lambda: membership_secrets(keyring),
        )

    def _refresh(self) -> None:
        secrets = list(self._tag_secrets())
        for name in (DEFAULT_KEY, *self._names()):
            for secret in secrets:
                self._by_tag.setdefault(family_tag(self._tenant_id, name, secret), name)

    def of_key(self, key_id: bytes) -> str | None:
        """The family of key id ``key_id``, or None when this node does not know it."""
        return self._name_of(key_id)

    def of_document(self, document_id: bytes) -> str | None:
        """The family ``document_id`` is bound to, or None for a legacy id (or one of a family
        this node has not heard of yet)."""
        tag = document_id[:FAMILY_TAG_SIZE]
        family = self._by_tag.get(tag)
        if family is None:
            self._refresh()
            family = self._by_tag.get(tag)
        return family


def membership_secrets(keyring: KeyRing) -> list[bytes]:
    """The secrets of the membership key versions ``keyring`` holds (the tag keys)."""
    return [key.secret for key in keyring if key.name == MEMBERSHIP_KEY]


def bound_actor(author: bytes) -> bytes:
    """A fresh Automerge actor id bound to the Ed25519 public key ``author``."""
    return author[:ACTOR_AUTHOR_PREFIX_SIZE] + os.urandom(ACTOR_SUFFIX_SIZE)


def actor_error(actor: bytes, author: bytes, *, bound_document: bool) -> str | None:
    """Why a change writing as ``actor`` may not come from an entry signed by ``author``
    (None when it may). ``bound_document``: the document's id is bound to a key family, so
    only bound actors may write in it."""
    if len(actor) == BOUND_ACTOR_SIZE:
        if actor[:ACTOR_AUTHOR_PREFIX_SIZE] == author[:ACTOR_AUTHOR_PREFIX_SIZE]:
            return None
        return f"automerge actor {actor.hex()} belongs to another author than the entry's"
    if bound_document:
        return f"automerge actor {actor.hex()} is not derived from the entry author's key"
    return None


__all__ = [
    "ACTOR_AUTHOR_PREFIX_SIZE",
    "BOUND_ACTOR_SIZE",
    "FAMILY_TAG_SIZE",
    "KeyFamilies",
    "actor_error",
    "bound_actor",
    "family_tag",
    "membership_secrets",
    "new_document_id",
]
