"""WsConnection over real loopback sockets, on stock asyncio and on uvloop (see conftest.py).

Two kinds of peer: a websockets asyncio server (a well-behaved bot) and `RawPeer`, which answers
the opening handshake by hand and then writes exactly the frames a test gives it, so the odd
cases (fragments, invalid UTF-8, a peer that never reads or never answers a close) are exact.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, Frame, Opcode
from websockets.utils import accept_key

from edge_media.drivers.base import BotUnavailable
from edge_media.drivers.ws_client import WsClosed, WsConnection, display_url
from edge_media.drivers.ws_connect import connect_websocket

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


class Inbox:
    """What a connection delivered, in order: ("open"|"text"|"bytes", value)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()

    def on_open(self, conn: WsConnection) -> None:
        self.items.append(("open", conn.is_open))
        self.changed.set()

    def on_text(self, text: str) -> None:
        self.items.append(("text", text))
        self.changed.set()

    def on_bytes(self, data: bytes) -> None:
        self.items.append(("bytes", data))
        self.changed.set()

    async def wait_for(self, count: int, seconds: float = 5.0) -> list[tuple[str, Any]]:
        async with asyncio.timeout(seconds):
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.items


async def connect(url: str, inbox: Inbox, **options: Any) -> WsConnection:
    return await connect_websocket(
        url,
        seconds=options.pop("seconds", 3.0),
        on_open=inbox.on_open,
        on_text=inbox.on_text,
        on_bytes=inbox.on_bytes,
        **options,
    )


class RawPeer:
    """A TCP server that completes the WebSocket handshake by hand, then only writes the bytes
    the test gives it and reads nothing (unless told to)."""

    def __init__(self, *, answer: bool = True) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.accepted: list[asyncio.StreamWriter] = []
        self.peers: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawPeer:
        self.server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.accepted:
            writer.transport.abort()
        await asyncio.sleep(0)  # let the aborts run their connection_lost

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/raw"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(writer)
        request = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(request)
        if not self.answer:
            await self.peers.put((reader, writer))
            return
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
        )
        await self.peers.put((reader, writer))

    async def next_peer(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(5):
            return await self.peers.get()

    async def next_writer(self) -> asyncio.StreamWriter:
        return (await self.next_peer())[1]


def frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False)


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[Opcode, bytes]:
    """One short (< 126 bytes) masked frame from the client: (opcode, unmasked payload)."""
    head = await reader.readexactly(2)
    assert head[1] & 0x80, "client frames must be masked (RFC 6455 §5.3)"
    length = head[1] & 0x7F
    assert length < 126
    mask = await reader.readexactly(4)
    payload = await reader.readexactly(length)
    return Opcode(head[0] & 0x0F), bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.fixture
async def bot_server() -> AsyncIterator[tuple[str, list[ServerConnection]]]:
    """A websockets server that says hello, echoes text, and keeps its connections."""
    connections: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        await ws.send("hello")
        async for message in ws:
            await ws.send(message)

    async with serve(handler, HOST, 0, ping_interval=None, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://{HOST}:{port}/bot?token=secret", connections


# -- display_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://user:pw@bot.example.com/media?token=abc#x", "wss://bot.example.com/media"),
        ("ws://127.0.0.1:8765/a/b?x=1", "ws://127.0.0.1:8765/a/b"),
        ("ws://[::1]:9/p", "ws://[::1]:9/p"),
        ("ws://host:99999/p", "<invalid URL>"),
    ],
)
async def test_display_url_drops_credentials_and_query(url: str, shown: str) -> None:
    assert display_url(url) == shown


# -- delivery --------------------------------------------------------------------------------


async def test_open_runs_before_the_first_message_and_text_round_trips(
    bot_server: tuple[str, list[ServerConnection]],
) -> None:
    url, connections = bot_server
    inbox = Inbox()
    conn = await connect(url, inbox, extra_headers={"X-Call-UUID": "c-1"})
    assert conn.send_text('{"event":"connected"}')
    assert conn.send_bytes(b"\x00\x01")
    items = await inbox.wait_for(4)
    assert items == [
        ("open", True),
        ("text", "hello"),
        ("text", '{"event":"connected"}'),
        ("bytes", b"\x00\x01"),
    ]
    (ws,) = connections
    assert ws.request is not None
    assert ws.request.path == "/bot?token=secret"  # the query reaches the bot
    assert ws.request.headers["X-Call-UUID"] == "c-1"
    assert ws.request.headers["User-Agent"] == "agera-voice-gateway"
    assert (conn.messages_out, conn.messages_in, conn.dropped) == (2, 3, 0)
    await conn.close()


async def test_fragmented_messages_are_delivered_whole() -> None:
    async with RawPeer() as peer:
        inbox = Inbox()
        conn = await connect(peer.url, inbox)
        writer = await peer.next_writer()
        writer.write(
            frame(Opcode.TEXT, b'{"event":', fin=False)
            + frame(Opcode.PING, b"p")  # control frames may sit between fragments
            + frame(Opcode.CONT, b'"clear"', fin=False)
            + frame(Opcode.CONT, b"}")
            + frame(Opcode.BINARY, b"\x01", fin=False)
            + frame(Opcode.CONT, b"\x02")
        )
        items = await inbox.wait_for(3)
        assert items == [("open", True), ("text", '{"event":"clear"}'), ("bytes", b"\x01\x02")]
        conn.abort()


