"""The `mindoo` command line: parse, call the library, render. No logic of its own.

Errors are one line on stderr and exit code 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import trio

from mindoo_p2p.bundle import check_bundle, export_entries, import_bundle, write_bundle
from mindoo_p2p.config import NodeConfig, load_config
from mindoo_p2p.control import ControlClient, ControlError, control_socket, daemon_running
from mindoo_p2p.database import Database, parse_path
from mindoo_p2p.errors import InvalidPathError, MindooError, sole_exception
from mindoo_p2p.identity import MAX_IDENTITY_FILE_SIZE, PublicIdentity
from mindoo_p2p.invite import MAX_INVITE_SIZE
from mindoo_p2p.key_transfer import MAX_KEY_FILE_SIZE, Protection, read_key_file
from mindoo_p2p.node import IDENTITY_FILE, Node, is_initialized
from mindoo_p2p.recovery import MAX_KIT_SIZE, export_recovery_kit, read_recovery_kit
from mindoo_p2p.store import AppendResult
from mindoo_p2p.tenant import Tenant

if TYPE_CHECKING:
    from mindoo_p2p.daemon import NodeDaemon

from .context import CliContext, read_bounded, resolve_home
from .json_args import parse_json_argument


def _ctx() -> CliContext:
    """The state the group callback stored for this invocation."""
    state = click.get_current_context().find_object(CliContext)
    if state is None:  # only when a command is invoked without the `cli` group
        raise RuntimeError("mindoo command invoked outside the mindoo group")
    return state


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Node home directory (default: $MINDOO_HOME or ~/.local/share/mindoo).",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON output.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the node password from this file (else $MINDOO_PASSWORD or a prompt).",
)
@click.pass_context
def cli(
    ctx: click.Context, home: Path | None, json_output: bool, password_file: Path | None
) -> None:
    """mindoo: end-to-end encrypted, offline-first document databases, synced peer to peer."""
    hook = ctx.obj if isinstance(ctx.obj, DaemonHook) else None
    state = CliContext(resolve_home(str(home) if home else None), json_output, password_file)
    if hook is not None:
        state._node, state.daemon, state._owns_node = hook.node, hook.daemon, False
    elif ctx.invoked_subcommand not in LOCAL_ONLY and daemon_running(state.home):
        # A daemon owns this home: let it run the command (it holds the unlocked keys, and
        # what it writes reaches the peers at once).
        raise _Forward(state.home)
    ctx.obj = state
    ctx.call_on_close(state.close)


# -- node ------------------------------------------------------------------------------------
@cli.command()
@click.option("--name", help="Your display name (default: the login name).")
def init(name: str | None) -> None:
    """Create a node in the home directory: a new identity and an encrypted keystore."""
    c = _ctx()
    node = Node.init(c.home, c.password(confirm=True), name=name)
    c._node = node
    ident = node.public_identity()
    c.emit(
        {"home": str(c.home), "name": ident.name, "fingerprint": ident.fingerprint},
        f"initialised node in {c.home}\nidentity: {ident.name} ({ident.fingerprint})",
    )


@cli.command()
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the identity file here."
)
def whoami(out: Path | None) -> None:
    """Print this node's public identity (send the identity file to a tenant admin)."""
    c = _ctx()
    ident = c.node().public_identity()
    path = c.home / IDENTITY_FILE
    if out is not None:
        out.write_text(ident.to_json(), encoding="utf-8")
        path = out
    c.emit(
        {
            "name": ident.name,
            "fingerprint": ident.fingerprint,
            "signing_key": ident.signing_key.hex(),
            "encryption_key": ident.encryption_key.hex(),
            "identity_file": str(path),
        },
        f"name:           {ident.name}\nfingerprint:    {ident.fingerprint}\n"
        f"signing key:    {ident.signing_key.hex()}\nencryption key: {ident.encryption_key.hex()}\n"
        f"identity file:  {path}",
    )


