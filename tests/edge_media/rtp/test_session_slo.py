"""The wire's share of a call's ``stats.slo`` (RtpSession.slo_figures), tick by tick.

A real `RtpSession` on a 127.0.0.1 port, registered with a `Pacer` whose ticks the test runs by
hand (times are the pacer's own, so nothing depends on how fast the machine is): bot audio
gaps mid-utterance are underruns and pauses between utterances are not; a clear is counted
and timed to the packets of the tick after it; audio pushed into an idle queue is timed to its
first packet; the pacing window covers the ticks this stream was on the pacer and no others.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator

import pytest

from edge_media.rtp.pacer import Pacer
from edge_media.rtp.playout import PlayoutQueue
from edge_media.rtp.ports import PortAllocator
from edge_media.rtp.session import DISCARD, UNDERRUN_MAX_TICKS, RtpParams, RtpSession

pytestmark = pytest.mark.anyio

LOCALHOST = "127.0.0.1"
INTERVAL = 0.020
FRAME = b"\x11" * 160


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def allocator() -> PortAllocator:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCALHOST, 0))
        base = min(probe.getsockname()[1] & ~1, 65536 - 32)
    return PortAllocator(base, base + 31, rng=random.Random(3))


class Wire:
    """A session on the pacer; `tick` runs one 20 ms tick and lets its after-tick work run."""

    def __init__(self, session: RtpSession, pacer: Pacer, queue: PlayoutQueue) -> None:
        self.session = session
        self.pacer = pacer
        self.queue = queue
        self.index = 0
        self.sent: list[bytes] = []

    async def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.index += 1
            for _, _, packet in self.pacer.tick(self.index * INTERVAL):
                self.sent.append(packet[12:])
            await asyncio.sleep(0)  # the after-tick callbacks (marks, figures)

    def bot_says(self, frames: int) -> None:
        """What `PlayoutLeg.play` does with a bot's audio message."""
        if self.queue.idle:
            self.queue.audio_since = time.monotonic()
        self.queue.push_media(FRAME * frames)


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    pacer = Pacer(0.0, INTERVAL, max_catch_up=1000)
    session = await RtpSession.open(allocator(), LOCALHOST, pacer, rng=random.Random(5))
    queue = PlayoutQueue()
    session.connect(queue, DISCARD)
    session.apply(RtpParams(payload_type=0, remote_address=LOCALHOST, remote_port=9))
    try:
        yield Wire(session, pacer, queue)
    finally:
        session.close()


async def test_a_clean_call_has_no_underruns_and_times_each_talkspurt(wire: Wire) -> None:
    await wire.tick(5)  # silence before the bot speaks: not a gap
    wire.bot_says(10)
    await wire.tick(10)
    await wire.tick(UNDERRUN_MAX_TICKS + 5)  # the bot waits for the caller: a pause
    wire.bot_says(3)
    await wire.tick(5)
    figures = wire.session.slo_figures()
    assert figures["underruns"] == 0 and figures["underrun_ms"] == 0
    assert figures["bot_to_wire"].count == 2  # both talkspurts, timed once each
    assert figures["clears"] == 0 and figures["clear_to_wire"].count == 0
    assert wire.sent.count(FRAME) == 13


async def test_a_gap_mid_utterance_is_an_underrun_of_its_length(wire: Wire) -> None:
    wire.bot_says(5)
    await wire.tick(5)
    await wire.tick(3)  # the bot's next audio is late: three ticks of silence
    wire.bot_says(5)
    await wire.tick(5)
    await wire.tick(1)
    wire.bot_says(2)  # and once more, one tick late
    await wire.tick(4)
    figures = wire.session.slo_figures()
    assert figures["underruns"] == 2
    assert figures["underrun_ms"] == 4 * 20
    assert figures["bot_to_wire"].count == 3  # every resumption reached an idle queue


async def test_a_clear_is_timed_and_the_silence_after_it_is_no_underrun(wire: Wire) -> None:
    wire.bot_says(20)
    await wire.tick(5)
    wire.queue.clear()
    wire.session.playout_cleared()  # what CallerMedia does on the bot's clear
    assert wire.session.slo_figures()["clear_to_wire"].count == 0  # not before the next tick
    await wire.tick(2)
    wire.bot_says(3)  # the bot answers the caller soon after
    await wire.tick(5)
    figures = wire.session.slo_figures()
    assert figures["clears"] == 1
    assert figures["clear_to_wire"].count == 1
    assert figures["underruns"] == 0
    assert wire.sent.count(FRAME) == 8  # 5 before the clear, 3 after: nothing stale


async def test_audio_queued_before_the_queue_played_is_not_a_bot_to_wire_sample(
    wire: Wire,
) -> None:
    greeting = PlayoutQueue()
    greeting.audio_since = 1.0  # pushed long before (during ringing, on the monotonic clock)
    greeting.push_media(FRAME * 3)
    wire.session.connect(greeting, DISCARD)
    wire.queue = greeting
    await wire.tick(5)
    assert wire.session.slo_figures()["bot_to_wire"].count == 0


async def test_the_pacing_window_is_the_ticks_this_stream_was_on_the_pacer() -> None:
    pacer = Pacer(0.0, INTERVAL)
    for _ in range(100):
        pacer.departed(0.008)  # the node, before this call: 8 ms late
    session = await RtpSession.open(allocator(), LOCALHOST, pacer, rng=random.Random(6))
    try:
        assert session.slo_figures()["pacing"].count == 0
        session.apply(RtpParams(payload_type=0, remote_address=LOCALHOST, remote_port=9))
        for _ in range(99):
            pacer.departed(0.0004)
        pacer.departed(0.003)
        window = session.slo_figures()["pacing"]
        assert window.count == 100
        assert 0.4 <= window.percentile_ms(0.99) <= 0.45  # the 8 ms of before are not in it
        session.apply(
            RtpParams(payload_type=0, remote_address=LOCALHOST, remote_port=9, sends=False)
        )
        pacer.departed(0.050)  # on hold: not this call's
        assert session.slo_figures()["pacing"].count == 100
    finally:
        session.close()
