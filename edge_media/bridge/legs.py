"""The two adapters that join a SIP leg's media to a bot driver, one per direction.

`PlayoutLeg` is the `CallerLeg` a driver writes bot audio, marks and clears into. It owns the
call's `PlayoutQueue` from the moment the bot connects, which is before the SIP answer: a bot
that greets at once has its first words queued, and the pacer plays them from the first tick
after the 200 OK. `attach` hands that same queue to the leg's `RtpSession`, so nothing is copied.

`BotSink` is the `MediaSink` the RTP receive path calls: each 20 ms frame and each digit goes
straight to the driver's sync send, with no task or queue in between (DESIGN.md §6: RTP in →
bot `media` p99 ≤ 1 ms).
"""

from __future__ import annotations

import logging

from edge_media.bridge.playout import PlayoutQueue
from edge_media.drivers.base import BotDriver, PlayedMark
from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.session import RtpSession

__all__ = ["BotSink", "PlayoutLeg"]


class PlayoutLeg:
    """Bot audio toward the caller: a playout queue, later attached to the call's RTP session."""

    def __init__(self, log: logging.LoggerAdapter, *, capacity_seconds: float) -> None:  # type: ignore[type-arg]
        self.queue = PlayoutQueue(capacity_seconds=capacity_seconds)
        self._log = log
        self._capacity = capacity_seconds

    def play(self, ulaw: bytes) -> None:
        self.queue.push_media(ulaw)
        if self.queue.take_overflow_warning():
            self._log.warning(
                "bot audio over the %.0f s playout cap: the excess is dropped "
                "(a bot should send audio about as fast as it plays)",
                self._capacity,
            )

    def mark(self, name: str) -> None:
        self.queue.push_mark(name)

    def clear(self) -> list[PlayedMark]:
        return self.queue.clear()

    def attach(self, media: RtpSession) -> None:
        """Make this queue the one the leg's pacer stream drains."""
        media.playout = self.queue


class BotSink:
    """Caller audio and digits from the RTP receive path, straight to the driver."""

    __slots__ = ("_driver",)

    def __init__(self, driver: BotDriver) -> None:
        self._driver = driver

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        send = self._driver.send_audio
        for frame in frames:
            send(frame)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        for digit in digits:
            self._driver.send_dtmf(digit.digit)
