"""recovery export|restore|confirm-head: a password-protected kit of the user's keys."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mindoo_p2p.commands import RECOVERY_KIT_PASSWORD
from mindoo_p2p.node import Node, is_initialized
from mindoo_p2p.recovery import MAX_KIT_SIZE, export_recovery_kit, read_recovery_kit

from ..context import read_bounded
from ..params import MindooGroup, UserFile, UserPath, cli_context


def _write_new_private_file(path: Path, shown: object, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data`` durably; never replaces a file
    (ClickException naming it as ``shown`` when it exists); removes what it created on
    failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{shown} exists already: it was not overwritten") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@click.group(cls=MindooGroup)
def recovery() -> None:
    """Export a recovery kit of your keys; restore it on a new device."""


@recovery.command("export")
@click.option(
    "--out",
    required=True,
    type=UserFile(),
    help="Where to write the kit (a new file, mode 0600).",
)
def recovery_export(out: UserPath) -> None:
    """Write your identity and every tenant's keys to a password-protected recovery kit."""
    c = cli_context()
    if os.path.lexists(out.path):
        raise click.ClickException(f"{out} exists already: it was not overwritten")
    node = c.node()
    data = export_recovery_kit(node, c.secret(RECOVERY_KIT_PASSWORD, new=True))
    _write_new_private_file(out.path, out, data)
    ident = node.public_identity()
    warning = (
        f"anyone with this file and its password becomes {ident.name} ({ident.fingerprint}):"
        " they can read and write everything you can. Keep it offline, away from the password."
    )
    c.emit(
        {
            "out": str(out),
            "tenants": len(node.tenants()),
            "fingerprint": ident.fingerprint,
            "warning": warning,
        },
        f"recovery kit for {ident.name} ({ident.fingerprint}) with {len(node.tenants())}"
        f" tenants written to {out}\nWARNING: {warning}\n"
        f"Restore it on a new device with: mindoo --home DIR recovery restore {out}",
    )


@recovery.command("restore")
@click.argument("kit_file", metavar="FILE", type=UserFile(exists=True))
def recovery_restore(kit_file: UserPath) -> None:
    """Create a new node in the home directory from a recovery kit (a new peer id; documents
    come back from your peers and mirrors once it syncs)."""
    c = cli_context()
    if c.daemon is not None or is_initialized(c.home):
        raise click.ClickException(
            f"a node already exists in {c.home}: restore into a new home (--home DIR)"
        )
    data = read_bounded(kit_file.path, MAX_KIT_SIZE, "recovery kit", kit_file)
    kit_password = c.secret(RECOVERY_KIT_PASSWORD, new=False)
    kit = read_recovery_kit(data, kit_password)  # a bad kit or password fails before any question
    node = Node.restore_kit(c.home, kit, c.password(confirm=True))
    c.adopt(node)
    ident = node.public_identity()
    tenants = [{"id": t.id_hex, "name": t.name, "admin": t.is_admin} for t in node.tenants()]
    lines = [f"restored {ident.name} ({ident.fingerprint}) into {c.home}"]
    lines += [f"tenant {t['name']} ({t['id']}){'  (admin)' if t['admin'] else ''}" for t in tenants]
    lines.append(
        "this device has a new peer id; add a peer or mirror ('mindoo peers add') and run"
        " 'mindoo node run' to get your documents back"
    )
    if tenants:
        lines.append(
            "writing is refused in each tenant until it has synced with a peer ('mindoo sync"
            " wait'): your last entries may be elsewhere, and writing before would fork them."
            " If no other copy of this identity ever wrote in a tenant:"
            " 'mindoo recovery confirm-head TENANT'"
        )
    c.emit(
        {
            "home": str(c.home),
            "name": ident.name,
            "fingerprint": ident.fingerprint,
            "tenants": tenants,
            "restored_until_synced": [t["id"] for t in tenants],
        },
        "\n".join(lines),
    )


@recovery.command("confirm-head")
@click.argument("tenant_name", metavar="TENANT")
def recovery_confirm_head(tenant_name: str) -> None:
    """Allow writing in a restored TENANT before it has synced: only when no other copy of
    this identity (the lost device, another restore of the kit) ever wrote in it, or its
    entries are all here. Otherwise a write forks you and every node withdraws your entries."""
    c = cli_context()
    node = c.node()
    tenant = node.tenant(tenant_name)
    head = node.store.next_author_seq(tenant.id, node.identity.signing.public_key) - 1
    was_marked = node.confirm_chain_head(tenant)
    text = (
        f"tenant {tenant.name} ({tenant.id_hex}): writing allowed; your next entry continues"
        f" after #{head} held here"
        if was_marked
        else f"tenant {tenant.name} ({tenant.id_hex}) was not waiting for a sync: nothing to do"
    )
    c.emit(
        {"tenant": tenant.id_hex, "name": tenant.name, "was_restored": was_marked, "head": head},
        text,
    )


COMMANDS: list[click.Command] = [recovery]
