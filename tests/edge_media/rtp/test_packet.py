from __future__ import annotations

import pytest

from edge_media.rtp.packet import (
    RtpPacket,
    RtpParseError,
    is_rtcp,
    pack_header,
    parse,
)

# PCMU, seq 1, ts 160, SSRC 0xdeadbeef, 4 payload bytes.
PLAIN = bytes.fromhex("80000001000000a0deadbeef" + "01020304")
# Marker, PT 8, two CSRCs, a 1-word header extension (profile 0xbede), 3 payload bytes.
FULL = bytes.fromhex(
    "9288ffff"  # V=2 X=1 CC=2 | M=1 PT=8 | seq 65535
    "00010000"  # ts 65536
    "11223344"  # SSRC
    "aaaaaaaa"
    "bbbbbbbb"  # CSRCs
    "bede0001"
    "10ff0000"  # extension header + 1 word
    "d5d5d5"  # payload
)
# P=1: 3 payload bytes then 4 padding bytes whose last octet is the count.
PADDED = bytes.fromhex("a06500070000000000000001" + "0a0b0c" + "00000004")
# X=1 with zero extension words, empty payload.
EMPTY_EXTENSION = bytes.fromhex("900000020000014000000002" + "10000000")


def test_plain_fields() -> None:
    packet = RtpPacket.parse(PLAIN)
    assert (packet.payload_type, packet.marker, packet.sequence) == (0, False, 1)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (160, 0xDEADBEEF, b"\x01\x02\x03\x04")
    assert (packet.csrc, packet.extension_data, packet.padding_size) == ((), None, 0)


def test_full_fields() -> None:
    packet = RtpPacket.parse(FULL)
    assert (packet.payload_type, packet.marker, packet.sequence) == (8, True, 65535)
    assert (packet.timestamp, packet.ssrc) == (65536, 0x11223344)
    assert packet.csrc == (0xAAAAAAAA, 0xBBBBBBBB)
    assert (packet.extension_profile, packet.extension_data) == (0xBEDE, b"\x10\xff\x00\x00")
    assert packet.payload == b"\xd5\xd5\xd5"


def test_padded_fields() -> None:
    packet = RtpPacket.parse(PADDED)
    assert (packet.payload_type, packet.sequence, packet.padding_size) == (101, 7, 4)
    assert packet.payload == b"\x0a\x0b\x0c"


def test_extension_with_no_words() -> None:
    packet = RtpPacket.parse(EMPTY_EXTENSION)
    assert (packet.extension_profile, packet.extension_data, packet.payload) == (0x1000, b"", b"")


@pytest.mark.parametrize("fixture", [PLAIN, FULL, PADDED, EMPTY_EXTENSION])
def test_round_trip(fixture: bytes) -> None:
    assert RtpPacket.parse(fixture).serialize() == fixture
    assert bytes(parse(fixture)) == fixture


def test_skip_extension_keeps_payload() -> None:
    packet = RtpPacket.parse(FULL, keep_extension=False)
    assert (packet.extension_data, packet.payload) == (None, b"\xd5\xd5\xd5")


def _header_errors(size: int, csrc: int, extension_words: int | None) -> str | None:
    """The message expected for a packet cut to `size`, from the fixture's header layout."""
    if size < 12:
        return f"RTP packet is {size} bytes, shorter than the 12-byte header"
    csrc_end = 12 + 4 * csrc
    if size < csrc_end:
        return f"RTP CSRC count {csrc} needs {csrc_end} bytes, packet has {size}"
    if extension_words is None:
        return None
    if size < csrc_end + 4:
        return f"RTP extension header needs {csrc_end + 4} bytes, packet has {size}"
    end = csrc_end + 4 + 4 * extension_words
    if size < end:
        return f"RTP extension length {extension_words} words needs {end} bytes, packet has {size}"
    return None


@pytest.mark.parametrize(
    ("fixture", "csrc", "words", "header_size"),
    [(PLAIN, 0, None, 12), (FULL, 2, 1, 28), (EMPTY_EXTENSION, 0, 0, 16)],
)
def test_every_prefix(fixture: bytes, csrc: int, words: int | None, header_size: int) -> None:
    for size in range(len(fixture)):
        cut = fixture[:size]
        expected = _header_errors(size, csrc, words)
        if expected is None:
            # RTP has no length field: a cut inside the payload is a shorter valid payload.
            assert size >= header_size
            assert RtpPacket.parse(cut).payload == fixture[header_size:size]
        else:
            with pytest.raises(RtpParseError) as caught:
                RtpPacket.parse(cut)
            assert str(caught.value) == expected