async def test_a_failing_handler_is_logged_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with RawPeer() as peer:
        inbox = Inbox()

        def on_text(text: str) -> None:
            inbox.on_text(text)
            if text == "boom":
                raise RuntimeError("handler bug")

        conn = await connect_websocket(
            peer.url, seconds=3, on_open=inbox.on_open, on_text=on_text, on_bytes=inbox.on_bytes
        )
        writer = await peer.next_writer()
        with caplog.at_level(logging.ERROR, logger="agera.drivers.ws"):
            writer.write(frame(Opcode.TEXT, b"boom") + frame(Opcode.TEXT, b"after"))
            assert await inbox.wait_for(3) == [("open", True), ("text", "boom"), ("text", "after")]
        assert conn.is_open
        assert [r.getMessage() for r in caplog.records] == [
            f"handler of a message from ws://{HOST}:{peer.port}/raw failed"
        ]
        conn.abort()


async def test_pong_round_trip_is_measured(bot_server: tuple[str, list[ServerConnection]]) -> None:
    url, _ = bot_server
    conn = await connect(url, Inbox())  # one ping goes out at connect
    async with asyncio.timeout(5):
        while conn.last_rtt_ms is None:  # noqa: ASYNC110 - pongs have no event
            await asyncio.sleep(0.01)
    conn.ping()
    async with asyncio.timeout(5):
        while len(conn.rtt_ms) < 2:  # noqa: ASYNC110 - pongs have no event
            await asyncio.sleep(0.01)
    assert all(0 <= rtt < 5000 for rtt in conn.rtt_ms)
    assert conn.median_rtt_ms is not None
    await conn.close()


async def test_no_rtt_when_the_peer_never_answers_pings() -> None:
    async with RawPeer() as peer:
        conn = await connect(peer.url, Inbox())
        writer = await peer.next_writer()
        writer.write(frame(Opcode.PONG, b"unsolicited"))
        conn.ping()
        await asyncio.sleep(0.05)
        assert (conn.rtt_ms, conn.last_rtt_ms, conn.median_rtt_ms) == ((), None, None)
        conn.abort()


# -- endings ---------------------------------------------------------------------------------


async def test_we_close_with_code_and_reason(
    bot_server: tuple[str, list[ServerConnection]],
) -> None:
    url, connections = bot_server
    conn = await connect(url, Inbox())
    assert await conn.close(1000, "caller hung up") == WsClosed(1000, "caller hung up", False)
    assert await conn.closed == WsClosed(1000, "caller hung up", False)
    assert not conn.is_open
    assert not conn.send_text("late")
    assert conn.dropped == 0  # a closed connection is not a slow reader
    (ws,) = connections
    await ws.wait_closed()
    assert (ws.close_code, ws.close_reason) == (1000, "caller hung up")


async def test_a_long_close_reason_is_cut_to_fit_the_control_frame(
    bot_server: tuple[str, list[ServerConnection]],
) -> None:
    url, _ = bot_server
    conn = await connect(url, Inbox())
    closed = await conn.close(1000, "é" * 100)  # 200 bytes of UTF-8
    assert closed == WsClosed(1000, "é" * 61, False)  # 122 bytes: never half a character


async def test_the_peer_closes_with_code_and_reason(
    bot_server: tuple[str, list[ServerConnection]],
) -> None:
    url, connections = bot_server
    conn = await connect(url, Inbox())
    await connections[0].close(4001, "bye")
    async with asyncio.timeout(5):
        assert await conn.closed == WsClosed(4001, "bye", True)
    assert not conn.is_open


async def test_the_peer_just_drops_tcp() -> None:
    async with RawPeer() as peer:
        # No ping: unread data in the peer's socket would turn its close into a reset.
        conn = await connect(peer.url, Inbox(), ping_interval=None)
        writer = await peer.next_writer()
        writer.close()  # EOF without a close frame
        async with asyncio.timeout(5):
            closed = await conn.closed
        assert closed == WsClosed(1006, "connection lost without a close frame", True)


async def test_the_peer_resets_the_connection() -> None:
    async with RawPeer() as peer:
        conn = await connect(peer.url, Inbox())
        writer = await peer.next_writer()
        writer.transport.abort()
        async with asyncio.timeout(5):
            closed = await conn.closed
        assert (closed.code, closed.by_peer) == (1006, True)


