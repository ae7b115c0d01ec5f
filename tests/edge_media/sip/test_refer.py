"""REFER and NOTIFY sipfrag: Refer-To parsing, the transferee's NOTIFYs, the transferor's states."""

from __future__ import annotations

import pytest

from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import NameAddr
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_parse import parse_message
from edge_media.sip.refer import (
    SIPFRAG_CONTENT_TYPE,
    ReferError,
    ReferNotifier,
    ReferNotify,
    ReferRequest,
    Replaces,
    build_sipfrag,
    format_refer_to,
    parse_refer,
    parse_refer_to,
    parse_replaces,
    refer_headers,
)
from edge_media.sip.refer_transferor import (
    EventHeader,
    NotifyAnswer,
    OutgoingRefer,
    Sipfrag,
    SubscriptionState,
    TransferState,
    event_of,
    parse_event,
    parse_sipfrag,
    parse_subscription_state,
)
from edge_media.sip.uri import Params, SipUri, TelUri

# In-dialog REFER as sipp and baresip send it: compact forms for Refer-To (r) and Referred-By (b).
REFER_HEAD = (
    b"REFER sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-refer1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5080>;tag=caller-tag\r\n"
    b"To: bot <sip:bot@127.0.0.1:5060>;tag=gw-tag\r\n"
    b"Call-ID: refer-1@127.0.0.1\r\n"
    b"CSeq: 2 REFER\r\n"
    b"Contact: sip:sipp@127.0.0.1:5080\r\n"
)


def refer(*lines: str) -> SipRequest:
    extra = "".join(f"{line}\r\n" for line in lines).encode()
    message = parse_message(REFER_HEAD + extra + b"Content-Length: 0\r\n\r\n")
    assert isinstance(message, SipRequest)
    return message


def refer_error(*lines: str) -> ReferError:
    with pytest.raises(ReferError) as info:
        parse_refer(refer(*lines))
    return info.value


def notify(
    event: str | None = "refer",
    state: str | None = "active;expires=60",
    body: bytes = b"SIP/2.0 100 Trying\r\n",
    content_type: str | None = SIPFRAG_CONTENT_TYPE,
    cseq: int = 3,
) -> SipRequest:
    headers: list[tuple[str, str]] = []
    if event is not None:
        headers.append(("Event", event))
    if state is not None:
        headers.append(("Subscription-State", state))
    request = SipRequest.build(
        "NOTIFY",
        "sip:bot@127.0.0.1:5060",
        from_="<sip:carrier@127.0.0.1:5080>;tag=caller-tag",
        to="<sip:bot@127.0.0.1:5060>;tag=gw-tag",
        call_id="out-1@127.0.0.1",
        cseq=cseq,
        via=f"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-n{cseq}",
        extra_headers=headers,
        body=body,
        content_type=content_type if body else None,
    )
    parsed = parse_message(bytes(request))
    assert isinstance(parsed, SipRequest)
    return parsed


def refer_response(status: int, *lines: tuple[str, str]) -> SipResponse:
    sent = SipRequest.build(
        "REFER",
        "sip:carrier@127.0.0.1:5080",
        from_="<sip:bot@127.0.0.1:5060>;tag=gw-tag",
        to="<sip:carrier@127.0.0.1:5080>;tag=caller-tag",
        call_id="out-1@127.0.0.1",
        cseq=7,
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-r7",
        extra_headers=refer_headers(SipUri.parse("sip:agent@127.0.0.1:5092")),
    )
    return make_response(sent, status, extra_headers=lines)


# -- Refer-To ----------------------------------------------------------------------------------
def test_refer_to_forms() -> None:
    bracketed = parse_refer_to("<sip:transfer-target@127.0.0.1:5099>")
    assert bracketed.uri == SipUri("127.0.0.1", "transfer-target", port=5099)
    assert (bracketed.display_name, bracketed.headers, bracketed.replaces) == (None, (), None)
    named = parse_refer_to('"Sales Desk" <sip:sales@127.0.0.1;user=phone>;x-tag=1')
    assert named.display_name == "Sales Desk"
    assert str(named.uri) == "sip:sales@127.0.0.1;user=phone"
    assert named.params == Params((("x-tag", "1"),))
    bare = parse_refer_to("sip:agent@127.0.0.1:5092")
    assert str(bare.uri) == "sip:agent@127.0.0.1:5092"
    tel = parse_refer_to("<tel:+1-555-0100>")
    assert isinstance(tel.uri, TelUri) and tel.uri.digits == "+15550100"
    invite_method = parse_refer_to("<sip:agent@127.0.0.1;method=INVITE>")
    assert str(invite_method.uri) == "sip:agent@127.0.0.1"
    assert invite_method.method == "INVITE"


