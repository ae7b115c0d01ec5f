from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import pytest

from edge_media.rtp.pacer import Outgoing, Pacer
from edge_media.rtp.packet import RtpPacket

PEER = ("127.0.0.1", 30000)
SSRC = 0xABC


def frame(n: int) -> bytes:
    return bytes((n & 0xFF,)) * 160


class Script:
    """A source that hands out scripted frames (None = nothing to send), then None forever."""

    def __init__(self, frames: Iterable[bytes | None]) -> None:
        self.frames = deque(frames)
        self.calls = 0

    def __call__(self) -> bytes | None:
        self.calls += 1
        return self.frames.popleft() if self.frames else None


class Counter:
    """A source that never runs dry: frame n carries byte n."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return frame(self.calls)


def packets(out: list[Outgoing]) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for _, _, data in out]


def fields(out: list[Outgoing]) -> list[tuple[int, int, int, bool, int]]:
    return [
        (p.payload_type, p.sequence, p.timestamp, p.marker, len(p.payload)) for p in packets(out)
    ]


def register(pacer: Pacer, source: object, **options: object) -> int:
    settings: dict[str, object] = {
        "addr": PEER,
        "ssrc": SSRC,
        "payload_type": 0,
        "sequence": 10,
        "timestamp": 1000,
    }
    settings.update(options)
    return pacer.register(source, **settings)  # type: ignore[arg-type]


def test_first_tick_is_one_interval_after_start() -> None:
    pacer = Pacer(100.0)
    register(pacer, Counter(), sink="sock")
    assert pacer.next_deadline() == 100.0 + 0.02
    assert pacer.tick(100.0) == []
    assert pacer.tick(100.019) == []
    out = pacer.tick(100.02)
    assert out == [("sock", PEER, bytes.fromhex("8080000a000003e800000abc") + frame(1))]
    assert pacer.next_deadline() == 100.0 + 2 * 0.02


def test_sequence_and_timestamp_advance_per_tick() -> None:
    pacer = Pacer(0.0)
    register(pacer, Counter())
    sent = [fields(pacer.tick(k * 0.02)) for k in range(1, 6)]
    assert sent == [
        [(0, 10, 1000, True, 160)],
        [(0, 11, 1160, False, 160)],
        [(0, 12, 1320, False, 160)],
        [(0, 13, 1480, False, 160)],
        [(0, 14, 1640, False, 160)],
    ]


def test_many_streams_share_each_tick() -> None:
    pacer = Pacer(0.0)
    sources = [Counter() for _ in range(50)]
    for index, source in enumerate(sources):
        register(pacer, source, ssrc=index, addr=("127.0.0.1", 20000 + 2 * index))
    for k in range(1, 4):
        out = pacer.tick(k * 0.02)
        assert [addr[1] for _, addr, _ in out] == [20000 + 2 * i for i in range(50)]
        assert [(p.ssrc, p.sequence, p.timestamp) for p in packets(out)] == [
            (i, 10 + k - 1, 1000 + 160 * (k - 1)) for i in range(50)
        ]
    assert [s.calls for s in sources] == [3] * 50


def test_late_tick_catches_up_back_to_back() -> None:
    pacer = Pacer(0.0)
    source = Counter()
    register(pacer, source)
    out = pacer.tick(0.061)  # ticks 1, 2 and 3 are all due
    assert fields(out) == [
        (0, 10, 1000, True, 160),
        (0, 11, 1160, False, 160),
        (0, 12, 1320, False, 160),
    ]
    assert [p.payload for p in packets(out)] == [frame(1), frame(2), frame(3)]
    assert pacer.next_deadline() == 0.08
    stats = pacer.stats()
    assert (stats.ticks, stats.catch_up_ticks, stats.skipped_ticks) == (3, 2, 0)


def test_catch_up_is_capped_and_the_rest_dropped() -> None:
    pacer = Pacer(0.0, max_catch_up=3)
    source = Counter()
    register(pacer, source)
    out = pacer.tick(0.2)  # ten ticks due
    # Frames 1-7 are taken and dropped, 8-10 go out with the timestamps of ticks 8-10.
    assert fields(out) == [
        (0, 10, 1000 + 7 * 160, True, 160),
        (0, 11, 1000 + 8 * 160, False, 160),
        (0, 12, 1000 + 9 * 160, False, 160),
    ]
    assert [p.payload for p in packets(out)] == [frame(8), frame(9), frame(10)]
    assert source.calls == 10
    stats = pacer.stats()
    assert (stats.skipped_ticks, stats.dropped_frames, stats.ticks) == (7, 7, 3)
    assert fields(pacer.tick(0.22)) == [(0, 13, 1000 + 10 * 160, False, 160)]


def test_dropping_stops_when_the_source_runs_dry() -> None:
    pacer = Pacer(0.0)
    source = Script([frame(1), frame(2)])
    register(pacer, source)
    assert pacer.tick(0.2) == []
    assert (source.calls, pacer.stats().dropped_frames) == (6, 2)  # 3 pulls + 3 sends


def test_no_drift_over_10000_ticks() -> None:
    start = 1234.5678
    pacer = Pacer(start)
    register(pacer, Counter(), sequence=65000, timestamp=0xFFFF0000)
    lateness = [0.0, 0.0003, 0.0049, 0.0121, 0.0199]
    for k in range(1, 10_001):
        deadline = pacer.next_deadline()
        assert deadline == start + k * 0.02
        out = pacer.tick(deadline + lateness[k % 5])
        assert len(out) == 1
    assert pacer.next_deadline() == start + 10_001 * 0.02
    last = packets(out)[0]
    assert last.sequence == (65000 + 9999) & 0xFFFF
    assert last.timestamp == (0xFFFF0000 + 160 * 9999) & 0xFFFFFFFF
    stats = pacer.stats()
    assert (stats.ticks, stats.catch_up_ticks, stats.skipped_ticks) == (10_000, 0, 0)
    assert stats.packets_sent == 10_000


@pytest.mark.parametrize("start", [0.0, 0.1, 17.3, 98765.4321, 1e6 + 0.07])
def test_ticking_exactly_at_next_deadline_always_fires(start: float) -> None:
    pacer = Pacer(start)
    register(pacer, Counter())
    for _ in range(3000):
        assert len(pacer.tick(pacer.next_deadline())) == 1


def test_register_and_unregister_mid_run() -> None:
    pacer = Pacer(0.0)
    first = register(pacer, Counter(), ssrc=1)
    pacer.tick(0.02)
    pacer.tick(0.04)
    register(pacer, Counter(), ssrc=2, sequence=500, timestamp=7)
    assert [(p.ssrc, p.sequence, p.timestamp, p.marker) for p in packets(pacer.tick(0.06))] == [
        (1, 12, 1320, False),
        (2, 500, 7, True),
    ]
    pacer.unregister(first)
    pacer.unregister(first)  # twice is harmless
    assert [(p.ssrc, p.sequence) for p in packets(pacer.tick(0.08))] == [(2, 501)]
    assert pacer.stats().streams == 1


def test_silence_keeps_the_clock_and_marks_the_next_talkspurt() -> None:
    pacer = Pacer(0.0)
    register(pacer, Script([frame(1), frame(2), None, None, frame(5), frame(6)]))
    sent = [fields(pacer.tick(k * 0.02)) for k in range(1, 8)]
    assert sent == [
        [(0, 10, 1000, True, 160)],
        [(0, 11, 1160, False, 160)],
        [],
        [],
        [(0, 12, 1640, True, 160)],
        [(0, 13, 1800, False, 160)],
        [],
    ]


def test_comfort_silence_fills_gaps() -> None:
    pacer = Pacer(0.0)
    register(pacer, Script([frame(1), None, frame(3)]), comfort_silence=True)
    out = [packets(pacer.tick(k * 0.02))[0] for k in range(1, 5)]
    assert [(p.sequence, p.timestamp, p.marker) for p in out] == [
        (10, 1000, True),
        (11, 1160, False),
        (12, 1320, False),
        (13, 1480, False),
    ]
    assert [p.payload for p in out] == [frame(1), b"\xff" * 160, frame(3), b"\xff" * 160]


def test_pcma_stream_converts_ulaw_frames() -> None:
    pacer = Pacer(0.0)
    register(pacer, Script([b"\xff" * 160, None]), payload_type=8, comfort_silence=True)
    out = packets(pacer.tick(0.02) + pacer.tick(0.04))
    assert [(p.payload_type, p.payload) for p in out] == [(8, b"\xd5" * 160), (8, b"\xd5" * 160)]


def test_dtmf_replaces_audio_then_audio_resumes() -> None:
    pacer = Pacer(0.0)
    source = Counter()
    stream = register(pacer, source, dtmf_payload_type=101)
    pacer.tick(0.02)
    pacer.send_dtmf(stream, "5", 60)
    sent = [packets(pacer.tick(k * 0.02))[0] for k in range(2, 8)]
    assert [(p.payload_type, p.sequence, p.timestamp, p.marker, p.payload.hex()) for p in sent] == [
        (101, 11, 1160, True, "050a00a0"),
        (101, 12, 1160, False, "050a0140"),
        (101, 13, 1160, False, "058a01e0"),
        (101, 14, 1160, False, "058a01e0"),
        (101, 15, 1160, False, "058a01e0"),
        (0, 16, 1000 + 6 * 160, False, frame(2).hex()),
    ]
    assert source.calls == 2


def test_two_digits_are_separated_by_audio() -> None:
    pacer = Pacer(0.0)
    stream = register(pacer, Counter(), dtmf_payload_type=101)
    pacer.send_dtmf(stream, "1", 20)
    pacer.send_dtmf(stream, "2", 20)
    sent = [packets(pacer.tick(k * 0.02))[0] for k in range(1, 11)]
    assert [(p.payload_type, p.timestamp, p.marker) for p in sent] == [
        (101, 1000, True),
        (101, 1000, False),
        (101, 1000, False),
        (0, 1480, True),  # the stream's first audio packet still carries the marker
        (0, 1640, False),
        (101, 1800, True),
        (101, 1800, False),
        (101, 1800, False),
        (0, 2280, False),
        (0, 2440, False),
    ]
    assert [p.payload[0] for p in sent if p.payload_type == 101] == [1, 1, 1, 2, 2, 2]


def test_dtmf_needs_a_payload_type_and_a_valid_digit() -> None:
    pacer = Pacer(0.0)
    plain = register(pacer, Counter())
    with pytest.raises(ValueError, match="without a telephone-event payload type"):
        pacer.send_dtmf(plain, "1")
    with_dtmf = register(pacer, Counter(), dtmf_payload_type=101)
    with pytest.raises(ValueError, match="is not a DTMF digit"):
        pacer.send_dtmf(with_dtmf, "Z")


def test_30_ms_peer_gets_30_ms_packets() -> None:
    pacer = Pacer(0.0)
    stream = bytes(index % 251 for index in range(800))
    frames = [stream[n * 160 : (n + 1) * 160] for n in range(5)]
    register(pacer, Script([*frames, None, frame(7), frame(8)]), ptime_ms=30)
    outs = [pacer.tick(k * 0.02) for k in range(1, 9)]
    first_talkspurt = [p.payload for out in outs[:6] for p in packets(out)]
    assert b"".join(first_talkspurt) == stream + b"\xff" * 160
    sent = [fields(out) for out in outs]
    assert sent == [
        [],
        [(0, 10, 1000, True, 240)],
        [(0, 11, 1240, False, 240)],
        [],
        [(0, 12, 1480, False, 240)],
        [(0, 13, 1720, False, 240)],  # the talkspurt's last 80 bytes, padded
        [],
        [(0, 14, 1960, True, 240)],
    ]
    # The source runs dry again: the held 80 bytes of frame 8 go out padded on tick 9.
    tail = packets(pacer.tick(0.18))
    assert [(p.sequence, p.timestamp, p.payload) for p in tail] == [
        (15, 2200, frame(8)[80:] + b"\xff" * 160)
    ]
    assert pacer.tick(0.2) == []


def test_30_ms_tail_is_padded_with_silence() -> None:
    pacer = Pacer(0.0)
    register(pacer, Script([frame(1), frame(2), None]), ptime_ms=30)
    out = [p for k in range(1, 5) for p in packets(pacer.tick(k * 0.02))]
    assert [(p.timestamp, p.payload) for p in out] == [
        (1000, frame(1) + frame(2)[:80]),
        (1240, frame(2)[80:] + b"\xff" * 160),
    ]


def test_10_ms_peer_gets_two_packets_per_tick() -> None:
    pacer = Pacer(0.0)
    register(pacer, Counter(), ptime_ms=10)
    assert fields(pacer.tick(0.02)) + fields(pacer.tick(0.04)) == [
        (0, 10, 1000, True, 80),
        (0, 11, 1080, False, 80),
        (0, 12, 1160, False, 80),
        (0, 13, 1240, False, 80),
    ]


def test_pacing_error_histogram() -> None:
    pacer = Pacer(0.0)
    register(pacer, Counter())
    for k in range(1, 101):
        late = 0.00525 if k in (40, 80) else 0.0
        pacer.tick(k * 0.02 + late)
    stats = pacer.stats()
    assert (stats.error_p50_ms, stats.error_p99_ms) == (0.1, 5.3)
    assert stats.error_max_ms == pytest.approx(5.25)


def test_set_addr_and_stream_info() -> None:
    pacer = Pacer(0.0)
    stream = register(pacer, Counter())
    pacer.tick(0.02)
    pacer.set_addr(stream, ("127.0.0.1", 31000))
    assert pacer.tick(0.04)[0][1] == ("127.0.0.1", 31000)
    info = pacer.stream_info(stream)
    assert (info.ssrc, info.sequence, info.timestamp) == (SSRC, 12, 1320)
    assert (info.packets_sent, info.octets_sent) == (2, 320)


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="interval 0 must be positive"):
        Pacer(0.0, 0)
    with pytest.raises(ValueError, match="max_catch_up 0 must be at least 1"):
        Pacer(0.0, max_catch_up=0)
