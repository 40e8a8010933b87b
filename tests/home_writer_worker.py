"""Helper process for tests/test_local_writes.py (run as a script, not collected).

Usage::

    python home_writer_worker.py HOME PASSWORD TENANT DATABASE --tag T [--documents N]
        [--batch K] [--members M] [--update DOCUMENT_ID]

Opens the node home (which another process may have open too), prints ``ready`` and waits for a
line on stdin, so that several workers start writing at the same moment. Then, as the home's
user: creates ``--documents`` documents (``{"tag": T, "n": i}``), in batches of ``--batch``
in which every document is changed twice more after its creation (``n`` set to ``i + 1``, then
``"done": True``), with ``--members`` fresh members added (tenant-log records signed by the
admin key) between batches; or, with ``--update``, sets ``{T: True}`` in that one document.
Prints each created document id on its own line, then ``done``.
"""

from __future__ import annotations

import argparse
import sys

from mindoo_p2p.identity import UserIdentity
from mindoo_p2p.node import Node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home")
    parser.add_argument("password")
    parser.add_argument("tenant")
    parser.add_argument("database")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--documents", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--members", type=int, default=0)
    parser.add_argument("--update")
    args = parser.parse_args()

    out = sys.stdout
    with Node.open(args.home, args.password) as node:
        tenant = node.tenant(args.tenant)
        db = tenant.create_db(args.database)
        out.write("ready\n")
        out.flush()
        sys.stdin.readline()
        if args.update:
            db.update(args.update, {args.tag: True})
        created: list[str] = []
        members_left = args.members
        while len(created) < args.documents:
            round_ids: list[str] = []
            with db.batch():
                for _ in range(min(args.batch, args.documents - len(created))):
                    n = len(created) + len(round_ids)
                    doc_id = db.create_document({"tag": args.tag, "n": n})
                    db.update(doc_id, {"n": n + 1})
                    with db.change(doc_id) as doc:
                        doc["done"] = True
                    round_ids.append(doc_id)
            created += round_ids
            out.write("".join(doc_id + "\n" for doc_id in round_ids))
            out.flush()
            if members_left:
                tenant.add_member(UserIdentity.generate(f"{args.tag}-{members_left}").public())
                members_left -= 1
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    main()