def test_refer_to_with_embedded_replaces_and_headers() -> None:
    target = parse_refer_to(
        "<sip:bob@127.0.0.1:5099?Replaces=call-9%40127.0.0.1%3Bto-tag%3Dt1%3Bfrom-tag%3Df1"
        "&Subject=transfer%20test>"
    )
    assert str(target.uri) == "sip:bob@127.0.0.1:5099"
    assert target.headers == (
        ("Replaces", "call-9@127.0.0.1;to-tag=t1;from-tag=f1"),
        ("Subject", "transfer test"),
    )
    assert target.replaces == Replaces("call-9@127.0.0.1", "t1", "f1")
    assert target.header("subject") == "transfer test"
    assert target.header("Accept-Contact") is None


def test_format_refer_to_escapes_replaces_and_parses_back() -> None:
    replaces = Replaces("call-9@127.0.0.1", "t1", "f1", early_only=True)
    value = format_refer_to(SipUri.parse("sip:bob@127.0.0.1:5099"), replaces=replaces)
    assert value == (
        "<sip:bob@127.0.0.1:5099?Replaces="
        "call-9%40127.0.0.1%3Bto-tag%3Dt1%3Bfrom-tag%3Df1%3Bearly-only>"
    )
    assert parse_refer_to(value).replaces == replaces
    named = format_refer_to(SipUri.parse("sip:a@127.0.0.1"), display_name="Desk")
    assert named == '"Desk" <sip:a@127.0.0.1>'
    with pytest.raises(ValueError, match="SIP URI"):
        format_refer_to(TelUri.parse("tel:+15550100"), replaces=replaces)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("<sip:a@127.0.0.1>, <sip:b@127.0.0.1>", "Refer-To must hold exactly one value"),
        ("<sip:bob@>", "Malformed Refer-To header"),
        (
            "sip:bob@127.0.0.1?Replaces=x",
            "URI with headers must be enclosed in <> in Refer-To header",
        ),
        ('"unterminated <sip:a@127.0.0.1>', "Unbalanced quote or angle bracket in header"),
        ("<sip:b@127.0.0.1?Replaces=only-a-call-id>", "Replaces needs a to-tag and a from-tag"),
        (
            "<sip:b@127.0.0.1?Replaces=%3Bto-tag%3Da%3Bfrom-tag%3Db>",
            "Malformed Call-ID in Replaces",
        ),
    ],
)
def test_bad_refer_to_is_400(value: str, reason: str) -> None:
    with pytest.raises(ReferError) as info:
        parse_refer_to(value)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_replaces_grammar() -> None:
    assert parse_replaces("abc@h;from-tag=f;to-tag=t") == Replaces("abc@h", "t", "f")
    assert str(Replaces("abc@h", "t", "f")) == "abc@h;to-tag=t;from-tag=f"
    with pytest.raises(ReferError, match="Malformed Replaces parameters"):
        parse_replaces("abc@h;to-tag=t;;from-tag=f")


# -- a REFER we received -----------------------------------------------------------------------
def test_parse_refer_as_sipp_and_baresip_send_it() -> None:
    request = refer("r: <sip:transfer-target@127.0.0.1:5099>", "b: <sip:sipp@127.0.0.1:5080>")
    parsed = parse_refer(request)
    assert parsed == ReferRequest(
        target=parse_refer_to("<sip:transfer-target@127.0.0.1:5099>"),
        cseq=2,
        referred_by=NameAddr(SipUri("127.0.0.1", "sipp", port=5080)),
        referred_by_value="<sip:sipp@127.0.0.1:5080>",
        subscription=True,
    )


def test_refer_sub_false_and_tel_targets() -> None:
    parsed = parse_refer(refer("Refer-To: <tel:+15550100>", "Refer-Sub: FALSE;x=1"))
    assert not parsed.subscription and parsed.referred_by is None
    assert str(parsed.target.uri) == "tel:+15550100"
    assert parse_refer(refer("Refer-To: <sip:a@127.0.0.1>", "Refer-Sub: true")).subscription


