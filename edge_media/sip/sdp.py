"""SDP (RFC 8866) for one audio stream, plus the RFC 3264 offer/answer rules the gateway needs.

Why this shape: the dialog layer hands us a body and wants back either an answer body plus what
the RTP layer needs (address, port, payload types, direction), or a 488 with a Warning. Nothing
here touches sockets, clocks or randomness: session ids arrive in ``LocalMedia``.

Scope, on purpose: audio over ``RTP/AVP`` with PCMU/PCMA and ``telephone-event/8000``. Every
other stream and codec is parsed and kept (so answers and round trips stay faithful) but never
chosen. The parser is lenient where real peers differ (LF or CRLF, blank lines, session-level
lines in any order, unknown attributes) and strict where a wrong guess would send media to the
wrong place (``c=``, ``m=``, ``rtpmap``, ``ptime``, ``rtcp``, direction).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

__all__ = [
    "DEFAULT_PTIME_MS",
    "MAX_PEER_PTIME_MS",
    "MAX_SDP_BYTES",
    "MIN_PEER_PTIME_MS",
    "PCMA",
    "PCMU",
    "STATIC_AUDIO_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Answer",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "Direction",
    "LocalMedia",
    "MediaDescription",
    "NegotiatedMedia",
    "NegotiationFailure",
    "Origin",
    "RtpMap",
    "SdpError",
    "SdpSession",
    "SessionDescription",
    "Timing",
    "build_offer",
    "negotiate_answer",
    "parse_sdp",
    "process_answer",
]

# Limits. A real audio offer is well under 2 KiB; WebRTC offers reach ~10 KiB.
MAX_SDP_BYTES = 32 * 1024
MAX_SDP_LINES = 1024
MAX_MEDIA_DESCRIPTIONS = 32

# Packetisation. We always send 20 ms frames (RFC 3551 §4.2: the default packetisation); a
# peer asking for anything from 10 to 60 ms is accepted and reported so the media layer can
# repacketise what it receives.
DEFAULT_PTIME_MS = 20
MIN_PEER_PTIME_MS = 10
MAX_PEER_PTIME_MS = 60

MAX_PAYLOAD_TYPE = 127
MAX_DTMF_EVENT = 255
AUDIO_PROTO = "RTP/AVP"
DEFAULT_DTMF_EVENTS = "0-15"  # RFC 4733 §2.4.1: no events listed means 0-15

# RFC 3261 §20.43 warn-codes used in a 488 answer.
WARN_NETWORK_ADDRESS = 301
WARN_TRANSPORT = 302
WARN_MEDIA_TYPE = 304
WARN_MEDIA_FORMAT = 305
WARN_TEXT = {
    WARN_NETWORK_ADDRESS: "Incompatible network address formats",
    WARN_TRANSPORT: "Incompatible transport protocol",
    WARN_MEDIA_TYPE: "Media type not available",
    WARN_MEDIA_FORMAT: "Incompatible media format",
}
NOT_ACCEPTABLE_HERE = 488


_T = TypeVar("_T")


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
_STATIC_PT_BY_CODEC = {PCMU: 0, PCMA: 8}
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
        return tuple(_parse_payload_type(f, "m= format") for f in self.formats)

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
# Parsing
# --------------------------------------------------------------------------------------------


def _parse_int(text: str, what: str, low: int = 0, high: int | None = None) -> int:
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"{what} {text!r} is not a decimal number")
    number = int(text)
    if number < low or (high is not None and number > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise SdpError(f"{what} {number} out of range {bound}")
    return number


def _parse_payload_type(text: str, what: str) -> int:
    return _parse_int(text, f"{what} payload type", 0, MAX_PAYLOAD_TYPE)


def _parse_rtpmap(value: str | None) -> RtpMap:
    # rtpmap-value = payload-type SP encoding-name "/" clock-rate [ "/" encoding-params ]
    parts = (value or "").split(maxsplit=1)
    if len(parts) != 2:
        raise SdpError(f"a=rtpmap:{value} needs '<pt> <encoding>/<clock rate>'")
    payload_type = _parse_payload_type(parts[0], "a=rtpmap")
    fields = parts[1].strip().split("/")
    if len(fields) not in (2, 3) or not fields[0]:
        raise SdpError(f"a=rtpmap:{value} needs '<encoding>/<clock rate>[/<channels>]'")
    clock_rate = _parse_int(fields[1], "a=rtpmap clock rate", 1)
    channels = _parse_int(fields[2], "a=rtpmap channels", 1) if len(fields) == 3 else 1
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
    port = _parse_int(fields[0], "a=rtcp port", 0, 65535)
    if len(fields) == 1:
        return port, None
    return port, Connection(fields[1], fields[2], fields[3])


def _check_attribute(attribute: Attribute, seen_direction: Direction | None) -> Direction | None:
    """Validate the attributes we act on, so later lookups cannot fail."""
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


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name or any(c.isspace() for c in name):
        raise SdpError(f"a={value} has no attribute name")
    return Attribute(name, rest if colon else None)


def _parse_connection(value: str) -> Connection:
    fields = value.split()
    if len(fields) != 3:
        raise SdpError(f"c={value} needs '<nettype> <addrtype> <address>'")
    return Connection(*fields)


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, colon, amount = value.partition(":")
    if not colon or not bwtype:
        raise SdpError(f"b={value} needs '<bwtype>:<bandwidth>'")
    return Bandwidth(bwtype, _parse_int(amount.strip(), "b= bandwidth"))


def _parse_origin(value: str) -> Origin:
    fields = value.split()
    if len(fields) != 6:
        raise SdpError(f"o={value} needs 6 fields, got {len(fields)}")
    version = _parse_int(fields[2], "o= session version")
    return Origin(fields[0], fields[1], version, fields[3], fields[4], fields[5])


def _parse_timing(value: str) -> Timing:
    fields = value.split()
    if len(fields) != 2:
        raise SdpError(f"t={value} needs '<start> <stop>'")
    return Timing(_parse_int(fields[0], "t= start"), _parse_int(fields[1], "t= stop"))


def _parse_media_line(value: str) -> MediaDescription:
    fields = value.split()
    if len(fields) < 3:
        raise SdpError(f"m={value} needs '<media> <port> <proto> <fmt> ...'")
    port_text, slash, count_text = fields[1].partition("/")
    port = _parse_int(port_text, "m= port", 0, 65535)
    port_count = _parse_int(count_text, "m= port count", 1) if slash else None
    formats = tuple(fields[3:])
    # RFC 8866 §5.14 wants at least one format; rejected streams (port 0) sometimes omit it.
    if not formats and port != 0:
        raise SdpError(f"m={value} lists no media formats")
    media = MediaDescription(fields[0], port, fields[2], formats, port_count)
    if media.is_rtp:  # RFC 8866 §5.14: for RTP/AVP the formats are payload type numbers
        for fmt in formats:
            _parse_payload_type(fmt, "m=")
    return media


def _once(current: _T | None, value: _T, kind: str) -> _T:
    if current is not None:
        raise SdpError(f"more than one {kind}= line at this level")
    return value


@dataclass
class _MediaDraft:
    """A media description while its lines are still arriving."""

    line: MediaDescription
    information: str | None = None
    key: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    direction: Direction | None = None

    def add(self, kind: str, value: str) -> None:
        if kind == "i":
            self.information = _once(self.information, value, kind)
        elif kind == "k":
            self.key = _once(self.key, value, kind)
        elif kind == "c":
            self.connections.append(_parse_connection(value))
        elif kind == "b":
            self.bandwidths.append(_parse_bandwidth(value))
        elif kind == "a":
            attribute = _parse_attribute(value)
            self.direction = _check_attribute(attribute, self.direction)
            self.attributes.append(attribute)
        else:
            raise SdpError(f"{kind}= is not allowed inside a media description")

    def build(self) -> MediaDescription:
        return replace(
            self.line,
            information=self.information,
            key=self.key,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            attributes=tuple(self.attributes),
        )


@dataclass
class _SessionDraft:
    """The session-level lines; RFC 8866 §5 order is not enforced on input, only on output."""

    origin: Origin | None = None
    session_name: str | None = None
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    time_zones: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    direction: Direction | None = None
    media: list[_MediaDraft] = field(default_factory=list)

    def add(self, kind: str, value: str) -> None:
        if kind == "m":
            if len(self.media) >= MAX_MEDIA_DESCRIPTIONS:
                raise SdpError(f"more than {MAX_MEDIA_DESCRIPTIONS} m= lines")
            self.media.append(_MediaDraft(_parse_media_line(value)))
        elif self.media:
            self.media[-1].add(kind, value)
        elif kind == "o":
            self.origin = _once(self.origin, _parse_origin(value), kind)
        elif kind == "s":
            self.session_name = _once(self.session_name, value, kind)
        elif kind == "i":
            self.information = _once(self.information, value, kind)
        elif kind == "u":
            self.uri = _once(self.uri, value, kind)
        elif kind == "e":
            self.emails.append(value)
        elif kind == "p":
            self.phones.append(value)
        elif kind == "c":
            self.connection = _once(self.connection, _parse_connection(value), kind)
        elif kind == "b":
            self.bandwidths.append(_parse_bandwidth(value))
        elif kind == "t":
            self.timings.append(_parse_timing(value))
        elif kind == "r":
            if not self.timings:
                raise SdpError("r= line before any t= line")
            last = self.timings[-1]
            self.timings[-1] = replace(last, repeats=(*last.repeats, value))
        elif kind == "z":
            self.time_zones = _once(self.time_zones, value, kind)
        elif kind == "k":
            self.key = _once(self.key, value, kind)
        elif kind == "a":
            attribute = _parse_attribute(value)
            self.direction = _check_attribute(attribute, self.direction)
            self.attributes.append(attribute)
        else:
            # RFC 8866 §5: a type letter the parser does not understand rejects the description.
            raise SdpError(f"unknown line type {kind!r}")

    def build(self) -> SessionDescription:
        if self.origin is None:
            raise SdpError("missing o= line")
        if self.session_name is None:
            raise SdpError("missing s= line")
        media = [draft.build() for draft in self.media]
        for number, built in enumerate(media, start=1):
            # RFC 8866 §5.7: c= at session level or in every media description. Rejected
            # streams (port 0) are let off, as several peers omit it there.
            if not built.connections and self.connection is None and built.port != 0:
                raise SdpError(
                    f"m= line {number} ({built.media}) has no c= line and there is no "
                    "session-level c= line"
                )
        return SessionDescription(
            origin=self.origin,
            session_name=self.session_name,
            information=self.information,
            uri=self.uri,
            emails=tuple(self.emails),
            phones=tuple(self.phones),
            connection=self.connection,
            bandwidths=tuple(self.bandwidths),
            timings=tuple(self.timings),
            time_zones=self.time_zones,
            key=self.key,
            attributes=tuple(self.attributes),
            media=tuple(media),
        )


def parse_sdp(data: str | bytes) -> SessionDescription:
    """Parse an SDP body. Raises ``SdpError`` (and nothing else) on malformed input."""
    if len(data) > MAX_SDP_BYTES:
        raise SdpError(f"SDP body of {len(data)} bytes exceeds {MAX_SDP_BYTES}")
    if isinstance(data, bytes):
        # RFC 8866 §5: text is UTF-8 (a=charset is not honoured; no peer of ours sends it).
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        text = data
    # RFC 8866 §5: lines end in CRLF, but parsers should accept a bare LF too.
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    if len(lines) > MAX_SDP_LINES:
        raise SdpError(f"SDP body has more than {MAX_SDP_LINES} lines")
    if not lines:
        raise SdpError("empty SDP body")
    draft = _SessionDraft()
    for position, (number, line) in enumerate(lines):
        try:
            _feed(draft, position, line)
        except SdpError as exc:
            raise SdpError(f"line {number}: {exc}") from None
    return draft.build()


def _feed(draft: _SessionDraft, position: int, line: str) -> None:
    if len(line) < 2 or line[1] != "=":
        raise SdpError(f"{line[:40]!r} is not '<type>=<value>'")
    kind, value = line[0], line[2:]
    if position == 0:
        # RFC 8866 §5.1: v=0 comes first and only once.
        if kind != "v" or value.strip() != "0":
            raise SdpError(f"SDP must start with v=0, got {line[:40]!r}")
    elif kind == "v":
        raise SdpError("v= appears more than once")
    else:
        draft.add(kind, value)


# --------------------------------------------------------------------------------------------
# Offer/answer (RFC 3264)
# --------------------------------------------------------------------------------------------


def _parse_events(text: str) -> frozenset[int] | None:
    """RFC 4733 §2.4.1 event list ``0-15,66``; None when unreadable."""
    events: set[int] = set()
    for item in text.replace(" ", "").split(","):
        low_text, dash, high_text = item.partition("-")
        if not low_text.isdigit() or (dash and not high_text.isdigit()):
            return None
        low = int(low_text)
        high = int(high_text) if dash else low
        if low > high or high > MAX_DTMF_EVENT:
            return None
        events.update(range(low, high + 1))
    return frozenset(events)


def _format_events(events: Iterable[int]) -> str:
    ordered = sorted(set(events))
    runs: list[str] = []
    start = previous = ordered[0]
    for event in [*ordered[1:], None]:
        if event is not None and event == previous + 1:
            previous = event
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if event is not None:
            start = previous = event
    return ",".join(runs)


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """What we can do and where we listen. ``session_id``/``session_version`` come from the
    caller (RFC 8866 §5.2 suggests an NTP timestamp) so this module needs no clock."""

    address: str
    rtp_port: int
    session_id: int
    session_version: int = 1
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    dtmf_payload_type: int | None = 101  # used in our offers; None: never offer or accept DTMF
    dtmf_events: str = "0-16"
    rtcp_mux: bool = False  # RFC 5761: only if the RTP layer demultiplexes RTCP on one port
    username: str = "-"
    session_name: str = "-"

    def __post_init__(self) -> None:
        # Configuration mistakes are caller bugs, hence ValueError rather than SdpError.
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"LocalMedia.address {self.address!r} is not an IP") from None
        if not 0 < self.rtp_port < 65536:
            raise ValueError(f"LocalMedia.rtp_port {self.rtp_port} out of range")
        if not self.codecs or any(c not in _STATIC_PT_BY_CODEC for c in self.codecs):
            raise ValueError("LocalMedia.codecs must be a non-empty subset of (PCMU, PCMA)")
        if self.dtmf_payload_type is not None and not 96 <= self.dtmf_payload_type <= 127:
            raise ValueError("LocalMedia.dtmf_payload_type must be dynamic (96-127)")
        if not _parse_events(self.dtmf_events):
            raise ValueError(f"LocalMedia.dtmf_events {self.dtmf_events!r} is not an event list")

    @property
    def addrtype(self) -> str:
        return "IP6" if ipaddress.ip_address(self.address).version == 6 else "IP4"

    def origin(self, version: int | None = None) -> Origin:
        return Origin(
            self.username,
            str(self.session_id),
            self.session_version if version is None else version,
            "IN",
            self.addrtype,
            self.address,
        )


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """What the RTP layer needs after a successful offer/answer.

    ``direction`` is ours: ``direction.sends`` says whether we may transmit RTP. The peer's
    ptime is reported as asked for; we still send ``DEFAULT_PTIME_MS`` frames.
    """

    media_index: int
    remote_address: str
    remote_port: int
    remote_rtcp_address: str
    remote_rtcp_port: int
    rtcp_mux: bool
    payload_type: int
    codec: Codec
    dtmf_payload_type: int | None  # PT the peer expects our RFC 4733 events on
    dtmf_receive_payload_type: int | None  # PT we declared for events we receive
    remote_ptime: int
    direction: Direction
    peer_on_hold: bool

    @property
    def codec_name(self) -> str:
        return self.codec.name


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: the SDP to send and the media parameters it commits us to."""

    sdp: SessionDescription
    media: NegotiatedMedia

    @property
    def body(self) -> bytes:
        return bytes(self.sdp)


