"""peers list|add|name|remove: the address book."""

from __future__ import annotations

import click

from mindoo_p2p.commands import peer_list
from mindoo_p2p.errors import MindooError

from ..params import MindooGroup, cli_context
from ..render import fmt_ms


@click.group(cls=MindooGroup)
def peers() -> None:
    """List, add, name and remove peers (the address book)."""


@peers.command("list")
def peers_list() -> None:
    """Known peers: name, state, address in use, last error and failed dials."""
    from mindoo_p2p.address_book_file import load_address_book

    c = cli_context()
    if c.daemon is not None:
        rows = peer_list(c.daemon.address_book, c.daemon.status()["peers"])
    else:
        rows = peer_list(load_address_book(c.home), [])
    lines = []
    for r in rows:
        where = r["address"] or (r["addrs"][0] if r["addrs"] else "no address (it dials us)")
        name = f"{r['name']}  " if r["name"] else ""
        line = f"{name}{r['peer_id']}  {r['state']}  {where}"
        if r["last_sync_ms"]:
            line += f"  synced {fmt_ms(r['last_sync_ms'])}"
        if r["failures"]:
            line += f"  {r['failures']} failed dials"
        if r["last_error"] and not r["connected"]:
            line += f"  last error: {r['last_error']}"
        lines.append(line)
    c.emit(rows, "\n".join(lines) or "no peers")


@peers.command("add")
@click.argument("addr", metavar="MULTIADDR")
def peers_add(addr: str) -> None:
    """Remember a peer's address (…/tcp/PORT/p2p/PEER_ID); the daemon dials it."""
    from mindoo_p2p.address_book_file import load_address_book, save_address_book
    from mindoo_p2p.net.peer_identity import parse_dial_addr

    c = cli_context()
    try:
        parse_dial_addr(addr)
        if c.daemon is not None:
            peer_id = c.daemon.request_peer(addr)
            text = f"added {peer_id}; connecting"
        else:
            book = load_address_book(c.home)
            peer_id = book.add(addr)
            save_address_book(c.home, book)
            text = f"added {peer_id}; the daemon will dial it when it runs"
    except (ValueError, MindooError) as exc:
        raise click.BadParameter(f"{exc}", param_hint="MULTIADDR") from None
    c.emit({"peer_id": peer_id, "addr": addr}, text)


@peers.command("name")
@click.argument("peer", metavar="PEER")
@click.argument("name", metavar="NAME", required=False)
@click.option("--clear", is_flag=True, help="Remove the peer's name.")
def peers_name(peer: str, name: str | None, clear: bool) -> None:
    """Give a peer (its id, a unique id prefix, or its name) a NAME to show and use."""
    from mindoo_p2p.address_book_file import load_address_book, save_address_book

    if (name is None) == (not clear):
        raise click.UsageError("give a NAME, or --clear to remove the name")
    c = cli_context()
    try:
        if c.daemon is not None:
            peer_id = c.daemon.name_peer(peer, name)
        else:
            book = load_address_book(c.home)
            peer_id = book.find(peer)
            book.set_name(peer_id, name)
            save_address_book(c.home, book)
    except LookupError as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    c.emit(
        {"peer_id": peer_id, "name": name},
        f"{peer_id} is now called {name}" if name else f"{peer_id} has no name now",
    )


@peers.command("remove")
@click.argument("peer", metavar="PEER")
def peers_remove(peer: str) -> None:
    """Forget a peer (its id, a unique id prefix, or its name): it is disconnected and not
    dialed again (a member may still dial this node)."""
    from mindoo_p2p.address_book_file import load_address_book, save_address_book

    c = cli_context()
    try:
        if c.daemon is not None:
            peer_id = c.daemon.forget_peer(peer)
        else:
            book = load_address_book(c.home)
            peer_id = book.find(peer)
            book.remove(peer_id)
            save_address_book(c.home, book)
    except LookupError as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    c.emit({"peer_id": peer_id, "removed": True}, f"removed {peer_id}")


COMMANDS: list[click.Command] = [peers]