def test_refused_refers_and_their_status() -> None:
    assert (refer_error().status, refer_error().reason) == (
        400,
        "REFER must carry exactly one Refer-To (got 0)",
    )
    twice = refer_error("Refer-To: <sip:a@127.0.0.1>", "r: <sip:b@127.0.0.1>")
    assert (twice.status, twice.reason) == (400, "REFER must carry exactly one Refer-To (got 2)")
    http = refer_error("Refer-To: <http://example.com/transfer>")
    assert (http.status, http.reason) == (603, "Refer-To scheme http is not supported")
    sips = refer_error("Refer-To: <sips:a@127.0.0.1>")
    assert (sips.status, sips.reason) == (603, "Refer-To scheme sips is not supported")
    accepted = parse_refer(refer("Refer-To: <sips:a@127.0.0.1>"), schemes=("sip", "SIPS"))
    assert accepted.target.uri.scheme == "sips"
    bye = refer_error("Refer-To: <sip:a@127.0.0.1;method=BYE>")
    assert (bye.status, bye.reason) == (603, "Refer-To method BYE is not supported")
    sub = refer_error("Refer-To: <sip:a@127.0.0.1>", "Refer-Sub: maybe")
    assert (sub.status, sub.reason) == (400, "Refer-Sub must be true or false")
    sub_params = refer_error("Refer-To: <sip:a@127.0.0.1>", "Refer-Sub: false;;")
    assert (sub_params.status, sub_params.reason) == (400, "Malformed Refer-Sub header")
    by = refer_error("Refer-To: <sip:a@127.0.0.1>", "Referred-By: <sip:bad@>")
    assert (by.status, by.reason) == (400, "Malformed Referred-By header")
    assert isinstance(by, SipParseError)  # one except clause in the UA catches all of them


# -- transferee's NOTIFYs ----------------------------------------------------------------------
def test_notifier_reports_trying_ringing_and_success() -> None:
    notifier = ReferNotifier(
        parse_refer(refer("r: <sip:agent@127.0.0.1:5092>")), first_in_dialog=True, now=0.0
    )
    assert notifier.accept_headers() == ()
    assert notifier.accepted(now=0.0) == ReferNotify(
        100,
        (("Event", "refer"), ("Subscription-State", "active;expires=120")),
        b"SIP/2.0 100 Trying\r\n",
    )
    assert notifier.on_target_response(100, now=0.5) is None  # already said Trying
    ringing = notifier.on_target_response(180, now=10.2)
    assert ringing == ReferNotify(
        180,
        (("Event", "refer"), ("Subscription-State", "active;expires=110")),
        b"SIP/2.0 180 Ringing\r\n",
    )
    assert notifier.on_target_response(180, now=11.0) is None
    done = notifier.on_target_response(200, now=20.0)
    assert done == ReferNotify(
        200,
        (("Event", "refer"), ("Subscription-State", "terminated;reason=noresource")),
        b"SIP/2.0 200 OK\r\n",
        terminated=True,
    )
    assert notifier.terminated and notifier.next_deadline() is None
    assert notifier.on_target_response(486, now=21.0) is None
    assert notifier.on_deadline(500.0) is None


def test_second_refer_in_a_dialog_tags_its_notifies_with_the_cseq() -> None:
    request = parse_refer(refer("r: <sip:agent@127.0.0.1:5092>"))
    notifier = ReferNotifier(request, first_in_dialog=False, now=0.0, expires=60)
    failed = notifier.on_target_response(486, now=3.0)
    assert failed is not None
    assert failed.extra_headers == (
        ("Event", "refer;id=2"),
        ("Subscription-State", "terminated;reason=noresource"),
    )
    assert failed.body == b"SIP/2.0 486 Busy Here\r\n"
    custom = ReferNotifier(request, first_in_dialog=True, now=0.0).on_target_response(
        503, now=1.0, reason="No Route"
    )
    assert custom is not None and custom.body == b"SIP/2.0 503 No Route\r\n"


def test_notifier_times_out_repeating_the_last_status() -> None:
    request = parse_refer(refer("r: <sip:agent@127.0.0.1:5092>"))
    notifier = ReferNotifier(request, first_in_dialog=True, now=100.0, expires=30)
    notifier.accepted(now=100.0)
    notifier.on_target_response(183, now=101.0)
    assert notifier.next_deadline() == 130.0
    assert notifier.on_deadline(129.9) is None
    expired = notifier.on_deadline(130.0)
    assert expired is not None and expired.terminated
    assert expired.extra_headers[1] == ("Subscription-State", "terminated;reason=timeout")
    assert expired.body == b"SIP/2.0 183 Session Progress\r\n"
    assert notifier.on_deadline(131.0) is None
    silent = ReferNotifier(request, first_in_dialog=True, now=0.0, expires=5)
    timed_out = silent.on_deadline(5.0)
    assert timed_out is not None and timed_out.body == b"SIP/2.0 100 Trying\r\n"
    with pytest.raises(ValueError, match="expires must be positive"):
        ReferNotifier(request, first_in_dialog=True, now=0.0, expires=0)