@dataclass(frozen=True, slots=True)
class NegotiationFailure:
    """Nothing acceptable: answer ``status`` with a Warning (RFC 3261 §20.43 / §21.4.26)."""

    warn_code: int
    detail: str
    status: int = NOT_ACCEPTABLE_HERE

    @property
    def warn_text(self) -> str:
        return WARN_TEXT.get(self.warn_code, "Miscellaneous warning")

    def warning(self, agent: str) -> str:
        """Warning header value: ``warn-code SP warn-agent SP warn-text``."""
        return f'{self.warn_code} {agent} "{self.warn_text}"'


@dataclass(frozen=True, slots=True)
class _Remote:
    address: str
    on_hold: bool


def _check_remote(
    sdp: SessionDescription, media: MediaDescription, local_addrtype: str
) -> _Remote | NegotiationFailure:
    """Where to send RTP, or why we cannot. Addresses must be IP literals (no DNS here)."""
    connection = sdp.effective_connection(media)
    if connection is None:
        return NegotiationFailure(WARN_NETWORK_ADDRESS, "stream has no c= line")
    if connection.nettype != "IN" or connection.addrtype not in ("IP4", "IP6"):
        detail = f"network type {connection.nettype} {connection.addrtype} not supported"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    try:
        address = ipaddress.ip_address(connection.address)
    except ValueError:
        detail = f"connection address {connection.address!r} is not a unicast IP literal"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    if f"IP{address.version}" != connection.addrtype:
        detail = f"connection address {address} does not match {connection.addrtype}"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    if address.is_multicast:
        return NegotiationFailure(WARN_NETWORK_ADDRESS, f"multicast {address} not supported")
    if connection.addrtype != local_addrtype:
        detail = f"peer media is {connection.addrtype}, ours is {local_addrtype}"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    # RFC 3264 §8.4: RFC 2543 peers hold with c=0.0.0.0; "::" is treated the same way.
    return _Remote(str(address), address.is_unspecified)


