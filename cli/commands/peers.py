"""peers list|add: the address book."""

from __future__ import annotations

import click

from mindoo_p2p.errors import MindooError

from ..params import MindooGroup, cli_context


@click.group(cls=MindooGroup)
def peers() -> None:
    """List and add peers (the address book)."""


@peers.command("list")
def peers_list() -> None:
    """Known peers: addresses, and connection and sync state when the daemon runs."""
    from mindoo_p2p.address_book_file import load_address_book

    c = cli_context()
    if c.daemon is not None:
        daemon_peers = {p["peer_id"]: p for p in c.daemon.status()["peers"]}
        book = c.daemon.address_book
    else:
        daemon_peers = {}
        book = load_address_book(c.home)
    rows = []
    for peer_id in sorted(set(book.peers()) | set(daemon_peers)):
        live = daemon_peers.get(peer_id, {})
        rows.append(
            {
                "peer_id": peer_id,
                "addrs": list(book.addrs(peer_id)) if peer_id in book else [],
                "connected": bool(live.get("connected")),
                "last_sync_ms": live.get("last_sync_ms"),
            }
        )
    text = "\n".join(
        f"{r['peer_id']}  {'connected' if r['connected'] else '-'}  {' '.join(r['addrs'])}"
        for r in rows
    )
    c.emit(rows, text or "no peers")


@peers.command("add")
@click.argument("addr", metavar="MULTIADDR")
def peers_add(addr: str) -> None:
    """Remember a peer's address (…/tcp/PORT/p2p/PEER_ID); the daemon dials it."""
    from mindoo_p2p.address_book_file import load_address_book, save_address_book
    from mindoo_p2p.net.peer_identity import parse_dial_addr

    c = cli_context()
    try:
        parse_dial_addr(addr)
    except (ValueError, MindooError) as exc:
        raise click.BadParameter(f"{exc}", param_hint="MULTIADDR") from None
    if c.daemon is not None:
        peer_id = c.daemon.request_peer(addr)
        text = f"added {peer_id}; connecting"
    else:
        book = load_address_book(c.home)
        peer_id = book.add(addr)
        save_address_book(c.home, book)
        text = f"added {peer_id}; the daemon will dial it when it runs"
    c.emit({"peer_id": peer_id, "addr": addr}, text)


COMMANDS: list[click.Command] = [peers]
