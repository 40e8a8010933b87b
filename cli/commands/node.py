"""The node itself: init, whoami, status, node run, watch, fsck."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import click
import trio

from mindoo_p2p.commands import node_status
from mindoo_p2p.config import NodeConfig, load_config
from mindoo_p2p.control import ControlClient, ControlError, control_socket, daemon_running
from mindoo_p2p.errors import MindooError
from mindoo_p2p.home_files import IDENTITY_FILE
from mindoo_p2p.index import index_health
from mindoo_p2p.node import Node, is_initialized

from ..context import CliContext, DaemonHook
from ..logs import configure_logging, parse_levels
from ..params import MindooCommand, MindooGroup, UserFile, UserPath, cli_context
from ..render import render_status

if TYPE_CHECKING:
    from mindoo_p2p.daemon import NodeDaemon


@click.command(cls=MindooCommand)
@click.option("--name", help="Your display name (default: the login name).")
def init(name: str | None) -> None:
    """Create a node in the home directory: a new identity and an encrypted keystore."""
    c = cli_context()
    node = Node.init(c.home, c.password(confirm=True), name=name)
    c.adopt(node)
    ident = node.public_identity()
    c.emit(
        {"home": str(c.home), "name": ident.name, "fingerprint": ident.fingerprint},
        f"initialised node in {c.home}\nidentity: {ident.name} ({ident.fingerprint})",
    )


@click.command(cls=MindooCommand)
@click.option(
    "--out",
    type=UserFile(),
    help="Write an identity file here: a fresh identity for one invite (send it to the"
    " admin), or with --tenant the one this node uses in that tenant.",
)
@click.option(
    "--tenant",
    "tenant_name",
    metavar="TENANT",
    help="Show the identity this node's user has in TENANT (for 'mindoo device request').",
)
def whoami(out: UserPath | None, tenant_name: str | None) -> None:
    """Print this node's public identity. With --out, write an identity file to send to a
    tenant admin: a fresh identity each time, which becomes your key in the tenant you are
    invited to, so your tenants share no key."""
    c = cli_context()
    node = c.node()
    if tenant_name is not None:
        ident = node.tenant(tenant_name).identity.public()
    elif out is not None:
        ident = node.invite_identity()
    else:
        ident = node.public_identity()
    shown: object = c.home / IDENTITY_FILE
    if out is not None:
        out.path.write_text(ident.to_json(), encoding="utf-8")
        shown = out
    elif tenant_name is not None:
        shown = "(none: add --out FILE)"
    c.emit(
        {
            "name": ident.name,
            "fingerprint": ident.fingerprint,
            "signing_key": ident.signing_key.hex(),
            "encryption_key": ident.encryption_key.hex(),
            "identity_file": str(shown),
        },
        f"name:           {ident.name}\nfingerprint:    {ident.fingerprint}\n"
        f"signing key:    {ident.signing_key.hex()}\nencryption key: {ident.encryption_key.hex()}\n"
        f"identity file:  {shown}",
    )


@click.command(cls=MindooCommand)
def status() -> None:
    """Show the node's identity, tenants, databases and, when running, its peers."""
    c = cli_context()
    daemon = c.daemon
    data: dict[str, Any] = dict(node_status(c.node(), with_durability=daemon is None))
    if daemon is not None:
        live = daemon.status()
        data.update(
            durability=live["durability"],
            busy=live["busy"],
            daemon_running=True,
            peer_id=live["peer_id"],
            listen_addrs=live["listen_addrs"],
            peers=live["peers"],
            sync=live["databases"],
        )
    else:
        data.update(daemon_running=False, listen_addrs=[], peers=[], sync=[])
    c.emit(data, render_status(data))


@click.group(cls=MindooGroup)
def node() -> None:
    """Run the node."""


@node.command("run")
@click.option("--listen", multiple=True, help="Multiaddr to listen on (repeatable).")
@click.option("--bootstrap", multiple=True, help="Multiaddr of a peer to keep connected.")
@click.option("--mdns/--no-mdns", default=None, help="Discover peers on the LAN (default: off).")
@click.option(
    "--http/--no-http",
    "http",
    default=None,
    help="Serve the local HTTP API and web page on 127.0.0.1 (default: on; config: [http]).",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    help="Port of the HTTP API (default 4780; 0: any free port).",
)
@click.option(
    "--log-level",
    "log_levels",
    multiple=True,
    metavar="[LOGGER=]LEVEL",
    help="debug, info (default), warning, error; LOGGER=LEVEL for one logger (libp2p is kept"
    " at warning unless named). Repeatable.",
)
@click.option("--log-file", type=UserFile(), help="Append the log to this file, not stderr.")
def node_run(
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    mdns: bool | None,
    http: bool | None = None,
    http_port: int | None = None,
    log_levels: tuple[str, ...] = (),
    log_file: UserPath | None = None,
) -> None:
    """Run the node daemon until Ctrl-C or SIGTERM (creates the node on first use)."""
    c = cli_context()
    parse_levels(log_levels)  # a bad level is a usage error before anything starts
    if not is_initialized(c.home):
        c.adopt(Node.init(c.home, c.password(confirm=True)))
        c.echo(f"initialised a new node in {c.home}", err=True)
    config = load_config(c.home).with_overrides(
        listen=listen, bootstrap=bootstrap, mdns=mdns, http_port=http_port, http=http
    )
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
    configure_logging(log_levels, log_file.path if log_file else None, c.invocation.err)
    trio.run(_serve, node, config, c)


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


