"""Real daemon processes: a line of three converges, and a SIGKILLed node resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindoo_p2p.testing import ProcessCluster


@pytest.mark.slow
def test_daemon_processes_converge_and_survive_sigkill(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path) as cluster:
        cluster.prepare(3, tenant="acme")
        cluster.start_all()
        cluster.connect_topology("line")
        cluster.cli(0, "db", "create", "acme", "notes")
        first = cluster.cli(0, "doc", "create", "acme", "notes", '{"from": 0}').strip()
        cluster.wait_converged(timeout=60)
        assert json.loads(cluster.cli(2, "doc", "get", "acme", "notes", first)) == {"from": 0}

        cluster.kill(1)  # the middle node dies without a clean shutdown
        second = cluster.cli(2, "doc", "create", "acme", "notes", '{"from": 2}').strip()
        cluster.restart(1, redial=False)  # it finds its peers again from its address book
        cluster.wait_converged(timeout=60)
        assert json.loads(cluster.cli(0, "doc", "get", "acme", "notes", second)) == {"from": 2}
        status = cluster.status(1)
        assert {p["peer_id"] for p in status["peers"] if p["connected"]} == {
            cluster.nodes[0].peer_id,
            cluster.nodes[2].peer_id,
        }
        assert cluster.stop(0) == 0  # SIGTERM: clean exit