def _status(node: Node) -> dict[str, Any]:
    tenants = []
    for tenant in node.tenants():
        dbs = []
        for name in tenant.databases():
            stats = tenant.open_db(name).stats()
            dbs.append({"name": name, **stats})
        tenants.append(
            {
                "id": tenant.id_hex,
                "name": tenant.name,
                "admin": tenant.is_admin,
                "members": len([m for m in tenant.members() if m.revoked_entry is None]),
                "databases": dbs,
            }
        )
    ident = node.public_identity()
    return {
        "home": str(node.home),
        "identity": {"name": ident.name, "fingerprint": ident.fingerprint},
        "entries": node.store.count(),
        "tenants": tenants,
    }


def _render_status(data: dict[str, Any]) -> str:
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
    lines.append(f"peer id:    {data['peer_id']}")
    if not data["daemon_running"]:
        lines.append("daemon:     not running (start it with 'mindoo node run')")
        return "\n".join(lines)
    daemon = data
    lines.extend(f"listening:  {addr}" for addr in daemon["listen_addrs"])
    if not daemon["peers"]:
        lines.append("peers:      none (add one with 'mindoo peers add MULTIADDR')")
    for peer in daemon["peers"]:
        state = "connected" if peer["connected"] else "disconnected"
        synced = _fmt_ms(peer["last_sync_ms"]) if peer["last_sync_ms"] else "never"
        busy = f", syncing {peer['progress']}" if peer["syncing"] else ""
        error = f", last error: {peer['last_error']}" if peer["last_error"] else ""
        lines.append(f"peer {peer['peer_id']}: {state}, last sync {synced}{busy}{error}")
    for d in daemon["sync"]:
        caught = ", ".join(f"{c['peer_id'][-8:]} at {_fmt_ms(c['at_ms'])}" for c in d["caught_up"])
        lines.append(
            f"  {d['tenant']}/{d['database']}: {d['entries']} entries, {d['missing']} known"
            f" missing{', caught up with ' + caught if caught else ''}"
        )
    return "\n".join(lines)


@cli.command()
def status() -> None:
    """Show the node's identity, tenants, databases and, when running, its peers."""
    c = _ctx()
    node = c.node()
    data = _status(node)
    if c.daemon is not None:
        live = c.daemon.status()
        data.update(
            daemon_running=True,
            peer_id=live["peer_id"],
            listen_addrs=live["listen_addrs"],
            peers=live["peers"],
            sync=live["databases"],
        )
    else:
        from mindoo_p2p.net.peer_identity import peer_id_of

        data.update(
            daemon_running=False,
            peer_id=peer_id_of(node.peer_seed()),
            listen_addrs=[],
            peers=[],
            sync=[],
        )
    c.emit(data, _render_status(data))


@cli.group()
def node() -> None:
    """Run the node."""


@node.command("run")
@click.option("--listen", multiple=True, help="Multiaddr to listen on (repeatable).")
@click.option("--bootstrap", multiple=True, help="Multiaddr of a peer to keep connected.")
@click.option("--mdns/--no-mdns", default=None, help="Discover peers on the LAN (default: off).")
def node_run(listen: tuple[str, ...], bootstrap: tuple[str, ...], mdns: bool | None) -> None:
    """Run the node daemon until Ctrl-C or SIGTERM (creates the node on first use)."""
    c = _ctx()
    if not is_initialized(c.home):
        c._node = Node.init(c.home, c.password(confirm=True))
        click.echo(f"initialised a new node in {c.home}", err=True)
    config = load_config(c.home).with_overrides(listen=listen, bootstrap=bootstrap, mdns=mdns)
    _check_addrs(config)
    if config.mdns and not config.mdns_interfaces:
        raise click.BadParameter(
            "mDNS needs the interfaces to use: list their IP addresses in network.mdns_interfaces"
            " in config.toml (it never runs on every interface)",
            param_hint="--mdns",
        )
    node = c.node()
    from mindoo_p2p.daemon import DaemonError

    if daemon_running(c.home):
        raise DaemonError(f"a daemon is already running on {c.home}")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    trio.run(_serve, node, config, c.json_output)


@node.command("start", hidden=True)
@click.pass_context
def node_start(ctx: click.Context) -> None:
    """Same as 'node run' (kept for older scripts)."""
    ctx.invoke(node_run, listen=(), bootstrap=(), mdns=None)


