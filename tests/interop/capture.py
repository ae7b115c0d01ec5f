"""tshark on loopback, and numbers read back from the capture (not printed tables).

What each RTP packet looked like on the wire comes from ``tshark -T fields`` and is analysed
here: per-stream counts and loss (RFC 3550 §A.3 extended sequence numbers), inter-departure
deltas and the error against the 20 ms grid of one direction, RFC 4733 events, and the G.711
audio a peer received rebuilt as PCM ("what the peer heard"), placed by RTP timestamp so a lost
packet is silence and timing is kept.

Capture time on ``lo`` is taken when the sender's packet is queued, so for a packet the gateway
sends it is its departure time.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import TracebackType

from tests.interop.ports import HOST
from tests.interop.process import ManagedProcess

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

TSHARK_BINARY = "tshark"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0  # tshark flushes its file on SIGTERM; a big load capture takes a while
READ_TIMEOUT_S = 300.0  # reading a few hundred thousand packets back
LOAD_SNAPLEN = 96  # headers only: keeps tshark up with hundreds of streams

CLOCK_RATE = 8000  # PCMU/PCMA and telephone-event (RFC 3551 §4.5.14, RFC 4733 §2.1)
PTIME_S = 0.020
SAMPLES_PER_FRAME = int(CLOCK_RATE * PTIME_S)  # 160
PT_PCMU = 0  # RFC 3551 §6
PT_PCMA = 8
AUDIO_PAYLOAD_TYPES = frozenset({PT_PCMU, PT_PCMA})
DTMF_PAYLOAD_TYPES = frozenset({96, 101})  # sipp's play_dtmf uses 96, baresip 101
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
MAX_DROPOUT = 3000  # a longer jump ahead is not timed as a loss (RFC 3550 §A.1: a restart)
DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 §3.2: events 0-15
_FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "udp.srcport",
    "ip.dst",
    "udp.dstport",
    "rtp.ssrc",
    "rtp.p_type",
    "rtp.seq",
    "rtp.timestamp",
    "rtp.marker",
)


class CaptureError(RuntimeError):
    """tshark could not capture or read a capture back."""


@dataclass(frozen=True)
class CaptureSummary:
    """tshark's own count at the end; ``dropped`` > 0 means the capture, not the peer, lost."""

    captured: int | None
    dropped: int | None


