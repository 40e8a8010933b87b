"""py-libp2p's swarm and transport upgrader, patched: the connection admission of a `PeerHost`.

`MindooSwarm` makes three narrow changes to `Swarm` (inbound slot release, no implicit dials,
inbound admission through :mod:`.inbound_policy`) and `MindooUpgrader` applies the peer gate
right after Noise; each class says why. Re-check every override on a libp2p upgrade
(`_libp2p_pin` guards the version). The policy itself is pure and lives in
:mod:`.inbound_policy`; this module only applies it at the right points of py-libp2p's
connection setup.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.abc import IMuxedConn, INetConn, IRawConnection, ISecureConn, ITransport
from libp2p.io.abc import ReadWriteCloser
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore
from libp2p.rcmgr import Direction
from libp2p.transport.exceptions import SecurityUpgradeFailure
from libp2p.transport.upgrader import TransportUpgrader

from . import _libp2p_pin  # noqa: F401  (refuses a py-libp2p release these patches do not fit)
from ._yamux_window import batch_windows
from .inbound_policy import Existing, InboundPolicy, InboundTicket, Refused

logger = logging.getLogger(__name__)

_current_inbound_slot: contextvars.ContextVar[_InboundSlot | None] = contextvars.ContextVar(
    "mindoo_inbound_slot", default=None
)


class _InboundSlot:
    """Links an inbound connection handler to the connection it upgraded."""

    __slots__ = ("muxed_conn", "ticket", "upgraded")

    def __init__(self) -> None:
        self.muxed_conn: IMuxedConn | None = None
        self.ticket: InboundTicket | None = None
        self.upgraded = trio.Event()


async def _wait_closed(muxed_conn: IMuxedConn) -> None:
    closed = getattr(muxed_conn, "event_closed", None)
    if isinstance(closed, trio.Event):  # Yamux and Mplex
        await closed.wait()
        return
    while not muxed_conn.is_closed:  # pragma: no cover - no other muxer is configured
        await trio.sleep(1.0)


class _NeverAutoConnect(AutoConnector):
    """The auto-connector, switched off: this node dials only what its caller asks for."""

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return

    async def maybe_connect(self) -> None:
        return


class MindooSwarm(Swarm):
    """py-libp2p's `Swarm` with two narrow changes (re-check both on every libp2p upgrade).

    1. Inbound slot release (libp2p/py-libp2p#1426). `Swarm._handle_inbound_connection`
       takes a token from ``_inbound_limiter`` and returns it in a ``finally`` that only runs
       when the handler ends; but after a successful upgrade the handler awaits
       ``self.manager.wait_finished()``, i.e. the end of the whole swarm. Here the handler runs
       beside a watcher that cancels it once the upgraded connection closes, so the ``finally``
       returns the token. The connection's own tasks live in the swarm manager, not in this
       handler, so cancelling the handler does not touch a live connection.
    2. No implicit dials: `dial_peer` (peerstore addresses, used by the auto-connector,
       `BasicHost.connect` and `Swarm.new_stream` when not connected) is refused.
    3. Inbound admission (:mod:`.inbound_policy`): an accepted TCP connection gets a ticket
       from ``inbound_policy`` before any handshake (or is closed at once), and gives it back
       when it closes. The ticket travels with the handler's context to `MindooUpgrader`,
       which authenticates the peer id on it right after Noise.
    """

    inbound_policy: InboundPolicy

    def __init__(
        self,
        peer_id: ID,
        peerstore: PeerStore,
        upgrader: TransportUpgrader,
        *,
        transports: list[ITransport],
        retry_config: RetryConfig,
        connection_config: ConnectionConfig,
    ) -> None:
        super().__init__(
            peer_id,
            peerstore,
            upgrader,
            transports=transports,
            retry_config=retry_config,
            connection_config=connection_config,
        )
        self.auto_connector = _NeverAutoConnect(
            swarm=self, auto_connect_interval=self.connection_config.auto_connect_interval
        )

    async def _handle_inbound_connection(
        self, read_write_closer: ReadWriteCloser, maddr: multiaddr.Multiaddr
    ) -> None:
        slot = _InboundSlot()
        token = _current_inbound_slot.set(slot)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_closed, slot, nursery.cancel_scope)
                await super()._handle_inbound_connection(read_write_closer, maddr)
                # Upgrade failed or was refused: the handler returned on its own.
                nursery.cancel_scope.cancel()
        finally:
            _current_inbound_slot.reset(token)
            if slot.ticket is not None:
                self.inbound_policy.close(slot.ticket)

    async def upgrade_inbound_raw_conn(
        self, raw_conn: IRawConnection, maddr: multiaddr.Multiaddr
    ) -> IMuxedConn:
        slot = _current_inbound_slot.get()
        if slot is not None and slot.ticket is None:
            remote = (
                raw_conn.get_remote_address() if hasattr(raw_conn, "get_remote_address") else None
            )
            address = str(remote[0]) if remote else "unknown"
            try:
                slot.ticket = self.inbound_policy.accept(address, trio.current_time())
            except Refused as exc:
                logger.info("inbound connection from %s refused: %s", address, exc)
                with suppress(Exception):
                    await raw_conn.close()
                raise SwarmException(f"inbound connection refused: {exc}") from None
        muxed_conn = await super().upgrade_inbound_raw_conn(raw_conn, maddr)
        slot = _current_inbound_slot.get()
        if slot is not None and slot.muxed_conn is None:
            slot.muxed_conn = muxed_conn
            slot.upgraded.set()
        return muxed_conn

    async def dial_peer(self, peer_id: ID) -> list[INetConn]:
        raise SwarmException(
            f"implicit dial to {peer_id} refused: mindoo dials only the address it is given"
        )


async def _cancel_when_closed(slot: _InboundSlot, scope: trio.CancelScope) -> None:
    await slot.upgraded.wait()
    assert slot.muxed_conn is not None
    await _wait_closed(slot.muxed_conn)
    scope.cancel()


class MindooUpgrader(TransportUpgrader):
    """The transport upgrader with the peer gate right after Noise, before Yamux and before
    the connection is registered: a refused peer never counts as connected, not even briefly.

    Inbound: the ticket of the connection (from the handler's context) is authenticated with
    the policy (banned peers and second connections refused). Outbound: a peer the gate refuses
    is not connected to either. Its Yamux connections release receive windows in half-window
    batches (:mod:`._yamux_window`).
    """

    swarm: MindooSwarm
    peer_allowed: Callable[[str], bool]

    async def upgrade_security(
        self, raw_conn: IRawConnection, is_initiator: bool, peer_id: ID | None = None
    ) -> ISecureConn:
        secured = await super().upgrade_security(raw_conn, is_initiator, peer_id)
        remote = secured.get_remote_peer()
        remote_text = remote.to_base58()
        banned = not self.peer_allowed(remote_text)
        try:
            if is_initiator:
                if banned:
                    raise Refused(f"peer {remote_text} is banned")
            else:
                slot = _current_inbound_slot.get()
                if slot is not None and slot.ticket is not None:
                    older = list(self.swarm.get_connections(remote))
                    replace = self.swarm.inbound_policy.authenticate(
                        slot.ticket,
                        remote_text,
                        banned=banned,
                        existing=existing_connections(older),
                        local_peer_id=self.swarm.get_peer_id().to_base58(),
                    )
                    if replace:
                        for conn in older:
                            with suppress(Exception):
                                await conn.close()
                elif banned:
                    raise Refused(f"peer {remote_text} is banned")
        except Refused as exc:
            logger.info("connection %s refused: %s", "to" if is_initiator else "from", exc)
            with suppress(Exception):
                await secured.close()
            raise SecurityUpgradeFailure(str(exc)) from None
        return secured

    async def upgrade_connection(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        return batch_windows(await super().upgrade_connection(conn, peer_id))


def existing_connections(conns: Sequence[INetConn]) -> Existing:
    """What a peer's current connections are, for the one-connection rule."""
    if not conns:
        return Existing.NONE
    outbound = any(getattr(conn, "direction", None) == Direction.OUTBOUND for conn in conns)
    return Existing.OUTBOUND if outbound else Existing.INBOUND


__all__ = ["MindooSwarm", "MindooUpgrader", "existing_connections"]
