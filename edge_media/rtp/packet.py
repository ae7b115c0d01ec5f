"""RTP packets (RFC 3550 §5.1): a strict parser, a serializer, and a header packer for the send path.

Why two shapes: the receive path needs every field checked so that a hostile or broken peer gets a
precise `RtpParseError` and never a stray `IndexError`/`struct.error`; the send path (the pacer,
400+ streams every 20 ms) only ever builds the 12-byte fixed header, so `pack_header` is a single
call on a precompiled `struct.Struct` with no object built per packet.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, TypeAlias

# A socket address as asyncio hands it over: (host, port) for IPv4, a 4-tuple for IPv6.
Address: TypeAlias = tuple[Any, ...]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
CSRC_SIZE = 4
MAX_CSRC_COUNT = 15
EXTENSION_HEADER_SIZE = 4
MAX_EXTENSION_WORDS = 0xFFFF
MAX_PADDING = 255
MAX_PAYLOAD_TYPE = 127

# RFC 5761 §4: RTCP packet types 192-223 collide with RTP payload types 64-95 once the marker
# bit is set, so those payload types are never used when RTP and RTCP share a port and the
# second byte alone tells them apart.
RTCP_MUX_FIRST_TYPE = 192
RTCP_MUX_LAST_TYPE = 223

# V=2, P, X, CC | M, PT | sequence | timestamp | SSRC  (RFC 3550 §5.1)
RTP_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_VERSION_BITS = RTP_VERSION << 6
_PADDING_BIT = 0x20
_EXTENSION_BIT = 0x10
_MARKER_BIT = 0x80

_pack_header = RTP_HEADER.pack
_new_object = object.__new__


class RtpParseError(Exception):
    """A datagram is not a well-formed RTP packet; the message names the first broken field."""


class RtpPacket:
    """One RTP packet with every RFC 3550 header field kept, so `serialize` gives back the input.

    Padding is kept as its size only; `serialize` writes zero bytes followed by the count octet,
    which is what RFC 3550 §5.1 asks for ("the last octet of the padding contains a count").
    """

    __slots__ = (
        "csrc",
        "extension_data",
        "extension_profile",
        "marker",
        "padding_size",
        "payload",
        "payload_type",
        "sequence",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        *,
        payload_type: int = 0,
        marker: bool = False,
        sequence: int = 0,
        timestamp: int = 0,
        ssrc: int = 0,
        payload: bytes = b"",
        csrc: Sequence[int] = (),
        extension_profile: int = 0,
        extension_data: bytes | None = None,
        padding_size: int = 0,
    ) -> None:
        self.payload_type = payload_type
        self.marker = marker
        self.sequence = sequence
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.csrc = tuple(csrc)
        self.extension_profile = extension_profile
        # None means the X bit is clear; b"" is an extension header with zero data words.
        self.extension_data = extension_data
        self.padding_size = padding_size

    def __repr__(self) -> str:
        return (
            f"RtpPacket(seq={self.sequence}, ts={self.timestamp}, marker={int(self.marker)}, "
            f"pt={self.payload_type}, ssrc={self.ssrc:#010x}, len={len(self.payload)})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable: equal packets must not share a hash

    @classmethod
    def parse(cls, data: bytes, *, keep_extension: bool = True) -> RtpPacket:
        """Parse one datagram; `keep_extension=False` skips the header extension's bytes."""
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpParseError(f"RTP packet is {size} bytes, shorter than the 12-byte header")
        first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTP version is {version}, expected 2")

        csrc_count = first & 0x0F
        offset = RTP_HEADER_SIZE + CSRC_SIZE * csrc_count
        if offset > size:
            raise RtpParseError(
                f"RTP CSRC count {csrc_count} needs {offset} bytes, packet has {size}"
            )
        csrc = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE) if csrc_count else ()

        # RFC 3550 §5.3.1: 16 profile-defined bits, then the extension length in 32-bit words
        # not counting this 4-byte header.
        extension_profile = 0
        extension_data: bytes | None = None
        if first & _EXTENSION_BIT:
            if offset + EXTENSION_HEADER_SIZE > size:
                raise RtpParseError(
                    f"RTP extension header needs {offset + EXTENSION_HEADER_SIZE} bytes, "
                    f"packet has {size}"
                )
            profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            start = offset + EXTENSION_HEADER_SIZE
            offset = start + 4 * words
            if offset > size:
                raise RtpParseError(
                    f"RTP extension length {words} words needs {offset} bytes, packet has {size}"
                )
            if keep_extension:
                extension_profile = profile
                extension_data = bytes(data[start:offset])

        # RFC 3550 §5.1: "The last octet of the padding contains a count of how many padding
        # octets should be ignored, including itself."
        end = size
        padding_size = 0
        if first & _PADDING_BIT:
            if size == offset:
                raise RtpParseError("RTP padding bit is set but nothing follows the header")
            padding_size = data[-1]
            if padding_size == 0:
                raise RtpParseError("RTP padding count is 0")
            if padding_size > size - offset:
                raise RtpParseError(
                    f"RTP padding count {padding_size} exceeds the {size - offset} bytes "
                    "after the header"
                )
            end = size - padding_size

        # Filled in directly: the keyword constructor costs four times as much per packet.
        packet = _new_object(cls)
        packet.payload_type = second & 0x7F
        packet.marker = bool(second & _MARKER_BIT)
        packet.sequence = sequence
        packet.timestamp = timestamp
        packet.ssrc = ssrc
        packet.payload = bytes(data[offset:end])
        packet.csrc = csrc
        packet.extension_profile = extension_profile
        packet.extension_data = extension_data
        packet.padding_size = padding_size
        return packet

    def serialize(self) -> bytes:
        """Build the wire form; raises ValueError if a field does not fit its RFC 3550 width."""
        _check_range("payload_type", self.payload_type, MAX_PAYLOAD_TYPE)
        _check_range("sequence", self.sequence, 0xFFFF)
        _check_range("timestamp", self.timestamp, 0xFFFFFFFF)
        _check_range("ssrc", self.ssrc, 0xFFFFFFFF)
        _check_range("padding_size", self.padding_size, MAX_PADDING)
        if len(self.csrc) > MAX_CSRC_COUNT:
            raise ValueError(f"RTP allows at most 15 CSRCs, got {len(self.csrc)}")
        for value in self.csrc:
            _check_range("csrc", value, 0xFFFFFFFF)

        first = _VERSION_BITS | len(self.csrc)
        if self.padding_size:
            first |= _PADDING_BIT
        if self.extension_data is not None:
            first |= _EXTENSION_BIT
        second = self.payload_type | (_MARKER_BIT if self.marker else 0)
        parts = [_pack_header(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_data is not None:
            words, rest = divmod(len(self.extension_data), 4)
            if rest or words > MAX_EXTENSION_WORDS:
                raise ValueError(
                    f"RTP extension data must be whole 32-bit words, got {len(self.extension_data)}"
                    " bytes"
                )
            _check_range("extension_profile", self.extension_profile, 0xFFFF)
            parts.append(_EXTENSION_HEADER.pack(self.extension_profile, words))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)

    __bytes__ = serialize


def parse(data: bytes, *, keep_extension: bool = True) -> RtpPacket:
    """Module-level alias of `RtpPacket.parse` for call sites that import functions only."""
    return RtpPacket.parse(data, keep_extension=keep_extension)


def pack_header(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool = False
) -> bytes:
    """The 12-byte fixed header for the send path (no CSRC, extension or padding).

    Arguments are trusted: the pacer keeps them in range with masks, so nothing is re-checked
    here (struct still refuses out-of-range values with `struct.error`).
    """
    return _pack_header(
        _VERSION_BITS,
        payload_type | _MARKER_BIT if marker else payload_type,
        sequence,
        timestamp,
        ssrc,
    )


def is_rtcp(data: bytes) -> bool:
    """True when a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4 payload-type split)."""
    return len(data) >= 2 and RTCP_MUX_FIRST_TYPE <= data[1] <= RTCP_MUX_LAST_TYPE


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"RTP {name} {value} is outside 0..{maximum}")
