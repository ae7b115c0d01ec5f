"""asyncio I/O for SIP: UDP and TCP on one host:port, around the sans-I/O message core.

RFC 3261 §18 requires a UA to listen on both UDP and TCP (§18: "All SIP elements MUST implement
UDP and TCP"), and peers expect both on the same port, since a Via or Contact names one port.
So `SipTransport` binds the UDP socket first and then TCP on the port UDP got (port 0 for tests).

What stays out of here: choosing where a response goes. §18.2.2 sends it over the connection
the request came on (TCP) or to the Via's received/rport address (UDP); the transaction layer
works that out and calls `send` with the result. This layer only keeps TCP connections indexed
by the peer's (host, port), so that sending to that peer reuses its connection, and it opens a
connection when there is none (§18.1.1 for requests; §18.2.2 also allows it for responses);
`tcp_connections` keeps them, this module reads what arrives on them.

What this layer does protect, because it is the only one that sees raw bytes:
- oversize messages are dropped before parsing;
- a request that fails to parse but whose header fields could be read gets the error response
  once (`answer_parse_error`, §8.2.6 / §16.3 behaviour of a UAS); a datagram that is not SIP, a
  broken response or an ACK gets nothing (§18.1.2, §17.2.1), so two parties can never bounce
  errors at each other;
- a token bucket per source IP (`rate_limit`) caps requests (and garbage) before parsing;
  excess is dropped, counted and logged at most once a minute per source, so a flood cannot
  also flood the log;
- a `SourceGuard` (``config.guard``), when given, exempts trusted sources (carrier trunks) from
  the bucket and the per-source TCP cap, silences banned sources before parsing, counts their
  malformed requests towards a ban, and drops requests from known scanners unanswered;
- TCP connections are capped in number, closed when idle (one sweep timer for all of them, no
  timer per connection) or when the peer stops reading, and RFC 5626 §3.5.1 CRLF pings get
  their pong.

The handler is called synchronously from the read callback (no task hop per message); it must
not block. A handler exception is logged and counted, never allowed to close the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import parse_via
from edge_media.sip.message import SipRequest, SipResponse, answer_parse_error
from edge_media.sip.message_parse import parse_message
from edge_media.sip.rate_limit import SourceRateLimiter
from edge_media.sip.source_guard import SourceGuard
from edge_media.sip.stream import PONG, InvalidMessage, KeepAlivePing, KeepAlivePong
from edge_media.sip.tcp_connections import (
    SipNoConnectionError,
    SipTransportError,
    TcpConnection,
    TcpConnections,
    socket_address,
)
from edge_media.sip.worker_spread import WorkerSpread

__all__ = [
    "DEFAULT_REQUEST_BURST",
    "DEFAULT_REQUEST_RATE",
    "SipAddress",
    "SipHandler",
    "SipTransport",
    "SipTransportConfig",
    "TransportKind",
]

logger = logging.getLogger("agera.sip.transport")

TransportKind: TypeAlias = Literal["udp", "tcp"]
SipAddress: TypeAlias = tuple[str, int]  # (IP literal, port); IPv6 flow info and scope dropped

DEFAULT_SIP_PORT = 5060  # §19.1.2: the port a Via sent-by without one means
DEFAULT_REQUEST_RATE = 50.0  # requests per second per source IP
DEFAULT_REQUEST_BURST = 100.0
DEFAULT_TCP_IDLE_TIMEOUT = 120.0  # seconds; RFC 5626 clients ping every 95-120 s
DEFAULT_TCP_IDLE_CHECK = 5.0  # one sweep over all connections this often
DEFAULT_TCP_MAX_CONNECTIONS = 1024
DEFAULT_TCP_CONNECT_TIMEOUT = 3.0
DEFAULT_UDP_RECEIVE_BUFFER = 4 << 20  # absorbs bursts; the kernel caps it at rmem_max
TCP_BACKLOG = 512
PORT_ZERO_ATTEMPTS = 8  # with port 0, TCP may find UDP's port taken: pick another this often
CLOSE_TIMEOUT = 2.0  # seconds `close` waits for sockets to report closed

STAT_NAMES = (
    "udp_datagrams_in",
    "udp_datagrams_out",
    "udp_datagrams_forwarded_out",  # to the worker owning their Call-ID (worker_spread)
    "udp_datagrams_forwarded_in",
    "udp_keepalives",
    "tcp_bytes_in",
    "tcp_messages_out",
    "tcp_accepted",
    "tcp_connected",
    "tcp_rejected",
    "tcp_pings",
    "tcp_closed_idle",
    "tcp_closed_invalid",
    "tcp_closed_overflow",
    "tcp_connect_failures",
    "requests_in",
    "responses_in",
    "oversize_dropped",
    "garbage_dropped",
    "parse_errors_answered",
    "rate_limited",
    "banned_dropped",
    "scanner_dropped",
    "tcp_rejected_per_source",
    "handler_errors",
    "send_errors",
)


class SipHandler(Protocol):
    """Receives every message that parsed (requests that passed the rate limit, all responses)."""

    def on_message(
        self,
        message: SipRequest | SipResponse,
        remote: SipAddress,
        kind: TransportKind,
        local: SipAddress,
    ) -> None:
        """Called from the read callback; must not block. ``local`` is the socket's address."""


