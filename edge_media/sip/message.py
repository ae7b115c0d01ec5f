"""SIP requests and responses: parsing one datagram, serialising, building, validating.

`parse_message` is the UDP entry point (one datagram, RFC 3261 §18.3 framing); the TCP reader in
`stream.py` shares the same head parser. A parsed message has already had every header the
transaction and dialog layers rely on checked (Via, CSeq, Call-ID, From, To, Max-Forwards,
Contact), so those layers read them through cached accessors without their own error handling.
Checks that need policy (which methods, option tags, URI schemes and body types this UA
supports) are left to `validate_request`, which returns the answer RFC 3261 §8.2 prescribes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.headers import (
    _KEY_OF,
    COMPACT_FORMS,
    ContentType,
    CSeq,
    Headers,
    NameAddr,
    Via,
    check_contacts,
    check_name_addr,
    is_rfc1123_date,
    parse_call_id,
    parse_contacts,
    parse_content_type,
    parse_cseq,
    parse_max_forwards,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
)
from edge_media.sip.uri import SipUri, Uri, check_request_uri, parse_uri, uri_scheme

__all__ = [
    "DEFAULT_ALLOWED_METHODS",
    "KNOWN_METHODS",
    "REASON_PHRASES",
    "BodyPart",
    "Rejection",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "answer_parse_error",
    "body_of_type",
    "make_response",
    "parse_message",
    "split_multipart",
    "validate_request",
    "validate_response",
]

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
DEFAULT_ALLOWED_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "REFER", "NOTIFY",
)  # fmt: skip

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

# §8.1.1: "A valid SIP request formulated by a UAC MUST, at a minimum, contain the following
# header fields: To, From, CSeq, Call-ID, Max-Forwards, and Via". Max-Forwards is tolerated
# when missing (RFC 2543 peers, RFC 4475 §3.4); responses carry the same set minus it (§8.2.6.2).
_REQUIRED = (("to", "To"), ("from", "From"), ("cseq", "CSeq"), ("call-id", "Call-ID"),
             ("via", "Via"))  # fmt: skip
_SINGLE = (("to", "To"), ("from", "From"), ("cseq", "CSeq"), ("call-id", "Call-ID"),
           ("max-forwards", "Max-Forwards"), ("content-type", "Content-Type"))  # fmt: skip
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
# Parsing
# ---------------------------------------------------------------------------------------------
def _excerpt(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class _Head:
    """A delimited start line and header section, before the body is known.

    Errors found here are kept (not raised) until the header fields are in, so a request's
    error can carry them and the UA can still answer 400/505 (RFC 4475 §3.1.2). `stream.py`
    uses this class and `_parse_head` directly to frame messages before their body arrives.
    """

    __slots__ = ("error", "headers", "index", "is_request", "method", "reason", "status",
                 "uri_text")  # fmt: skip

    def __init__(self) -> None:
        self.error: SipParseError | None = None
        self.is_request = True
        self.method = ""
        self.uri_text = ""
        self.status = 0
        self.reason = ""

    def fail(self, status: int, reason: str) -> SipParseError:
        return SipParseError(
            status, reason, request_headers=self.headers if self.is_request else None
        )

    def content_length(self) -> int | None:
        values = self.index.get("content-length")
        if values is None:
            return None
        if len(values) > 1:
            # RFC 4475 §3.3.9: two lengths leave the body's extent unknown.
            raise self.fail(400, "Multiple Content-Length header fields")
        value = values[0]
        if _abnf.DIGITS_RE.fullmatch(value) is None:
            raise self.fail(400, f"Malformed Content-Length {_excerpt(value)}")
        if len(value.lstrip("0")) > _abnf.MAX_CONTENT_LENGTH_DIGITS:
            raise self.fail(413, "Content-Length too large")
        return int(value)

    def build(self, body: bytes) -> SipRequest | SipResponse:
        if self.error is not None:
            if self.is_request:
                self.error.request_headers = self.headers
            raise self.error
        if self.is_request:
            request = SipRequest._trusted(self.method, None, self.uri_text, self.headers, body)
            _check_message(request, self.index, self.headers, self.method)
            return request
        response = SipResponse._trusted(self.status, self.reason, self.headers, body)
        _check_message(response, self.index, None, None)
        return response


def _parse_request_line(head: _Head, line: str) -> None:
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (§7.1): exactly single SPs.
    parts = line.split(" ")
    if len(parts) != 3:
        if line != line.rstrip(" \t"):
            reason = "Trailing whitespace in Request-Line"
        elif "  " in line or line.startswith(" "):
            reason = "Request-Line elements must be separated by a single SP"
        else:
            reason = "Whitespace inside the Request-URI"
        head.error = SipParseError(400, reason)
        return
    method, uri_text, version = parts
    if version != _abnf.SIP_VERSION:
        match = _abnf.SIP_VERSION_RE.fullmatch(version)
        if match is None:
            head.error = SipParseError(400, f"Malformed SIP-Version {_excerpt(version)}")
            return
        if (int(match.group(1)), int(match.group(2))) != (2, 0):
            head.error = SipParseError(505, f"SIP version {version[4:]} not supported")
            return
    if _abnf.TOKEN_RE.fullmatch(method) is None:
        head.error = SipParseError(400, f"Malformed method {_excerpt(method)}")
        return
    head.method = method
    if len(uri_text) > _abnf.MAX_REQUEST_URI_LENGTH:
        head.error = SipParseError(414, "Request-URI too long")
        return
    if uri_text.startswith("<"):
        head.error = SipParseError(400, "Request-URI must not be enclosed in <>")
        return
    try:
        check_request_uri(uri_text)
    except SipParseError as exc:
        head.error = exc
        return
    head.uri_text = uri_text


def _parse_status_line(head: _Head, line: str) -> None:
    # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF (§7.2). A missing SP
    # after the code ("SIP/2.0 100") is tolerated: it loses nothing.
    head.is_request = False
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != _abnf.SIP_VERSION:
        head.error = SipParseError(505, f"Unsupported version in Status-Line {_excerpt(version)}")
    elif _abnf.STATUS_CODE_RE.fullmatch(code) is None:
        head.error = SipParseError(400, f"Malformed status code {_excerpt(code)}")
    elif _abnf.REASON_PHRASE_RE.fullmatch(reason) is None:
        head.error = SipParseError(400, "Malformed reason phrase")
    else:
        head.status = int(code)
        head.reason = reason


def _parse_head(data: bytes | bytearray, start: int, end: int) -> _Head:
    """Parse ``data[start:end]``: the start line and header lines, without the final CRLFCRLF.

    Raises SipParseError (no headers attached) only when the section itself is unusable;
    errors in the start line or a header line wait in ``head.error`` until `_Head.build`, so
    a stream can skip that one message using its Content-Length.
    """
    try:
        text = data[start:end].decode()
    except UnicodeDecodeError:
        raise SipParseError(400, "Header section is not valid UTF-8") from None
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        raise SipParseError(400, "Bare CR or LF in header section")
    if "\r\n " in text or "\r\n\t" in text:
        # §7.3.1 folding: the line break and leading whitespace become a single SP.
        text = _abnf.FOLD_RE.sub(" ", text)
    lines = text.split("\r\n")
    if len(lines) > _abnf.MAX_HEADERS + 1:
        raise SipParseError(400, "Too many header fields")
    head = _Head()
    start_line = lines[0]
    if start_line[:4].upper() == "SIP/":
        _parse_status_line(head, start_line)
    else:
        _parse_request_line(head, start_line)

    entries: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    key_of = _KEY_OF
    line_error: SipParseError | None = None
    # No line can be longer than the whole section: skip the per-line check when short.
    check_length = len(text) > _abnf.MAX_LINE_LENGTH
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = key_of.get(name)
        if key is None or not colon or (check_length and len(line) > _abnf.MAX_LINE_LENGTH):
            name = name.rstrip(" \t")
            key = key_of.get(name)
            if key is None and _abnf.TOKEN_RE.fullmatch(name) is not None:
                lowered = name.lower()
                key = COMPACT_FORMS.get(lowered, lowered)
            if key is None or not colon or len(line) > _abnf.MAX_LINE_LENGTH:
                if line_error is None:
                    line_error = SipParseError(400, f"Malformed header line {_excerpt(line)}")
                continue
        value = value.strip(" \t")
        entries.append((name, key, value))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    head.headers = Headers._trusted(tuple(entries), index)
    head.index = index
    if head.error is None and line_error is not None:
        head.error = line_error
    return head


def _check_message(
    message: SipRequest | SipResponse,
    index: dict[str, list[str]],
    request_headers: Headers | None,
    method: str | None,
) -> None:
    """Check the header fields every layer relies on, caching what was parsed (§8.1.1)."""
    try:
        try:
            to, from_, cseq_lines, call_id, via_lines = (
                index["to"], index["from"], index["cseq"], index["call-id"], index["via"]
            )  # fmt: skip
        except KeyError:
            missing = [name for key, name in _REQUIRED if key not in index]
            raise SipParseError(400, f"Missing {', '.join(missing)} header field(s)") from None
        if (
            len(to) > 1
            or len(from_) > 1
            or len(cseq_lines) > 1
            or len(call_id) > 1
            or len(index.get("max-forwards", ())) > 1
            or len(index.get("content-type", ())) > 1
        ):
            repeated = [name for key, name in _SINGLE if len(index.get(key, ())) > 1]
            raise SipParseError(400, f"Duplicate {', '.join(repeated)} header fields")
        cache = message._cache
        if len(via_lines) == 1:
            cache["vias"] = tuple(parse_via(via_lines[0]))
        else:
            cache["vias"] = tuple([via for line in via_lines for via in parse_via(line)])
        cseq = cache["cseq"] = parse_cseq(cseq_lines[0])
        if method is not None and cseq.method != method:
            # RFC 4475 §3.1.2.17/18: the CSeq method must match the Request-Line.
            raise SipParseError(
                400, f"CSeq method {cseq.method} does not match request method {method}"
            )
        cache["call_id"] = parse_call_id(call_id[0])
        # From, To and Contact are checked here but only built when a layer asks for them:
        # retransmissions absorbed by the transaction layer never need them.
        check_name_addr(from_[0], what="From")
        check_name_addr(to[0], what="To")
        max_forwards = index.get("max-forwards")
        if max_forwards is not None:
            cache["max_forwards"] = parse_max_forwards(max_forwards[0])
        contact_lines = index.get("contact")
        if contact_lines is not None:
            check_contacts(contact_lines)
        date = index.get("date")
        if date is not None and not is_rfc1123_date(date[0]):
            raise SipParseError(400, "Date header is not an RFC 1123 date in GMT")
    except SipParseError as exc:
        if request_headers is not None:
            exc.request_headers = request_headers
        raise


def parse_message(data: bytes) -> SipRequest | SipResponse | None:
    """Parse one UDP datagram into a request or response; None for a CRLF keep-alive.

    Framing follows §18.3: without Content-Length the body is the rest of the datagram; a
    larger Content-Length is an error (400); a smaller one truncates (extra octets, such as a
    second message, are ignored). Leading CRLFs are skipped (§7.5). Raises SipParseError only.
    """
    if len(data) > _abnf.MAX_MESSAGE_SIZE:
        raise SipParseError(413, "Message too large")
    start = 0
    if data[:1] in (b"\r", b"\n"):
        stripped = data.lstrip(b"\r\n")
        if not stripped:
            return None
        start = len(data) - len(stripped)
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError(400, "Header section not terminated by an empty line")
    head = _parse_head(data, start, end)
    body_start = end + 4
    length = head.content_length()
    if length is None:
        body = data[body_start:]
    else:
        available = len(data) - body_start
        if length > available:
            raise head.fail(
                400, f"Content-Length {length} exceeds the {available} body octets received"
            )
        body = data[body_start : body_start + length]
    return head.build(body)


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


# ---------------------------------------------------------------------------------------------
# Policy checks a UAS makes before acting (§8.2) and a UAC makes on responses (§8.1.3)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rejection:
    """The response a UAS should send instead of processing a request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def _media_range_matches(media_range: str, mime: str) -> bool:
    range_mime = media_range.split(";", 1)[0].strip(" \t").lower()
    if range_mime in ("*/*", mime):
        return True
    return range_mime.endswith("/*") and mime.startswith(range_mime[:-1])