def test_every_prefix_of_padded_packet() -> None:
    # The last byte of each cut is read as the padding count: 0x0a..0x0c and 0x00 all break.
    expected = {
        12: "RTP padding bit is set but nothing follows the header",
        13: "RTP padding count 10 exceeds the 1 bytes after the header",
        14: "RTP padding count 11 exceeds the 2 bytes after the header",
        15: "RTP padding count 12 exceeds the 3 bytes after the header",
        16: "RTP padding count is 0",
        17: "RTP padding count is 0",
        18: "RTP padding count is 0",
    }
    for size in range(len(PADDED)):
        message = expected.get(size) or _header_errors(size, 0, None)
        with pytest.raises(RtpParseError) as caught:
            RtpPacket.parse(PADDED[:size])
        assert str(caught.value) == message


@pytest.mark.parametrize(("first_byte", "version"), [(0x00, 0), (0x40, 1), (0xC0, 3), (0x7F, 1)])
def test_bad_version(first_byte: int, version: int) -> None:
    data = bytes((first_byte,)) + PLAIN[1:]
    with pytest.raises(RtpParseError) as caught:
        RtpPacket.parse(data)
    assert str(caught.value) == f"RTP version is {version}, expected 2"


def test_csrc_count_beyond_data() -> None:
    data = bytes.fromhex("8f000001000000a0deadbeef") + bytes(56)
    with pytest.raises(RtpParseError) as caught:
        RtpPacket.parse(data)
    assert str(caught.value) == "RTP CSRC count 15 needs 72 bytes, packet has 68"


def test_extension_length_beyond_data() -> None:
    data = bytes.fromhex("90000001000000a0deadbeef" + "bedeffff" + "00000000")
    with pytest.raises(RtpParseError) as caught:
        RtpPacket.parse(data)
    assert str(caught.value) == "RTP extension length 65535 words needs 262156 bytes, packet has 20"


def test_padding_larger_than_payload() -> None:
    data = bytes.fromhex("a0000001000000a0deadbeef" + "0102" + "0009")
    with pytest.raises(RtpParseError) as caught:
        RtpPacket.parse(data)
    assert str(caught.value) == "RTP padding count 9 exceeds the 4 bytes after the header"


def test_padding_may_fill_whole_payload() -> None:
    data = bytes.fromhex("a0000001000000a0deadbeef" + "00000004")
    packet = RtpPacket.parse(data)
    assert (packet.payload, packet.padding_size) == (b"", 4)
    assert packet.serialize() == data


def test_serialize_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match=r"^RTP sequence 65536 is outside 0\.\.65535$"):
        RtpPacket(sequence=65536).serialize()
    with pytest.raises(ValueError, match=r"^RTP payload_type 128 is outside 0\.\.127$"):
        RtpPacket(payload_type=128).serialize()
    with pytest.raises(ValueError, match="at most 15 CSRCs, got 16"):
        RtpPacket(csrc=range(16)).serialize()
    with pytest.raises(ValueError, match="whole 32-bit words, got 3 bytes"):
        RtpPacket(extension_data=b"abc").serialize()


def test_repr_and_equality() -> None:
    packet = RtpPacket.parse(PLAIN)
    assert repr(packet) == "RtpPacket(seq=1, ts=160, marker=0, pt=0, ssrc=0xdeadbeef, len=4)"
    assert packet == RtpPacket.parse(PLAIN)
    assert packet != RtpPacket.parse(FULL)


def test_pack_header_literal() -> None:
    assert pack_header(0, 1, 160, 0xDEADBEEF) == PLAIN[:12]
    assert pack_header(8, 0xFFFF, 65536, 0x11223344, marker=True) == bytes.fromhex(
        "8088ffff0001000011223344"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes.fromhex("81c90001"), True),  # RR (201)
        (bytes.fromhex("80c8"), True),  # SR (200)
        (bytes.fromhex("80df"), True),  # 223: the top of the RFC 5761 range
        (bytes.fromhex("80c0"), True),  # 192: the bottom
        (bytes.fromhex("80bf"), False),  # PT 63 with the marker set
        (bytes.fromhex("80e0"), False),  # PT 96 with the marker set (224)
        (PLAIN, False),
        (b"\x80", False),
        (b"", False),
    ],
)
def test_is_rtcp(data: bytes, expected: bool) -> None:
    assert is_rtcp(data) is expected
