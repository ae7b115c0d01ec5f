"""Self-check of ProviderStream against a plain websockets server written here (not our node).

The server side reads what the fake sends as literal JSON, so a wrong counter, field or pace in
the fake fails here rather than hiding a bug in the agent-stream endpoint later; and it sends
literal JSON back, so each violation the fake should report is shown to be reported.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.fake_provider import (
    OMIT,
    HandshakeRefused,
    ProviderStream,
    StreamClosed,
    twilio_signature,
)

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"
PATH = "/api/v1/agent-stream/acme?token=t1"
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


class NodeSide:
    """One accepted connection: every frame with its arrival time (``loop.time()``)."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, Any]] = []
        self.changed = asyncio.Event()
        self.done = asyncio.Event()

    def messages(self, event: str | None = None) -> list[dict[str, Any]]:
        return [m for _, m in self.frames if event is None or m.get("event") == event]

    async def wait_messages(self, count: int, seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while len(self.frames) < count:
                self.changed.clear()
                await self.changed.wait()

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for frame in self.ws:
                self.frames.append((loop.time(), json.loads(frame)))
                self.changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.done.set()
            self.changed.set()


class FakeNode:
    """A stand-in for the agent-stream endpoint; ``refuse`` answers the upgrade with it."""

    def __init__(self) -> None:
        self.refuse: int | None = None
        self.requests: list[Request] = []
        self.sides: asyncio.Queue[NodeSide] = asyncio.Queue()
        self.server: Server | None = None
        self.url = ""

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.refuse is not None:
            return ws.respond(HTTPStatus(self.refuse), "no\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        side = NodeSide(ws)
        self.sides.put_nowait(side)
        await side.run()

    async def next_side(self) -> NodeSide:
        async with asyncio.timeout(5):
            return await self.sides.get()


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    fake = FakeNode()
    fake.server = await serve(
        fake._handle, HOST, 0, process_request=fake._process_request, compression=None
    )
    port = next(iter(fake.server.sockets)).getsockname()[1]
    fake.url = f"ws://{HOST}:{port}{PATH}"
    yield fake
    fake.server.close()
    await fake.server.wait_closed()


def speech(nbytes: int) -> bytes:
    """Audio whose every frame differs, so a lost, repeated or reordered frame shows."""
    return bytes((i * 7 + i // 160) % 256 for i in range(nbytes))


async def test_cloudonix_stream_opens_with_connected_and_start(node: FakeNode) -> None:
    stream = ProviderStream(
        node.url, custom_parameters={"agent": "a1"}, start_fields={"to": "+15550199999"}
    )
    async with stream:
        side = await node.next_side()
        await side.wait_messages(2)
        connected, start = side.messages()
        assert connected == CONNECTED
        sid = stream.stream_sid
        assert sid.startswith("MZ") and len(sid) == 34
        assert start == {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": sid,
            "start": {
                "streamSid": sid,
                "accountSid": "acme.cloudonix.net",
                "callSid": stream.call_sid,
                "session": stream.session,
                "from": "+15550100001",
                "to": "+15550199999",
                "context": "inbound",
                "tracks": ["inbound"],
                "customParameters": {"agent": "a1"},
                "mediaFormat": MEDIA_FORMAT,
            },
        }
        assert type(start["start"]["mediaFormat"]["sampleRate"]) is int
    assert node.requests[0].path == PATH


async def test_twilio_stream_start_and_signature_header(node: FakeNode) -> None:
    signature = twilio_signature("token", node.url)
    stream = ProviderStream(
        node.url,
        provider="twilio",
        headers={"X-Twilio-Signature": signature},
        custom_parameters={"From": "+15550100001", "To": "+15550100002"},
        start_fields={"tracks": OMIT},
    )
    async with stream:
        side = await node.next_side()
        await side.wait_messages(2)
    body = side.messages("start")[0]["start"]
    assert sorted(body) == [
        "accountSid",
        "callSid",
        "customParameters",
        "mediaFormat",
        "streamSid",
    ]  # no Cloudonix extras, and OMIT took tracks out
    assert body["accountSid"].startswith("AC") and len(body["accountSid"]) == 34
    assert body["customParameters"] == {"From": "+15550100001", "To": "+15550100002"}
    assert node.requests[0].headers["X-Twilio-Signature"] == signature


def test_twilio_signature_matches_twilios_published_vector() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


async def test_media_counters_pacing_dtmf_mark_and_stop(node: FakeNode) -> None:
    audio = speech(8000)  # 1 s: 50 frames
    stream = ProviderStream(node.url, provider="twilio")
    await stream.open()
    side = await node.next_side()
    assert await stream.play(audio) == 50
    stream.send_dtmf("5")
    stream.send_mark_echo("reply-3")
    await stream.stop()
    assert await stream.wait_closed() == (1000, "")
    await asyncio.wait_for(side.done.wait(), 5)

    assert [m["event"] for m in side.messages()] == [
        "connected",
        "start",
        *["media"] * 50,
        "dtmf",
        "mark",
        "stop",
    ]
    media = side.messages("media")
    assert [m["sequenceNumber"] for m in media] == [str(n) for n in range(2, 52)]
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, 51)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps[0] % 20 == 0 and stamps[0] <= 100  # the slot play() started in
    assert stamps == [stamps[0] + 20 * k for k in range(50)]
    assert all(type(m["media"]["timestamp"]) is str for m in media)
    assert all(m["streamSid"] == stream.stream_sid for m in media)
    assert all(m["media"]["track"] == "inbound" for m in media)
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media) == audio

    arrivals = [at for at, m in side.frames if m["event"] == "media"]
    span = arrivals[-1] - arrivals[0]  # 49 intervals of 20 ms: 0.98 s when paced
    assert 0.9 <= span <= 1.5, span

    dtmf, mark, stop = side.messages()[-3:]
    assert dtmf == {
        "event": "dtmf",
        "streamSid": stream.stream_sid,
        "sequenceNumber": "52",
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert mark == {
        "event": "mark",
        "sequenceNumber": "53",
        "streamSid": stream.stream_sid,
        "mark": {"name": "reply-3"},
    }
    assert stop == {
        "event": "stop",
        "sequenceNumber": "54",
        "streamSid": stream.stream_sid,
        "stop": {"accountSid": stream.account_sid, "callSid": stream.call_sid},
    }
    assert side.ws.close_code == 1000


async def test_fast_play_continues_the_timeline_and_pads_the_last_frame(node: FakeNode) -> None:
    async with ProviderStream(node.url) as stream:
        side = await node.next_side()
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await stream.play(speech(8000), realtime=False) == 50
        assert loop.time() - began < 0.5  # not paced
        assert await stream.play(b"\x01" * 170, realtime=False) == 2
        await side.wait_messages(54)
    media = side.messages("media")
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps == [stamps[0] + 20 * k for k in range(52)]
    assert [m["media"]["chunk"] for m in media[-2:]] == ["51", "52"]
    last = base64.b64decode(media[-1]["media"]["payload"])
    assert last == b"\x01" * 10 + b"\xff" * 150


async def test_many_concurrent_streams_are_paced(node: FakeNode) -> None:
    streams = [ProviderStream(node.url) for _ in range(50)]
    await asyncio.gather(*(s.open() for s in streams))
    sides = [await node.next_side() for _ in streams]
    counts = await asyncio.gather(*(s.play(speech(1600)) for s in streams))  # 0.2 s each
    assert counts == [10] * 50
    await asyncio.gather(*(s.stop() for s in streams))
    for side in sides:
        await asyncio.wait_for(side.done.wait(), 5)
        arrivals = [at for at, m in side.frames if m["event"] == "media"]
        assert len(arrivals) == 10
        assert 0.15 <= arrivals[-1] - arrivals[0] <= 0.6


async def test_node_media_marks_and_clears_are_captured(node: FakeNode) -> None:
    async with ProviderStream(node.url) as stream:
        side = await node.next_side()
        sid = stream.stream_sid
        for chunk in (b"\x10" * 160, b"\x20" * 80):
            payload = base64.b64encode(chunk).decode()
            await side.send({"event": "media", "streamSid": sid, "media": {"payload": payload}})
        await side.send({"event": "mark", "streamSid": sid, "mark": {"name": "reply-1"}})
        await side.send({"event": "clear", "streamSid": sid})
        await side.send({"event": "mark", "streamSid": sid, "mark": {"name": "reply-2"}})
        await stream.wait_messages(5)
    assert stream.violations == []
    assert stream.events() == ["media", "media", "mark", "clear", "mark"]
    assert stream.received_audio() == b"\x10" * 160 + b"\x20" * 80
    assert [name for name, _ in stream.marks] == ["reply-1", "reply-2"]
    assert len(stream.clears) == 1
    times = [at for at, _ in stream.received]
    assert times == sorted(times)
    assert stream.marks[0][1] <= stream.clears[0] <= stream.marks[1][1]


async def test_each_node_mistake_is_a_violation(node: FakeNode) -> None:
    async with ProviderStream(node.url) as stream:
        side = await node.next_side()
        sid = stream.stream_sid
        await side.send({"event": "media", "media": {"payload": "AAAA"}})
        await side.send({"event": "hello", "streamSid": sid})
        await side.send(b"\x00binary")
        await side.send("not json")
        await side.send("[1]")
        await side.send({"event": "media", "streamSid": sid, "media": {"payload": "not b64!"}})
        no_payload = f'{{"event":"media","streamSid":"{sid}","media":{{}}}}'
        await side.send(no_payload)
        no_name = f'{{"event":"mark","streamSid":"{sid}","mark":{{"name":3}}}}'
        await side.send(no_name)
        await side.send({"event": "clear", "streamSid": sid})
        await stream.wait_messages(9)
    assert stream.violations == [
        f"message 1: streamSid None is not {sid!r}",
        "message 2: unexpected event 'hello'",
        "message 3: binary frame of 7 bytes",
        "message 4: invalid JSON: 'not json'",
        "message 5: JSON that is not an object: '[1]'",
        "message 6: payload is not base64: 'not b64!'",
        f"message 7: media without a payload string: {no_payload!r}",
        f"message 8: mark without a name string: {no_name!r}",
    ]
    assert stream.received_audio() == b"\x00\x00\x00"  # the one valid payload, despite its sid


async def test_a_message_before_start_is_a_violation(node: FakeNode) -> None:
    stream = ProviderStream(node.url)
    await stream.open(handshake=False)
    side = await node.next_side()
    await side.send({"event": "clear", "streamSid": "MZx"})
    await stream.wait_messages(1)
    stream.send_connected()
    stream.send_raw('{"event":"start"')  # a malformed start, exactly as given
    await side.wait_messages(1)
    await stream.close()
    assert stream.violations == ["message 1: 'clear' before start was sent"]
    assert side.messages() == [CONNECTED]  # the server's json.loads stopped at the bad frame


async def test_server_close_code_and_reason_are_reported(node: FakeNode) -> None:
    stream = ProviderStream(node.url)
    await stream.open()
    side = await node.next_side()
    await side.ws.close(4400, "reason")
    assert await stream.wait_closed() == (4400, "reason")
    assert not stream.is_open
    assert await stream.play(speech(320)) == 0
    with pytest.raises(StreamClosed):
        stream.send_dtmf("1")


async def test_a_dropped_connection_is_1006(node: FakeNode) -> None:
    stream = ProviderStream(node.url)
    await stream.open()
    side = await node.next_side()
    side.ws.transport.abort()
    assert await stream.wait_closed() == (1006, "")


@pytest.mark.parametrize("status", [503, 404])
async def test_a_refused_upgrade_raises_with_its_status(node: FakeNode, status: int) -> None:
    node.refuse = status
    stream = ProviderStream(node.url)
    with pytest.raises(HandshakeRefused) as refused:
        await stream.open()
    assert refused.value.status == status
    assert f"HTTP {status}" in str(refused.value)
    assert node.sides.empty()
