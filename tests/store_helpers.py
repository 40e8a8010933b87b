"""Helpers shared by the entry store tests (test_store, test_store_integrity): a sealer of
valid entries with increasing author sequence numbers, and the check that a batch all landed."""

from __future__ import annotations

import os

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.store import (
    AppendResult,
)

AUTHOR = SigningKeyPair.generate()
ADMIN = SigningKeyPair.generate()
KEY = random_key()
KEY_ID = b"store-test-key-1"
TENANT = b"T" * 16
OTHER_TENANT = b"U" * 16


class Maker:
    """Seals valid entries with increasing author sequence numbers."""

    def __init__(self, author: SigningKeyPair = AUTHOR) -> None:
        self.author = author
        self.seq = 0

    def __call__(
        self,
        *,
        database: str = "contacts",
        document_id: bytes | None = None,
        tenant_id: bytes = TENANT,
        kind: EntryKind = EntryKind.CHANGE,
        deps: int = 0,
        payload: bytes | None = None,
        author_seq: int | None = None,
    ) -> Entry:
        self.seq += 1
        return Entry.seal(
            kind=kind,
            tenant_id=tenant_id,
            database=database,
            document_id=document_id if document_id is not None else os.urandom(16),
            author=self.author,
            author_seq=author_seq if author_seq is not None else self.seq,
            timestamp_ms=1_700_000_000_000 + self.seq,
            deps=[os.urandom(32) for _ in range(deps)],
            key_id=KEY_ID,
            key=KEY,
            payload=payload if payload is not None else os.urandom(90),
        )


def assert_all_added(result: AppendResult, entries: list[Entry]) -> None:
    assert result.added == [e.id for e in entries]
    assert result.duplicates == []
    assert result.rejected == []
