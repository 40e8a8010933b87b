"""A tenant's symmetric encryption keys: the default key, named keys and their versions.

Every key version has its own random 16-byte id; the id (never the name) travels in entry
headers, so an entry says which key opens it without telling outsiders what the key is called.
Writers always use the newest version of a key; readers look a key up by id, so older versions
keep old history readable.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .crypto import aead
from .errors import InvalidNameError, MissingKeyError

DEFAULT_KEY = "default"
"""The tenant-wide key every member holds."""
MEMBERSHIP_KEY = "$membership"
"""Encrypts the tenant log (membership records); held by every member and mirror."""

KEY_COMMITMENT_SIZE = 32
_COMMITMENT_DOMAIN = b"mindoo/key-commitment/v1\x00"

KEY_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def validate_key_name(name: str) -> str:
    if name in (DEFAULT_KEY, MEMBERSHIP_KEY) or KEY_NAME_RE.fullmatch(name):
        return name
    raise InvalidNameError(
        f"invalid key name {name!r}: use 1-64 characters from a-z, 0-9, '.', '_', '-',"
        " starting with a letter or digit"
    )


@dataclass(frozen=True, slots=True)
class TenantKey:
    """One version of one named symmetric key."""

    key_id: bytes
    name: str
    version: int
    secret: bytes
    created_ms: int

    def __post_init__(self) -> None:
        if len(self.key_id) != 16 or len(self.secret) != aead.KEY_SIZE or self.version < 1:
            raise ValueError("a TenantKey has a 16-byte id, a 32-byte secret and version >= 1")

    @classmethod
    def generate(cls, name: str, version: int = 1) -> TenantKey:
        return cls(
            key_id=os.urandom(16),
            name=validate_key_name(name),
            version=version,
            secret=aead.random_key(),
            created_ms=int(time.time() * 1000),
        )

    def commitment(self) -> bytes:
        """What the tenant log announces about this version's secret, without revealing it:
        HMAC-SHA256 keyed by the secret over its id, name and version. Whoever receives the
        key (an invitee, an importer) checks it against the admin's announcement, so a key
        forged under a real id or name is refused."""
        message = b"".join(
            (
                _COMMITMENT_DOMAIN,
                self.key_id,
                self.name.encode("ascii"),
                b"\x00",
                self.version.to_bytes(4, "big"),
            )
        )
        return hmac.digest(self.secret, message, "sha256")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id.hex(),
            "name": self.name,
            "version": self.version,
            "secret": self.secret.hex(),
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantKey:
        return cls(
            key_id=bytes.fromhex(data["key_id"]),
            name=validate_key_name(data["name"]),
            version=int(data["version"]),
            secret=bytes.fromhex(data["secret"]),
            created_ms=int(data["created_ms"]),
        )

    def __repr__(self) -> str:  # never show the secret
        return f"TenantKey(name={self.name!r}, version={self.version}, id={self.key_id.hex()})"


class KeyRing:
    """The key versions one node holds for one tenant."""

    def __init__(self, keys: list[TenantKey] | None = None) -> None:
        self._by_id: dict[bytes, TenantKey] = {}
        self._current: dict[str, TenantKey] = {}
        """`current` by name, as last computed (emptied whenever a version is added or
        discarded): every own write asks for it."""
        self._generation = 0
        """Bumped by every add and discard: `current` keeps what it computed only when no
        add or discard ran meanwhile (another thread), so a shredded or superseded version is
        never cached."""
        for key in keys or []:
            self.add(key)

    def add(self, key: TenantKey) -> bool:
        """Add a key version; False when it was already held."""
        if key.key_id in self._by_id:
            return False
        self._by_id[key.key_id] = key
        self._generation += 1
        self._current.clear()
        return True

    def discard(self, key_id: bytes) -> bool:
        """Forget a key version (crypto-shredding); False when it was not held."""
        held = self._by_id.pop(key_id, None) is not None
        self._generation += 1
        self._current.clear()
        return held

    def by_id(self, key_id: bytes) -> TenantKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise MissingKeyError(f"no key with id {key_id.hex()} on this node") from None

    def has_id(self, key_id: bytes) -> bool:
        return key_id in self._by_id

    def current(self, name: str) -> TenantKey:
        """The newest version of the key called ``name``."""
        found = self._current.get(name)
        if found is not None:
            return found
        generation = self._generation
        versions = [k for k in list(self._by_id.values()) if k.name == name]
        if not versions:
            raise MissingKeyError(f"no key {name!r} on this node")
        found = max(versions, key=lambda k: k.version)
        if generation == self._generation:
            self._current[name] = found
            if generation != self._generation:  # an add or discard ran in between
                self._current.pop(name, None)
        return found

    def names(self) -> list[str]:
        return sorted({k.name for k in self._by_id.values()})

    def __iter__(self) -> Iterator[TenantKey]:
        return iter(sorted(self._by_id.values(), key=lambda k: (k.name, k.version)))

    def __len__(self) -> int:
        return len(self._by_id)

    def to_list(self) -> list[dict[str, Any]]:
        return [k.to_dict() for k in self]

    @classmethod
    def from_list(cls, data: list[dict[str, Any]]) -> KeyRing:
        return cls([TenantKey.from_dict(d) for d in data])
