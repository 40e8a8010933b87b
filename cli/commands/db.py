"""db create|list|stats|forget."""

from __future__ import annotations

import click

from ..params import MindooGroup, cli_context


@click.group(cls=MindooGroup)
def db() -> None:
    """Create, list and inspect databases."""


@db.command("create")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
def db_create(tenant_name: str, name: str) -> None:
    """Create a database (names: a-z 0-9 . _ -, up to 64)."""
    c = cli_context()
    d = c.node().tenant(tenant_name).create_db(name)
    c.emit({"tenant": d.tenant.id_hex, "name": d.name}, d.name)


@db.command("list")
@click.argument("tenant_name", metavar="TENANT")
def db_list(tenant_name: str) -> None:
    """List a tenant's databases."""
    c = cli_context()
    names = c.node().tenant(tenant_name).databases()
    c.emit(names, "\n".join(names) or "no databases")


@db.command("stats")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
def db_stats(tenant_name: str, name: str) -> None:
    """Entries, documents, last cursor and bytes of a database."""
    c = cli_context()
    stats = c.node().tenant(tenant_name).find_database(name).stats()
    c.emit(stats, "\n".join(f"{k}: {v}" for k, v in stats.items()))


@db.command("forget")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
def db_forget(tenant_name: str, name: str) -> None:
    """Stop holding a database on this node (peers keep it; 'db create' brings it back).

    It is no longer listed, read, written or replicated here, and what peers send of it is
    refused. Its stored entries stay (sealed) in the store."""
    c = cli_context()
    tenant = c.node().tenant(tenant_name)
    tenant.forget_db(name)
    c.emit(
        {"tenant": tenant.id_hex, "name": name, "forgotten": True},
        f"forgot {name}: no longer replicated here (its stored entries stay)",
    )


COMMANDS: list[click.Command] = [db]
