"""query, search, index status|rebuild, view define|list|show|remove|watch (the query index)."""

from __future__ import annotations

import json
from typing import Any

import click

from mindoo_p2p.control import ControlClient, ControlError, control_socket, daemon_running
from mindoo_p2p.index import QueryError, QueryResult, Source
from mindoo_p2p.node import Node

from ..context import CliContext, read_bounded
from ..json_args import parse_json_argument
from ..params import MindooCommand, MindooGroup, UserFile, UserPath, cli_context
from ..render import plain

MAX_VIEW_FILE = 64 * 1024


def _sources(
    node: Node, tenant_name: str, dbs: tuple[str, ...], extra: tuple[str, ...]
) -> list[Source]:
    """DBs of TENANT (all of them when none is named) and every --source TENANT/DB."""
    tenant = node.tenant(tenant_name)
    sources = [node.index.source(tenant, d) for d in dbs] if dbs else node.index.all_sources(tenant)
    for item in extra:
        other, sep, database = item.partition("/")
        if not sep or not other or not database:
            raise click.BadParameter(f"expected TENANT/DB, not {item!r}", param_hint="--source")
        sources.append(node.index.source(node.tenant(other), database))
    if not sources:
        raise QueryError(f"tenant {tenant.name!r} has no database to search")
    return list(dict.fromkeys(sources))


def _follow(node: Node) -> None:
    """Bring the index up to date, showing progress on stderr when that takes long (the
    first query after a large sync or import)."""
    c = cli_context()
    shown = [0]

    def progress(done: int) -> None:
        if done - shown[0] >= 10_000:
            shown[0] = done
            c.echo(f"indexing: {done} documents...", err=True)

    node.index.refresh(progress)


def _coverage_line(coverage: dict[str, Any]) -> str:
    skipped = coverage["skipped"]
    if not skipped:
        return f"{coverage['indexed']} documents indexed, none skipped"
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items())
    return f"{coverage['indexed']} documents indexed; skipped: {reasons}"


def _emit_page(c: CliContext, result: QueryResult) -> None:
    """A page of rows (a query's or a view's flat list): one line per row, the coverage, and
    the cursor of the next page."""
    data = result.to_dict()
    lines = [f"{r.database}/{r.document_id}  {_values(r.values)}" for r in result.rows]
    lines.append(_coverage_line(data["coverage"]))
    if result.next_cursor:
        lines.append(f"more: --cursor {result.next_cursor}")
    c.emit(data, "\n".join(lines))


def _values(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=plain, ensure_ascii=False)