def test_no_notifies_when_the_referrer_asked_for_no_subscription() -> None:
    request = parse_refer(refer("r: <sip:agent@127.0.0.1:5092>", "Refer-Sub: false"))
    notifier = ReferNotifier(request, first_in_dialog=True, now=0.0)
    assert notifier.accept_headers() == (("Refer-Sub", "false"),)
    assert notifier.accepted(now=0.0) is None
    assert notifier.on_target_response(200, now=1.0) is None
    assert notifier.next_deadline() is None and notifier.on_deadline(1000.0) is None


def test_notify_on_the_wire_matches_sipps_uac_refer_accept() -> None:
    request = parse_refer(refer("r: <sip:agent@127.0.0.1:5092>"))
    content = ReferNotifier(request, first_in_dialog=True, now=0.0, expires=60).accepted(0.0)
    assert content is not None
    wire = SipRequest.build(
        "NOTIFY",
        "sip:sipp@127.0.0.1:5080",
        from_="bot <sip:bot@127.0.0.1:5060>;tag=gw-tag",
        to="sipp <sip:sipp@127.0.0.1:5080>;tag=caller-tag",
        call_id="refer-1@127.0.0.1",
        cseq=101,
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n1",
        extra_headers=content.extra_headers,
        body=content.body,
        content_type=content.content_type,
    )
    assert bytes(wire) == (
        b"NOTIFY sip:sipp@127.0.0.1:5080 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n1\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: bot <sip:bot@127.0.0.1:5060>;tag=gw-tag\r\n"
        b"To: sipp <sip:sipp@127.0.0.1:5080>;tag=caller-tag\r\n"
        b"Call-ID: refer-1@127.0.0.1\r\n"
        b"CSeq: 101 NOTIFY\r\n"
        b"Event: refer\r\n"
        b"Subscription-State: active;expires=60\r\n"
        b"Content-Type: message/sipfrag;version=2.0\r\n"
        b"Content-Length: 20\r\n"
        b"\r\n"
        b"SIP/2.0 100 Trying\r\n"
    )


def test_build_sipfrag() -> None:
    assert build_sipfrag(200) == b"SIP/2.0 200 OK\r\n"
    assert build_sipfrag(499) == b"SIP/2.0 499 Bad Request\r\n"
    assert build_sipfrag(603) == b"SIP/2.0 603 Decline\r\n"
    with pytest.raises(ValueError, match="status out of range"):
        build_sipfrag(99)
    with pytest.raises(ValueError, match="invalid reason phrase"):
        build_sipfrag(200, "OK\r\nX: injected")


