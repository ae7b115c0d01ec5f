"""SIP requests and responses: the message model, its wire form, and building responses.

Why the model is apart from the parser (`message_parse`): every layer builds, inspects and
serialises messages, but only the transport turns bytes into them. A parsed message has already
had every header the transaction and dialog layers rely on checked (Via, CSeq, Call-ID, From, To,
Max-Forwards, Contact), so those layers read them through the cached accessors here without
their own error handling. Checks that need policy live in `message_policy`, multipart bodies in
`message_bodies`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import (
    ContentType,
    CSeq,
    NameAddr,
    Via,
    parse_call_id,
    parse_contacts,
    parse_content_type,
    parse_cseq,
    parse_max_forwards,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
)
from edge_media.sip.headers import Headers
from edge_media.sip.uri import Uri, parse_uri, uri_scheme

__all__ = [
    "REASON_PHRASES",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "answer_parse_error",
    "make_response",
]

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip
# §12.1.1: responses that establish a dialog copy Record-Route from the request.
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
_CRLF = "\r\n"


def _reason_for(status: int) -> str:
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


class SipMessage:
    """What requests and responses share: headers, body and cached views of key headers.

    Instances are read-only by convention (private slots behind properties); use `replace`
    style helpers (``with_headers``/``with_body``) to derive new messages.
    """

    __slots__ = ("_body", "_cache", "_headers")

    _headers: Headers
    _body: bytes
    _cache: dict[str, Any]

    @property
    def headers(self) -> Headers:
        return self._headers

    @property
    def body(self) -> bytes:
        return self._body

    # -- cached header views -----------------------------------------------------------------
    def _single(self, key: str, name: str) -> str:
        value = self._headers.get(key)
        if value is None:
            raise SipParseError(400, f"Missing {name} header field")
        return value

    @property
    def call_id(self) -> str:
        cached = self._cache.get("call_id")
        if cached is None:
            cached = self._cache["call_id"] = parse_call_id(self._single("call-id", "Call-ID"))
        return cached

    @property
    def cseq(self) -> CSeq:
        cached = self._cache.get("cseq")
        if cached is None:
            cached = self._cache["cseq"] = parse_cseq(self._single("cseq", "CSeq"))
        return cached

    @property
    def vias(self) -> tuple[Via, ...]:
        cached = self._cache.get("vias")
        if cached is None:
            vias: list[Via] = []
            for line in self._headers.get_lines("via"):
                vias.extend(parse_via(line))
            cached = self._cache["vias"] = tuple(vias)
        return cached

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError(400, "Missing Via header field")
        return vias[0]

    @property
    def branch(self) -> str | None:
        """The top Via branch: the transaction id when it starts with z9hG4bK (§17.2.3)."""
        return self.top_via.branch

    @property
    def from_(self) -> NameAddr:
        cached = self._cache.get("from")
        if cached is None:
            value = self._single("from", "From")
            cached = self._cache["from"] = parse_name_addr(value, what="From")
        return cached

    @property
    def to(self) -> NameAddr:
        cached = self._cache.get("to")
        if cached is None:
            cached = self._cache["to"] = parse_name_addr(self._single("to", "To"), what="To")
        return cached

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def max_forwards(self) -> int | None:
        if "max_forwards" not in self._cache:
            value = self._headers.get("max-forwards")
            self._cache["max_forwards"] = None if value is None else parse_max_forwards(value)
        return self._cache["max_forwards"]

    @property
    def contacts(self) -> tuple[NameAddr, ...] | Literal["*"]:
        """All Contact values in order; ``"*"`` for a REGISTER removing all bindings."""
        cached = self._cache.get("contacts")
        if cached is None:
            lines = self._headers.get_lines("contact")
            cached = self._cache["contacts"] = parse_contacts(lines) if lines else ()
        return cached

    @property
    def record_route(self) -> tuple[NameAddr, ...]:
        return self._name_addr_list("record-route", "Record-Route")

    @property
    def route(self) -> tuple[NameAddr, ...]:
        return self._name_addr_list("route", "Route")

    def _name_addr_list(self, key: str, name: str) -> tuple[NameAddr, ...]:
        cached = self._cache.get(key)
        if cached is None:
            items: list[NameAddr] = []
            for line in self._headers.get_lines(key):
                items.extend(parse_name_addr_list(line, what=name))
            cached = self._cache[key] = tuple(items)
        return cached

    @property
    def content_type(self) -> str | None:
        """The body's media type in lower case without parameters (``application/sdp``)."""
        parsed = self.content_type_full
        return None if parsed is None else parsed.mime

    @property
    def content_type_full(self) -> ContentType | None:
        if "content_type" not in self._cache:
            value = self._headers.get("content-type")
            self._cache["content_type"] = None if value is None else parse_content_type(value)
        return self._cache["content_type"]

    # -- wire form ---------------------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The message on the wire, with a Content-Length that matches the body (§20.14).

        An existing Content-Length line keeps its place and spelling; otherwise one is added
        last, since stream transports require it (§18.3).
        """
        body = self._body
        parts = [self._start_line(), _CRLF]
        length_written = False
        for name, key, value in self._headers.entries():
            if key == "content-length":
                if length_written:
                    continue
                value = str(len(body))
                length_written = True
            parts += (name, ": ", value, _CRLF)
        if not length_written:
            parts += ("Content-Length: ", str(len(body)), _CRLF)
        parts.append(_CRLF)
        return "".join(parts).encode() + body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def _same_content(self, other: SipMessage) -> bool:
        # Content-Length is framing, derived from the body: it does not make messages differ.
        mine = [e[1:] for e in self._headers.entries() if e[1] != "content-length"]
        theirs = [e[1:] for e in other._headers.entries() if e[1] != "content-length"]
        return mine == theirs and self._body == other._body

    __hash__ = None  # type: ignore[assignment]


class SipRequest(SipMessage):
    """A SIP request (§7.1). ``uri`` may be any scheme: check ``uri.scheme`` (416, §8.2.2.1)."""

    __slots__ = ("_method", "_uri", "_uri_text")

    def __init__(self, method: str, uri: Uri | str, headers: Headers, body: bytes = b"") -> None:
        if _abnf.TOKEN_RE.fullmatch(method) is None:
            raise ValueError(f"a method must be a token: {method!r}")
        if not isinstance(headers, Headers):
            raise TypeError("headers must be a Headers instance")
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        self._method = method
        self._uri = parse_uri(uri) if isinstance(uri, str) else uri
        self._uri_text = str(self._uri)
        self._headers = headers
        self._body = body
        self._cache = {}

    @classmethod
    def _trusted(
        cls, method: str, uri: Uri | None, uri_text: str, headers: Headers, body: bytes
    ) -> SipRequest:
        """Wrap parts the parser validated; ``uri`` may be None to parse ``uri_text`` lazily."""
        request = object.__new__(cls)
        request._method = method
        request._uri = uri
        request._uri_text = uri_text
        request._headers = headers
        request._body = body
        request._cache = {}
        return request

    @property
    def method(self) -> str:
        return self._method

    @property
    def uri(self) -> Uri:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self._uri_text)
        return uri

    @property
    def uri_scheme(self) -> str:
        """The Request-URI scheme in lower case; anything but sip/sips/tel deserves 416."""
        return uri_scheme(self._uri_text)

    def _start_line(self) -> str:
        return f"{self._method} {self._uri_text} {_abnf.SIP_VERSION}"

    def with_headers(self, headers: Headers) -> SipRequest:
        return SipRequest._trusted(self._method, self._uri, self._uri_text, headers, self._body)

    def with_body(self, body: bytes) -> SipRequest:
        return SipRequest._trusted(self._method, self._uri, self._uri_text, self._headers, body)

    def with_uri(self, uri: Uri) -> SipRequest:
        return SipRequest._trusted(self._method, uri, str(uri), self._headers, self._body)

    @classmethod
    def build(
        cls,
        method: str,
        uri: Uri | str,
        *,
        from_: NameAddr | str,
        to: NameAddr | str,
        call_id: str,
        cseq: int,
        via: Via | str | Sequence[Via | str] = (),
        max_forwards: int | None = 70,
        contact: NameAddr | str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """Build a request with the §8.1.1 header fields in the conventional order.

        ``via`` may be left empty when the transport adds it; Content-Length is written by
        `serialize`. A non-empty body needs ``content_type`` (§7.4.1).
        """
        if _abnf.TOKEN_RE.fullmatch(method) is None:
            raise ValueError(f"a method must be a token: {method!r}")
        if not 0 <= cseq <= _abnf.MAX_CSEQ:
            raise ValueError(f"CSeq number out of range: {cseq}")
        if _abnf.CALL_ID_RE.fullmatch(call_id) is None:
            raise ValueError(f"invalid Call-ID: {call_id!r}")
        if body and content_type is None:
            raise ValueError("a non-empty body needs a content_type")
        vias = [via] if isinstance(via, Via | str) else list(via)
        items: list[tuple[str, str]] = [("Via", str(v)) for v in vias]
        if max_forwards is not None:
            items.append(("Max-Forwards", str(max_forwards)))
        items += [
            ("From", str(from_)),
            ("To", str(to)),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact is not None:
            items.append(("Contact", str(contact)))
        items.extend(extra_headers)
        if content_type is not None:
            items.append(("Content-Type", content_type))
        return cls(method, uri, Headers(items), body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipRequest):
            return NotImplemented
        return self._method == other._method and self.uri == other.uri and self._same_content(other)

    def __repr__(self) -> str:
        return f"<SipRequest {self._method} {self._uri_text} ({len(self._body)} body octets)>"


class SipResponse(SipMessage):
    """A SIP response (§7.2)."""

    __slots__ = ("_reason", "_status")

    def __init__(
        self, status: int, reason: str | None, headers: Headers, body: bytes = b""
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status out of range: {status}")
        reason = _reason_for(status) if reason is None else reason
        if _abnf.REASON_PHRASE_RE.fullmatch(reason) is None:
            raise ValueError(f"invalid reason phrase: {reason!r}")
        if not isinstance(headers, Headers):
            raise TypeError("headers must be a Headers instance")
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        self._status = status
        self._reason = reason
        self._headers = headers
        self._body = body
        self._cache = {}

    @classmethod
    def _trusted(cls, status: int, reason: str, headers: Headers, body: bytes) -> SipResponse:
        response = object.__new__(cls)
        response._status = status
        response._reason = reason
        response._headers = headers
        response._body = body
        response._cache = {}
        return response

    @property
    def status(self) -> int:
        return self._status

    @property
    def reason(self) -> str:
        return self._reason

    def _start_line(self) -> str:
        return f"{_abnf.SIP_VERSION} {self._status} {self._reason}"

    def with_headers(self, headers: Headers) -> SipResponse:
        return SipResponse._trusted(self._status, self._reason, headers, self._body)

    def with_body(self, body: bytes) -> SipResponse:
        return SipResponse._trusted(self._status, self._reason, self._headers, body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipResponse):
            return NotImplemented
        return (
            self._status == other._status
            and self._reason == other._reason
            and self._same_content(other)
        )

    def __repr__(self) -> str:
        return f"<SipResponse {self._status} {self._reason} ({len(self._body)} body octets)>"


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------
def _response_from_lines(
    lines: Headers,
    status: int,
    reason: str | None,
    to_value: str | None,
    copy_record_route: bool,
    extra: Iterable[tuple[str, str]],
    body: bytes,
    content_type: str | None,
) -> SipResponse:
    items: list[tuple[str, str]] = [("Via", v) for v in lines.get_lines("via")]
    if copy_record_route:
        items += [("Record-Route", v) for v in lines.get_lines("record-route")]
    for key, name in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        values = lines.get_lines(key)
        if key == "to" and to_value is not None:
            items.append((name, to_value))
        elif values:
            items.append((name, values[0]))
    if status == 100:
        # §8.2.6.1: a 100 (Trying) copies the request's Timestamp.
        items += [("Timestamp", v) for v in lines.get_lines("timestamp")]
    items.extend(extra)
    if body and content_type is None:
        raise ValueError("a non-empty body needs a content_type")
    if content_type is not None:
        items.append(("Content-Type", content_type))
    return SipResponse(status, reason, Headers(items), body)


def _add_tag(to_value: str, tag: str) -> str:
    if _abnf.TOKEN_RE.fullmatch(tag) is None:
        raise ValueError(f"a tag must be a token: {tag!r}")
    return f"{to_value};tag={tag}"


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """Build a response to ``request`` as §8.2.6 says.

    Via (all, in order), From, Call-ID and CSeq are copied verbatim. To is copied too and gets
    ``to_tag`` if the request had no tag; a tag is required then, except for 100 (Trying).
    Record-Route is copied into 101-299 responses to dialog-creating requests (§12.1.1).
    """
    to_value = request.headers.get("to")
    if to_value is None:
        raise ValueError("the request has no To header field")
    if request.to_tag is None:
        if to_tag is not None:
            to_value = _add_tag(to_value, to_tag)
        elif status != 100:
            raise ValueError("a UAS must add a To tag to responses other than 100 (§8.2.6.2)")
    copy_record_route = 100 < status < 300 and request.method in _DIALOG_METHODS
    return _response_from_lines(
        request.headers,
        status,
        reason,
        to_value,
        copy_record_route,
        extra_headers,
        body,
        content_type,
    )


def answer_parse_error(error: SipParseError, *, to_tag: str) -> SipResponse | None:
    """The error response for a request that failed to parse, or None if none can be sent.

    None when the message was a response or could not be framed, when it has no usable Via
    (nowhere to send to, §18.2.2), or when it is an ACK (never answered, §17.2.1).
    """
    lines = error.request_headers
    if lines is None or "via" not in lines:
        return None
    try:
        vias = [via for line in lines.get_lines("via") for via in parse_via(line)]
    except SipParseError:
        return None
    if not vias:
        return None
    cseq_lines = lines.get_lines("cseq")
    if cseq_lines and cseq_lines[0].split()[-1:] == ["ACK"]:
        return None
    to_lines = lines.get_lines("to")
    to_value: str | None = to_lines[0] if to_lines else None
    if to_value is not None:
        try:
            if parse_name_addr(to_value).tag is None:
                to_value = _add_tag(to_value, to_tag)
        except SipParseError:
            pass
    reason = error.reason if _abnf.REASON_PHRASE_RE.fullmatch(error.reason) else None
    return _response_from_lines(lines, error.status, reason, to_value, False, (), b"", None)
