"""Errors raised by the SIP message core.

Every problem found in bytes from the network is a `SipParseError` carrying the status we should
answer with (after h11's ``error_status_hint``), so the transport never has to guess whether a
failure was the peer's fault or ours: caller mistakes when *building* a message raise ValueError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_media.sip.headers import Headers

__all__ = ["DuplicateHeaderError", "SipParseError"]


class SipParseError(Exception):
    """Bytes from a peer that are not an acceptable SIP message.

    ``status`` is the response the receiver should send (400, 413, 414, 416, 420, 505); it only
    matters for requests, responses are silently dropped (RFC 3261 §18.1.2). ``reason`` is short
    and precise enough to be used as the reason phrase. ``request_headers`` holds the header
    fields of a request that could be framed, so the UA can still copy Via, From, To, Call-ID and
    CSeq into its error response (RFC 3261 §8.2.6); it is None for responses and for messages
    whose header section could not be delimited.
    """

    def __init__(self, status: int, reason: str, *, request_headers: Headers | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.request_headers = request_headers


class DuplicateHeaderError(SipParseError):
    """A header field that may occur once (Call-ID, CSeq, From, ...) occurs several times."""

    def __init__(self, name: str) -> None:
        super().__init__(400, f"Duplicate {name} header field")
        self.name = name
