"""`mindoo node run` as real daemon processes: forwarding, status, peers, refusal, shutdown.

Homes are prepared in-process (`mindoo`). Commands for a running daemon go through the console
script (`run_mindoo`), a real client process forwarding to a real daemon process, where the
client being a process is what is checked (its argv, working directory, environment, exit
code); the others forward from this process: the same forwarding code (`cli.main.run` with an
explicit working directory and environment) without an interpreter start-up each.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import PASSWORD, cli_env, init_home, mindoo, mindoo_command, run_mindoo
from helpers import daemon_process, wait_for

from mindoo_p2p.control import daemon_running

Daemon = tuple[subprocess.Popen[str], dict[str, Any]]
DAEMON_CWD = "daemon-cwd"
"""The daemons' working directory under tmp_path (the clients run in tmp_path itself)."""


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    """Start ``mindoo node run`` processes on homes; all stop after the test. Their working
    directory is ``tmp_path / DAEMON_CWD``, never the clients' (``home.parent``), so a relative
    path resolved by the daemon instead of the client lands somewhere a test can tell."""
    cwd = tmp_path / DAEMON_CWD
    cwd.mkdir(exist_ok=True)
    with ExitStack() as stack:
        yield lambda home: stack.enter_context(daemon_process(home, cwd, cli_env(PASSWORD)))