# -- reading NOTIFYs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"SIP/2.0 200 OK", Sipfrag(200, "OK")),
        (b"SIP/2.0 180 Ringing\r\nContact: <sip:a@127.0.0.1>\r\n\r\n", Sipfrag(180, "Ringing")),
        (b"SIP/2.0 503 Service Unavailable\n", Sipfrag(503, "Service Unavailable")),
        (b"\r\nSIP/2.0 100 Trying\r\n", Sipfrag(100, "Trying")),
        (b"sip/2.0  486  Busy Here \r\n", Sipfrag(486, "Busy Here")),
        (b"SIP/2.0 200", Sipfrag(200, "")),
    ],
)
def test_sipfrag_status_lines(body: bytes, expected: Sipfrag) -> None:
    assert parse_sipfrag(body) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "sipfrag body does not start with a SIP status line"),
        (
            b"INVITE sip:a@127.0.0.1 SIP/2.0\r\n",
            "sipfrag body does not start with a SIP status line",
        ),
        (b"SIP/2.0 999 Nine\r\n", "sipfrag body does not start with a SIP status line"),
        (b"SIP/2.0 20 OK\r\n", "sipfrag body does not start with a SIP status line"),
        (b"SIP/3.0 200 OK\r\n", "sipfrag body does not start with a SIP status line"),
        (b"SIP/2.0 200 \xff\r\n", "sipfrag body is not UTF-8"),
        (b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * 1000, "sipfrag body too large"),
    ],
)
def test_bad_sipfrag_is_400(body: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_sipfrag(body)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_subscription_state_and_event_values() -> None:
    assert parse_subscription_state("active;expires=60") == SubscriptionState("active", 60)
    ended = parse_subscription_state("Terminated ; reason=NoResource")
    assert ended == SubscriptionState("terminated", None, "noresource") and ended.terminated
    assert not parse_subscription_state("pending").terminated
    assert parse_subscription_state("active;expires=soon").expires is None
    with pytest.raises(SipParseError, match="400 Malformed Subscription-State header"):
        parse_subscription_state(";expires=1")
    assert parse_event("refer") == EventHeader("refer")
    assert parse_event("Refer;id=93809824") == EventHeader("refer", "93809824")
    with pytest.raises(SipParseError, match="400 Malformed parameters in Event header"):
        parse_event("refer;;")
    compact = notify(event=None)
    compact = compact.with_headers(compact.headers.with_added("o", "refer;id=7"))
    assert event_of(compact) == EventHeader("refer", "7")


# -- transferor: a REFER we sent ---------------------------------------------------------------
def test_refer_headers_for_blind_and_attended_transfer() -> None:
    target = SipUri.parse("sip:agent@127.0.0.1:5092")
    assert refer_headers(target) == [("Refer-To", "<sip:agent@127.0.0.1:5092>")]
    assert refer_headers(
        target,
        referred_by=SipUri.parse("sip:bot@127.0.0.1"),
        replaces=Replaces("c@h", "t", "f"),
        subscription=False,
    ) == [
        ("Refer-To", "<sip:agent@127.0.0.1:5092?Replaces=c%40h%3Bto-tag%3Dt%3Bfrom-tag%3Df>"),
        ("Referred-By", "<sip:bot@127.0.0.1>"),
        ("Refer-Sub", "false"),
        ("Require", "norefersub"),
    ]
    named = NameAddr(SipUri.parse("sip:bot@127.0.0.1"), "Bot")
    assert refer_headers(target, referred_by=named)[1] == (
        "Referred-By",
        '"Bot" <sip:bot@127.0.0.1>',
    )


def test_blind_transfer_success_means_bye() -> None:
    transfer = OutgoingRefer(7, now=0.0)
    assert transfer.state is TransferState.PENDING and transfer.next_deadline() == 60.0
    assert transfer.on_response(refer_response(100)) is TransferState.PENDING
    assert transfer.on_response(refer_response(202)) is TransferState.ACCEPTED
    answer = transfer.on_notify(notify(), now=1.0)
    assert answer == NotifyAnswer(200, None, TransferState.ACCEPTED)
    assert (transfer.status, transfer.reason) == (100, "Trying")
    final = notify(state="terminated;reason=noresource", body=b"SIP/2.0 200 OK\r\n", cseq=4)
    assert transfer.on_notify(final, now=5.0).state is TransferState.SUCCEEDED
    assert (
        transfer.succeeded and transfer.done and (transfer.status, transfer.reason) == (200, "OK")
    )
    assert transfer.next_deadline() is None
    late = transfer.on_notify(notify(cseq=5), now=6.0)
    assert (late.status, late.reason) == (481, "Subscription Does Not Exist")


def test_notify_before_the_202_is_accepted() -> None:
    transfer = OutgoingRefer(7, now=0.0)
    assert transfer.on_notify(notify(event="refer;id=7"), now=0.1).state is TransferState.ACCEPTED
    assert transfer.on_response(refer_response(202)) is TransferState.ACCEPTED
    assert transfer.status == 100


def test_refer_rejected_or_lost() -> None:
    rejected = OutgoingRefer(7, now=0.0)
    assert rejected.on_response(refer_response(403)) is TransferState.REJECTED
    assert (rejected.status, rejected.reason, rejected.succeeded) == (403, "Forbidden", False)
    lost = OutgoingRefer(7, now=0.0)
    assert lost.on_refer_timeout() is TransferState.REJECTED and lost.status == 408
    quiet = OutgoingRefer(7, now=0.0)
    assert quiet.on_response(refer_response(202, ("Refer-Sub", "false"))) is (
        TransferState.UNREPORTED
    )
    assert quiet.done and quiet.next_deadline() is None


def test_failed_or_abandoned_transfers_keep_the_call() -> None:
    busy = OutgoingRefer(7, now=0.0)
    busy.on_response(refer_response(202))
    answer = busy.on_notify(
        notify(state="terminated;reason=noresource", body=b"SIP/2.0 486 Busy Here"), 2.0
    )
    assert answer.state is TransferState.FAILED and (busy.status, busy.reason) == (486, "Busy Here")
    gave_up = OutgoingRefer(7, now=0.0)
    gave_up.on_notify(notify(), now=1.0)
    gave_up.on_notify(notify(state="terminated;reason=timeout", cseq=4), now=70.0)
    assert (gave_up.state, gave_up.status, gave_up.reason) == (TransferState.FAILED, 100, "timeout")
    empty = OutgoingRefer(7, now=0.0)
    assert empty.on_notify(notify(state="terminated;reason=noresource", body=b""), 1.0).state is (
        TransferState.FAILED
    )
    assert (empty.status, empty.reason) == (None, "noresource")


def test_bad_notifies_get_precise_answers_and_change_nothing() -> None:
    transfer = OutgoingRefer(7, now=0.0)
    transfer.on_response(refer_response(202))
    assert transfer.on_notify(notify(event="presence"), 1.0) == NotifyAnswer(
        489, "Bad Event", TransferState.ACCEPTED, (("Allow-Events", "refer"),)
    )
    assert transfer.on_notify(notify(event=None), 1.0).status == 489
    assert transfer.on_notify(notify(event="refer;id=99"), 1.0) == NotifyAnswer(
        481, "Subscription Does Not Exist", TransferState.ACCEPTED
    )
    assert transfer.on_notify(notify(content_type="text/plain"), 1.0) == NotifyAnswer(
        415, "Unsupported Media Type", TransferState.ACCEPTED, (("Accept", "message/sipfrag"),)
    )
    assert transfer.on_notify(notify(body=b"hello"), 1.0) == NotifyAnswer(
        400, "sipfrag body does not start with a SIP status line", TransferState.ACCEPTED
    )
    assert transfer.on_notify(notify(state="active;;"), 1.0) == NotifyAnswer(
        400, "Malformed parameters in Subscription-State header", TransferState.ACCEPTED
    )
    assert transfer.status == 202  # none of them counted as a report
    # No Subscription-State at all is read as active.
    assert transfer.on_notify(notify(state=None, body=b"SIP/2.0 180 Ringing"), 1.0).status == 200
    assert transfer.status == 180 and transfer.state is TransferState.ACCEPTED


def test_transfer_deadline_follows_the_subscription_within_limits() -> None:
    transfer = OutgoingRefer(7, now=0.0, timeout=30.0)
    transfer.on_response(refer_response(202))
    transfer.on_notify(notify(state="active;expires=120"), now=5.0)
    assert transfer.next_deadline() == 125.0
    assert not transfer.on_deadline(124.0)
    assert transfer.on_deadline(125.0)
    assert transfer.state is TransferState.TIMED_OUT and transfer.reason == "no final NOTIFY"
    assert not transfer.on_deadline(126.0) and transfer.next_deadline() is None
    # A late success after our timeout is answered but does not revive the transfer.
    late = notify(state="terminated;reason=noresource", body=b"SIP/2.0 200 OK")
    assert transfer.on_notify(late, 130.0) == NotifyAnswer(200, None, TransferState.TIMED_OUT)
    capped = OutgoingRefer(7, now=0.0)
    capped.on_notify(notify(state="active;expires=100000"), now=10.0)
    assert capped.next_deadline() == 610.0


def test_notifier_and_transferor_agree_end_to_end() -> None:
    """Our transferee's NOTIFYs, carried on the wire, drive our transferor to SUCCEEDED."""
    received = parse_refer(refer("r: <sip:agent@127.0.0.1:5092>"))
    notifier = ReferNotifier(received, first_in_dialog=False, now=0.0)
    transfer = OutgoingRefer(received.cseq, now=0.0)
    transfer.on_response(refer_response(202, *notifier.accept_headers()))
    steps = [
        notifier.accepted(0.0),
        notifier.on_target_response(180, 1.0),
        notifier.on_target_response(200, 2.0),
    ]
    states = []
    for number, content in enumerate(steps, start=10):
        assert content is not None
        wire = notify(
            event=content.extra_headers[0][1],
            state=content.extra_headers[1][1],
            body=content.body,
            content_type=content.content_type,
            cseq=number,
        )
        answer = transfer.on_notify(wire, now=float(number))
        assert answer.status == 200
        states.append((answer.state, transfer.status))
    assert states == [
        (TransferState.ACCEPTED, 100),
        (TransferState.ACCEPTED, 180),
        (TransferState.SUCCEEDED, 200),
    ]
