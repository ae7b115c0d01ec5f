from __future__ import annotations

import pytest

from edge_media.rtp.packet import pack_header
from edge_media.rtp.receiver import RtpReceiver
from edge_media.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceiverReportBuilder,
    ReportBlock,
    RtcpOther,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    ntp_middle,
    parse_compound,
)

# V=2 RC=1 SR of 13 words: SSRC, NTP timestamp, RTP timestamp 160, 5 packets, 800 octets, then
# a report block about 0x22223333: 25 % lost, cumulative -2, highest 65541, jitter 10, LSR, DLSR.
SR = bytes.fromhex(
    "81c8000c 00001111 83aa7e80 12345678 000000a0 00000005 00000320"
    " 22223333 40 fffffe 00010005 0000000a 7e801234 00018000"
)
SDES = bytes.fromhex("81ca0003 00001111 0105 6140622e63 00")  # CNAME "a@b.c"
BYE = bytes.fromhex("81cb0003 00001111 04 676f6e65 000000")  # reason "gone"
SR_NO_BLOCKS = bytes.fromhex("80c80006 00001111 83aa7e80 12345678 000000a0 00000005 00000320")
APP = bytes.fromhex("80cc0002 00001111 74657374")
COMPOUND = SR + SDES + BYE + APP
BOUNDARIES = [0, 52, 68, 84, 96]


def test_compound_fields() -> None:
    packets = parse_compound(COMPOUND)
    assert packets == [
        SenderReport(
            ssrc=0x1111,
            ntp_timestamp=0x83AA7E8012345678,
            rtp_timestamp=160,
            packet_count=5,
            octet_count=800,
            reports=(ReportBlock(0x22223333, 64, -2, 65541, 10, 0x7E801234, 0x18000),),
        ),
        SourceDescription((SdesChunk(0x1111, ((1, b"a@b.c"),)),)),
        Bye((0x1111,), b"gone"),
        RtcpOther(204, 0, bytes.fromhex("0000111174657374")),
    ]


def test_compound_round_trip() -> None:
    assert b"".join(p.serialize() for p in parse_compound(COMPOUND)) == COMPOUND


def test_every_prefix() -> None:
    for size in range(len(COMPOUND)):
        if size in BOUNDARIES[1:]:
            assert len(parse_compound(COMPOUND[:size])) == BOUNDARIES.index(size)
            continue
        start = max(b for b in BOUNDARIES if b <= size)
        remaining = size - start
        if size == 0:
            expected = "RTCP packet is empty"
        elif remaining < 4:
            expected = f"RTCP header at byte {start} needs 4 bytes, {remaining} remain"
        else:
            declared = BOUNDARIES[BOUNDARIES.index(start) + 1] - start
            expected = f"RTCP packet at byte {start} declares {declared} bytes, {remaining} remain"
        with pytest.raises(RtcpParseError) as caught:
            parse_compound(COMPOUND[:size])
        assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes.fromhex("40c90001aabbccdd"), "RTCP version at byte 0 is 1, expected 2"),
        (
            bytes.fromhex("81c80006") + bytes(24),
            "RTCP SR at byte 0 with 1 report blocks needs 48 body bytes, has 24",
        ),
        (
            bytes.fromhex("82c90001aabbccdd"),
            "RTCP RR at byte 0 with 2 report blocks needs 52 body bytes, has 4",
        ),
        (
            bytes.fromhex("82cb000100001111"),
            "RTCP BYE at byte 0 with 2 sources needs 8 body bytes, has 4",
        ),
        (
            bytes.fromhex("81cb00020000111109616200"),
            "RTCP BYE at byte 0 has a reason longer than the packet",
        ),
        (bytes.fromhex("82ca00020000111100000000"), "RTCP SDES at byte 0 is missing a chunk"),
        (bytes.fromhex("81ca00020000111101096162"), "RTCP SDES at byte 0 has a truncated item"),
        (bytes.fromhex("81ca00020000111101036162"), "RTCP SDES at byte 0 has a truncated item"),
        (bytes.fromhex("81ca000100001111"), "RTCP SDES at byte 0 has an unterminated item list"),
        (bytes.fromhex("a0c9000100000000"), "RTCP padding count 0 at byte 0 is invalid"),
        (bytes.fromhex("a0c9000100000009"), "RTCP padding count 9 at byte 0 is invalid"),
        (SR[:52] + bytes.fromhex("81"), "RTCP header at byte 52 needs 4 bytes, 1 remain"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtcpParseError) as caught:
        parse_compound(data)
    assert str(caught.value) == message


