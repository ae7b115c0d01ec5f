"""TwilioStreamDriver against StrictTwilioBot over a real loopback WebSocket.

The caller side is `RecordingLeg`, a stand-in for the bridge's leg that records what the driver
asks of it (the `CallerLeg` seam of drivers/base.py), with the same clear semantics as the
playout queue: it returns the marks still pending, the first with ``heard_ms`` played. One test
puts the bridge's real `PlayoutLeg` there instead and plays it out by hand, so ``played_ms`` is
followed from the bot's media to its echo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable

import pytest

from edge_media.bridge.caller_media import PlayoutLeg
from edge_media.drivers.base import BotEnd, BotUnavailable, CallInfo
from edge_media.drivers.twilio_driver import TwilioStreamDriver, connect_twilio_stream
from edge_media.rtp.playout import PlayedMark
from tests.edge_media.drivers.recording_leg import RecordingLeg
from tests.support.twilio_bot import BotSession, StrictTwilioBot

pytestmark = pytest.mark.anyio

INFO = CallInfo(
    call_uuid="0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
    account_id="acc-42",
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
    extra={"campaign": "spring"},
)
FRAMES = [bytes([(index * 7 + offset) % 256 for offset in range(160)]) for index in range(50)]


@pytest.fixture
async def bot() -> AsyncIterator[StrictTwilioBot]:
    async with StrictTwilioBot() as server:
        yield server


async def open_call(
    bot: StrictTwilioBot, *, close_timeout: float = 2.0, heard_ms: int = 0
) -> tuple[TwilioStreamDriver, BotSession, RecordingLeg]:
    leg = RecordingLeg(heard_ms)
    driver = await connect_twilio_stream(
        bot.url + "?token=t0k", INFO, leg, 3.0, close_timeout=close_timeout
    )
    session = await bot.next_session()
    await session.wait_events(2)  # connected, start
    return driver, session, leg


async def hang_up(driver: TwilioStreamDriver, session: BotSession) -> BotEnd:
    await driver.stop("caller hung up")
    end = await driver.wait_closed()
    await session.wait_closed()
    return end


# -- start and stop --------------------------------------------------------------------------


async def test_connected_and_start_tell_the_bot_about_the_call(bot: StrictTwilioBot) -> None:
    driver, session, _ = await open_call(bot)
    assert re.fullmatch(r"MZ[0-9a-f]{32}", driver.stream_sid)
    assert session.events() == ["connected", "start"]
    assert session.start == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": driver.stream_sid,
        "start": {
            "streamSid": driver.stream_sid,
            "accountSid": "acc-42",
            "callSid": "0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
            "tracks": ["inbound"],
            "customParameters": {
                "from_number": "+15005550006",
                "to_number": "+15005550001",
                "call_uuid": "0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
                "direction": "inbound",
                "account_id": "acc-42",
                "campaign": "spring",
            },
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    assert session.path == "/twilio?token=t0k"
    await hang_up(driver, session)
    assert session.violations == []


async def test_stop_is_the_last_message_then_close_1000(bot: StrictTwilioBot) -> None:
    driver, session, leg = await open_call(bot)
    driver.send_audio(FRAMES[0])
    end = await hang_up(driver, session)
    assert end == BotEnd(by_bot=False, reason="caller hung up", code=1000)
    assert session.events() == ["connected", "start", "media", "stop"]
    assert session.stop == {
        "event": "stop",
        "sequenceNumber": "3",
        "streamSid": driver.stream_sid,
        "stop": {"accountSid": "acc-42", "callSid": "0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b"},
    }
    assert (session.close_code, session.close_reason) == (1000, "caller hung up")
    assert session.violations == []
    # After stop nothing more goes out, and a late bot message reaches no one.
    driver.send_audio(FRAMES[1])
    driver.send_dtmf("1")
    driver.marks_played([PlayedMark("m", 20)])
    driver.on_text(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))
    assert leg.calls == []
    assert driver.stats()["media_out"] == 1
    # Stopping twice is harmless and keeps the first reason.
    await driver.stop("again")
    assert await driver.wait_closed() == end


# -- media, marks, clear, dtmf ---------------------------------------------------------------


async def test_caller_audio_goes_out_and_the_echo_comes_back() -> None:
    async with StrictTwilioBot(echo=True) as bot:
        driver, session, leg = await open_call(bot)
        for frame in FRAMES:
            driver.send_audio(frame)
        sent = b"".join(FRAMES)
        await leg.wait_for(lambda: len(leg.audio) >= len(sent))
        assert bytes(session.audio) == sent
        assert bytes(leg.audio) == sent
        assert [call for call, _ in leg.calls] == ["play"] * 50
        stats = driver.stats()
        assert {
            key: stats[key] for key in ("media_out", "media_in", "bytes_in", "dropped_out")
        } == {
            "media_out": 50,
            "media_in": 50,
            "bytes_in": 8000,
            "dropped_out": 0,
        }
        media = session.messages("media")
        assert [(m["media"]["chunk"], m["media"]["timestamp"]) for m in media[:3]] == [
            ("1", "0"),
            ("2", "20"),
            ("3", "40"),
        ]
        await hang_up(driver, session)
        assert session.violations == []


async def test_marks_and_clear_reach_the_leg_in_order_and_pending_marks_are_echoed(
    bot: StrictTwilioBot,
) -> None:
    driver, session, leg = await open_call(bot, heard_ms=140)
    await session.send_media(b"\x01" * 320)
    await session.send_mark("m1")
    await session.send_media(b"\x02" * 100)
    await session.send_mark("m2")
    await session.send_clear()
    await session.send_mark("m3")
    await leg.wait_for(lambda: len(leg.calls) >= 6)
    assert leg.calls == [
        ("play", b"\x01" * 320),
        ("mark", "m1"),
        ("play", b"\x02" * 100),
        ("mark", "m2"),
        ("clear", None),
        ("mark", "m3"),
    ]
    # PROTOCOL.md §5: the clear echoes the pending marks at once, in order, with what the leg says
    # was heard of each.
    await session.wait_for(lambda: len(session.mark_echoes) >= 2, "clear echoes")
    assert session.mark_played == [("m1", 140), ("m2", 0)]
    # m3 is echoed only when playout reaches it, with the played time playout reports.
    await asyncio.sleep(0.05)
    assert len(session.mark_echoes) == 2
    driver.marks_played([PlayedMark("m3", 1380)])
    await session.wait_for(lambda: len(session.mark_echoes) >= 3, "m3 echo")
    assert session.mark_played == [("m1", 140), ("m2", 0), ("m3", 1380)]
    assert session.messages("mark")[-1]["mark"] == {"name": "m3", "played_ms": 1380}
    stats = driver.stats()
    assert (stats["marks_in"], stats["marks_echoed"], stats["clears"]) == (3, 3, 1)
    await hang_up(driver, session)
    assert session.violations == []


async def test_played_ms_from_the_bots_media_through_playout_to_its_echo(
    bot: StrictTwilioBot,
) -> None:
    """The bridge's real playout leg in place of the recording one, ticked by hand: each echo
    says how much of the audio before it played, and a clear says what was heard."""
    log = logging.LoggerAdapter(logging.getLogger("test.playout"))
    leg = PlayoutLeg(log, capacity_seconds=60.0)
    driver = await connect_twilio_stream(bot.url, INFO, leg, 3.0)
    session = await bot.next_session()
    await session.wait_events(2)
    queue = leg.queue

    def tick(times: int) -> None:
        for _ in range(times):
            queue.next_frame()
            marks = queue.take_reached()
            if marks:
                driver.marks_played(marks)

    await session.send_media(b"\x01" * 700)  # 4 frames and 60 bytes: padded at the mark
    await session.send_mark("greeting")
    await session.send_mark("empty")  # nothing between the two marks
    await session.send_media(b"\x02" * 1600)
    await session.send_mark("answer")
    await session.send_media(b"\x03" * 800)
    await session.send_mark("unheard")
    await asyncio.wait_for(_until(lambda: queue.buffered_ms >= 400), 5)
    tick(5 + 3)  # the greeting, then 3 of the answer's 10 frames
    await session.wait_for(lambda: len(session.mark_echoes) >= 2, "greeting, empty")
    await session.send_clear()
    await session.wait_for(lambda: len(session.mark_echoes) >= 4, "the clear's echoes")
    assert session.mark_played == [("greeting", 100), ("empty", 0), ("answer", 60), ("unheard", 0)]
    assert session.marks_sent_ms == [
        ("greeting", 100),
        ("empty", 0),
        ("answer", 200),
        ("unheard", 100),
    ]
    await hang_up(driver, session)
    assert session.violations == []


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - the queue has no event to wait on
        await asyncio.sleep(0.005)


async def test_provider_ids_name_the_stream(bot: StrictTwilioBot) -> None:
    driver, session, _ = await open_call(bot)
    assert driver.provider_ids() == {"stream_sid": driver.stream_sid}
    await hang_up(driver, session)


async def test_dtmf_goes_to_the_bot(bot: StrictTwilioBot) -> None:
    driver, session, _ = await open_call(bot)
    driver.send_audio(FRAMES[0])
    driver.send_dtmf("5")
    driver.send_audio(FRAMES[1])
    driver.send_dtmf("#")
    await session.wait_events(6)
    assert session.digits == ["5", "#"]
    assert session.messages("dtmf")[0] == {
        "event": "dtmf",
        "sequenceNumber": "3",
        "streamSid": driver.stream_sid,
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert driver.stats()["dtmf_out"] == 2
    await hang_up(driver, session)
    assert session.violations == []


async def test_junk_from_the_bot_is_ignored_and_logged_once_per_kind(
    bot: StrictTwilioBot, caplog: pytest.LogCaptureFixture
) -> None:
    driver, session, leg = await open_call(bot)
    with caplog.at_level(logging.WARNING, logger="agera.drivers.twilio"):
        await session.send_raw(b"\x00\x01")
        await session.send_raw("not json")
        await session.send_raw(
            json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": "AAAA"}})
        )
        await session.send_raw(b"\x02")
        await session.send_media(b"\x55" * 160)
        await leg.wait_for(lambda: len(leg.calls) >= 1)
    assert leg.calls == [("play", b"\x55" * 160)]  # the call went on
    assert driver.stats()["ignored"] == 4
    call = f"[call {INFO.call_uuid}]"
    # Only warnings: another test may have left an agera logger at INFO (it logs the open).
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"{call} ignored a bot message (binary): binary frame of 2 bytes; later ones of this "
        "kind are only counted",
        f"{call} ignored a bot message (bad_json): invalid JSON (JSONDecodeError); later ones "
        "of this kind are only counted",
        f"{call} ignored a bot message (wrong_stream): streamSid 'MZother'; later ones of this "
        "kind are only counted",
    ]
    await hang_up(driver, session)
    assert session.violations == []


async def test_pong_round_trip_is_in_the_stats(bot: StrictTwilioBot) -> None:
    driver, session, _ = await open_call(bot)
    connection = driver.connection
    assert connection is not None
    async with asyncio.timeout(5):
        while driver.stats()["bot_rtt_ms"] is None:  # noqa: ASYNC110 - pongs have no event
            await asyncio.sleep(0.01)
    stats = driver.stats()
    assert stats["bot_rtt_ms"] == connection.median_rtt_ms
    assert stats["bot_rtt_last_ms"] == connection.last_rtt_ms
    assert 0 <= stats["bot_rtt_ms"] < 5000
    await hang_up(driver, session)


# -- the bot ends it -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1000, "goodbye", "bot closed the stream (1000 goodbye)"),
        (1011, "", "bot closed the stream (1011)"),
        (4400, "bad start", "bot closed the stream (4400 bad start)"),
    ],
)
async def test_bot_closing_ends_the_stream_by_bot(
    bot: StrictTwilioBot, code: int, reason: str, expected: str
) -> None:
    driver, session, _ = await open_call(bot)
    await session.close(code, reason)
    async with asyncio.timeout(5):
        end = await driver.wait_closed()
    assert end == BotEnd(by_bot=True, reason=expected, code=code)
    # A stop after the bot left sends nothing and changes nothing.
    await driver.stop("caller hung up")
    assert await driver.wait_closed() == end
    assert session.events() == ["connected", "start"]


async def test_bot_crashing_ends_the_stream_by_bot(bot: StrictTwilioBot) -> None:
    driver, session, _ = await open_call(bot)
    session.abort()
    async with asyncio.timeout(5):
        end = await driver.wait_closed()
    assert end.by_bot is True
    assert end.code == 1006
    assert end.reason.startswith("bot closed the stream (1006 connection lost")


async def test_bot_that_accepts_then_closes_at_once() -> None:
    async with StrictTwilioBot(close_at_once=1011) as bot:
        driver = await connect_twilio_stream(bot.url, INFO, RecordingLeg(), 3.0)
        async with asyncio.timeout(5):
            end = await driver.wait_closed()
        assert end == BotEnd(
            by_bot=True, reason="bot closed the stream (1011 closing at once)", code=1011
        )


# -- the bot cannot be reached ---------------------------------------------------------------


async def test_refused_connection_is_bot_unavailable() -> None:
    async with StrictTwilioBot() as bot:
        url = bot.url
    with pytest.raises(BotUnavailable) as caught:
        await connect_twilio_stream(url + "?token=secret", INFO, RecordingLeg(), 3.0)
    assert str(caught.value) == f"cannot connect to bot at {url}: Connection refused"


async def test_http_503_is_bot_unavailable() -> None:
    async with StrictTwilioBot(refuse_status=503) as bot:
        with pytest.raises(BotUnavailable) as caught:
            await connect_twilio_stream(bot.url, INFO, RecordingLeg(), 3.0)
        assert str(caught.value) == f"bot at {bot.url} refused the WebSocket upgrade: HTTP 503"
        assert bot.sessions == []


async def test_a_bot_that_never_answers_is_bot_unavailable_within_the_timeout() -> None:
    async with StrictTwilioBot(handshake_delay=10.0) as bot:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(BotUnavailable) as caught:
            await connect_twilio_stream(bot.url, INFO, RecordingLeg(), 0.3)
        assert loop.time() - began < 3.0  # a bound, not a measurement
        assert str(caught.value) == f"bot at {bot.url} did not answer within 0.3 s"


# -- a bot that stops reading ----------------------------------------------------------------


ONE_SECOND = b"\x33" * 8000  # one second per message fills the buffers quickly


def fill_until_the_cap_drops(driver: TwilioStreamDriver) -> None:
    """Caller audio to a bot that stopped reading, until the write cap drops a message."""
    for _ in range(20_000):
        driver.send_audio(ONE_SECOND)
        if driver.stats()["dropped_out"]:
            return
    pytest.fail("caller audio was buffered without limit for a bot that does not read")


async def test_a_bot_that_does_not_read_gets_drops_not_an_endless_buffer(
    bot: StrictTwilioBot, caplog: pytest.LogCaptureFixture
) -> None:
    driver, session, _ = await open_call(bot, close_timeout=0.5)
    connection = driver.connection
    assert connection is not None
    session.stop_reading()
    with caplog.at_level(logging.WARNING, logger="agera.drivers.twilio"):
        fill_until_the_cap_drops(driver)
        for _ in range(10):
            driver.send_audio(ONE_SECOND)
    assert driver.stats()["dropped_out"] == 11
    assert connection.write_buffer_size < 200 * 1024
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"[call {INFO.call_uuid}] bot at {bot.url} is not reading: caller audio is being dropped"
    ]
    # Stopping is still bounded: the bot never reads the stop, the close times out and aborts.
    loop = asyncio.get_running_loop()
    began = loop.time()
    await driver.stop("caller hung up")
    assert loop.time() - began < 3.0  # a bound, not a measurement
    assert await driver.wait_closed() == BotEnd(by_bot=False, reason="caller hung up", code=1000)


async def test_a_lagging_bot_still_gets_stop_when_it_catches_up(bot: StrictTwilioBot) -> None:
    """The write cap drops caller audio, never the `stop` that ends the stream."""
    driver, session, _ = await open_call(bot, close_timeout=5.0)
    session.stop_reading()
    fill_until_the_cap_drops(driver)
    stopping = asyncio.ensure_future(driver.stop("caller hung up"))
    await asyncio.sleep(0.05)
    session.resume_reading()  # the bot catches up with its backlog
    await stopping
    await session.wait_closed()
    assert session.stop is not None
    assert session.events()[-1] == "stop"
    assert session.close_code == 1000
