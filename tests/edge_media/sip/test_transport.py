"""SipTransport over real loopback sockets (UDP and TCP on one port), on both event loops.

Ordering rather than timing makes these deterministic: the transport handles datagrams and TCP
segments in arrival order and answers synchronously, so after a "barrier" request has been
answered every earlier answer must already be in the client's socket, ahead of the barrier's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from edge_media.loop import new_loop
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_parse import parse_message
from edge_media.sip.rate_limit import SourceRateLimiter
from edge_media.sip.stream import SipStreamReader
from edge_media.sip.tcp_connections import SipConnectError, SipNoConnectionError
from edge_media.sip.transport import SipAddress, SipTransport, SipTransportConfig, TransportKind

WAIT = 5.0  # seconds: a bound on every wait, never an expectation about speed
LOCALHOST = "127.0.0.1"


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    factory = new_loop if request.param == "uvloop" else asyncio.new_event_loop
    return "asyncio", {"loop_factory": factory}


def request_bytes(
    call_id: str,
    via_port: int,
    *,
    host: str = LOCALHOST,
    cseq: str = "1 OPTIONS",
    rport: bool = True,
    transport: str = "UDP",
    content_length: str | None = "0",
    padding: int = 0,
) -> bytes:
    via_host = f"[{host}]" if ":" in host else host
    lines = [
        f"OPTIONS sip:bot@{via_host} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via_host}:{via_port};branch=z9hG4bK-{call_id}"
        + (";rport" if rport else ""),
        "Max-Forwards: 70",
        f"To: <sip:bot@{via_host}>",
        f"From: <sip:caller@{via_host}>;tag=from-{call_id}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
    ]
    if padding:
        lines.append("X-Padding: " + "p" * padding)
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_bytes(call_id: str, via_port: int) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {LOCALHOST}:{via_port};branch=z9hG4bK-{call_id}\r\n"
        f"To: <sip:bot@{LOCALHOST}>;tag=t\r\n"
        f"From: <sip:caller@{LOCALHOST}>;tag=f\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Recorder:
    """Handler that records every message and answers each OPTIONS with 200 where it came from."""

    def __init__(self, *, reply: bool = True, fail: bool = False) -> None:
        self.messages: list[tuple[SipRequest | SipResponse, SipAddress, TransportKind, SipAddress]]
        self.messages = []
        self.transport: SipTransport | None = None
        self.reply = reply
        self.fail = fail
        self._changed = asyncio.Event()

    def on_message(
        self,
        message: SipRequest | SipResponse,
        remote: SipAddress,
        kind: TransportKind,
        local: SipAddress,
    ) -> None:
        self.messages.append((message, remote, kind, local))
        self._changed.set()
        if self.fail:
            raise RuntimeError("handler bug")
        if self.reply and isinstance(message, SipRequest) and self.transport is not None:
            answer = make_response(message, 200, to_tag="uas")
            self.transport.send_nowait(answer.serialize(), remote, kind)

    @property
    def call_ids(self) -> list[str]:
        return [message.call_id for message, *_ in self.messages]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, SipAddress]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, (addr[0], addr[1])))
        self._changed.set()

    @property
    def addr(self) -> SipAddress:
        assert self.transport is not None
        sockname = self.transport.get_extra_info("sockname")
        return sockname[0], sockname[1]

    def send(self, data: bytes, addr: SipAddress) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def wait_for(self, count: int) -> list[SipResponse]:
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()
        responses = []
        for data, _ in self.received:
            message = parse_message(data)
            assert isinstance(message, SipResponse)
            responses.append(message)
        return responses


@asynccontextmanager
async def udp_client(host: str = LOCALHOST) -> AsyncIterator[UdpClient]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(UdpClient, local_addr=(host, 0))
    try:
        yield client
    finally:
        transport.close()


@asynccontextmanager
async def running(
    handler: Recorder, host: str = LOCALHOST, port: int = 0, **config: Any
) -> AsyncIterator[SipTransport]:
    transport = SipTransport(
        handler, host, port, config=SipTransportConfig(**config), tag_factory=lambda: "err"
    )
    handler.transport = transport
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


class TcpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.stream = SipStreamReader(expects_pongs=True)
        self.events: list[object] = []

    @property
    def port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def responses(self, count: int) -> list[SipResponse]:
        async with asyncio.timeout(WAIT):
            while len(self.events) < count:
                data = await self.reader.read(65536)
                assert data, f"connection closed after {self.events}"
                self.events.extend(self.stream.feed(data))
        assert all(isinstance(event, SipResponse) for event in self.events), self.events
        return self.events  # type: ignore[return-value]

    async def read_until_eof(self) -> bytes:
        received = b""
        async with asyncio.timeout(WAIT):
            while data := await self.reader.read(65536):
                received += data
        return received

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@asynccontextmanager
async def tcp_client(addr: SipAddress) -> AsyncIterator[TcpClient]:
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
    client = TcpClient(reader, writer)
    try:
        yield client
    finally:
        await client.close()


POLL = 0.001


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds; fail after about WAIT seconds."""
    for _ in range(int(WAIT / POLL)):
        if condition():
            return
        await asyncio.sleep(POLL)
    raise TimeoutError("condition not reached")