def _check_ptime(sdp: SessionDescription, media: MediaDescription) -> int | NegotiationFailure:
    ptime = sdp.effective_ptime(media)
    if ptime is None:
        ptime = DEFAULT_PTIME_MS
    if not MIN_PEER_PTIME_MS <= ptime <= MAX_PEER_PTIME_MS:
        detail = f"ptime {ptime:g} ms outside {MIN_PEER_PTIME_MS}-{MAX_PEER_PTIME_MS} ms"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    maxptime = media.maxptime
    if maxptime is not None and maxptime < DEFAULT_PTIME_MS:
        detail = f"maxptime {maxptime:g} ms is below the {DEFAULT_PTIME_MS} ms we send"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    return round(ptime)


def _rtcp_target(media: MediaDescription, address: str, mux: bool) -> tuple[str, int]:
    if mux:
        return address, media.port  # RFC 5761 §5.1: RTCP shares the RTP port
    explicit = media.rtcp
    if explicit is not None:  # RFC 3605: explicit RTCP port (and address)
        port, connection = explicit
        return (connection.address if connection is not None else address), port
    return address, media.port + 1  # RFC 3550 §11: next higher port


def _codec_names(media: MediaDescription) -> str:
    names = []
    for payload_type in media.payload_types:
        codec = media.codec_for(payload_type)
        names.append(str(codec) if codec is not None else f"PT {payload_type}")
    return ", ".join(names) or "none"


