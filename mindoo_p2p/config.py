"""Node settings: `config.toml` in the node home, overridden by command-line options.

Example::

    [network]
    listen = ["/ip4/0.0.0.0/tcp/4001"]
    bootstrap = ["/ip4/192.0.2.10/tcp/4001/p2p/12D3KooW..."]
    mdns = false
    mdns_interfaces = ["192.168.1.20"]

    [sync]
    interval_s = 60

    [http]
    enabled = true      # the local HTTP API and web page (127.0.0.1 only)
    port = 4780         # 0: any free port (``mindoo http url`` tells which)

The node never dials an address it was not given or did not discover; there is no public
bootstrap list.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import MindooError

CONFIG_FILE = "config.toml"
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4001",)
DEFAULT_HTTP_PORT = 4780
"""The HTTP API's port when config.toml names none. When it is taken (a second node on this
machine), the daemon warns and takes any free port instead; a port named in config.toml that is
taken is an error."""


class ConfigError(MindooError):
    """config.toml or a setting given on the command line is invalid."""


@dataclass(frozen=True)
class NodeConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    mdns_interfaces: tuple[str, ...] = ()
    sync_interval_s: float = 60.0
    http_port: int | None = None
    """The local HTTP API's port on 127.0.0.1 (0: any free port); None: no HTTP API. A bare
    ``NodeConfig()`` (library use, tests) has none; `load_config` turns it on by default."""
    http_port_explicit: bool = False
    """The port was named in config.toml or on the command line (a taken port is an error
    then, rather than a fallback to any free port)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_overrides(
        self,
        *,
        listen: tuple[str, ...] = (),
        bootstrap: tuple[str, ...] = (),
        mdns: bool | None = None,
        http_port: int | None = None,
        http: bool | None = None,
    ) -> NodeConfig:
        """These settings with the command line's on top (None/empty: keep the setting)."""
        port, explicit = self.http_port, self.http_port_explicit
        if http_port is not None:
            port, explicit = _http_port(http_port, "--http-port"), True
        if http is False:
            port = None
        elif http is True and port is None:
            port = DEFAULT_HTTP_PORT
        return replace(
            self,
            listen=listen or self.listen,
            bootstrap=tuple(dict.fromkeys(self.bootstrap + bootstrap)),
            mdns=self.mdns if mdns is None else mdns,
            http_port=port,
            http_port_explicit=explicit,
        )


def _strings(section: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in section:
        return None
    value = section[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def _http_port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{where}: the HTTP port must be a number from 0 to 65535")
    return value


def load_config(home: Path) -> NodeConfig:
    """The settings in ``home/config.toml`` (defaults when the file does not exist)."""
    path = home / CONFIG_FILE
    if not path.exists():
        return NodeConfig(http_port=DEFAULT_HTTP_PORT)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    network = data.get("network", {})
    sync = data.get("sync", {})
    http = data.get("http", {})
    if not isinstance(network, dict) or not isinstance(sync, dict) or not isinstance(http, dict):
        raise ConfigError(f"{path}: [network], [sync] and [http] must be tables")
    http_enabled = http.get("enabled", True)
    if not isinstance(http_enabled, bool):
        raise ConfigError(f"{path}: http.enabled must be true or false")
    http_port = _http_port(http.get("port", DEFAULT_HTTP_PORT), f"{path}: http.port")
    config = NodeConfig()
    listen = _strings(network, "listen", str(path))
    bootstrap = _strings(network, "bootstrap", str(path))
    interfaces = _strings(network, "mdns_interfaces", str(path))
    mdns = network.get("mdns", False)
    if not isinstance(mdns, bool):
        raise ConfigError(f"{path}: network.mdns must be true or false")
    interval = sync.get("interval_s", 60)
    if not isinstance(interval, int | float) or not 1 <= interval <= 86400:
        raise ConfigError(f"{path}: sync.interval_s must be a number of seconds from 1 to 86400")
    return replace(
        config,
        listen=listen or config.listen,
        bootstrap=bootstrap or (),
        mdns=mdns,
        mdns_interfaces=interfaces or (),
        sync_interval_s=float(interval),
        http_port=http_port if http_enabled else None,
        http_port_explicit="port" in http,
    )