# -- UDP and TCP on one port --------------------------------------------------------------------


@pytest.mark.anyio
async def test_udp_and_tcp_share_the_port_and_reach_the_handler() -> None:
    handler = Recorder(reply=False)
    async with running(handler) as transport, udp_client() as udp:
        host, port = transport.local_addr
        assert host == LOCALHOST and port != 0
        udp.send(request_bytes("udp-1", udp.addr[1]), transport.local_addr)
        await handler.wait_for(1)
        async with tcp_client(transport.local_addr) as tcp:
            await tcp.send(request_bytes("tcp-1", tcp.port, transport="TCP"))
            await handler.wait_for(2)
            tcp_port = tcp.port
    (udp_msg, udp_remote, udp_kind, udp_local), (tcp_msg, tcp_remote, tcp_kind, tcp_local) = (
        handler.messages
    )
    assert isinstance(udp_msg, SipRequest) and udp_msg.method == "OPTIONS"
    assert (udp_msg.call_id, udp_remote, udp_kind, udp_local) == (
        "udp-1",
        udp.addr,
        "udp",
        (LOCALHOST, port),
    )
    assert isinstance(tcp_msg, SipRequest) and tcp_msg.method == "OPTIONS"
    assert (tcp_msg.call_id, tcp_remote, tcp_kind, tcp_local) == (
        "tcp-1",
        (LOCALHOST, tcp_port),
        "tcp",
        (LOCALHOST, port),
    )
    stats = transport.stats()
    assert (stats["requests_in"], stats["tcp_accepted"], stats["udp_datagrams_in"]) == (2, 1, 1)


@pytest.mark.anyio
async def test_udp_response_goes_back_to_the_sender() -> None:
    handler = Recorder()
    async with running(handler) as transport, udp_client() as udp:
        udp.send(request_bytes("udp-2", udp.addr[1]), transport.local_addr)
        (answer,) = await udp.wait_for(1)
    assert (answer.status, answer.call_id, answer.to_tag) == (200, "udp-2", "uas")
    assert udp.received[0][1] == transport.local_addr


@pytest.mark.anyio
async def test_tcp_response_returns_on_the_same_connection() -> None:
    handler = Recorder()
    async with running(handler) as transport, tcp_client(transport.local_addr) as tcp:
        await tcp.send(request_bytes("tcp-2", tcp.port, transport="TCP"))
        (answer,) = await tcp.responses(1)
        assert transport.has_connection((LOCALHOST, tcp.port))
        assert transport.stats()["tcp_connections"] == 1
    assert (answer.status, answer.call_id, answer.cseq.method) == (200, "tcp-2", "OPTIONS")


@pytest.mark.anyio
async def test_tcp_messages_split_across_segments_and_pipelined() -> None:
    handler = Recorder()
    async with running(handler) as transport, tcp_client(transport.local_addr) as tcp:
        first = request_bytes("split", tcp.port, transport="TCP")
        pieces = [first[:7], first[7:60], first[60:-1], first[-1:]]
        sent = 0
        for piece in pieces:
            await tcp.send(piece)
            sent += len(piece)
            # Each piece is consumed before the next is written: the reader sees every cut.
            await until(lambda: transport.stats()["tcp_bytes_in"] == sent)  # noqa: B023
            if piece is not pieces[-1]:
                assert handler.messages == []
        pipelined = request_bytes("pipe-1", tcp.port, transport="TCP") + request_bytes(
            "pipe-2", tcp.port, transport="TCP"
        )
        await tcp.send(pipelined)
        answers = await tcp.responses(3)
    assert handler.call_ids == ["split", "pipe-1", "pipe-2"]
    assert [(a.status, a.call_id) for a in answers] == [
        (200, "split"),
        (200, "pipe-1"),
        (200, "pipe-2"),
    ]