class Capture:
    """``tshark -i lo -f FILTER -w FILE``, started and stopped within bounds.

    Stopped with SIGTERM, on which tshark completes its file and prints its counts, like on
    SIGINT; SIGINT itself is ignored by processes started from a non-interactive shell's
    background job (and inherited as ignored), which is how CI scripts often run.
    """

    def __init__(
        self,
        path: Path,
        *,
        capture_filter: str,
        snaplen: int | None = None,
        pcap_format: bool = False,
        interface: str = "lo",
    ) -> None:
        self.path = path
        argv = [TSHARK_BINARY, "-i", interface, "-f", capture_filter, "-w", str(path), "-q"]
        if snaplen is not None:
            argv += ["-s", str(snaplen)]
        if pcap_format:
            argv += ["-F", "pcap"]
        self.process = ManagedProcess(
            f"tshark-{path.stem}",
            argv,
            log_path=path.with_name(path.name + ".tshark.log"),
            cwd=path.parent,
        )
        self.summary: CaptureSummary | None = None

    @staticmethod
    def udp_ports_filter(ports: Iterable[int]) -> str:
        """A capture filter for UDP to or from any of ``ports`` on loopback."""
        clause = " or ".join(f"port {p}" for p in sorted(set(ports)))
        return f"udp and host {HOST} and ({clause})"

    def start(self, *, timeout: float = START_TIMEOUT_S) -> Capture:
        """Return once tshark has written its file header (the filter is then in place)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.process.start()
        self.process.wait_until(
            lambda: self.path.is_file() and self.path.stat().st_size > 0,
            timeout=timeout,
            what="capturing",
        )
        return self

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> CaptureSummary:
        self.process.stop(timeout)
        log = self.process.log_tail(20)
        captured = re.search(r"(\d+) packets? captured", log)
        dropped = re.search(r"(\d+) packets? dropped", log)
        self.summary = CaptureSummary(
            captured=int(captured.group(1)) if captured else None,
            dropped=int(dropped.group(1)) if dropped else (0 if captured else None),
        )
        return self.summary

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


Address = tuple[str, int]


@dataclass(frozen=True)
class RtpSeen:
    """One RTP packet as captured. ``payload`` is empty or cut short under a snap length."""

    time: float
    src: Address
    dst: Address
    ssrc: int
    payload_type: int
    seq: int
    timestamp: int
    marker: bool
    payload: bytes = field(default=b"", repr=False)


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true")


def read_rtp(
    capture: Path,
    *,
    rtp_ports: Iterable[int] = (),
    sip_ports: Iterable[int] = (),
    display_filter: str | None = None,
    payload: bool = True,
    timeout: float = READ_TIMEOUT_S,
) -> list[RtpSeen]:
    """Every RTP packet in ``capture``, in capture order.

    ``rtp_ports`` are decoded as RTP outright; ``sip_ports`` as SIP, so tshark also maps RTP
    from the SDP. Anything else is found by tshark's RTP heuristic (RTP version 2 and a sane
    header). ``payload=False`` skips the payload bytes (faster on big load captures).
    """
    argv = [TSHARK_BINARY, "-r", str(capture), "-n", "-o", "rtp.heuristic_rtp:TRUE"]
    for port in rtp_ports:
        argv += ["-d", f"udp.port=={port},rtp"]
    for port in sip_ports:
        argv += ["-d", f"udp.port=={port},sip"]
    shown = "rtp" if display_filter is None else f"rtp && ({display_filter})"
    argv += ["-Y", shown, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for name in (*_FIELDS, "rtp.payload") if payload else _FIELDS:
        argv += ["-e", name]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"tshark -r {capture}: {exc}") from None
    if done.returncode != 0:
        raise CaptureError(f"tshark -r {capture}: {done.stderr.decode(errors='replace')[-500:]}")
    return parse_rtp_fields(done.stdout.decode(errors="replace"))


def parse_rtp_fields(text: str) -> list[RtpSeen]:
    """Parse ``-T fields`` lines in the order of ``_FIELDS`` (+ optional payload hex)."""
    packets = []
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) < len(_FIELDS):
            continue
        try:
            packets.append(
                RtpSeen(
                    time=float(f[0]),
                    src=(f[1], int(f[2])),
                    dst=(f[3], int(f[4])),
                    ssrc=int(f[5], 16) if f[5].startswith("0x") else int(f[5]),
                    payload_type=int(f[6]),
                    seq=int(f[7]),
                    timestamp=int(f[8]),
                    marker=_flag(f[9]),
                    payload=bytes.fromhex(f[10].replace(":", "")) if len(f) > 10 else b"",
                )
            )
        except ValueError:
            continue  # a malformed (cut) packet without one of the header fields
    return packets


@dataclass(frozen=True, order=True)
class StreamKey:
    """One direction of one RTP stream: who sent it to whom, under which SSRC."""

    src: Address
    dst: Address
    ssrc: int

    def __str__(self) -> str:
        return f"{self.src[0]}:{self.src[1]}->{self.dst[0]}:{self.dst[1]} ssrc=0x{self.ssrc:08x}"


def split_streams(packets: Iterable[RtpSeen]) -> dict[StreamKey, list[RtpSeen]]:
    """Packets grouped by (source, destination, SSRC), each list in capture order."""
    streams: dict[StreamKey, list[RtpSeen]] = {}
    for pkt in packets:
        streams.setdefault(StreamKey(pkt.src, pkt.dst, pkt.ssrc), []).append(pkt)
    return streams


def _unwrap(values: Iterable[int], modulus: int) -> list[int]:
    """Extend wrapping counters (RFC 3550 §A.1 style): each step is taken as the short way."""
    out: list[int] = []
    for value in values:
        if not out:
            out.append(value)
            continue
        delta = (value - out[-1]) % modulus
        out.append(out[-1] + (delta if delta < modulus // 2 else delta - modulus))
    return out


@dataclass(frozen=True)
class StreamStats:
    """RFC 3550 §A.3 counts for one stream.

    Sequence numbers count over every packet of the SSRC (RFC 4733 events share the audio's
    sequence space); timestamp gaps over its audio packets only.
    """

    key: StreamKey
    packets: int  # unique sequence numbers received
    expected: int  # highest extended seq - first + 1
    lost: int  # expected - packets (never negative)
    duplicates: int
    reordered: int  # packets that arrived after a higher sequence number
    timestamp_gaps: int  # frames missing by RTP timestamp (a sender that skips, not a seq gap)
    payload_types: frozenset[int]
    first_time: float
    last_time: float
    loss_times: tuple[float, ...]  # capture time of the packet after each gap


def stream_stats(key: StreamKey, packets: Sequence[RtpSeen]) -> StreamStats:
    ext = _unwrap((p.seq for p in packets), SEQ_MOD)
    seen: set[int] = set()
    duplicates = reordered = 0
    highest = ext[0]
    loss_times = []
    for pkt, seq in zip(packets, ext, strict=True):
        if seq in seen:
            duplicates += 1
            continue
        if seen and seq < highest:
            reordered += 1
        elif seen and highest < seq - 1 <= highest + MAX_DROPOUT:
            loss_times.append(pkt.time)
        seen.add(seq)
        highest = max(highest, seq)
    expected = max(seen) - min(seen) + 1
    return StreamStats(
        key=key,
        packets=len(seen),
        expected=expected,
        lost=max(0, expected - len(seen)),
        duplicates=duplicates,
        reordered=reordered,
        timestamp_gaps=_timestamp_gaps(
            [p for p in packets if p.payload_type in AUDIO_PAYLOAD_TYPES]
        ),
        payload_types=frozenset(p.payload_type for p in packets),
        first_time=packets[0].time,
        last_time=packets[-1].time,
        loss_times=tuple(loss_times),
    )


def _timestamp_gaps(audio: Sequence[RtpSeen]) -> int:
    """Frames the sender skipped: timestamp steps beyond one frame between audio packets with
    consecutive sequence numbers, in whole frames."""
    if not audio:
        return 0
    ordered = sorted(
        zip(_unwrap((p.seq for p in audio), SEQ_MOD), audio, strict=True), key=lambda sp: sp[0]
    )
    stamps = _unwrap((p.timestamp for _, p in ordered), TS_MOD)
    seqs = [seq for seq, _ in ordered]
    gaps = 0
    for (seq_a, seq_b), (ts_a, ts_b) in zip(pairwise(seqs), pairwise(stamps), strict=True):
        if seq_b - seq_a == 1 and ts_b - ts_a > SAMPLES_PER_FRAME:
            gaps += (ts_b - ts_a) // SAMPLES_PER_FRAME - 1
    return gaps


def all_stream_stats(packets: Iterable[RtpSeen]) -> list[StreamStats]:
    return [stream_stats(k, v) for k, v in sorted(split_streams(packets).items())]


def inter_departure_ms(packets: Sequence[RtpSeen]) -> list[float]:
    """Time between consecutive audio packets of one stream, in ms, in capture order."""
    audio = [p for p in packets if p.payload_type in AUDIO_PAYLOAD_TYPES]
    return [(b.time - a.time) * 1000 for a, b in pairwise(audio)]


def grid_errors_ms(packets: Sequence[RtpSeen]) -> list[float]:
    """Each audio packet's departure minus its slot on a 20 ms grid, in ms (late is positive).

    A packet's slot comes from its RTP timestamp, so a skipped frame does not shift the later
    slots. The grid runs at the nominal rate (160 samples = 20 ms of capture clock): a sender
    whose packets drift off real time, such as a pacer sleeping 20 ms after each send instead
    of to an absolute deadline, shows as a growing error, which is the point. Only the grid's
    phase is fitted, as the median offset, so a late first packet does not skew the rest.
    Budget (docs/performance.md): p99 of the absolute error <= 2 ms at 200 calls.
    """
    audio = [p for p in packets if p.payload_type in AUDIO_PAYLOAD_TYPES]
    if not audio:
        return []
    stamps = _unwrap((p.timestamp for p in audio), TS_MOD)
    offsets = [
        p.time - audio[0].time - (ts - stamps[0]) / CLOCK_RATE
        for p, ts in zip(audio, stamps, strict=True)
    ]
    phase = statistics.median(offsets)
    return [(offset - phase) * 1000 for offset in offsets]


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float
    p99: float
    max: float

    def __str__(self) -> str:
        return f"p50 {self.p50:.3f} p99 {self.p99:.3f} max {self.max:.3f} (n={self.count})"


def percentiles(values: Iterable[float]) -> Percentiles | None:
    """Nearest-rank p50/p99 and max, or None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    return Percentiles(len(ordered), rank(0.50), rank(0.99), ordered[-1])


