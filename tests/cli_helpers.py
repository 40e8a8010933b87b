"""Helpers for the `mindoo` CLI tests: run the CLI (in-process, or the real console script as a
subprocess where a process is the point), read results, damage files.

Also runnable as a script: ``python tests/cli_helpers.py write HOME TENANT DB FIRST`` is the
concurrent writer of `test_cli.py` (see `writer_main`).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.main import Invocation, run
from mindoo_p2p.crypto.keystore import KdfProfile
from mindoo_p2p.node import Node

PASSWORD = "cli test password"
SUBPROCESS_TIMEOUT = 60.0
HELPERS_FILE = Path(__file__).resolve()
REPO_ROOT = HELPERS_FILE.parent.parent


def mindoo_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m cli.main``."""
    script = Path(sys.executable).parent / "mindoo"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cli.main"]


def cli_env(password: str | None = PASSWORD) -> dict[str, str]:
    """The environment for a CLI subprocess: no inherited mindoo settings, the test password,
    and this checkout first on PYTHONPATH (the subprocess runs the code under test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINDOO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if password is not None:
        env["MINDOO_PASSWORD"] = password
    return env


@dataclass(frozen=True)
class CliResult:
    """What one CLI run produced."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON (fails the test if it is not JSON)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:  # pragma: no cover - only on failure
            raise AssertionError(f"stdout is not JSON ({exc}):\n{self.stdout}") from None

    def ok(self) -> CliResult:
        """Assert success (exit 0, nothing on stderr) and return self."""
        assert self.code == 0, f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        assert self.stderr == "", f"unexpected stderr: {self.stderr}"
        return self


def run_mindoo(
    home: Path,
    *args: str,
    json_output: bool = False,
    password: str | None = PASSWORD,
    extra_global: tuple[str, ...] = (),
) -> CliResult:
    """Run ``mindoo --home HOME [--json] ARGS`` as a subprocess (stdin closed)."""
    command = [*mindoo_command(), "--home", str(home), *extra_global]
    if json_output:
        command.append("--json")
    command.extend(args)
    proc = subprocess.run(
        command,
        env=cli_env(password),
        cwd=home.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def mindoo(
    home: Path,
    *args: str,
    json_output: bool = False,
    password: str | None = PASSWORD,
    extra_global: tuple[str, ...] = (),
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> CliResult:
    """Run ``mindoo --home HOME [--json] ARGS`` in this process, like `run_mindoo` but with no
    interpreter start-up: same entry point (`cli.main.run`), same arguments, with an explicit
    working directory (default: HOME's parent), environment (default: only MINDOO_PASSWORD)
    and captured output. ``stdin`` answers yes/no questions (default: nobody to ask)."""
    argv = ["--home", str(home), *extra_global, *(["--json"] if json_output else []), *args]
    variables = dict(env) if env is not None else {}
    if password is not None:
        variables["MINDOO_PASSWORD"] = password
    out, err = io.StringIO(), io.StringIO()
    invocation = Invocation(
        cwd=cwd or home.parent,
        env=variables,
        out=out,
        err=err,
        interactive=False,
        stdin=io.StringIO(stdin) if stdin is not None else None,
    )
    code = run(argv, invocation)
    return CliResult(code, out.getvalue(), err.getvalue())


def init_home(home: Path, name: str | None = None) -> None:
    """A node in ``home`` as ``mindoo init [--name NAME]`` makes it (password `PASSWORD`), but
    with the test-only KDF profile: for tests that need a home, not the init command. Every
    later command on the home (in-process, subprocess or daemon) then unlocks it without the
    interactive argon2id (64 MiB, ~70 ms a time); `mindoo init` itself is tested where it is
    the subject (test_cli.py)."""
    Node.init(home, PASSWORD, name=name, kdf=KdfProfile.TESTING).close()


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> None:
    """Exit ``code``; stderr is exactly one line holding every fragment; no traceback."""
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert result.code == code, f"exit {result.code}, expected {code}: {everything}"
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, repr(result.stderr)
    for fragment in fragments:
        assert fragment.lower() in result.stderr.lower(), (fragment, result.stderr)


def flip_byte(path: Path, offset: int) -> None:
    """Invert every bit of the byte at ``offset`` of ``path``, in place."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        value = fh.read(1)
        assert len(value) == 1, f"{path} has no byte at {offset}"
        fh.seek(offset)
        fh.write(bytes([value[0] ^ 0xFF]))


def bundle_raw_entries(path: Path) -> list[bytes]:
    """The sealed entries of a bundle file, in order."""
    from mindoo_p2p.bundle import read_bundle

    with open(path, "rb") as fh:
        return list(read_bundle(fh))


def find_all(data: bytes, needle: bytes) -> list[int]:
    """Every offset of ``needle`` in ``data``."""
    found: list[int] = []
    start = data.find(needle)
    while start != -1:
        found.append(start)
        start = data.find(needle, start + 1)
    return found


# -- the concurrent writer ---------------------------------------------------------------------
def writer_main(argv: list[str]) -> int:
    """``write HOME TENANT DB FIRST``: a second process writing to a node home.

    Protocol on stdout/stdin (one item per line, flushed): writes FIRST documents and prints
    each id, prints ``paused`` and waits for a line; then writes documents (printing each id)
    every 20 ms until a second line arrives (writing stops after 20 s, but the process still
    waits up to 120 s for that line, so a slow test's ``stop`` never meets a closed pipe), prints
    ``done`` and exits 0.
    """
    _, home, tenant_name, db_name, first = argv
    node = Node.open(Path(home), os.environ["MINDOO_PASSWORD"])
    try:
        database = node.tenant(tenant_name).create_db(db_name)
        for index in range(int(first)):
            print(database.create_document({"writer": "first", "n": index}), flush=True)
        print("paused", flush=True)
        sys.stdin.readline()
        stop = threading.Event()

        def wait_for_stop() -> None:
            sys.stdin.readline()
            stop.set()

        threading.Thread(target=wait_for_stop, daemon=True).start()
        deadline = time.monotonic() + 20.0
        index = 0
        while not stop.is_set() and time.monotonic() < deadline:
            print(database.create_document({"writer": "second", "n": index}), flush=True)
            index += 1
            stop.wait(0.02)
        stop.wait(120.0)
        print("done", flush=True)
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "write":
        sys.exit(writer_main(sys.argv[1:]))
    sys.exit("usage: cli_helpers.py write HOME TENANT DB FIRST")
