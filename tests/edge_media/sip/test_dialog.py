"""Dialogs: creation on both sides, route sets, in-dialog requests, CSeq rules, matching."""

from __future__ import annotations

import pytest

from edge_media.sip.dialog import Dialog, DialogError, DialogId, DialogState, DialogTable
from edge_media.sip.message import make_response
from edge_media.sip.message_parse import parse_message

INVITE = (
    b"INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-proxy;rport\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-caller\r\n"
    b"Record-Route: <sip:127.0.0.1:5070;lr;ftag=abc>\r\n"
    b"Record-Route: <sip:127.0.0.1:5071;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Carrier" <sip:+15005550006@127.0.0.1>;tag=caller-tag\r\n'
    b"To: <sip:bot@127.0.0.1>\r\n"
    b"Call-ID: call-1@127.0.0.1\r\n"
    b"CSeq: 10 INVITE\r\n"
    b"Contact: <sip:carrier@127.0.0.1:5080;transport=udp>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite():
    return parse_message(INVITE)


def test_uas_dialog_takes_record_route_in_order_and_builds_bye() -> None:
    dialog = Dialog.as_uas(invite(), local_tag="gw-tag", local_seq=100)
    assert dialog.id == DialogId("call-1@127.0.0.1", "gw-tag", "caller-tag")
    assert dialog.state is DialogState.EARLY and not dialog.is_uac
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b1")
    assert str(bye.uri) == "sip:carrier@127.0.0.1:5080;transport=udp"  # loose routing
    assert [str(r.uri) for r in bye.route] == [
        "sip:127.0.0.1:5070;lr;ftag=abc",
        "sip:127.0.0.1:5071;lr",
    ]
    assert bye.from_tag == "gw-tag" and bye.to_tag == "caller-tag"
    assert (bye.cseq.number, bye.cseq.method) == (101, "BYE")
    assert bye.call_id == "call-1@127.0.0.1"
    assert str(dialog.next_hop()) == "sip:127.0.0.1:5070;lr;ftag=abc"
    # A second request takes the next number; the wire form parses back identically.
    info = dialog.create_request("INFO", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b2")
    assert info.cseq.number == 102
    assert parse_message(bytes(info)) == info


def test_uac_dialog_reverses_record_route_and_follows_the_2xx() -> None:
    request = invite()
    ok = make_response(request, 200, to_tag="callee-tag")
    ok = ok.with_headers(ok.headers.with_added("Contact", "<sip:callee@127.0.0.1:6000>"))
    dialog = Dialog.as_uac(request, ok)
    assert dialog.is_uac and dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("call-1@127.0.0.1", "caller-tag", "callee-tag")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:127.0.0.1:5071;lr",
        "sip:127.0.0.1:5070;lr;ftag=abc",
    ]
    ack = dialog.create_request(
        "ACK", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-ack", cseq=request.cseq.number
    )
    assert (ack.cseq.number, ack.cseq.method) == (10, "ACK")
    assert str(ack.uri) == "sip:callee@127.0.0.1:6000"
    with pytest.raises(ValueError, match="needs the INVITE's CSeq"):
        dialog.create_request("ACK", via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-x")


def test_strict_router_gets_the_request_uri() -> None:
    strict = INVITE.replace(b"<sip:127.0.0.1:5070;lr;ftag=abc>", b"<sip:127.0.0.1:5070>")
    dialog = Dialog.as_uas(parse_message(strict), local_tag="t", local_seq=1)
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-s")
    assert str(bye.uri) == "sip:127.0.0.1:5070"
    assert [str(r.uri) for r in bye.route] == [
        "sip:127.0.0.1:5071;lr",
        "sip:carrier@127.0.0.1:5080;transport=udp",
    ]


def test_no_route_set_sends_to_the_contact() -> None:
    bare = INVITE.replace(b"Record-Route: <sip:127.0.0.1:5070;lr;ftag=abc>\r\n", b"").replace(
        b"Record-Route: <sip:127.0.0.1:5071;lr>\r\n", b""
    )
    dialog = Dialog.as_uas(parse_message(bare), local_tag="t", local_seq=1)
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n")
    assert bye.route == ()
    assert str(dialog.next_hop()) == "sip:carrier@127.0.0.1:5080;transport=udp"


def test_remote_cseq_must_increase() -> None:
    dialog = Dialog.as_uas(invite(), local_tag="gw-tag", local_seq=1)
    reinvite = parse_message(
        INVITE.replace(b"CSeq: 10 INVITE", b"CSeq: 11 INVITE").replace(
            b"To: <sip:bot@127.0.0.1>", b"To: <sip:bot@127.0.0.1>;tag=gw-tag"
        )
    )
    dialog.receive_request(reinvite)
    assert dialog.remote_seq == 11
    with pytest.raises(DialogError) as info:
        dialog.receive_request(reinvite)
    assert info.value.status == 500
    older = parse_message(bytes(reinvite).replace(b"CSeq: 11 INVITE", b"CSeq: 5 INVITE"))
    with pytest.raises(DialogError, match="500 CSeq out of order"):
        dialog.receive_request(older)


def test_target_refresh_and_termination() -> None:
    dialog = Dialog.as_uas(invite(), local_tag="gw-tag", local_seq=1)
    moved = parse_message(
        INVITE.replace(
            b"<sip:carrier@127.0.0.1:5080;transport=udp>", b"<sip:carrier@127.0.0.1:5090>"
        )
    )
    dialog.refresh_target(moved)
    assert str(dialog.remote_target) == "sip:carrier@127.0.0.1:5090"
    dialog.terminate()
    with pytest.raises(DialogError) as info:
        dialog.create_request("BYE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-t")
    assert info.value.status == 481


def test_invite_without_contact_or_from_tag_cannot_make_a_dialog() -> None:
    no_contact = INVITE.replace(b"Contact: <sip:carrier@127.0.0.1:5080;transport=udp>\r\n", b"")
    with pytest.raises(DialogError, match="400 Missing Contact in INVITE"):
        Dialog.as_uas(parse_message(no_contact), local_tag="t", local_seq=1)
    no_tag = INVITE.replace(b";tag=caller-tag", b"")
    with pytest.raises(DialogError, match="400 Missing From tag"):
        Dialog.as_uas(parse_message(no_tag), local_tag="t", local_seq=1)


def test_table_matches_requests_and_responses_by_tags() -> None:
    table = DialogTable()
    dialog = Dialog.as_uas(invite(), local_tag="gw-tag", local_seq=1)
    table.add(dialog)
    bye_in = parse_message(
        INVITE.replace(b"INVITE sip:bot", b"BYE sip:bot")
        .replace(b"CSeq: 10 INVITE", b"CSeq: 11 BYE")
        .replace(b"To: <sip:bot@127.0.0.1>", b"To: <sip:bot@127.0.0.1>;tag=gw-tag")
    )
    assert table.for_request(bye_in) is dialog
    wrong = parse_message(bytes(bye_in).replace(b"tag=gw-tag", b"tag=other"))
    assert table.for_request(wrong) is None
    ours = dialog.create_request("BYE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-r")
    assert table.for_response(make_response(ours, 200)) is dialog
    table.remove(dialog)
    assert table.for_request(bye_in) is None and len(table) == 0