def _accept_audio(
    offer: SessionDescription, index: int, media: MediaDescription, local: LocalMedia
) -> NegotiatedMedia | NegotiationFailure:
    if media.proto.upper() != AUDIO_PROTO:
        return NegotiationFailure(WARN_TRANSPORT, f"transport {media.proto} not supported")
    remote = _check_remote(offer, media, local.addrtype)
    if isinstance(remote, NegotiationFailure):
        return remote
    ptime = _check_ptime(offer, media)
    if isinstance(ptime, NegotiationFailure):
        return ptime
    chosen: tuple[int, Codec] | None = None
    dtmf: int | None = None
    # RFC 3264 §6.1: the answerer SHOULD keep the offerer's preference, so the first codec in
    # the OFFER's order that we support wins; our own order only shapes our offers.
    for payload_type in media.payload_types:
        codec = media.codec_for(payload_type)
        if codec is None:
            continue
        if chosen is None and codec in local.codecs:
            chosen = (payload_type, codec)
        elif dtmf is None and codec is TELEPHONE_EVENT and local.dtmf_payload_type is not None:
            dtmf = payload_type
    if chosen is None:
        detail = f"no common codec: offer has {_codec_names(media)}"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    if dtmf is not None and not _dtmf_events(media, dtmf, local):
        dtmf = None
    # RFC 3264 §6.1: sendonly -> recvonly, recvonly -> sendonly, inactive -> inactive,
    # sendrecv -> sendrecv. A legacy 0.0.0.0 hold means the peer cannot receive.
    offered = offer.effective_direction(media)
    if remote.on_hold:
        offered = Direction.from_flags(sends=offered.sends, receives=False)
    mux = media.rtcp_mux and local.rtcp_mux
    rtcp_address, rtcp_port = _rtcp_target(media, remote.address, mux)
    return NegotiatedMedia(
        media_index=index,
        remote_address=remote.address,
        remote_port=media.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        rtcp_mux=mux,
        payload_type=chosen[0],
        codec=chosen[1],
        dtmf_payload_type=dtmf,
        dtmf_receive_payload_type=dtmf,
        remote_ptime=ptime,
        direction=offered.reversed(),
        peer_on_hold=not offered.receives,
    )


