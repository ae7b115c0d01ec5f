"""RFC 4733 telephone-events: turn a peer's redundant event packets into one digit per key press,
and build the packet sequence for a digit we send.

Why a state machine and not "emit on E bit": a sender repeats the final packet three times
(§2.5.1.4), may repeat the start, loses packets like any RTP stream, and a long press is split into
segments with new timestamps (§2.5.1.3). The key of one press is its RTP timestamp plus event code
(every packet of an event carries the event's start timestamp, §2.5.1.2), so distinct timestamps are
distinct presses even for the same digit, and anything already finished is remembered briefly so
late retransmissions are not a second press.
"""

from __future__ import annotations

import enum
import math
import struct
from collections import deque
from dataclasses import dataclass

from edge_media.rtp.seq import ts_diff

CLOCK_RATE = 8000
UPDATE_SAMPLES = 160  # we send one event packet per 20 ms pacer tick
END_RETRANSMISSIONS = 3
DEFAULT_VOLUME = 10  # -10 dBm0, a typical keypad level
MAX_VOLUME = 63  # §2.3.4: 0 to -63 dBm0, sign dropped
MAX_DURATION = 0xFFFF  # §2.3.5: 16-bit duration in timestamp units
DEFAULT_SEND_MS = 100
END_TIMEOUT = 0.5  # seconds without any packet of an open event before it counts as ended
RECENT_EVENTS = 16  # finished presses remembered to drop their late retransmissions
PAYLOAD_SIZE = 4

# §3.2: events 0-9, *, #, A-D and flash (16).
EVENT_NAMES: dict[int, str] = {
    **{code: str(code) for code in range(10)},
    10: "*",
    11: "#",
    12: "A",
    13: "B",
    14: "C",
    15: "D",
    16: "flash",
}
EVENT_CODES: dict[str, int] = {name: code for code, name in EVENT_NAMES.items()}

# §2.3: event (8) | E (1) R (1) volume (6) | duration (16)
_PAYLOAD = struct.Struct("!BBH")
_END_BIT = 0x80
_VOLUME_MASK = 0x3F


class DtmfParseError(Exception):
    """A telephone-event payload is shorter than the 4 bytes of §2.3."""


class DtmfEmit(enum.Enum):
    """When the receiver reports a press.

    START gives the bot the digit with the first packet of a press (lowest latency); END waits
    for the key to go up so the digit carries its real duration.
    """

    START = "start"
    END = "end"


