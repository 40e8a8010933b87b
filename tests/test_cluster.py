"""Clusters on loopback: topologies, partitions, restarts, convergence."""

from __future__ import annotations

import pytest
import trio

from mindoo_p2p.testing import Cluster, ConvergenceError


@pytest.mark.slow
async def test_eight_nodes_in_a_random_topology_converge(cluster: Cluster) -> None:
    await cluster.start(8)
    cluster.create_tenant("acme")
    await cluster.connect_topology("random", seed=7)
    docs = {}
    for i in range(8):
        docs[i] = cluster.db(i, "acme", "contacts").create_document({"by": i})
    await cluster.wait_converged(timeout=60)
    for i in range(8):
        for j, doc in docs.items():
            assert cluster.db(i, "acme", "contacts").get(doc) == {"by": j}


async def test_partitioned_edits_agree_after_healing(cluster: Cluster) -> None:
    await cluster.start(3)
    cluster.create_tenant("acme")
    await cluster.connect_topology("full")
    doc = cluster.db(0, "acme", "notes").create_document({"title": "plan", "items": []})
    await cluster.wait_converged(timeout=30)
    await cluster.partition([0], [1], [2])
    for i in range(3):
        with cluster.db(i, "acme", "notes").change(doc) as d:
            d["items"].append(f"from {i}")
            d[f"field{i}"] = i
    await trio.sleep(0.5)
    assert cluster.divergence()  # really partitioned: nobody has the others' edits
    await cluster.heal()
    await cluster.wait_converged(timeout=30)
    contents = [cluster.db(i, "acme", "notes").get(doc) for i in range(3)]
    assert contents[0] == contents[1] == contents[2]
    assert sorted(contents[0]["items"]) == ["from 0", "from 1", "from 2"]


async def test_a_restarted_node_resumes(cluster: Cluster) -> None:
    await cluster.start(3)
    cluster.create_tenant("acme")
    await cluster.connect_topology("line")
    await cluster.wait_converged(timeout=30)
    await cluster.kill(2)
    doc = cluster.db(0, "acme", "contacts").create_document({"while": "node2 was down"})
    await cluster.wait_converged(timeout=30)  # the two running nodes
    await cluster.restart(2)
    await cluster.wait_converged(timeout=30)
    assert cluster.db(2, "acme", "contacts").get(doc) == {"while": "node2 was down"}


async def test_wait_converged_reports_who_misses_what(cluster: Cluster) -> None:
    await cluster.start(2)
    cluster.create_tenant("acme")
    cluster.db(0, "acme", "contacts").create_document({"lonely": True})
    try:
        await cluster.wait_converged(timeout=0.5)
    except ConvergenceError as exc:
        assert "node1 misses 1 of 1 entries of acme/contacts" in str(exc)
    else:
        raise AssertionError("two unconnected nodes cannot have converged")


async def test_wait_converged_scans_only_when_the_fingerprints_agree(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cluster.start(2)
    cluster.create_tenant("acme")
    cluster.db(0, "acme", "contacts").create_document({"lonely": True})
    prints = cluster.fingerprints()
    assert prints[0] != prints[1]
    scans: list[int] = []
    scan = cluster.divergence

    def counted(among: object = None) -> list[str]:
        scans.append(1)
        return scan(among)  # type: ignore[arg-type]

    monkeypatch.setattr(cluster, "divergence", counted)
    with pytest.raises(ConvergenceError, match="node1 misses 1 of 1 entries"):
        await cluster.wait_converged(timeout=0.5)
    assert len(scans) == 1  # the final report only: no full scan while they differ
    await cluster.connect(0, 1)
    await cluster.wait_converged(timeout=30)
    prints = cluster.fingerprints()
    assert prints[0] == prints[1] != {}


async def test_entries_travel_by_gossip_between_admitted_peers(cluster: Cluster) -> None:
    await cluster.start(4)
    cluster.create_tenant("acme", members=[1, 2])  # node3 shares no tenant
    cluster.nodes[3].require().create_tenant("other")
    await cluster.connect_topology("line")
    cluster.db(0, "acme", "notes").create_document({"warm": "up"})
    await cluster.wait_converged(timeout=30, among=[0, 1, 2])
    daemons = [member.daemon for member in cluster.nodes]
    assert all(d is not None and d.gossip is not None for d in daemons)
    before = [d.gossip.stats.delivered_entries for d in daemons]  # type: ignore[union-attr]
    doc = cluster.db(0, "acme", "notes").create_document({"by": "gossip"})
    await cluster.wait_converged(timeout=30, among=[0, 1, 2])
    after = [d.gossip.stats.delivered_entries for d in daemons]  # type: ignore[union-attr]
    assert after[1] > before[1] and after[2] > before[2]  # arrived through the mesh
    assert after[3] == before[3] == 0  # the outsider gets nothing, not even headers
    assert cluster.db(2, "acme", "notes").get(doc) == {"by": "gossip"}
    assert (
        not cluster.nodes[3]
        .require()
        .store.has(bytes.fromhex(cluster.db(0, "acme", "notes").history(doc)[0].entry_id))
    )
