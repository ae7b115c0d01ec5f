"""RtpSocket and MediaClock over real loopback sockets, on both event loops; MediaClock's timing
decisions on a hand-driven fake loop (the pacer's grid is checked by sequence numbers and
timestamps, never by measuring time)."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from edge_media.loop import install_uvloop, loop_name, new_loop, run, uvloop_available
from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.g711 import ULAW_TO_ALAW_TABLE
from edge_media.rtp.pacer import Pacer
from edge_media.rtp.packet import Address, RtpPacket, pack_header
from edge_media.rtp.playout import PlayoutQueue
from edge_media.rtp.ports import PortAllocator, PortsExhaustedError
from edge_media.rtp.receiver import DropReason
from edge_media.rtp.rtcp import Bye
from edge_media.rtp.transport import MediaClock, RtpSocket, open_rtp_socket

WAIT = 5.0  # seconds: a bound on every wait, never an expectation about speed
POLL = 0.001
LOCALHOST = "127.0.0.1"
SSRC = 0x5EED1234
NO_SKIP = 100_000  # max_catch_up so high that a stalled test machine never drops a frame


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    factory = new_loop if request.param == "uvloop" else asyncio.new_event_loop
    return "asyncio", {"loop_factory": factory}


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds; fail after about WAIT seconds."""
    for _ in range(int(WAIT / POLL)):
        if condition():
            return
        await asyncio.sleep(POLL)
    raise TimeoutError("condition not reached")


def allocator_near_a_free_port(pairs: int = 16, seed: int = 0) -> PortAllocator:
    """A small range starting at a port the kernel just called free (others may still be taken:
    the allocator's bind-skip copes, and the tests below assert nothing that depends on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCALHOST, 0))
        base = min(probe.getsockname()[1] & ~1, 65536 - 2 * pairs)
    return PortAllocator(base, base + 2 * pairs - 1, rng=random.Random(seed))


def frame(index: int) -> bytes:
    return bytes([index & 0xFF]) * 160


def rtp(sequence: int, index: int, *, payload_type: int = 0, marker: bool = False) -> bytes:
    return pack_header(payload_type, sequence, 160 * index, SSRC, marker) + frame(index)


class MediaRecorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.digits: list[DtmfDigit] = []

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        self.frames.extend(frames)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        self.digits.extend(digits)


class EchoHandler:
    """The echo app stand-in: caller frames go into a playout queue the pacer drains."""

    def __init__(self) -> None:
        self.queue = PlayoutQueue()

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        for item in frames:
            self.queue.push_media(item)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        pass

    def source(self) -> bytes | None:
        return self.queue.next_frame()


class Peer(asyncio.DatagramProtocol):
    """The far end: a UDP socket that records what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)

    def error_received(self, exc: Exception) -> None:
        pass

    @property
    def addr(self) -> Address:
        assert self.transport is not None
        return tuple(self.transport.get_extra_info("sockname"))

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


@asynccontextmanager
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=(LOCALHOST, 0))
    try:
        yield protocol
    finally:
        transport.close()


@asynccontextmanager
async def opened(
    allocator: PortAllocator, handler: Any, *, rtcp: bool = True
) -> AsyncIterator[RtpSocket]:
    sock = await open_rtp_socket(allocator, LOCALHOST, handler, rtcp=rtcp)
    try:
        yield sock
    finally:
        sock.close()
        await until(lambda: not allocator.is_allocated(sock.port))


