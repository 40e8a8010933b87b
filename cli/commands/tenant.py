"""tenant create|list|members|invite|join|revoke."""

from __future__ import annotations

import click

from mindoo_p2p.commands import find_member
from mindoo_p2p.identity import MAX_IDENTITY_FILE_SIZE, PublicIdentity
from mindoo_p2p.invite import MAX_INVITE_SIZE

from ..context import read_bounded
from ..params import MindooGroup, UserFile, UserPath, cli_context, sealed_file_options


def read_identity(file: UserPath) -> PublicIdentity:
    """The public identity in an identity file (from 'mindoo whoami')."""
    return PublicIdentity.from_json(
        read_bounded(file.path, MAX_IDENTITY_FILE_SIZE, "identity file", file)
    )


@click.group(cls=MindooGroup)
def tenant() -> None:
    """Create, list, invite to and join tenants."""


@tenant.command("create")
@click.argument("name")
def tenant_create(name: str) -> None:
    """Create a tenant; you become its admin and first member."""
    c = cli_context()
    t = c.node().create_tenant(name)
    c.emit({"id": t.id_hex, "name": t.name}, t.id_hex)


@tenant.command("list")
def tenant_list() -> None:
    """List the tenants this node belongs to."""
    c = cli_context()
    rows = [
        {"id": t.id_hex, "name": t.name, "admin": t.is_admin, "databases": t.databases()}
        for t in c.node().tenants()
    ]
    text = "\n".join(f"{r['id']}  {r['name']}{'  (admin)' if r['admin'] else ''}" for r in rows)
    c.emit(rows, text or "no tenants")


@tenant.command("members")
@click.argument("tenant_name", metavar="TENANT")
def tenant_members(tenant_name: str) -> None:
    """List a tenant's members."""
    c = cli_context()
    rows = [
        {
            "name": m.identity.name,
            "fingerprint": m.identity.fingerprint,
            "signing_key": m.identity.signing_key.hex(),
            "role": m.role,
            "revoked": m.revoked_entry is not None,
        }
        for m in c.node().tenant(tenant_name).members()
    ]
    text = "\n".join(
        f"{r['fingerprint']}  {r['name']}  {r['role']}{'  (revoked)' if r['revoked'] else ''}"
        for r in rows
    )
    c.emit(rows, text)


@tenant.command("invite")
@click.argument("tenant_name", metavar="TENANT")
@sealed_file_options(
    "The invitee's identity file (from 'mindoo whoami').", "Where to write the invite file."
)
@click.option(
    "--role",
    type=click.Choice(["member", "admin", "mirror"]),
    default="member",
    show_default=True,
    help="mirror: a backup/relay node that stores and serves the tenant without any document key.",
)
def tenant_invite(tenant_name: str, to: UserPath, out: UserPath, role: str) -> None:
    """Add a person to a tenant and write an invite only they can open."""
    c = cli_context()
    invitee = read_identity(to)
    n = c.node()
    data = n.invite(n.tenant(tenant_name), invitee, role=role)
    out.path.write_bytes(data)
    c.emit(
        {"invite": str(out), "invitee": invitee.name, "fingerprint": invitee.fingerprint},
        f"invite for {invitee.name} ({invitee.fingerprint}) written to {out}",
    )


@tenant.command("join")
@click.argument("invite", type=UserFile(exists=True))
def tenant_join(invite: UserPath) -> None:
    """Join a tenant with an invite file addressed to you."""
    c = cli_context()
    t = c.node().join(read_bounded(invite.path, MAX_INVITE_SIZE, "invite file", invite))
    c.emit({"id": t.id_hex, "name": t.name}, f"joined tenant {t.name} ({t.id_hex})")


@tenant.command("revoke")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("who", metavar="MEMBER")
@click.option(
    "--rotate/--no-rotate",
    default=True,
    show_default=True,
    help="Rotate 'default' and every named key this node holds, so new content is sealed with"
    " keys the revoked member never had.",
)
@click.option(
    "--accept-through",
    type=click.IntRange(min=0),
    default=None,
    metavar="SEQ",
    help="The member's last accepted entry, by sequence number (0: nothing it wrote stays)."
    " Default: the end of its unbroken chain of entries on this node.",
)
@click.option(
    "--accept-entry",
    default=None,
    metavar="ENTRY_ID",
    help="The member's last accepted entry, by id (64 hex digits; stored on this node).",
)
def tenant_revoke(
    tenant_name: str,
    who: str,
    rotate: bool,
    accept_through: int | None,
    accept_entry: str | None,
) -> None:
    """Revoke a member (admin only) and, by default, rotate the keys.

    MEMBER is a name, a fingerprint or a signing key. Every node then rejects the member's
    new entries, whatever order things arrive in; entries it wrote up to the cut stay. The cut
    names the last accepted entry by number and id, so nothing signed later with the member's
    key is accepted below it either. Gaps (entries this node lacks below the cut) are warned
    about: sync first, or cut lower.
    """
    c = cli_context()
    t = c.node().tenant(tenant_name)
    match = find_member(t, who)
    if match.kind != "member":
        raise click.ClickException(f"{who!r} is a device: use 'mindoo device revoke'")
    if accept_through is not None and accept_entry is not None:
        raise click.UsageError("give --accept-through or --accept-entry, not both")
    entry_id = None
    if accept_entry is not None:
        try:
            entry_id = bytes.fromhex(accept_entry)
        except ValueError:
            entry_id = b""
        if len(entry_id) != 32:
            raise click.BadParameter("an entry id is 64 hex digits", param_hint="--accept-entry")
    plan = t.revocation_plan(match.identity, accept_through=accept_through, accept_entry=entry_id)
    entry = t.revoke_member(match.identity, accept_through=accept_through, accept_entry=entry_id)
    cut = next(k for k in plan.revocation.cuts if k.signing_key == match.signing_key)
    rotated = t.rotate_keys_held() if rotate else []
    named = f", entry {cut.last_entry_id.hex()[:16]}" if cut.last_entry_id else ""
    lines = [
        f"revoked {match.identity} from tenant {t.name}: every node rejects its new entries",
        f"Accepted of it: its entries up to #{cut.last_seq}{named}.",
        *(f"warning: {warning}" for warning in plan.warnings),
        "What it could already read stays readable to it: revocation cannot take back history.",
    ]
    if rotated:
        lines.append(
            "Rotated " + ", ".join(f"{k.name} to version {k.version}" for k in rotated) + "."
        )
        lines.append(
            "New content uses these versions, which the revoked member never gets. Send them"
            " to the remaining members: mindoo key export TENANT NAME --to IDENTITY --out FILE"
        )
    else:
        lines.append(
            "Keys were not rotated (--no-rotate): new content stays readable to it if it gets"
            " the entries. Rotate with: mindoo key rotate TENANT NAME"
        )
    c.emit(
        {
            "tenant": t.id_hex,
            "revoked": match.signing_key.hex(),
            "entry": entry.id.hex(),
            "cut": {
                "seq": cut.last_seq,
                "entry": cut.last_entry_id.hex() if cut.last_entry_id else None,
            },
            "warnings": list(plan.warnings),
            "rotated": [{"name": k.name, "version": k.version} for k in rotated],
        },
        "\n".join(lines),
    )


COMMANDS: list[click.Command] = [tenant]