def _dtmf_events(media: MediaDescription, payload_type: int, local: LocalMedia) -> str:
    """The events both sides handle, as an RFC 4733 list; empty if there are none.

    An fmtp we cannot read is treated like a missing one (RFC 4733 §2.4.1 default 0-15):
    losing keypad digits over a cosmetic quirk would be worse than assuming the default.
    """
    default = _parse_events(DEFAULT_DTMF_EVENTS) or frozenset()
    offered = _parse_events(media.fmtps.get(str(payload_type), "")) or default
    common = offered & (_parse_events(local.dtmf_events) or frozenset())
    return _format_events(common) if common else ""


def _audio_lines(
    local: LocalMedia,
    codecs: Sequence[tuple[int, Codec]],
    dtmf: tuple[int, str] | None,
    direction: Direction,
    rtcp_mux: bool,
) -> MediaDescription:
    formats = [str(pt) for pt, _ in codecs]
    attributes = [Attribute("rtpmap", f"{pt} {codec}") for pt, codec in codecs]
    if dtmf is not None:
        formats.append(str(dtmf[0]))
        attributes.append(Attribute("rtpmap", f"{dtmf[0]} {TELEPHONE_EVENT}"))
        attributes.append(Attribute("fmtp", f"{dtmf[0]} {dtmf[1]}"))
    attributes.append(Attribute("ptime", str(DEFAULT_PTIME_MS)))
    if rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    attributes.append(Attribute(direction.value))
    return MediaDescription(
        "audio", local.rtp_port, AUDIO_PROTO, tuple(formats), attributes=tuple(attributes)
    )