@pytest.mark.anyio
async def test_tcp_crlf_ping_gets_a_pong_and_the_connection_stays_usable() -> None:
    handler = Recorder()
    async with running(handler) as transport, tcp_client(transport.local_addr) as tcp:
        await tcp.send(b"\r\n\r\n")
        async with asyncio.timeout(WAIT):
            pong = await tcp.reader.readexactly(2)
        await tcp.send(request_bytes("after-ping", tcp.port, transport="TCP"))
        (answer,) = await tcp.responses(1)
    assert pong == b"\r\n"
    assert answer.call_id == "after-ping"
    assert transport.stats()["tcp_pings"] == 1


# -- malformed input ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_garbage_datagrams_get_no_answer_and_are_counted() -> None:
    handler = Recorder()
    async with running(handler) as transport, udp_client() as udp:
        udp.send(b"\x00\x01\x02\x03 not sip at all", transport.local_addr)
        udp.send(b"SIP/2.0 abc Broken\r\n\r\n", transport.local_addr)  # a broken response
        udp.send(request_bytes("barrier", udp.addr[1]), transport.local_addr)
        answers = await udp.wait_for(1)
        stats = transport.stats()
    assert [(a.status, a.call_id) for a in answers] == [(200, "barrier")]
    assert len(udp.received) == 1
    assert handler.call_ids == ["barrier"]
    assert (stats["garbage_dropped"], stats["parse_errors_answered"]) == (2, 0)


@pytest.mark.anyio
async def test_malformed_request_with_readable_headers_gets_exactly_one_400() -> None:
    handler = Recorder()
    async with running(handler) as transport, udp_client() as udp:
        udp.send(request_bytes("bad", udp.addr[1], cseq="1 INVITE"), transport.local_addr)
        udp.send(request_bytes("barrier", udp.addr[1]), transport.local_addr)
        answers = await udp.wait_for(2)
        stats = transport.stats()
    assert [(a.status, a.call_id) for a in answers] == [(400, "bad"), (200, "barrier")]
    assert answers[0].to_tag == "err"
    assert answers[0].reason == "CSeq method INVITE does not match request method OPTIONS"
    assert len(udp.received) == 2
    assert handler.call_ids == ["barrier"]
    assert (stats["parse_errors_answered"], stats["garbage_dropped"]) == (1, 0)


@pytest.mark.anyio
async def test_udp_error_answer_without_rport_goes_to_the_via_port_of_the_source() -> None:
    handler = Recorder()
    async with (
        running(handler) as transport,
        udp_client() as sender,
        udp_client() as via_target,
    ):
        bad = request_bytes("bad", via_target.addr[1], cseq="1 INVITE", rport=False)
        sender.send(bad, transport.local_addr)
        (answer,) = await via_target.wait_for(1)
        sender.send(request_bytes("barrier", sender.addr[1]), transport.local_addr)
        (barrier,) = await sender.wait_for(1)
    assert (answer.status, answer.call_id) == (400, "bad")
    assert barrier.call_id == "barrier"  # the sender itself never got the 400


@pytest.mark.anyio
async def test_tcp_malformed_request_is_answered_and_the_connection_kept() -> None:
    handler = Recorder()
    async with running(handler) as transport, tcp_client(transport.local_addr) as tcp:
        await tcp.send(request_bytes("bad", tcp.port, cseq="1 INVITE", transport="TCP"))
        await tcp.send(request_bytes("good", tcp.port, transport="TCP"))
        answers = await tcp.responses(2)
    assert [(a.status, a.call_id) for a in answers] == [(400, "bad"), (200, "good")]
    assert handler.call_ids == ["good"]


@pytest.mark.anyio
async def test_tcp_request_without_content_length_is_answered_then_closed() -> None:
    handler = Recorder()
    async with running(handler) as transport, tcp_client(transport.local_addr) as tcp:
        await tcp.send(request_bytes("nolen", tcp.port, transport="TCP", content_length=None))
        rest = await tcp.read_until_eof()
        stats = transport.stats()
    (answer,) = tcp.stream.feed(rest)
    assert isinstance(answer, SipResponse)
    assert (answer.status, answer.call_id) == (400, "nolen")
    assert stats["tcp_closed_invalid"] == 1
    assert handler.messages == []


