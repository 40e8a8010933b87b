"""The peers the user names: the address book on disk and the peer commands.

`PeerDirectory` owns the address book (``peers.json``, saved after every change) and carries
out what the user asks of peers: add one (remember its address, connect now), request one
(remember it, dial in the background), name one, forget one (and close its connection), block
and unblock one (partitions in tests). It also hears mDNS announcements (a peer found on the
LAN is dialled but not remembered: announcements are unauthenticated until Noise checks the
peer id, and must not evict the address book) and runs the mDNS discovery.

While the daemon runs it holds the host and the connection requests (`attach`); before that,
the address-book commands work and those that need the network raise `DaemonError` or do
nothing, as documented on each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from ..address_book_file import load_address_book, save_address_book
from ..net.address_book import AddressBook
from ..net.host import PeerHost
from .connection_requests import ConnectionRequest, ConnectionRequests, Dial, Disconnect
from .home_lock import DaemonError
from .peer_table import PeerTable

logger = logging.getLogger(__name__)


class PeerDirectory:
    """The address book and the peer commands; see the module docstring."""

    def __init__(self, home: Path, peer_table: PeerTable) -> None:
        self._home = home
        self._peer_table = peer_table
        self.address_book: AddressBook = load_address_book(home)
        self._host: PeerHost | None = None
        self._requests: ConnectionRequests | None = None

    def attach(self, host: PeerHost, requests: ConnectionRequests) -> None:
        """The daemon runs: forget this node's own address if the book held it, save."""
        self._host, self._requests = host, requests
        if self.address_book.set_own_peer_id(host.peer_id):
            logger.warning("the address book held this node's own address: forgotten")
        self.save()

    def detach(self) -> None:
        self._host = self._requests = None

    def save(self) -> None:
        save_address_book(self._home, self.address_book)

    def request(self, request: ConnectionRequest) -> None:
        """Queue a dial or disconnect (trio thread; never blocks; nothing when not running)."""
        if self._requests is not None:
            self._requests.offer(request)

    async def carry_out(self, request: ConnectionRequest) -> None:
        """One connection request (`ConnectionRequests.run` calls it)."""
        host = self._running_host()
        if isinstance(request, Disconnect):
            await host.disconnect(request.peer_id)
        elif request.remember:
            await self.add(request.addr)
        else:
            await host.connect(request.addr)

    async def add(self, addr: str) -> str:
        """Remember ``addr`` (a multiaddr ending in /p2p/PEER_ID) and connect to it now; its
        peer id. Remembered even when the daemon is not running (then DaemonError)."""
        peer_id = self.address_book.add(addr)
        self.save()
        host = self._running_host()
        self._peer_table.unblock(peer_id)
        await host.connect(addr)
        self._peer_table.peer(peer_id).address = addr
        return peer_id

    def request_add(self, addr: str) -> str:
        """Remember ``addr`` and connect to it in the background; its peer id (trio thread)."""
        peer_id = self.address_book.add(addr)
        self.save()
        self._peer_table.unblock(peer_id)
        self.request(Dial(addr, remember=True))
        return peer_id

    def name(self, peer: str, name: str | None) -> str:
        """Name the address-book peer ``peer`` (a name, id or id prefix); its peer id."""
        peer_id = self.address_book.find(peer)
        self.address_book.set_name(peer_id, name)
        self.save()
        return peer_id

    def forget(self, peer: str) -> str:
        """Remove ``peer`` (a name, id or id prefix) from the address book and close its
        connection: it is not dialed again (it may still dial us). Its peer id."""
        peer_id = self.address_book.find(peer)
        self.address_book.remove(peer_id)
        self.save()
        if self._host is not None and self._host.is_connected(peer_id):
            self.request(Disconnect(peer_id))
        return peer_id

    async def block(self, peer_id: str) -> None:
        """Disconnect ``peer_id`` and refuse it until `unblock`."""
        self._peer_table.block(peer_id)
        if self._host is not None:
            await self._host.disconnect(peer_id)

    def unblock(self, peer_id: str) -> None:
        self._peer_table.unblock(peer_id)

    def on_mdns_peer(self, peer_id: str, addrs: list[str]) -> None:
        """A peer announced itself on the LAN: dial it, not remembered."""
        if not addrs or not self._peer_table.may_dial(peer_id):
            return
        if self._host is not None and self._host.is_connected(peer_id):
            return
        self.request(Dial(addrs[0], remember=False))

    async def run_mdns(
        self,
        host: PeerHost,
        interfaces: Sequence[str],
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Announce this node and hear others on ``interfaces`` (IP addresses; never every
        interface). DaemonError when none is configured or mDNS cannot start."""
        from ..net.mdns import MdnsDiscovery, MdnsError

        if not interfaces:
            raise DaemonError(
                "mDNS needs the IP addresses of the interfaces to use (mdns_interfaces in"
                " config.toml): it never runs on every interface"
            )
        try:
            discovery = MdnsDiscovery(
                host.peer_id, host.listen_addrs(), interfaces, on_peer=self.on_mdns_peer
            )
        except MdnsError as exc:
            raise DaemonError(f"cannot start mDNS: {exc}") from None
        await discovery.run(task_status=task_status)

    def _running_host(self) -> PeerHost:
        if self._host is None:
            raise DaemonError("the daemon is not running")
        return self._host


__all__ = ["PeerDirectory"]
