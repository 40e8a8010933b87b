"""export and import: bundles of sealed entries, carried by hand."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import click

from mindoo_p2p.admission import VerifiedEntry
from mindoo_p2p.bundle import check_bundle, export_entries, import_bundle, write_bundle
from mindoo_p2p.entry import Entry
from mindoo_p2p.store import AppendResult

from ..params import MindooCommand, UserFile, UserPath, cli_context
from ..progress import progress


@click.command("export", cls=MindooCommand)
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="[DB]", required=False)
@click.option("--out", required=True, type=UserFile())
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    help="Only entries after this cursor (with DB).",
)
def export_cmd(tenant_name: str, name: str | None, out: UserPath, since: int) -> None:
    """Write a tenant's (or one database's) sealed entries to a bundle file."""
    if since and name is None:
        raise click.UsageError("--since needs DB: cursors belong to one database")
    c = cli_context()
    n = c.node()
    t = n.tenant(tenant_name)
    if name is not None:
        t.find_database(name)
    with progress(c, f"exporting to {out}", None) as advance:

        def counted(entries: Iterable[Entry]) -> Iterator[Entry]:
            for entry in entries:
                advance(1)
                yield entry

        count = write_bundle(out.path, counted(export_entries(n.store, t.id, name, since)))
    c.emit({"out": str(out), "entries": count}, f"exported {count} entries to {out}")


@click.command("import", cls=MindooCommand)
@click.argument("bundle", type=UserFile(exists=True))
def import_cmd(bundle: UserPath) -> None:
    """Verify and import a bundle of sealed entries.

    A damaged bundle (broken framing, an entry that does not decode or verify) is refused whole:
    nothing is imported. Entries the tenant's membership refuses are rejected one by one.
    """
    c = cli_context()
    node = c.node()
    checked = check_bundle(bundle.path)  # framing, decode, signatures: once, before anything lands
    if checked.damaged:
        first = checked.damaged[0]
        raise click.ClickException(
            f"bundle {bundle} is damaged, nothing was imported: {len(checked.damaged)} bad"
            f" entries, first at position {first.position} ({first.entry_id}): {first.reason}"
        )
    with progress(c, f"importing {bundle}", checked.count) as advance:

        def ingest(batch: Sequence[Entry | bytes | VerifiedEntry]) -> AppendResult:
            done = node.ingest(batch)
            advance(len(batch))
            return done

        result: AppendResult = import_bundle(bundle.path, ingest, checked)
    rejected = [{"entry_id": r.entry_id.hex(), "reason": r.reason} for r in result.rejected]
    text = f"imported {len(result.added)} entries, {len(result.duplicates)} already present"
    if rejected:
        text += f", {len(rejected)} rejected:\n" + "\n".join(
            f"  {r['entry_id']}: {r['reason']}" for r in rejected
        )
    c.emit(
        {"added": len(result.added), "duplicates": len(result.duplicates), "rejected": rejected},
        text,
    )
    if rejected:
        c.echo(f"error: {len(rejected)} entries of the bundle were rejected", err=True)
        click.get_current_context().exit(1)


COMMANDS: list[click.Command] = [export_cmd, import_cmd]