# -- receiving ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_inbound_rtp_reaches_the_handler_from_the_latched_source() -> None:
    handler = MediaRecorder()
    allocator = allocator_near_a_free_port()
    async with opened(allocator, handler) as sock, peer() as sender, peer() as intruder:
        target = (LOCALHOST, sock.port)
        for index in range(5):
            sender.send(rtp(1000 + index, index, marker=index == 0), target)
        await until(lambda: len(handler.frames) == 5)
        intruder.send(rtp(7, 50), target)
        await until(lambda: sock.receiver.stats().packets_in == 6)
        # RFC 4733 event 5 ("5"), volume 10, 160 samples so far: reported at its first packet.
        sender.send(
            pack_header(101, 1005, 800, SSRC, True) + struct.pack("!BBH", 5, 10, 160), target
        )
        await until(lambda: len(handler.digits) == 1)
        stats = sock.stats()
        assert sock.remote_addr == sender.addr
    assert handler.frames == [frame(i) for i in range(5)]
    assert stats.dropped[DropReason.WRONG_SOURCE] == 1
    assert [d.digit for d in handler.digits] == ["5"]
    assert allocator.in_use == 0  # released once the sockets closed


@pytest.mark.anyio
async def test_rtcp_port_is_rtp_plus_one_and_feeds_the_receiver() -> None:
    allocator = allocator_near_a_free_port()
    async with opened(allocator, MediaRecorder()) as sock, peer() as far_end:
        assert sock.port % 2 == 0 and sock.rtcp_port == sock.port + 1
        far_end.send(rtp(1, 1), (LOCALHOST, sock.port))
        await until(lambda: sock.receiver.stats().packets_in == 1)
        far_end.send(Bye((SSRC,)).serialize(), (LOCALHOST, sock.port + 1))
        await until(lambda: sock.receiver.stats().bye_received)
        sock.sendto_rtcp(Bye((0x1,)).serialize(), far_end.addr)
        await until(lambda: len(far_end.received) == 1)
    assert far_end.received == [Bye((0x1,)).serialize()]


@pytest.mark.anyio
async def test_without_rtcp_only_the_rtp_port_is_bound() -> None:
    allocator = allocator_near_a_free_port()
    async with opened(allocator, MediaRecorder(), rtcp=False) as sock, peer() as far_end:
        assert sock.rtcp_port is None
        sock.sendto_rtcp(b"\x81\xcb\x00\x01\x00\x00\x00\x01", far_end.addr)  # rtcp-mux
        await until(lambda: len(far_end.received) == 1)
        assert sock.local_addr == (LOCALHOST, sock.port)


@pytest.mark.anyio
async def test_handler_exception_is_counted_and_delivery_goes_on() -> None:
    class Failing(MediaRecorder):
        def on_frames(self, frames: tuple[bytes, ...]) -> None:
            super().on_frames(frames)
            raise RuntimeError("bridge bug")

    handler = Failing()
    async with opened(allocator_near_a_free_port(), handler) as sock, peer() as sender:
        for index in range(3):
            sender.send(rtp(10 + index, index), (LOCALHOST, sock.port))
        await until(lambda: len(handler.frames) == 3)
        assert sock.handler_errors == 3


# -- ports --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ports_held_elsewhere_are_skipped() -> None:
    allocator = allocator_near_a_free_port(seed=42)
    twin = allocator_near_a_free_port(seed=42)  # same range and seed: same order of ports
    first, second = twin.allocate(), twin.allocate()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp_taken,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp_taken,
    ):
        rtp_taken.bind((LOCALHOST, first))
        rtcp_taken.bind((LOCALHOST, second + 1))
        async with opened(allocator, MediaRecorder()) as sock:
            assert sock.port not in (first, second)
            assert sock.port % 2 == 0
            assert not allocator.is_allocated(first) and not allocator.is_allocated(second)
            assert allocator.in_use == 1


@pytest.mark.anyio
async def test_port_range_exhausts_and_recovers() -> None:
    allocator = allocator_near_a_free_port(pairs=1)
    sock = await open_rtp_socket(allocator, LOCALHOST, MediaRecorder())
    with pytest.raises(PortsExhaustedError):
        await open_rtp_socket(allocator, LOCALHOST, MediaRecorder())
    port = sock.port
    sock.close()
    await until(lambda: allocator.in_use == 0)
    async with opened(allocator, MediaRecorder()) as again:
        assert again.port == port


