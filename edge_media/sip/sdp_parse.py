"""Parsing SDP text (RFC 8866 §5) into the model of `sdp_model`.

Why it is separate: this is where untrusted bytes enter, so its limits and its one exception
type (``SdpError``) are easiest to audit on their own. It is lenient where real
peers differ (LF or CRLF, blank lines, session-level lines in any order, unknown attributes) and
strict where a wrong guess would send media to the wrong place (``c=``, ``m=``, ``rtpmap``,
``ptime``, ``rtcp``, direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

from edge_media.sip.sdp_model import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    check_attribute,
    parse_int,
    parse_payload_type,
)

__all__ = ["MAX_MEDIA_DESCRIPTIONS", "MAX_SDP_BYTES", "MAX_SDP_LINES", "parse_sdp"]

# Limits. A real audio offer is well under 2 KiB; WebRTC offers reach ~10 KiB.
MAX_SDP_BYTES = 32 * 1024
MAX_SDP_LINES = 1024
MAX_MEDIA_DESCRIPTIONS = 32

_T = TypeVar("_T")


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
    return Bandwidth(bwtype, parse_int(amount.strip(), "b= bandwidth"))


def _parse_origin(value: str) -> Origin:
    fields = value.split()
    if len(fields) != 6:
        raise SdpError(f"o={value} needs 6 fields, got {len(fields)}")
    version = parse_int(fields[2], "o= session version")
    return Origin(fields[0], fields[1], version, fields[3], fields[4], fields[5])


def _parse_timing(value: str) -> Timing:
    fields = value.split()
    if len(fields) != 2:
        raise SdpError(f"t={value} needs '<start> <stop>'")
    return Timing(parse_int(fields[0], "t= start"), parse_int(fields[1], "t= stop"))


def _parse_media_line(value: str) -> MediaDescription:
    fields = value.split()
    if len(fields) < 3:
        raise SdpError(f"m={value} needs '<media> <port> <proto> <fmt> ...'")
    port_text, slash, count_text = fields[1].partition("/")
    port = parse_int(port_text, "m= port", 0, 65535)
    port_count = parse_int(count_text, "m= port count", 1) if slash else None
    formats = tuple(fields[3:])
    # RFC 8866 §5.14 wants at least one format; rejected streams (port 0) sometimes omit it.
    if not formats and port != 0:
        raise SdpError(f"m={value} lists no media formats")
    media = MediaDescription(fields[0], port, fields[2], formats, port_count)
    if media.is_rtp:  # RFC 8866 §5.14: for RTP/AVP the formats are payload type numbers
        for fmt in formats:
            parse_payload_type(fmt, "m=")
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
            self.direction = check_attribute(attribute, self.direction)
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
            self.direction = check_attribute(attribute, self.direction)
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
