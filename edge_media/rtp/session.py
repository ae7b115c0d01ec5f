"""One call leg's media: its RTP socket, what the offer/answer agreed, and its playout queue.

Why this object: SIP and the applications (echo, the bot bridge) should not know about payload
types, SSRCs or the pacer. A leg opens its port before the offer/answer (the port goes into our
SDP), then `apply` takes each negotiation result as `RtpParams`, including re-INVITEs for hold
and resume: the receiver learns the payload types, and the outbound stream is registered with
the process-wide pacer, moved, or taken off it when the direction says we must not send.

What the leg is joined to is one `connect(playout, sink)`: outbound audio is what the other side
pushes into ``playout`` (μ-law, any chunk size), and inbound audio, digits and the marks that
playout reached go to ``sink``. A live media redirect connects the next bot's queue and sink
without touching the SIP leg. Until something connects, the session plays its own queue and
discards what arrives.

The session also keeps the wire's share of the call's media figures (the record's
``stats.slo``, bridge/call_slo.py): when bot audio that reached an idle queue went out, playout
gaps in the middle of the bot's speech, how soon the wire changed after a clear, and the pacer's
departure errors while this stream was on it. All of it is a couple of attribute tests per tick
and a callback per talkspurt or clear, never work per packet that grows with the call
(`slo_figures` documents each one).

RTP is the bottom of the edge node: this package imports nothing else from `edge_media`
(tests/test_imports.py keeps it so). SIP converts its SDP result into `RtpParams`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.latency import LatencyHistogram
from edge_media.rtp.pacer import Pacer
from edge_media.rtp.playout import PlayedMark, PlayoutQueue
from edge_media.rtp.ports import PortAllocator
from edge_media.rtp.receiver import ReceiverConfig
from edge_media.rtp.transport import RtpSocket, open_rtp_socket

__all__ = ["DISCARD", "MediaSink", "RtpParams", "RtpSession"]

logger = logging.getLogger("agera.rtp.session")

MIN_PTIME_MS = 10
MAX_PTIME_MS = 60
# A gap in bot audio of up to this many silent ticks (400 ms), with no clear in it, is a playout
# underrun (the bot's audio did not arrive in time); a longer one is a pause between utterances.
UNDERRUN_MAX_TICKS = 20
FRAME_MS = 20

_monotonic = time.monotonic  # the clock of every figure here (loop.time() may be ms-coarse)


@dataclass(frozen=True, slots=True)
class RtpParams:
    """One negotiation's result as RTP needs it (SIP builds it from its SDP answer).

    ``dtmf_payload_type`` is the telephone-event type the peer expects our digits on, and
    ``dtmf_receive_payload_type`` the one we declared for the digits we receive; ``sends`` says
    whether the agreed direction lets us transmit.
    """

    payload_type: int
    remote_address: str
    remote_port: int
    sends: bool = True
    dtmf_payload_type: int | None = None
    dtmf_receive_payload_type: int | None = None
    remote_ptime: int | None = None


class MediaSink(Protocol):
    """Where a leg's inbound media and reached marks go; called from the socket's read callback
    and the loop turn after a pacer tick, never blocks."""

    def on_frames(self, frames: tuple[bytes, ...]) -> None: ...

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None: ...

    def on_marks(self, marks: list[PlayedMark]) -> None: ...


class _Discard:
    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        pass

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        pass

    def on_marks(self, marks: list[PlayedMark]) -> None:
        pass


DISCARD: MediaSink = _Discard()


class RtpSession:
    """Media of one call leg. Build with `open`; `apply` each negotiation; `close` at the end."""

    def __init__(self, pacer: Pacer, *, playout_seconds: float, rng: random.Random) -> None:
        self._pacer = pacer
        self._rng = rng
        self.playout = PlayoutQueue(capacity_seconds=playout_seconds)
        self.sink: MediaSink = DISCARD
        self.params: RtpParams | None = None
        self._socket: RtpSocket | None = None
        self._ssrc = rng.getrandbits(32)
        self._sequence = rng.getrandbits(16)
        self._timestamp = rng.getrandbits(32)
        self._stream: int | None = None
        self._sent_params: tuple[Any, ...] | None = None
        self._packets_out = 0  # sent by streams already taken off the pacer (hold)
        self._marks_due = False  # a _report_marks is scheduled
        # The call's media figures (`slo_figures`); see the module doc.
        self._connected_at = 0.0  # when the current queue was connected (monotonic)
        self._voiced = False  # the last tick played audio from the queue
        self._watching = False  # _silent_tick has work: a gap may open or is open, or a clear
        self._gap = 0  # silent ticks since the queue's audio stopped, while it may resume
        self._cleared_at = 0.0  # a clear whose next tick has not run yet
        self._clear_due = 0.0  # a clear whose tick ran: measured once its packets left
        self._spurt_at = 0.0  # arrival of the audio whose first packet this tick sends
        self._after_due = False  # an _after_tick is scheduled
        self.underruns = 0
        self.underrun_ticks = 0
        self.clears = 0
        self.bot_to_wire = LatencyHistogram()
        self.clear_to_wire = LatencyHistogram()
        self._pacing = LatencyHistogram()  # departure errors while this leg's stream ran
        self._pacing_since: list[int] | None = None  # the pacer's departures at stream start

    @classmethod
    async def open(
        cls,
        allocator: PortAllocator,
        host: str,
        pacer: Pacer,
        *,
        playout_seconds: float = 60.0,
        rng: random.Random | None = None,
        receiver: ReceiverConfig | None = None,
    ) -> RtpSession:
        """Bind the leg's RTP/RTCP ports; raises PortsExhaustedError when the range is full."""
        session = cls(pacer, playout_seconds=playout_seconds, rng=rng or random.SystemRandom())
        session._socket = await open_rtp_socket(allocator, host, session, config=receiver)
        return session

    # -- RtpHandler (from the socket) ------------------------------------------------------------

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        self.sink.on_frames(frames)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        self.sink.on_digits(digits)

    # -- pacer source ----------------------------------------------------------------------------

    def _next_frame(self) -> bytes | None:
        playout = self.playout
        frame = playout.next_frame()
        if playout.has_reached and not self._marks_due:
            # playout.py: a reached mark is echoed once this tick's packets have left; the
            # pacer sends them when every stream has had its frame, before the loop turns.
            self._marks_due = True
            asyncio.get_running_loop().call_soon(self._report_marks)
        # One attribute test per tick on the common paths (audio goes on, silence goes on).
        if frame is None:
            if self._watching:
                self._silent_tick()
        elif not self._voiced:
            self._talkspurt(playout)
        return frame

    def _silent_tick(self) -> None:
        """No audio this tick, and a gap may be open, or a clear waits for this tick."""
        self._take_clear()
        if self._voiced:
            self._voiced = False
            self._gap = 1
        elif 0 < self._gap < UNDERRUN_MAX_TICKS:
            self._gap += 1
        else:
            self._gap = 0  # too long for an underrun: the utterance is over
        self._watching = self._gap > 0

    def _take_clear(self) -> None:
        if self._cleared_at:
            self._clear_due, self._cleared_at = self._cleared_at, 0.0
            self._after_tick_soon()

    def _talkspurt(self, playout: PlayoutQueue) -> None:
        """The queue gives audio again after a silent tick (or for the first time)."""
        self._take_clear()
        self._voiced = True
        self._watching = True  # its first silent tick opens a gap
        if self._gap:
            self.underruns += 1
            self.underrun_ticks += self._gap
            self._gap = 0
        since = playout.audio_since
        if since:
            playout.audio_since = 0.0
            # Audio queued before this queue was played (a greeting during ringing) waited
            # for the answer, not for the wire.
            if since >= self._connected_at:
                self._spurt_at = since
                self._after_tick_soon()

    def _after_tick_soon(self) -> None:
        if not self._after_due:
            self._after_due = True
            asyncio.get_running_loop().call_soon(self._after_tick)

    def _after_tick(self) -> None:
        """The tick's packets have left (as for marks): time what waited for them."""
        self._after_due = False
        now = _monotonic()
        if self._spurt_at:
            self.bot_to_wire.record(now - self._spurt_at)
            self._spurt_at = 0.0
        if self._clear_due:
            self.clear_to_wire.record(now - self._clear_due)
            self._clear_due = 0.0

    def _report_marks(self) -> None:
        self._marks_due = False
        marks = self.playout.take_reached()
        if marks:
            self.sink.on_marks(marks)

    # -- what the leg is joined to ---------------------------------------------------------------

    def connect(self, playout: PlayoutQueue, sink: MediaSink) -> None:
        """Play ``playout`` from the next tick on and send what arrives to ``sink``."""
        self.playout = playout
        self.sink = sink
        self._connected_at = _monotonic()
        self._voiced = False  # another queue: its silence before audio is no gap
        self._gap = 0
        self._watching = bool(self._cleared_at)

    def disconnect(self) -> None:
        """Discard what arrives; the connected queue keeps playing until the next `connect`."""
        self.sink = DISCARD

    def playout_cleared(self) -> None:
        """The far end holds no more of our audio than the packet in flight: nothing to tell
        it. The clear is counted and timed to the next tick's packets (`slo_figures`), and the
        silence after it is no underrun."""
        self.clears += 1
        self._cleared_at = _monotonic()
        self._voiced = False
        self._gap = 0
        self._watching = True

    # -- control ---------------------------------------------------------------------------------

    @property
    def socket(self) -> RtpSocket:
        if self._socket is None:
            raise RuntimeError("RtpSession.open() first")
        return self._socket

    @property
    def port(self) -> int:
        return self.socket.port

    @property
    def sending(self) -> bool:
        return self._stream is not None

    def apply(self, media: RtpParams) -> None:
        """Take a negotiation result: payload types in, and the outbound stream on or off."""
        self.params = media
        receive_dtmf = media.dtmf_receive_payload_type or media.dtmf_payload_type
        self.socket.receiver.set_payload_types(media.payload_type, receive_dtmf)
        if not media.sends:
            self._stop_stream()
            return
        ptime = min(max(media.remote_ptime or 20, MIN_PTIME_MS), MAX_PTIME_MS)
        ptime -= ptime % 10
        addr = (media.remote_address, media.remote_port)
        params = (media.payload_type, media.dtmf_payload_type, ptime)
        if self._stream is not None and params == self._sent_params:
            if self.socket.remote_addr is None:  # not latched yet: follow the new SDP address
                self._pacer.set_addr(self._stream, addr)
            return
        self._stop_stream()
        self._stream = self.socket.start_sending(
            self._pacer,
            self._next_frame,
            addr=addr,
            ssrc=self._ssrc,
            payload_type=media.payload_type,
            sequence=self._sequence,
            timestamp=self._timestamp,
            ptime_ms=ptime,
            dtmf_payload_type=media.dtmf_payload_type,
            # A bot listening is silent for long stretches; carriers and SBCs hang up calls whose
            # RTP stops (inactivity timers of 30-60 s) and NAT bindings expire, so the leg sends
            # silence frames whenever the playout queue is empty, as Twilio does.
            comfort_silence=True,
        )
        self._sent_params = params
        self._pacing_since = self._pacer.departures.snapshot()

    def _stop_stream(self) -> None:
        if self._stream is None:
            return
        # RFC 3550 §5.1: the same SSRC continues its sequence and timestamp after a pause.
        info = self._pacer.stream_info(self._stream)
        self._sequence, self._timestamp = info.sequence, info.timestamp
        self._packets_out += info.packets_sent
        self._fold_pacing()
        self._pacing_since = None
        self.socket.stop_sending()
        self._stream = None
        self._sent_params = None

    def send_dtmf(self, digit: str, duration_ms: float = 100.0) -> bool:
        """Queue an RFC 4733 digit; False when the peer did not negotiate telephone-event."""
        media = self.params
        if self._stream is None or media is None or media.dtmf_payload_type is None:
            return False
        self._pacer.send_dtmf(self._stream, digit, duration_ms)
        return True

    def stats(self) -> dict[str, Any]:
        """Figures for the call record: what came in, what went out."""
        receiver = self.socket.stats()
        out: dict[str, Any] = {
            "packets_in": receiver.packets_delivered,
            "lost": receiver.lost,
            "late": receiver.late,
            "duplicates": receiver.duplicates,
            "jitter_ms": round(receiver.jitter_ms, 2),
            "max_gap_ms": round(receiver.max_gap_ms, 1),
            "dtmf_in": receiver.dtmf_digits,
        }
        sent = self._packets_out
        if self._stream is not None:
            sent += self._pacer.stream_info(self._stream).packets_sent
        out["packets_out"] = sent
        return out

    def slo_figures(self) -> dict[str, Any]:
        """The wire's share of the call's media figures (bridge/call_slo.py renders them).

        - ``bot_to_wire``: for each talkspurt whose audio was pushed into an idle queue
          (`PlayoutQueue.idle`) while the wire played it, the time from that push to the
          moment the tick that carried its first frame had sent its packets.
        - ``pacing``: the pacer's departure errors (each wake-up's last packet against its
          tick's deadline, `Pacer.departed`) over the ticks this leg's stream was registered
          for: an upper bound on each of this call's packets' error against the 20 ms grid,
          read without a clock per packet.
        - ``underruns`` / ``underrun_ms``: gaps in the middle of the bot's speech: a run of
          ticks that took no audio from the queue (comfort silence went out instead), right
          after a tick that did, ended by more audio within `UNDERRUN_MAX_TICKS` (400 ms) and
          with no clear in it. Silence before the first audio, after a clear, after a queue
          swap, or longer than 400 ms (the bot waiting for the caller) is not counted.
        - ``clears`` / ``clear_to_wire``: clears of the bot's audio (its ``clear``, a native
          agent's interruption), and for each, the time from the clear to the moment the next
          tick's packets (no longer the cleared audio) had left.
        """
        self._fold_pacing()
        return {
            "bot_to_wire": self.bot_to_wire,
            "pacing": self._pacing,
            "underruns": self.underruns,
            "underrun_ms": self.underrun_ticks * FRAME_MS,
            "clears": self.clears,
            "clear_to_wire": self.clear_to_wire,
        }

    def _fold_pacing(self) -> None:
        """Add the pacer's departures since the last fold to this leg's window."""
        since = self._pacing_since
        if since is not None:
            departures = self._pacer.departures
            self._pacing.add_since(departures, since)
            self._pacing_since = departures.snapshot()

    def close(self) -> None:
        if self._socket is not None:
            self._stop_stream()
            self._socket.close()
