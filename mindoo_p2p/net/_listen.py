"""Checks on the addresses a `PeerHost` listens on, before py-libp2p binds them."""

from __future__ import annotations

import errno
import ipaddress
import socket

import multiaddr  # type: ignore[import-untyped]

from .host_errors import ListenError


def ensure_port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a fixed port that another listener holds.

    py-libp2p listens with SO_REUSEPORT, so a second process of the same user can bind the same
    port without an error and the kernel then splits incoming connections between the two. A
    probe bind without SO_REUSEPORT fails while any listener holds the port.
    """
    port = int(str(addr.value_for_protocol("tcp")))
    if port == 0:
        return
    host = str(addr.value_for_protocol(addr.protocols()[0].name))
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise ListenError(f"cannot listen on {addr}: {reason}") from exc


__all__ = ["ensure_port_free"]