class DtmfTrigger(enum.Enum):
    """What made the receiver report a digit."""

    START = "start"  # first packet seen of a new press (START mode)
    END = "end"  # first packet with the E bit (END mode)
    TIMEOUT = "timeout"  # the end packets were all lost and the press went quiet (END mode)
    SUPERSEDED = "superseded"  # a new press began before this one's end arrived (END mode)


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One §2.3 event block."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Read the first event block; extra bytes (RFC 2198 redundancy, §2.5.1.5) are ignored."""
        if len(payload) < PAYLOAD_SIZE:
            raise DtmfParseError(
                f"telephone-event payload is {len(payload)} bytes, needs at least 4"
            )
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & _END_BIT), flags & _VOLUME_MASK, duration)

    def serialize(self) -> bytes:
        """The 4-byte wire form with the reserved R bit clear."""
        return _PAYLOAD.pack(self.event, (_END_BIT if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press, reported once."""

    digit: str  # "0"-"9", "*", "#", "A"-"D" or "flash"
    event: int
    timestamp: int  # RTP timestamp of the press start
    duration: int  # timestamp units known when reported (grows until the end in END mode)
    volume: int
    trigger: DtmfTrigger

    @property
    def duration_ms(self) -> float:
        return self.duration * 1000 / CLOCK_RATE


class _Press:
    __slots__ = (
        "duration",
        "emitted",
        "event",
        "last_seen",
        "segment_offset",
        "start",
        "timestamp",
        "volume",
    )

    def __init__(self, timestamp: int, event: int, now: float) -> None:
        self.start = timestamp  # first segment's timestamp: the press start
        self.timestamp = timestamp  # current segment's timestamp
        self.event = event
        self.segment_offset = 0  # start of the current segment relative to `start`
        self.duration = 0
        self.volume = 0
        self.emitted = False
        self.last_seen = now


class DtmfReceiver:
    """Per-stream RFC 4733 receiver: feed each telephone-event packet, get each press once.

    Time comes in as `now` (seconds); `deadline` tells the caller when `poll` would time out an
    open press whose end packets were all lost. A press whose start packets were lost is picked up
    from its first update or end packet: any packet of a new (timestamp, event) opens a press.
    """

    __slots__ = ("_active", "_emit", "_end_timeout", "_finished", "_finished_keys")

    def __init__(
        self, *, emit: DtmfEmit = DtmfEmit.START, end_timeout: float = END_TIMEOUT
    ) -> None:
        self._emit = emit
        self._end_timeout = end_timeout
        self._active: _Press | None = None
        self._finished: deque[tuple[int, int]] = deque()
        self._finished_keys: set[tuple[int, int]] = set()

    @property
    def deadline(self) -> float | None:
        """When the open press times out, or None when no press is open."""
        active = self._active
        return None if active is None else active.last_seen + self._end_timeout

    def on_packet(
        self, payload: bytes, timestamp: int, marker: bool, now: float
    ) -> list[DtmfDigit]:
        """Feed one packet's payload and RTP header fields; returns the presses it reports.

        Raises DtmfParseError for a payload shorter than 4 bytes.
        """
        block = TelephoneEvent.parse(payload)
        out = self.poll(now)
        if block.event not in EVENT_NAMES:
            return out  # tones and signals beyond DTMF and flash are not for bots
        key = (timestamp, block.event)
        if key in self._finished_keys:
            return out  # a late retransmission of a press already finished
        active = self._active
        if active is not None and (active.timestamp, active.event) != key:
            if self._continues(active, block, timestamp, marker):
                # §2.5.1.3: a long press goes on in a new segment that starts where the
                # previous one ended.
                self._remember((active.timestamp, active.event))
                active.segment_offset += ts_diff(timestamp, active.timestamp)
                active.timestamp = timestamp
            else:
                # A different press began: this one's end packets were all lost.
                self._finish(active, DtmfTrigger.SUPERSEDED, out)
                active = None
        if active is None:
            active = self._active = _Press(timestamp, block.event, now)
        active.last_seen = now
        active.volume = block.volume
        duration = active.segment_offset + block.duration
        if duration > active.duration:
            active.duration = duration
        if not active.emitted and self._emit is DtmfEmit.START:
            self._report(active, DtmfTrigger.START, out)
        if block.end:
            self._finish(active, DtmfTrigger.END, out)
        return out

    def poll(self, now: float) -> list[DtmfDigit]:
        """Close an open press whose end never came; call once `now` reaches `deadline`."""
        active = self._active
        if active is None or now - active.last_seen < self._end_timeout:
            return []
        out: list[DtmfDigit] = []
        self._finish(active, DtmfTrigger.TIMEOUT, out)
        return out

    def reset(self) -> None:
        """Forget all state, e.g. when the peer starts a new SSRC."""
        self._active = None
        self._finished.clear()
        self._finished_keys.clear()

    @staticmethod
    def _continues(active: _Press, block: TelephoneEvent, timestamp: int, marker: bool) -> bool:
        # A new segment has no marker and the same event, and it starts no later than the open
        # segment has reached; a new press of the same key starts after a gap, with a marker.
        reached = active.duration - active.segment_offset
        return (
            not marker
            and block.event == active.event
            and 0 < ts_diff(timestamp, active.timestamp) <= reached
        )

    def _finish(self, press: _Press, trigger: DtmfTrigger, out: list[DtmfDigit]) -> None:
        if not press.emitted:
            self._report(press, trigger, out)
        self._remember((press.timestamp, press.event))
        self._active = None

    @staticmethod
    def _report(press: _Press, trigger: DtmfTrigger, out: list[DtmfDigit]) -> None:
        press.emitted = True
        out.append(
            DtmfDigit(
                digit=EVENT_NAMES[press.event],
                event=press.event,
                timestamp=press.start,
                duration=press.duration,
                volume=press.volume,
                trigger=trigger,
            )
        )

    def _remember(self, key: tuple[int, int]) -> None:
        if key in self._finished_keys:
            return
        if len(self._finished) >= RECENT_EVENTS:
            self._finished_keys.discard(self._finished.popleft())
        self._finished.append(key)
        self._finished_keys.add(key)


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One telephone-event packet to send: payload plus the RTP header fields it needs."""

    payload: bytes
    marker: bool
    timestamp: int


class DtmfSender:
    """Builds the §2.5.1 packet sequence for one press, one packet per 20 ms tick.

    The sequence: the first packet carries the marker bit; an update follows every tick with
    the duration grown by one tick; the final duration goes out three times with the E bit set.
    Every packet carries the press's start timestamp. Packet k covers the press up to the end of
    tick k, so no packet has duration 0, which §2.3.5 reserves for state events.
    """

    __slots__ = ("_update_samples", "_volume")

    def __init__(
        self, *, volume: int = DEFAULT_VOLUME, update_samples: int = UPDATE_SAMPLES
    ) -> None:
        if not 0 <= volume <= MAX_VOLUME:
            raise ValueError(f"DTMF volume {volume} is outside 0..63")
        if update_samples <= 0:
            raise ValueError(f"DTMF update interval {update_samples} must be positive")
        self._volume = volume
        self._update_samples = update_samples

    def packets(self, digit: str, duration_ms: float, timestamp: int) -> list[DtmfPacket]:
        """The packets for `digit` held `duration_ms` (rounded up to whole ticks), from
        `timestamp`, the RTP clock at the tick the first packet goes out."""
        event = EVENT_CODES.get(digit)
        if event is None:
            raise ValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D, flash)")
        step = self._update_samples
        ticks = max(1, math.ceil(duration_ms * CLOCK_RATE / 1000 / step))
        total = ticks * step
        if total > MAX_DURATION:
            raise ValueError(f"DTMF duration {duration_ms} ms needs long-event segments")
        out = [
            DtmfPacket(
                TelephoneEvent(event, False, self._volume, (tick + 1) * step).serialize(),
                tick == 0,
                timestamp,
            )
            for tick in range(ticks - 1)
        ]
        final = TelephoneEvent(event, True, self._volume, total).serialize()
        out.extend(
            DtmfPacket(final, ticks == 1 and copy == 0, timestamp)
            for copy in range(END_RETRANSMISSIONS)
        )
        return out
