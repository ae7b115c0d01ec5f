"""RTCP (RFC 3550 §6): read compound packets for stats, and build our Receiver Report.

Why only this much: the gateway reads a peer's RTCP to learn its sender reports (for LSR/DLSR)
and its BYE, and sends a Receiver Report so carriers that watch RTCP see a live, healthy leg.
Every other packet type (APP, feedback, XR) is kept as opaque bytes so a compound packet that
carries them still parses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from edge_media.rtp.receiver import ReceiverStats

RTCP_VERSION = 2
HEADER_SIZE = 4
REPORT_BLOCK_SIZE = 24
SENDER_INFO_SIZE = 24  # SSRC + NTP timestamp + RTP timestamp + packet and octet counts
MAX_COUNT = 31  # the 5-bit RC/SC field
MAX_SDES_TEXT = 255
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
SDES_END = 0
SDES_CNAME = 1
CUMULATIVE_LOST_MAX = 0x7FFFFF  # §6.4.1: 24-bit signed, clamped
CUMULATIVE_LOST_MIN = -0x800000
DLSR_UNITS_PER_SECOND = 65536  # §6.4.1: DLSR is in units of 1/65536 seconds

_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IQIII")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_PADDING_BIT = 0x20


class RtcpParseError(Exception):
    """A datagram is not a well-formed RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """§6.4.1 reception report block about one source."""

    ssrc: int
    fraction_lost: int  # lost fraction since the last report, in 1/256
    cumulative_lost: int  # signed: duplicates can make it negative
    highest_sequence: int  # extended: cycles << 16 | highest sequence number
    jitter: int  # timestamp units
    last_sr: int  # middle 32 bits of the last SR's NTP timestamp, 0 if none
    delay_since_last_sr: int  # 1/65536 s, 0 if no SR yet

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(
            ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr
        )

    def serialize(self) -> bytes:
        lost = min(max(self.cumulative_lost, CUMULATIVE_LOST_MIN), CUMULATIVE_LOST_MAX)
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost.to_bytes(3, "big", signed=True),
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    """§6.4.1 SR."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format: seconds << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension, kept opaque

    def serialize(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        blocks = b"".join(block.serialize() for block in self.reports)
        return _wrap(PT_SR, len(self.reports), body + blocks + self.extension)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """§6.4.2 RR."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def serialize(self) -> bytes:
        blocks = b"".join(block.serialize() for block in self.reports)
        return _wrap(PT_RR, len(self.reports), _SSRC.pack(self.ssrc) + blocks + self.extension)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """§6.5: one source's items as (type, text) pairs, without the terminating null item."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """§6.5 SDES."""

    chunks: tuple[SdesChunk, ...]

    def serialize(self) -> bytes:
        parts = []
        for chunk in self.chunks:
            data = bytearray(_SSRC.pack(chunk.ssrc))
            for kind, text in chunk.items:
                if len(text) > MAX_SDES_TEXT:
                    raise ValueError(f"SDES item is {len(text)} bytes, at most 255 fit")
                data += bytes((kind, len(text))) + text
            # The item list ends with a null octet, then null octets up to a 32-bit boundary.
            data += bytes(4 - len(data) % 4)
            parts.append(bytes(data))
        return _wrap(PT_SDES, len(self.chunks), b"".join(parts))


@dataclass(frozen=True, slots=True)
class Bye:
    """§6.6 BYE."""

    ssrcs: tuple[int, ...]
    reason: bytes = b""

    def serialize(self) -> bytes:
        body = b"".join(_SSRC.pack(ssrc) for ssrc in self.ssrcs)
        if self.reason:
            if len(self.reason) > MAX_SDES_TEXT:
                raise ValueError(f"BYE reason is {len(self.reason)} bytes, at most 255 fit")
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _wrap(PT_BYE, len(self.ssrcs), body)


@dataclass(frozen=True, slots=True)
class RtcpOther:
    """Any other packet type (APP, RTPFB, PSFB, XR ...), kept as its body."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        return _wrap(self.packet_type, self.count, self.body)


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpOther


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Split and parse a compound packet (§6.1); raises RtcpParseError naming the bad byte."""
    if not data:
        raise RtcpParseError("RTCP packet is empty")
    size = len(data)
    offset = 0
    packets: list[RtcpPacket] = []
    while offset < size:
        remaining = size - offset
        if remaining < HEADER_SIZE:
            raise RtcpParseError(f"RTCP header at byte {offset} needs 4 bytes, {remaining} remain")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        version = first >> 6
        if version != RTCP_VERSION:
            raise RtcpParseError(f"RTCP version at byte {offset} is {version}, expected 2")
        # §6.4.1: "The length of this RTCP packet in 32-bit words minus one, including the
        # header and any padding."
        length = (words + 1) * 4
        if length > remaining:
            raise RtcpParseError(
                f"RTCP packet at byte {offset} declares {length} bytes, {remaining} remain"
            )
        end = offset + length
        body_end = end
        if first & _PADDING_BIT:
            padding = data[end - 1]
            if padding == 0 or padding > length - HEADER_SIZE:
                raise RtcpParseError(f"RTCP padding count {padding} at byte {offset} is invalid")
            body_end = end - padding
        body = bytes(data[offset + HEADER_SIZE : body_end])
        packets.append(_parse_body(packet_type, first & MAX_COUNT, body, offset))
        offset = end
    return packets


def _parse_body(packet_type: int, count: int, body: bytes, at: int) -> RtcpPacket:
    if packet_type == PT_SR:
        need = SENDER_INFO_SIZE + REPORT_BLOCK_SIZE * count
        if len(body) < need:
            raise RtcpParseError(
                f"RTCP SR at byte {at} with {count} report blocks needs {need} body bytes, "
                f"has {len(body)}"
            )
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        return SenderReport(
            ssrc, ntp, rtp_ts, packets, octets, _blocks(body, SENDER_INFO_SIZE, count), body[need:]
        )
    if packet_type == PT_RR:
        need = _SSRC.size + REPORT_BLOCK_SIZE * count
        if len(body) < need:
            raise RtcpParseError(
                f"RTCP RR at byte {at} with {count} report blocks needs {need} body bytes, "
                f"has {len(body)}"
            )
        (ssrc,) = _SSRC.unpack_from(body)
        return ReceiverReport(ssrc, _blocks(body, _SSRC.size, count), body[need:])
    if packet_type == PT_SDES:
        return SourceDescription(_sdes_chunks(body, count, at))
    if packet_type == PT_BYE:
        need = _SSRC.size * count
        if len(body) < need:
            raise RtcpParseError(
                f"RTCP BYE at byte {at} with {count} sources needs {need} body bytes, "
                f"has {len(body)}"
            )
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = b""
        if len(body) > need:
            reason_end = need + 1 + body[need]
            if reason_end > len(body):
                raise RtcpParseError(f"RTCP BYE at byte {at} has a reason longer than the packet")
            reason = body[need + 1 : reason_end]
        return Bye(ssrcs, reason)
    return RtcpOther(packet_type, count, body)


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(
        ReportBlock.parse(body, offset + REPORT_BLOCK_SIZE * index) for index in range(count)
    )


def _sdes_chunks(body: bytes, count: int, at: int) -> tuple[SdesChunk, ...]:
    chunks = []
    offset = 0
    for _ in range(count):
        if offset + _SSRC.size > len(body):
            raise RtcpParseError(f"RTCP SDES at byte {at} is missing a chunk")
        (ssrc,) = _SSRC.unpack_from(body, offset)
        offset += _SSRC.size
        items = []
        while True:
            if offset >= len(body):
                raise RtcpParseError(f"RTCP SDES at byte {at} has an unterminated item list")
            kind = body[offset]
            if kind == SDES_END:
                # The list ends with a null octet, padded with nulls to a 32-bit boundary.
                offset += 4 - offset % 4
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpParseError(f"RTCP SDES at byte {at} has a truncated item")
            length = body[offset + 1]
            items.append((kind, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return tuple(chunks)


def _wrap(packet_type: int, count: int, body: bytes) -> bytes:
    if count > MAX_COUNT:
        raise ValueError(f"RTCP count {count} does not fit in 5 bits")
    if len(body) % 4:
        raise ValueError(f"RTCP body must be whole 32-bit words, got {len(body)} bytes")
    return _HEADER.pack(RTCP_VERSION << 6 | count, packet_type, len(body) // 4) + body


def ntp_middle(ntp_timestamp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp, the form LSR carries (§6.4.1)."""
    return (ntp_timestamp >> 16) & 0xFFFFFFFF


