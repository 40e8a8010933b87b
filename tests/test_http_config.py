"""The HTTP API's settings: config.toml's [http], the command line, a taken port, the key file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from mindoo_p2p.config import DEFAULT_HTTP_PORT, ConfigError, NodeConfig, load_config
from mindoo_p2p.http import server as server_module
from mindoo_p2p.http.auth import (
    API_KEY_FILE,
    ApiKeyError,
    LoginTokens,
    host_is_loopback,
    load_or_create_api_key,
    origin_allowed,
)
from mindoo_p2p.http.server import HttpServerError, bind_socket


def test_http_settings_from_config_toml_and_the_command_line(tmp_path: Path) -> None:
    assert load_config(tmp_path).http_port == DEFAULT_HTTP_PORT  # on by default
    assert NodeConfig().http_port is None  # library use: off unless asked
    (tmp_path / "config.toml").write_text("[http]\nport = 0\n")
    config = load_config(tmp_path)
    assert config.http_port == 0 and config.http_port_explicit
    assert config.with_overrides(http=False).http_port is None
    assert config.with_overrides(http_port=9000).http_port == 9000
    (tmp_path / "config.toml").write_text("[http]\nenabled = false\n")
    assert load_config(tmp_path).http_port is None
    assert load_config(tmp_path).with_overrides(http=True).http_port == DEFAULT_HTTP_PORT
    for bad in (
        "[http]\nport = 70000\n",
        "[http]\nport = true\n",
        "[http]\nenabled = 1\n",
        "http = 3\n",
    ):
        (tmp_path / "config.toml").write_text(bad)
        with pytest.raises(ConfigError, match="http"):
            load_config(tmp_path)


def test_a_taken_default_port_falls_back_and_a_configured_one_is_an_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        fallback = bind_socket(port, explicit=False)
        assert fallback.getsockname()[1] not in (port, 0)
        fallback.close()
        with pytest.raises(HttpServerError, match=f"127.0.0.1:{port}.*http.port"):
            bind_socket(port, explicit=True)
    finally:
        taken.close()


def test_a_default_port_another_daemon_listens_on_between_our_bind_and_listen_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two daemons starting at once: the other has bound the default port (SO_REUSEADDR, as
    ours does) and listens on it just after our bind. With SO_REUSEADDR our bind succeeds
    then, so only our listen can find the port taken; the socket returned must still be a
    listening one on another port (it was a bound, never-listening socket on the taken port,
    and the HTTP server then failed inside hypercorn instead of falling back)."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.bind(("127.0.0.1", 0))
    port = other.getsockname()[1]

    class OtherListensAfterOurBind(socket.socket):
        def bind(self, address: Any) -> None:
            super().bind(address)
            if address == ("127.0.0.1", port):
                other.listen(1)

    monkeypatch.setattr(server_module.socket, "socket", OtherListensAfterOurBind)
    try:
        ours = bind_socket(port, explicit=False)
        try:
            assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            assert ours.getsockname()[1] not in (port, 0)
        finally:
            ours.close()
    finally:
        other.close()


def test_the_api_key_file_is_private_stable_and_never_silently_replaced(tmp_path: Path) -> None:
    key = load_or_create_api_key(tmp_path)
    path = tmp_path / API_KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) >= 40
    path.chmod(0o644)
    assert load_or_create_api_key(tmp_path) == key
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("short\n")
    with pytest.raises(ApiKeyError, match="delete it and restart"):
        load_or_create_api_key(tmp_path)
    assert path.read_text() == "short\n"  # nothing the user had is overwritten


def test_login_tokens_work_once_and_expire() -> None:
    now = [0.0]
    tokens = LoginTokens(clock=lambda: now[0], lifetime=10)
    first, second = tokens.issue(), tokens.issue()
    assert tokens.redeem(first) and not tokens.redeem(first)
    now[0] = 11
    assert not tokens.redeem(second)
    assert not tokens.redeem("") and not tokens.redeem(None)


def test_host_and_origin_rules() -> None:
    for host in ("127.0.0.1:4780", "localhost:1", "[::1]:4780", "LOCALHOST"):
        assert host_is_loopback(host), host
    for host in ("evil.example", "127.0.0.1.evil.example:80", "", None, "[::2]:1"):
        assert not host_is_loopback(host), host
    assert origin_allowed("GET", "http://evil.example", "127.0.0.1:1")
    assert origin_allowed("POST", None, "127.0.0.1:1")
    assert origin_allowed("POST", "http://127.0.0.1:1", "127.0.0.1:1")
    assert not origin_allowed("POST", "http://evil.example", "127.0.0.1:1")
    assert not origin_allowed("DELETE", "null", "127.0.0.1:1")
