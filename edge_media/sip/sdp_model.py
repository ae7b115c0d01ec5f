"""The SDP (RFC 8866) data model: session and media descriptions, codecs, and their text form.

Why a module of its own: the parser (`sdp_parse`) builds these values and offer/answer
(`sdp_offer_answer`) reads and builds them, so the model must depend on neither. Attribute
values the model acts on (``rtpmap``, ``fmtp``, ``ptime``, ``rtcp``, direction) are kept as text
for faithful round trips and read lazily by properties; their grammar lives here, next to the
properties that read it, and the parser calls `check_attribute` so those reads cannot fail later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_PAYLOAD_TYPE",
    "PCMA",
    "PCMU",
    "STATIC_AUDIO_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
    "check_attribute",
    "parse_int",
    "parse_payload_type",
]

MAX_PAYLOAD_TYPE = 127


class SdpError(Exception):
    """Malformed SDP. The only exception the parser raises; the message names the line."""


# --------------------------------------------------------------------------------------------
# Codecs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP payload format as ``encoding/clock[/channels]`` (RFC 8866 §6.6)."""

    name: str
    clock_rate: int
    channels: int = 1

    def same_format(self, other: Codec) -> bool:
        # RFC 8866 §6.6 / RFC 4855 §3: encoding names are case-insensitive.
        return (
            self.name.lower() == other.name.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clock_rate}{suffix}"


PCMU = Codec("PCMU", 8000)
PCMA = Codec("PCMA", 8000)
TELEPHONE_EVENT = Codec("telephone-event", 8000)

# RFC 3551 §6, Table 4: static audio payload types, valid without an a=rtpmap line.
STATIC_AUDIO_PAYLOAD_TYPES: dict[int, Codec] = {
    0: PCMU,
    3: Codec("GSM", 8000),
    4: Codec("G723", 8000),
    5: Codec("DVI4", 8000),
    6: Codec("DVI4", 16000),
    7: Codec("LPC", 8000),
    8: PCMA,
    9: Codec("G722", 8000),
    10: Codec("L16", 44100, 2),
    11: Codec("L16", 44100),
    12: Codec("QCELP", 8000),
    13: Codec("CN", 8000),
    14: Codec("MPA", 90000),
    15: Codec("G728", 8000),
    16: Codec("DVI4", 11025),
    17: Codec("DVI4", 22050),
    18: Codec("G729", 8000),
}
_CANONICAL = (PCMU, PCMA, TELEPHONE_EVENT)


def _canonical(codec: Codec) -> Codec:
    for known in _CANONICAL:
        if known.same_format(codec):
            return known
    return codec


# --------------------------------------------------------------------------------------------
# Session description model (RFC 8866 §5)
# --------------------------------------------------------------------------------------------


class Direction(StrEnum):
    """Media direction attributes (RFC 8866 §6.7), seen from the side that wrote them."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end (RFC 3264 §6.1 mirroring)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)


_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 8866 §5.2). ``session_id`` stays text: only the version is ever compared."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` (RFC 8866 §5.7)."""

    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=`` (RFC 8866 §5.8)."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=`` with its ``r=`` lines (RFC 8866 §5.9-5.10); telephony always sends ``t=0 0``."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=name`` or ``a=name:value`` (RFC 8866 §5.13), kept verbatim for round trips."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`` (RFC 8866 §6.6)."""

    payload_type: int
    codec: Codec


def _find_direction(attributes: Sequence[Attribute]) -> Direction | None:
    found = [a.name for a in attributes if a.name in _DIRECTIONS]
    return Direction(found[0]) if found else None