@dataclass(frozen=True, slots=True)
class SipTransportConfig:
    """Limits and protection. ``request_rate=None`` turns the rate limiter off."""

    max_message_size: int = _abnf.MAX_MESSAGE_SIZE
    request_rate: float | None = DEFAULT_REQUEST_RATE
    request_burst: float = DEFAULT_REQUEST_BURST
    rate_limit_exempt: Collection[str] = ()  # source IPs never limited (carrier trunks)
    tcp_idle_timeout: float | None = DEFAULT_TCP_IDLE_TIMEOUT
    tcp_idle_check_interval: float = DEFAULT_TCP_IDLE_CHECK
    tcp_max_connections: int = DEFAULT_TCP_MAX_CONNECTIONS
    tcp_connect_timeout: float = DEFAULT_TCP_CONNECT_TIMEOUT
    reuse_port: bool = False  # SO_REUSEPORT: one worker process per core on the same port
    udp_receive_buffer: int | None = DEFAULT_UDP_RECEIVE_BUFFER
    guard: SourceGuard | None = None  # trust exemptions, bans, scanner filter (source_guard)
    tcp_max_connections_per_source: int | None = None  # accepted ones per peer IP; None: no cap
    spread: WorkerSpread | None = None  # UDP by Call-ID over the media workers (worker_spread)


