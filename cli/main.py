"""The `mindoo` command line: parse, call the library, render. No logic of its own.

`run` runs one command line in an explicit `Invocation` (working directory, environment,
output streams) and returns its exit code; `main` is the console script (this process's
surroundings); `run_forwarded` is what a daemon calls to run a client's command (the client's
directory and passwords, output captured), safe to call from several threads at once.

Errors are one line on stderr and exit code 1 (2 for usage errors), never a traceback; with
``--json`` that line is a JSON object ``{"error": {"type", "message"}, "exit_code"}``.
Global options (``--home``, ``--json``, ``--password-file``) go before or after the command.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from mindoo_p2p.commands import FORWARDED_PASSWORDS
from mindoo_p2p.control import ControlClient, ControlError, control_socket
from mindoo_p2p.errors import MindooError, sole_exception

from .commands import bundle, db, device, doc, http, key, node, peers, query, recovery, sync, tenant
from .context import DaemonHook, Invocation
from .params import Forward, MindooGroup

__all__ = ["FORWARDED_ENV", "DaemonHook", "Invocation", "cli", "main", "run", "run_forwarded"]


@click.group(cls=MindooGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """mindoo: end-to-end encrypted, offline-first document databases, synced peer to peer."""


for _module in (node, peers, tenant, device, key, db, doc, bundle, recovery, query, http, sync):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


FORWARDED_ENV = tuple(policy.env_var for policy in FORWARDED_PASSWORDS)
"""Client environment variables a forwarded command may read (nothing else crosses over)."""


def _fail(inv: Invocation, message: str, code: int, kind: str = "error") -> int:
    """Print ``message`` as exactly one line on stderr (a JSON object under ``--json``);
    return ``code`` (the exit code). ``kind``: ``error``, ``usage``, ``internal``,
    ``aborted``."""
    line = " ".join(message.split())
    if inv.json_errors:
        text = line.removeprefix("error: ").removeprefix("internal error: ")
        error = {"error": {"type": kind, "message": text}, "exit_code": code}
        line = json.dumps(error, sort_keys=True)
    inv.err.write(line + "\n")
    return code


def _wants_json(argv: list[str]) -> bool:
    """Whether ``--json`` is among the options (global options go anywhere; ``--`` ends
    them)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _invoke(argv: list[str], inv: Invocation) -> Any:
    """Run click; an exception group holding one error (from trio) becomes that error."""
    try:
        return cli.main(args=argv, prog_name="mindoo", standalone_mode=False, obj=inv)
    except BaseExceptionGroup as group:
        raise sole_exception(group) from None


def run(argv: list[str], inv: Invocation) -> int:
    """Run the CLI on ``argv`` in ``inv``; every error becomes one line on ``inv.err``.

    Exit codes: 0 success, 1 error, 2 usage error (unknown command or option, missing or invalid
    argument). Never a traceback unless MINDOO_DEBUG is set in ``inv.env`` (and no daemon runs
    the command).
    """
    if _wants_json(argv) and not inv.json_errors:
        inv = dataclasses.replace(inv, json_errors=True)
    try:
        code = _invoke(argv, inv)
    except Forward as forward:
        return _forward(forward.home, argv, inv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except click.exceptions.Abort:
        return _fail(inv, "aborted", 1, "aborted")
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return _fail(inv, f"error: {exc.format_message()}{hint}", 2, "usage")
    except click.ClickException as exc:
        return _fail(inv, f"error: {exc.format_message()}", 1)
    except MindooError as exc:
        return _fail(inv, f"error: {exc}", 1)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(inv, f"error: {exc.strerror or exc}{where}", 1)
    except Exception as exc:  # never a traceback for the user
        if inv.env.get("MINDOO_DEBUG") and inv.daemon is None:
            raise
        return _fail(
            inv,
            f"internal error: {type(exc).__name__}: {exc} (MINDOO_DEBUG=1 shows a traceback)",
            1,
            "internal",
        )
    # With standalone_mode=False click returns the exit code of --help or ctx.exit(n).
    return code if isinstance(code, int) else 0


def _forward(home: Path, argv: list[str], inv: Invocation) -> int:
    """Have the daemon on ``home`` run ``argv`` with this invocation's directory and
    `FORWARDED_ENV` variables; print what it printed; its exit code."""
    try:
        env = {name: inv.env[name] for name in FORWARDED_ENV if inv.env.get(name)}
        reply = ControlClient(control_socket(home)).call(
            "cli", {"argv": argv, "cwd": str(inv.cwd), "env": env}
        )
    except ControlError as exc:
        return _fail(inv, f"error: the daemon could not run the command: {exc}", 1)
    inv.out.write(str(reply.get("stdout", "")))
    inv.err.write(str(reply.get("stderr", "")))
    code = reply.get("exit_code", 1)
    return code if isinstance(code, int) else 1


def run_forwarded(
    argv: list[str], cwd: str, env: Mapping[str, str], hook: DaemonHook
) -> dict[str, Any]:
    """Run a client's command inside the daemon: relative paths resolve against the client's
    directory ``cwd`` and passwords come from the client's ``env`` (only its `FORWARDED_ENV`
    variables; nothing from the daemon's own environment). Output is captured and returned as
    ``{"exit_code", "stdout", "stderr"}``. Touches no process-wide state (working directory,
    environment, standard streams), so several may run at once in threads; the node's own
    thread-safety is the caller's concern."""
    out, err = io.StringIO(), io.StringIO()
    client_env = {name: env[name] for name in FORWARDED_ENV if env.get(name)}
    directory = Path(cwd)
    problem = None
    if not directory.is_absolute():
        problem = "not an absolute path"
    elif not directory.is_dir():
        problem = "not a directory" if directory.exists() else "No such file or directory"
    if problem is not None:
        err.write(f"error: cannot use the client's directory {cwd}: {problem}\n")
        return {"exit_code": 1, "stdout": "", "stderr": err.getvalue()}
    inv = Invocation(directory, client_env, out, err, interactive=False, daemon=hook)
    code = run(argv, inv)
    return {"exit_code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    """Entry point of the ``mindoo`` console script."""
    sys.exit(run(sys.argv[1:], Invocation.of_this_process()))


if __name__ == "__main__":
    main()
