"""LAN discovery over mDNS / DNS-SD, on chosen interfaces only, without blocking trio.

`MdnsDiscovery.run` announces this node as the DNS-SD instance ``PEER_ID._mindoo._tcp.local.``
and browses for other instances of the same service. It never dials: every peer found is
handed to ``on_peer(peer_id, addrs)`` and the daemon decides what to do with it.

Contracts:

- **Interfaces.** Zeroconf is built with ``interfaces=[...]`` holding exactly the IP addresses
  given (never "all interfaces"); an empty list, a non-IP string, a wildcard or multicast
  address, or an address this machine does not hold is refused with `MdnsError` before any
  socket joins a multicast group.
- **Announcement.** The TXT record is ``v=1`` followed by one ``addr=MULTIADDR`` string per
  dialable address (``/ip4|ip6/IP/tcp/PORT/p2p/PEER_ID``), at most `MAX_ADDRS`. Only listen
  addresses whose IP is one of the chosen interfaces are announced; a wildcard listen address
  (``0.0.0.0`` or ``::``) stands for each chosen interface of its IP version.
- **Validation.** What a peer announces is hostile until `parse_announcement` accepts it: the
  instance label must be an Ed25519 peer id, the TXT record at most `MAX_TXT_BYTES` in
  well-formed length-prefixed strings, version 1, 1 to `MAX_ADDRS` addresses, each a dial
  address on a literal, unicast, specified IP whose ``/p2p/`` part is the instance's peer id.
  One bad string rejects the whole record (a conforming announcer never sends one). Records
  naming this node are ignored.
- **Threads.** Every blocking zeroconf call (construction, browsing set-up, register, resolve,
  close) runs in `trio.to_thread.run_sync`; zeroconf's own threads only hand instance names
  to trio through ``TrioToken.run_sync_soon``. ``on_peer`` always runs on the trio thread and
  is called again for a peer only when its address list changed (or it left and came back).
  It must not block and should not raise: an exception escapes from `run`.
- **Bounds.** At most `MAX_PENDING_NAMES` names wait for resolution; more are dropped, and
  after a drop the browser is rebuilt (every ``rebrowse_interval`` seconds), which reports
  every cached instance again. `MAX_CONCURRENT_RESOLVES` resolutions run at once, each for at
  most `RESOLVE_TIMEOUT_MS`; at most `MAX_TRACKED_PEERS` peers are remembered for
  de-duplication (the oldest is forgotten first).
- **Shutdown.** Cancelling `run` cancels the browser, sends goodbye packets for our instance
  and closes zeroconf (shielded, in a worker thread), so none of zeroconf's threads outlives
  it. It takes ~0.25 s (the goodbyes), up to ~1.7 s when cancelled while the announcement
  is still probing for name conflicts (the probe is waited for, then undone).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from zeroconf import (
    BadTypeInNameException,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf import Error as ZeroconfError

from ..errors import DecodeError, MindooError
from .peer_identity import parse_dial_addr, parse_listen_addr, parse_peer_id

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_mindoo._tcp.local."
TXT_VERSION = b"v=1"
ADDR_KEY = b"addr="
MAX_ADDRS = 8
MAX_TXT_BYTES = 2048
"""Largest TXT record accepted (8 addresses of at most 250 bytes fit)."""
MAX_TXT_STRING = 255
MAX_PENDING_NAMES = 64
MAX_CONCURRENT_RESOLVES = 2
MAX_TRACKED_PEERS = 256
RESOLVE_TIMEOUT_MS = 3000
REBROWSE_INTERVAL_S = 60.0
_MAX_LOGGED_TEXT = 120

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PeerCallback = Callable[[str, list[str]], None]


class MdnsError(MindooError):
    """mDNS discovery cannot start: bad interface list or addresses to announce."""


@dataclass(frozen=True)
class MdnsPeer:
    """A validated announcement: a peer id and its dial addresses (each ends in /p2p/ID)."""

    peer_id: str
    addrs: tuple[str, ...]


# -- interfaces and our own announcement (pure) ----------------------------------------------


def parse_interfaces(interfaces: Sequence[str]) -> tuple[IPAddress, ...]:
    """The chosen interface addresses, de-duplicated in order; `MdnsError` if any is invalid.

    Each must be a literal, specified, unicast IPv4 or IPv6 address; the list must not be
    empty (there is no "every interface" default).
    """
    if isinstance(interfaces, str) or not interfaces:
        raise MdnsError("mDNS needs a non-empty list of interface IP addresses")
    parsed: dict[IPAddress, None] = {}
    for text in interfaces:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise MdnsError(f"not an interface IP address: {text!r}") from None
        if ip.is_unspecified or ip.is_multicast:
            raise MdnsError(f"an mDNS interface must be a unicast address, got {text}")
        parsed[ip] = None
    return tuple(parsed)


def announced_addrs(
    peer_id: str, listen_addrs: Sequence[str], interfaces: Sequence[IPAddress]
) -> tuple[str, ...]:
    """The dial addresses to announce: listen addresses on the chosen interfaces.

    ``listen_addrs`` are ``/ip4|ip6/IP/tcp/PORT`` optionally followed by ``/p2p/PEER_ID``
    (which must then be ``peer_id``). A wildcard IP stands for each chosen interface of the same
    IP version; other IPs are kept only if chosen. At most `MAX_ADDRS`, de-duplicated, in
    order. `MdnsError` for a malformed listen address.
    """
    suffix = f"/p2p/{peer_id}"
    result: dict[str, None] = {}
    for text in listen_addrs:
        bare = text[: -len(suffix)] if text.endswith(suffix) else text
        try:
            addr = parse_listen_addr(bare)
        except ValueError as exc:
            raise MdnsError(f"cannot announce listen address {text!r}: {exc}") from None
        names = [protocol.name for protocol in addr.protocols()]
        host = ipaddress.ip_address(str(addr.value_for_protocol(names[0])))
        port = int(str(addr.value_for_protocol("tcp")))
        if host.is_unspecified:
            hosts = [ip for ip in interfaces if ip.version == host.version]
        else:
            hosts = [host] if host in interfaces else []
        for ip in hosts:
            result[f"/ip{ip.version}/{ip}/tcp/{port}{suffix}"] = None
    return tuple(result)[:MAX_ADDRS]


def encode_txt(addrs: Sequence[str]) -> bytes:
    """The raw TXT rdata announcing ``addrs`` (length-prefixed strings, version first)."""
    strings = [TXT_VERSION] + [ADDR_KEY + addr.encode("ascii") for addr in addrs]
    out = bytearray()
    for string in strings:
        if len(string) > MAX_TXT_STRING:
            raise MdnsError(f"address too long for a TXT string: {string[:_MAX_LOGGED_TEXT]!r}")
        out.append(len(string))
        out += string
    if len(out) > MAX_TXT_BYTES:
        raise MdnsError("too many or too long addresses for one TXT record")
    return bytes(out)


# -- what peers announce (pure, hostile input) -----------------------------------------------


def instance_peer_id(name: str, service: str = SERVICE_TYPE) -> str:
    """The peer id an instance name ``PEER_ID.<service>`` announces; `DecodeError` if none."""
    if not isinstance(name, str) or not name.endswith("." + service):
        raise DecodeError("mDNS instance of another service")
    label = name[: -len(service) - 1]
    try:
        return parse_peer_id(label)
    except ValueError:
        raise DecodeError(f"mDNS instance label is not a peer id: {label[:64]!r}") from None


def split_txt(txt: bytes) -> list[bytes]:
    """The strings of raw TXT rdata; `DecodeError` if oversized or truncated."""
    if len(txt) > MAX_TXT_BYTES:
        raise DecodeError(f"TXT record of {len(txt)} bytes (at most {MAX_TXT_BYTES})")
    strings = []
    offset = 0
    while offset < len(txt):
        size = txt[offset]
        end = offset + 1 + size
        if end > len(txt):
            raise DecodeError("truncated TXT string")
        if size:
            strings.append(bytes(txt[offset + 1 : end]))
        offset = end
    return strings


def parse_announced_addr(raw: bytes, peer_id: str) -> str:
    """Validate one announced address of ``peer_id``; `DecodeError` if it is not acceptable."""
    try:
        text = raw.decode("ascii")
        transport, named = parse_dial_addr(text)
    except (UnicodeDecodeError, ValueError):
        raise DecodeError(f"bad announced address {raw[:_MAX_LOGGED_TEXT]!r}") from None
    if named != peer_id:
        raise DecodeError(f"announced address names another peer: {text!r}")
    if transport.protocols()[0].name not in ("ip4", "ip6"):
        raise DecodeError(f"announced address is not a literal IP: {text!r}")
    ip, _ = _ip_and_port(text)
    if ip.is_unspecified or ip.is_multicast:
        raise DecodeError(f"announced address is not a unicast IP: {text!r}")
    return text


def parse_announcement(name: str, txt: bytes, service: str = SERVICE_TYPE) -> MdnsPeer:
    """Validate a peer's instance name and raw TXT rdata; `DecodeError` for anything wrong."""
    peer_id = instance_peer_id(name, service)
    strings = split_txt(txt)
    if TXT_VERSION not in strings:
        raise DecodeError("TXT record without v=1")
    addrs: dict[str, None] = {}
    raw_addrs = [s[len(ADDR_KEY) :] for s in strings if s.startswith(ADDR_KEY)]
    if len(raw_addrs) > MAX_ADDRS:
        raise DecodeError(f"{len(raw_addrs)} announced addresses (at most {MAX_ADDRS})")
    for raw in raw_addrs:
        addrs[parse_announced_addr(raw, peer_id)] = None
    if not addrs:
        raise DecodeError("TXT record without any address")
    return MdnsPeer(peer_id, tuple(addrs))