@click.command("query", cls=MindooCommand)
@click.argument("tenant_name", metavar="TENANT")
@click.argument("database", metavar="DB")
@click.option("--source", "extra", multiple=True, metavar="TENANT/DB", help="Another source.")
@click.option("--where", "where", metavar="JSON", help='A filter, e.g. {"status": "open"}.')
@click.option(
    "--sort",
    "sort",
    multiple=True,
    metavar="FIELD[:desc]",
    help='Sort key; or a computed one as JSON, e.g. {"expr": {"$year": "$date"}, "desc": true}.',
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--fields", metavar="F,...", help="Fields to show (default: the whole document).")
@click.option("--cursor", metavar="C", help="The next_cursor of the previous page.")
def query(
    tenant_name: str,
    database: str,
    extra: tuple[str, ...],
    where: str | None,
    sort: tuple[str, ...],
    limit: int,
    fields: str | None,
    cursor: str | None,
) -> None:
    """Documents of DB (and every --source) matching --where, sorted, one page at a time."""
    c = cli_context()
    node = c.node()
    condition = parse_json_argument(where, "--where") if where is not None else None
    _follow(node)
    result = node.index.query(
        _sources(node, tenant_name, (database,), extra),
        where=condition,
        sort=[parse_json_argument(k, "--sort") if k.startswith("{") else k for k in sort],
        limit=limit,
        fields=fields,
        cursor=cursor,
    )
    _emit_page(c, result)


@click.command("search", cls=MindooCommand)
@click.argument("tenant_name", metavar="TENANT")
@click.argument("terms", metavar='"TERMS"')
@click.option("--db", "dbs", multiple=True, metavar="DB", help="Search only these (default all).")
@click.option("--source", "extra", multiple=True, metavar="TENANT/DB", help="Another source.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
def search(
    tenant_name: str, terms: str, dbs: tuple[str, ...], extra: tuple[str, ...], limit: int
) -> None:
    """Full-text search: every word must occur; word* is a prefix, "a phrase" in quotes."""
    c = cli_context()
    node = c.node()
    _follow(node)
    result = node.index.search(_sources(node, tenant_name, dbs, extra), terms, limit=limit)
    data = result.to_dict()
    lines = [
        f"{h.tenant}/{h.database}/{h.document_id}  {' '.join(h.snippet.split())}"
        for h in result.hits
    ] or ["no match"]
    lines.append(_coverage_line(data["coverage"]))
    c.emit(data, "\n".join(lines))


@click.group(cls=MindooGroup)
def index() -> None:
    """The query index: status, rebuild, full-text fields."""


@index.command("status")
def index_status() -> None:
    """Per database: how far the index has followed the log, documents indexed and skipped."""
    c = cli_context()
    node = c.node()
    node.index.refresh()
    status = node.index.status()
    lines = [f"index: {status['path']} ({status['bytes']} bytes)"]
    for s in status["sources"]:
        behind = f", {s['behind']} entries behind" if s["behind"] else ""
        lines.append(f"  {s['tenant']}/{s['db']}: {_coverage_line(s)}{behind}")
    c.emit(status, "\n".join(lines))


@index.command("rebuild")
def index_rebuild() -> None:
    """Delete the index and build it again from the log (progress on stderr)."""
    c = cli_context()
    node = c.node()
    shown = [0]

    def progress(done: int) -> None:
        if done - shown[0] >= 10_000:
            shown[0] = done
            c.echo(f"indexing: {done} documents...", err=True)

    result = node.index.rebuild(progress)
    c.emit(
        result,
        f"rebuilt: {result['indexed']} documents indexed, {result['skipped']} skipped"
        f" ({result['seconds']} s)",
    )


@index.command("fields")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("database", metavar="DB")
@click.argument("fields", metavar="[F,...]", required=False)
@click.option("--all", "every", is_flag=True, help="Search every string field again.")
def index_fields(tenant_name: str, database: str, fields: str | None, every: bool) -> None:
    """Show or choose the fields of DB that full-text search covers (default: all text)."""
    c = cli_context()
    node = c.node()
    db = node.tenant(tenant_name).open_db(database)
    if fields is not None and every:
        raise click.UsageError("give fields or --all, not both")
    if fields is not None or every:
        _follow(node)
        node.index.set_search_fields(db, None if every else fields)
    chosen = node.index.search_fields(db)
    c.emit(
        {"tenant": tenant_name, "db": database, "fields": chosen},
        f"{database}: full-text search covers "
        + ("every string field" if chosen is None else ", ".join(chosen)),
    )


@click.group(cls=MindooGroup)
def view() -> None:
    """Define, list and show views (categorized, sorted, totalled lists)."""


@view.command("define")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
@click.argument("file", metavar="FILE.json", type=UserFile(exists=True))
@click.option("--local", is_flag=True, help="Keep it on this node only (default: shared).")
def view_define(tenant_name: str, name: str, file: UserPath, local: bool) -> None:
    """Define (or replace) a view from a JSON file; shared with the tenant unless --local."""
    c = cli_context()
    node = c.node()
    text = read_bounded(file.path, MAX_VIEW_FILE, "view file", file.given)
    scope = node.views.define(
        node.tenant(tenant_name), name, text.decode("utf-8", "replace"), local=local
    )
    c.emit({"name": name, "scope": scope}, f"view {name!r} defined ({scope})")


@view.command("list")
@click.argument("tenant_name", metavar="TENANT")
def view_list(tenant_name: str) -> None:
    """The tenant's views (shared and this node's local ones)."""
    c = cli_context()
    node = c.node()
    views = node.views.definitions(node.tenant(tenant_name))
    c.emit(views, "\n".join(f"{v['name']} ({v['scope']})" for v in views) or "no views")


@view.command("remove")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
def view_remove(tenant_name: str, name: str) -> None:
    """Remove a view (the local one if there is one, else the shared one)."""
    c = cli_context()
    node = c.node()
    scope = node.views.remove(node.tenant(tenant_name), name)
    c.emit({"name": name, "removed": scope}, f"view {name!r} removed ({scope})")


@view.command("show")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
@click.option(
    "--expand",
    "expand",
    multiple=True,
    metavar="PATH",
    help="Open a category: its values joined by '/', e.g. 2025/Acme.",
)
@click.option("--all", "expand_all", is_flag=True, help="Open every category.")
@click.option("--rows", "flat", is_flag=True, help="The flat sorted list instead of the tree.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Rows per page (--rows) or per open category.",
)
@click.option("--cursor", metavar="C", help="With --rows: the next_cursor of the previous page.")
def view_show(
    tenant_name: str,
    name: str,
    expand: tuple[str, ...],
    expand_all: bool,
    flat: bool,
    limit: int,
    cursor: str | None,
) -> None:
    """Show a view: the category tree with counts and totals, or (--rows) its flat list."""
    c = cli_context()
    node = c.node()
    reader = node.views.reader(node.tenant(tenant_name), name)
    _follow(node)
    if cursor is not None and not flat:
        raise click.UsageError("--cursor pages the flat list: add --rows")
    if flat:
        result = reader.rows(limit=limit, cursor=cursor)
        _emit_page(c, result)
        return
    tree = reader.tree(
        expand=[p.split("/") for p in expand], expand_all=expand_all, row_limit=limit
    )
    c.emit(tree, "\n".join(_tree_lines(tree)))


@view.command("watch")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
def view_watch(tenant_name: str, name: str) -> None:
    """Print a view's changes as they happen (the running daemon's): rows added (+), removed
    (-) or changed (~) and category totals (=); with --json one object per line. Says on
    stderr once it watches. Exits 1 when the daemon goes away."""
    c = cli_context()
    if c.daemon is not None:
        raise click.ClickException("'view watch' cannot run inside the daemon")
    if not daemon_running(c.home):
        raise click.ClickException("no daemon is running on this home: start 'mindoo node run'")
    params = {"tenant": tenant_name, "view": name}
    try:
        stream = ControlClient(control_socket(c.home)).stream("view.watch", params)
        next(stream)  # set up: the daemon has read the view; what changes from now is shown
        c.echo(f"watching view {name!r} of {tenant_name!r}", err=True)
        c.invocation.err.flush()
        for change in stream:
            if c.json_output:
                c.echo(json.dumps(change, sort_keys=True, default=plain))
            else:
                c.echo("\n".join(_change_lines(change)))
            c.invocation.out.flush()
    except KeyboardInterrupt:
        return
    except (ControlError, OSError) as exc:
        raise click.ClickException(f"{exc}") from None
    raise click.ClickException(f"the daemon on {c.home} went away")


def _change_lines(change: dict[str, Any]) -> list[str]:
    if change.get("type") != "view_change":
        return [json.dumps(change, sort_keys=True, default=plain)]
    lines = [
        f"{mark} {row['db']}/{row['id']}  {_values(row['values'])}"
        for mark, key in (("+", "added"), ("-", "removed"), ("~", "changed"))
        for row in change.get(key, [])
    ]
    for total in change.get("totals", []):
        path = "/".join("(none)" if v is None else str(v) for v in total["path"]) or "all"
        lines.append(f"= {path} {_totals_text(total)}")
    return lines


def _totals_text(node: dict[str, Any]) -> str:
    totals = node.get("totals") or {}
    parts = [f"{k}={_number(v)}" for k, v in totals.items() if k != "count"]
    return f"({node['count']})" + (f"  {' '.join(parts)}" if parts else "")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, default=plain, ensure_ascii=False)


def _tree_lines(tree: dict[str, Any]) -> list[str]:
    lines = [f"all {_totals_text(tree)}"]

    def walk(nodes: list[dict[str, Any]], depth: int) -> None:
        for node in nodes:
            label = "(none)" if node["value"] is None else str(node["value"])
            marker = "-" if "categories" in node or "rows" in node else "+"
            lines.append(f"{'  ' * depth}{marker} {label} {_totals_text(node)}")
            walk(node.get("categories", []), depth + 1)
            for row in node.get("rows", []):
                lines.append(
                    f"{'  ' * (depth + 1)}{row['db']}/{row['id']}  {_values(row['values'])}"
                )

    walk(tree["categories"], 1)
    for row in tree.get("rows", []):
        lines.append(f"  {row['db']}/{row['id']}  {_values(row['values'])}")
    lines.append(_coverage_line(tree["coverage"]))
    return lines


COMMANDS: list[click.Command] = [query, search, index, view]
