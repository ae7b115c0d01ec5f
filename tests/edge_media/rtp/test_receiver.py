from __future__ import annotations

import pytest

from edge_media.rtp.dtmf import DtmfDigit, DtmfEmit, DtmfTrigger
from edge_media.rtp.packet import pack_header
from edge_media.rtp.receiver import (
    NOTHING,
    DropReason,
    Received,
    ReceiverConfig,
    RtpReceiver,
)

A = ("127.0.0.1", 40000)
B = ("127.0.0.1", 40002)
OTHER_HOST = ("127.0.0.2", 40000)
SSRC = 0x1111


def frame(seq: int) -> bytes:
    return bytes((seq & 0xFF,)) * 160


def rtp(
    seq: int,
    ts: int | None = None,
    *,
    ssrc: int = SSRC,
    pt: int = 0,
    payload: bytes | None = None,
    marker: bool = False,
) -> bytes:
    header = pack_header(pt, seq & 0xFFFF, seq * 160 if ts is None else ts, ssrc, marker)
    return header + (frame(seq) if payload is None else payload)


def run(receiver: RtpReceiver, seqs: list[int], addr: tuple[str, int] = A) -> list[Received]:
    return [receiver.on_packet(rtp(seq), addr, index * 0.02) for index, seq in enumerate(seqs)]


def delivered(results: list[Received]) -> list[bytes]:
    return [f for result in results for f in result.frames]


def test_literal_packet_is_delivered_untouched() -> None:
    data = bytes.fromhex("80000001000000a0deadbeef") + b"\x7f" * 160
    result = RtpReceiver().on_packet(data, A, 0.0)
    assert result == Received((b"\x7f" * 160,), (), None)


def test_in_order_packets_are_delivered() -> None:
    results = run(RtpReceiver(), [1, 2, 3])
    assert results == [Received((frame(s),), (), None) for s in (1, 2, 3)]


def test_pcma_is_converted_to_pcmu() -> None:
    receiver = RtpReceiver(ReceiverConfig(audio_payload_type=8))
    result = receiver.on_packet(rtp(1, pt=8, payload=b"\xd5" * 160), A, 0.0)
    assert result.frames == (b"\xfe" * 160,)  # A-law +8 is μ-law +8
    assert receiver.on_packet(rtp(2, pt=0), A, 0.02).drop is DropReason.PAYLOAD_TYPE


def test_first_valid_packet_latches_the_source() -> None:
    receiver = RtpReceiver()
    assert receiver.remote_addr is None
    assert receiver.on_packet(rtp(1, pt=13, payload=b"\x40"), B, 0.0).drop is (
        DropReason.PAYLOAD_TYPE
    )
    assert receiver.remote_addr is None  # an unnegotiated payload type does not latch
    assert receiver.on_packet(rtp(1), A, 0.01).frames == (frame(1),)
    assert receiver.remote_addr == A
    assert receiver.on_packet(rtp(2), B, 0.02).drop is DropReason.WRONG_SOURCE
    assert receiver.on_packet(rtp(2), A, 0.03).frames == (frame(2),)
    assert receiver.stats().relatches == 0


def test_relatch_after_the_source_falls_silent() -> None:
    receiver = RtpReceiver(ReceiverConfig(relatch_after=1.0))
    receiver.on_packet(rtp(1), A, 0.0)
    assert receiver.on_packet(rtp(2), B, 0.99).drop is DropReason.WRONG_SOURCE
    # A sent nothing since t=0 (B's packets do not count as A speaking).
    assert receiver.on_packet(rtp(3), B, 1.0).frames == (frame(3),)
    assert receiver.remote_addr == B
    assert receiver.on_packet(rtp(4), A, 1.02).drop is DropReason.WRONG_SOURCE
    stats = receiver.stats()
    assert (stats.relatches, stats.remote_addr, stats.ssrc_changes) == (1, B, 0)


def test_no_relatch_when_disabled() -> None:
    receiver = RtpReceiver(ReceiverConfig(relatch_after=None))
    receiver.on_packet(rtp(1), A, 0.0)
    assert receiver.on_packet(rtp(2, ssrc=9), B, 100.0).drop is DropReason.WRONG_SOURCE
    assert receiver.remote_addr == A