# -- sending ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_media_clock_paces_a_stream_with_consecutive_sequence_and_timestamps() -> None:
    frames = [frame(100 + i) for i in range(10)]
    pending = list(frames)

    def source() -> bytes | None:
        return pending.pop(0) if pending else None

    clock = MediaClock.create(max_catch_up=NO_SKIP)
    async with opened(allocator_near_a_free_port(), MediaRecorder()) as sock, peer() as far_end:
        stream = sock.start_sending(
            clock.pacer,
            source,
            addr=far_end.addr,
            ssrc=SSRC,
            payload_type=0,
            sequence=65533,
            timestamp=2**32 - 320,
        )
        clock.start()
        await until(lambda: len(far_end.received) == 10)
        ticks = clock.pacer.stats().ticks
        await until(lambda: clock.pacer.stats().ticks >= ticks + 3)
        clock.stop()
        info = clock.pacer.stream_info(stream)
    packets = [RtpPacket.parse(data) for data in far_end.received]
    assert len(packets) == 10  # nothing after the source ran dry
    assert [p.sequence for p in packets] == [65533, 65534, 65535, 0, 1, 2, 3, 4, 5, 6]
    assert [p.timestamp for p in packets] == [(2**32 - 320 + 160 * i) % 2**32 for i in range(10)]
    assert [p.marker for p in packets] == [True] + [False] * 9
    assert {(p.ssrc, p.payload_type) for p in packets} == {(SSRC, 0)}
    assert [p.payload for p in packets] == frames
    assert info.packets_sent == 10
    stats = clock.stats()
    assert (stats.running, stats.packets_sent, stats.send_errors) == (False, 10, 0)
    assert stats.wakeups >= 1


@pytest.mark.anyio
async def test_echo_goes_back_to_the_latched_source() -> None:
    handler = EchoHandler()
    clock = MediaClock.create(max_catch_up=NO_SKIP)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCALHOST, 0))
        nowhere = probe.getsockname()  # closed below: what the SDP said, before latching
    async with opened(allocator_near_a_free_port(), handler) as sock, peer() as caller:
        sock.start_sending(
            clock.pacer,
            handler.source,
            addr=nowhere,
            ssrc=0xABCDEF,
            payload_type=8,
            sequence=1,
            timestamp=0,
        )
        clock.start()
        for index in range(5):
            caller.send(rtp(500 + index, index), (LOCALHOST, sock.port))
        await until(lambda: len(caller.received) == 5)
        clock.stop()
    echoed = [RtpPacket.parse(data) for data in caller.received]
    assert [p.sequence for p in echoed] == [1, 2, 3, 4, 5]
    assert {(p.ssrc, p.payload_type) for p in echoed} == {(0xABCDEF, 8)}
    # PCMA was negotiated for the way out: the pacer converted each μ-law frame.
    assert [p.payload for p in echoed] == [frame(i).translate(ULAW_TO_ALAW_TABLE) for i in range(5)]


@pytest.mark.anyio
async def test_closing_stops_the_stream_and_a_second_stream_is_refused() -> None:
    clock = MediaClock.create()
    allocator = allocator_near_a_free_port()
    async with opened(allocator, MediaRecorder()) as sock, peer() as far_end:
        args: dict[str, Any] = {
            "addr": far_end.addr,
            "ssrc": 1,
            "payload_type": 0,
            "sequence": 0,
            "timestamp": 0,
        }
        sock.start_sending(clock.pacer, lambda: None, **args)
        with pytest.raises(RuntimeError, match="already sends"):
            sock.start_sending(clock.pacer, lambda: None, **args)
        assert clock.pacer.stats().streams == 1
        sock.close()
        assert clock.pacer.stats().streams == 0 and sock.stream_id is None
        with pytest.raises(RuntimeError, match="closed"):
            sock.start_sending(clock.pacer, lambda: None, **args)


# edge_media/loop.py is exercised here, by the tests that run on the loops it builds.


async def _running_loop_name() -> str:
    return loop_name(asyncio.get_running_loop())


