"""The TCP connections of one `SipTransport`: opened, indexed by peer, capped, swept when idle.

Why apart from `transport`: what a connection's bytes mean (framing, rate limit, parse errors,
delivery) is the transport's business and the same for UDP; keeping connections alive is not.
RFC 3261 §18 wants a response sent over the connection its request came on, and a request to a
peer sent over an open connection to it when there is one (§18.1.1), so connections are indexed
by the peer's (host, port). Their number is capped, those idle for ``idle_timeout`` are closed
by one sweep timer for all of them (no timer per connection), and a peer that stops reading is
cut off once its write buffer passes `MAX_TCP_WRITE_BUFFER`. Connections a peer opens to us are
also capped per peer IP (``max_per_source``), so one host cannot take every slot of the global
cap; connections we open (dials to trunks, calls to phones) never count against it, and
``exempt`` sources (trusted carriers) are not capped.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from edge_media.sip.stream import SipStreamReader

if TYPE_CHECKING:
    from edge_media.sip.transport import SipAddress

__all__ = [
    "MAX_TCP_WRITE_BUFFER",
    "SipConnectError",
    "SipNoConnectionError",
    "SipTransportError",
    "TcpConnection",
    "TcpConnections",
    "socket_address",
]

logger = logging.getLogger("agera.sip.transport")

MAX_TCP_WRITE_BUFFER = 1 << 20  # a peer that stops reading is cut off past this


class SipTransportError(Exception):
    """A message could not be sent (no usable connection, too many connections, peer stalled)."""


class SipConnectError(SipTransportError):
    """A TCP connection to the peer could not be opened in time (refused, unreachable, timeout)."""


class SipNoConnectionError(SipTransportError):
    """`send_nowait` over TCP to a peer with no open connection: use `send`, which opens one."""


def socket_address(addr: Any) -> SipAddress:
    """(host, port) of a socket address; an IPv6 4-tuple's flow info and scope are dropped."""
    return addr[0], addr[1]


def _normalise(addr: SipAddress) -> SipAddress:
    """The IP literal in its compressed form, so that one peer has one key in the index."""
    try:
        return ipaddress.ip_address(addr[0]).compressed, addr[1]
    except ValueError as exc:
        raise ValueError(f"SIP peers are addressed by IP literal, not {addr[0]!r}") from exc


class TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or opened by us; its own stream reader keeps the framing."""

    __slots__ = (
        "last_activity",
        "local",
        "outbound",
        "owner",
        "reader",
        "rejected",
        "remote",
        "transport",
    )

    def __init__(self, owner: TcpConnections, *, outbound: bool) -> None:
        self.owner = owner
        self.outbound = outbound
        self.reader = SipStreamReader(max_message_size=owner.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.remote: SipAddress = ("", 0)
        self.local: SipAddress = ("", 0)
        self.last_activity = 0.0
        self.rejected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if peername is None:  # reset before we got to it: nothing to index it by
            self.rejected = True
            transport.close()
            return
        self.remote = socket_address(peername)
        self.local = socket_address(transport.get_extra_info("sockname"))
        self.owner.opened(self)

    def data_received(self, data: bytes) -> None:
        self.owner.received(self, data)

    def eof_received(self) -> bool:
        return False  # the peer is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise SipNoConnectionError(f"the TCP connection to {self.remote} is closing")
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_TCP_WRITE_BUFFER:
            self.owner.stats["tcp_closed_overflow"] += 1
            logger.warning("TCP peer %s stopped reading: connection aborted", self.remote)
            transport.abort()
            raise SipTransportError(f"TCP peer {self.remote} is not reading; connection aborted")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpConnections:
    """Every TCP connection of one transport, by peer address; ``on_data`` reads their bytes.

    ``stats`` is the transport's counter table, shared so that its `stats()` stays one dict.
    `start` before listening and `start_idle_sweep` once listening; `stop`, `close_all` and
    `wait_closed` when the transport closes. ``idle_timeout`` None keeps idle connections open.
    """

    def __init__(
        self,
        *,
        stats: dict[str, int],
        on_data: Callable[[TcpConnection, bytes], None],
        max_message_size: int,
        max_connections: int,
        connect_timeout: float,
        idle_timeout: float | None,
        idle_check_interval: float,
        max_per_source: int | None = None,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.stats = stats
        self.max_message_size = max_message_size
        self._on_data = on_data
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle_check_interval = idle_check_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[TcpConnection] = set()
        self._by_remote: dict[SipAddress, TcpConnection] = {}
        self._connecting: dict[SipAddress, asyncio.Task[TcpConnection]] = {}
        self._max_per_source = max_per_source
        self._exempt = exempt
        self._accepted_from: dict[str, int] = {}  # peer IP -> connections it opened to us
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._connections)

    def accept(self) -> TcpConnection:
        """A protocol for a connection the listening socket accepted (`create_server`)."""
        return TcpConnection(self, outbound=False)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connections may open from now on; before, `connect` refuses (transport not running)."""
        self._loop = loop

    def start_idle_sweep(self) -> None:
        assert self._loop is not None
        if self._idle_timeout is not None:
            self._sweep_handle = self._loop.call_later(self._idle_check_interval, self._sweep_idle)

    def stop(self) -> None:
        """Refuse new connections, stop the sweep and cancel the connects under way."""
        self._closed = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for task in list(self._connecting.values()):
            task.cancel()

    def close_all(self) -> None:
        """Close every open connection; `wait_closed` returns once they all reported it."""
        self._all_closed = asyncio.Event()
        for connection in list(self._connections):
            connection.close()

    async def wait_closed(self) -> None:
        if self._connections and self._all_closed is not None:
            await self._all_closed.wait()

    def abort_all(self) -> None:
        """For connections that did not close in time: drop them without a FIN handshake."""
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.abort()

    # -- events from the connections -----------------------------------------------------------

    def opened(self, connection: TcpConnection) -> None:
        assert self._loop is not None and connection.transport is not None
        if self._closed or len(self._connections) >= self._max_connections:
            connection.rejected = True
            self.stats["tcp_rejected"] += 1
            logger.warning(
                "TCP connection from %s refused: %d connections open",
                connection.remote,
                len(self._connections),
            )
            connection.transport.close()
            return
        if not connection.outbound and self._over_source_cap(connection):
            return
        connection.last_activity = self._loop.time()
        self._connections.add(connection)
        self._by_remote[connection.remote] = connection
        self.stats["tcp_connected" if connection.outbound else "tcp_accepted"] += 1

    def _over_source_cap(self, connection: TcpConnection) -> bool:
        """Count an accepted connection for its peer IP; True (and refused) past the cap."""
        host = connection.remote[0]
        limit = self._max_per_source
        count = self._accepted_from.get(host, 0)
        if limit is not None and count >= limit and not (self._exempt and self._exempt(host)):
            assert connection.transport is not None
            connection.rejected = True
            self.stats["tcp_rejected_per_source"] += 1
            logger.debug("TCP connection from %s refused: %d open from that host", host, count)
            connection.transport.close()
            return True
        self._accepted_from[host] = count + 1
        return False

    def lost(self, connection: TcpConnection) -> None:
        if connection.rejected:
            return
        if not connection.outbound and connection in self._connections:
            host = connection.remote[0]
            left = self._accepted_from.get(host, 1) - 1
            if left > 0:
                self._accepted_from[host] = left
            else:
                self._accepted_from.pop(host, None)
        self._connections.discard(connection)
        if self._by_remote.get(connection.remote) is connection:
            del self._by_remote[connection.remote]
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def received(self, connection: TcpConnection, data: bytes) -> None:
        if connection.rejected:
            return
        assert self._loop is not None
        connection.last_activity = self._loop.time()
        self.stats["tcp_bytes_in"] += len(data)
        self._on_data(connection, data)

    # -- sending -------------------------------------------------------------------------------

    def lookup(self, addr: SipAddress) -> TcpConnection | None:
        """The usable connection to ``addr``, or None."""
        connection = self._by_remote.get(addr)
        if connection is None:
            try:
                connection = self._by_remote.get(_normalise(addr))
            except ValueError:
                return None
        return connection if connection is not None and connection.usable else None

    def write(self, connection: TcpConnection, data: bytes) -> None:
        assert self._loop is not None
        connection.write(data)
        connection.last_activity = self._loop.time()
        self.stats["tcp_messages_out"] += 1

    def try_write(self, connection: TcpConnection, data: bytes) -> None:
        """`write` for what we send unasked (pongs, error answers): a failure is only counted."""
        try:
            self.write(connection, data)
        except SipTransportError as exc:
            self.stats["send_errors"] += 1
            logger.debug("%s", exc)

    async def connect(self, addr: SipAddress) -> TcpConnection:
        """Open a connection to ``addr`` (an IP literal); concurrent calls share one attempt."""
        addr = _normalise(addr)
        if self._closed or self._loop is None:
            raise SipTransportError("the SIP transport is not running")
        task = self._connecting.get(addr)
        if task is None:
            if len(self._connections) >= self._max_connections:
                raise SipTransportError(
                    f"cannot connect to {addr[0]}:{addr[1]}: "
                    f"{len(self._connections)} TCP connections open"
                )
            task = self._loop.create_task(self._open_connection(addr))
            self._connecting[addr] = task
            task.add_done_callback(functools.partial(self._connect_done, addr))
        return await asyncio.shield(task)

    def _connect_done(self, addr: SipAddress, task: asyncio.Task[TcpConnection]) -> None:
        if self._connecting.get(addr) is task:
            del self._connecting[addr]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it, or none is left to care

    async def _open_connection(self, addr: SipAddress) -> TcpConnection:
        assert self._loop is not None
        timeout = self._connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, connection = await self._loop.create_connection(
                    lambda: TcpConnection(self, outbound=True), addr[0], addr[1]
                )
        except TimeoutError as exc:
            self.stats["tcp_connect_failures"] += 1
            raise SipConnectError(
                f"TCP connect to {addr[0]}:{addr[1]} timed out after {timeout} s"
            ) from exc
        except OSError as exc:
            self.stats["tcp_connect_failures"] += 1
            raise SipConnectError(
                f"TCP connect to {addr[0]}:{addr[1]} failed: {exc.strerror or exc}"
            ) from exc
        if connection.rejected:
            raise SipTransportError(
                f"TCP connection to {addr[0]}:{addr[1]} dropped at once: too many connections "
                "open, or reset by the peer"
            )
        return connection

    def _sweep_idle(self) -> None:
        """One timer for every connection: close those silent for ``idle_timeout``."""
        assert self._loop is not None and self._idle_timeout is not None
        now = self._loop.time()
        limit = self._idle_timeout
        for connection in [c for c in self._connections if now - c.last_activity >= limit]:
            self.stats["tcp_closed_idle"] += 1
            logger.debug("closing idle TCP connection from %s", connection.remote)
            connection.close()
        self._sweep_handle = self._loop.call_later(self._idle_check_interval, self._sweep_idle)