def _rejected(media: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: reject with port 0; formats are ignored but one must be present.
    formats = media.formats or ("0",)
    return MediaDescription(media.media, 0, media.proto, formats)


def _session(local: LocalMedia, media: Sequence[MediaDescription]) -> SessionDescription:
    return SessionDescription(
        origin=local.origin(),
        session_name=local.session_name,
        connection=Connection("IN", local.addrtype, local.address),
        media=tuple(media),
    )


def negotiate_answer(offer: SessionDescription, local: LocalMedia) -> Answer | NegotiationFailure:
    """Answer an offer (RFC 3264 §6): one m= line per offered line, in the same order.

    The first acceptable ``m=audio`` line is answered with exactly one codec (plus
    telephone-event on the offer's own payload type, RFC 3264 §6.1), so both directions use
    the same codec and the media layer never sees a mid-call switch. Every other line is
    rejected with port 0. The failure reported is the first audio line's, or 304 when the
    offer has no usable audio line at all.
    """
    negotiated: NegotiatedMedia | None = None
    failure: NegotiationFailure | None = None
    lines: list[MediaDescription] = []
    for index, media in enumerate(offer.media):
        if negotiated is None and media.media == "audio" and media.port != 0:
            outcome = _accept_audio(offer, index, media, local)
            if isinstance(outcome, NegotiatedMedia):
                negotiated = outcome
                dtmf = outcome.dtmf_payload_type
                dtmf_line = (dtmf, _dtmf_events(media, dtmf, local)) if dtmf is not None else None
                codecs = [(outcome.payload_type, outcome.codec)]
                lines.append(
                    _audio_lines(local, codecs, dtmf_line, outcome.direction, outcome.rtcp_mux)
                )
                continue
            failure = failure or outcome
        lines.append(_rejected(media))
    if negotiated is None:
        return failure or NegotiationFailure(WARN_MEDIA_TYPE, "offer has no usable audio stream")
    return Answer(_session(local, lines), negotiated)


def build_offer(local: LocalMedia, direction: Direction = Direction.SENDRECV) -> SessionDescription:
    """Our offer for an outgoing INVITE: our codecs in our order, telephone-event, 20 ms."""
    codecs = [(_STATIC_PT_BY_CODEC[codec], codec) for codec in local.codecs]
    dtmf = (local.dtmf_payload_type, local.dtmf_events) if local.dtmf_payload_type else None
    return _session(local, [_audio_lines(local, codecs, dtmf, direction, local.rtcp_mux)])


def _offered_audio(offer: SessionDescription) -> tuple[int, MediaDescription]:
    for index, media in enumerate(offer.media):
        if media.media == "audio" and media.port != 0:
            return index, media
    raise ValueError("our offer has no active audio stream")


def process_answer(
    offer: SessionDescription, answer: SessionDescription
) -> NegotiatedMedia | NegotiationFailure:
    """Check a peer's answer against the offer we sent (UAC side of RFC 3264 §6-7).

    The answer may list extra formats (RFC 3264 §6.1 allows formats it can only receive) but
    must contain a codec we offered, and must not re-map a payload type we offered to a
    different codec. The failure's warn-code is for logs and a BYE/CANCEL reason; the status
    field (488) only applies when the answer came in a request we must respond to.
    """
    if len(answer.media) != len(offer.media):
        detail = f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)}"
        return NegotiationFailure(WARN_MEDIA_TYPE, detail)
    index, ours = _offered_audio(offer)
    theirs = answer.media[index]
    if theirs.media != "audio" or theirs.port == 0:
        return NegotiationFailure(WARN_MEDIA_TYPE, "peer rejected the audio stream")
    if theirs.proto.upper() != ours.proto.upper():
        return NegotiationFailure(WARN_TRANSPORT, f"answer changed transport to {theirs.proto}")
    offered: dict[int, Codec] = {}
    for payload_type in ours.payload_types:
        codec = ours.codec_for(payload_type)
        if codec is not None:
            offered[payload_type] = codec
    chosen: tuple[int, Codec] | None = None
    dtmf: int | None = None
    for payload_type in theirs.payload_types:
        codec = theirs.codec_for(payload_type)
        if codec is None:
            continue
        was = offered.get(payload_type)
        if was is not None and was != codec:
            detail = f"answer maps PT {payload_type} to {codec}, we offered {was}"
            return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
        if codec not in offered.values():
            continue  # RFC 3264 §6.1: a format we did not offer; the peer cannot send it
        if chosen is None and codec is not TELEPHONE_EVENT:
            chosen = (payload_type, codec)
        elif dtmf is None and codec is TELEPHONE_EVENT:
            dtmf = payload_type
    if chosen is None:
        detail = f"answer has no codec we offered: {_codec_names(theirs)}"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    our_connection = offer.effective_connection(ours)
    our_addrtype = our_connection.addrtype if our_connection is not None else "IP4"
    remote = _check_remote(answer, theirs, our_addrtype)
    if isinstance(remote, NegotiationFailure):
        return remote
    ptime = _check_ptime(answer, theirs)
    if isinstance(ptime, NegotiationFailure):
        return ptime
    answered = answer.effective_direction(theirs)
    if remote.on_hold:
        answered = Direction.from_flags(sends=answered.sends, receives=False)
    we_offered = offer.effective_direction(ours)
    # Ours is what we offered, narrowed by what the peer agreed to (RFC 3264 §6.1).
    direction = Direction.from_flags(
        sends=we_offered.sends and answered.receives,
        receives=we_offered.receives and answered.sends,
    )
    mux = theirs.rtcp_mux and ours.rtcp_mux
    rtcp_address, rtcp_port = _rtcp_target(theirs, remote.address, mux)
    our_dtmf = next((pt for pt, c in offered.items() if c is TELEPHONE_EVENT), None)
    return NegotiatedMedia(
        media_index=index,
        remote_address=remote.address,
        remote_port=theirs.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        rtcp_mux=mux,
        payload_type=chosen[0],
        codec=chosen[1],
        dtmf_payload_type=dtmf,
        dtmf_receive_payload_type=our_dtmf if dtmf is not None else None,
        remote_ptime=ptime,
        direction=direction,
        peer_on_hold=not answered.receives,
    )