def test_relatch_on_new_ssrc_from_new_source() -> None:
    receiver = RtpReceiver(ReceiverConfig(relatch_on_new_ssrc=True))
    receiver.on_packet(rtp(1), A, 0.0)
    # Same SSRC from elsewhere while A is active: refused.
    assert receiver.on_packet(rtp(2), B, 0.02).drop is DropReason.WRONG_SOURCE
    result = receiver.on_packet(rtp(500, ssrc=0x2222), B, 0.04)
    assert result.frames == (frame(500),)
    stats = receiver.stats()
    assert (stats.remote_addr, stats.relatches, stats.ssrc_changes, stats.ssrc) == (
        B,
        1,
        1,
        0x2222,
    )


def test_new_ssrc_from_new_source_is_refused_by_default() -> None:
    receiver = RtpReceiver()
    receiver.on_packet(rtp(1), A, 0.0)
    assert receiver.on_packet(rtp(1, ssrc=0x2222), B, 0.02).drop is DropReason.WRONG_SOURCE


def test_reordered_packet_is_dropped_late_but_counted_received() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [1, 2, 4, 3, 5])
    assert delivered(results) == [frame(1), frame(2), frame(4), frame(5)]
    assert results[3] == Received((), (), DropReason.LATE)
    stats = receiver.stats()
    assert (stats.late, stats.out_of_order, stats.lost, stats.duplicates) == (1, 1, 0, 0)
    assert (stats.expected, stats.received) == (5, 5)


def test_duplicates_are_dropped() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [1, 2, 2, 3, 2, 1])
    assert delivered(results) == [frame(1), frame(2), frame(3)]
    assert [r.drop for r in results] == [
        None,
        None,
        DropReason.DUPLICATE,
        None,
        DropReason.DUPLICATE,
        DropReason.DUPLICATE,
    ]
    stats = receiver.stats()
    assert (stats.duplicates, stats.late, stats.received, stats.lost) == (3, 0, 3, 0)


def test_late_packet_then_its_duplicate() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [1, 3, 2, 2])
    assert [r.drop for r in results] == [None, None, DropReason.LATE, DropReason.DUPLICATE]


def test_loss_is_expected_minus_received() -> None:
    receiver = RtpReceiver()
    run(receiver, [1, 2, 5, 6])
    stats = receiver.stats()
    assert (stats.expected, stats.received, stats.lost, stats.stream_lost) == (6, 4, 2, 2)
    assert stats.extended_highest_sequence == 6


def test_sequence_wrap_extends_the_highest_sequence() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [65534, 65535, 0, 1])
    assert delivered(results) == [frame(65534), frame(65535), frame(0), frame(1)]
    stats = receiver.stats()
    assert (stats.extended_highest_sequence, stats.expected, stats.lost) == (65537, 4, 0)


def test_late_packet_across_the_wrap() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [65534, 0, 65535, 1])
    assert [r.drop for r in results] == [None, None, DropReason.LATE, None]
    assert receiver.stats().lost == 0


def test_sequence_jump_needs_a_second_packet() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [10, 11, 5000, 12, 7000, 7001, 7002])
    assert [r.drop for r in results] == [
        None,
        None,
        DropReason.SEQUENCE_JUMP,
        None,
        DropReason.SEQUENCE_JUMP,
        None,
        None,
    ]
    stats = receiver.stats()
    # The restart at 7001 starts a new count; 10..12 had nothing lost.
    assert (stats.expected, stats.received, stats.lost) == (2, 2, 0)
    assert stats.dropped[DropReason.SEQUENCE_JUMP] == 2


def test_far_behind_packet_is_a_jump_not_late() -> None:
    receiver = RtpReceiver()
    results = run(receiver, [1000, 1001, 850])
    assert results[2].drop is DropReason.SEQUENCE_JUMP


def test_ssrc_change_starts_a_new_stream() -> None:
    receiver = RtpReceiver()
    run(receiver, [1, 2, 4])
    results = [
        receiver.on_packet(rtp(100, ssrc=0x2222), A, 1.0),
        receiver.on_packet(rtp(101, ssrc=0x2222), A, 1.02),
    ]
    assert delivered(results) == [frame(100), frame(101)]
    stats = receiver.stats()
    assert (stats.ssrc_changes, stats.ssrc, stats.lost) == (1, 0x2222, 1)
    assert (stats.expected, stats.received, stats.extended_highest_sequence) == (2, 2, 101)


