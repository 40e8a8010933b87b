"""doc create|get|set|list|history|delete, and the change feed (changes)."""

from __future__ import annotations

import json

import click

from mindoo_p2p.database import Database, parse_path
from mindoo_p2p.errors import InvalidPathError, MindooError

from ..json_args import parse_json_argument
from ..params import MindooCommand, MindooGroup, cli_context
from ..render import fmt_ms, parse_time, plain


def _database(tenant_name: str, name: str) -> Database:
    """The database ``name`` of a tenant (by name or id); the name is validated."""
    return cli_context().node().tenant(tenant_name).open_db(name)


@click.group(cls=MindooGroup)
def doc() -> None:
    """Create, read, edit and delete documents."""


@doc.command("create")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("content", metavar="[JSON]", required=False)
@click.option(
    "--key", "key_name", default="default", show_default=True, help="Encryption key name."
)
def doc_create(tenant_name: str, name: str, content: str | None, key_name: str) -> None:
    """Create a document (optionally with a JSON object as content); prints its id."""
    initial = parse_json_argument(content, "JSON") if content is not None else None
    if initial is not None and not isinstance(initial, dict):
        raise click.BadParameter("the document content must be a JSON object", param_hint="JSON")
    database = _database(tenant_name, name)
    try:
        doc_id = database.create_document(initial, key=key_name)
    except MindooError:
        raise
    except (ValueError, TypeError) as exc:  # a value the document layer refuses
        raise click.BadParameter(str(exc), param_hint="JSON") from None
    cli_context().emit({"id": doc_id}, doc_id)


@doc.command("get")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
@click.option("--at", "at", help="Time travel: ISO-8601 time or milliseconds since the epoch.")
@click.option(
    "--conflicts",
    is_flag=True,
    help="Also show every competing value of fields set concurrently, with author and time.",
)
def doc_get(tenant_name: str, name: str, doc_id: str, at: str | None, conflicts: bool) -> None:
    """Print a document as JSON."""
    d = _database(tenant_name, name)
    if conflicts:
        if at is not None:
            raise click.BadParameter("--conflicts shows the current state: drop --at")
        view = d.get(doc_id, conflicts=True)
        cli_context().echo(json.dumps(view.to_dict(), indent=2, sort_keys=True, default=plain))
        return
    content = d.get(doc_id) if at is None else d.get_at(doc_id, time=parse_time(at))
    cli_context().echo(json.dumps(content, indent=2, sort_keys=True, default=plain))


@doc.command("set")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
@click.argument("path", metavar="PATH")
@click.argument("value", metavar="JSON_VALUE")
def doc_set(tenant_name: str, name: str, doc_id: str, path: str, value: str) -> None:
    """Set the value at PATH (dot-separated, e.g. address.city or tags.0) to JSON_VALUE."""
    parsed = parse_json_argument(value, "JSON_VALUE")
    try:
        steps = parse_path(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from None
    database = _database(tenant_name, name)
    try:
        database.set_path(doc_id, steps, parsed)
    except InvalidPathError as exc:
        # A path that does not fit the document (an index out of range, descending into a
        # value, a word used as a list index).
        raise click.BadParameter(str(exc), param_hint="PATH") from None
    cli_context().emit({"id": doc_id, "path": path}, "ok")


@doc.command("list")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.option("--deleted", is_flag=True, help="Include deleted documents.")
def doc_list(tenant_name: str, name: str, deleted: bool) -> None:
    """List document ids."""
    ids = _database(tenant_name, name).list_documents(include_deleted=deleted)
    cli_context().emit(ids, "\n".join(ids) or "no documents")


@doc.command("history")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
def doc_history(tenant_name: str, name: str, doc_id: str) -> None:
    """Every change of a document: entry id, author, time."""
    items = _database(tenant_name, name).history(doc_id)
    text = "\n".join(
        f"{fmt_ms(i.timestamp_ms)}  {i.kind:<6}  {i.entry_id[:16]}"
        f"  {i.author_name or i.author[:16]}" + ("  (concurrent head)" if i.concurrent else "")
        for i in items
    )
    cli_context().emit([i.to_dict() for i in items], text)


@doc.command("delete")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
def doc_delete(tenant_name: str, name: str, doc_id: str) -> None:
    """Delete a document (its history stays)."""
    _database(tenant_name, name).delete(doc_id)
    cli_context().emit({"id": doc_id, "deleted": True}, "deleted")


@click.command(cls=MindooCommand)
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.option(
    "--since", "since", type=click.IntRange(min=0), default=0, help="Cursor to continue from."
)
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True)
def changes(tenant_name: str, name: str, since: int, limit: int) -> None:
    """Changes that arrived after a cursor, in local arrival order, and the next cursor."""
    items, cursor = _database(tenant_name, name).changes_since(since, limit)
    text = "\n".join(f"{i.cursor}  {i.kind:<6}  {i.document_id}  {i.entry_id[:16]}" for i in items)
    cli_context().emit(
        {"changes": [i.to_dict() for i in items], "next_cursor": cursor},
        (text + "\n" if text else "") + f"next cursor: {cursor}",
    )


@click.command(cls=MindooCommand)
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
def conflicts(tenant_name: str, name: str) -> None:
    """Documents with unresolved conflicts (fields set concurrently); a write resolves one."""
    found = _database(tenant_name, name).conflicted_documents()
    text = "\n".join(f"{doc_id}  {', '.join(fields)}" for doc_id, fields in found)
    cli_context().emit(
        [{"document_id": doc_id, "fields": list(fields)} for doc_id, fields in found],
        text or "no conflicts",
    )


COMMANDS: list[click.Command] = [doc, changes, conflicts]