def _check_addrs(config: NodeConfig) -> None:
    from mindoo_p2p.net.peer_identity import parse_dial_addr, parse_listen_addr

    for addr in config.listen:
        try:
            parse_listen_addr(addr)
        except (ValueError, MindooError) as exc:
            raise click.BadParameter(f"{addr!r}: {exc}", param_hint="--listen") from None
    for addr in config.bootstrap:
        try:
            parse_dial_addr(addr)
        except (ValueError, MindooError) as exc:
            raise click.BadParameter(f"{addr!r}: {exc}", param_hint="--bootstrap") from None


async def _serve(node: Node, config: NodeConfig, json_output: bool) -> None:
    from mindoo_p2p.daemon import NodeDaemon

    daemon: NodeDaemon

    def runner(argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, Any]:
        return run_in_daemon(argv, cwd, DaemonHook(node, daemon), env)

    daemon = NodeDaemon(node, config, command_runner=runner)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            info = {"peer_id": daemon.peer_id, "listen_addrs": daemon.listen_addrs()}
            if json_output:
                click.echo(json.dumps(info))
            else:
                click.echo(f"node {daemon.peer_id} running; listening on:")
                for addr in info["listen_addrs"]:
                    click.echo(f"  {addr}")
            sys.stdout.flush()
            async for signum in signals:
                logging.getLogger("mindoo").info("signal %d: stopping", signum)
                nursery.cancel_scope.cancel()
                break


@cli.command()
@click.option("--tenant", "tenant_name", help="Only this tenant (name or id).")
@click.option("--db", "database", help="Only this database.")
def watch(tenant_name: str | None, database: str | None) -> None:
    """Print entries as they arrive or are written (one JSON object per line); needs the daemon."""
    c = _ctx()
    if c.daemon is not None:
        raise click.ClickException("'watch' cannot run inside the daemon")
    if not daemon_running(c.home):
        raise click.ClickException("no daemon is running on this home: start 'mindoo node run'")
    params: dict[str, Any] = {}
    if tenant_name is not None:
        params["tenant"] = tenant_name
    if database is not None:
        params["database"] = database
    try:
        for event in ControlClient(control_socket(c.home)).events(params):
            if event.get("type") == "subscribed":
                continue
            click.echo(json.dumps(event, sort_keys=True))
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@cli.group()
def peers() -> None:
    """List and add peers (the address book)."""


@peers.command("list")
def peers_list() -> None:
    """Known peers: addresses, and connection and sync state when the daemon runs."""
    from mindoo_p2p.address_book_file import load_address_book

    c = _ctx()
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

    c = _ctx()
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


# -- tenants ---------------------------------------------------------------------------------
@cli.group()
def tenant() -> None:
    """Create, list, invite to and join tenants."""


@tenant.command("create")
@click.argument("name")
def tenant_create(name: str) -> None:
    """Create a tenant; you become its admin and first member."""
    c = _ctx()
    t = c.node().create_tenant(name)
    c.emit({"id": t.id_hex, "name": t.name}, t.id_hex)


@tenant.command("list")
def tenant_list() -> None:
    """List the tenants this node belongs to."""
    c = _ctx()
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
    c = _ctx()
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


F = TypeVar("F", bound=Callable[..., Any])


def _sealed_file_options(to_help: str, out_help: str) -> Callable[[F], F]:
    """``--to IDENTITY_FILE --out FILE``, for commands that seal a file to someone."""

    def decorate(command: F) -> F:
        command = click.option(
            "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help=out_help
        )(command)
        return click.option(
            "--to",
            "to",
            required=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help=to_help,
        )(command)

    return decorate


def _read_identity(path: Path) -> PublicIdentity:
    return PublicIdentity.from_json(read_bounded(path, MAX_IDENTITY_FILE_SIZE, "identity file"))


