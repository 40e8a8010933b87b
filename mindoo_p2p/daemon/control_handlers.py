"""The daemon's control-socket methods: each checks its parameters, then asks the daemon.

==============  ============================================================================
method          what it does
==============  ============================================================================
ping            ``"pong"``
status          the daemon's status (store reads in a worker thread)
peers.add       remember an address and connect now (``connected: false`` and the error
                when the dial fails: the address stays remembered)
sync            wake every connected peer's worker; how many
sync.progress   whether sessions ended at or after ``since_ms`` caught this node up
cli             run a forwarded CLI command (``argv``, ``cwd``, ``env``) holding the Node
stop            stop the daemon (after this reply goes out)
http.login      a one-time link to the web page
http.info       the HTTP API's address
==============  ============================================================================

Parameters come from any local process that can open the socket: each is checked
(`command_params`, `since_ms_param`) and a bad one is a ValueError naming it, which the control
server returns as an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..net.framing import TransportError

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlledDaemon(Protocol):
    """What the control methods ask of the daemon (`NodeDaemon`)."""

    @property
    def runs_commands(self) -> bool: ...

    async def status_off_loop(self) -> dict[str, Any]: ...

    async def add_peer(self, addr: str) -> str: ...

    def wake_peers(self, except_peer: str | None = None) -> int: ...

    def sync_progress(self, since_ms: int) -> dict[str, Any]: ...

    async def run_command(
        self, argv: list[str], cwd: str, env: dict[str, str]
    ) -> dict[str, Any]: ...

    def stop(self) -> None: ...

    def http_login(self) -> dict[str, Any]: ...

    def http_info(self) -> dict[str, Any]: ...


def command_params(params: dict[str, Any]) -> tuple[list[str], str, dict[str, str]]:
    """``cli``'s (argv, cwd, env); ValueError naming what is wrong."""
    argv = params.get("argv")
    cwd = params.get("cwd")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError("'argv' must be a list of strings")
    if not isinstance(cwd, str):
        raise ValueError("'cwd' must be a string")
    env = params.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError("'env' must map names to strings")
    return argv, cwd, env


def since_ms_param(params: dict[str, Any]) -> int:
    """``sync.progress``'s ``since_ms``: a time in ms, not negative."""
    since = params.get("since_ms")
    if not isinstance(since, int) or isinstance(since, bool) or since < 0:
        raise ValueError("sync_progress needs 'since_ms', a time in ms")
    return since


def control_handlers(daemon: ControlledDaemon) -> dict[str, Handler]:
    """The control server's methods, by name; see the module docstring."""

    async def ping(params: dict[str, Any]) -> str:
        return "pong"

    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return await daemon.status_off_loop()

    async def peers_add(params: dict[str, Any]) -> dict[str, Any]:
        addr = params.get("addr")
        if not isinstance(addr, str):
            raise ValueError("peers.add needs an 'addr' string")
        try:
            peer_id = await daemon.add_peer(addr)
        except TransportError as exc:
            return {"peer_id": None, "added": True, "connected": False, "error": str(exc)}
        return {"peer_id": peer_id, "added": True, "connected": True}

    async def sync_now(params: dict[str, Any]) -> dict[str, Any]:
        return {"woken": daemon.wake_peers()}

    async def sync_progress(params: dict[str, Any]) -> dict[str, Any]:
        return daemon.sync_progress(since_ms_param(params))

    async def run_command(params: dict[str, Any]) -> dict[str, Any]:
        if not daemon.runs_commands:
            raise ValueError("this daemon does not run CLI commands")
        return await daemon.run_command(*command_params(params))

    async def stop(params: dict[str, Any]) -> dict[str, Any]:
        daemon.stop()
        return {"stopping": True}

    async def http_login(params: dict[str, Any]) -> dict[str, Any]:
        return daemon.http_login()

    async def http_info(params: dict[str, Any]) -> dict[str, Any]:
        return daemon.http_info()

    return {
        "ping": ping,
        "status": status,
        "peers.add": peers_add,
        "sync": sync_now,
        "sync.progress": sync_progress,
        "cli": run_command,
        "stop": stop,
        "http.login": http_login,
        "http.info": http_info,
    }


__all__ = ["ControlledDaemon", "Handler", "command_params", "control_handlers", "since_ms_param"]
