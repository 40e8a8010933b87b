"""Helper process for the store crash and multi-process tests (run as a script, not collected).

Usage: ``python store_crash_worker.py STORE_DIR [--batches N] [--batch-size K] [--pause S]``

Opens the store, seals every entry up front (so the loop below only appends), prints ``ready``,
then appends batch after batch. Before each append it prints ``try <id>,<id>,...`` (the batch it
is about to write); after `append` returns it prints every newly stored id on its own line and
flushes, so every id line on stdout is an acknowledged, durable write. With ``--batches 0`` it
appends until killed (entries are then sealed lazily, batch by batch). Prints ``done`` at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator

from mindoo_p2p.crypto import SigningKeyPair, random_key
from mindoo_p2p.entry import Entry, EntryKind
from mindoo_p2p.store import EntryStore

TENANT = bytes.fromhex("6d696e646f6f2d63726173682d746e74")
DATABASE = "crashdb"


def batches(
    author: SigningKeyPair, first_seq: int, batch_size: int, count: int
) -> Iterator[list[Entry]]:
    """``count`` batches (endless when 0) of ~300-byte entries over a few documents."""
    key = random_key()
    documents = [os.urandom(16) for _ in range(8)]
    seq = first_seq
    number = 0
    while count == 0 or number < count:
        batch = []
        for _ in range(batch_size):
            batch.append(
                Entry.seal(
                    kind=EntryKind.CHANGE,
                    tenant_id=TENANT,
                    database=DATABASE,
                    document_id=documents[seq % len(documents)],
                    author=author,
                    author_seq=seq,
                    timestamp_ms=int(time.time() * 1000),
                    deps=[],
                    key_id=b"crash-test-key-1",
                    key=key,
                    payload=os.urandom(90),
                )
            )
            seq += 1
        number += 1
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--batches", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()

    out = sys.stdout
    with EntryStore(args.store) as store:
        author = SigningKeyPair.generate()
        source = batches(author, 1, args.batch_size, args.batches)
        planned: Iterator[list[Entry]] = iter(list(source)) if args.batches else source
        out.write("ready\n")
        out.flush()
        for batch in planned:
            out.write("try " + ",".join(e.id.hex() for e in batch) + "\n")
            out.flush()
            result = store.append(batch)
            out.write("".join(entry_id.hex() + "\n" for entry_id in result.added))
            out.flush()
            if args.pause:
                time.sleep(args.pause)
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    main()
