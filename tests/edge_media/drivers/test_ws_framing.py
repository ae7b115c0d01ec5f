"""The media path's own WebSocket frames (edge_media/drivers/ws_framing.py) against websockets.

websockets is the reference: frames we build must parse in its core exactly as its own, and a
connection that splits data frames itself must deliver what websockets' core alone delivers
from the same bytes, cut anywhere, including fragments, control frames, a close, and frames the
splitter leaves to the core (reserved bits, a missing mask, over the size limit).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import CLIENT, OPEN, SERVER, Protocol

from edge_media.agent_stream.ws_server import StreamListener
from edge_media.drivers import ws_framing
from edge_media.drivers.inbound_budget import BotLimits
from edge_media.drivers.ws_framing import (
    CORE,
    FIN_BINARY,
    FIN_TEXT,
    DataFrameSplitter,
    MaskedFrames,
    core_at_boundary,
    server_frame,
)
from tests.edge_media.drivers.test_ws_client import HOST, Inbox, RawPeer, connect

pytestmark = pytest.mark.anyio

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]
MAX_SIZE = 100_000


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed + size).randbytes(size)


def _with_rsv(frame: bytes) -> bytes:
    """A frame with RSV2 set (websockets refuses to build one)."""
    return bytes((frame[0] | 0x20,)) + frame[1:]


def _events(side: Any, data: bytes, max_size: int | None = MAX_SIZE) -> list[Any]:
    core = Protocol(side, state=OPEN, max_size=max_size)
    core.receive_data(data)
    return core.events_received()


# -- building ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_masked_client_frames_parse_in_a_websockets_server(size: int) -> None:
    frames = MaskedFrames()
    payload = _payload(size)
    data = frames.text(payload) + frames.binary(payload)
    events = _events(SERVER, data)
    assert [(e.opcode, bytes(e.data), e.fin) for e in events] == [
        (Opcode.TEXT, payload, True),
        (Opcode.BINARY, payload, True),
    ]


def test_masking_keys_differ_frame_to_frame_across_pool_refills_and_after_a_fork() -> None:
    frames = MaskedFrames()
    keys = [frames.text(b"x")[2:6] for _ in range(ws_framing.KEY_POOL_BYTES // 4 * 2 + 3)]
    assert len(set(keys)) > len(keys) * 0.99  # 32-bit random keys: a few repeats at most
    before = frames.text(b"x")[2:6]
    frames.forget_keys()  # what the fork hook does
    assert frames._offset == 0 or frames.text(b"y")[2:6] != before


@pytest.mark.parametrize("size", SIZES)
def test_server_frames_parse_in_a_websockets_client(size: int) -> None:
    payload = _payload(size)
    data = server_frame(FIN_TEXT, payload) + server_frame(FIN_BINARY, payload)
    events = _events(CLIENT, data)
    assert [(e.opcode, bytes(e.data)) for e in events] == [
        (Opcode.TEXT, payload),
        (Opcode.BINARY, payload),
    ]


# -- splitting --------------------------------------------------------------------------------


def test_the_splitter_holds_a_partial_frame_and_leaves_control_frames_whole_to_the_core() -> None:
    ping = Frame(Opcode.PING, b"p").serialize(mask=False)
    one = server_frame(FIN_TEXT, b"hello")
    two = server_frame(FIN_BINARY, b"\x00" * 300)
    splitter = DataFrameSplitter(masked=False, max_size=MAX_SIZE)
    stream = one + ping + two
    assert splitter.split(stream[:3]) == []
    assert splitter.pending == 3
    assert splitter.split(stream[3 : len(one) + 1]) == [(1, b"hello")]
    assert splitter.split(stream[len(one) + 1 : -1]) == [(CORE, ping)]
    assert splitter.split(stream[-1:]) == [(2, b"\x00" * 300)]
    assert splitter.pending == 0


def test_the_splitter_leaves_everything_from_an_odd_frame_on_to_the_core() -> None:
    fragment = Frame(Opcode.TEXT, b"a", fin=False).serialize(mask=False)
    rsv = _with_rsv(Frame(Opcode.TEXT, b"a").serialize(mask=False))
    masked = Frame(Opcode.TEXT, b"a").serialize(mask=True)
    close = Close(1000, "bye").serialize()
    close_frame = Frame(Opcode.CLOSE, close).serialize(mask=False)
    after = server_frame(FIN_TEXT, b"later")
    for odd in (fragment, rsv, masked, close_frame):
        splitter = DataFrameSplitter(masked=False, max_size=MAX_SIZE)
        items = splitter.split(server_frame(FIN_TEXT, b"first") + odd + after)
        assert items == [(1, b"first"), (CORE, odd + after)]
    too_big = server_frame(FIN_TEXT, b"x" * 200)
    splitter = DataFrameSplitter(masked=False, max_size=100)
    assert splitter.split(too_big[:10]) == [(CORE, too_big[:10])]  # refused from its header


def test_the_core_is_at_a_boundary_only_between_whole_frames() -> None:
    core = Protocol(CLIENT, state=OPEN)
    assert core_at_boundary(core)
    core.receive_data(b"\x81\x05")  # a header: read, its payload awaited, the buffer empty
    assert not core.reader.buffer and not core_at_boundary(core)
    core.receive_data(b"hello")
    assert core_at_boundary(core)
    core.receive_data(Frame(Opcode.TEXT, b"a", fin=False).serialize(mask=False))
    assert not core_at_boundary(core)  # inside a fragmented message
    core.receive_data(Frame(Opcode.CONT, b"b").serialize(mask=False))
    assert core_at_boundary(core)
    core.receive_data(Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=False))
    assert not core_at_boundary(core)


# -- a connection splitting for itself == websockets' core alone --------------------------------


def _random_stream(rng: random.Random, *, masked: bool) -> bytes:
    """Frames as a peer may send them: mostly media-sized data, some big ones, pings, pongs,
    fragmented messages with control frames between, and now and then an ending (a close, a
    reserved bit, a frame with the wrong mask bit, or one over the size limit)."""
    out: list[bytes] = []
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        if kind < 0.6:
            size = rng.choice([0, 5, 120, 125, 126, 300, 4000, 70000])
            opcode = Opcode.TEXT if rng.random() < 0.7 else Opcode.BINARY
            data = b"t" * size if opcode is Opcode.TEXT else rng.randbytes(size)
            out.append(Frame(opcode, data).serialize(mask=masked))
        elif kind < 0.75:
            opcode = Opcode.PING if rng.random() < 0.5 else Opcode.PONG
            out.append(Frame(opcode, rng.randbytes(rng.randint(0, 125))).serialize(mask=masked))
        elif kind < 0.9:
            parts = rng.randint(2, 4)
            for index in range(parts):
                opcode = Opcode.TEXT if index == 0 else Opcode.CONT
                fin = index == parts - 1
                out.append(Frame(opcode, b"f" * rng.randint(0, 200), fin).serialize(mask=masked))
                if not fin and rng.random() < 0.5:
                    out.append(Frame(Opcode.PING, b"i").serialize(mask=masked))
        else:
            ending = rng.choice(["close", "rsv", "mask", "big"])
            if ending == "close":
                body = Close(1000, "done").serialize()
                out.append(Frame(Opcode.CLOSE, body).serialize(mask=masked))
            elif ending == "rsv":
                out.append(_with_rsv(Frame(Opcode.TEXT, b"r").serialize(mask=masked)))
            elif ending == "mask":
                out.append(Frame(Opcode.TEXT, b"m").serialize(mask=not masked))
            else:
                out.append(Frame(Opcode.BINARY, b"B" * (MAX_SIZE + 1)).serialize(mask=masked))
            out.append(Frame(Opcode.TEXT, b"after the end").serialize(mask=masked))
            break
    return b"".join(out)


def _reference(side: Any, data: bytes) -> tuple[list[tuple[str, Any]], int | None]:
    """What websockets' core alone makes of ``data``: whole messages, and the close code it
    sent (None while open)."""
    core = Protocol(side, state=OPEN, max_size=MAX_SIZE)
    core.receive_data(data)
    messages: list[tuple[str, Any]] = []
    parts: list[bytes] = []
    first = Opcode.TEXT
    for event in core.events_received():
        if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if event.opcode is not Opcode.CONT:
                first, parts = event.opcode, []
            parts.append(bytes(event.data))
            if event.fin:
                whole = b"".join(parts)
                messages.append(
                    ("text", whole.decode()) if first is Opcode.TEXT else ("bytes", whole)
                )
    return messages, None if core.close_sent is None else core.close_sent.code


def _cuts(rng: random.Random, data: bytes) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12))))
    if rng.random() < 0.2:  # byte by byte near the start: heads split everywhere
        points = sorted(set(points) | set(range(1, min(len(data), 12))))
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def test_a_bot_connection_delivers_what_websockets_alone_delivers() -> None:
    rng = random.Random(20261205)
    async with RawPeer() as peer:
        for _ in range(150):
            inbox = Inbox()
            conn = await connect(peer.url, inbox, max_message_bytes=MAX_SIZE)
            await peer.next_writer()
            assert core_at_boundary(conn._core)  # the splitter reads from here on
            data = _random_stream(rng, masked=False)
            expected, close_code = _reference(CLIENT, data)
            for piece in _cuts(rng, data):
                conn.data_received(piece)  # as the transport would, cut where we choose
            assert inbox.items[1:] == expected
            sent = conn._core.close_sent
            assert (None if sent is None else sent.code) == close_code
            conn.abort()


async def test_a_provider_connection_delivers_what_websockets_alone_delivers() -> None:
    rng = random.Random(5122026)
    unlimited = BotLimits(  # the budget is not what this compares
        max_message_bytes=MAX_SIZE, realtime_factor=1e6, burst_seconds=1e6, messages_per_second=1e9
    )
    listener = StreamListener(
        HOST,
        0,
        handle=_hold_forever,
        health=lambda: (200, {}),
        accepting=lambda: True,
        limits=unlimited,
    )
    await listener.start()
    try:
        for _ in range(60):
            reader, writer = await asyncio.open_connection(*listener.local_addr)
            writer.write(
                b"GET /api/v1/agent-stream/twilio/00000000-0000-4000-8000-000000000000 HTTP/1.1"
                b"\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            async with asyncio.timeout(5):
                assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
            (conn,) = listener.connections
            assert core_at_boundary(conn._core)  # the splitter reads from here on
            got = Inbox()
            conn._on_text = got.on_text
            conn._on_bytes = got.on_bytes
            data = _random_stream(rng, masked=True)
            expected, close_code = _reference(SERVER, data)
            for piece in _cuts(rng, data):
                conn.data_received(piece)
            assert got.items == expected
            sent = conn._core.close_sent
            assert (None if sent is None else sent.code) == close_code
            writer.transport.abort()
            await asyncio.wait_for(conn.closed, 5)
    finally:
        await listener.close(1.0)


async def _hold_forever(conn: Any, route: Any) -> None:
    await conn.closed
