"""CANCEL (§9.1), the non-2xx ACK (§17.1.1.3) and the 2xx ACK (§13.2.2.4), as literal bytes."""

from __future__ import annotations

import pytest

from edge_media.sip.errors import SipParseError
from edge_media.sip.headers import Headers
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_parse import parse_message
from edge_media.sip.transaction_client import (
    build_ack_for_2xx,
    build_cancel,
    build_non_2xx_ack,
    has_magic_cookie,
)

# An INVITE as received back from the wire: two Via values on one line, a pre-loaded Route,
# credentials and an SDP body, none of which may leak into the wrong derived request.
INVITE_BYTES = (
    b"INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1;rport, "
    b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKprev\r\n"
    b"Max-Forwards: 69\r\n"
    b"From: Alice <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\n"
    b"Call-ID: call-1@127.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5062>\r\n"
    b"Route: <sip:127.0.0.1:5080;lr>\r\n"
    b'Authorization: Digest username="alice", realm="r", nonce="n", uri="sip:bot@127.0.0.1", '
    b'response="00"\r\n'
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def invite() -> SipRequest:
    message = parse_message(INVITE_BYTES)
    assert isinstance(message, SipRequest)
    return message


def ok_with(*headers: tuple[str, str]) -> SipResponse:
    return make_response(invite(), 200, to_tag="b2", extra_headers=headers)


def test_cancel_copies_the_invite_fields() -> None:
    assert build_cancel(invite()).serialize() == (
        b"CANCEL sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@127.0.0.1>;tag=a1\r\n"
        b"To: <sip:bot@127.0.0.1>\r\n"
        b"Call-ID: call-1@127.0.0.1\r\n"
        b"CSeq: 7 CANCEL\r\n"
        b"Route: <sip:127.0.0.1:5080;lr>\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def test_cancel_with_reason_header() -> None:
    cancel = build_cancel(invite(), extra_headers=[("Reason", 'SIP;cause=200;text="elsewhere"')])
    assert cancel.headers.get_lines("reason") == ['SIP;cause=200;text="elsewhere"']
    assert cancel.headers.get_lines("via") == [
        "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1;rport"
    ]


def test_cancel_keeps_a_single_via_line_verbatim() -> None:
    built = SipRequest.build(
        "INVITE",
        "sip:bot@127.0.0.1",
        from_="<sip:a@127.0.0.1>;tag=x",
        to="<sip:bot@127.0.0.1>",
        call_id="c",
        cseq=1,
        via="SIP/2.0/udp 127.0.0.1:5062 ;branch=z9hG4bKsp",
    )
    assert build_cancel(built).headers.get_lines("via") == [
        "SIP/2.0/udp 127.0.0.1:5062 ;branch=z9hG4bKsp"
    ]


def test_only_an_invite_is_cancelled() -> None:
    options = SipRequest.build(
        "OPTIONS",
        "sip:bot@127.0.0.1",
        from_="<sip:a@127.0.0.1>;tag=x",
        to="<sip:bot@127.0.0.1>",
        call_id="c",
        cseq=1,
        via="SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKo",
    )
    with pytest.raises(ValueError, match="only an INVITE"):
        build_cancel(options)


def test_non_2xx_ack() -> None:
    busy = make_response(invite(), 486, to_tag="b1")
    assert build_non_2xx_ack(invite(), busy).serialize() == (
        b"ACK sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@127.0.0.1>;tag=a1\r\n"
        b"To: <sip:bot@127.0.0.1>;tag=b1\r\n"
        b"Call-ID: call-1@127.0.0.1\r\n"
        b"CSeq: 7 ACK\r\n"
        b"Route: <sip:127.0.0.1:5080;lr>\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize("status", [100, 180, 200, 299])
def test_non_2xx_ack_rejects_other_statuses(status: int) -> None:
    with pytest.raises(ValueError):
        build_non_2xx_ack(invite(), make_response(invite(), status, to_tag="b1"))


def test_2xx_ack_with_loose_routes() -> None:
    ok = ok_with(
        ("Contact", "<sip:bot@127.0.0.1:5060;transport=udp>"),
        ("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>"),
    )
    assert build_ack_for_2xx(invite(), ok, branch="z9hG4bKack1").serialize() == (
        b"ACK sip:bot@127.0.0.1:5060;transport=udp SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKack1;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@127.0.0.1>;tag=a1\r\n"
        b"To: <sip:bot@127.0.0.1>;tag=b2\r\n"
        b"Call-ID: call-1@127.0.0.1\r\n"
        b"CSeq: 7 ACK\r\n"
        b"Route: <sip:p2.example;lr>\r\n"
        b"Route: <sip:p1.example;lr>\r\n"
        b'Authorization: Digest username="alice", realm="r", nonce="n", '
        b'uri="sip:bot@127.0.0.1", response="00"\r\n'
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def test_2xx_ack_without_record_route_goes_to_the_contact() -> None:
    ok = ok_with(("Contact", "<sip:bot@10.0.0.9:5099>"))
    ack = build_ack_for_2xx(invite(), ok, branch="z9hG4bKack2")
    assert str(ack.uri) == "sip:bot@10.0.0.9:5099"
    assert ack.headers.get_lines("route") == []  # the INVITE's pre-loaded Route is not reused


def test_2xx_ack_with_a_strict_router_first() -> None:
    # §12.2.1.1: the strict router becomes the Request-URI (without the method parameter), the
    # remote target goes last in Route.
    ok = ok_with(
        ("Contact", "<sip:bot@10.0.0.9>"),
        ("Record-Route", "<sip:p1.example;lr>"),
        ("Record-Route", "<sip:strict.example;method=INVITE;maddr=10.0.0.1?x=y>"),
    )
    ack = build_ack_for_2xx(invite(), ok, branch="z9hG4bKack3")
    assert ack.serialize().split(b"\r\n")[0] == (b"ACK sip:strict.example;maddr=10.0.0.1 SIP/2.0")
    assert ack.headers.get_lines("route") == ["<sip:p1.example;lr>", "<sip:bot@10.0.0.9>"]


def test_2xx_ack_carries_the_late_answer_and_extra_headers() -> None:
    ok = ok_with(("Contact", "<sip:bot@127.0.0.1>"))
    ack = build_ack_for_2xx(
        invite(),
        ok,
        branch="z9hG4bKack4",
        extra_headers=[("User-Agent", "agera")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert ack.body == b"v=0\r\n"
    assert ack.headers.get_lines("content-type") == ["application/sdp"]
    assert ack.headers.get_lines("user-agent") == ["agera"]
    assert ack.serialize().endswith(b"Content-Length: 5\r\n\r\nv=0\r\n")


def test_2xx_ack_without_contact_falls_back_to_the_request_uri() -> None:
    ack = build_ack_for_2xx(invite(), ok_with(), branch="z9hG4bKack5")
    assert str(ack.uri) == "sip:bot@127.0.0.1:5060"


def test_2xx_ack_drops_received_from_our_via() -> None:
    stamped = invite().with_headers(
        Headers(
            [("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1;received=10.1.1.1")]
            + [(name, value) for name, value in invite().headers if name.lower() != "via"]
        )
    )
    ack = build_ack_for_2xx(stamped, ok_with(), branch="z9hG4bKack6")
    assert ack.headers.get_lines("via") == ["SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKack6"]


@pytest.mark.parametrize("branch", ["", "abc", "z9hG4b", "Z9HG4BKabc"])
def test_2xx_ack_needs_a_cookie_branch(branch: str) -> None:
    with pytest.raises(ValueError, match="branch"):
        build_ack_for_2xx(invite(), ok_with(), branch=branch)


@pytest.mark.parametrize("status", [180, 300, 486])
def test_2xx_ack_only_for_2xx(status: int) -> None:
    with pytest.raises(ValueError):
        build_ack_for_2xx(invite(), make_response(invite(), status, to_tag="b"), branch="z9hG4bKx")


def test_2xx_ack_with_malformed_record_route_raises_parse_error() -> None:
    with pytest.raises(SipParseError):
        build_ack_for_2xx(invite(), ok_with(("Record-Route", "<sip:p1")), branch="z9hG4bKx")


def test_derived_requests_parse_back() -> None:
    busy = make_response(invite(), 486, to_tag="b1")
    for request in (build_cancel(invite()), build_non_2xx_ack(invite(), busy)):
        parsed = parse_message(request.serialize())
        assert parsed == request


@pytest.mark.parametrize(
    ("branch", "expected"),
    [("z9hG4bK776asdhds", True), ("z9hG4bK", True), ("776asdhds", False), ("z9hg4bk1", False),
     (None, False)],
)  # fmt: skip
def test_has_magic_cookie(branch: str | None, expected: bool) -> None:
    assert has_magic_cookie(branch) is expected