@tenant.command("invite")
@click.argument("tenant_name", metavar="TENANT")
@_sealed_file_options(
    "The invitee's identity file (from 'mindoo whoami').", "Where to write the invite file."
)
@click.option(
    "--role",
    type=click.Choice(["member", "admin", "mirror"]),
    default="member",
    show_default=True,
    help="mirror: a backup/relay node that stores and serves the tenant without any document key.",
)
def tenant_invite(tenant_name: str, to: Path, out: Path, role: str) -> None:
    """Add a person to a tenant and write an invite only they can open."""
    c = _ctx()
    invitee = _read_identity(to)
    n = c.node()
    data = n.invite(n.tenant(tenant_name), invitee, role=role)
    out.write_bytes(data)
    c.emit(
        {"invite": str(out), "invitee": invitee.name, "fingerprint": invitee.fingerprint},
        f"invite for {invitee.name} ({invitee.fingerprint}) written to {out}",
    )


@tenant.command("join")
@click.argument("invite", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def tenant_join(invite: Path) -> None:
    """Join a tenant with an invite file addressed to you."""
    c = _ctx()
    t = c.node().join(read_bounded(invite, MAX_INVITE_SIZE, "invite file"))
    c.emit({"id": t.id_hex, "name": t.name}, f"joined tenant {t.name} ({t.id_hex})")


def _find_member_key(t: Tenant, who: str) -> bytes:
    """The signing key of the member or device named ``who``: a name, a fingerprint or a
    signing key (hex, or a unique hex prefix of at least 8 digits)."""
    identities = [(m.identity, "member") for m in t.members()]
    identities += [(d.identity, "device") for d in t.membership.devices()]
    wanted = who.lower()
    matches = {
        identity.signing_key
        for identity, _ in identities
        if identity.name == who
        or identity.fingerprint.lower() == wanted
        or (len(wanted) >= 8 and identity.signing_key.hex().startswith(wanted))
    }
    if not matches:
        raise click.ClickException(f"no member or device {who!r} in tenant {t.name!r}")
    if len(matches) > 1:
        raise click.ClickException(
            f"{who!r} names {len(matches)} members or devices of tenant {t.name!r}: use the"
            " fingerprint"
        )
    return matches.pop()


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
def tenant_revoke(tenant_name: str, who: str, rotate: bool) -> None:
    """Revoke a member (admin only) and, by default, rotate the keys.

    MEMBER is a name, a fingerprint or a signing key. Every node then rejects the member's
    new entries, whatever order things arrive in; entries it wrote before stay.
    """
    c = _ctx()
    t = c.node().tenant(tenant_name)
    key = _find_member_key(t, who)
    member = t.membership.member(key)
    if member is None:
        raise click.ClickException(f"{who!r} is a device: use 'mindoo device revoke'")
    entry = t.revoke_member(member.identity)
    rotated = t.rotate_keys_held() if rotate else []
    lines = [
        f"revoked {member.identity} from tenant {t.name}: every node rejects its new entries",
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
            "revoked": key.hex(),
            "entry": entry.id.hex(),
            "rotated": [{"name": k.name, "version": k.version} for k in rotated],
        },
        "\n".join(lines),
    )


@cli.group()
def device() -> None:
    """Several devices, one person: enroll and revoke your own devices."""


@device.command("enroll")
@click.argument("tenant_name", metavar="TENANT")
@_sealed_file_options(
    "The new device's identity file (from 'mindoo whoami' on that device).",
    "Where to write the enrolment (open it on the device with 'mindoo tenant join').",
)
def device_enroll(tenant_name: str, to: Path, out: Path) -> None:
    """Enroll another device of yours: it gets its own signing key and your keys."""
    c = _ctx()
    new_device = _read_identity(to)
    n = c.node()
    data = n.enroll_device(n.tenant(tenant_name), new_device)
    out.write_bytes(data)
    c.emit(
        {"enrolment": str(out), "device": new_device.name, "fingerprint": new_device.fingerprint},
        f"enrolled {new_device.name} ({new_device.fingerprint}); on it run:"
        f" mindoo tenant join {out}",
    )


@device.command("list")
@click.argument("tenant_name", metavar="TENANT")
def device_list(tenant_name: str) -> None:
    """List the enrolled devices of a tenant's members."""
    c = _ctx()
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
    c = _ctx()
    t = c.node().tenant(tenant_name)
    key = _find_member_key(t, which)
    found = t.membership.device(key)
    if found is None:
        raise click.ClickException(f"{which!r} is a member, not a device: use 'tenant revoke'")
    t.revoke_device(key)
    c.emit(
        {"tenant": t.id_hex, "revoked_device": key.hex()},
        f"revoked device {found.identity}: every node rejects its new entries; your other"
        " devices are unaffected. Consider 'mindoo key rotate' for keys it held.",
    )