def validate_request(
    request: SipRequest,
    *,
    allowed_methods: Sequence[str] = DEFAULT_ALLOWED_METHODS,
    supported: Iterable[str] = (),
    uri_schemes: Iterable[str] = ("sip", "sips", "tel"),
    accepted_content_types: Sequence[str] = ("application/sdp",),
    accepted_encodings: Sequence[str] = ("identity",),
    answer_content_type: str | None = None,
) -> Rejection | None:
    """Run the UAS checks of §8.2 in order; the first failing one gives the rejection.

    ``answer_content_type`` is the type of the body the response would carry (SDP for an
    INVITE); a request whose Accept excludes it gets 406 (§21.4.7, RFC 4475 §3.3.15). An ACK
    is never rejected: it has no response (§17.1.1.3).
    """
    method = request.method
    if method == "ACK":
        return None
    # §8.2.1 Method inspection.
    if method not in allowed_methods:
        allow = (("Allow", ", ".join(allowed_methods)),)
        if method in KNOWN_METHODS:
            return Rejection(405, "Method Not Allowed", allow)
        return Rejection(501, "Not Implemented", allow)
    # §8.2.2.1 To and Request-URI.
    if request.uri_scheme not in {scheme.lower() for scheme in uri_schemes}:
        return Rejection(416, "Unsupported URI Scheme")
    if method == "REGISTER" and not isinstance(request.to.uri, SipUri):
        # §10.2: the address-of-record in To "MUST be a SIP URI or SIPS URI".
        return Rejection(400, "REGISTER To must be a SIP or SIPS URI")
    # §8.2.2.3 Require (a CANCEL is never rejected for it).
    if method != "CANCEL":
        known = {tag.lower() for tag in supported}
        unsupported = [
            tag for tag in request.headers.get_all("require") if tag.lower() not in known
        ]
        if unsupported:
            return Rejection(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
    # §8.2.3 Content processing.
    if request.body:
        mime = request.content_type
        if mime is None:
            return Rejection(400, "Missing Content-Type for a non-empty body")
        if mime not in {t.lower() for t in accepted_content_types}:
            return Rejection(
                415, "Unsupported Media Type", (("Accept", ", ".join(accepted_content_types)),)
            )
        encodings = {e.lower() for e in accepted_encodings}
        if any(e.lower() not in encodings for e in request.headers.get_all("content-encoding")):
            return Rejection(
                415, "Unsupported Media Type", (("Accept-Encoding", ", ".join(accepted_encodings)),)
            )
    if answer_content_type is not None and "accept" in request.headers:
        ranges = request.headers.get_all("accept")
        wanted = answer_content_type.lower()
        if not any(_media_range_matches(r, wanted) for r in ranges):
            return Rejection(406, "Not Acceptable", (("Accept", answer_content_type),))
    return None


def validate_response(response: SipResponse) -> str | None:
    """Why a UAC should discard ``response``, or None: §8.1.3.3 drops a response whose Via
    holds more than one value (it was not meant for us; RFC 4475 §3.3.10)."""
    if len(response.vias) != 1:
        return f"Response has {len(response.vias)} Via values, expected 1"
    return None


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------
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
