"""Progress of long commands on a terminal (rich), and nothing anywhere else.

A bar is shown only when the command runs in a terminal (the `Invocation` is interactive and
its error stream is a tty), not under ``--json`` and not inside the daemon (a forwarded
command's output is captured). It goes to the error stream, so the output stays what scripts
read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from .context import CliContext

Advance = Callable[[int], None]


def shows_progress(c: CliContext) -> bool:
    inv = c.invocation
    return (
        inv.interactive
        and c.daemon is None
        and not c.json_output
        and bool(getattr(inv.err, "isatty", lambda: False)())
    )


@contextmanager
def progress(c: CliContext, description: str, total: int | None) -> Iterator[Advance]:
    """A function to call with each amount of work done (``total``: None when unknown); a bar
    on the terminal while the block runs, when `shows_progress`."""
    if not shows_progress(c):
        yield lambda _n: None
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(file=c.invocation.err), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