@pytest.mark.anyio
async def test_oversize_datagram_is_dropped_without_answer() -> None:
    handler = Recorder()
    async with running(handler, max_message_size=600) as transport, udp_client() as udp:
        big = request_bytes("big", udp.addr[1], padding=700)
        assert len(big) > 600
        udp.send(big, transport.local_addr)
        udp.send(request_bytes("barrier", udp.addr[1]), transport.local_addr)
        answers = await udp.wait_for(1)
        stats = transport.stats()
    assert [a.call_id for a in answers] == ["barrier"] and len(udp.received) == 1
    assert (stats["oversize_dropped"], stats["parse_errors_answered"]) == (1, 0)


@pytest.mark.anyio
async def test_handler_exception_is_counted_and_the_socket_keeps_working() -> None:
    handler = Recorder(reply=False, fail=True)
    async with running(handler) as transport, udp_client() as udp:
        udp.send(request_bytes("boom-1", udp.addr[1]), transport.local_addr)
        udp.send(request_bytes("boom-2", udp.addr[1]), transport.local_addr)
        await handler.wait_for(2)
        stats = transport.stats()
    assert handler.call_ids == ["boom-1", "boom-2"]
    assert stats["handler_errors"] == 2


# -- rate limiting ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limiter_drops_requests_past_the_burst() -> None:
    handler = Recorder()
    # A refill rate this low adds no token while the test runs, so exactly `burst` get through.
    async with running(handler, request_rate=0.001, request_burst=3) as transport:
        async with udp_client() as udp:
            for index in range(6):
                udp.send(request_bytes(f"r{index}", udp.addr[1]), transport.local_addr)
            # Responses are never rate limited: this one arrives after all six requests.
            udp.send(response_bytes("barrier", udp.addr[1]), transport.local_addr)
            await handler.wait_for(4)
        stats = transport.stats()
    assert handler.call_ids == ["r0", "r1", "r2", "barrier"]
    assert (stats["rate_limited"], stats["requests_in"], stats["responses_in"]) == (3, 3, 1)


@pytest.mark.anyio
async def test_rate_limit_exempt_source_is_never_limited() -> None:
    handler = Recorder(reply=False)
    async with running(
        handler, request_rate=0.001, request_burst=1, rate_limit_exempt=[LOCALHOST]
    ) as transport:
        async with udp_client() as udp:
            for index in range(4):
                udp.send(request_bytes(f"x{index}", udp.addr[1]), transport.local_addr)
            await handler.wait_for(4)
        assert transport.stats()["rate_limited"] == 0


