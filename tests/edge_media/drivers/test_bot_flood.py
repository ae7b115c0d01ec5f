"""A bot that floods: the Twilio-stream driver over a real loopback WebSocket (PROTOCOL.md §6).

The bot is `StrictTwilioBot`; the floods are written straight to its transport as ready-made
frames, so the test spends its time in the gateway's read path, not in the bot's sends. The
caller side is the bridge's real `PlayoutLeg`, so what the flood leaves in memory is the
queue's own figures. How much a flood costs the other calls' pacing is measured by
bench/bot_flood.py, not asserted here: a timed assertion would fail on a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from edge_media.bridge.caller_media import PlayoutLeg
from edge_media.drivers import ws_inbound
from edge_media.drivers.base import CallInfo
from edge_media.drivers.inbound_budget import DEFAULT_LIMITS, BotLimits
from edge_media.drivers.twilio_driver import (
    REALTIME_WIRE_BYTES,
    TwilioStreamDriver,
    connect_twilio_stream,
)
from tests.support.twilio_bot import BotSession, StrictTwilioBot

pytestmark = pytest.mark.anyio

INFO = CallInfo(
    call_uuid="5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
    account_id="acc-7",
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
)
FRAME_PAYLOAD = "fn5+" * 54  # base64 of 162 bytes: about one 20 ms frame
FLOOD_MARKS = 100_000


@pytest.fixture
async def bot() -> AsyncIterator[StrictTwilioBot]:
    async with StrictTwilioBot() as server:
        yield server


async def open_call(
    bot: StrictTwilioBot, limits: BotLimits = DEFAULT_LIMITS
) -> tuple[TwilioStreamDriver, BotSession, PlayoutLeg]:
    leg = PlayoutLeg(logging.LoggerAdapter(logging.getLogger("test.flood")), capacity_seconds=60)
    driver = await connect_twilio_stream(bot.url, INFO, leg, 3.0, limits=limits)
    session = await bot.next_session()
    await session.wait_events(2)  # connected, start
    return driver, session, leg


def write_frames(session: BotSession, texts: Iterable[str]) -> None:
    """Unmasked server text frames, straight onto the bot's socket, in one write."""
    out = bytearray()
    for text in texts:
        data = text.encode()
        if len(data) < 126:
            out += struct.pack("!BB", 0x81, len(data))
        else:
            out += struct.pack("!BBH", 0x81, 126, len(data))
        out += data
    session.ws.transport.write(bytes(out))


async def until(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - the driver has no event to wait on
            await asyncio.sleep(0.01)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def media(stream_sid: str) -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": FRAME_PAYLOAD}}
    )


async def test_a_greeting_sent_ahead_passes_the_default_budget(bot: StrictTwilioBot) -> None:
    """20 s of audio in 20 ms messages, all at once: within the 30 s burst, nothing dropped."""
    driver, session, leg = await open_call(bot)
    write_frames(session, [media(driver.stream_sid)] * 1000)
    await until(lambda: driver.stats()["media_in"] == 1000)
    stats = driver.stats()
    assert (stats["budget_dropped_messages"], stats["budget_dropped_bytes"]) == (0, 0)
    assert leg.queue.buffered_ms == 1000 * 162 / 8
    await driver.stop("caller hung up")


async def test_audio_at_10x_real_time_is_cut_to_the_budget(
    bot: StrictTwilioBot, caplog: pytest.LogCaptureFixture
) -> None:
    # A short burst (one max-size message) so that one second of flood is well past it.
    limits = BotLimits(max_message_bytes=4096, burst_seconds=0.2)
    driver, session, leg = await open_call(bot, limits)
    text = media(driver.stream_sid)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="agera.drivers"):
        for _ in range(10):  # 10 s of audio in 1 s: 50 messages of 20 ms every 100 ms
            write_frames(session, [text] * 50)
            await asyncio.sleep(0.1)
        await until(
            lambda: driver.stats()["media_in"] + driver.stats()["budget_dropped_messages"] == 500
        )
    elapsed = loop.time() - began
    stats = driver.stats()
    admitted, dropped = stats["media_in"], stats["budget_dropped_messages"]
    rate, burst = limits.byte_rates(REALTIME_WIRE_BYTES)
    size = len(text)
    # At least the burst got through, at most the burst and 4x real time for the time it took.
    assert burst // size <= admitted <= (burst + rate * elapsed) / size
    assert dropped > 0 and stats["budget_dropped_bytes"] == dropped * size
    connection = driver.connection
    assert connection is not None and connection.inbound.pauses >= 1  # read more slowly too
    assert leg.queue.buffered_ms == admitted * 162 / 8  # only admitted audio is held
    assert warnings(caplog) == [
        f"[call {INFO.call_uuid}] bot at {bot.url} sends faster than its budget "
        f"({rate:.0f} bytes and 200 messages a second on average): messages over it are "
        "dropped unread; later drops are only counted"
    ]
    # The connection stays open and the call goes on: within budget again, audio plays.
    await asyncio.sleep(0.1)
    write_frames(session, [text])
    await until(lambda: driver.stats()["media_in"] == admitted + 1)
    assert driver.stats()["budget_dropped_messages"] == dropped
    await driver.stop("caller hung up")


