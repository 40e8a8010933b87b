"""The CLI's surroundings are explicit: global options anywhere on the command line, and
commands the daemon runs for clients (`run_forwarded`) resolve paths against the client's
directory and take passwords from the client's environment, several at once in threads,
without touching the process's working directory, environment or standard streams."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import PASSWORD, CliResult, assert_one_line_error

from cli.main import FORWARDED_ENV, DaemonHook, Invocation, run, run_forwarded
from mindoo_p2p.config import NodeConfig
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.daemon import NodeDaemon
from mindoo_p2p.node import Node

pytestmark = pytest.mark.timeout(60)

MakeNode = Callable[[str], Node]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node (fast test KDF) with tenant ``acme`` and database ``contacts`` holding one
    document."""
    path = tmp_path_factory.mktemp("invocation") / "node"
    with Node.init(path, PASSWORD, name="alice", kdf=KdfProfile.TESTING) as node:
        node.create_tenant("acme").create_db("contacts").create_document({"n": 1})
    return path


# -- global options anywhere ---------------------------------------------------------------------
def run_argv(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(argv, Invocation(cwd, {"MINDOO_PASSWORD": PASSWORD}, out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["--home", "HOME", "--json", "doc", "list", "acme", "contacts"],
        ["--home", "HOME", "doc", "list", "acme", "contacts", "--json"],
        ["doc", "list", "--home", "HOME", "acme", "contacts", "--json"],
        ["doc", "--json", "list", "acme", "contacts", "--home", "HOME"],
        ["--json", "doc", "list", "acme", "contacts", "--home", "HOME", "--json"],
        ["--home", "HOME", "doc", "list", "--home", "HOME", "--json", "acme", "contacts"],
    ],
)
def test_global_options_before_or_after_the_command(home: Path, argv: list[str]) -> None:
    code, out, err = run_argv([str(home) if a == "HOME" else a for a in argv], home.parent)
    assert (code, err) == (0, "")
    (doc_id,) = json.loads(out)
    assert len(doc_id) == 32


def test_status_json_after_the_command(home: Path) -> None:
    for argv in (["--home", str(home), "status", "--json"], ["status", "--home", "node", "--json"]):
        code, out, err = run_argv(argv, home.parent)  # "node": relative to the directory
        assert (code, err) == (0, ""), err
        status = json.loads(out)
        assert status["home"] == str(home) and status["daemon_running"] is False
        assert status["tenants"][0]["databases"][0]["documents"] == 1


def test_password_file_after_the_command(home: Path, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    out, err = io.StringIO(), io.StringIO()
    argv = ["db", "list", "acme", "--home", str(home), "--password-file", "pw"]
    assert run(argv, Invocation(tmp_path, {}, out, err)) == 0, err.getvalue()
    assert out.getvalue() == "contacts\n"


def test_a_global_option_given_twice_must_agree(home: Path) -> None:
    for argv in (
        ["--home", str(home), "status", "--home", str(home / "other")],
        ["status", "--home", str(home), "--home", str(home / "other")],
    ):
        code, out, err = run_argv(argv, home.parent)
        assert_one_line_error(CliResult(code, out, err), 2, "--home", "given twice")
        assert out == ""


def test_help_goes_to_the_invocations_output(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_argv(["doc", "list", "--help"], home.parent)
    assert code == 0 and err == ""
    assert out.startswith("Usage: mindoo doc list [OPTIONS] TENANT DB")
    for option in ("--home", "--json", "--password-file"):
        assert option in out
    assert capsys.readouterr() == ("", "")


def test_relative_paths_resolve_against_the_invocation_directory(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the process's directory: the bundle lands where the invocation says, is shown as
    typed, and nothing is printed on the process's own streams."""
    assert Path.cwd() != tmp_path
    code, out, err = run_argv(
        ["--home", str(home), "export", "acme", "--out", "a.bundle"], tmp_path
    )
    assert (code, err) == (0, "")
    assert out == "exported 4 entries to a.bundle\n"
    assert (tmp_path / "a.bundle").is_file() and not (Path.cwd() / "a.bundle").exists()
    assert capsys.readouterr() == ("", "")


def test_the_home_comes_from_the_invocation_environment(home: Path, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = {"MINDOO_PASSWORD": PASSWORD, "MINDOO_HOME": "node"}
    assert run(["db", "list", "acme"], Invocation(home.parent, env, out, err)) == 0, err
    assert out.getvalue() == "contacts\n"


def test_an_invocation_needs_an_absolute_directory() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Invocation(Path("relative"), {}, io.StringIO(), io.StringIO())


# -- forwarded commands --------------------------------------------------------------------------
@pytest.fixture
def hook(make_node: MakeNode) -> Iterator[DaemonHook]:
    """A daemon's view of an unlocked node (tenant ``acme`` with keys ``k1`` and ``k2``); the
    daemon is not started: forwarded commands only need its node and its presence."""
    node = make_node("daemon")
    tenant = node.create_tenant("acme")
    tenant.create_key("k1")
    tenant.create_key("k2")
    yield DaemonHook(node, NodeDaemon(node, NodeConfig(), control=False))


class Blocked:
    """A command run by `run_forwarded` in a thread, parked reading a FIFO until released."""

    def __init__(self, fifo: Path, argv: list[str], env: dict[str, str], hook: DaemonHook):
        os.mkfifo(fifo)
        self.fifo = fifo
        self.reply: dict[str, Any] | None = None
        self._thread = threading.Thread(
            target=self._run, args=(argv, str(fifo.parent), env, hook), daemon=True
        )
        self._thread.start()
        self._writer = self._wait_for_reader()

    def _run(self, argv: list[str], cwd: str, env: dict[str, str], hook: DaemonHook) -> None:
        self.reply = run_forwarded(argv, cwd, env, hook)

    def _wait_for_reader(self) -> int:
        """Open the FIFO's write end once the command has opened it to read (it is then
        parked in the middle of the command)."""
        deadline = time.monotonic() + 20
        while True:
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                assert self._thread.is_alive(), f"the command ended early: {self.reply}"
                assert time.monotonic() < deadline, "the command never opened its input"
                time.sleep(0.01)

    def release(self, data: bytes) -> dict[str, Any]:
        """Feed the command its input and wait for its reply."""
        os.set_blocking(self._writer, True)
        os.write(self._writer, data)
        os.close(self._writer)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive() and self.reply is not None
        return self.reply


def test_forwarded_commands_run_concurrently_with_their_own_directory_and_passwords(
    hook: DaemonHook, make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three commands parked mid-way at once, released in start order: each still resolves
    its relative paths against its own client's directory and reads its own client's key
    file password (with process-wide chdir and environment edits, the first to finish would
    restore them under the others)."""
    monkeypatch.setenv("MINDOO_KEY_PASSWORD", "the daemon's own, never used")
    node, tenant = hook.node, hook.node.tenant("acme")
    key_files = {
        name: node.export_key(tenant, name, password=f"{name} password", kdf=KdfProfile.TESTING)
        for name in ("k1", "k2")
    }
    bob = make_node("bob").public_identity()
    dirs = {name: tmp_path / name for name in ("a", "b", "c")}
    for directory in dirs.values():
        directory.mkdir()
    cwd_before = Path.cwd()

    a = Blocked(
        dirs["a"] / "k1.key",
        ["key", "import", "k1.key"],
        {"MINDOO_KEY_PASSWORD": "k1 password"},
        hook,
    )
    b = Blocked(
        dirs["b"] / "bob.json",
        ["tenant", "invite", "acme", "--to", "bob.json", "--out", "bob.invite", "--json"],
        {},
        hook,
    )
    c = Blocked(
        dirs["c"] / "k2.key",
        ["key", "import", "k2.key"],
        {"MINDOO_KEY_PASSWORD": "k2 password"},
        hook,
    )

    first = a.release(key_files["k1"])
    assert first["exit_code"] == 0, first
    assert first["stdout"] == "imported key k1 of tenant acme (versions: none new)\n"
    second = b.release(bob.to_json().encode())
    assert second["exit_code"] == 0, second
    assert json.loads(second["stdout"])["invite"] == "bob.invite"  # shown as typed
    assert (dirs["b"] / "bob.invite").is_file()
    assert [p.name for p in tmp_path.rglob("*.invite")] == ["bob.invite"]
    third = c.release(key_files["k2"])
    assert third["exit_code"] == 0, third
    assert third["stdout"] == "imported key k2 of tenant acme (versions: none new)\n"
    assert Path.cwd() == cwd_before
    assert os.environ["MINDOO_KEY_PASSWORD"] == "the daemon's own, never used"


def test_a_forwarded_command_never_reads_the_daemons_environment(
    hook: DaemonHook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINDOO_KEY_PASSWORD", "the daemon's own")
    monkeypatch.setenv("MINDOO_RECOVERY_PASSWORD", "the daemon's own kit password")
    export = ["key", "export", "acme", "k1", "--password", "--out", "k1.key"]
    reply = run_forwarded(export, str(tmp_path), {}, hook)
    assert_one_line_error(
        CliResult(reply["exit_code"], reply["stdout"], reply["stderr"]),
        1,
        "set MINDOO_KEY_PASSWORD in your shell",
    )
    assert not (tmp_path / "k1.key").exists()
    kit = ["recovery", "export", "--out", "a.kit"]
    reply = run_forwarded(kit, str(tmp_path), {}, hook)
    assert reply["exit_code"] == 1 and "set MINDOO_RECOVERY_PASSWORD" in reply["stderr"]
    # Only the forwarded variables cross over: a client cannot point the daemon elsewhere.
    assert FORWARDED_ENV == ("MINDOO_KEY_PASSWORD", "MINDOO_RECOVERY_PASSWORD")
    status = ["status", "--json"]
    reply = run_forwarded(status, str(tmp_path), {"MINDOO_HOME": str(tmp_path / "x")}, hook)
    assert reply["exit_code"] == 0, reply
    assert json.loads(reply["stdout"])["home"] == str(hook.node.home)


@pytest.mark.parametrize(
    ("cwd", "problem"), [("relative/dir", "not an absolute path"), ("/nonexistent", "No such")]
)
def test_a_forwarded_command_needs_a_usable_client_directory(
    hook: DaemonHook, cwd: str, problem: str
) -> None:
    reply = run_forwarded(["status"], cwd, {}, hook)
    result = CliResult(reply["exit_code"], reply["stdout"], reply["stderr"])
    assert_one_line_error(result, 1, "cannot use the client's directory", problem)
    assert reply["stdout"] == ""