class SdpSession:
    """SDP state for one dialog: keeps ``o=`` stable and versions it per RFC 3264 §8.

    RFC 3264 §8: a new SDP keeps the previous ``o=`` line except that the version increments
    by one; an unchanged SDP (a session refresh) keeps the same version. It also keeps the
    m= line count: a stream once offered or answered stays, rejected with port 0.

    ``local`` may be replaced mid-dialog (say, a new RTP port); the next SDP then differs and
    gets the next version. An offer the peer rejected still counts as sent: the following
    offer takes the version after it, which RFC 3264 §8 allows since the peer saw it.
    """

    def __init__(self, local: LocalMedia) -> None:
        self.local = local
        self._last_sent: SessionDescription | None = None
        self._pending_offer: SessionDescription | None = None
        self._audio_index = 0

    @property
    def version(self) -> int | None:
        """Version of the last SDP sent, None before the first."""
        return None if self._last_sent is None else self._last_sent.origin.session_version

    def answer(self, offer: SessionDescription) -> Answer | NegotiationFailure:
        result = negotiate_answer(offer, self.local)
        if isinstance(result, NegotiationFailure):
            return result  # nothing sent, so the version does not move
        self._audio_index = result.media.media_index
        return Answer(self._stamp(result.sdp), result.media)

    def offer(self, direction: Direction = Direction.SENDRECV) -> SessionDescription:
        """An initial offer or a re-offer (hold: ``Direction.SENDONLY``; resume: SENDRECV)."""
        audio = build_offer(self.local, direction).media[0]
        if self._last_sent is None:
            lines = [audio]
        else:
            lines = [
                audio if index == self._audio_index else _rejected(media)
                for index, media in enumerate(self._last_sent.media)
            ]
        sdp = self._stamp(_session(self.local, lines))
        self._pending_offer = sdp
        return sdp

    def process_answer(self, answer: SessionDescription) -> NegotiatedMedia | NegotiationFailure:
        if self._pending_offer is None:
            raise RuntimeError("process_answer() without an outstanding offer")
        offer, self._pending_offer = self._pending_offer, None
        return process_answer(offer, answer)

    def _stamp(self, sdp: SessionDescription) -> SessionDescription:
        previous = self._last_sent
        if previous is None:
            version = self.local.session_version
        elif _same_content(sdp, previous):
            version = previous.origin.session_version
        else:
            version = previous.origin.session_version + 1
        # The o= line is pinned to the first SDP of the dialog, even if ``local`` changes later.
        origin = self.local.origin() if previous is None else previous.origin
        stamped = replace(sdp, origin=replace(origin, session_version=version))
        self._last_sent = stamped
        return stamped


def _same_content(a: SessionDescription, b: SessionDescription) -> bool:
    def unversioned(sdp: SessionDescription) -> SessionDescription:
        return replace(sdp, origin=replace(sdp.origin, session_version=0))

    return unversioned(a) == unversioned(b)
