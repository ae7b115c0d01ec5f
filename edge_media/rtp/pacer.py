"""One absolute-deadline scheduler for the outbound RTP of every call (docs/architecture.md,
"One clock").

Why one pacer: a timer or task per call costs a wake-up per call every 20 ms and each one drifts
on its own; a single 20 ms grid wakes the loop once for all calls and keeps every stream on the
same clock. Tick k is due at `start + k * interval`, always computed from `start`, never as
"previous tick + interval", so a late wake-up never shifts later ticks (no drift). A late tick
catches up: the missed frames go out back-to-back, at most `max_catch_up` ticks' worth, and the
older ones are taken from their sources and dropped (counted), so playout (and the marks that
ride on it) stays on wall-clock time instead of falling further behind.

Driver contract (the asyncio layer, written elsewhere)::

    pacer = Pacer(start=loop.time())

    def on_deadline() -> None:
        for sink, addr, packet in pacer.tick(loop.time()):
            sink.sendto(packet, addr)           # sink: the call's DatagramTransport
        loop.call_at(pacer.next_deadline(), on_deadline)

    loop.call_at(pacer.next_deadline(), on_deadline)

Always re-arm with `next_deadline()` after `tick` and pass `loop.time()` (the same clock as
`start`), never `now + interval`. `tick(next_deadline())` is guaranteed to run that tick, so
float rounding can never make the driver spin. Register and unregister streams at any time from
the same thread; a stream registered now sends from the next tick on.

Each tick pulls one frame per stream from its source (`Callable[[], bytes | None]`), which
returns the next 160-byte μ-law payload or None for "nothing to send"; a PlayoutQueue's
`next_frame` is the intended source (the RTP session takes the marks it reached once the tick's
packets have been sent).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from edge_media.rtp.dtmf import DEFAULT_SEND_MS, DtmfPacket, DtmfSender
from edge_media.rtp.g711 import PAYLOAD_TYPE_PCMA, ULAW_SILENCE_FRAME, ULAW_TO_ALAW_TABLE
from edge_media.rtp.latency import LatencyHistogram
from edge_media.rtp.packet import RTP_HEADER, Address
from edge_media.rtp.repacketize import Repacketizer, ptime_bytes

CLOCK_RATE = 8000
DEFAULT_INTERVAL = 0.020
DEFAULT_MAX_CATCH_UP = 3  # ticks sent back-to-back after a late wake-up; older ones are dropped
DTMF_GAP_TICKS = 2  # audio ticks between two queued digits so each is heard as a new press
HISTOGRAM_BIN = 0.0001  # pacing error resolution: 0.1 ms
HISTOGRAM_BINS = 1000  # 0..100 ms, the last bin also holds anything later
_VERSION = 0x80
_MARKER = 0x80
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF

Source: TypeAlias = Callable[[], bytes | None]
Outgoing: TypeAlias = tuple[Any, Address, bytes]  # (sink, remote address, RTP packet)

_pack = RTP_HEADER.pack


class PacingHistogram:
    """Pacing error (tick run time minus its deadline) in fixed 0.1 ms bins, O(1) per sample."""

    __slots__ = ("_bins", "_count", "_max")

    def __init__(self) -> None:
        self._bins = [0] * HISTOGRAM_BINS
        self._count = 0
        self._max = 0.0

    @property
    def count(self) -> int:
        return self._count

    def record(self, error: float) -> None:
        """Add one error in seconds (negative values count as 0)."""
        index = int(error / HISTOGRAM_BIN) if error > 0 else 0
        self._bins[index if index < HISTOGRAM_BINS else HISTOGRAM_BINS - 1] += 1
        self._count += 1
        if error > self._max:
            self._max = error

    def percentile_ms(self, fraction: float) -> float:
        """Upper edge (ms) of the bin holding the given fraction (0..1) of samples; 0 if empty."""
        if not self._count:
            return 0.0
        rank = max(1, math.ceil(fraction * self._count))
        seen = 0
        for index, count in enumerate(self._bins):
            seen += count
            if seen >= rank:
                return round((index + 1) * HISTOGRAM_BIN * 1000, 3)
        return round(HISTOGRAM_BINS * HISTOGRAM_BIN * 1000, 3)  # pragma: no cover

    @property
    def max_ms(self) -> float:
        return self._max * 1000


@dataclass(frozen=True, slots=True)
class PacerStats:
    streams: int
    ticks: int  # ticks run (each sends one frame per active stream)
    catch_up_ticks: int  # ticks run later than the next tick's deadline
    skipped_ticks: int  # ticks beyond the catch-up cap, not sent
    dropped_frames: int  # frames taken from sources during skipped ticks
    packets_sent: int
    error_p50_ms: float
    error_p99_ms: float
    error_max_ms: float


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's RTP state, for RTCP sender reports and logs."""

    ssrc: int
    sequence: int  # the next packet's sequence number
    timestamp: int  # the next tick's RTP timestamp
    packets_sent: int
    octets_sent: int  # payload octets, as an RTCP SR counts them