@dataclass(frozen=True)
class DtmfSeen:
    """One RFC 4733 event (all packets sharing its RTP timestamp on one SSRC)."""

    ssrc: int
    payload_type: int
    digit: str
    duration: int  # the longest duration field seen, in timestamp units
    ended: bool  # an E-bit packet arrived
    end_packets: int  # how many E-bit packets (RFC 4733 §2.5.1.4: three are usual)
    time: float  # capture time of the first packet


def dtmf_events(
    packets: Iterable[RtpSeen], *, payload_types: Iterable[int] = DTMF_PAYLOAD_TYPES
) -> list[DtmfSeen]:
    """RFC 4733 §2.3 events in order of appearance; needs payloads (``read_rtp(payload=True)``).

    Packets too short for the 4-byte event payload are ignored (sipp's PT 97 no-op packets
    are not in ``payload_types``).
    """
    wanted = frozenset(payload_types)
    events: dict[tuple[int, int], dict[str, int | float]] = {}
    for pkt in packets:
        if pkt.payload_type not in wanted or len(pkt.payload) < 4:
            continue
        event, flags = pkt.payload[0], pkt.payload[1]
        duration = int.from_bytes(pkt.payload[2:4], "big")
        entry = events.setdefault(
            (pkt.ssrc, pkt.timestamp),
            {"event": event, "pt": pkt.payload_type, "dur": 0, "ends": 0, "time": pkt.time},
        )
        entry["dur"] = max(int(entry["dur"]), duration)
        if flags & 0x80:  # E bit
            entry["ends"] = int(entry["ends"]) + 1
    out = []
    for (ssrc, _), e in sorted(events.items(), key=lambda kv: kv[1]["time"]):
        code = int(e["event"])
        out.append(
            DtmfSeen(
                ssrc=ssrc,
                payload_type=int(e["pt"]),
                digit=DTMF_EVENTS[code] if code < len(DTMF_EVENTS) else f"<{code}>",
                duration=int(e["dur"]),
                ended=int(e["ends"]) > 0,
                end_packets=int(e["ends"]),
                time=float(e["time"]),
            )
        )
    return out