@pytest.mark.slow
def test_daemons_sync_and_serve_the_cli(
    tmp_path: Path, start_daemon: Callable[[Path], Daemon]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    init_home(a, "alice")
    init_home(b, "bob")
    mindoo(a, "tenant", "create", "acme").ok()
    mindoo(b, "whoami", "--out", str(tmp_path / "bob.json")).ok()
    invite = str(tmp_path / "bob.invite")
    mindoo(a, "tenant", "invite", "acme", "--to", "bob.json", "--out", invite).ok()
    mindoo(b, "tenant", "join", invite).ok()

    proc_a, info_a = start_daemon(a)
    proc_b, _info_b = start_daemon(b)
    assert all(addr.endswith("/p2p/" + info_a["peer_id"]) for addr in info_a["listen_addrs"])

    # A second daemon on the same home is refused with one clear line.
    again = subprocess.run(
        [*mindoo_command(), "--home", str(a), "node", "run", "--listen", "/ip4/127.0.0.1/tcp/0"],
        env=cli_env(PASSWORD),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "already running" in again.stderr
    assert again.stderr.count("\n") == 1

    # With the daemons running, commands go through them: no password needed.
    added = run_mindoo(b, "peers", "add", info_a["listen_addrs"][0], password=None)
    assert added.code == 0, added
    assert mindoo(a, "db", "create", "acme", "contacts", password=None).code == 0
    assert mindoo(a, "db", "create", "acme", "hr", password=None).code == 0
    created = run_mindoo(a, "doc", "create", "acme", "contacts", '{"name": "Ada"}', password=None)
    assert created.code == 0, created
    doc_id = created.stdout.strip()

    def bob_has_it() -> bool:
        got = mindoo(b, "doc", "get", "acme", "contacts", doc_id, password=None)
        return got.code == 0 and json.loads(got.stdout) == {"name": "Ada"}

    wait_for(bob_has_it)
    status = run_mindoo(a, "status", "--json", password=None)  # --json after the command
    assert status.code == 0, status
    daemon = json.loads(status.stdout)
    assert daemon["daemon_running"] and daemon["peer_id"] == info_a["peer_id"]
    assert daemon["listen_addrs"] == info_a["listen_addrs"]
    (peer,) = daemon["peers"]
    assert peer["connected"] and peer["last_sync_ms"]
    (contacts,) = [d for d in daemon["sync"] if d["database"] == "contacts"]
    assert contacts["entries"] == 1 and contacts["caught_up"]
    listed = mindoo(b, "peers", "list", json_output=True, password=None)
    assert json.loads(listed.stdout)[0]["peer_id"] == info_a["peer_id"]

    # Named keys through the daemons; the key file password travels with the command.
    assert mindoo(a, "key", "create", "acme", "confidential", password=None).code == 0
    secret_doc = mindoo(
        a, "doc", "create", "acme", "hr", '{"salary": 1}', "--key", "confidential", password=None
    ).stdout.strip()
    key_env = {"MINDOO_KEY_PASSWORD": "key file password"}
    for home, args in (
        (a, ["key", "export", "acme", "confidential", "--password", "--out", "conf.key"]),
        (b, ["key", "import", "conf.key"]),
    ):
        done = mindoo(home, *args, password=None, cwd=tmp_path, env=key_env)
        assert done.code == 0, done.stderr

    def bob_reads_secret() -> bool:
        got = mindoo(b, "doc", "get", "acme", "hr", secret_doc, password=None)
        return got.code == 0 and json.loads(got.stdout) == {"salary": 1}

    wait_for(bob_reads_secret)

    # Relative paths are the client's, not the daemon's.
    exported = run_mindoo(a, "export", "acme", "--out", "acme.bundle", password=None)
    assert exported.code == 0, exported
    assert (a.parent / "acme.bundle").exists()
    assert not (a.parent / DAEMON_CWD / "acme.bundle").exists()

    for proc in (proc_a, proc_b):
        proc.send_signal(signal.SIGTERM)
    for proc in (proc_a, proc_b):
        assert proc.wait(timeout=20) == 0
    assert not (a / "control.sock").exists()
    # Afterwards the CLI works directly on the home again; the peer id is stable.
    assert mindoo(b, "doc", "get", "acme", "contacts", doc_id).code == 0
    offline = json.loads(mindoo(a, "status", json_output=True).stdout)
    assert not offline["daemon_running"] and offline["peer_id"] == info_a["peer_id"]


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "n"
    init_home(home)
    result = mindoo(home, "node", "run", "--listen", "not-a-multiaddr")
    assert result.code == 2 and result.stderr.count("\n") == 1, result
    assert "--listen" in result.stderr


@pytest.mark.slow
def test_watch_streams_arriving_entries(
    tmp_path: Path, start_daemon: Callable[[Path], Daemon]
) -> None:
    home = tmp_path / "w"
    init_home(home)
    mindoo(home, "tenant", "create", "acme").ok()
    start_daemon(home)
    watcher = subprocess.Popen(
        [*mindoo_command(), "--home", str(home), "watch", "--tenant", "acme"],
        env=cli_env(None),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it subscribe
        assert run_mindoo(home, "db", "create", "acme", "notes", password=None).code == 0
        created = run_mindoo(home, "doc", "create", "acme", "notes", '{"a": 1}', password=None)
        assert created.code == 0, created
        assert watcher.stdout is not None
        event = json.loads(watcher.stdout.readline())
        assert event["type"] == "entry" and event["origin"] == "local"
        assert event["document_id"] == created.stdout.strip()
        assert event["tenant_name"] == "acme" and event["database"] == "notes"
    finally:
        watcher.kill()
        watcher.wait(timeout=10)
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
def test_node_stop_stops_the_daemon_and_says_so(
    tmp_path: Path, start_daemon: Callable[[Path], Daemon]
) -> None:
    """Issue 10: `mindoo node stop`. The daemon stops cleanly (exit 0), its control socket is
    gone, and a second stop says there is no daemon (one line, exit 1)."""
    home = tmp_path / "a"
    init_home(home, "alice")
    proc, _info = start_daemon(home)
    stopped = run_mindoo(home, "node", "stop", "--json", password=None)
    assert stopped.code == 0, stopped
    assert json.loads(stopped.stdout) == {"stopped": True, "home": str(home)}
    assert proc.wait(timeout=30) == 0
    assert not daemon_running(home)
    again = run_mindoo(home, "node", "stop", password=None)
    assert again.code == 1 and "no daemon is running" in again.stderr
    assert again.stderr.count("\n") == 1