def test_run_and_new_loop_prefer_uvloop_when_available() -> None:
    expected = "uvloop" if uvloop_available() else "asyncio"
    assert run(_running_loop_name()) == expected
    assert run(_running_loop_name(), prefer_uvloop=False) == "asyncio"
    loop = new_loop()
    try:
        assert loop_name(loop) == expected
    finally:
        loop.close()


def test_install_uvloop_sets_the_process_policy() -> None:
    previous = asyncio.get_event_loop_policy()
    try:
        installed = install_uvloop()
        assert installed == uvloop_available()
        loop = asyncio.new_event_loop()
        try:
            assert loop_name(loop) == ("uvloop" if installed else "asyncio")
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(previous)


# -- MediaClock decisions, on a fake loop -------------------------------------------------------


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just what MediaClock uses of a loop: time, call_at, call_later; the test fires timers."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(when, callback))
        return self.timers[-1]

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        return self.call_at(self.now + delay, callback)

    def fire(self, at: float) -> None:
        timer = self.timers[-1]
        assert not timer.cancelled
        self.now = at
        timer.callback()


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[bytes, Address]] = []
        self.fail = fail

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.fail:
            raise OSError("socket closed")
        self.sent.append((data, addr))


def fake_clock(max_catch_up: int = 3) -> tuple[FakeLoop, MediaClock, Sink]:
    loop = FakeLoop(100.0)
    pacer = Pacer(100.0, max_catch_up=max_catch_up)
    sink = Sink()
    pacer.register(
        lambda: frame(1),
        addr=("192.0.2.1", 4000),
        ssrc=9,
        payload_type=0,
        sequence=0,
        timestamp=0,
        sink=sink,
    )
    return loop, MediaClock(pacer, loop=cast(asyncio.AbstractEventLoop, loop)), sink


def test_media_clock_arms_one_timer_at_each_deadline() -> None:
    loop, clock, sink = fake_clock()
    clock.start()
    clock.start()  # idempotent
    assert [t.when for t in loop.timers] == [pytest.approx(100.02)]
    loop.fire(100.0205)
    assert [t.when for t in loop.timers] == [pytest.approx(100.02), pytest.approx(100.04)]
    assert len(sink.sent) == 1
    clock.stop()
    assert loop.timers[-1].cancelled and not clock.running


def test_media_clock_runs_the_tick_when_the_timer_fires_early() -> None:
    loop, clock, sink = fake_clock()
    clock.start()
    loop.fire(100.0195)  # a 1 ms-resolution timer, half a millisecond early
    assert len(sink.sent) == 1  # not re-armed for the same deadline: no spin
    assert loop.timers[-1].when == pytest.approx(100.04)
    stats = clock.stats()
    assert (stats.early_wakeups, stats.wakeups, stats.late_max_ms) == (1, 1, 0.0)


def test_media_clock_catches_up_after_a_late_wake_up_and_records_it() -> None:
    loop, clock, sink = fake_clock(max_catch_up=3)
    clock.start()
    loop.fire(100.1)  # ticks 1-5 are due: 3 go out back-to-back, the older 2 are dropped
    sequences = [RtpPacket.parse(data).sequence for data, _ in sink.sent]
    assert sequences == [0, 1, 2]
    assert loop.timers[-1].when == pytest.approx(100.12)
    stats = clock.stats()
    assert stats.late_max_ms == pytest.approx(80.0)
    assert stats.packets_sent == 3
    assert clock.pacer.stats().skipped_ticks == 2


def test_media_clock_counts_send_errors_and_keeps_ticking() -> None:
    loop, clock, sink = fake_clock()
    sink.fail = True
    clock.start()
    loop.fire(100.02)
    loop.fire(100.04)
    stats = clock.stats()
    assert (stats.send_errors, stats.packets_sent, stats.wakeups) == (2, 0, 2)
    assert loop.timers[-1].when == pytest.approx(100.06)