def _find_ptime(attributes: Sequence[Attribute], name: str) -> float | None:
    for attribute in attributes:
        if attribute.name == name:
            return _parse_ptime(attribute.value, name)
    return None


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section (RFC 8866 §5.14) with the attributes that follow it."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def payload_types(self) -> tuple[int, ...]:
        if not self.is_rtp:
            return ()
        return tuple(parse_payload_type(f, "m= format") for f in self.formats)

    def attribute_values(self, name: str) -> list[str | None]:
        return [a.value for a in self.attributes if a.name == name]

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    @property
    def rtpmaps(self) -> dict[int, Codec]:
        found: dict[int, Codec] = {}
        for value in self.attribute_values("rtpmap"):
            rtpmap = _parse_rtpmap(value)
            found.setdefault(rtpmap.payload_type, rtpmap.codec)
        return found

    @property
    def fmtps(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            fmt, params = _parse_fmtp(value)
            found.setdefault(fmt, params)
        return found

    def codec_for(self, payload_type: int) -> Codec | None:
        """rtpmap first, then the RFC 3551 static table; a dynamic PT without rtpmap is unknown."""
        mapped = self.rtpmaps.get(payload_type)
        if mapped is not None:
            return _canonical(mapped)
        return STATIC_AUDIO_PAYLOAD_TYPES.get(payload_type) if self.media == "audio" else None

    @property
    def ptime(self) -> float | None:
        return _find_ptime(self.attributes, "ptime")

    @property
    def maxptime(self) -> float | None:
        return _find_ptime(self.attributes, "maxptime")

    @property
    def direction(self) -> Direction | None:
        """Media-level direction only; see ``SessionDescription.effective_direction``."""
        return _find_direction(self.attributes)

    @property
    def rtcp(self) -> tuple[int, Connection | None] | None:
        """RFC 3605 ``a=rtcp:<port> [<nettype> <addrtype> <address>]``."""
        for value in self.attribute_values("rtcp"):
            return _parse_rtcp(value)
        return None

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")  # RFC 5761 §5.1

    def serialize_lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [" ".join(("m=" + self.media, port, self.proto, *self.formats))]
        if self.information is not None:
            lines.append(f"i={self.information}")
        lines.extend(f"c={c}" for c in self.connections)
        lines.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines.extend(f"a={a}" for a in self.attributes)
        return lines


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body. Serialises in RFC 8866 §5 order with CRLF line ends."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    time_zones: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @property
    def direction(self) -> Direction | None:
        return _find_direction(self.attributes)

    def effective_direction(self, media: MediaDescription) -> Direction:
        # RFC 8866 §6.7: media-level wins over session-level; sendrecv is the default.
        return media.direction or self.direction or Direction.SENDRECV

    def effective_connection(self, media: MediaDescription) -> Connection | None:
        # RFC 8866 §5.7: a media-level c= overrides the session-level one.
        return media.connections[0] if media.connections else self.connection

    def effective_ptime(self, media: MediaDescription) -> float | None:
        # ptime is a media attribute (RFC 8866 §6.4); some peers put it at session level.
        media_ptime = media.ptime
        return media_ptime if media_ptime is not None else _find_ptime(self.attributes, "ptime")

    def serialize(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines.extend(f"e={e}" for e in self.emails)
        lines.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={b}" for b in self.bandwidths)
        for timing in self.timings:
            lines.append(f"t={timing.start} {timing.stop}")
            lines.extend(f"r={r}" for r in timing.repeats)
        if self.time_zones is not None:
            lines.append(f"z={self.time_zones}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines.extend(f"a={a}" for a in self.attributes)
        for media in self.media:
            lines.extend(media.serialize_lines())
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return self.serialize().encode("utf-8")


# --------------------------------------------------------------------------------------------
# Attribute and field values (RFC 8866 §5-6), shared with the parser in sdp_parse.py
# --------------------------------------------------------------------------------------------


def parse_int(text: str, what: str, low: int = 0, high: int | None = None) -> int:
    """A bounded decimal field; ``int()`` alone would accept signs, spaces and non-ASCII digits."""
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"{what} {text!r} is not a decimal number")
    number = int(text)
    if number < low or (high is not None and number > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise SdpError(f"{what} {number} out of range {bound}")
    return number


def parse_payload_type(text: str, what: str) -> int:
    """An RTP payload type (0-127, RFC 3550 §5.1); ``what`` names the field in the error."""
    return parse_int(text, f"{what} payload type", 0, MAX_PAYLOAD_TYPE)


def _parse_rtpmap(value: str | None) -> RtpMap:
    # rtpmap-value = payload-type SP encoding-name "/" clock-rate [ "/" encoding-params ]
    parts = (value or "").split(maxsplit=1)
    if len(parts) != 2:
        raise SdpError(f"a=rtpmap:{value} needs '<pt> <encoding>/<clock rate>'")
    payload_type = parse_payload_type(parts[0], "a=rtpmap")
    fields = parts[1].strip().split("/")
    if len(fields) not in (2, 3) or not fields[0]:
        raise SdpError(f"a=rtpmap:{value} needs '<encoding>/<clock rate>[/<channels>]'")
    clock_rate = parse_int(fields[1], "a=rtpmap clock rate", 1)
    channels = parse_int(fields[2], "a=rtpmap channels", 1) if len(fields) == 3 else 1
    return RtpMap(payload_type, Codec(fields[0], clock_rate, channels))


def _parse_fmtp(value: str | None) -> tuple[str, str]:
    # fmtp-value = fmt SP format-specific-params (RFC 8866 §6.15)
    parts = (value or "").split(maxsplit=1)
    if not parts:
        raise SdpError("a=fmtp needs '<format> <parameters>'")
    return parts[0], parts[1].strip() if len(parts) == 2 else ""


def _parse_ptime(value: str | None, name: str) -> float:
    # RFC 8866 §6.4: decimal milliseconds, fractions allowed.
    text = (value or "").strip()
    head, _, tail = text.partition(".")
    if not head.isascii() or not head.isdigit() or (tail and not tail.isdigit()):
        raise SdpError(f"a={name}:{value} is not a number of milliseconds")
    number = float(text)
    if number <= 0:
        raise SdpError(f"a={name}:{value} must be positive")
    return number


def _parse_rtcp(value: str | None) -> tuple[int, Connection | None]:
    fields = (value or "").split()
    if len(fields) not in (1, 4):
        raise SdpError(f"a=rtcp:{value} needs '<port> [<nettype> <addrtype> <address>]'")
    port = parse_int(fields[0], "a=rtcp port", 0, 65535)
    if len(fields) == 1:
        return port, None
    return port, Connection(fields[1], fields[2], fields[3])


def check_attribute(attribute: Attribute, seen_direction: Direction | None) -> Direction | None:
    """Validate the attributes we act on, so the lazy lookups above cannot fail later.

    Returns the direction attribute seen so far at this level, so that the caller can pass it
    back in and a second, conflicting one is caught.
    """
    name = attribute.name
    if name == "rtpmap":
        _parse_rtpmap(attribute.value)
    elif name == "fmtp":
        _parse_fmtp(attribute.value)
    elif name in ("ptime", "maxptime"):
        _parse_ptime(attribute.value, name)
    elif name == "rtcp":
        _parse_rtcp(attribute.value)
    elif name in _DIRECTIONS:
        direction = Direction(name)
        if seen_direction is not None and seen_direction is not direction:
            raise SdpError(f"conflicting direction attributes {seen_direction} and {direction}")
        return direction
    return seen_direction
