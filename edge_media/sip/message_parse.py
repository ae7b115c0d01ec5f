"""Parsing SIP messages from the wire (RFC 3261 §7, §18.3 framing).

`parse_message` is the UDP entry point (one datagram); the TCP reader in `stream.py` frames with
the same head parser (`_Head`, `_parse_head`) before the body arrives. Why it is a module of its
own: it is the only code that reads untrusted bytes into a `SipRequest`/`SipResponse`, and it
checks every header field the layers above rely on, so they never handle parse errors later.
Errors are SipParseError only, carrying the status to answer and, for a request, its headers.
"""

from __future__ import annotations

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import (
    check_contacts,
    check_name_addr,
    is_rfc1123_date,
    parse_call_id,
    parse_content_type,
    parse_cseq,
    parse_max_forwards,
    parse_via,
)
from edge_media.sip.headers import _KEY_OF, COMPACT_FORMS, Headers
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.uri import check_request_uri

__all__ = ["parse_message"]

# §8.1.1: "A valid SIP request formulated by a UAC MUST, at a minimum, contain the following
# header fields: To, From, CSeq, Call-ID, Max-Forwards, and Via". Max-Forwards is tolerated
# when missing (RFC 2543 peers, RFC 4475 §3.4); responses carry the same set minus it (§8.2.6.2).
_REQUIRED = (("to", "To"), ("from", "From"), ("cseq", "CSeq"), ("call-id", "Call-ID"),
             ("via", "Via"))  # fmt: skip
_SINGLE = (("to", "To"), ("from", "From"), ("cseq", "CSeq"), ("call-id", "Call-ID"),
           ("max-forwards", "Max-Forwards"), ("content-type", "Content-Type"))  # fmt: skip


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
        content_type = index.get("content-type")
        if content_type is not None:
            # Parsed now, not when a layer first asks (message_policy does, for every request):
            # a malformed one must be answered 400 here, not raise inside the UA.
            cache["content_type"] = parse_content_type(content_type[0])
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
