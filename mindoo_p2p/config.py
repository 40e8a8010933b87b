"""Node settings: `config.toml` in the node home, overridden by command-line options.

Example::

    [network]
    listen = ["/ip4/0.0.0.0/tcp/4001"]
    bootstrap = ["/ip4/192.0.2.10/tcp/4001/p2p/12D3KooW..."]
    mdns = false
    mdns_interfaces = ["192.168.1.20"]

    [sync]
    interval_s = 60

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


class ConfigError(MindooError):
    """config.toml or a setting given on the command line is invalid."""


@dataclass(frozen=True)
class NodeConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    mdns_interfaces: tuple[str, ...] = ()
    sync_interval_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_overrides(
        self,
        *,
        listen: tuple[str, ...] = (),
        bootstrap: tuple[str, ...] = (),
        mdns: bool | None = None,
    ) -> NodeConfig:
        return replace(
            self,
            listen=listen or self.listen,
            bootstrap=tuple(dict.fromkeys(self.bootstrap + bootstrap)),
            mdns=self.mdns if mdns is None else mdns,
        )


def _strings(section: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in section:
        return None
    value = section[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def load_config(home: Path) -> NodeConfig:
    """The settings in ``home/config.toml`` (defaults when the file does not exist)."""
    path = home / CONFIG_FILE
    if not path.exists():
        return NodeConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    network = data.get("network", {})
    sync = data.get("sync", {})
    if not isinstance(network, dict) or not isinstance(sync, dict):
        raise ConfigError(f"{path}: [network] and [sync] must be tables")
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
    )