def test_padding_is_stripped() -> None:
    data = bytes.fromhex("a0c90002 00001111 00000004")
    assert parse_compound(data) == [ReceiverReport(0x1111)]


def test_report_block_clamps_cumulative_loss() -> None:
    block = ReportBlock(1, 0, 10_000_000, 0, 0, 0, 0)
    assert block.serialize()[5:8] == bytes.fromhex("7fffff")
    assert ReportBlock(1, 0, -10_000_000, 0, 0, 0, 0).serialize()[5:8] == bytes.fromhex("800000")


def test_ntp_middle() -> None:
    assert ntp_middle(0x83AA7E8012345678) == 0x7E801234


def _feed(receiver: RtpReceiver, seqs: list[int], first_index: int = 0) -> None:
    # Media clock and arrival clock agree exactly: 250 units per 31.25 ms.
    for offset, seq in enumerate(seqs):
        index = first_index + offset
        data = pack_header(0, seq, (seq - 1) * 250, 0x1111) + bytes(160)
        receiver.on_packet(data, ("127.0.0.1", 40000), index * 0.03125)


def test_receiver_report_from_receiver_stats() -> None:
    receiver = RtpReceiver()
    builder = ReceiverReportBuilder(0xAABBCCDD, b"gw")
    assert builder.build(receiver.stats(), 0.0) == bytes.fromhex(
        "80c90001 aabbccdd  81ca0003 aabbccdd 01026777 00000000"
    )
    _feed(receiver, [1, 2, 5, 6])
    receiver.on_packet(SR_NO_BLOCKS, ("127.0.0.1", 40000), 1.5)
    # Jitter: seq 5 arrives 250 units after seq 2 but is 750 later in media: |D| = 500, so
    # J = 31.25, then D = 0 gives 29.296875 -> 29.
    assert builder.build(receiver.stats(), 2.0) == bytes.fromhex(
        "81c90007 aabbccdd"
        " 00001111 55 000002 00000006 0000001d 7e801234 00008000"
        " 81ca0003 aabbccdd 01026777 00000000"
    )
    _feed(receiver, [7, 8], first_index=4)
    block = builder.report_block(receiver.stats(), 2.5)
    assert block is not None
    assert (block.fraction_lost, block.cumulative_lost, block.highest_sequence) == (0, 2, 8)
    assert block.delay_since_last_sr == 65536


def test_report_restarts_interval_for_a_new_source() -> None:
    receiver = RtpReceiver()
    builder = ReceiverReportBuilder(1, b"x")
    _feed(receiver, [1, 2, 3, 4])
    builder.report_block(receiver.stats(), 0.0)
    receiver.on_packet(pack_header(0, 50, 0, 0x2222) + bytes(160), ("127.0.0.1", 40000), 0.2)
    receiver.on_packet(pack_header(0, 52, 500, 0x2222) + bytes(160), ("127.0.0.1", 40000), 0.3)
    block = builder.report_block(receiver.stats(), 0.3)
    assert block is not None
    assert (block.ssrc, block.fraction_lost, block.cumulative_lost) == (0x2222, 85, 1)
    assert (block.last_sr, block.delay_since_last_sr) == (0, 0)


def test_serialize_refuses_oversized_fields() -> None:
    with pytest.raises(ValueError, match="at most 255 fit"):
        Bye((1,), b"x" * 256).serialize()
    with pytest.raises(ValueError, match="does not fit in 5 bits"):
        ReceiverReport(1, tuple(ReportBlock(i, 0, 0, 0, 0, 0, 0) for i in range(32))).serialize()
    with pytest.raises(ValueError, match="whole 32-bit words"):
        RtcpOther(204, 0, b"abc").serialize()