async def test_100k_marks_are_cut_by_the_budget_then_the_cap_and_memory_stays_bounded(
    bot: StrictTwilioBot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shorter pauses than the node's, or reading 9 MB one chunk per 100 ms takes seconds.
    monkeypatch.setattr(ws_inbound, "PAUSE_SECONDS", 0.005)
    driver, session, leg = await open_call(bot)
    sid = driver.stream_sid
    names = [f"m{index}" for index in range(FLOOD_MARKS)]
    flood = [
        json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}}) for name in names
    ]
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="agera.drivers"):
        write_frames(session, flood)
        await until(
            lambda: (
                driver.stats()["marks_in"] + driver.stats()["budget_dropped_messages"]
                == FLOOD_MARKS
            )
        )
    elapsed = loop.time() - began
    stats = driver.stats()
    parsed = stats["marks_in"]  # the ones the budget let through to the JSON parser
    # The message burst (30 s x 50) and 200 a second for as long as the flood took to read.
    assert 1500 <= parsed <= 1500 + 200 * elapsed + 1
    assert stats["budget_dropped_messages"] == FLOOD_MARKS - parsed
    connection = driver.connection
    assert connection is not None and connection.inbound.pauses >= 1
    assert stats["marks_dropped"] == parsed - 1000
    assert leg.queue.pending_marks == 1000  # what the flood holds in memory: 1000 names
    assert leg.queue.buffered_ms == 0
    assert warnings(caplog) == [  # the cap is met first (mark 1001), the budget later (1501)
        f"[call {INFO.call_uuid}] dropped a bot mark (never echoed): 1000 marks are already "
        "pending; later drops are only counted",
        f"[call {INFO.call_uuid}] bot at {bot.url} sends faster than its budget "
        f"({4 * REALTIME_WIRE_BYTES:.0f} bytes and 200 messages a second on average): "
        "messages over it are dropped unread; later drops are only counted",
    ]
    # Still a working stream: a clear (once the budget has refilled a little) echoes exactly
    # the 1000 marks that were queued, the first ones the bot sent, in order.
    await asyncio.sleep(0.05)
    await session.send_clear()
    await session.wait_for(lambda: len(session.mark_echoes) >= 1000, "the clear's echoes")
    await asyncio.sleep(0.05)
    assert [name for name, _ in session.mark_echoes] == names[:1000]
    assert leg.queue.pending_marks == 0
    assert driver.stats()["marks_echoed"] == 1000
    await driver.stop("caller hung up")


async def test_a_message_over_the_size_limit_closes_1009_and_ends_as_a_bot_close(
    bot: StrictTwilioBot, caplog: pytest.LogCaptureFixture
) -> None:
    driver, session, leg = await open_call(bot, BotLimits(max_message_bytes=4096))
    big = json.dumps(
        {"event": "media", "streamSid": driver.stream_sid, "media": {"payload": "fn5+" * 1100}}
    )
    assert len(big) > 4096
    with caplog.at_level(logging.WARNING, logger="agera.drivers"):
        await session.send_raw(big)
        end = await asyncio.wait_for(driver.wait_closed(), 5)
    # The bridge hangs up on by_bot ends: the same path as a bot that closes the stream.
    assert end.by_bot and end.code == 1009
    assert end.reason.startswith("bot closed the stream (1009 ")
    await session.wait_closed()
    assert session.close_code == 1009
    assert driver.stats()["messages_too_big"] == 1
    assert leg.queue.buffered_ms == 0  # nothing of it was read
    assert warnings(caplog) == [
        f"[call {INFO.call_uuid}] bot at {bot.url} sent a message over the 4096-byte limit: "
        "the connection is closed with 1009"
    ]


async def test_a_bot_still_flooding_when_the_call_ends_is_stopped_within_the_close_timeout(
    bot: StrictTwilioBot,
) -> None:
    """Reading stays paused while we close: the flood is not read at full speed to find the
    bot's close frame; the close is bounded by the driver's close timeout, then aborted."""
    leg = PlayoutLeg(logging.LoggerAdapter(logging.getLogger("test.flood")), capacity_seconds=60)
    limits = BotLimits(max_message_bytes=4096, burst_seconds=0.2)
    driver = await connect_twilio_stream(bot.url, INFO, leg, 3.0, limits=limits, close_timeout=0.5)
    session = await bot.next_session()
    await session.wait_events(2)
    write_frames(session, [media(driver.stream_sid)] * 20_000)  # ~6 MB, more than TCP holds
    connection = driver.connection
    assert connection is not None
    await until(lambda: connection.inbound.pauses >= 1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await driver.stop("caller hung up")
    assert loop.time() - began < 3.0  # a bound, not a measurement
    end = await driver.wait_closed()
    assert (end.by_bot, end.reason, end.code) == (False, "caller hung up", 1000)
