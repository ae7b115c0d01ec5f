"""Self-check of StrictTwilioBot: a stream written by hand (not by our protocol code) passes,
and each kind of mistake is reported, so ``violations == []`` elsewhere means something."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

SID = "MZ00000000000000000000000000000009"
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "streamSid": SID,
        "accountSid": "acc",
        "callSid": "call",
        "tracks": ["inbound"],
        "customParameters": {
            "from_number": "+1",
            "to_number": "+2",
            "call_uuid": "call",
            "direction": "inbound",
            "account_id": "acc",
        },
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def media(sequence: int, chunk: int, timestamp: int, audio: bytes) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(sequence),
        "streamSid": SID,
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp),
            "payload": base64.b64encode(audio).decode(),
        },
    }


def mark(sequence: int, name: str, played_ms: Any) -> dict[str, Any]:
    return {
        "event": "mark",
        "sequenceNumber": str(sequence),
        "streamSid": SID,
        "mark": {"name": name, "played_ms": played_ms},
    }


def stop(sequence: int) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(sequence),
        "streamSid": SID,
        "stop": {"accountSid": "acc", "callSid": "call"},
    }


@pytest.fixture
async def bot() -> AsyncIterator[StrictTwilioBot]:
    async with StrictTwilioBot() as server:
        yield server


async def send_all(ws: ClientConnection, messages: list[Any]) -> None:
    for item in messages:
        await ws.send(item if isinstance(item, str | bytes) else json.dumps(item))


async def test_a_correct_stream_has_no_violations(bot: StrictTwilioBot) -> None:
    async with connect(bot.url) as ws:
        session = await bot.next_session()
        await send_all(ws, [CONNECTED, START, media(2, 1, 0, b"\x01" * 160)])
        await session.wait_events(3)
        await session.send_media(b"\x07" * 330)
        await session.send_mark("m1")
        await session.send_mark("m2")
        await send_all(
            ws,
            [
                media(3, 2, 20, b"\x02" * 80),
                {
                    "event": "dtmf",
                    "sequenceNumber": "4",
                    "streamSid": SID,
                    "dtmf": {"track": "inbound_track", "digit": "9"},
                },
                mark(5, "m1", 60),
                media(6, 3, 30, b"\x03" * 160),
                mark(7, "m2", 0),
                stop(8),
            ],
        )
        await session.wait_events(9)
    await session.wait_closed()
    assert session.violations == []
    assert bytes(session.audio) == b"\x01" * 160 + b"\x02" * 80 + b"\x03" * 160
    assert session.digits == ["9"]
    assert [name for name, _ in session.mark_echoes] == ["m1", "m2"]
    assert session.mark_played == [("m1", 60), ("m2", 0)]
    assert session.marks_sent_ms == [("m1", 60), ("m2", 0)]  # 330 bytes: 3 frames, padded
    assert session.events() == [
        "connected",
        "start",
        "media",
        "media",
        "dtmf",
        "mark",
        "media",
        "mark",
        "stop",
    ]
    assert session.close_code == 1000
    times = [item.at for item in session.received]
    assert times == sorted(times)


async def test_each_mistake_is_reported(bot: StrictTwilioBot) -> None:
    bad_start: dict[str, Any] = json.loads(json.dumps(START))
    del bad_start["start"]["callSid"]
    bad_start["start"]["mediaFormat"]["sampleRate"] = "8000"
    del bad_start["start"]["customParameters"]["direction"]
    bad_media = media(4, 3, 20, b"")
    bad_media["media"]["payload"] = "not base64!"
    async with connect(bot.url) as ws:
        session = await bot.next_session()
        await session.send_mark("m1")
        await send_all(
            ws,
            [
                {"event": "connected", "protocol": "Call"},
                bad_start,
                media(2, 1, 0, b"\x00" * 160),
                media(4, 3, 40, b"\x00" * 160),  # sequence 3 and chunk 2 skipped
                bad_media,  # sequence 4 again, chunk 4 expected
                {
                    "event": "dtmf",
                    "sequenceNumber": "5",
                    "streamSid": SID,
                    "dtmf": {"track": "inbound", "digit": "x"},
                },
                mark(6, "m9", 20),
                {"event": "hello", "sequenceNumber": "7", "streamSid": "MZwrong"},
                b"\x00binary",
                stop(8),
                media(9, 5, 60, b"\x00" * 160),
            ],
        )
        await session.wait_events(11)
        await ws.close(1001)
    await session.wait_closed()
    assert session.violations == [
        "message 1: first message must be {'event': 'connected', 'protocol': 'Call', "
        "'version': '1.0.0'}, got {'event': 'connected', 'protocol': 'Call'}",
        "message 2: start keys ['accountSid', 'customParameters', 'mediaFormat', 'streamSid', "
        "'tracks'], expected ['accountSid', 'callSid', 'customParameters', 'mediaFormat', "
        "'streamSid', 'tracks']",
        "message 2: start.callSid None",
        "message 2: start.mediaFormat {'encoding': 'audio/x-mulaw', 'sampleRate': '8000', "
        "'channels': 1}",
        "message 2: start.customParameters has no direction",
        "message 4: sequenceNumber '4', expected '3'",
        "message 4: chunk '3', expected '2'",
        "message 4: timestamp '40', expected '20'",
        "message 5: sequenceNumber '4', expected '5'",
        "message 5: timestamp '20', expected '40'",
        "message 5: payload is not base64: 'not base64!'",
        "message 6: dtmf track 'inbound'",
        "message 6: dtmf digit 'x'",
        "message 7: mark echo 'm9', expected ['m1']",
        "message 8: streamSid 'MZwrong' is not 'MZ00000000000000000000000000000009'",
        "message 8: unexpected event 'hello'",
        "message 9: binary frame of 7 bytes",
        # The stop is right, but it cannot match a start that had no callSid.
        "message 10: stop body {'accountSid': 'acc', 'callSid': 'call'}, expected "
        "{'accountSid': 'acc', 'callSid': None}",
        "message 11: 'media' after stop",
        "message 11: close code 1001 after stop, expected 1000",
    ]


async def test_mark_echo_mistakes_are_reported(bot: StrictTwilioBot) -> None:
    """played_ms must be there, beside the name, as a non-negative int (not Twilio's string
    counters); a mark echo without it is what a gateway older than played_ms would send."""
    async with connect(bot.url) as ws:
        session = await bot.next_session()
        for name in ("a", "b", "c", "d", "e"):
            await session.send_mark(name)
        await send_all(
            ws,
            [
                CONNECTED,
                START,
                {"event": "mark", "sequenceNumber": "2", "streamSid": SID, "mark": {"name": "a"}},
                mark(3, "a", "20"),
                mark(4, "a", -20),
                mark(5, "a", True),
                mark(6, 5, 0),
                mark(7, "a", 20),
                stop(8),
            ],
        )
        await session.wait_events(9)
    await session.wait_closed()
    assert session.violations == [
        "message 3: mark body {'name': 'a'}",
        "message 4: mark played_ms '20'",
        "message 5: mark played_ms -20",
        "message 6: mark played_ms True",
        "message 7: mark body {'name': 5, 'played_ms': 0}",
    ]
    assert session.mark_played == [("a", 20)]


async def test_closing_without_stop_is_reported(bot: StrictTwilioBot) -> None:
    async with connect(bot.url) as ws:
        session = await bot.next_session()
        await send_all(ws, [CONNECTED, START])
        await session.wait_events(2)
    await session.wait_closed()
    assert session.violations == ["message 2: connection closed (1000) without a stop message"]


async def test_echo_mode_sends_the_payload_back() -> None:
    async with StrictTwilioBot(echo=True) as bot, connect(bot.url) as ws:
        await send_all(ws, [CONNECTED, START, media(2, 1, 0, b"\x42" * 160)])
        async with asyncio.timeout(5):
            reply = json.loads(await ws.recv())
        assert reply == {
            "event": "media",
            "streamSid": SID,
            "media": {"payload": base64.b64encode(b"\x42" * 160).decode()},
        }


async def test_refusing_and_closing_at_once() -> None:
    async with StrictTwilioBot(refuse_status=503) as bot:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(bot.url):
                pass
        assert caught.value.response.status_code == 503
        bot.refuse_status = None
        bot.close_at_once = 4001
        async with connect(bot.url) as ws:
            async with asyncio.timeout(5):
                await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (4001, "closing at once")
        session = await bot.next_session()
        await session.wait_closed()
        assert session.violations == []
