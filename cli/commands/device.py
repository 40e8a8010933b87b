"""device request|enroll|list|revoke: several devices, one person."""

from __future__ import annotations

import click

from mindoo_p2p.commands import find_member
from mindoo_p2p.device_request import MAX_REQUEST_SIZE, DeviceRequest

from ..context import read_bounded
from ..params import MindooGroup, UserFile, UserPath, cli_context, sealed_file_options
from .tenant import read_identity


@click.group(cls=MindooGroup)
def device() -> None:
    """Several devices, one person: enroll and revoke your own devices."""


@device.command("request")
@click.option(
    "--user",
    required=True,
    type=UserFile(exists=True),
    help="Your identity in the tenant (from 'mindoo whoami --tenant TENANT --out FILE' on the"
    " node that will enroll this one).",
)
@click.option(
    "--out", required=True, type=UserFile(), help="Where to write the request (signed here)."
)
def device_request(user: UserPath, out: UserPath) -> None:
    """On a new device: ask to be enrolled as a device of USER, signed with this node's key
    (the proof that nobody else enrolls this key as theirs)."""
    c = cli_context()
    user_identity = read_identity(user)
    request = c.node().device_request(user_identity)
    out.path.write_bytes(request.encode())
    c.emit(
        {"request": str(out), "user": user_identity.name, "device": request.device.fingerprint},
        f"wrote {out}; on {user_identity.name}'s node run:"
        f" mindoo device enroll TENANT --to {out} --out ENROLMENT",
    )


@device.command("enroll")
@click.argument("tenant_name", metavar="TENANT")
@sealed_file_options(
    "The new device's request (from 'mindoo device request --user YOUR_IDENTITY' on it).",
    "Where to write the enrolment (open it on the device with 'mindoo tenant join').",
)
def device_enroll(tenant_name: str, to: UserPath, out: UserPath) -> None:
    """Enroll another device of yours: it gets its own signing key and your keys."""
    c = cli_context()
    request = DeviceRequest.decode(read_bounded(to.path, MAX_REQUEST_SIZE, "device request", to))
    new_device = request.device
    n = c.node()
    data = n.enroll_device(n.tenant(tenant_name), request)
    out.path.write_bytes(data)
    c.emit(
        {"enrolment": str(out), "device": new_device.name, "fingerprint": new_device.fingerprint},
        f"enrolled {new_device.name} ({new_device.fingerprint}); on it run:"
        f" mindoo tenant join {out}",
    )


@device.command("list")
@click.argument("tenant_name", metavar="TENANT")
def device_list(tenant_name: str) -> None:
    """List the enrolled devices of a tenant's members."""
    c = cli_context()
    t = c.node().tenant(tenant_name)
    rows = [
        {
            "name": d.identity.name,
            "fingerprint": d.identity.fingerprint,
            "user": t.member_name(d.user_key),
            "revoked": d.revoked_entry is not None,
        }
        for d in t.membership.devices()
    ]
    text = "\n".join(
        f"{r['fingerprint']}  {r['name']}  of {r['user']}{'  (revoked)' if r['revoked'] else ''}"
        for r in rows
    )
    c.emit(rows, text or "no devices")


@device.command("revoke")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("which", metavar="DEVICE")
def device_revoke(tenant_name: str, which: str) -> None:
    """Revoke one device (lost or sold): your other devices keep working.

    Run it on the device that enrolled it, or as the admin. DEVICE is a name, fingerprint or
    signing key.
    """
    c = cli_context()
    t = c.node().tenant(tenant_name)
    match = find_member(t, which)
    if match.kind != "device":
        raise click.ClickException(f"{which!r} is a member, not a device: use 'tenant revoke'")
    t.revoke_device(match.signing_key)
    c.emit(
        {"tenant": t.id_hex, "revoked_device": match.signing_key.hex()},
        f"revoked device {match.identity}: every node rejects its new entries; your other"
        " devices are unaffected. Consider 'mindoo key rotate' for keys it held.",
    )


COMMANDS: list[click.Command] = [device]