def test_token_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    limiter = SourceRateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # sources are independent
    assert [limiter.allow("a", 0.5) for _ in range(2)] == [True, False]  # 0.5 s * 2/s = 1
    assert [limiter.allow("a", 100.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limit_log_permit_once_per_interval_per_source() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=1, log_interval=60.0)
    limiter.allow("a", 0.0)
    limiter.allow("b", 0.0)
    assert [limiter.should_log("a", t) for t in (0.0, 30.0, 59.9, 60.0, 61.0)] == [
        True,
        False,
        False,
        True,
        False,
    ]
    assert limiter.should_log("b", 30.0)
    assert not limiter.should_log("never-seen", 0.0)


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=2, max_sources=3)
    for index in range(10):
        limiter.allow(f"10.0.0.{index}", 0.0)
        assert len(limiter) <= 3
    # Refilled buckets are swept first, so a busy source survives a crowd of idle ones.
    limiter = SourceRateLimiter(rate=1.0, burst=2, max_sources=2)
    limiter.allow("idle", 0.0)
    limiter.allow("busy", 5.0)
    limiter.allow("busy", 5.0)
    limiter.allow("new", 5.0)  # "idle" has refilled by now and goes
    assert not limiter.allow("busy", 5.0)  # still empty: its bucket was kept


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (1.0, 0.5)])
def test_rate_limiter_rejects_nonsense_limits(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        SourceRateLimiter(rate, burst)


# -- TCP connection management ------------------------------------------------------------------


@pytest.mark.anyio
async def test_tcp_connections_past_the_cap_are_refused() -> None:
    handler = Recorder()
    async with running(handler, tcp_max_connections=1) as transport:
        async with tcp_client(transport.local_addr) as first:
            await until(lambda: transport.stats()["tcp_connections"] == 1)
            async with tcp_client(transport.local_addr) as second:
                assert await second.read_until_eof() == b""
            await first.send(request_bytes("still-up", first.port, transport="TCP"))
            (answer,) = await first.responses(1)
        stats = transport.stats()
    assert answer.call_id == "still-up"
    assert (stats["tcp_rejected"], stats["tcp_accepted"]) == (1, 1)


@pytest.mark.anyio
async def test_idle_tcp_connection_is_closed_by_the_sweep() -> None:
    handler = Recorder()
    async with (
        running(handler, tcp_idle_timeout=0.1, tcp_idle_check_interval=0.02) as transport,
        tcp_client(transport.local_addr) as tcp,
    ):
        assert await tcp.read_until_eof() == b""
        await until(lambda: transport.stats()["tcp_connections"] == 0)
        assert transport.stats()["tcp_closed_idle"] == 1


@pytest.mark.anyio
async def test_send_opens_a_tcp_connection_and_reuses_it() -> None:
    handler = Recorder(reply=False)
    accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append((reader, writer))

    server = await asyncio.start_server(on_connect, LOCALHOST, 0)
    peer: SipAddress = (LOCALHOST, server.sockets[0].getsockname()[1])
    try:
        async with running(handler) as transport:
            first = request_bytes("out-1", transport.local_addr[1], transport="TCP")
            second = request_bytes("out-2", transport.local_addr[1], transport="TCP")
            await transport.send(first, peer, "tcp")
            await transport.send(second, peer, "tcp")
            transport.send_nowait(first, peer, "tcp")
            await until(lambda: len(accepted) == 1)
            reader, writer = accepted[0]
            stream = SipStreamReader()
            events: list[object] = []
            async with asyncio.timeout(WAIT):
                while len(events) < 3:
                    events.extend(stream.feed(await reader.read(65536)))
            writer.write(response_bytes("out-1", transport.local_addr[1]))
            await writer.drain()
            await handler.wait_for(1)
            stats = transport.stats()
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert [e.call_id for e in events if isinstance(e, SipRequest)] == ["out-1", "out-2", "out-1"]
    assert len(accepted) == 1
    message, remote, kind, _ = handler.messages[0]
    assert isinstance(message, SipResponse)
    assert (message.call_id, remote, kind) == ("out-1", peer, "tcp")
    assert (stats["tcp_connected"], stats["tcp_messages_out"]) == (1, 3)


@pytest.mark.anyio
async def test_send_to_a_closed_tcp_port_raises_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        closed_port = probe.getsockname()[1]
    handler = Recorder()
    async with running(handler) as transport:
        with pytest.raises(SipConnectError, match=f"TCP connect to 127.0.0.1:{closed_port}"):
            await transport.send(b"OPTIONS", (LOCALHOST, closed_port), "tcp")
        with pytest.raises(SipNoConnectionError):
            transport.send_nowait(b"OPTIONS", (LOCALHOST, closed_port), "tcp")
        assert transport.stats()["tcp_connect_failures"] == 1


# -- binding ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reuse_port_lets_two_workers_share_the_address() -> None:
    handler = Recorder()
    async with running(handler, reuse_port=True) as first:
        async with running(handler, port=first.local_addr[1], reuse_port=True) as second:
            assert second.local_addr == first.local_addr
        with pytest.raises(OSError):
            async with running(handler, port=first.local_addr[1]):
                pass


@pytest.mark.anyio
async def test_ipv6_loopback_udp_and_tcp() -> None:
    handler = Recorder()
    async with running(handler, host="::1") as transport, udp_client("::1") as udp:
        host, port = transport.local_addr
        udp.send(request_bytes("v6-udp", udp.addr[1], host="::1"), transport.local_addr)
        (udp_answer,) = await udp.wait_for(1)
        async with tcp_client(transport.local_addr) as tcp:
            await tcp.send(request_bytes("v6-tcp", tcp.port, host="::1", transport="TCP"))
            (tcp_answer,) = await tcp.responses(1)
    assert host == "::1" and port != 0
    assert (udp_answer.call_id, tcp_answer.call_id) == ("v6-udp", "v6-tcp")
    assert [kind for _, _, kind, _ in handler.messages] == ["udp", "tcp"]


def test_host_must_be_an_ip_literal() -> None:
    with pytest.raises(ValueError, match="IP literal"):
        SipTransport(Recorder(), "localhost", 0)
