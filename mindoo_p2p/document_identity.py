"""What binds a document's writers: its key family, in its id, and its actors, to their authors.

Members are not trusted by the rules (DESIGN.md, security stance), so neither the key a
document is sealed under nor the Automerge actor a change writes as may be taken from whatever
arrives first. Both are bound cryptographically instead, with no change to the entry format:

**Key family in the document id.** A document is created under one key *family* (the key's
name: ``default``, ``confidential``, ...; rotation makes new versions of a family, never a new
family) and its 16-byte id says which::

    document id   = family tag (8 bytes) || random (8 bytes)
    family tag    = SHA-256(FAMILY_TAG_DOMAIN || tenant id || family name in UTF-8)[:8]

Any node that knows the family a key id belongs to (the keys it holds, and every version the
tenant log announces, mirrors included) checks an entry's ``key_id`` against its document id
without any key. An entry sealed under another family is a bad entry: readers skip it (and
report it); it can never decide which key the document's later changes are sealed under. A
forged tag needs a second preimage of 64 bits of SHA-256 for a chosen tenant and family.

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
import os
from collections.abc import Callable, Iterable

from .keyring import DEFAULT_KEY

FAMILY_TAG_DOMAIN = b"mindoo/document-key-family/v1\x00"
FAMILY_TAG_SIZE = 8
DOCUMENT_ID_SIZE = 16

ACTOR_AUTHOR_PREFIX_SIZE = 16
ACTOR_SUFFIX_SIZE = 8
BOUND_ACTOR_SIZE = ACTOR_AUTHOR_PREFIX_SIZE + ACTOR_SUFFIX_SIZE


def family_tag(tenant_id: bytes, family: str) -> bytes:
    """The 8-byte tag of key family ``family`` in tenant ``tenant_id``."""
    digest = hashlib.sha256(FAMILY_TAG_DOMAIN + tenant_id + family.encode("utf-8")).digest()
    return digest[:FAMILY_TAG_SIZE]


def new_document_id(tenant_id: bytes, family: str) -> bytes:
    """A fresh document id bound to key family ``family``."""
    return family_tag(tenant_id, family) + os.urandom(DOCUMENT_ID_SIZE - FAMILY_TAG_SIZE)


class KeyFamilies:
    """Which key family a key id or a document id belongs to, as far as this node can tell.

    ``names()`` lists the families this node knows (held or announced); ``name_of(key_id)``
    names a key id's family (None when the id is neither held nor announced). ``default`` is
    always known.
    """

    def __init__(
        self,
        tenant_id: bytes,
        names: Callable[[], Iterable[str]],
        name_of: Callable[[bytes], str | None],
    ) -> None:
        self._tenant_id = tenant_id
        self._names = names
        self._name_of = name_of
        self._by_tag: dict[bytes, str] = {}
        self._refresh()

    def _refresh(self) -> None:
        for name in (DEFAULT_KEY, *self._names()):
            self._by_tag.setdefault(family_tag(self._tenant_id, name), name)

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
    "new_document_id",
]
