"""Rendering and parsing shared by several commands: times, JSON values, status text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> int:
    """``--at``: milliseconds since the epoch, or ISO-8601 (naive means local time)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.astimezone()
        # Integer arithmetic: float seconds * 1000 can land one millisecond early.
        return (moment - _EPOCH) // timedelta(milliseconds=1)
    except (ValueError, OverflowError):
        raise click.BadParameter(
            "expected ISO-8601 (2026-01-31T12:00:00) or milliseconds since the epoch",
            param_hint="--at",
        ) from None


def fmt_ms(ms: int) -> str:
    """Milliseconds since the epoch as UTC ISO-8601 with milliseconds and a Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def plain(value: Any) -> Any:
    """``json.dumps`` default for document values: bytes as hex, datetimes as ISO-8601."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def render_status(data: dict[str, Any]) -> str:
    """The text of ``mindoo status`` (``data`` is what --json prints)."""
    lines = [
        f"node home:  {data['home']}",
        f"identity:   {data['identity']['name']} ({data['identity']['fingerprint']})",
        f"entries:    {data['entries']}",
    ]
    if not data["tenants"]:
        lines.append("tenants:    none (create one with 'mindoo tenant create NAME')")
    for t in data["tenants"]:
        role = "admin" if t["admin"] else "member"
        lines.append(f"tenant {t['name']} ({t['id']}), {role}, {t['members']} members")
        for d in t["databases"]:
            lines.append(f"  db {d['name']}: {d['documents']} documents, {d['entries']} entries")
        if t.get("restored"):
            lines.append(
                "  RESTORED from a recovery kit, not synced yet: writing is refused until a"
                " session with a peer completes ('mindoo sync wait'), or"
                f" 'mindoo recovery confirm-head {t['name']}' if no other copy of you ever wrote"
            )
        for f in t.get("forks", []):
            who = f["name"] or f["author"][:16]
            lines.append(
                f"  FORK: {who} signed two different entries at #{f['seq']} (stolen key or"
                f" misbehaving member); its entries from #{f['seq']} on are withdrawn everywhere;"
                f" evidence {', '.join(e[:16] for e in f['evidence']) or 'none kept'}"
            )
    lines.extend(_durability_lines(data.get("durability", [])))
    lines.extend(
        f"busy:       {row['task']}: {row['doing']} {row['done']:,}/{row['total']:,}"
        for row in data.get("busy", [])
    )
    if data.get("durability_error"):
        lines.append(
            f"durability: the last count failed ({data['durability_error']}); the rows shown"
            " are from the count before it, and it is retried"
        )
    lines.append(f"peer id:    {data['peer_id']}")
    if not data["daemon_running"]:
        lines.append("daemon:     not running (start it with 'mindoo node run')")
        return "\n".join(lines)
    lines.extend(f"listening:  {addr}" for addr in data["listen_addrs"])
    if not data["peers"]:
        lines.append("peers:      none (add one with 'mindoo peers add MULTIADDR')")
    for peer in data["peers"]:
        state = "connected" if peer["connected"] else "disconnected"
        synced = fmt_ms(peer["last_sync_ms"]) if peer["last_sync_ms"] else "never"
        busy = f", syncing {peer['progress']}" if peer["syncing"] else ""
        error = f", last error: {peer['last_error']}" if peer["last_error"] else ""
        lines.append(f"peer {peer['peer_id']}: {state}, last sync {synced}{busy}{error}")
    for d in data["sync"]:
        lines.append(f"  {d['tenant']}/{d['database']}: {d['entries']} entries, {sync_text(d)}")
    return "\n".join(lines)


def sync_text(d: dict[str, Any]) -> str:
    """A database's sync state in words: syncing with a percentage, rate and ETA; up to date
    with whom and since when; not synced; behind, with what is known to be missing."""
    sync = d.get("sync") or {}
    state = sync.get("state", "not synced")
    if state == "syncing":
        percent = sync.get("percent")
        text = "syncing" + (f" {percent:.1f} %" if percent is not None else "")
        if sync.get("lacking"):
            text += f", {sync['lacking']} to fetch"
        if sync.get("eta_s") is not None:
            text += f", about {sync['eta_s']:.0f} s left"
        return text
    if state == "up to date":
        caught = ", ".join(f"{c['peer_id'][-8:]} at {fmt_ms(c['at_ms'])}" for c in d["caught_up"])
        return f"up to date with {caught}" if caught else "up to date"
    if state == "behind":
        return f"behind: {d['missing']} known missing"
    return "not synced with any connected peer yet"


def _durability_lines(rows: list[dict[str, Any]]) -> list[str]:
    """ "acme/notes: 3 entries exist only on this device, oldest 2 h ago" per database with
    such entries, or one line saying there are none."""
    from mindoo_p2p.durability import DatabaseDurability, only_here_text
    from mindoo_p2p.tenant_secrets import now_ms

    alone = [DatabaseDurability(**row) for row in rows if row["only_here"]]
    if not alone:
        return ["durability: every entry written here is held by a peer too"] if rows else []
    now = now_ms()
    return [f"durability: {r.tenant}/{r.database}: {only_here_text(r, now)}" for r in alone]
