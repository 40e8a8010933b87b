"""Two daemons with mDNS on find each other and sync, with no address given.

Runs in a private network namespace holding only loopback (see test_mdns.py): multicast never
leaves it. Skipped without root or unshare/ip.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import trio
from test_mdns import _namespace_unavailable

CHILD_TIMEOUT_S = 60


async def _child() -> dict[str, object]:
    from mindoo_p2p.config import NodeConfig
    from mindoo_p2p.crypto.keystore import KdfProfile
    from mindoo_p2p.daemon import NodeDaemon
    from mindoo_p2p.node import Node

    config = NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), mdns=True, mdns_interfaces=("127.0.0.1",))
    with tempfile.TemporaryDirectory() as tmp:
        alice = Node.init(Path(tmp) / "a", "a test password", name="alice", kdf=KdfProfile.TESTING)
        bob = Node.init(Path(tmp) / "b", "a test password", name="bob", kdf=KdfProfile.TESTING)
        tenant = alice.create_tenant("acme")
        bob.join(alice.invite(tenant, bob.public_identity()))
        doc = alice.tenant("acme").create_db("lan").create_document({"found": "by mDNS"})
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for node in (alice, bob):
                await nursery.start(NodeDaemon(node, config, control=False).run)
            replica = bob.tenant("acme")
            with trio.fail_after(CHILD_TIMEOUT_S - 15):
                # The database exists on bob once its first entry arrives.
                while not (replica.has_database("lan") and replica.open_db("lan").exists(doc)):
                    await trio.sleep(0.05)
            bob_db = replica.open_db("lan")
            result = {"content": bob_db.get(doc), "seconds": time.monotonic() - started}
            nursery.cancel_scope.cancel()
        alice.close()
        bob.close()
    return result


@pytest.mark.slow
@pytest.mark.timeout(CHILD_TIMEOUT_S + 30)
def test_daemons_discover_each_other_with_mdns_in_a_private_namespace() -> None:
    reason = _namespace_unavailable()
    if reason is not None:
        pytest.skip(f"no isolated network for mDNS: {reason}")
    script = 'ip link set lo up && ip link set lo multicast on && exec "$0" "$1" child'
    child = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, str(Path(__file__))],
        capture_output=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    stderr = child.stderr.decode(errors="replace")
    assert child.returncode == 0, stderr
    result = json.loads(child.stdout.decode().strip().splitlines()[-1])
    assert result["content"] == {"found": "by mDNS"}


if __name__ == "__main__" and sys.argv[1:] == ["child"]:
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        print(f"not isolated: {interfaces}", file=sys.stderr)
        sys.exit(3)
    print(json.dumps(trio.run(_child)))