class _Stream:
    __slots__ = (
        "addr",
        "comfort",
        "dtmf",
        "dtmf_gap",
        "dtmf_pending",
        "dtmf_pt",
        "gap",
        "octets",
        "packet_ts",
        "packets",
        "payload_type",
        "repacketizer",
        "sequence",
        "sink",
        "source",
        "special",
        "ssrc",
        "table",
        "timestamp",
    )

    def __init__(
        self,
        source: Source,
        sink: Any,
        addr: Address,
        ssrc: int,
        payload_type: int,
        sequence: int,
        timestamp: int,
        comfort: bool,
        repacketizer: Repacketizer | None,
        dtmf_pt: int | None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.addr = addr
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence = sequence & _SEQ_MASK
        self.timestamp = timestamp & _TS_MASK
        self.comfort = comfort
        self.table = ULAW_TO_ALAW_TABLE if payload_type == PAYLOAD_TYPE_PCMA else None
        self.repacketizer = repacketizer
        self.packet_ts = self.timestamp
        self.dtmf_pt = dtmf_pt
        self.dtmf: deque[DtmfPacket] = deque()  # packets of the digit being sent
        self.dtmf_pending: deque[tuple[str, float]] = deque()  # digits waiting their turn
        self.dtmf_gap = 0
        self.gap = True  # RFC 3551 §4.1: marker on the first packet, and after silence
        self.packets = 0
        self.octets = 0
        self.special = repacketizer is not None  # take the slow path in tick


class Pacer:
    """Sends every registered stream's next frame on one shared 20 ms grid; see module doc."""

    __slots__ = (
        "_catch_up_ticks",
        "_dropped_frames",
        "_dtmf_sender",
        "_histogram",
        "_interval",
        "_max_catch_up",
        "_next_id",
        "_next_index",
        "_order",
        "_packets_sent",
        "_samples",
        "_silence",
        "_skipped_ticks",
        "_start",
        "_streams",
        "_ticks",
        "departures",
    )

    def __init__(
        self,
        start: float,
        interval: float = DEFAULT_INTERVAL,
        *,
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"pacer interval {interval} must be positive")
        if max_catch_up < 1:
            raise ValueError(f"max_catch_up {max_catch_up} must be at least 1")
        self._start = start
        self._interval = interval
        self._samples = round(interval * CLOCK_RATE)
        self._silence = ULAW_SILENCE_FRAME[:1] * self._samples
        self._max_catch_up = max_catch_up
        self._next_index = 1  # tick 0 is `start` itself: the first frame goes one interval later
        self._streams: dict[int, _Stream] = {}
        self._order: tuple[_Stream, ...] = ()
        self._next_id = 1
        self._dtmf_sender = DtmfSender(update_samples=self._samples)
        self._histogram = PacingHistogram()
        # Departure error of each wake-up's last packet (its driver records it, `departed`): a
        # call reads the window of it its stream was registered for (rtp/session.py).
        self.departures = LatencyHistogram()
        self._ticks = 0
        self._catch_up_ticks = 0
        self._skipped_ticks = 0
        self._dropped_frames = 0
        self._packets_sent = 0

    # -- streams -----------------------------------------------------------------------------

    def register(
        self,
        source: Source,
        *,
        addr: Address,
        ssrc: int,
        payload_type: int,
        sequence: int,
        timestamp: int,
        sink: Any = None,
        comfort_silence: bool = False,
        ptime_ms: int = 20,
        dtmf_payload_type: int | None = None,
    ) -> int:
        """Add a stream; returns its id.

        `sequence` and `timestamp` are the first values to send: RFC 3550 §5.1 wants both
        random, and the caller draws them. `comfort_silence=True` sends a silence frame when the
        source has nothing (for peers that treat a pause as a dead call); the default sends
        nothing and sets the marker on the next packet, the RTP clock running on meanwhile.
        μ-law frames are converted when `payload_type` is PCMA (8). `ptime_ms` other than 20
        re-cuts the frames to the peer's packet size (10-60 ms).
        """
        repacketizer = None
        if ptime_ms * CLOCK_RATE // 1000 != self._samples:
            repacketizer = Repacketizer(ptime_bytes(ptime_ms))
        stream = _Stream(
            source,
            sink,
            addr,
            ssrc,
            payload_type,
            sequence,
            timestamp,
            comfort_silence,
            repacketizer,
            dtmf_payload_type,
        )
        stream_id = self._next_id
        self._next_id += 1
        self._streams[stream_id] = stream
        self._order = (*self._order, stream)
        return stream_id

    def unregister(self, stream_id: int) -> None:
        """Stop a stream; unknown ids are ignored (hang-up races are normal)."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._order = tuple(self._streams.values())

    def set_addr(self, stream_id: int, addr: Address) -> None:
        """Send to a new address from the next packet on (a re-latch or a re-INVITE)."""
        self._streams[stream_id].addr = addr

    def send_dtmf(self, stream_id: int, digit: str, duration_ms: float = DEFAULT_SEND_MS) -> None:
        """Queue an RFC 4733 digit; the source is not read while its packets go out."""
        stream = self._streams[stream_id]
        if stream.dtmf_pt is None:
            raise ValueError("stream was registered without a telephone-event payload type")
        self._dtmf_sender.packets(digit, duration_ms, 0)  # validate now, not at send time
        stream.dtmf_pending.append((digit, duration_ms))
        stream.special = True

    def stream_info(self, stream_id: int) -> StreamInfo:
        stream = self._streams[stream_id]
        return StreamInfo(
            stream.ssrc, stream.sequence, stream.timestamp, stream.packets, stream.octets
        )

    # -- time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When the next tick is due, on the clock `start` came from."""
        return self._start + self._next_index * self._interval

    def tick(self, now: float) -> list[Outgoing]:
        """Every packet due up to `now`: one per stream per elapsed tick, catch-up capped."""
        first = self._next_index
        start = self._start
        interval = self._interval
        if now < start + first * interval:
            return []
        last = int((now - start) / interval)
        # Float division may land one off; settle on the largest k with start + k*i <= now,
        # the same expression next_deadline() uses.
        if start + (last + 1) * interval <= now:
            last += 1
        elif start + last * interval > now:
            last -= 1
        due = last - first + 1
        skipped = due - self._max_catch_up
        if skipped > 0:
            self._skip(skipped)
            first += skipped
        out: list[Outgoing] = []
        for index in range(first, last + 1):
            self._histogram.record(now - (start + index * interval))
            self._run_tick(out)
        self._ticks += last - first + 1
        self._catch_up_ticks += last - first
        self._next_index = last + 1
        self._packets_sent += len(out)
        return out

    def departed(self, error: float) -> None:
        """The driver sent a wake-up's packets: ``error`` seconds after the first tick's deadline
        the last of them left. An upper bound on the departure error of every packet sent."""
        self.departures.record(error)

    def stats(self) -> PacerStats:
        histogram = self._histogram
        return PacerStats(
            streams=len(self._streams),
            ticks=self._ticks,
            catch_up_ticks=self._catch_up_ticks,
            skipped_ticks=self._skipped_ticks,
            dropped_frames=self._dropped_frames,
            packets_sent=self._packets_sent,
            error_p50_ms=histogram.percentile_ms(0.50),
            error_p99_ms=histogram.percentile_ms(0.99),
            error_max_ms=round(histogram.max_ms, 3),
        )

    # -- internals -----------------------------------------------------------------------------

    def _run_tick(self, out: list[Outgoing]) -> None:
        samples = self._samples
        append = out.append
        for stream in self._order:
            if stream.special:
                self._run_special(stream, out)
                continue
            frame = stream.source()
            if frame is None:
                if not stream.comfort:
                    stream.timestamp = (stream.timestamp + samples) & _TS_MASK
                    stream.gap = True
                    continue
                frame = self._silence
            if stream.table is not None:
                frame = frame.translate(stream.table)
            sequence = stream.sequence
            timestamp = stream.timestamp
            if stream.gap:
                header = _pack(
                    _VERSION, stream.payload_type | _MARKER, sequence, timestamp, stream.ssrc
                )
                stream.gap = False
            else:
                header = _pack(_VERSION, stream.payload_type, sequence, timestamp, stream.ssrc)
            append((stream.sink, stream.addr, header + frame))
            stream.sequence = (sequence + 1) & _SEQ_MASK
            stream.timestamp = (timestamp + samples) & _TS_MASK
            stream.packets += 1
            stream.octets += len(frame)

    def _run_special(self, stream: _Stream, out: list[Outgoing]) -> None:
        """The slow path: DTMF queued or in progress, or a peer ptime other than 20 ms."""
        if not stream.dtmf and stream.dtmf_pending and not stream.dtmf_gap:
            self._flush_tail(stream, out)
            digit, duration_ms = stream.dtmf_pending.popleft()
            # RFC 4733 §2.5.1.2: every packet of the event carries the event's start time.
            stream.dtmf.extend(self._dtmf_sender.packets(digit, duration_ms, stream.timestamp))
        if stream.dtmf:
            packet = stream.dtmf.popleft()
            self._send(stream, out, packet.payload, packet.timestamp, packet.marker, stream.dtmf_pt)
            if not stream.dtmf and stream.dtmf_pending:
                stream.dtmf_gap = DTMF_GAP_TICKS
        else:
            if stream.dtmf_gap:
                stream.dtmf_gap -= 1
            self._special_audio(stream, out)
        stream.timestamp = (stream.timestamp + self._samples) & _TS_MASK
        stream.special = bool(stream.dtmf or stream.dtmf_pending or stream.repacketizer is not None)

    def _special_audio(self, stream: _Stream, out: list[Outgoing]) -> None:
        frame = stream.source()
        if frame is None and stream.comfort:
            frame = self._silence
        repacketizer = stream.repacketizer
        if frame is None:
            self._flush_tail(stream, out)
            stream.gap = True
        elif repacketizer is None:
            self._send(stream, out, frame, stream.timestamp, stream.gap, stream.payload_type)
        else:
            if not repacketizer.pending:
                stream.packet_ts = stream.timestamp
            for packet in repacketizer.push(frame):
                self._send(stream, out, packet, stream.packet_ts, stream.gap, stream.payload_type)
                stream.packet_ts = (stream.packet_ts + len(packet)) & _TS_MASK

    def _flush_tail(self, stream: _Stream, out: list[Outgoing]) -> None:
        # The peer's ptime does not divide our frames: a talkspurt's last partial packet goes
        # out padded with silence rather than waiting for the next talkspurt.
        if stream.repacketizer is not None:
            tail = stream.repacketizer.flush()
            if tail is not None:
                self._send(stream, out, tail, stream.packet_ts, stream.gap, stream.payload_type)

    def _send(
        self,
        stream: _Stream,
        out: list[Outgoing],
        payload: bytes,
        timestamp: int,
        marker: bool,
        payload_type: int | None,
    ) -> None:
        assert payload_type is not None  # DTMF is only queued when the stream has a type
        if payload_type == stream.payload_type:
            if stream.table is not None:
                payload = payload.translate(stream.table)
            stream.gap = False
        second = payload_type | _MARKER if marker else payload_type
        header = _pack(_VERSION, second, stream.sequence, timestamp, stream.ssrc)
        out.append((stream.sink, stream.addr, header + payload))
        stream.sequence = (stream.sequence + 1) & _SEQ_MASK
        stream.packets += 1
        stream.octets += len(payload)

    def _skip(self, ticks: int) -> None:
        """Ticks past the catch-up cap: advance every clock, drop the frames they would send."""
        self._skipped_ticks += ticks
        samples = self._samples * ticks
        for stream in self._order:
            if not stream.dtmf:
                # A source cannot refill during a tick, so the first None ends the drain.
                for _ in range(ticks):
                    if stream.source() is None:
                        break
                    self._dropped_frames += 1
                if stream.repacketizer is not None:
                    stream.repacketizer.reset()
            stream.timestamp = (stream.timestamp + samples) & _TS_MASK
            stream.gap = True
