"""What one bot connection may send us: a per-connection budget of bytes and messages per
second, and the limits on marks and message size (PROTOCOL.md, "6. Limits").

Why a budget at all: every call on a node shares one event loop and one 20 ms media clock
(docs/architecture.md, "One clock"), so whatever a bot makes the loop do is time taken from
every other call's pacing. Real-time audio is cheap; a bot that sends far faster than it can
be played (a loop bug, a replayed file, a hostile tenant) makes the loop decode, parse and cut
audio that the playout cap then throws away. The budget lets a bot send a small multiple of
real time on average, with a burst allowance so a greeting or a whole reply sent ahead still
plays, and drops the rest.

Why it is checked on the raw message, before UTF-8 decoding and JSON parsing: the point is to
make the excess cost as little as possible. A dropped message has cost websockets' frame parse
and two bucket updates, nothing of the base64 decode, JSON parse or frame cutting that an
admitted one pays for.

Why token buckets with the time passed in: the decision is arithmetic on (size, now), so the
tests feed literal sequences with literal times and no clock (docs/architecture.md, "Sans-I/O
cores"); the WebSocket layer passes ``loop.time()``. A message is admitted only when both
buckets hold enough, and a dropped message takes nothing from either: a bot that floods gets
exactly its budget through, not less.

Why a budget is sized per driver kind: "real time" is a different number of wire bytes for
Twilio-stream JSON, ElevenLabs' base64 PCM and Vapi's binary μ-law, so each driver states its
own real-time wire rate (`json_audio_wire_rate`) and `BotLimits.budget` scales it.

Where the rest lives: ws_inbound.py applies a budget on a connection's read path (and pauses
reading a bot over it); the Twilio-stream driver applies the mark limits of `BotLimits`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings

__all__ = [
    "DEFAULT_LIMITS",
    "FRAMES_PER_SECOND",
    "JSON_OVERHEAD_BYTES",
    "BotLimits",
    "InboundBudget",
    "TokenBucket",
    "json_audio_wire_rate",
]

FRAMES_PER_SECOND = 50  # 20 ms frames: the most messages a second a real-time bot needs
JSON_OVERHEAD_BYTES = 200  # envelope of one audio message (event, streamSid, keys), rounded up


def json_audio_wire_rate(audio_bytes_per_second: float) -> float:
    """Wire bytes a second of real-time audio takes as base64 in JSON messages: the base64
    (4/3 of the audio) plus one envelope per 20 ms frame, the smallest chunks bots send."""
    return audio_bytes_per_second * 4 / 3 + FRAMES_PER_SECOND * JSON_OVERHEAD_BYTES


class TokenBucket:
    """``rate`` tokens a second, holding at most ``capacity``; starts full.

    Pure: `take` and `available` are told the time; times never go backwards in effect (a
    smaller ``now`` than the last one refills nothing).
    """

    __slots__ = ("_at", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate {rate} and capacity {capacity} must be positive")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at: float | None = None  # time of the last refill; None: not used yet

    def available(self, now: float) -> float:
        """Tokens held at ``now`` (refilled for the time since the last call)."""
        at = self._at
        if at is None:
            self._at = now
        elif now > at:
            self._tokens = min(self.capacity, self._tokens + (now - at) * self.rate)
            self._at = now
        return self._tokens

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if the bucket holds them at ``now``; False takes nothing."""
        if self.available(now) < amount:
            return False
        self._tokens -= amount
        return True

    def spend(self, amount: float) -> None:
        """Take ``amount`` tokens known to be there (`available` was just asked at this time)."""
        self._tokens -= amount

    def retune(self, rate: float, capacity: float, now: float) -> None:
        """New rate and depth from ``now`` on; tokens already held are kept, up to the depth."""
        self.available(now)
        self.rate = rate
        self.capacity = capacity
        self._tokens = min(self._tokens, capacity)


class InboundBudget:
    """The bytes and messages one bot connection may send; counts what it drops."""

    __slots__ = ("_bytes", "_messages", "_warned", "dropped_bytes", "dropped_messages")

    def __init__(
        self,
        *,
        bytes_per_second: float,
        burst_bytes: float,
        messages_per_second: float,
        burst_messages: float,
    ) -> None:
        self._bytes = TokenBucket(bytes_per_second, burst_bytes)
        self._messages = TokenBucket(messages_per_second, burst_messages)
        self._warned = False
        self.dropped_messages = 0
        self.dropped_bytes = 0

    @property
    def bytes_per_second(self) -> float:
        return self._bytes.rate

    @property
    def burst_bytes(self) -> float:
        return self._bytes.capacity

    @property
    def messages_per_second(self) -> float:
        return self._messages.rate

    def admit(self, size: int, now: float) -> bool:
        """True when a message of ``size`` bytes fits the budget at ``now`` (and is charged);
        False when it must be dropped (and is counted, charged nothing)."""
        messages, data = self._messages, self._bytes
        if messages.available(now) >= 1 and data.available(now) >= size:
            messages.spend(1)
            data.spend(size)
            return True
        self.dropped_messages += 1
        self.dropped_bytes += size
        return False

    def retune_bytes(self, bytes_per_second: float, burst_bytes: float, now: float) -> None:
        """A new byte rate once the connection's real-time rate is known (ElevenLabs names its
        audio format only in its first message)."""
        self._bytes.retune(bytes_per_second, burst_bytes, now)

    def take_drop_warning(self) -> bool:
        """True exactly once, after the first drop: the caller logs one line per connection."""
        if self.dropped_messages and not self._warned:
            self._warned = True
            return True
        return False


@dataclass(frozen=True, slots=True)
class BotLimits:
    """The node's limits on what a bot connection sends, from `Settings` (``AGERA_BOT_*``).

    The defaults are the settings' defaults, for tools and tests that build drivers directly.
    """

    max_message_bytes: int = 256 * 1024
    realtime_factor: float = 4.0
    burst_seconds: float = 30.0
    messages_per_second: float = 200.0
    max_pending_marks: int = 1000
    max_mark_name_chars: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> BotLimits:
        return cls(
            max_message_bytes=settings.bot_max_message_bytes,
            realtime_factor=settings.bot_inbound_realtime_factor,
            burst_seconds=settings.bot_inbound_burst_seconds,
            messages_per_second=settings.bot_inbound_messages_per_second,
            max_pending_marks=settings.bot_max_pending_marks,
            max_mark_name_chars=settings.bot_max_mark_name_chars,
        )

    def byte_rates(self, realtime_bytes_per_second: float) -> tuple[float, float]:
        """(bytes a second, burst bytes) for a connection whose real time is
        ``realtime_bytes_per_second`` on the wire. The burst is at least one largest message,
        or a message the size limit allows could never be admitted."""
        rate = realtime_bytes_per_second * self.realtime_factor
        burst = max(realtime_bytes_per_second * self.burst_seconds, self.max_message_bytes)
        return rate, burst

    def budget(self, realtime_bytes_per_second: float) -> InboundBudget:
        """A fresh budget for one connection. Its message burst is one message per 20 ms
        frame of the burst window, as a greeting sent ahead in 20 ms chunks needs."""
        rate, burst = self.byte_rates(realtime_bytes_per_second)
        return InboundBudget(
            bytes_per_second=rate,
            burst_bytes=burst,
            messages_per_second=self.messages_per_second,
            burst_messages=max(self.messages_per_second, self.burst_seconds * FRAMES_PER_SECOND),
        )


DEFAULT_LIMITS = BotLimits()
