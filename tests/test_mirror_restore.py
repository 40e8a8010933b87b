"""A wiped device comes back from its recovery kit and a keyless mirror, and reads everything.

The member writes under the default key and under a named key the admin gave it; only the
mirror keeps a copy. The member's device is wiped; a new device restored from the recovery kit,
connected only to the mirror, gets every entry back, reads every document, and writes again
(once its first session with the mirror has lifted the restore mark: restore_guard).
The mirror's disk never held a byte of the plaintext.
"""

from __future__ import annotations

import trio

from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node
from mindoo_p2p.recovery import export_recovery_kit
from mindoo_p2p.testing import Cluster

ADMIN, MEMBER, MIRROR = 0, 1, 2
KIT_PASSWORD = "recovery kit password for the test"
DEFAULT_MARKER = "RESTORE-DEFAULT-KEY-PLAINTEXT-5e1f"
NAMED_MARKER = "RESTORE-NAMED-KEY-PLAINTEXT-a07c"
NEW_MARKER = "RESTORE-WRITTEN-AFTER-RESTORE-92bd"
MARKERS = [m.encode() for m in (DEFAULT_MARKER, NAMED_MARKER, NEW_MARKER)]


async def test_wiped_member_restores_from_kit_through_a_mirror(cluster: Cluster) -> None:
    with trio.fail_after(90):
        await cluster.start(3, names=["admin", "laptop", "mirror"])
        cluster.create_tenant("acme", members=[MEMBER], mirrors=[MIRROR])
        admin = cluster.nodes[ADMIN].require()
        member = cluster.nodes[MEMBER].require()
        admin.tenant("acme").create_key("confidential")
        member.import_key(
            admin.export_key(admin.tenant("acme"), "confidential", to=member.public_identity())
        )
        await cluster.wipe(ADMIN)  # the admin is gone too: the mirror is the only copy left

        notes = cluster.db(MEMBER, "acme", "notes")
        plain = notes.create_document({"text": DEFAULT_MARKER, "n": 1})
        secret = notes.create_document({"text": NAMED_MARKER, "n": 2}, key="confidential")
        with notes.change(plain) as doc:
            doc["tags"] = ["edited", DEFAULT_MARKER]
        hr = cluster.db(MEMBER, "acme", "hr")
        salary = hr.create_document({"salary": NAMED_MARKER, "n": 3}, key="confidential")
        await cluster.connect(MEMBER, MIRROR)
        await cluster.wait_converged(timeout=30)
        entries_before = cluster.entry_sets([MEMBER])[MEMBER]
        contents = {doc_id: notes.get(doc_id) for doc_id in (plain, secret)}
        salary_content = hr.get(salary)
        kit = export_recovery_kit(member, KIT_PASSWORD, KdfProfile.TESTING)
        old_peer_id = cluster.nodes[MEMBER].peer_id

        await cluster.wipe(MEMBER)
        assert not cluster.nodes[MEMBER].home.exists()

        home = cluster.root / "laptop-restored"
        Node.restore(home, kit, KIT_PASSWORD, cluster.password, kdf=KdfProfile.TESTING).close()
        restored = (await cluster.add_home(home)).index
        assert cluster.nodes[restored].peer_id != old_peer_id
        restored_node = cluster.nodes[restored].require()
        acme = restored_node.tenant("acme")
        assert restored_node.is_restored(acme)  # no writing before the first sync
        await cluster.connect(restored, MIRROR)
        await cluster.wait_converged(timeout=30, among=[restored, MIRROR])
        while restored_node.is_restored(acme):  # the daemon lifts it as the session ends
            await trio.sleep(0.05)

        # Every entry is back, and every document reads as it did, under both keys.
        assert cluster.entry_sets([restored])[restored] == entries_before
        restored_notes = cluster.db(restored, "acme", "notes")
        assert sorted(restored_notes.list_documents()) == sorted(contents)
        for doc_id, content in contents.items():
            assert restored_notes.get(doc_id) == content
        assert cluster.db(restored, "acme", "hr").get(salary) == salary_content

        # It writes again as the same user, and the mirror accepts it.
        with restored_notes.change(secret) as doc:
            doc["after_restore"] = NEW_MARKER
        new_doc = restored_notes.create_document({"text": NEW_MARKER}, key="confidential")
        await cluster.wait_converged(timeout=30, among=[restored, MIRROR])
        mirror = cluster.nodes[MIRROR].require()
        assert restored_node.store.count() == mirror.store.count() == _count(entries_before) + 2
        assert new_doc in cluster.db(MIRROR, "acme", "notes").list_documents()
        assert restored_notes.get(secret)["after_restore"] == NEW_MARKER
        assert mirror.fsck().ok

        # The mirror never held the plaintext: not in its store, not in any file of its home.
        await cluster.kill(MIRROR)
        assert cluster.files_containing(MIRROR, MARKERS) == []
        # The scan does read the store: the entry ids (in the clear) are found.
        some_id = next(iter(entries_before[("acme", "notes")]))
        assert cluster.files_containing(MIRROR, [some_id])


def _count(entry_sets: dict[tuple[str, str], set[bytes]]) -> int:
    return sum(len(ids) for ids in entry_sets.values())
