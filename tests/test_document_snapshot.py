"""The encrypted snapshot of a materialized document (`mindoo_p2p.document_snapshot`): it
opens only with its key, as the document and feed position it was written for, and anything
altered reads as no snapshot (the materializer then rebuilds from the entries)."""

from __future__ import annotations

import os

from mindoo_p2p.document_snapshot import (
    SnapshotContents,
    open_snapshot,
    seal_snapshot,
    snapshot_key_id,
)
from mindoo_p2p.keyring import TenantKey

KEY = TenantKey.generate("default")
SCOPE = os.urandom(32)
DOC = os.urandom(16)
CONTENTS = SnapshotContents({os.urandom(32): os.urandom(32)}, 7, None, b"automerge save")


def test_a_snapshot_opens_with_its_key_as_what_it_was_written_for() -> None:
    blob = seal_snapshot(KEY, SCOPE, DOC, 41, CONTENTS)
    assert snapshot_key_id(blob) == KEY.key_id
    assert open_snapshot(KEY, SCOPE, DOC, 41, blob) == CONTENTS
    deleted = CONTENTS._replace(deleted_by=os.urandom(32), heads_to_entries={})
    assert (
        open_snapshot(KEY, SCOPE, DOC, 41, seal_snapshot(KEY, SCOPE, DOC, 41, deleted)) == deleted
    )


def test_anything_else_reads_as_no_snapshot() -> None:
    blob = seal_snapshot(KEY, SCOPE, DOC, 41, CONTENTS)
    assert open_snapshot(TenantKey.generate("default"), SCOPE, DOC, 41, blob) is None
    assert open_snapshot(KEY, os.urandom(32), DOC, 41, blob) is None  # another database
    assert open_snapshot(KEY, SCOPE, os.urandom(16), 41, blob) is None  # another document
    assert open_snapshot(KEY, SCOPE, DOC, 42, blob) is None  # another feed position
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    assert open_snapshot(KEY, SCOPE, DOC, 41, flipped) is None
