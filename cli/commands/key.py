"""key create|rotate|list|export|import|shred: named encryption keys."""

from __future__ import annotations

import click

from mindoo_p2p.commands import KEY_FILE_PASSWORD
from mindoo_p2p.key_transfer import MAX_KEY_FILE_SIZE, Protection, read_key_file

from ..context import read_bounded
from ..params import MindooGroup, UserFile, UserPath, cli_context
from .tenant import read_identity


@click.group(cls=MindooGroup)
def key() -> None:
    """Create, list and move named encryption keys."""


@key.command("create")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
def key_create(tenant_name: str, name: str) -> None:
    """Create a named key and announce it to the tenant (admin only)."""
    c = cli_context()
    t = c.node().tenant(tenant_name)
    k = t.create_key(name)
    c.emit(
        {"tenant": t.id_hex, "name": k.name, "version": k.version, "key_id": k.key_id.hex()},
        f"created key {k.name} (version {k.version}, id {k.key_id.hex()})",
    )


@key.command("rotate")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
def key_rotate(tenant_name: str, name: str) -> None:
    """Create and announce the next version of a key, 'default' included (admin only)."""
    c = cli_context()
    t = c.node().tenant(tenant_name)
    k = t.rotate_key(name)
    c.emit(
        {"tenant": t.id_hex, "name": k.name, "version": k.version, "key_id": k.key_id.hex()},
        f"rotated key {k.name} to version {k.version} (id {k.key_id.hex()});"
        " export it to the members who should read what it seals",
    )


@key.command("list")
@click.argument("tenant_name", metavar="TENANT")
def key_list(tenant_name: str) -> None:
    """List a tenant's keys: announced in the tenant log and/or held on this node."""
    c = cli_context()
    rows = [info.to_dict() for info in c.node().tenant(tenant_name).key_directory()]
    text = "\n".join(
        f"{r['key_id']}  {r['name']} v{r['version']}"
        f"  {'held' if r['held'] else 'not held'}{'' if r['announced'] else '  (not announced)'}"
        for r in rows
    )
    c.emit(rows, text or "no keys")


@key.command("export")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
@click.option(
    "--to",
    "to",
    type=UserFile(exists=True),
    help="Seal the key to this identity file (from 'mindoo whoami').",
)
@click.option(
    "--password",
    "use_password",
    is_flag=True,
    help=f"Protect the key with a password (${KEY_FILE_PASSWORD.env_var} or a prompt).",
)
@click.option("--out", required=True, type=UserFile(), help="Where to write the key file.")
def key_export(
    tenant_name: str, name: str, to: UserPath | None, use_password: bool, out: UserPath
) -> None:
    """Write every version of a key to a file sealed to a person or protected by a password."""
    if (to is None) == (not use_password):
        raise click.UsageError("give exactly one of --to IDENTITY_FILE or --password")
    c = cli_context()
    n = c.node()
    t = n.tenant(tenant_name)
    if to is not None:
        recipient = read_identity(to)
        data = n.export_key(t, name, to=recipient)
        whom = f"{recipient.name} ({recipient.fingerprint})"
    else:
        data = n.export_key(t, name, password=c.secret(KEY_FILE_PASSWORD, new=True))
        whom = "password holders"
    out.path.write_bytes(data)
    c.emit({"out": str(out), "name": name}, f"key {name} for {whom} written to {out}")


@key.command("import")
@click.argument("key_file", metavar="FILE", type=UserFile(exists=True))
def key_import(key_file: UserPath) -> None:
    """Import a key file addressed to you (or protected by a password you know)."""
    c = cli_context()
    parsed = read_key_file(read_bounded(key_file.path, MAX_KEY_FILE_SIZE, "key file", key_file))
    password = (
        c.secret(KEY_FILE_PASSWORD, new=False)
        if parsed.info.protection is Protection.PASSWORD
        else None
    )
    result = c.node().import_key(parsed, password=password)
    versions = ", ".join(str(v) for v in result.added_versions) or "none new"
    c.emit(
        {
            "tenant": result.tenant.id_hex,
            "name": result.name,
            "added_versions": result.added_versions,
        },
        f"imported key {result.name} of tenant {result.tenant.name} (versions: {versions})",
    )


def _shred_warning(tenant: str, name: str, versions: list[int]) -> str:
    shown = ", ".join(str(v) for v in versions)
    return (
        f"Shredding key {name!r} of tenant {tenant!r} destroys every version this node holds"
        f" ({shown}): this node can never read the documents sealed with it again. Erasure is"
        " complete only when every other holder shreds its copy too and every key file"
        " exported earlier is destroyed. The encrypted entries stay in the log and keep"
        " syncing."
    )


@key.command("shred")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def key_shred(tenant_name: str, name: str, yes: bool) -> None:
    """Destroy this node's copies of a named key (crypto-shredding, for erasure)."""
    from mindoo_p2p.keyring import DEFAULT_KEY, MEMBERSHIP_KEY

    c = cli_context()
    t = c.node().tenant(tenant_name)
    held = sorted(k.version for k in t.keyring if k.name == name)
    # Refusals (reserved name, key not held) come from shred_key, before any question.
    if not yes and held and name not in (DEFAULT_KEY, MEMBERSHIP_KEY):
        warning = _shred_warning(t.name, name, held)
        if c.daemon is not None:
            raise click.ClickException(
                f"{warning} The running daemon executes this command and cannot ask: add --yes"
                " to confirm."
            )
        c.echo(warning, err=True)
        if not c.confirm(f"Shred key {name!r}?"):
            raise click.ClickException(f"key {name!r} was not shredded: nothing changed")
    versions = t.shred_key(name)
    c.emit(
        {"tenant": t.id_hex, "name": name, "destroyed_versions": versions},
        f"shredded key {name} (versions {', '.join(str(v) for v in versions)}): this node can"
        " no longer read its documents; the other holders must shred theirs too",
    )


COMMANDS: list[click.Command] = [key]
