"""Finding the body a layer wants inside a SIP message, multipart included (RFC 2046 §5.1).

Why apart from the message model: a message's body is opaque bytes to every layer but the one
that reads its content, and multipart (SDP wrapped in multipart/mixed by SIP-I/SIP-T gateways,
RFC 3204) brings its own delimiter and part-header rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import ContentType, parse_content_type
from edge_media.sip.headers import Headers
from edge_media.sip.message import SipMessage

__all__ = ["BodyPart", "body_of_type", "split_multipart"]


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One part of a multipart body (RFC 2046 §5.1)."""

    headers: Headers
    body: bytes

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        # RFC 2046 §5.1: a part without Content-Type is text/plain.
        return "text/plain" if value is None else parse_content_type(value).mime


def _part_headers(raw: bytes) -> Headers:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise SipParseError(400, "Multipart part headers are not UTF-8") from None
    text = _abnf.FOLD_RE.sub(" ", text)
    items: list[tuple[str, str]] = []
    for line in text.split("\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or _abnf.TOKEN_RE.fullmatch(name) is None or "\r" in value or "\n" in value:
            raise SipParseError(400, "Malformed multipart part header")
        items.append((name, value.strip(" \t")))
    return Headers(items)


def split_multipart(body: bytes, content_type: ContentType | str) -> list[BodyPart]:
    """Split a multipart body at its boundary (RFC 2046 §5.1.1); preamble and epilogue dropped.

    Raises SipParseError (400) when the boundary parameter is missing or the delimiters
    are not where RFC 2046 puts them.
    """
    parsed = parse_content_type(content_type) if isinstance(content_type, str) else content_type
    if parsed.type != "multipart":
        raise SipParseError(400, f"Not a multipart body: {parsed.mime}")
    boundary = parsed.params.get("boundary")
    if not boundary:
        raise SipParseError(400, "Multipart Content-Type without boundary")
    delimiter = b"--" + boundary.encode()
    # The first delimiter may open the body; later ones follow a CRLF that belongs to them.
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            raise SipParseError(400, "Multipart boundary not found")
        pos = found + 2 + len(delimiter)
    parts: list[BodyPart] = []
    separator = b"\r\n" + delimiter
    while True:
        if body.startswith(b"--", pos):
            return parts
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise SipParseError(400, "Malformed multipart delimiter line")
        part_start = line_end + 2
        part_end = body.find(separator, part_start)
        if part_end < 0:
            raise SipParseError(400, "Multipart body has no closing delimiter")
        part = body[part_start:part_end]
        if part.startswith(b"\r\n"):
            headers, content = Headers(), part[2:]
        else:
            split = part.find(b"\r\n\r\n")
            if split < 0:
                raise SipParseError(400, "Multipart part without a header/body separator")
            headers, content = _part_headers(part[:split]), part[split + 4 :]
        parts.append(BodyPart(headers, content))
        pos = part_end + len(separator)


def body_of_type(message: SipMessage, mime: str) -> bytes | None:
    """The body (or first multipart part) of type ``mime``: SDP inside multipart/mixed, as
    SIP-I/SIP-T gateways send it (RFC 3204), is found as well as a plain SDP body."""
    parsed = message.content_type_full
    if parsed is None or not message.body:
        return None
    wanted = mime.lower()
    if parsed.mime == wanted:
        return message.body
    if parsed.type == "multipart":
        for part in split_multipart(message.body, parsed):
            if part.content_type == wanted:
                return part.body
    return None
