"""Policy checks on SIP messages: what a UAS verifies before acting (RFC 3261 §8.2) and why a
UAC discards a response (§8.1.3).

Why apart from parsing: the parser (`message_parse`) only rejects what no UA could process;
which methods, option tags, URI schemes and body types this UA supports is configuration, so
`validate_request` takes it as arguments and returns the answer §8.2 prescribes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.uri import SipUri

__all__ = [
    "DEFAULT_ALLOWED_METHODS",
    "KNOWN_METHODS",
    "Rejection",
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
