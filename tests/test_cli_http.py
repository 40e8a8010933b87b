"""The CLI around the HTTP API and the daemon's life: JSON errors under --json, log levels,
``mindoo http url``, ``mindoo watch`` showing peer events and failing when the daemon goes."""

from __future__ import annotations

import io
import json
import logging
import re
import select
import subprocess
from pathlib import Path

import click
import httpx
import pytest
from cli_helpers import PASSWORD, assert_one_line_error, cli_env, init_home, mindoo, mindoo_command
from helpers import daemon_process

from cli.context import Invocation
from cli.logs import parse_levels
from cli.main import run


def test_errors_under_json_are_one_json_line_with_the_same_exit_codes(tmp_path: Path) -> None:
    home = tmp_path / "n"
    init_home(home)
    cases = [
        (("tenant", "members", "nope"), 1, "error"),
        (("node", "run", "--listen", "not-a-multiaddr"), 2, "usage"),
        (("no-such-command",), 2, "usage"),
        (("http", "url"), 1, "error"),  # no daemon runs
        (("node", "run", "--log-level", "loud"), 2, "usage"),
        (("node", "run", "--http-port", "70000"), 2, "usage"),
    ]
    for args, code, kind in cases:
        plain = mindoo(home, *args)
        assert_one_line_error(plain, code)
        as_json = mindoo(home, *args, json_output=True)
        assert_one_line_error(as_json, code)
        error = json.loads(as_json.stderr)
        assert error["exit_code"] == code and error["error"]["type"] == kind
        # The same message as without --json, without the "error: " prefix.
        assert plain.stderr.strip() == "error: " + error["error"]["message"]


def test_log_levels_keep_libp2p_at_warning_unless_asked() -> None:
    levels = parse_levels([])
    assert levels[""] == logging.INFO and levels["libp2p"] == logging.WARNING
    levels = parse_levels(["debug", "libp2p=info"])
    assert levels[""] == logging.DEBUG and levels["libp2p"] == logging.INFO
    with pytest.raises(click.BadParameter, match="loud"):
        parse_levels(["loud"])


@pytest.mark.slow
def test_http_url_logs_and_watch_across_the_daemons_life(tmp_path: Path) -> None:
    home = tmp_path / "w"
    init_home(home)
    log_file = tmp_path / "daemon.log"
    with daemon_process(home, tmp_path, cli_env(PASSWORD), ("--log-file", str(log_file))) as (
        proc,
        info,
    ):
        assert info["http_url"].startswith("http://127.0.0.1:")
        watcher = subprocess.Popen(
            [*mindoo_command(), "--home", str(home), "watch"],
            env=cli_env(None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watcher.stdout is not None
            for attempt in range(40):  # write until the watcher (once subscribed) shows it
                mindoo(home, "tenant", "create", f"t{attempt}", password=None).ok()
                if select.select([watcher.stdout], [], [], 0.5)[0]:
                    break
            first = json.loads(watcher.stdout.readline())
            assert first["type"] == "entry" and first["origin"] == "local"
            url = mindoo(home, "http", "url", json_output=True, password=None).ok().json()
            assert url["base_url"] == info["http_url"]
            with httpx.Client(timeout=20) as browser:
                page = browser.get(url["login_url"], follow_redirects=True)
                assert page.status_code == 200
                assert (
                    browser.get(f"{url['base_url']}/api/status").json()["peer_id"]
                    == info["peer_id"]
                )
            stopped = mindoo(home, "node", "stop", password=None)
            assert stopped.code == 0, stopped
            out, err = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(timeout=10)
        assert watcher.returncode == 1
        assert err.count("\n") == 1 and "went away" in err, err
        assert out == "" or all(json.loads(line)["type"] for line in out.splitlines())
        assert proc.wait(timeout=30) == 0
    lines = log_file.read_text().splitlines()
    assert log_file.stat().st_mode & 0o777 == 0o600
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (INFO|WARNING|DEBUG|ERROR) ")
    assert lines and all(stamp.match(line) for line in lines), lines[:5]
    assert any("HTTP API" in line for line in lines)
    assert not any(" libp2p" in line and " INFO " in line for line in lines)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_commands_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    a = tmp_path / "a"
    init_home(a)
    mindoo(a, "tenant", "create", "acme").ok()
    mindoo(a, "db", "create", "acme", "notes").ok()
    for i in range(3):
        mindoo(a, "doc", "create", "acme", "notes", json.dumps({"i": i})).ok()
    bundle = str(tmp_path / "acme.bundle")
    exported = mindoo(a, "export", "acme", "--out", bundle).ok()  # no terminal: no bar
    assert exported.stdout.startswith("exported ")

    out, err = io.StringIO(), _Terminal()
    inv = Invocation(tmp_path, {"MINDOO_PASSWORD": PASSWORD}, out, err, interactive=True)
    assert run(["--home", str(a), "import", bundle], inv) == 0, err.getvalue()
    assert "importing" in err.getvalue()  # the bar, on the terminal's stream
    assert out.getvalue().startswith("imported 0 entries")  # the output scripts read
    again = mindoo(a, "import", bundle).ok()  # no terminal: no bar, same output
    assert again.stdout == out.getvalue()
