"""Checking a whole bundle file before importing any of it (all or nothing against corruption).

`mindoo_p2p.bundle.import_bundle` checks the framing first, then verifies entries as it
ingests them, rejecting a bad entry alone (the right rule for a peer). A bundle is a file the
user carries: one flipped byte means the file is damaged, and the user should learn it before
anything lands. `find_damaged_entries` decodes every entry and checks every signature, streaming
and in bounded chunks, and names the damaged ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mindoo_p2p.bundle import read_bundle
from mindoo_p2p.crypto import verify_many
from mindoo_p2p.entry import Entry
from mindoo_p2p.errors import DecodeError

VERIFY_CHUNK_ENTRIES = 1024
VERIFY_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DamagedEntry:
    """An entry of a bundle that does not decode or whose signature does not verify."""

    position: int
    """1-based position in the bundle."""
    entry_id: str
    """Hex SHA-256 of the bytes as found in the bundle."""
    reason: str


def find_damaged_entries(path: Path) -> list[DamagedEntry]:
    """Every damaged entry of the bundle at ``path``; DecodeError if its framing is broken."""
    damaged: list[DamagedEntry] = []
    pending: list[tuple[int, Entry]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending_bytes
        verdicts = verify_many(
            [(e.header.author, e.signed_message, e.signature) for _, e in pending]
        )
        for (position, entry), valid in zip(pending, verdicts, strict=True):
            if not valid:
                damaged.append(DamagedEntry(position, entry.id.hex(), "bad signature"))
        pending.clear()
        pending_bytes = 0

    with open(path, "rb") as fh:
        for position, raw in enumerate(read_bundle(fh), start=1):
            try:
                entry = Entry.decode(raw, what=f"entry {position}")
            except DecodeError as exc:
                damaged.append(DamagedEntry(position, hashlib.sha256(raw).hexdigest(), str(exc)))
                continue
            pending.append((position, entry))
            pending_bytes += len(raw)
            if len(pending) >= VERIFY_CHUNK_ENTRIES or pending_bytes >= VERIFY_CHUNK_BYTES:
                flush()
    if pending:
        flush()
    return damaged
