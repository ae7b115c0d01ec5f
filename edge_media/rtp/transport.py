"""asyncio I/O for RTP: a UDP socket pair per call, and `MediaClock`, the pacer's one driver.

Receive path: `RtpSocket` *is* the `DatagramProtocol`, so a datagram goes from the loop's read
callback to `RtpReceiver.on_packet` and on to the handler in one call chain: no task, queue or
extra object per packet. At 50 packets a second per call and a budget of ~1.5 ms of CPU per
call-second (docs/performance.md), every hop is paid 50 times a second per call; a task hop
alone costs more than parsing the packet. The handler is therefore called synchronously from the
read callback and must not block (it pushes into a playout queue or a WebSocket write buffer).

Send path: the single process-wide `Pacer` builds every call's packets on one 20 ms grid and
`MediaClock` is the only thing that wakes it (docs/architecture.md, "One clock"; pacer.py's
driver contract): one `loop.call_at` per tick for the whole process, however many calls are up. A
socket registers its stream with the pacer using its own datagram transport as the sink, so
sending is a direct `transport.sendto`. RFC 4961 symmetric RTP: when the receiver latches onto
(or re-latches to) a source, the stream's destination follows it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.pacer import (
    DEFAULT_INTERVAL,
    DEFAULT_MAX_CATCH_UP,
    Pacer,
    PacingHistogram,
    Source,
)
from edge_media.rtp.packet import Address
from edge_media.rtp.ports import PortAllocator, PortsExhaustedError
from edge_media.rtp.receiver import ReceiverConfig, ReceiverStats, RtpReceiver

__all__ = [
    "MAX_BIND_ATTEMPTS",
    "MediaClock",
    "MediaClockStats",
    "RtpHandler",
    "RtpSocket",
    "monotonic_clock_for",
    "open_rtp_socket",
]

logger = logging.getLogger("agera.rtp.transport")

MAX_BIND_ATTEMPTS = 32  # port pairs tried before giving up when other processes hold them


class RtpHandler(Protocol):
    """Where one call's inbound media goes; called from the socket's read callback.

    Each method is called only with a non-empty tuple. Neither may block or await.
    """

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        """20 ms μ-law frames in playout order (PCMA already converted)."""

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        """RFC 4733 key presses, each reported once."""


class RtpSocket(asyncio.DatagramProtocol):
    """One call's RTP port (and optionally its RTCP port, RTP + 1). Build with `open_rtp_socket`.

    Inbound packets go through ``receiver`` to ``handler``. Outbound media is a pacer stream
    registered with `start_sending`. `close` stops both and, once the sockets are closed, gives
    the port back to the allocator.
    """

    def __init__(
        self,
        handler: RtpHandler,
        receiver: RtpReceiver,
        *,
        port: int,
        allocator: PortAllocator | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._handler = handler
        self._receiver = receiver
        self._on_packet = receiver.on_packet
        self._on_frames = handler.on_frames
        self._on_digits = handler.on_digits
        self._time = loop.time
        self._port = port
        self._allocator = allocator
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._open = 0  # sockets not yet reported lost; the port is released at zero
        self._closing = False
        self._latched: Address | None = None
        self._pacer: Pacer | None = None
        self._stream_id: int | None = None
        self._follow_latch = True
        self._handler_errors = 0
        self._socket_errors = 0

    # -- asyncio.DatagramProtocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: Python 3.11's selector datagram transport does not subclass
        # asyncio.DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._open += 1

    def datagram_received(self, data: bytes, addr: Address) -> None:
        frames, digits, _ = self._on_packet(data, addr, self._time())
        try:
            if frames:
                self._on_frames(frames)
            if digits:
                self._on_digits(digits)
        except Exception:
            self._handler_failed()
        remote = self._receiver.remote_addr
        if remote is not self._latched:
            self._on_latch(remote)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that hung up, mostly; the RTP timeout ends the call.
        self._socket_errors += 1
        logger.debug("RTP socket %d: %s", self._port, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    # -- properties ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def rtcp_port(self) -> int | None:
        """RTP port + 1 when an RTCP socket was opened, else None (rtcp-mux or no RTCP)."""
        return None if self._rtcp is None else self._port + 1

    @property
    def local_addr(self) -> Address:
        assert self._transport is not None
        return tuple(self._transport.get_extra_info("sockname"))

    @property
    def remote_addr(self) -> Address | None:
        """The latched source (where symmetric RTP goes), None before the first valid packet."""
        return self._receiver.remote_addr

    @property
    def receiver(self) -> RtpReceiver:
        return self._receiver

    @property
    def stream_id(self) -> int | None:
        """The pacer stream this socket sends, if any."""
        return self._stream_id

    @property
    def handler_errors(self) -> int:
        return self._handler_errors

    @property
    def socket_errors(self) -> int:
        return self._socket_errors

    @property
    def closed(self) -> bool:
        return self._closing

    def stats(self) -> ReceiverStats:
        return self._receiver.stats()

    # -- sending -------------------------------------------------------------------------------

    def start_sending(
        self,
        pacer: Pacer,
        source: Source,
        *,
        addr: Address,
        ssrc: int,
        payload_type: int,
        sequence: int,
        timestamp: int,
        comfort_silence: bool = False,
        ptime_ms: int = 20,
        dtmf_payload_type: int | None = None,
        follow_latch: bool = True,
    ) -> int:
        """Register this call's outbound stream with the shared pacer; returns the stream id.

        ``addr`` is where to send until a source is latched (the SDP connection address);
        with ``follow_latch`` the stream then goes wherever the receiver latched (RFC 4961).
        ``sequence`` and ``timestamp`` are the random initial values RFC 3550 §5.1 asks for,
        drawn by the caller. Other arguments are `Pacer.register`'s.
        """
        if self._closing or self._transport is None:
            raise RuntimeError("the RTP socket is closed")
        if self._stream_id is not None:
            raise RuntimeError("this RTP socket already sends a stream")
        latched = self._receiver.remote_addr
        if follow_latch and latched is not None:
            addr = latched
        self._stream_id = pacer.register(
            source,
            addr=addr,
            ssrc=ssrc,
            payload_type=payload_type,
            sequence=sequence,
            timestamp=timestamp,
            sink=self._transport,
            comfort_silence=comfort_silence,
            ptime_ms=ptime_ms,
            dtmf_payload_type=dtmf_payload_type,
        )
        self._pacer = pacer
        self._follow_latch = follow_latch
        self._latched = latched
        return self._stream_id

    def stop_sending(self) -> None:
        """Take the outbound stream off the pacer (idempotent)."""
        if self._pacer is not None and self._stream_id is not None:
            self._pacer.unregister(self._stream_id)
        self._pacer = None
        self._stream_id = None

    def sendto_rtcp(self, data: bytes, addr: Address) -> None:
        """Send an RTCP compound packet from the RTCP port (from the RTP port under rtcp-mux)."""
        transport = self._rtcp or self._transport
        if transport is None or self._closing:
            raise RuntimeError("the RTP socket is closed")
        transport.sendto(data, addr)

    def close(self) -> None:
        """Stop sending and close both sockets (idempotent); the port is released once closed."""
        if self._closing:
            return
        self._closing = True
        self.stop_sending()
        for transport in (self._transport, self._rtcp):
            if transport is not None:
                transport.close()

    # -- internals -----------------------------------------------------------------------------

    def _attach_rtcp(self, transport: asyncio.DatagramTransport) -> None:
        self._rtcp = transport
        self._open += 1

    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        self._receiver.on_rtcp(data, addr, self._time())

    def _on_latch(self, remote: Address | None) -> None:
        self._latched = remote
        if remote is None:
            return
        logger.debug("RTP socket %d latched to %s", self._port, remote)
        if self._follow_latch and self._pacer is not None and self._stream_id is not None:
            self._pacer.set_addr(self._stream_id, remote)

    def _handler_failed(self) -> None:
        self._handler_errors += 1
        if self._handler_errors == 1:  # one traceback per call, never one per packet
            logger.exception("RTP handler failed on port %d", self._port)

    def _lost(self) -> None:
        self._open -= 1
        if self._open > 0:
            return
        self._closing = True
        self.stop_sending()
        if self._allocator is not None:
            self._allocator.release(self._port)
            self._allocator = None


class _RtcpProtocol(asyncio.DatagramProtocol):
    """The RTCP port: reports go into the same receiver (SR times for RR, BYE)."""

    def __init__(self, owner: RtpSocket) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._owner._on_rtcp(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("RTCP socket %d: %s", self._owner.port + 1, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost()


def _bound_udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _bind_pair(host: str, port: int, rtcp: bool) -> tuple[socket.socket, socket.socket | None]:
    rtp_sock = _bound_udp_socket(host, port)
    if not rtcp:
        return rtp_sock, None
    try:
        return rtp_sock, _bound_udp_socket(host, port + 1)
    except OSError:
        rtp_sock.close()
        raise


async def _connect(
    loop: asyncio.AbstractEventLoop,
    owner: RtpSocket,
    rtp_sock: socket.socket,
    rtcp_sock: socket.socket | None,
) -> None:
    transport, _ = await loop.create_datagram_endpoint(lambda: owner, sock=rtp_sock)
    owner._transport = transport
    if rtcp_sock is not None:
        rtcp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtcpProtocol(owner), sock=rtcp_sock
        )
        owner._attach_rtcp(rtcp_transport)


async def open_rtp_socket(
    allocator: PortAllocator,
    host: str,
    handler: RtpHandler,
    *,
    config: ReceiverConfig | None = None,
    rtcp: bool = True,
) -> RtpSocket:
    """Bind a call's RTP port (and RTCP on port + 1 when ``rtcp``) on ``host``, an IP literal.

    A port another process holds is skipped: it goes back to the allocator, whose cursor has
    already moved on. Raises PortsExhaustedError when the range is full or `MAX_BIND_ATTEMPTS`
    pairs in a row could not be bound.
    """
    loop = asyncio.get_running_loop()
    last_error: OSError | None = None
    for _ in range(min(MAX_BIND_ATTEMPTS, allocator.capacity)):
        port = allocator.allocate()
        try:
            rtp_sock, rtcp_sock = _bind_pair(host, port, rtcp)
        except OSError as error:
            allocator.release(port)
            last_error = error
            continue
        owner = RtpSocket(handler, RtpReceiver(config), port=port, allocator=allocator, loop=loop)
        try:
            await _connect(loop, owner, rtp_sock, rtcp_sock)
        except BaseException:
            owner._allocator = None  # released here; a later connection_lost must not
            owner.close()
            rtp_sock.close()
            if rtcp_sock is not None:
                rtcp_sock.close()
            allocator.release(port)
            raise
        return owner
    raise PortsExhaustedError(
        f"no RTP port pair could be bound on {host} ({last_error})"
    ) from last_error


@dataclass(frozen=True, slots=True)
class MediaClockStats:
    running: bool
    wakeups: int
    early_wakeups: int  # timer fired before the deadline (libuv timers have 1 ms resolution)
    packets_sent: int
    send_errors: int
    tick_errors: int
    late_p50_ms: float  # wake-up time minus the tick's deadline
    late_p99_ms: float
    late_max_ms: float
    busy_p50_ms: float  # tick plus sends, per wake-up: what the last packet adds on top
    busy_p99_ms: float
    busy_max_ms: float


class MediaClock:
    """The one driver of the process's `Pacer`: wake at each deadline, tick, send.

    ``clock`` must read the clock the pacer's ``start`` came from; it defaults to
    ``loop.time``. Under uvloop ``loop.time()`` is the monotonic clock cut to whole
    milliseconds, so passing ``time.monotonic`` (the same clock, undivided) gives sub-ms
    lateness figures; the timer itself still fires with libuv's 1 ms resolution.
    """

    def __init__(
        self,
        pacer: Pacer,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._pacer = pacer
        self._loop = loop or asyncio.get_running_loop()
        self._clock = clock or self._loop.time
        self._clock_is_loop = clock is None
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._late = PacingHistogram()
        self._busy = PacingHistogram()
        self._wakeups = 0
        self._early = 0
        self._packets = 0
        self._send_errors = 0
        self._tick_errors = 0

    @classmethod
    def create(
        cls,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] | None = None,
        interval: float = DEFAULT_INTERVAL,
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
    ) -> MediaClock:
        """A clock with a new pacer whose grid starts now."""
        loop = loop or asyncio.get_running_loop()
        now = (clock or loop.time)()
        return cls(Pacer(now, interval, max_catch_up=max_catch_up), loop=loop, clock=clock)

    @property
    def pacer(self) -> Pacer:
        return self._pacer

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Arm the first wake-up (idempotent)."""
        if self._handle is None:
            self._arm()

    def stop(self) -> None:
        """Cancel the pending wake-up (idempotent); streams stay registered with the pacer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stats(self) -> MediaClockStats:
        late, busy = self._late, self._busy
        return MediaClockStats(
            running=self.running,
            wakeups=self._wakeups,
            early_wakeups=self._early,
            packets_sent=self._packets,
            send_errors=self._send_errors,
            tick_errors=self._tick_errors,
            late_p50_ms=late.percentile_ms(0.50),
            late_p99_ms=late.percentile_ms(0.99),
            late_max_ms=round(late.max_ms, 3),
            busy_p50_ms=busy.percentile_ms(0.50),
            busy_p99_ms=busy.percentile_ms(0.99),
            busy_max_ms=round(busy.max_ms, 3),
        )

    def _arm(self) -> None:
        deadline = self._deadline = self._pacer.next_deadline()
        if self._clock_is_loop:
            self._handle = self._loop.call_at(deadline, self._wake)
        else:
            self._handle = self._loop.call_later(deadline - self._clock(), self._wake)

    def _wake(self) -> None:
        clock = self._clock
        woke = clock()
        deadline = self._deadline
        self._wakeups += 1
        self._late.record(woke - deadline)
        # pacer.py: tick(next_deadline()) always runs that tick, so a timer that fires a little
        # early (ms-resolution timers) is treated as on time instead of re-armed in a spin.
        now = woke
        if now < deadline:
            self._early += 1
            now = deadline
        try:
            out = self._pacer.tick(now)
        except Exception:
            self._tick_errors += 1
            logger.exception("pacer tick failed")
            out = []
        errors = 0
        for sink, addr, packet in out:
            try:
                sink.sendto(packet, addr)
            except Exception:
                errors += 1
        self._packets += len(out) - errors
        if errors:
            self._send_errors += errors
            logger.debug("%d RTP packets could not be sent this tick", errors)
        sent = clock()
        self._busy.record(sent - woke)
        self._pacer.departed(sent - deadline)
        if self._handle is not None:
            self._arm()


def monotonic_clock_for(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``time.monotonic`` when it is the loop's clock (stock asyncio, uvloop), else loop.time.

    For `MediaClock`: the finer of the two readings of the same clock.
    """
    return time.monotonic if abs(loop.time() - time.monotonic()) < 0.01 else loop.time
