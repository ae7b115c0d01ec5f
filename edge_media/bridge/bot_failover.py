"""Keep a call up when its bot connection breaks: reconnect, then the account default, then end.

Why: the caller is still on the line when a bot's process crashes, its host restarts or a
network path drops, and hanging up on them for our side's failure is the worst outcome. No peer
keeps the call (Twilio ends the stream; Sinch documents "no reconnection"). What counts as a
failure is `BotEnd.failed` (drivers/base.py): a drop without a closing handshake or a server-side
close code; a bot that closes normally meant to end the call and is never reconnected.

What the caller hears meanwhile: what the failed bot had queued plays out, then comfort silence
(the RTP stream never stops, so carriers' inactivity timers and NAT bindings hold), or a soft
hold tone with ``AGERA_BOT_HOLD_TONE``. The new connection's queue replaces it at once.

The budget (`ReconnectBudget`, sans-I/O): ``AGERA_BOT_RECONNECT_ATTEMPTS`` connection attempts
to the same target within ``AGERA_BOT_RECONNECT_WINDOW_SECONDS``, with a short growing pause
before each (a restarting bot needs a moment; a dead one should not be hammered); then one
attempt at the account default (when there is one and it is another target); only then the call
ends. The window is sliding: a bot that fails once an hour is reconnected every time, one that
fails in a loop runs out. A Twilio-stream bot's new ``start`` carries
``customParameters.resumed_from`` (the failed connection's stream SID) and ``resume_gap_ms``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from edge_media.rtp.g711 import pcm16_to_ulaw

__all__ = ["ReconnectBudget", "ReconnectPolicy", "hold_tone"]

FIRST_PAUSE_SECONDS = 0.25
MAX_PAUSE_SECONDS = 2.0
HOLD_TONE_SECONDS = 30.0  # queued once per gap; longer than every attempt put together


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Settings for a node's calls (``attempts`` 0: a failed bot ends the call, as before)."""

    attempts: int = 3
    window_seconds: float = 60.0
    hold_tone: bool = False


class ReconnectBudget:
    """One call's reconnections: `next_pause` says whether another attempt at the same target
    is allowed now (and after what pause), `spend` counts one."""

    def __init__(self, policy: ReconnectPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self._clock = clock
        self._spent: deque[float] = deque()
        self.reconnects = 0  # connections that came back (to the target or the fallback)
        self.gap_ms_total = 0

    def next_pause(self, tried_this_gap: int) -> float | None:
        """Seconds to wait before the next attempt at the same target, or None: none left."""
        now = self._clock()
        window = self.policy.window_seconds
        while self._spent and now - self._spent[0] > window:
            self._spent.popleft()
        if len(self._spent) >= self.policy.attempts:
            return None
        return min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2**tried_this_gap)

    def spend(self) -> None:
        self._spent.append(self._clock())

    def recovered(self, gap_ms: int) -> None:
        self.reconnects += 1
        self.gap_ms_total += gap_ms


@cache
def hold_tone() -> bytes:
    """Two seconds of μ-law: a 0.2 s 425 Hz beep at -20 dBFS, then silence (a quiet "still
    there" that no one mistakes for a ringback or the bot speaking)."""
    rate, beep, total = 8000, 1600, 16000
    amplitude = 0.1 * 32767
    samples = bytearray()
    for n in range(total):
        value = int(amplitude * math.sin(2 * math.pi * 425 * n / rate)) if n < beep else 0
        samples += value.to_bytes(2, "little", signed=True)
    return pcm16_to_ulaw(bytes(samples))