async def _serve(node: Node, config: NodeConfig, c: CliContext) -> None:
    from mindoo_p2p.daemon import NodeDaemon

    from ..main import run_forwarded

    daemon: NodeDaemon

    def runner(argv: list[str], cwd: str, env: dict[str, str]) -> dict[str, Any]:
        return run_forwarded(argv, cwd, env, DaemonHook(node, daemon))

    # This process is the daemon: its start-up heap can leave the collector's full scans.
    daemon = NodeDaemon(node, config, command_runner=runner, freeze_startup_heap=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            info: dict[str, Any] = {
                "peer_id": daemon.peer_id,
                "listen_addrs": daemon.listen_addrs(),
                "http_url": daemon.http_url,
            }
            if c.json_output:
                c.echo(json.dumps(info))
            else:
                c.echo(f"node {daemon.peer_id} running; listening on:")
                for addr in info["listen_addrs"]:
                    c.echo(f"  {addr}")
                if daemon.http_url:
                    c.echo(f"web page and HTTP API on {daemon.http_url} ('mindoo http url')")
            c.invocation.out.flush()
            nursery.start_soon(_stop_on_signal, signals, daemon)
            await daemon.wait_stopped()  # a signal, or 'mindoo node stop'
            nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], daemon: NodeDaemon) -> None:
    async for signum in signals:
        logging.getLogger("mindoo").info("signal %d: stopping", signum)
        daemon.stop()
        return


@node.command("stop")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the daemon to stop.",
)
def node_stop(timeout: float) -> None:
    """Stop the daemon running on this home (and wait until it has)."""
    c = cli_context()
    if not daemon_running(c.home):
        raise click.ClickException(f"no daemon is running on {c.home}")
    try:
        ControlClient(control_socket(c.home), timeout=10).call("stop")
    except (ControlError, OSError) as exc:
        raise click.ClickException(f"cannot ask the daemon on {c.home} to stop: {exc}") from None
    deadline = time.monotonic() + timeout
    while daemon_running(c.home):
        if time.monotonic() > deadline:
            raise click.ClickException(f"the daemon on {c.home} did not stop within {timeout:g} s")
        time.sleep(0.05)
    c.emit({"stopped": True, "home": str(c.home)}, f"stopped the daemon on {c.home}")


@click.command(cls=MindooCommand)
@click.option("--tenant", "tenant_name", help="Only this tenant (name or id).")
@click.option("--db", "database", help="Only this database.")
def watch(tenant_name: str | None, database: str | None) -> None:
    """Print the daemon's events as they happen, one JSON object per line: entries arriving or
    written, peers connecting and disconnecting, sync sessions starting, progressing, ending
    or failing, refused entries. Exits 1 when the daemon goes away (or drops a watcher that
    fell behind)."""
    c = cli_context()
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
            c.echo(json.dumps(event, sort_keys=True))
            c.invocation.out.flush()
            if event.get("type") == "lagged":
                raise click.ClickException(
                    "the daemon dropped this watcher: it fell behind the events"
                )
    except KeyboardInterrupt:
        return
    except (ControlError, OSError) as exc:
        raise click.ClickException(f"lost the daemon on {c.home}: {exc}") from None
    raise click.ClickException(f"the daemon on {c.home} went away")


@click.command(cls=MindooCommand)
def fsck() -> None:
    """Re-verify every entry and index; exit 1 if anything is wrong."""
    c = cli_context()
    report = c.node().fsck()
    problems = [
        {"entry_id": p.entry_id.hex() if p.entry_id else None, "where": p.where, "reason": p.reason}
        for p in report.problems
    ]
    notices = [{"where": n.where, "reason": n.reason} for n in report.notices]
    lines = [f"BAD {p['entry_id'] or '-'} ({p['where']}): {p['reason']}" for p in problems]
    lines += [f"NOTE ({n['where']}): {n['reason']}" for n in notices]
    text = "\n".join(lines)
    summary = f"checked {report.entries_checked} entries: " + (
        "ok" if report.ok else f"{len(problems)} problems"
    )
    index = index_health(c.node())
    c.emit(
        {
            "entries_checked": report.entries_checked,
            "ok": report.ok,
            "problems": problems,
            "notices": notices,
            "index": index,
        },
        (text + "\n" if text else "")
        + summary
        + (f"\nquery index: {index['summary']}" if index["present"] else ""),
    )
    if not report.ok:
        c.echo(f"error: fsck found {len(problems)} problems (listed above)", err=True)
        click.get_current_context().exit(1)


COMMANDS: list[click.Command] = [init, whoami, status, node, watch, fsck]