# -- named keys ------------------------------------------------------------------------------
KEY_PASSWORD_ENV = "MINDOO_KEY_PASSWORD"


def _key_password(*, confirm: bool) -> str:
    """The key file password: $MINDOO_KEY_PASSWORD, else a hidden prompt on a terminal."""
    password = os.environ.get(KEY_PASSWORD_ENV)
    if not password:
        if _ctx().daemon is not None:
            raise click.ClickException(
                f"a key file password is needed: the running daemon executes this command, so"
                f" set {KEY_PASSWORD_ENV} in your shell"
            )
        if not sys.stdin.isatty():
            raise click.ClickException(
                f"a key file password is needed: set {KEY_PASSWORD_ENV} or run in a terminal"
            )
        password = click.prompt(
            "Key file password", hide_input=True, confirmation_prompt=confirm, err=True
        )
    if not password:
        raise click.ClickException("the key file password must not be empty")
    return password


@cli.group()
def key() -> None:
    """Create, list and move named encryption keys."""


@key.command("create")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="NAME")
def key_create(tenant_name: str, name: str) -> None:
    """Create a named key and announce it to the tenant (admin only)."""
    c = _ctx()
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
    c = _ctx()
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
    c = _ctx()
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
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Seal the key to this identity file (from 'mindoo whoami').",
)
@click.option(
    "--password",
    "use_password",
    is_flag=True,
    help=f"Protect the key with a password (${KEY_PASSWORD_ENV} or a prompt).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the key file.",
)
def key_export(tenant_name: str, name: str, to: Path | None, use_password: bool, out: Path) -> None:
    """Write every version of a key to a file sealed to a person or protected by a password."""
    if (to is None) == (not use_password):
        raise click.UsageError("give exactly one of --to IDENTITY_FILE or --password")
    c = _ctx()
    n = c.node()
    t = n.tenant(tenant_name)
    if to is not None:
        recipient = _read_identity(to)
        data = n.export_key(t, name, to=recipient)
        whom = f"{recipient.name} ({recipient.fingerprint})"
    else:
        data = n.export_key(t, name, password=_key_password(confirm=True))
        whom = "password holders"
    out.write_bytes(data)
    c.emit({"out": str(out), "name": name}, f"key {name} for {whom} written to {out}")