def test_interarrival_jitter_rfc3550_a8() -> None:
    receiver = RtpReceiver()
    # Packets 20 ms of media apart arriving 31.25 ms apart: D = 250 - 160 = 90 units each.
    for index in range(3):
        receiver.on_packet(rtp(index + 1, ts=index * 160), A, index * 0.03125)
    stats = receiver.stats()
    # J1 = 90/16 = 5.625; J2 = 5.625 + (90 - 5.625)/16 = 10.8984375
    assert stats.jitter_ms == 10.8984375 / 8
    assert stats.jitter == 10


def test_jitter_survives_timestamp_wrap() -> None:
    receiver = RtpReceiver()
    receiver.on_packet(rtp(1, ts=0xFFFFFF60), A, 0.0)
    receiver.on_packet(rtp(2, ts=0), A, 0.02)
    assert receiver.stats().jitter_ms < 0.001


def test_max_gap() -> None:
    receiver = RtpReceiver()
    for seq, now in [(1, 0.0), (2, 0.015625), (3, 0.078125), (4, 0.09375)]:
        receiver.on_packet(rtp(seq), A, now)
    assert receiver.stats().max_gap_ms == 62.5


def test_empty_payload_and_malformed() -> None:
    receiver = RtpReceiver()
    assert receiver.on_packet(rtp(1, payload=b""), A, 0.0).drop is DropReason.EMPTY
    assert receiver.on_packet(b"\x80\x00\x00", A, 0.0).drop is DropReason.MALFORMED
    assert receiver.on_packet(b"\x40" + rtp(2)[1:], A, 0.0).drop is DropReason.MALFORMED
    stats = receiver.stats()
    assert stats.dropped[DropReason.MALFORMED] == 2
    assert stats.dropped[DropReason.EMPTY] == 1
    assert (stats.packets_in, stats.bytes_in) == (3, 12 + 3 + 172)


DTMF_5 = ["050a00a0", "050a0140", "058a01e0", "058a01e0", "058a01e0"]


def test_dtmf_sharing_the_audio_ssrc_counts_for_loss_and_reports_once() -> None:
    receiver = RtpReceiver()
    results = [receiver.on_packet(rtp(1), A, 0.0), receiver.on_packet(rtp(2), A, 0.02)]
    for index, payload in enumerate(DTMF_5):
        data = rtp(3 + index, ts=480, pt=101, payload=bytes.fromhex(payload), marker=index == 0)
        results.append(receiver.on_packet(data, A, 0.04 + index * 0.02))
    results.append(receiver.on_packet(rtp(8), A, 0.14))
    digits = [d for r in results for d in r.digits]
    assert digits == [DtmfDigit("5", 5, 480, 160, 10, DtmfTrigger.START)]
    assert results[2] == Received((), tuple(digits), None)
    assert results[3:7] == [NOTHING] * 4
    stats = receiver.stats()
    assert (stats.expected, stats.received, stats.lost, stats.dtmf_digits) == (8, 8, 0, 1)
    assert stats.jitter == 0  # event packets repeat one timestamp: they must not feed jitter


def test_dtmf_on_its_own_ssrc_is_not_an_audio_ssrc_change() -> None:
    receiver = RtpReceiver(ReceiverConfig(dtmf_payload_type=96))
    receiver.on_packet(rtp(1), A, 0.0)
    for index, payload in enumerate(DTMF_5):
        data = rtp(900 + index, ts=7, pt=96, payload=bytes.fromhex(payload), ssrc=0x01020304)
        receiver.on_packet(data, A, 0.01 + index * 0.02)
    receiver.on_packet(rtp(2), A, 0.2)
    stats = receiver.stats()
    assert (stats.ssrc_changes, stats.ssrc, stats.expected, stats.lost) == (0, SSRC, 2, 0)
    assert stats.dtmf_digits == 1


def test_short_dtmf_payload_is_dropped() -> None:
    receiver = RtpReceiver()
    result = receiver.on_packet(rtp(1, pt=101, payload=b"\x05"), A, 0.0)
    assert result.drop is DropReason.BAD_DTMF


def test_dtmf_timeout_rides_on_audio_and_poll() -> None:
    receiver = RtpReceiver(ReceiverConfig(dtmf_emit=DtmfEmit.END, dtmf_end_timeout=0.5))
    receiver.on_packet(rtp(1, ts=0, pt=101, payload=bytes.fromhex("070a00a0")), A, 0.0)
    assert receiver.next_deadline() == 0.5
    assert receiver.poll(0.4) == ()
    result = receiver.on_packet(rtp(2), A, 0.5)
    assert result.frames == (frame(2),)
    assert result.digits == (DtmfDigit("7", 7, 0, 160, 10, DtmfTrigger.TIMEOUT),)

    other = RtpReceiver(ReceiverConfig(dtmf_emit=DtmfEmit.END, dtmf_end_timeout=0.5))
    other.on_packet(rtp(1, ts=0, pt=101, payload=bytes.fromhex("070a00a0")), A, 0.0)
    assert other.poll(0.6) == (DtmfDigit("7", 7, 0, 160, 10, DtmfTrigger.TIMEOUT),)
    assert other.stats().dtmf_digits == 1


