from __future__ import annotations

import pytest

from edge_media.rtp.repacketize import Repacketizer, ptime_bytes

STREAM = bytes(index % 251 for index in range(2400))


def test_20_ms_packets_pass_straight_through() -> None:
    cutter = Repacketizer()
    assert cutter.push(STREAM[:160]) == [STREAM[:160]]
    assert cutter.pending == 0


def test_30_ms_peer_packets_into_20_ms_frames() -> None:
    cutter = Repacketizer(160)
    out = [cutter.push(STREAM[n * 240 : (n + 1) * 240]) for n in range(4)]
    assert [len(batch) for batch in out] == [1, 2, 1, 2]
    assert b"".join(f for batch in out for f in batch) == STREAM[:960]
    assert all(len(f) == 160 for batch in out for f in batch)


def test_10_ms_peer_packets_join_into_20_ms_frames() -> None:
    cutter = Repacketizer(160)
    out = [cutter.push(STREAM[n * 80 : (n + 1) * 80]) for n in range(4)]
    assert out == [[], [STREAM[:160]], [], [STREAM[160:320]]]


def test_60_ms_packet_splits_into_three_frames() -> None:
    assert Repacketizer(160).push(STREAM[:480]) == [
        STREAM[:160],
        STREAM[160:320],
        STREAM[320:480],
    ]


def test_our_20_ms_frames_into_30_ms_peer_packets() -> None:
    cutter = Repacketizer(ptime_bytes(30))
    out = [cutter.push(STREAM[n * 160 : (n + 1) * 160]) for n in range(3)]
    assert out == [[], [STREAM[:240]], [STREAM[240:480]]]


def test_flush_pads_the_remainder_with_silence() -> None:
    cutter = Repacketizer(160)
    assert cutter.push(STREAM[:200]) == [STREAM[:160]]
    assert cutter.flush() == STREAM[160:200] + b"\xff" * 120
    assert cutter.flush() is None
    cutter.push(STREAM[:10])
    assert cutter.flush(fill=0xD5) == STREAM[:10] + b"\xd5" * 150


def test_reset_drops_the_remainder() -> None:
    cutter = Repacketizer(160)
    cutter.push(STREAM[:100])
    cutter.reset()
    assert cutter.push(STREAM[:160]) == [STREAM[:160]]


@pytest.mark.parametrize(("ptime", "size"), [(10, 80), (20, 160), (30, 240), (60, 480)])
def test_ptime_bytes(ptime: int, size: int) -> None:
    assert ptime_bytes(ptime) == size


@pytest.mark.parametrize("ptime", [0, 5, 61, 120])
def test_ptime_out_of_range(ptime: int) -> None:
    with pytest.raises(ValueError, match=rf"^ptime {ptime} ms is outside 10\.\.60$"):
        ptime_bytes(ptime)
