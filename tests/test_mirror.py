"""Store and forward through a keyless mirror: it serves the ciphertext it cannot read."""

from __future__ import annotations

import pytest

from mindoo_p2p import MissingKeyError
from mindoo_p2p.testing import Cluster

LAPTOP, PHONE, MIRROR = 0, 1, 2
MARKER = "MIRROR-MUST-NOT-SEE-3c9d1f"


async def test_laptop_and_phone_never_online_together_sync_through_a_mirror(
    cluster: Cluster,
) -> None:
    await cluster.start(3, names=["laptop", "phone", "mirror"])
    cluster.create_tenant("acme", members=[PHONE], mirrors=[MIRROR])
    await cluster.connect(LAPTOP, MIRROR)
    await cluster.connect(PHONE, MIRROR)
    await cluster.kill(PHONE)

    notes = cluster.db(LAPTOP, "acme", "notes")
    doc = notes.create_document({"text": MARKER, "from": "laptop"})
    await cluster.wait_converged(timeout=30)  # laptop and mirror
    await cluster.kill(LAPTOP)

    await cluster.restart(PHONE)
    await cluster.wait_converged(timeout=30)  # phone and mirror
    phone_notes = cluster.db(PHONE, "acme", "notes")
    assert phone_notes.get(doc) == {"text": MARKER, "from": "laptop"}
    with phone_notes.change(doc) as d:
        d["reply"] = "from phone"
    await cluster.wait_converged(timeout=30)
    await cluster.kill(PHONE)

    await cluster.restart(LAPTOP)
    await cluster.wait_converged(timeout=30)  # laptop and mirror
    assert cluster.db(LAPTOP, "acme", "notes").get(doc)["reply"] == "from phone"

    # The mirror holds and verified everything but can read nothing, nor write.
    mirror_notes = cluster.db(MIRROR, "acme", "notes")
    assert mirror_notes.list_documents() == [doc]
    with pytest.raises(MissingKeyError):
        mirror_notes.get(doc)
    with pytest.raises(MissingKeyError):
        mirror_notes.create_document({"x": 1})
    mirror_node = cluster.nodes[MIRROR].require()
    assert mirror_node.fsck().ok
    await cluster.kill(MIRROR)
    for path in cluster.nodes[MIRROR].home.rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
