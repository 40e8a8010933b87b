"""Negentropy V1 range fingerprints.

fingerprint = SHA-256(sum of the ids as little-endian 256-bit integers mod 2**256, as 32 bytes
little-endian, then varint(count)), first 16 bytes. The sum is a group operation, so a storage can
keep prefix sums (or bucket aggregates) and answer any range from two of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ._item import ID_SIZE
from ._varint import encode_varint

FINGERPRINT_SIZE = 16
ID_SUM_MODULUS = 1 << 256


def id_value(item_id: bytes) -> int:
    """The id as the little-endian integer that fingerprints add up."""
    return int.from_bytes(item_id, "little")


def fingerprint_from_sum(id_sum: int, count: int) -> bytes:
    """The fingerprint of ``count`` ids whose :func:`id_value` add up to ``id_sum`` (any integer;
    it is reduced mod 2**256 here)."""
    digest = hashlib.sha256((id_sum % ID_SUM_MODULUS).to_bytes(ID_SIZE, "little"))
    digest.update(encode_varint(count))
    return digest.digest()[:FINGERPRINT_SIZE]


def fingerprint_of_ids(ids: Iterable[bytes]) -> bytes:
    """The fingerprint of ``ids``, computed directly (linear time: for small ranges and checks)."""
    total = 0
    count = 0
    for item_id in ids:
        total += int.from_bytes(item_id, "little")
        count += 1
    return fingerprint_from_sum(total, count)
