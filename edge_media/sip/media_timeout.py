"""Dead-call detection: an answered call whose peer stopped sending RTP is hung up.

A peer that vanishes without a BYE (a crashed phone, a NAT binding gone) would leave the call up
forever; carriers and SBCs hang up after a media timeout, and so do we. Why apart from `ua`: it
is one timer for the node over every live call, reading only their RTP, and no SIP request
handling depends on it; the UA gives it the live calls and says how to hang one up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from edge_media.sip.call_state import CallState

if TYPE_CHECKING:
    from edge_media.sip.call import SipCall

__all__ = ["MEDIA_SWEEP", "MediaTimeoutSweep"]

MEDIA_SWEEP = 5.0  # seconds between RTP-silence checks over all calls


class MediaTimeoutSweep:
    """Every `MEDIA_SWEEP` seconds (or ``rtp_timeout / 2`` when shorter), hang up the answered
    calls that received no RTP for ``rtp_timeout`` seconds; 0 turns the sweep off. A call the
    peer holds (it sends nothing) is spared."""

    def __init__(
        self,
        rtp_timeout: float,
        *,
        calls: Callable[[], Iterable[SipCall]],
        now: Callable[[], float],
        hang_up: Callable[[SipCall], None],
    ) -> None:
        self.rtp_timeout = rtp_timeout
        self._calls = calls
        self._now = now
        self._hang_up = hang_up
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.rtp_timeout <= 0 or self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self._interval, self._sweep)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def _interval(self) -> float:
        return min(MEDIA_SWEEP, self.rtp_timeout / 2)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self._interval, self._sweep)
        now = self._now()
        for call in list(self._calls()):
            media = call.media
            if call.state is not CallState.ANSWERED or media is None or call.answered_at is None:
                continue
            negotiated = call.negotiated
            if negotiated is None or not negotiated.direction.receives:
                continue
            idle = media.socket.receiver.idle_for(now)
            silent_for = idle if idle is not None else now - call.answered_at
            if silent_for > self.rtp_timeout:
                call.log.info("no RTP for %.0f s: hanging up (media timeout)", silent_for)
                self._hang_up(call)
