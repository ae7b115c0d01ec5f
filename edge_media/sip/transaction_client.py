"""Requests a UAC derives from an INVITE it sent: CANCEL (§9.1) and the two kinds of ACK.

Why these live beside the transaction layer: each is defined by which header fields must be
*identical* to the INVITE's so that the far end matches it to the right transaction (CANCEL and
the non-2xx ACK reuse the INVITE's branch, §17.2.3) or to the dialog (the 2xx ACK is a new
transaction, §13.2.2.4). Values are copied as received whenever the RFC says "equal", so a peer
that compares header text byte by byte still matches.

`build_non_2xx_ack` is what the INVITE client transaction sends by itself; `build_cancel` is
used by `TransactionLayer.cancel`; `build_ack_for_2xx` is for the dialog layer, which sends the
2xx ACK outside any transaction (RFC 6026 §8.5).
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_media.sip.header_values import NameAddr, Via, parse_via
from edge_media.sip.headers import Headers
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.uri import SipUri, Uri

__all__ = [
    "MAGIC_COOKIE",
    "MAX_FORWARDS",
    "build_ack_for_2xx",
    "build_cancel",
    "build_non_2xx_ack",
    "has_magic_cookie",
]

# §8.1.1.7: branches of RFC 3261 elements start with this, which makes them unique transaction
# ids (§17.2.3); without it the RFC 2543 matching rules apply.
MAGIC_COOKIE = "z9hG4bK"
# §8.1.1.6: "a UAC MUST insert a Max-Forwards header field ... which SHOULD be 70".
MAX_FORWARDS = 70


def has_magic_cookie(branch: str | None) -> bool:
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def _top_via_line(request: SipRequest) -> str:
    """The request's top Via as received: the first line, if that line holds a single via-parm."""
    first = request.headers.get_lines("via")[0]
    if "," in first and len(parse_via(first)) > 1:
        return str(request.top_via)
    return first


def _required(message: SipRequest | SipResponse, name: str) -> str:
    value = message.headers.get(name)
    if value is None:  # parsed messages always have it; a hand-built one might not
        raise ValueError(f"the message has no {name} header field")
    return value


def _derived_request(
    method: str,
    uri: Uri,
    items: list[tuple[str, str]],
    extra_headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    content_type: str | None = None,
) -> SipRequest:
    items.extend(extra_headers)
    if body and content_type is None:
        raise ValueError("a non-empty body needs a content_type")
    if content_type is not None:
        items.append(("Content-Type", content_type))
    return SipRequest(method, uri, Headers(items), body)


def build_cancel(
    invite: SipRequest, *, extra_headers: Iterable[tuple[str, str]] = ()
) -> SipRequest:
    """The CANCEL for ``invite`` (§9.1); ``extra_headers`` may carry a Reason (RFC 3326).

    §9.1: "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in the
    CANCEL request MUST be identical to those in the request being cancelled, including tags. A
    CANCEL constructed by a client MUST have only a single Via header field value matching the
    top Via value in the request being cancelled. ... If the request being cancelled contains a
    Route header field, the CANCEL request MUST include that Route header field's values."
    """
    if invite.method != "INVITE":
        raise ValueError(f"only an INVITE is cancelled, not {invite.method} (§9.1)")
    items = [
        ("Via", _top_via_line(invite)),
        ("Max-Forwards", str(MAX_FORWARDS)),
        ("From", _required(invite, "from")),
        ("To", _required(invite, "to")),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} CANCEL"),
    ]
    items += [("Route", line) for line in invite.headers.get_lines("route")]
    return _derived_request("CANCEL", invite.uri, items, extra_headers)


def build_non_2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK the INVITE client transaction sends for a 300-699 response (§17.1.1.3).

    §17.1.1.3: Call-ID, From and Request-URI equal the INVITE's; "The To header field in the ACK
    MUST equal the To header field in the response being acknowledged"; a single Via equal to
    the INVITE's top Via (same branch, so it matches the server transaction); CSeq number of
    the INVITE with method ACK; the INVITE's Route header fields.
    """
    if not 300 <= response.status <= 699:
        raise ValueError(f"a {response.status} is acknowledged by the dialog layer (§13.2.2.4)")
    items = [
        ("Via", _top_via_line(invite)),
        ("Max-Forwards", str(MAX_FORWARDS)),
        ("From", _required(invite, "from")),
        ("To", _required(response, "to")),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    items += [("Route", line) for line in invite.headers.get_lines("route")]
    return _derived_request("ACK", invite.uri, items, ())


def _as_request_uri(uri: Uri) -> Uri:
    """A route URI usable as a Request-URI: §12.2.1.1 strips "parameters that are not allowed in
    a Request-URI" (Table 1: method, and URI headers) when a strict router comes first."""
    if not isinstance(uri, SipUri):
        return uri
    params = uri.params.without("method")
    return SipUri(uri.host, uri.user, uri.password, uri.port, params, (), uri.scheme)


def build_ack_for_2xx(
    invite: SipRequest,
    response: SipResponse,
    *,
    branch: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipRequest:
    """The ACK for a 2xx to ``invite``: a new transaction built like an in-dialog request.

    §13.2.2.4: "The header fields of the ACK are constructed in the same way as for any request
    sent within a dialog (see Section 12) with the exception of the CSeq and the header fields
    related to authentication. The sequence number of the CSeq header field MUST be the same as
    the INVITE being acknowledged, but the CSeq method MUST be ACK. The ACK MUST contain the
    same credentials as the INVITE."

    The dialog comes from the response (§12.1.2): the remote target is its Contact, the route
    set its Record-Route in reverse order. §12.2.1.1: with a loose router first (``lr``) the
    Request-URI is the remote target and Route is the route set; with a strict router first the
    Request-URI is that router and the remote target goes last in Route. A 2xx without a
    usable Contact (a broken peer) falls back to the INVITE's Request-URI.

    ``branch`` is the new transaction's (random, from the caller); the Via is otherwise the
    INVITE's top Via, so the ACK leaves from the same place. ``body`` carries the answer when
    the INVITE had no offer (§13.2.2.4). Raises SipParseError if the response's Contact or
    Record-Route is malformed, ValueError for a bad ``branch``.
    """
    if not 200 <= response.status <= 299:
        raise ValueError(f"a {response.status} is acknowledged by the transaction (§17.1.1.3)")
    if not has_magic_cookie(branch):
        raise ValueError(f"the branch must start with {MAGIC_COOKIE}: {branch!r}")
    contacts = response.contacts
    remote_target: Uri = contacts[0].uri if contacts and contacts != "*" else invite.uri
    route_set: list[NameAddr] = list(reversed(response.record_route))
    routes: list[str]
    if not route_set:
        request_uri, routes = remote_target, []
    elif isinstance(route_set[0].uri, SipUri) and "lr" in route_set[0].uri.params:
        request_uri, routes = remote_target, [str(route) for route in route_set]
    else:
        request_uri = _as_request_uri(route_set[0].uri)
        routes = [str(route) for route in route_set[1:]] + [f"<{remote_target}>"]
    top = invite.top_via
    params = top.params.without("received").with_param("branch", branch)
    via = Via(top.transport, top.host, top.port, params, top.protocol, top.version)
    items = [
        ("Via", str(via)),
        ("Max-Forwards", str(MAX_FORWARDS)),
        ("From", _required(invite, "from")),
        ("To", _required(response, "to")),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    items += [("Route", route) for route in routes]
    for name in ("Authorization", "Proxy-Authorization"):
        items += [(name, line) for line in invite.headers.get_lines(name)]
    return _derived_request("ACK", request_uri, items, extra_headers, body, content_type)
