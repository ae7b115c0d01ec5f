"""The caller side of a bridged call, the one seam between the caller's wire and the bot.

Why one object: a call's caller side is a playout queue the bot writes into, a wire that plays
that queue on the shared media clock and hears the caller (a SIP leg's `RtpSession` today, a
provider's WebSocket next), and a bot that gets the caller's frames, digits and the marks
playout reached. `CallerMedia` holds those together: the wire is bound once, when the call has
media; a bot is attached with one call and detached with one call; redirects attach the next
one. The wire sees only `MediaSink` and a `PlayoutQueue`, the bot sees only `CallerLeg` and
`BotDriver` (`drivers/base.py`), so each packet crosses each layer once in each direction:

- caller → bot: wire → `CallerMedia.on_frames` → `BotDriver.send_audio`.
- bot → caller: `BotDriver` → `PlayoutLeg.play` (the queue); the pacer tick takes a frame from
  the queue; the marks it reached come back the loop turn after the packet left, through
  `CallerMedia.on_marks` → `BotDriver.marks_played`.

Each bot gets a `PlayoutLeg` of its own, before it is attached: a new bot's greeting queues up
while the old one still plays, and `attach` makes the new queue the one the wire plays, so the
old bot's unplayed audio (and its marks) go with it.

Two of the call's media figures (bridge/call_slo.py) are taken here, where both directions
cross: `CallerMedia.on_frames` times each caller packet from its hand-over by the wire to the
return of the driver's write to the bot's socket (``to_bot``), and `PlayoutLeg.play` stamps
bot audio that reaches an idle queue, which the wire times to its first packet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from edge_media.drivers.base import BotDriver
from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.latency import LatencyHistogram
from edge_media.rtp.playout import PlayedMark, PlayoutQueue
from edge_media.rtp.session import MediaSink

__all__ = ["CallerMedia", "CallerWire", "PlayoutLeg"]

_monotonic = time.monotonic
# One caller packet in this many is timed to the bot's socket (``to_bot``): two clock reads and a
# histogram bucket cost about as much as the rest of the hand-over, and a systematic sample of
# 12.5 packets a second still gives a 30 s call ~375 samples for its p99.
TO_BOT_SAMPLE_EVERY = 4


class CallerWire(Protocol):
    """What carries the caller's audio: plays a queue, hands what arrives to a sink."""

    def connect(self, playout: PlayoutQueue, sink: MediaSink) -> None: ...

    def disconnect(self) -> None: ...

    def playout_cleared(self) -> None:
        """The bot cleared its queue (barge-in): a wire whose far end buffers our audio (a
        provider's stream) tells it to drop that audio too."""


class PlayoutLeg:
    """One bot's audio toward the caller: the `CallerLeg` its driver writes into."""

    def __init__(self, log: logging.LoggerAdapter, *, capacity_seconds: float) -> None:  # type: ignore[type-arg]
        self.queue = PlayoutQueue(capacity_seconds=capacity_seconds)
        self._log = log
        self._capacity = capacity_seconds
        self.on_clear: Callable[[], None] | None = None  # set while this leg is the one played

    def play(self, ulaw: bytes) -> None:
        queue = self.queue
        if queue.idle:  # a talkspurt starts: the wire times it to its first packet
            queue.audio_since = _monotonic()
        queue.push_media(ulaw)
        if queue.take_overflow_warning():
            self._log.warning(
                "bot audio over the %.0f s playout cap: the excess is dropped "
                "(a bot should send audio about as fast as it plays)",
                self._capacity,
            )

    def mark(self, name: str) -> None:
        self.queue.push_mark(name)

    def clear(self) -> list[PlayedMark]:
        marks = self.queue.clear()
        if self.on_clear is not None:
            self.on_clear()
        return marks


class CallerMedia:
    """The call's caller side: `bind` the wire once, `attach`/`detach` bots."""

    __slots__ = ("_driver", "_leg", "_until_sample", "_wire", "to_bot")

    def __init__(self) -> None:
        self._wire: CallerWire | None = None
        self._driver: BotDriver | None = None
        self._leg: PlayoutLeg | None = None
        # Caller packet → bot socket write, for packets handed to a bot (the record's
        # ``slo.rtp_to_bot_ms_*``): the wire calls `on_frames` from its read callback, and the
        # drivers write to their socket before `send_audio` returns (an ElevenLabs agent that
        # takes PCM gets 40 ms messages: the wait for a message to fill is not in it).
        self.to_bot = LatencyHistogram()
        self._until_sample = 1  # the first packet is timed, then every TO_BOT_SAMPLE_EVERY-th

    def bind(self, wire: CallerWire) -> None:
        """The call has media (after the answer): play the current bot, hear the caller."""
        self._wire = wire
        self._connect()

    def attach(self, driver: BotDriver, leg: PlayoutLeg) -> None:
        """Make ``driver`` the call's bot: its queue plays, caller media and marks go to it."""
        if self._leg is not None:
            self._leg.on_clear = None  # the old bot's clears no longer reach the wire
        self._driver, self._leg = driver, leg
        leg.on_clear = self._cleared
        self._connect()

    def detach(self) -> None:
        """No bot: caller media is dropped until the next `attach` (the queue plays on)."""
        self._driver = None
        if self._wire is not None:
            self._wire.disconnect()

    def hold(self, ulaw: bytes) -> None:
        """Queue ``ulaw`` after what the current queue holds (the hold tone while no bot is
        attached); the next `attach` replaces the queue and so ends it."""
        if self._leg is not None:
            self._leg.play(ulaw)

    def _cleared(self) -> None:
        if self._wire is not None:
            self._wire.playout_cleared()

    def _connect(self) -> None:
        wire, leg = self._wire, self._leg
        if wire is not None and leg is not None and self._driver is not None:
            wire.connect(leg.queue, self)

    # -- MediaSink: from the wire -----------------------------------------------------------

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        driver = self._driver
        if driver is None:
            return
        send = driver.send_audio
        self._until_sample -= 1
        if self._until_sample:
            for frame in frames:
                send(frame)
            return
        self._until_sample = TO_BOT_SAMPLE_EVERY
        arrived = _monotonic()
        for frame in frames:
            send(frame)
        self.to_bot.record(_monotonic() - arrived)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        """RFC 4733 digits, and SIP INFO ones (`SipCall.deliver_info_digit` sends them here)."""
        driver = self._driver
        if driver is None:
            return
        for digit in digits:
            driver.send_dtmf(digit.digit)

    def on_marks(self, marks: list[PlayedMark]) -> None:
        driver = self._driver
        if driver is not None:
            driver.marks_played(marks)