class ReceiverReportBuilder:
    """Builds our RR + SDES CNAME compound (§6.1 requires the CNAME in every compound packet).

    Keeps the previous report's expected/received counts, which the fraction-lost field needs
    (RFC 3550 A.3).
    """

    __slots__ = ("_cname", "_expected_prior", "_received_prior", "_source", "_ssrc")

    def __init__(self, ssrc: int, cname: bytes) -> None:
        self._ssrc = ssrc
        self._cname = cname
        self._source: int | None = None
        self._expected_prior = 0
        self._received_prior = 0

    def report_block(self, stats: ReceiverStats, now: float) -> ReportBlock | None:
        """The block about the peer's current SSRC, or None before any RTP arrived."""
        if stats.ssrc is None:
            return None
        if stats.ssrc != self._source or stats.expected < self._expected_prior:
            # A new source, or the same SSRC restarted its sequence: count from zero.
            self._source = stats.ssrc
            self._expected_prior = 0
            self._received_prior = 0
        expected_interval = stats.expected - self._expected_prior
        lost_interval = expected_interval - (stats.received - self._received_prior)
        self._expected_prior = stats.expected
        self._received_prior = stats.received
        # RFC 3550 A.3: fraction = (lost_interval << 8) / expected_interval, 0 if none lost.
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        if stats.last_sr_arrival is None:
            last_sr = delay = 0
        else:
            last_sr = stats.last_sr
            delay = min(int((now - stats.last_sr_arrival) * DLSR_UNITS_PER_SECOND), 0xFFFFFFFF)
        return ReportBlock(
            ssrc=stats.ssrc,
            fraction_lost=fraction,
            cumulative_lost=stats.stream_lost,
            highest_sequence=stats.extended_highest_sequence & 0xFFFFFFFF,
            jitter=stats.jitter,
            last_sr=last_sr,
            delay_since_last_sr=max(delay, 0),
        )

    def build(self, stats: ReceiverStats, now: float) -> bytes:
        """Serialized RR (with one block once media has arrived) followed by SDES CNAME."""
        block = self.report_block(stats, now)
        report = ReceiverReport(self._ssrc, () if block is None else (block,))
        sdes = SourceDescription((SdesChunk(self._ssrc, ((SDES_CNAME, self._cname),)),))
        return report.serialize() + sdes.serialize()