def test_30_ms_peer_packets_become_20_ms_frames() -> None:
    receiver = RtpReceiver()
    stream = bytes(index % 251 for index in range(720))
    results = [
        receiver.on_packet(rtp(n + 1, ts=n * 240, payload=stream[n * 240 : (n + 1) * 240]), A, 0)
        for n in range(3)
    ]
    assert [len(r.frames) for r in results] == [1, 2, 1]
    assert b"".join(delivered(results)) == stream[:640]
    # A marker (new talkspurt) flushes the held 80 bytes padded with μ-law silence.
    result = receiver.on_packet(rtp(4, ts=5000, payload=b"\x01" * 240, marker=True), A, 1.0)
    assert result.frames == (stream[640:] + b"\xff" * 80, b"\x01" * 160)
    assert receiver.stats().frames_delivered == 6


def test_frames_as_received_when_repacketizing_is_off() -> None:
    receiver = RtpReceiver(ReceiverConfig(frame_bytes=None))
    assert receiver.on_packet(rtp(1, payload=b"\x02" * 240), A, 0.0).frames == (b"\x02" * 240,)


# SR from SSRC 0x1111: NTP 0x83aa7e80_12345678, RTP ts 160, 5 packets, 800 octets, no blocks.
SR = bytes.fromhex("80c80006 00001111 83aa7e80 12345678 000000a0 00000005 00000320")
BYE = bytes.fromhex("81cb0001 00001111")


def test_rtcp_on_the_rtp_port_is_read() -> None:
    receiver = RtpReceiver()
    receiver.on_packet(rtp(1), A, 0.0)
    assert receiver.on_packet(SR, A, 1.5) == Received((), (), DropReason.RTCP)
    stats = receiver.stats()
    assert (stats.last_sr, stats.last_sr_arrival, stats.rtcp_packets) == (0x7E801234, 1.5, 1)
    assert stats.bye_received is False
    receiver.on_packet(BYE, ("127.0.0.1", 40001), 2.0)  # RTCP port: same host is enough
    assert receiver.stats().bye_received is True


def test_rtcp_from_another_host_or_malformed() -> None:
    receiver = RtpReceiver()
    receiver.on_packet(rtp(1), A, 0.0)
    assert receiver.on_packet(SR, OTHER_HOST, 1.0).drop is DropReason.WRONG_SOURCE
    assert receiver.on_packet(SR[:20], A, 1.0).drop is DropReason.MALFORMED
    assert receiver.stats().last_sr_arrival is None


def test_idle_for() -> None:
    receiver = RtpReceiver()
    assert receiver.idle_for(5.0) is None
    receiver.on_packet(rtp(1), A, 1.0)
    receiver.on_packet(rtp(2), B, 1.5)  # refused: does not count as the peer speaking
    assert receiver.idle_for(3.5) == 2.5


@pytest.mark.parametrize("count", [0, 1])
def test_stats_before_any_media(count: int) -> None:
    receiver = RtpReceiver()
    for _ in range(count):
        receiver.on_packet(b"junk", A, 0.0)
    stats = receiver.stats()
    assert (stats.ssrc, stats.expected, stats.received, stats.lost) == (None, 0, 0, 0)
    assert stats.packets_in == count


def test_packets_with_extension_csrc_and_padding_are_delivered() -> None:
    receiver = RtpReceiver()
    # X=1 with a 1-word extension, one CSRC, marker, seq 1.
    with_extension = bytes.fromhex("9180 0001 000000a0 00001111 00000007 bede0001 10ff0000")
    assert receiver.on_packet(with_extension + frame(1), A, 0.0).frames == (frame(1),)
    # P=1: 160 payload bytes followed by 4 bytes of padding.
    padded = bytes.fromhex("a000 0002 00000140 00001111") + frame(2) + bytes.fromhex("00000004")
    assert receiver.on_packet(padded, A, 0.02).frames == (frame(2),)
    stats = receiver.stats()
    assert (stats.expected, stats.received, stats.lost) == (2, 2, 0)