@key.command("import")
@click.argument(
    "key_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def key_import(key_file: Path) -> None:
    """Import a key file addressed to you (or protected by a password you know)."""
    c = _ctx()
    parsed = read_key_file(read_bounded(key_file, MAX_KEY_FILE_SIZE, "key file"))
    password = (
        _key_password(confirm=False) if parsed.info.protection is Protection.PASSWORD else None
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

    c = _ctx()
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
        click.echo(warning, err=True)
        try:
            confirmed = click.confirm(f"Shred key {name!r}?", default=False, err=True)
        except click.Abort:  # end of input
            confirmed = False
        if not confirmed:
            raise click.ClickException(f"key {name!r} was not shredded: nothing changed")
    versions = t.shred_key(name)
    c.emit(
        {"tenant": t.id_hex, "name": name, "destroyed_versions": versions},
        f"shredded key {name} (versions {', '.join(str(v) for v in versions)}): this node can"
        " no longer read its documents; the other holders must shred theirs too",
    )


# -- databases -------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Create, list and inspect databases."""


@db.command("create")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
def db_create(tenant_name: str, name: str) -> None:
    """Create a database (names: a-z 0-9 . _ -, up to 64)."""
    c = _ctx()
    d = c.node().tenant(tenant_name).create_db(name)
    c.emit({"tenant": d.tenant.id_hex, "name": d.name}, d.name)


@db.command("list")
@click.argument("tenant_name", metavar="TENANT")
def db_list(tenant_name: str) -> None:
    """List a tenant's databases."""
    c = _ctx()
    names = c.node().tenant(tenant_name).databases()
    c.emit(names, "\n".join(names) or "no databases")


@db.command("stats")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
def db_stats(tenant_name: str, name: str) -> None:
    """Entries, documents, last cursor and bytes of a database."""
    c = _ctx()
    stats = c.node().tenant(tenant_name).find_database(name).stats()
    c.emit(stats, "\n".join(f"{k}: {v}" for k, v in stats.items()))


# -- documents -------------------------------------------------------------------------------
def _database(tenant_name: str, name: str) -> Database:
    """The database ``name`` of a tenant (by name or id); the name is validated."""
    return _ctx().node().tenant(tenant_name).open_db(name)


@cli.group()
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
    _ctx().emit({"id": doc_id}, doc_id)


@doc.command("get")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
@click.option("--at", "at", help="Time travel: ISO-8601 time or milliseconds since the epoch.")
def doc_get(tenant_name: str, name: str, doc_id: str, at: str | None) -> None:
    """Print a document as JSON."""
    d = _database(tenant_name, name)
    content = d.get(doc_id) if at is None else d.get_at(doc_id, time=_parse_time(at))
    click.echo(json.dumps(content, indent=2, sort_keys=True, default=_plain))


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
    _ctx().emit({"id": doc_id, "path": path}, "ok")


@doc.command("list")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.option("--deleted", is_flag=True, help="Include deleted documents.")
def doc_list(tenant_name: str, name: str, deleted: bool) -> None:
    """List document ids."""
    ids = _database(tenant_name, name).list_documents(include_deleted=deleted)
    _ctx().emit(ids, "\n".join(ids) or "no documents")


@doc.command("history")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
def doc_history(tenant_name: str, name: str, doc_id: str) -> None:
    """Every change of a document: entry id, author, time."""
    items = _database(tenant_name, name).history(doc_id)
    text = "\n".join(
        f"{_fmt_ms(i.timestamp_ms)}  {i.kind:<6}  {i.entry_id[:16]}"
        f"  {i.author_name or i.author[:16]}"
        for i in items
    )
    _ctx().emit([i.to_dict() for i in items], text)


@doc.command("delete")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="DB")
@click.argument("doc_id", metavar="DOC")
def doc_delete(tenant_name: str, name: str, doc_id: str) -> None:
    """Delete a document (its history stays)."""
    _database(tenant_name, name).delete(doc_id)
    _ctx().emit({"id": doc_id, "deleted": True}, "deleted")


@cli.command()
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
    _ctx().emit(
        {"changes": [i.to_dict() for i in items], "next_cursor": cursor},
        (text + "\n" if text else "") + f"next cursor: {cursor}",
    )


# -- maintenance -----------------------------------------------------------------------------
@cli.command()
def fsck() -> None:
    """Re-verify every entry and index; exit 1 if anything is wrong."""
    c = _ctx()
    report = c.node().fsck()
    problems = [
        {"entry_id": p.entry_id.hex() if p.entry_id else None, "where": p.where, "reason": p.reason}
        for p in report.problems
    ]
    text = "\n".join(f"BAD {p['entry_id'] or '-'} ({p['where']}): {p['reason']}" for p in problems)
    summary = f"checked {report.entries_checked} entries: " + (
        "ok" if report.ok else f"{len(problems)} problems"
    )
    c.emit(
        {"entries_checked": report.entries_checked, "ok": report.ok, "problems": problems},
        (text + "\n" if text else "") + summary,
    )
    if not report.ok:
        click.echo(f"error: fsck found {len(problems)} problems (listed above)", err=True)
        sys.exit(1)


@cli.command("export")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("name", metavar="[DB]", required=False)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    help="Only entries after this cursor (with DB).",
)
def export_cmd(tenant_name: str, name: str | None, out: Path, since: int) -> None:
    """Write a tenant's (or one database's) sealed entries to a bundle file."""
    if since and name is None:
        raise click.UsageError("--since needs DB: cursors belong to one database")
    c = _ctx()
    n = c.node()
    t = n.tenant(tenant_name)
    if name is not None:
        t.find_database(name)
    count = write_bundle(out, export_entries(n.store, t.id, name, since))
    c.emit({"out": str(out), "entries": count}, f"exported {count} entries to {out}")


