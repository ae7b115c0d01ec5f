"""What went into the node, read back from a loopback capture: for bench/calls.py.

Why our own pcap reader instead of tshark fields: the figure "RTP in → bot `media` sent" needs
the WebSocket messages the node wrote, and those are client frames (masked, RFC 6455 §5.3) in a
TCP byte stream. Reassembling the stream and unmasking here is a few dozen lines and needs no
particular tshark version; it also reads the RTP payloads and the node's 200 OK in the same pass.

Matching: sipp loops one speech file into every call, so a payload alone does not name a call.
The node's 200 OK carries the caller's From (``+15550100<sipp call number>``) and the node's RTP
port in its SDP; the WebSocket's ``start`` carries the same From. Within one call a speech frame
recurs only once per loop of the file (seconds), so the RTP packet a `media` message came from
is the latest one of that call with the same payload captured before the message. Frames that
repeat within `AMBIGUOUS_S` (silence) are skipped rather than guessed.

Capture time on ``lo`` is taken when the sender hands the packet to the loopback device, so an
RTP packet's time is sipp's send (the node can read it from then on) and a WebSocket segment's
time is the node's write: the difference is the node's added latency, its queueing included.
"""

from __future__ import annotations

import binascii
import json
import mmap
import re
import struct
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AMBIGUOUS_S",
    "BURST_GAP_S",
    "CaptureIn",
    "LatencySample",
    "WsFlow",
    "burst_positions",
    "match_latency",
    "read_capture_in",
    "read_pcap",
]

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_HEADER = 24
RECORD_HEADER = 16
LINK_HEADER = {1: 14, 113: 16, 276: 20, 0: 4}  # Ethernet (lo), Linux cooked v1/v2, BSD null
ETHERTYPE_IPV4 = 0x0800
PROTO_TCP = 6
PROTO_UDP = 17
TCP_SYN = 0x02
SEQ_MOD = 1 << 32
RTP_VERSION = 2
PT_PCMU = 0
WS_TEXT = 0x1
WS_FIN = 0x80
WS_MASKED = 0x80
AMBIGUOUS_S = 1.0  # a payload seen again within this long in one call is not matched
MAX_MATCH_S = 5.0  # a match further back than this is taken as the wrong packet
BURST_GAP_S = 0.001  # caller → node packets closer than this belong to one sipp burst
MEDIA_PREFIX = b'{"event":"media"'
PAYLOAD_KEY = b'"payload":"'
_FROM = re.compile(rb"^(?:From|f)\s*:.*?<?sips?:([^@;>]+)@", re.IGNORECASE | re.MULTILINE)
_CSEQ = re.compile(rb"^CSeq\s*:\s*\d+\s+(\w+)", re.IGNORECASE | re.MULTILINE)
_AUDIO_PORT = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


def read_pcap(path: Path) -> Iterator[tuple[float, bytes]]:
    """(capture epoch, IPv4 packet) for every IPv4 record of a classic pcap file."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if len(data) < PCAP_HEADER:
            return
        magic_le = struct.unpack_from("<I", data, 0)[0]
        if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            endian = "<"
        elif struct.unpack_from(">I", data, 0)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            endian = ">"
        else:
            raise ValueError(f"{path}: not a classic pcap file (capture with -F pcap)")
        magic = struct.unpack_from(endian + "I", data, 0)[0]
        scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
        linktype = struct.unpack_from(endian + "I", data, 20)[0]
        skip = LINK_HEADER.get(linktype)
        if skip is None:
            raise ValueError(f"{path}: link type {linktype} not supported")
        record = struct.Struct(endian + "IIII")
        offset, end = PCAP_HEADER, len(data)
        while offset + RECORD_HEADER <= end:
            seconds, fraction, captured, _ = record.unpack_from(data, offset)
            offset += RECORD_HEADER
            frame = data[offset : offset + captured]
            offset += captured
            if linktype == 1 and frame[12:14] != b"\x08\x00":
                continue
            yield seconds + fraction * scale, frame[skip:]


@dataclass
class WsFlow:
    """The node → bot half of one WebSocket connection, reassembled."""

    node_port: int
    next_seq: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    upgraded: bool = False
    broken: bool = False  # a capture gap: later frames cannot be located in the stream
    start: dict[str, Any] | None = None  # the `start` message's customParameters
    media: list[tuple[float, int]] = field(default_factory=list)  # (write time, payload hash)
    texts: int = 0

    def segment(self, time: float, seq: int, flags: int, data: bytes) -> None:
        if self.broken:
            return
        if flags & TCP_SYN:
            self.next_seq = (seq + 1) % SEQ_MOD
            return
        if not data:
            return
        if self.next_seq is None:
            self.next_seq = seq
        ahead = (seq - self.next_seq) % SEQ_MOD
        if ahead == 0:
            self.buffer += data
        elif ahead > SEQ_MOD // 2:  # a retransmission, maybe with new bytes at its end
            behind = SEQ_MOD - ahead
            if behind >= len(data):
                return
            self.buffer += data[behind:]
        else:
            self.broken = True
            return
        self.next_seq = (seq + len(data)) % SEQ_MOD
        self._frames(time)

    def _frames(self, time: float) -> None:
        buf = self.buffer
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del buf[: end + 4]
            self.upgraded = True
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length, head = second & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, head = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, head = int.from_bytes(buf[2:10], "big"), 10
            mask = b""
            if second & WS_MASKED:
                mask, head = bytes(buf[head : head + 4]), head + 4
            if len(buf) < head + length:
                return
            payload = bytes(buf[head : head + length])
            del buf[: head + length]
            if mask:
                payload = _unmask(payload, mask)
            if first & 0x0F == WS_TEXT and first & WS_FIN:
                self._text(time, payload)

    def _text(self, time: float, text: bytes) -> None:
        self.texts += 1
        if text.startswith(MEDIA_PREFIX):
            start = text.rfind(PAYLOAD_KEY) + len(PAYLOAD_KEY)
            try:
                audio = binascii.a2b_base64(text[start : text.find(b'"', start)])
            except binascii.Error:
                return
            self.media.append((time, hash(audio)))
        elif self.start is None and b'"start"' in text[:20]:
            try:
                params = json.loads(text)["start"]["customParameters"]
            except (ValueError, KeyError, TypeError):
                return
            if isinstance(params, dict):
                self.start = params


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 §5.3: XOR with the 4-byte key, done as one big integer (fast in CPython)."""
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


