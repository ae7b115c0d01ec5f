"""Per-call inbound RTP state: latching, filtering, loss/jitter stats and delivery to the bot.

`RtpReceiver.on_packet(data, addr, now)` is the whole contract: it returns what to deliver
(20 ms μ-law frames, DTMF digits) or why the datagram was dropped. No socket, no clock.

Reordering policy (deliver-late-drop, no hold): every in-order packet is delivered the moment
it arrives; a packet older than one already delivered is counted (out_of_order, late) and
dropped. Why: a bot pipeline (VAD, then streaming STT) gains nothing from a 20 ms fragment spliced
in after the audio that followed it, while any hold-and-release window delays *every* packet
after each loss by the window length (3 packets = 60 ms) and real networks lose packets far more
often than they reorder them. Dropping also keeps the frames handed to the bot strictly in
sequence, which the Twilio-stream `media.chunk`/`timestamp` counters assume. Late packets still
count as received for RFC 3550 loss, since the network did deliver them.

Latching (RFC 4961 symmetric RTP): the first valid packet (parses, negotiated payload type)
fixes the remote address; we send to that address too, which is what gets media through NAT.
The security trade-off: anyone who can reach our port can send RTP, and a receiver that follows
every new source hands the call to them (the 2017 "RTP Bleed" class of bug). So another source
can take over only when (a) the latched source has been silent for `relatch_after` seconds (the
legitimate case: a NAT rebinding or a media server change; an attacker can then take over only a
stream that has gone quiet), or (b) `relatch_on_new_ssrc` is on and the newcomer uses a new
SSRC (fast hand-over after a transfer, but it lets any spoofer with a fresh SSRC win at once,
so it is off by default).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from edge_media.rtp.dtmf import END_TIMEOUT, DtmfDigit, DtmfEmit, DtmfParseError, DtmfReceiver
from edge_media.rtp.g711 import ALAW_TO_ULAW_TABLE, PAYLOAD_TYPE_PCMA, PAYLOAD_TYPE_PCMU
from edge_media.rtp.packet import (
    RTCP_MUX_FIRST_TYPE,
    RTCP_MUX_LAST_TYPE,
    RTP_HEADER,
    RTP_HEADER_SIZE,
    Address,
    RtpPacket,
    RtpParseError,
)
from edge_media.rtp.repacketize import FRAME_BYTES, Repacketizer
from edge_media.rtp.rtcp import Bye, RtcpParseError, SenderReport, ntp_middle, parse_compound
from edge_media.rtp.seq import SEQ_MASK, SEQ_MODULO, TS_HALF, TS_MASK

CLOCK_RATE = 8000
DEFAULT_DTMF_PAYLOAD_TYPE = 101
DEFAULT_RELATCH_AFTER = 1.0  # seconds of silence from the latched source
# RFC 3550 A.1: a forward jump below MAX_DROPOUT is a gap; within MAX_MISORDER behind is a
# reordered or duplicated packet; anything else is a jump confirmed by the next packet.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
DUPLICATE_WINDOW = 64  # sequence numbers behind the highest we can still tell apart from dups
_WINDOW_MASK = (1 << DUPLICATE_WINDOW) - 1
_JITTER_GAIN = 16  # RFC 3550 A.8: J += (|D| - J) / 16
_PLAIN_FIRST_BYTE = 0x80  # V=2, P=0, X=0, CC=0
_MARKER_BIT = 0x80
_unpack_header = RTP_HEADER.unpack_from


class DropReason(enum.Enum):
    """Why a datagram produced nothing for the bot."""

    MALFORMED = "malformed"  # not RTP (or not RTCP on a muxed port)
    WRONG_SOURCE = "wrong_source"  # not from the latched address
    PAYLOAD_TYPE = "payload_type"  # neither the negotiated audio nor telephone-event type
    EMPTY = "empty"  # valid RTP without payload
    DUPLICATE = "duplicate"
    LATE = "late"  # older than audio already delivered
    SEQUENCE_JUMP = "sequence_jump"  # RFC 3550 A.1 jump, held until the next packet confirms it
    BAD_DTMF = "bad_dtmf"  # telephone-event payload shorter than 4 bytes
    RTCP = "rtcp"  # RTCP on a muxed port: read into the stats, nothing to deliver


class Received(NamedTuple):
    """What one datagram means for the bot: frames to send, digits to report, or a drop."""

    frames: tuple[bytes, ...]
    digits: tuple[DtmfDigit, ...]
    drop: DropReason | None


NOTHING = Received((), (), None)
_DROPPED = {reason: Received((), (), reason) for reason in DropReason}


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """What the SDP negotiated, plus the latching policy."""

    audio_payload_type: int = PAYLOAD_TYPE_PCMU  # PCMA (8) is converted to μ-law on delivery
    dtmf_payload_type: int | None = DEFAULT_DTMF_PAYLOAD_TYPE
    frame_bytes: int | None = FRAME_BYTES  # cut delivered audio to this size; None: as received
    relatch_after: float | None = DEFAULT_RELATCH_AFTER  # None: never follow a new source
    relatch_on_new_ssrc: bool = False
    dtmf_emit: DtmfEmit = DtmfEmit.START
    dtmf_end_timeout: float = END_TIMEOUT


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """A snapshot. Counters cover the whole call; the RFC 3550 fields cover the current SSRC."""

    packets_in: int  # every datagram handed to on_packet, RTCP included
    bytes_in: int
    packets_delivered: int  # audio packets whose payload went to the bot
    frames_delivered: int
    lost: int  # RFC 3550 A.3 cumulative loss, summed over every stream of the call
    late: int
    duplicates: int
    out_of_order: int
    jitter_ms: float
    max_gap_ms: float  # longest time between two audio packets of one stream
    ssrc_changes: int
    relatches: int
    dtmf_digits: int
    rtcp_packets: int
    bye_received: bool
    dropped: Mapping[DropReason, int]
    remote_addr: Address | None
    ssrc: int | None
    extended_highest_sequence: int
    expected: int
    received: int
    stream_lost: int  # expected - received for the current stream
    jitter: int  # timestamp units, as a report block carries it
    last_sr: int  # middle 32 bits of the NTP time of the last SR from `ssrc`
    last_sr_arrival: float | None


class RtpReceiver:
    """Inbound RTP for one call leg. Feed datagrams; act on the returned `Received`."""

    __slots__ = (
        "_audio_pt",
        "_bad_seq",
        "_base_seq",
        "_bye",
        "_bytes_in",
        "_config",
        "_convert",
        "_cycles",
        "_dropped",
        "_dtmf",
        "_dtmf_digits",
        "_dtmf_open",
        "_dtmf_pt",
        "_duplicates",
        "_frame_bytes",
        "_frames_delivered",
        "_holding",
        "_jitter",
        "_last_arrival",
        "_last_heard",
        "_last_sr",
        "_last_sr_arrival",
        "_last_timestamp",
        "_late",
        "_lost_before",
        "_max_gap",
        "_max_seq",
        "_out_of_order",
        "_packets_delivered",
        "_packets_in",
        "_received",
        "_relatches",
        "_remote",
        "_repacketizer",
        "_rtcp_packets",
        "_seen",
        "_ssrc",
        "_ssrc_changes",
    )

    def __init__(self, config: ReceiverConfig | None = None) -> None:
        config = config or ReceiverConfig()
        self._config = config
        self._audio_pt = config.audio_payload_type
        self._dtmf_pt = config.dtmf_payload_type
        self._convert = config.audio_payload_type == PAYLOAD_TYPE_PCMA
        self._frame_bytes = config.frame_bytes
        self._repacketizer = Repacketizer(config.frame_bytes) if config.frame_bytes else None
        self._dtmf = DtmfReceiver(emit=config.dtmf_emit, end_timeout=config.dtmf_end_timeout)
        self._dtmf_open = False  # a press is open: check its timeout on audio packets
        self._remote: Address | None = None
        self._last_heard = 0.0  # last valid packet from the latched source
        self._packets_in = 0
        self._bytes_in = 0
        self._packets_delivered = 0
        self._frames_delivered = 0
        self._late = 0
        self._duplicates = 0
        self._out_of_order = 0
        self._ssrc_changes = 0
        self._relatches = 0
        self._dtmf_digits = 0
        self._rtcp_packets = 0
        self._bye = False
        self._dropped = dict.fromkeys(DropReason, 0)
        self._lost_before = 0
        self._max_gap = 0.0
        self._last_sr = 0
        self._last_sr_arrival: float | None = None
        self._ssrc: int | None = None
        self._start_stream(0)

    @property
    def remote_addr(self) -> Address | None:
        """The latched source, where outbound RTP should go (None until the first packet)."""
        return self._remote

    def set_payload_types(self, audio: int, dtmf: int | None) -> None:
        """Apply what SDP negotiated after the socket was opened.

        The port must exist before the offer/answer (it goes into our SDP), so the receiver is
        built before the payload types are known; a re-INVITE may change them again.
        """
        self._audio_pt = audio
        self._dtmf_pt = dtmf
        self._convert = audio == PAYLOAD_TYPE_PCMA

    def on_packet(self, data: bytes, addr: Address, now: float) -> Received:
        """Handle one datagram from `addr` received at `now` (seconds, any monotonic clock)."""
        self._packets_in += 1
        self._bytes_in += len(data)
        if len(data) >= 2 and RTCP_MUX_FIRST_TYPE <= data[1] <= RTCP_MUX_LAST_TYPE:
            return self.on_rtcp(data, addr, now)
        if len(data) >= RTP_HEADER_SIZE and data[0] == _PLAIN_FIRST_BYTE:
            # The common case (V=2, no padding, extension or CSRC) without building an object.
            _, second, sequence, timestamp, ssrc = _unpack_header(data)
            payload = data[RTP_HEADER_SIZE:]
        else:
            try:
                packet = RtpPacket.parse(data, keep_extension=False)
            except RtpParseError:
                return self._drop(DropReason.MALFORMED)
            second = packet.payload_type | (_MARKER_BIT if packet.marker else 0)
            sequence, timestamp, ssrc = packet.sequence, packet.timestamp, packet.ssrc
            payload = packet.payload
        payload_type = second & 0x7F
        if payload_type != self._audio_pt and payload_type != self._dtmf_pt:
            return self._drop(DropReason.PAYLOAD_TYPE)
        if addr != self._remote and not self._may_latch(addr, ssrc, now):
            return self._drop(DropReason.WRONG_SOURCE)
        self._last_heard = now
        if payload_type == self._audio_pt:
            return self._on_audio(ssrc, sequence, timestamp, second & _MARKER_BIT, payload, now)
        return self._on_dtmf(ssrc, sequence, timestamp, bool(second & _MARKER_BIT), payload, now)

    def on_rtcp(self, data: bytes, addr: Address, now: float) -> Received:
        """RTCP from the peer (muxed, or from the separate RTCP port): SR times and BYE."""
        if self._remote is not None and addr[0] != self._remote[0]:
            return self._drop(DropReason.WRONG_SOURCE)
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            return self._drop(DropReason.MALFORMED)
        self._rtcp_packets += 1
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc == self._ssrc:
                self._last_sr = ntp_middle(packet.ntp_timestamp)
                self._last_sr_arrival = now
            elif isinstance(packet, Bye) and self._ssrc in packet.ssrcs:
                self._bye = True
        return self._drop(DropReason.RTCP)

    def poll(self, now: float) -> tuple[DtmfDigit, ...]:
        """Digits whose end packets were all lost and have now timed out (END mode only)."""
        digits = self._dtmf.poll(now)
        self._dtmf_open = self._dtmf.deadline is not None
        self._dtmf_digits += len(digits)
        return tuple(digits)

    def next_deadline(self) -> float | None:
        """When `poll` next has work, or None."""
        return self._dtmf.deadline

    def idle_for(self, now: float) -> float | None:
        """Seconds since the latched source last sent valid RTP (None before the first packet);
        the caller's RTP-timeout check for dead calls."""
        return None if self._remote is None else now - self._last_heard

    def stats(self) -> ReceiverStats:
        expected = self._expected()
        stream_lost = expected - self._received
        return ReceiverStats(
            packets_in=self._packets_in,
            bytes_in=self._bytes_in,
            packets_delivered=self._packets_delivered,
            frames_delivered=self._frames_delivered,
            lost=self._lost_before + stream_lost,
            late=self._late,
            duplicates=self._duplicates,
            out_of_order=self._out_of_order,
            jitter_ms=self._jitter * 1000 / CLOCK_RATE,
            max_gap_ms=self._max_gap * 1000,
            ssrc_changes=self._ssrc_changes,
            relatches=self._relatches,
            dtmf_digits=self._dtmf_digits,
            rtcp_packets=self._rtcp_packets,
            bye_received=self._bye,
            dropped=MappingProxyType(dict(self._dropped)),
            remote_addr=self._remote,
            ssrc=self._ssrc,
            extended_highest_sequence=self._cycles + self._max_seq,
            expected=expected,
            received=self._received,
            stream_lost=stream_lost,
            jitter=int(self._jitter),
            last_sr=self._last_sr,
            last_sr_arrival=self._last_sr_arrival,
        )

    # -- internals ---------------------------------------------------------------------------

    def _drop(self, reason: DropReason) -> Received:
        self._dropped[reason] += 1
        return _DROPPED[reason]

    def _may_latch(self, addr: Address, ssrc: int, now: float) -> bool:
        if self._remote is None:
            self._remote = addr
            return True
        config = self._config
        silent = config.relatch_after is not None and now - self._last_heard >= config.relatch_after
        new_ssrc = config.relatch_on_new_ssrc and ssrc != self._ssrc
        if not (silent or new_ssrc):
            return False
        self._remote = addr
        self._relatches += 1
        return True

    def _expected(self) -> int:
        if self._ssrc is None:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    def _start_stream(self, sequence: int) -> None:
        # RFC 3550 A.1 init_seq, without the probation step: the first packet of a stream is
        # delivered at once (latching and the payload-type filter already vetted the source).
        self._base_seq = sequence
        self._max_seq = sequence
        self._bad_seq = SEQ_MODULO + 1  # matches no sequence number
        self._cycles = 0
        self._received = 0
        self._seen = 1
        self._jitter = 0.0
        self._last_arrival: float | None = None
        self._last_timestamp = 0
        self._holding = False  # the repacketizer holds part of a frame
        if self._repacketizer is not None:
            self._repacketizer.reset()

    def _new_stream(self, sequence: int) -> None:
        self._lost_before += self._expected() - self._received
        self._start_stream(sequence)

    def _track(self, ssrc: int, sequence: int) -> DropReason | None:
        """RFC 3550 A.1 update_seq for the current stream; None means in order."""
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                self._ssrc_changes += 1
                self._dtmf.reset()
                self._dtmf_open = False
            self._new_stream(sequence)
            self._ssrc = ssrc
            self._received = 1
            return None
        delta = (sequence - self._max_seq) & SEQ_MASK
        if 0 < delta < MAX_DROPOUT:
            if sequence < self._max_seq:
                self._cycles += SEQ_MODULO  # wrapped
            self._max_seq = sequence
            self._seen = ((self._seen << delta) | 1) & _WINDOW_MASK
            self._received += 1
            return None
        if delta == 0:
            self._duplicates += 1
            return DropReason.DUPLICATE
        behind = SEQ_MODULO - delta
        if behind <= MAX_MISORDER:
            if behind < DUPLICATE_WINDOW:
                bit = 1 << behind
                if self._seen & bit:
                    self._duplicates += 1
                    return DropReason.DUPLICATE
                self._seen |= bit
            self._out_of_order += 1
            self._received += 1
            return DropReason.LATE
        if sequence == self._bad_seq:
            # Two packets in a row after the jump: the peer restarted its sequence.
            self._new_stream(sequence)
            self._received = 1
            return None
        self._bad_seq = (sequence + 1) & SEQ_MASK
        return DropReason.SEQUENCE_JUMP

    def _on_audio(
        self, ssrc: int, sequence: int, timestamp: int, marker: int, payload: bytes, now: float
    ) -> Received:
        verdict = self._track(ssrc, sequence)
        if verdict is DropReason.DUPLICATE or verdict is DropReason.SEQUENCE_JUMP:
            return self._drop(verdict)

        last = self._last_arrival
        if last is not None:
            gap = now - last
            if gap > self._max_gap:
                self._max_gap = gap
            # RFC 3550 A.8: D(i,j) = (Rj - Ri) - (Sj - Si), in timestamp units; the timestamp
            # difference is taken with wrap-around so a 32-bit rollover is no spike.
            d = gap * CLOCK_RATE - (
                ((timestamp - self._last_timestamp + TS_HALF) & TS_MASK) - TS_HALF
            )  # ts_diff, inlined on the per-packet path
            self._jitter += (abs(d) - self._jitter) / _JITTER_GAIN
        self._last_arrival = now
        self._last_timestamp = timestamp

        digits = self.poll(now) if self._dtmf_open else ()
        if verdict is DropReason.LATE:
            self._late += 1
            self._dropped[DropReason.LATE] += 1
            return Received((), digits, DropReason.LATE) if digits else _DROPPED[verdict]
        if not payload:
            self._dropped[DropReason.EMPTY] += 1
            return Received((), digits, DropReason.EMPTY) if digits else _DROPPED[DropReason.EMPTY]
        if self._convert:
            payload = payload.translate(ALAW_TO_ULAW_TABLE)
        self._packets_delivered += 1
        repacketizer = self._repacketizer
        if repacketizer is None or (len(payload) == self._frame_bytes and not self._holding):
            self._frames_delivered += 1
            return Received((payload,), digits, None)
        # RFC 3551 §4.1: a marker starts a talkspurt; the previous one's tail goes out padded
        # with silence instead of being glued onto the new speech.
        tail = repacketizer.flush() if marker else None
        pushed = repacketizer.push(payload)
        self._holding = repacketizer.pending > 0
        frames = (tail, *pushed) if tail is not None else tuple(pushed)
        self._frames_delivered += len(frames)
        return Received(frames, digits, None)

    def _on_dtmf(
        self, ssrc: int, sequence: int, timestamp: int, marker: bool, payload: bytes, now: float
    ) -> Received:
        # RFC 4733 §2.1: events normally share the audio's SSRC and sequence space, so they
        # count for loss; some senders (SIPp) use their own SSRC, which must not look like a
        # change of the audio stream.
        if ssrc == self._ssrc and self._track(ssrc, sequence) is DropReason.DUPLICATE:
            return self._drop(DropReason.DUPLICATE)
        try:
            digits = self._dtmf.on_packet(payload, timestamp, marker, now)
        except DtmfParseError:
            return self._drop(DropReason.BAD_DTMF)
        self._dtmf_open = self._dtmf.deadline is not None
        if not digits:
            return NOTHING
        self._dtmf_digits += len(digits)
        return Received((), tuple(digits), None)
