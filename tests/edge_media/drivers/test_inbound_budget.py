"""The inbound budget and the mark cap on literal sequences: sizes and times in, decisions out.

No socket and no clock: `TokenBucket` and `InboundBudget` are told the time, the Twilio
driver's mark cap is fed literal bot JSON through `on_text` with a `RecordingLeg` behind it,
and `InboundGate`'s pauses run on a fake loop and transport.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from edge_media.drivers.base import CallInfo
from edge_media.drivers.inbound_budget import (
    DEFAULT_LIMITS,
    BotLimits,
    InboundBudget,
    TokenBucket,
    json_audio_wire_rate,
)
from edge_media.drivers.twilio_driver import REALTIME_WIRE_BYTES, TwilioStreamDriver
from edge_media.drivers.twilio_stream import TwilioStreamProtocol
from edge_media.drivers.ws_inbound import (
    NO_INBOUND_FIGURES,
    PAUSE_SECONDS,
    SLICE_BYTES,
    InboundGate,
)
from edge_media.rtp.playout import PlayedMark
from shared.settings import Settings
from tests.edge_media.drivers.recording_leg import RecordingLeg

INFO = CallInfo(
    call_uuid="c-1", account_id="acc-1", direction="inbound", from_number="+1", to_number="+2"
)

# -- TokenBucket -----------------------------------------------------------------------------


def test_a_bucket_starts_full_refills_at_its_rate_and_never_beyond_its_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5.0)
    assert [bucket.take(1, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(1, 0.05) is False  # half a token
    assert bucket.take(1, 0.1) is True  # one token, 0.1 s at 10 a second
    assert bucket.available(100.0) == 5.0  # idle for long: full, not more
    assert bucket.take(5, 100.0) is True
    assert bucket.take(0.5, 99.0) is False  # an earlier time refills nothing


def test_a_refused_take_takes_nothing() -> None:
    bucket = TokenBucket(rate=1.0, capacity=10.0)
    assert bucket.take(8, 0.0) is True
    assert bucket.take(3, 0.0) is False  # 2 held
    assert bucket.take(2, 0.0) is True  # still 2: the refused take left them


def test_retune_keeps_what_is_held_up_to_the_new_depth() -> None:
    bucket = TokenBucket(rate=1.0, capacity=100.0)
    assert bucket.take(40, 0.0)
    bucket.retune(10.0, 50.0, 1.0)  # 61 held at t=1, cut to 50
    assert bucket.available(1.0) == 50.0
    assert bucket.take(50, 1.0)
    assert bucket.available(2.0) == 10.0  # the new rate


@pytest.mark.parametrize(("rate", "capacity"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 5.0)])
def test_a_bucket_needs_a_positive_rate_and_capacity(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TokenBucket(rate, capacity)


# -- InboundBudget ---------------------------------------------------------------------------


def budget() -> InboundBudget:
    return InboundBudget(
        bytes_per_second=100.0, burst_bytes=300.0, messages_per_second=2.0, burst_messages=3.0
    )


def test_messages_over_either_bucket_are_dropped_and_counted_and_charge_nothing() -> None:
    inbound = budget()
    # (size, time, admitted); the buckets' contents after each step in the comments.
    sequence = [
        (100, 0.0, True),  # messages 2, bytes 200
        (100, 0.0, True),  # 1, 100
        (50, 0.0, True),  # 0, 50
        (10, 0.0, False),  # no message token: dropped
        (10, 0.5, True),  # 1 - 1 = 0, 50 + 50 - 10 = 90
        (100, 1.0, True),  # 0, 90 + 50 - 100 = 40
        (100, 1.0, False),  # no message token
        (200, 2.0, False),  # 2 message tokens, but 40 + 100 = 140 bytes < 200
        (140, 2.0, True),  # the refused 200 took nothing: 140 are still there
    ]
    assert [inbound.admit(size, at) for size, at, _ in sequence] == [
        admitted for _, _, admitted in sequence
    ]
    assert (inbound.dropped_messages, inbound.dropped_bytes) == (3, 10 + 100 + 200)


def test_one_drop_warning_per_connection() -> None:
    inbound = budget()
    assert inbound.take_drop_warning() is False  # nothing dropped yet
    for _ in range(10):
        inbound.admit(1, 0.0)
    assert [inbound.take_drop_warning() for _ in range(3)] == [True, False, False]


def test_retuned_bytes_apply_from_then_on() -> None:
    inbound = budget()
    assert inbound.admit(300, 0.0)
    inbound.retune_bytes(1000.0, 2000.0, 0.0)
    assert inbound.admit(500, 0.5) is True  # 500 bytes back at the new rate
    assert (inbound.bytes_per_second, inbound.burst_bytes) == (1000.0, 2000.0)


# -- BotLimits -------------------------------------------------------------------------------


def test_the_default_twilio_budget_is_4x_real_time_with_a_30_s_burst() -> None:
    assert json_audio_wire_rate(8000) == pytest.approx(8000 * 4 / 3 + 50 * 200)
    assert json_audio_wire_rate(8000) == REALTIME_WIRE_BYTES
    inbound = DEFAULT_LIMITS.budget(REALTIME_WIRE_BYTES)
    assert inbound.bytes_per_second == pytest.approx(4 * REALTIME_WIRE_BYTES)
    assert inbound.burst_bytes == pytest.approx(30 * REALTIME_WIRE_BYTES)
    assert inbound.messages_per_second == 200.0
    # 30 s of 20 ms media messages arrive at once and all pass: a greeting sent ahead.
    message = len(
        json.dumps(
            {"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "A" * 216}}
        )
    )
    assert [inbound.admit(message, 0.0) for _ in range(1500)] == [True] * 1500
    assert inbound.admit(message, 0.0) is False


def test_the_byte_burst_holds_at_least_one_largest_message() -> None:
    limits = BotLimits(max_message_bytes=65536, burst_seconds=1.0)
    assert limits.byte_rates(1000.0) == (4000.0, 65536)
    inbound = limits.budget(1000.0)
    assert inbound.admit(65536, 0.0) is True


def test_limits_come_from_the_settings() -> None:
    settings = Settings.load(
        {
            "AGERA_BOT_MAX_MESSAGE_BYTES": "65536",
            "AGERA_BOT_INBOUND_REALTIME_FACTOR": "2",
            "AGERA_BOT_INBOUND_BURST_SECONDS": "10",
            "AGERA_BOT_INBOUND_MESSAGES_PER_SECOND": "100",
            "AGERA_BOT_MAX_PENDING_MARKS": "7",
            "AGERA_BOT_MAX_MARK_NAME_CHARS": "16",
        }
    )
    assert BotLimits.from_settings(settings) == BotLimits(65536, 2.0, 10.0, 100.0, 7, 16)
    assert BotLimits.from_settings(Settings.load({})) == DEFAULT_LIMITS


# -- the mark cap (Twilio-stream driver, no socket) ------------------------------------------


def driver(leg: RecordingLeg, limits: BotLimits = DEFAULT_LIMITS) -> TwilioStreamDriver:
    """A streaming driver with no socket: what it would send goes nowhere."""
    protocol = TwilioStreamProtocol("MZ1", "c-1", "acc-1", INFO)
    protocol.connected()
    protocol.start()
    return TwilioStreamDriver(protocol, leg, limits=limits)


def mark(name: str) -> str:
    return json.dumps({"event": "mark", "mark": {"name": name}})


CLEAR = json.dumps({"event": "clear"})


def test_marks_over_the_cap_or_with_long_names_are_dropped_counted_and_logged_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leg = RecordingLeg()
    bot = driver(leg, BotLimits(max_pending_marks=2, max_mark_name_chars=5))
    with caplog.at_level(logging.WARNING, logger="agera.drivers.twilio"):
        for text in (mark("a"), mark("b"), mark("c"), mark("sixsix"), mark("d")):
            bot.on_text(text)
        bot.marks_played([PlayedMark("a", 0)])  # playout reached a: one slot free
        bot.on_text(mark("e"))
        bot.on_text(mark("f"))  # b and e pending: over the cap again
        bot.on_text(CLEAR)  # hands back b and e
        bot.on_text(mark("g"))
        bot.on_text(mark("12345"))  # 5 characters: the longest allowed
    assert leg.calls == [
        ("mark", "a"),
        ("mark", "b"),
        ("mark", "e"),
        ("clear", None),
        ("mark", "g"),
        ("mark", "12345"),
    ]
    stats = bot.stats()
    assert (stats["marks_in"], stats["marks_dropped"]) == (9, 4)
    assert [r.getMessage() for r in caplog.records] == [
        "[call c-1] dropped a bot mark (never echoed): 2 marks are already pending; "
        "later drops are only counted",
        "[call c-1] dropped a bot mark (never echoed): its name is over 5 characters; "
        "later drops are only counted",
    ]


def test_the_default_cap_is_1000_pending_marks_of_256_characters() -> None:
    leg = RecordingLeg()
    bot = driver(leg)
    bot.on_text(mark("x" * 257))
    bot.on_text(mark("x" * 256))
    for index in range(1500):
        bot.on_text(mark(f"m{index}"))
    assert len(leg.pending) == 1000
    assert leg.pending[:2] == ["x" * 256, "m0"] and leg.pending[-1] == "m998"
    assert bot.stats()["marks_dropped"] == 1 + 501


# -- InboundGate: the budget on a connection's read path (fake loop and transport) -----------


class FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(delay, callback))
        return self.timers[-1]


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closing = False

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return self.closing


def gate(loop: FakeLoop) -> InboundGate:
    return InboundGate(loop, budget(), lambda: "[call c-1] bot")  # type: ignore[arg-type]


def test_the_first_drop_pauses_reading_once_until_the_timer_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, transport = FakeLoop(), FakeTransport()
    inbound = gate(loop)
    with caplog.at_level(logging.WARNING, logger="agera.drivers.ws"):
        admitted = [inbound.admit(10, transport) for _ in range(5)]  # type: ignore[arg-type]
    assert admitted == [True, True, True, False, False]  # 3 messages of burst
    assert transport.calls == ["pause"]  # the second drop, already paused, pauses nothing
    assert [(t.delay, t.cancelled) for t in loop.timers] == [(PAUSE_SECONDS, False)]
    assert len(caplog.records) == 1
    loop.timers[0].callback()
    assert transport.calls == ["pause", "resume"]
    loop.now = 0.5  # one message token back
    assert inbound.admit(10, transport) is True  # type: ignore[arg-type]
    assert inbound.admit(10, transport) is False  # type: ignore[arg-type]
    assert transport.calls == ["pause", "resume", "pause"] and inbound.pauses == 2
    assert inbound.figures() == {
        "budget_dropped_messages": 3,
        "budget_dropped_bytes": 30,
        "messages_too_big": 0,
    }


def test_a_lost_connection_cancels_the_pause_and_a_closing_one_is_not_paused() -> None:
    loop, transport = FakeLoop(), FakeTransport()
    inbound = gate(loop)
    for _ in range(4):
        inbound.admit(10, transport)  # type: ignore[arg-type]
    inbound.resume()  # early: the timer is cancelled
    assert transport.calls == ["pause", "resume"] and loop.timers[0].cancelled
    inbound.admit(10, transport)  # type: ignore[arg-type]
    inbound.lost()
    assert loop.timers[1].cancelled and transport.calls == ["pause", "resume", "pause"]
    transport.closing = True
    inbound.admit(10, transport)  # type: ignore[arg-type]
    assert transport.calls == ["pause", "resume", "pause"]  # a closing transport: no pause


def test_without_a_budget_everything_is_admitted_and_nothing_paused() -> None:
    loop, transport = FakeLoop(), FakeTransport()
    inbound = InboundGate(loop, None, lambda: "x")  # type: ignore[arg-type]
    assert all(inbound.admit(1 << 20, transport) for _ in range(1000))  # type: ignore[arg-type]
    assert transport.calls == [] and inbound.figures() == NO_INBOUND_FIGURES


def test_a_pause_holds_the_rest_of_a_read_unparsed_until_it_ends() -> None:
    """Each slice stands for one message: 3 pass, the 4th pauses reading, the 5th is held."""
    loop, transport = FakeLoop(), FakeTransport()
    inbound = InboundGate(
        loop,  # type: ignore[arg-type]
        InboundBudget(
            bytes_per_second=1e9, burst_bytes=1e9, messages_per_second=2.0, burst_messages=3.0
        ),
        lambda: "bot",
    )
    parsed: list[tuple[bytes, bool]] = []

    def receive(data: bytes) -> None:
        parsed.append((data[:1], inbound.admit(len(data), transport)))  # type: ignore[arg-type]

    read = b"".join(bytes([index]) * SLICE_BYTES for index in range(5))
    inbound.feed(read, receive)
    assert parsed == [(b"\x00", True), (b"\x01", True), (b"\x02", True), (b"\x03", False)]
    assert transport.calls == ["pause"]
    inbound.feed(b"\x05" * 10, receive)  # a read that came before the pause took effect
    assert len(parsed) == 4  # held behind the rest, in order
    loop.now = 1.0  # two message tokens back
    loop.timers[0].callback()
    assert parsed[4:] == [(b"\x04", True), (b"\x05", True)]
    assert transport.calls == ["pause", "resume"]
    inbound.feed(b"\x06", receive)  # not paused: straight through
    assert parsed[6:] == [(b"\x06", False)]  # no token left: dropped, and paused again
    assert transport.calls == ["pause", "resume", "pause"]