@cli.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_cmd(bundle: Path) -> None:
    """Verify and import a bundle of sealed entries.

    A damaged bundle (broken framing, an entry that does not decode or verify) is refused whole:
    nothing is imported. Entries the tenant's membership refuses are rejected one by one.
    """
    c = _ctx()
    node = c.node()
    checked = check_bundle(bundle)  # framing, decode, signatures: once, before anything lands
    if checked.damaged:
        first = checked.damaged[0]
        raise click.ClickException(
            f"bundle {bundle} is damaged, nothing was imported: {len(checked.damaged)} bad"
            f" entries, first at position {first.position} ({first.entry_id}): {first.reason}"
        )
    result: AppendResult = import_bundle(bundle, node.ingest, checked)
    rejected = [{"entry_id": r.entry_id.hex(), "reason": r.reason} for r in result.rejected]
    text = f"imported {len(result.added)} entries, {len(result.duplicates)} already present"
    if rejected:
        text += f", {len(rejected)} rejected:\n" + "\n".join(
            f"  {r['entry_id']}: {r['reason']}" for r in rejected
        )
    c.emit(
        {"added": len(result.added), "duplicates": len(result.duplicates), "rejected": rejected},
        text,
    )
    if rejected:
        click.echo(f"error: {len(rejected)} entries of the bundle were rejected", err=True)
        sys.exit(1)


# -- recovery kit ----------------------------------------------------------------------------
RECOVERY_PASSWORD_ENV = "MINDOO_RECOVERY_PASSWORD"


def _recovery_password(*, confirm: bool) -> str:
    """The recovery kit password: $MINDOO_RECOVERY_PASSWORD, else a hidden prompt on a
    terminal (confirmed when ``confirm``)."""
    password = os.environ.get(RECOVERY_PASSWORD_ENV)
    if not password:
        if _ctx().daemon is not None:
            raise click.ClickException(
                f"a recovery kit password is needed: the running daemon executes this command,"
                f" so set {RECOVERY_PASSWORD_ENV} in your shell"
            )
        if not sys.stdin.isatty():
            raise click.ClickException(
                f"a recovery kit password is needed: set {RECOVERY_PASSWORD_ENV} or run in a"
                " terminal"
            )
        password = click.prompt(
            "Recovery kit password", hide_input=True, confirmation_prompt=confirm, err=True
        )
    if not password:
        raise click.ClickException("the recovery kit password must not be empty")
    return password


def _write_new_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data`` durably; never replaces a file
    (ClickException when it exists); removes what it created on failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists already: it was not overwritten") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@cli.group()
def recovery() -> None:
    """Export a recovery kit of your keys; restore it on a new device."""