async def test_invalid_utf8_text_fails_the_connection_with_1007() -> None:
    """RFC 6455 §8.1; the peer's answering close is discarded (§7.1.7), so the reason is ours."""
    async with RawPeer() as peer:
        inbox = Inbox()
        conn = await connect(peer.url, inbox, ping_interval=None)
        reader, writer = await peer.next_peer()
        writer.write(frame(Opcode.TEXT, b"\xff\xfe") + frame(Opcode.TEXT, b"never delivered"))
        async with asyncio.timeout(5):
            assert await read_client_frame(reader) == (
                Opcode.CLOSE,
                Close(1007, "invalid UTF-8 in a text message").serialize(),
            )
        assert not conn.is_open
        writer.write(frame(Opcode.CLOSE, Close(1007, "").serialize()))
        writer.close()
        async with asyncio.timeout(5):
            closed = await conn.closed
        assert closed == WsClosed(1007, "invalid UTF-8 in a text message", True)
        assert inbox.items == [("open", True)]


async def test_close_is_bounded_when_the_peer_never_answers() -> None:
    async with RawPeer() as peer:
        conn = await connect(peer.url, Inbox(), ping_interval=None)
        reader, _ = await peer.next_peer()
        loop = asyncio.get_running_loop()
        began = loop.time()
        closed = await conn.close(1000, "", seconds=0.2)
        assert closed == WsClosed(1000, "", False)
        assert await read_client_frame(reader) == (Opcode.CLOSE, b"\x03\xe8")
        assert loop.time() - began < 3.0  # a bound, not a measurement


async def test_send_drops_instead_of_buffering_when_the_peer_does_not_read() -> None:
    async with RawPeer() as peer:
        limit = 64 * 1024
        conn = await connect(peer.url, Inbox(), write_buffer_limit=limit)
        await peer.next_writer()  # never read from
        message = "x" * 16_000
        sent = 0
        for _ in range(20_000):
            if not conn.send_text(message):
                break
            sent += 1
        else:
            pytest.fail("a peer that never reads never made send_text refuse")
        assert conn.dropped == 1
        assert conn.messages_out == sent
        assert conn.write_buffer_size <= limit + len(message) + 16
        assert conn.is_open
        assert not conn.send_text(message)
        assert conn.dropped == 2
        # A message that ends the stream goes out past the cap (and is not a drop).
        assert conn.send_text("the end", always=True)
        assert (conn.dropped, conn.messages_out) == (2, sent + 1)
        conn.abort()


# -- failing to connect ----------------------------------------------------------------------


async def test_refused_connection_is_bot_unavailable_without_the_query() -> None:
    async with RawPeer() as peer:
        port = peer.port
    with pytest.raises(BotUnavailable) as caught:
        await connect(f"ws://{HOST}:{port}/bot?token=secret", Inbox())
    # The same words on asyncio and uvloop, and no query (it may hold a token).
    assert (
        str(caught.value) == f"cannot connect to bot at ws://{HOST}:{port}/bot: Connection refused"
    )


async def test_http_rejection_is_bot_unavailable() -> None:
    async def refuse(ws: ServerConnection, request: Any) -> Any:
        return ws.respond(503, "busy\n")

    async with serve(lambda ws: asyncio.sleep(0), HOST, 0, process_request=refuse) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(BotUnavailable) as caught:
            await connect(f"ws://{HOST}:{port}/x?k=v", Inbox())
    assert str(caught.value) == (
        f"bot at ws://{HOST}:{port}/x refused the WebSocket upgrade: HTTP 503"
    )


async def test_a_non_websocket_answer_is_bot_unavailable() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(BotUnavailable, match="failed the WebSocket handshake"):
            await connect(f"ws://{HOST}:{port}/", Inbox())
    finally:
        server.close()


async def test_handshake_timeout_is_bot_unavailable_within_the_timeout() -> None:
    async with RawPeer(answer=False) as peer:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(BotUnavailable) as caught:
            await connect(peer.url + "?q=1", Inbox(), seconds=0.3)
        assert loop.time() - began < 3.0  # a bound, not a measurement
        reader, _ = await peer.next_peer()
        assert str(caught.value) == f"bot at {peer.url} did not answer within 0.3 s"
        # The half-open connection was dropped, not left behind.
        async with asyncio.timeout(5):
            assert await reader.read() == b""


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/x", "ws://", "ws://host:99999/", "wss://h/#frag", "nonsense"]
)
async def test_a_bad_url_is_bot_unavailable(url: str) -> None:
    with pytest.raises(BotUnavailable, match="not a WebSocket URL"):
        await connect(url, Inbox())


# -- TLS -------------------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test bot")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "bot.pem"
    key_path = directory / "bot.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_wss_with_a_trusted_certificate_and_refusal_of_an_untrusted_one(
    tmp_path: Path,
) -> None:
    cert_path, key_path = make_certificate(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_path, key_path)

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(handler, HOST, 0, ssl=server_tls, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"wss://{HOST}:{port}/secure"
        with pytest.raises(
            BotUnavailable,
            match=rf"^cannot connect to bot at {url}: TLS certificate verify failed: self.signed",
        ):
            await connect(url, Inbox())
        inbox = Inbox()
        trusted = ssl.create_default_context(cafile=str(cert_path))
        conn = await connect(url, inbox, ssl_context=trusted)
        assert conn.send_text("over tls")
        assert await inbox.wait_for(2) == [("open", True), ("text", "over tls")]
        assert await conn.close() == WsClosed(1000, "", False)