# -- the trio service ------------------------------------------------------------------------


def _ip_and_port(dial_addr: str) -> tuple[IPAddress, int]:
    """The IP and TCP port of a valid ``/ip4|ip6/IP/tcp/PORT/p2p/ID`` address."""
    transport, _ = parse_dial_addr(dial_addr)
    host_protocol = transport.protocols()[0].name
    ip = ipaddress.ip_address(str(transport.value_for_protocol(host_protocol)))
    return ip, int(str(transport.value_for_protocol("tcp")))


def _check_local_address(ip: IPAddress) -> None:
    """`MdnsError` unless this machine holds ``ip`` (binding a UDP socket sends nothing)."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError as exc:
            raise MdnsError(f"no local interface has the address {ip}: {exc}") from None


class MdnsDiscovery:
    """Announce this node and report the peers announced on the chosen interfaces.

    See the module docstring for the contracts. Construction validates the arguments
    (`MdnsError`) and touches no socket; `run` does the work and runs once.
    """

    def __init__(
        self,
        peer_id: str,
        listen_addrs: Sequence[str],
        interfaces: Sequence[str],
        on_peer: PeerCallback,
        *,
        service: str = SERVICE_TYPE,
        rebrowse_interval: float = REBROWSE_INTERVAL_S,
    ) -> None:
        if not rebrowse_interval > 0:
            raise MdnsError("rebrowse_interval must be positive")
        try:
            self.peer_id = parse_peer_id(peer_id)
        except ValueError as exc:
            raise MdnsError(f"bad own peer id: {exc}") from None
        try:
            ServiceInfo(service, f"{self.peer_id}.{service}")
        except BadTypeInNameException as exc:
            raise MdnsError(f"bad DNS-SD service type {service!r}: {exc}") from None
        self.service = service
        self.interfaces = parse_interfaces(interfaces)
        self.addrs = announced_addrs(self.peer_id, listen_addrs, self.interfaces)
        self._txt = encode_txt(self.addrs)
        self._on_peer = on_peer
        self._pending: set[str] = set()
        self._reported: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._send: trio.MemorySendChannel[str] | None = None
        self._started = False
        self._rebrowse_interval = rebrowse_interval
        self._announced: ServiceInfo | None = None
        self._browser: ServiceBrowser | None = None
        self._dropped = False
        self._token: trio.lowlevel.TrioToken | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Announce and browse until cancelled; ``task_status.started()`` once browsing.

        `MdnsError` if an interface is not held by this machine. A name conflict for our own
        instance (another responder claims it) is logged and we only browse.
        """
        if self._started:
            raise RuntimeError("an MdnsDiscovery runs once; build a new one to restart")
        self._started = True
        self._token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[str](MAX_PENDING_NAMES)
        self._send = send
        zc = await trio.to_thread.run_sync(self._open_zeroconf)
        try:
            self._browser = await trio.to_thread.run_sync(self._open_browser, zc)
            async with trio.open_nursery() as nursery:
                for _ in range(MAX_CONCURRENT_RESOLVES):
                    nursery.start_soon(self._resolve_worker, zc, receive.clone())
                nursery.start_soon(self._announce, zc)
                nursery.start_soon(self._rebrowse_after_drops, zc)
                task_status.started()
        finally:
            self._send = None
            send.close()
            receive.close()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    self._close_zeroconf, zc, self._browser, self._announced
                )

    async def _announce(self, zc: Zeroconf) -> None:
        # Probing for name conflicts takes ~1.5 s; not abandoned on cancel, so a registration
        # that completes is always recorded and then unregistered on close.
        self._announced = await trio.to_thread.run_sync(self._register, zc)

    async def _rebrowse_after_drops(self, zc: Zeroconf) -> None:
        """A new browser reports every cached instance again: names dropped get a new chance."""
        while True:
            await trio.sleep(self._rebrowse_interval)
            if not self._dropped:
                continue
            self._dropped = False
            old, self._browser = self._browser, None
            if old is not None:
                await trio.to_thread.run_sync(old.cancel)
            self._browser = await trio.to_thread.run_sync(self._open_browser, zc)

    # -- zeroconf's blocking calls (worker threads) ------------------------------------------
    def _from_browser_thread(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """The browser's handler, on zeroconf's thread: hand the name to trio, nothing else."""
        token = self._token
        if token is not None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(self._on_state_change, name, state_change)

    def _open_browser(self, zc: Zeroconf) -> ServiceBrowser:
        return ServiceBrowser(zc, self.service, handlers=[self._from_browser_thread])

    def _open_zeroconf(self) -> Zeroconf:
        for ip in self.interfaces:
            _check_local_address(ip)
        return Zeroconf(interfaces=[str(ip) for ip in self.interfaces], use_asyncio=False)

    def _register(self, zc: Zeroconf) -> ServiceInfo | None:
        if not self.addrs:
            logger.warning("mDNS: no listen address on %s; browsing only", self.interfaces)
            return None
        endpoints = [_ip_and_port(addr) for addr in self.addrs]
        info = ServiceInfo(
            self.service,
            f"{self.peer_id}.{self.service}",
            port=endpoints[0][1],
            properties=self._txt,
            server=f"{self.peer_id}.local.",
            parsed_addresses=list(dict.fromkeys(str(ip) for ip, _ in endpoints)),
        )
        try:
            zc.register_service(info)
        except ZeroconfError as exc:
            logger.warning("mDNS: cannot announce %s (%r); browsing only", self.peer_id, exc)
            return None
        return info

    def _resolve(self, zc: Zeroconf, name: str) -> bytes | None:
        info = ServiceInfo(self.service, name)
        try:
            found = info.request(zc, RESOLVE_TIMEOUT_MS)
        # RuntimeError/AssertionError: zeroconf's loop stopped under an abandoned resolve.
        except (ZeroconfError, RuntimeError, AssertionError) as exc:
            logger.debug("mDNS: resolving %r failed: %r", name[:_MAX_LOGGED_TEXT], exc)
            return None
        return info.text if found else None

    @staticmethod
    def _close_zeroconf(
        zc: Zeroconf,
        browser: ServiceBrowser | None,
        info: ServiceInfo | None,
    ) -> None:
        try:
            if browser is not None:
                browser.cancel()
            if info is not None:
                zc.unregister_service(info)
        finally:
            zc.close()

    # -- trio side ---------------------------------------------------------------------------
    def _on_state_change(self, name: str, change: ServiceStateChange) -> None:
        """Runs on the trio thread (scheduled by zeroconf's browser thread)."""
        if change is ServiceStateChange.Removed:
            with suppress(DecodeError):
                self._reported.pop(instance_peer_id(name, self.service), None)
            return
        send = self._send
        if send is None or name in self._pending:
            return
        try:
            if len(self._pending) >= MAX_PENDING_NAMES:
                raise trio.WouldBlock
            send.send_nowait(name)
        except trio.WouldBlock:
            self._dropped = True
            return
        except trio.ClosedResourceError:
            return
        self._pending.add(name)

    async def _resolve_worker(self, zc: Zeroconf, names: trio.MemoryReceiveChannel[str]) -> None:
        async with names:
            async for name in names:
                self._pending.discard(name)
                try:
                    if instance_peer_id(name, self.service) == self.peer_id:
                        continue
                except DecodeError as exc:
                    logger.debug("mDNS: ignoring %s", exc)
                    continue
                # Abandoned on cancel: it ends by its own timeout, after zeroconf is closed.
                resolve = partial(self._resolve, zc, name)
                txt = await trio.to_thread.run_sync(  # type: ignore[call-arg]  # mypy 2 vs trio
                    resolve, abandon_on_cancel=True
                )
                if txt is not None:
                    self._accept(name, txt)

    def _accept(self, name: str, txt: bytes) -> None:
        try:
            peer = parse_announcement(name, txt, self.service)
        except DecodeError as exc:
            logger.info("mDNS: ignoring an announcement: %s", exc)
            return
        if peer.peer_id == self.peer_id or self._reported.get(peer.peer_id) == peer.addrs:
            return
        self._reported[peer.peer_id] = peer.addrs
        self._reported.move_to_end(peer.peer_id)
        while len(self._reported) > MAX_TRACKED_PEERS:
            self._reported.popitem(last=False)
        self._on_peer(peer.peer_id, list(peer.addrs))