@recovery.command("export")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the kit (a new file, mode 0600).",
)
def recovery_export(out: Path) -> None:
    """Write your identity and every tenant's keys to a password-protected recovery kit."""
    c = _ctx()
    if os.path.lexists(out):
        raise click.ClickException(f"{out} exists already: it was not overwritten")
    node = c.node()
    data = export_recovery_kit(node, _recovery_password(confirm=True))
    _write_new_private_file(out, data)
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
@click.argument(
    "kit_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def recovery_restore(kit_file: Path) -> None:
    """Create a new node in the home directory from a recovery kit (a new peer id; documents
    come back from your peers and mirrors once it syncs)."""
    c = _ctx()
    if c.daemon is not None or is_initialized(c.home):
        raise click.ClickException(
            f"a node already exists in {c.home}: restore into a new home (--home DIR)"
        )
    data = read_bounded(kit_file, MAX_KIT_SIZE, "recovery kit")
    kit_password = _recovery_password(confirm=False)
    kit = read_recovery_kit(data, kit_password)  # a bad kit or password fails before any question
    node = Node.restore_kit(c.home, kit, c.password(confirm=True))
    c._node = node
    ident = node.public_identity()
    tenants = [{"id": t.id_hex, "name": t.name, "admin": t.is_admin} for t in node.tenants()]
    lines = [f"restored {ident.name} ({ident.fingerprint}) into {c.home}"]
    lines += [f"tenant {t['name']} ({t['id']}){'  (admin)' if t['admin'] else ''}" for t in tenants]
    lines.append(
        "this device has a new peer id; add a peer or mirror ('mindoo peers add') and run"
        " 'mindoo node run' to get your documents back"
    )
    c.emit(
        {
            "home": str(c.home),
            "name": ident.name,
            "fingerprint": ident.fingerprint,
            "tenants": tenants,
        },
        "\n".join(lines),
    )


# -- helpers ---------------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_time(text: str) -> int:
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


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fail(message: str, code: int) -> int:
    """Print ``message`` as exactly one line on stderr; return ``code`` (the exit code)."""
    click.echo(" ".join(message.split()), err=True)
    return code


LOCAL_ONLY = frozenset({"init", "node", "watch"})
"""Commands never forwarded to a running daemon."""


@dataclass(frozen=True)
class DaemonHook:
    """Passed as click's ``obj`` when a daemon runs a forwarded command."""

    node: Node
    daemon: NodeDaemon


class _Forward(Exception):
    def __init__(self, home: Path) -> None:
        super().__init__(str(home))
        self.home = home


FORWARDED_ENV = (KEY_PASSWORD_ENV, RECOVERY_PASSWORD_ENV)
"""Client environment variables a forwarded command may read (nothing else crosses over)."""


@contextlib.contextmanager
def _client_env(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in FORWARDED_ENV}
    try:
        for name in FORWARDED_ENV:
            value = env.get(name)
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_in_daemon(
    argv: list[str], cwd: str, hook: DaemonHook, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a forwarded command inside the daemon, with the client's directory and its
    `FORWARDED_ENV` variables; capture its output and exit code."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _client_env(env or {}),
    ):
        try:
            os.chdir(cwd)  # relative paths in the command are the client's
        except OSError as exc:
            click.echo(f"error: cannot use the client's directory {cwd}: {exc.strerror}", err=True)
            return {"exit_code": 1, "stdout": "", "stderr": err.getvalue()}
        try:
            code = _run(argv, hook)
        finally:
            os.chdir(previous)
    return {"exit_code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _forward(home: Path, argv: list[str]) -> int:
    try:
        env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
        reply = ControlClient(control_socket(home)).call(
            "cli", {"argv": argv, "cwd": os.getcwd(), "env": env}
        )
    except ControlError as exc:
        return _fail(f"error: the daemon could not run the command: {exc}", 1)
    sys.stdout.write(reply.get("stdout", ""))
    sys.stderr.write(reply.get("stderr", ""))
    code = reply.get("exit_code", 1)
    return code if isinstance(code, int) else 1


def _invoke(argv: list[str], hook: DaemonHook | None) -> Any:
    """Run click; an exception group holding one error (from trio) becomes that error."""
    try:
        return cli.main(args=argv, prog_name="mindoo", standalone_mode=False, obj=hook)
    except BaseExceptionGroup as group:
        raise sole_exception(group) from None


def _run(argv: list[str], hook: DaemonHook | None = None) -> int:
    """Run the CLI on ``argv``; every error becomes one line on stderr. Returns the exit code.

    Exit codes: 0 success, 1 error, 2 usage error (unknown command or option, missing or invalid
    argument). Never a traceback unless MINDOO_DEBUG is set.
    """
    try:
        code = _invoke(argv, hook)
    except _Forward as forward:
        return _forward(forward.home, argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except click.exceptions.Abort:
        return _fail("aborted", 1)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return _fail(f"error: {exc.format_message()}{hint}", 2)
    except click.ClickException as exc:
        return _fail(f"error: {exc.format_message()}", 1)
    except MindooError as exc:
        return _fail(f"error: {exc}", 1)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"error: {exc.strerror or exc}{where}", 1)
    except Exception as exc:  # never a traceback for the user
        if os.environ.get("MINDOO_DEBUG"):
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (MINDOO_DEBUG=1 shows a traceback)", 1
        )
    # With standalone_mode=False click returns the exit code of --help or ctx.exit(n).
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point of the ``mindoo`` console script."""
    sys.exit(_run(sys.argv[1:]))


if __name__ == "__main__":
    main()