def _family(host: str) -> socket.AddressFamily:
    try:
        version = ipaddress.ip_address(host).version
    except ValueError as exc:
        raise ValueError(f"a SIP transport binds an IP literal, not {host!r}") from exc
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _new_socket(
    family: socket.AddressFamily, kind: socket.SocketKind, reuse_port: bool
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            option = getattr(socket, "SO_REUSEPORT", None)
            if option is None:
                raise OSError("SO_REUSEPORT is not available on this platform")
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _bind(sock: socket.socket, host: str, port: int) -> socket.socket:
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _looks_like_response(data: bytes) -> bool:
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    return data[:4] == b"SIP/"


def _udp_reply_target(error: SipParseError, remote: SipAddress) -> SipAddress:
    """§18.2.2 for an unreliable transport: the source IP ("received"), at the Via's port.

    RFC 3581 §4: with rport, the source port too. Never another host than the source, so a
    forged Via cannot aim our error responses at a third party.
    """
    lines = error.request_headers
    if lines is None:
        return remote
    try:
        via = parse_via(lines.get_lines("via")[0])[0]
    except (SipParseError, IndexError):
        return remote
    if via.has_rport:
        return remote
    return remote[0], via.port or DEFAULT_SIP_PORT


def _new_tag() -> str:
    return secrets.token_hex(8)


class _UdpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("_owner",)

    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._owner._count("send_errors")
        logger.debug("UDP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._udp_lost()


class SipTransport:
    """SIP over UDP and TCP on one address. ``await start()``, then `send`; ``await close()``.

    ``host`` is an IPv4 or IPv6 literal; ``port`` 0 picks a free port (the same for UDP and
    TCP). ``tag_factory`` makes the To tag of error responses (random by default).
    """

    def __init__(
        self,
        handler: SipHandler,
        host: str,
        port: int,
        *,
        config: SipTransportConfig | None = None,
        tag_factory: Callable[[], str] = _new_tag,
    ) -> None:
        self._family = _family(host)
        self._handler = handler
        self._host = host
        self._port = port
        self.config = config or SipTransportConfig()
        self._tag_factory = tag_factory
        cfg = self.config
        self._limiter = (
            SourceRateLimiter(cfg.request_rate, cfg.request_burst)
            if cfg.request_rate is not None
            else None
        )
        self._exempt = frozenset(cfg.rate_limit_exempt)
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_closed: asyncio.Future[None] | None = None
        self._server: asyncio.Server | None = None
        self._local: SipAddress = (host, port)
        self._tcp = TcpConnections(
            stats=self._stats,
            on_data=self._tcp_data,
            max_message_size=cfg.max_message_size,
            max_connections=cfg.tcp_max_connections,
            connect_timeout=cfg.tcp_connect_timeout,
            idle_timeout=cfg.tcp_idle_timeout,
            idle_check_interval=cfg.tcp_idle_check_interval,
            max_per_source=cfg.tcp_max_connections_per_source,
            exempt=cfg.guard.exempt if cfg.guard is not None else None,
        )
        self._started = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP, then TCP on the port UDP got, and start receiving."""
        if self._started:
            raise RuntimeError("SipTransport.start() called twice")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        self._tcp.start(loop)
        udp_sock, tcp_sock = self._bind_sockets()
        self._udp_closed = loop.create_future()
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp_sock)
            self._udp = udp
            self._local = socket_address(udp.get_extra_info("sockname"))
            self._server = await loop.create_server(
                self._tcp.accept, sock=tcp_sock, backlog=TCP_BACKLOG
            )
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            await self.close()
            raise
        self._tcp.start_idle_sweep()
        if self.config.spread is not None:
            await self.config.spread.start(self._from_worker)
        logger.info("SIP listening on %s:%d (UDP and TCP)", *self._local)

    async def close(self) -> None:
        """Stop listening and close every connection; waits (bounded) until they are closed."""
        if self._closed:
            return
        self._closed = True
        if self.config.spread is not None:
            self.config.spread.close()
        self._tcp.stop()
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        self._tcp.close_all()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._wait_closed()
        except TimeoutError:
            logger.warning("SIP sockets did not close in %s s: aborting", CLOSE_TIMEOUT)
            self._tcp.abort_all()
        if self._server is not None:
            await self._server.wait_closed()

    async def _wait_closed(self) -> None:
        await self._tcp.wait_closed()
        if self._udp is not None and self._udp_closed is not None:
            await self._udp_closed

    async def __aenter__(self) -> SipTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public --------------------------------------------------------------------------------

    @property
    def local_addr(self) -> SipAddress:
        """The bound (host, port), shared by UDP and TCP."""
        return self._local

    def stats(self) -> dict[str, int]:
        """Counters since start, plus the gauges ``tcp_connections`` and ``tracked_sources``."""
        stats = dict(self._stats)
        stats["tcp_connections"] = len(self._tcp)
        stats["tracked_sources"] = len(self._limiter) if self._limiter is not None else 0
        return stats

    def has_connection(self, addr: SipAddress) -> bool:
        """Whether a usable TCP connection to ``addr`` is open."""
        return self._tcp.lookup(addr) is not None

    def send_nowait(self, data: bytes, addr: SipAddress, kind: TransportKind) -> None:
        """Send now: UDP always, TCP over an open connection to ``addr`` only.

        Raises SipNoConnectionError when TCP has no connection to ``addr`` (responses to TCP
        requests always have one), SipTransportError when the peer stopped reading.
        ``addr`` must be an IP literal: DNS (RFC 3263) is the caller's business.
        """
        if kind == "udp":
            self._send_udp(data, addr)
        elif kind == "tcp":
            connection = self._tcp.lookup(addr)
            if connection is None:
                raise SipNoConnectionError(f"no TCP connection to {addr[0]}:{addr[1]}")
            self._tcp.write(connection, data)
        else:
            raise ValueError(f"unknown SIP transport {kind!r}")

    async def send(self, data: bytes, addr: SipAddress, kind: TransportKind) -> None:
        """Send; over TCP open a connection first when there is none (§18.1.1).

        Raises SipConnectError when the connection cannot be opened within
        ``config.tcp_connect_timeout``; concurrent sends to one peer share one attempt.
        """
        if kind != "tcp":
            self.send_nowait(data, addr, kind)
            return
        connection = self._tcp.lookup(addr)
        if connection is None:
            connection = await self._tcp.connect(addr)
        self._tcp.write(connection, data)

    # -- UDP -----------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        stats = self._stats
        stats["udp_datagrams_in"] += 1
        remote = socket_address(addr)
        if len(data) > self.config.max_message_size:
            stats["oversize_dropped"] += 1
            logger.debug("dropped a %d-octet datagram from %s", len(data), remote)
            return
        if not _looks_like_response(data) and not self._admit(remote[0]):
            return
        spread = self.config.spread
        if spread is not None and spread.forward(data, remote):
            stats["udp_datagrams_forwarded_out"] += 1
            return
        self._handle_datagram(data, remote)

    def _from_worker(self, data: bytes, remote: SipAddress) -> None:
        """A datagram another worker received and forwarded here (admitted there already)."""
        self._stats["udp_datagrams_forwarded_in"] += 1
        if len(data) <= self.config.max_message_size:
            self._handle_datagram(data, remote)

    def _handle_datagram(self, data: bytes, remote: SipAddress) -> None:
        try:
            message = parse_message(data)
        except SipParseError as error:
            if not _looks_like_response(data):
                self._strike_malformed(remote[0])
            self._answer_udp_error(error, remote)
            return
        if message is None:
            self._stats["udp_keepalives"] += 1
            return
        self._deliver(message, remote, "udp", self._local)

    def _answer_udp_error(self, error: SipParseError, remote: SipAddress) -> None:
        answer = answer_parse_error(error, to_tag=self._tag_factory())
        if answer is None or remote == self._local:
            self._stats["garbage_dropped"] += 1
            logger.debug("dropped an unparsable datagram from %s: %s", remote, error)
            return
        self._stats["parse_errors_answered"] += 1
        logger.debug("answering %d to a malformed request from %s", error.status, remote)
        self._send_udp(answer.serialize(), _udp_reply_target(error, remote))

    def _send_udp(self, data: bytes, addr: SipAddress) -> None:
        udp = self._udp
        if udp is None or udp.is_closing():
            raise SipTransportError("the SIP UDP socket is closed")
        udp.sendto(data, addr)
        self._stats["udp_datagrams_out"] += 1

    def _udp_lost(self) -> None:
        if self._udp_closed is not None and not self._udp_closed.done():
            self._udp_closed.set_result(None)

    # -- TCP -----------------------------------------------------------------------------------

    def _tcp_data(self, connection: TcpConnection, data: bytes) -> None:
        stats = self._stats
        for event in connection.reader.feed(data):
            if isinstance(event, SipRequest):
                if self._admit(connection.remote[0]):
                    self._deliver(event, connection.remote, "tcp", connection.local)
            elif isinstance(event, SipResponse):
                self._deliver(event, connection.remote, "tcp", connection.local)
            elif isinstance(event, KeepAlivePing):
                stats["tcp_pings"] += 1
                self._tcp.try_write(connection, PONG)
            elif isinstance(event, InvalidMessage):
                self._tcp_invalid(connection, event)
            else:
                assert isinstance(event, KeepAlivePong)

    def _tcp_invalid(self, connection: TcpConnection, event: InvalidMessage) -> None:
        if self._admit(connection.remote[0]):
            self._strike_malformed(connection.remote[0])
            answer = answer_parse_error(event.error, to_tag=self._tag_factory())
            if answer is None:
                self._stats["garbage_dropped"] += 1
            else:
                self._stats["parse_errors_answered"] += 1
                self._tcp.try_write(connection, answer.serialize())
        logger.debug("invalid SIP on TCP from %s: %s", connection.remote, event.error)
        if event.fatal:
            # Framing is lost: nothing after this point can be trusted to start a message.
            self._stats["tcp_closed_invalid"] += 1
            connection.close()

    # -- shared --------------------------------------------------------------------------------

    def _admit(self, source: str) -> bool:
        """Charge one request to ``source``'s bucket; count and (rarely) log a refusal.

        A trusted source (the guard's) is never charged; a banned one is dropped uncharged.
        """
        limiter = self._limiter
        guard = self.config.guard
        if source in self._exempt or (guard is not None and guard.exempt(source)):
            return True
        assert self._loop is not None
        now = self._loop.time()
        if guard is not None and guard.banned(source, now):
            self._stats["banned_dropped"] += 1
            return False
        if limiter is None or limiter.allow(source, now):
            return True
        self._stats["rate_limited"] += 1
        if limiter.should_log(source, now):
            logger.warning(
                "SIP requests from %s exceed %s/s (burst %s): dropping the excess",
                source,
                self.config.request_rate,
                self.config.request_burst,
            )
        return False

    def _strike_malformed(self, source: str) -> None:
        guard = self.config.guard
        if guard is not None and self._loop is not None:
            guard.strike(source, "malformed", self._loop.time())

    def _deliver(
        self,
        message: SipRequest | SipResponse,
        remote: SipAddress,
        kind: TransportKind,
        local: SipAddress,
    ) -> None:
        guard = self.config.guard
        if isinstance(message, SipRequest) and guard is not None:
            scanner = guard.scanner(message, remote[0])
            if scanner is not None:
                self._stats["scanner_dropped"] += 1
                logger.debug("dropped a %s from %s: scanner %r", message.method, remote, scanner)
                return
        self._stats["requests_in" if isinstance(message, SipRequest) else "responses_in"] += 1
        try:
            self._handler.on_message(message, remote, kind, local)
        except Exception:
            self._stats["handler_errors"] += 1
            logger.exception("SIP handler failed on a message from %s over %s", remote, kind)

    def _count(self, name: str) -> None:
        self._stats[name] += 1

    def _bind_sockets(self) -> tuple[socket.socket, socket.socket]:
        reuse_port = self.config.reuse_port
        attempts = PORT_ZERO_ATTEMPTS if self._port == 0 else 1
        for attempt in range(attempts):
            udp = _new_socket(self._family, socket.SOCK_DGRAM, reuse_port)
            if self.config.udp_receive_buffer:
                try:
                    udp.setsockopt(
                        socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.udp_receive_buffer
                    )
                except OSError:  # pragma: no cover - a kernel refusing is not fatal
                    logger.warning("could not set the SIP UDP receive buffer size")
            _bind(udp, self._host, self._port)
            port = udp.getsockname()[1]
            tcp = _new_socket(self._family, socket.SOCK_STREAM, reuse_port)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                _bind(tcp, self._host, port)
            except OSError:
                udp.close()
                if attempt + 1 == attempts:
                    raise
                continue
            return udp, tcp
        raise AssertionError("unreachable")  # pragma: no cover