@dataclass
class CaptureIn:
    """Caller → node RTP, the node's INVITE answers and its writes to the bot."""

    rtp_in: dict[int, dict[int, list[float]]]  # node RTP port -> payload hash -> capture times
    answers: dict[str, int]  # caller's From user -> node RTP port (200 OK to INVITE)
    flows: dict[int, WsFlow]  # node's TCP port -> flow
    packets: int = 0


def read_capture_in(
    path: Path, *, caller_media_port: int, node_sip_port: int, bot_port: int
) -> CaptureIn:
    """One pass over the capture of traffic into the node (and the node's SIP and WS out)."""
    result = CaptureIn(rtp_in={}, answers={}, flows={})
    rtp_in, flows = result.rtp_in, result.flows
    for time, ip in read_pcap(path):
        result.packets += 1
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        proto = ip[9]
        body = ip[ihl:total]
        if len(body) < 8:
            continue
        sport, dport = struct.unpack_from("!HH", body, 0)
        if proto == PROTO_UDP:
            data = body[8:]
            if sport == caller_media_port:
                payload = _rtp_audio(data)
                if payload is not None:
                    rtp_in.setdefault(dport, {}).setdefault(hash(payload), []).append(time)
            elif sport == node_sip_port:
                _answer(data, result.answers)
        elif proto == PROTO_TCP and dport == bot_port and len(body) >= 20:
            seq = int.from_bytes(body[4:8], "big")
            offset = (body[12] >> 4) * 4
            flow = flows.get(sport)
            if flow is None:
                flow = flows[sport] = WsFlow(sport)
            flow.segment(time, seq, body[13], bytes(body[offset:]))
    return result


def _rtp_audio(data: bytes) -> bytes | None:
    """The PCMU payload of an RTP packet (RFC 3550 §5.1), None for anything else."""
    if len(data) < 12 or data[0] >> 6 != RTP_VERSION or data[1] & 0x7F != PT_PCMU:
        return None
    head = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension (§5.3.1)
        if len(data) < head + 4:
            return None
        head += 4 + 4 * int.from_bytes(data[head + 2 : head + 4], "big")
    end = len(data)
    if data[0] & 0x20 and end > head:  # padding: the last byte counts it
        end -= data[-1]
    return data[head:end] if end > head else None


def _answer(message: bytes, answers: dict[str, int]) -> None:
    if not message.startswith(b"SIP/2.0 200"):
        return
    cseq = _CSEQ.search(message)
    if cseq is None or cseq.group(1).upper() != b"INVITE":
        return
    caller = _FROM.search(message)
    port = _AUDIO_PORT.search(message)
    if caller is not None and port is not None:
        answers.setdefault(caller.group(1).decode(errors="replace"), int(port.group(1)))


@dataclass(frozen=True)
class LatencySample:
    sent: float  # epoch of the node's write of the `media` message
    ms: float  # after the RTP packet it carries was captured
    rtp_at: float  # that packet's capture time


@dataclass
class LatencyMatch:
    samples: list[LatencySample]
    matched_flows: int
    flows: int
    ambiguous: int  # repeating payloads (silence): skipped
    unmatched: int  # no RTP packet of that call with that payload before the message
    broken_flows: int


def burst_positions(capture: CaptureIn, gap_s: float = BURST_GAP_S) -> dict[float, int]:
    """Each caller → node packet's place in its burst (0 = first), bursts split by gaps.

    sipp sends every call's packet of a 20 ms tick back to back from one thread, so the node
    gets N packets within a millisecond and the last one waits for the N - 1 ahead of it; a
    real carrier's calls arrive on unrelated phases. The head of a burst shows the node's own
    latency, the tail what queueing behind the burst adds.
    """
    times = sorted(t for table in capture.rtp_in.values() for ts in table.values() for t in ts)
    positions: dict[float, int] = {}
    previous, index = float("-inf"), 0
    for t in times:
        index = index + 1 if t - previous <= gap_s else 0
        positions[t] = index
        previous = t
    return positions


def match_latency(capture: CaptureIn) -> LatencyMatch:
    """Per `media` message: its write time minus the capture time of its RTP packet."""
    samples: list[LatencySample] = []
    ambiguous = unmatched = matched_flows = broken = 0
    for flow in capture.flows.values():
        broken += flow.broken
        caller = str((flow.start or {}).get("from_number", ""))
        port = capture.answers.get(caller)
        table = capture.rtp_in.get(port) if port is not None else None
        if table is None:
            unmatched += len(flow.media)
            continue
        matched_flows += 1
        for sent, key in flow.media:
            times = table.get(key)
            at = bisect_right(times, sent) - 1 if times else -1
            if times is None or at < 0 or sent - times[at] > MAX_MATCH_S:
                unmatched += 1
            elif at > 0 and times[at] - times[at - 1] < AMBIGUOUS_S:
                ambiguous += 1
            else:
                samples.append(LatencySample(sent, (sent - times[at]) * 1000, times[at]))
    return LatencyMatch(samples, matched_flows, len(capture.flows), ambiguous, unmatched, broken)