def dtmf_digits(events: Iterable[DtmfSeen]) -> str:
    """The digits of the events that ended, in order (what a receiver would report)."""
    return "".join(e.digit for e in events if e.ended)


def heard_pcm(
    packets: Iterable[RtpSeen],
    *,
    dst_port: int,
    ssrc: int | None = None,
    src_port: int | None = None,
) -> bytes:
    """The G.711 audio sent to ``dst_port`` as 16-bit 8 kHz PCM ("what the peer heard").

    Without ``ssrc`` the SSRC with most audio packets is used. Packets are placed by RTP
    timestamp: a lost packet leaves silence and the recording keeps real time.
    """
    chosen: dict[int, list[RtpSeen]] = {}
    for pkt in packets:
        if pkt.dst[1] != dst_port or pkt.payload_type not in AUDIO_PAYLOAD_TYPES:
            continue
        if src_port is not None and pkt.src[1] != src_port:
            continue
        if ssrc is not None and pkt.ssrc != ssrc:
            continue
        chosen.setdefault(pkt.ssrc, []).append(pkt)
    if not chosen:
        return b""
    audio = max(chosen.values(), key=len)
    stamps = _unwrap((p.timestamp for p in audio), TS_MOD)
    first = min(stamps)
    end = max(ts - first + len(p.payload) for ts, p in zip(stamps, audio, strict=True))
    pcm = bytearray(2 * end)
    for ts, pkt in zip(stamps, audio, strict=True):
        decode = audioop.ulaw2lin if pkt.payload_type == PT_PCMU else audioop.alaw2lin
        at = 2 * (ts - first)
        pcm[at : at + 2 * len(pkt.payload)] = decode(pkt.payload, 2)
    return bytes(pcm)


def max_concurrent_before(streams: Sequence[StreamStats], when: float) -> int:
    """The highest number of streams flowing at once at any moment before ``when``."""
    changes = sorted(
        [(s.first_time, 1) for s in streams if s.first_time < when]
        + [(s.last_time, -1) for s in streams if s.first_time < when and s.last_time < when]
    )
    level = peak = 0
    for _, step in changes:
        level += step
        peak = max(peak, level)
    return peak


def first_loss_time(streams: Iterable[StreamStats]) -> float | None:
    """Capture time of the earliest loss in any stream, or None if nothing was lost."""
    times = [t for s in streams for t in s.loss_times]
    return min(times) if times else None
