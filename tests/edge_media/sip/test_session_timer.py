"""RFC 4028 session timers: header grammar, UAS and UAC negotiation, deadlines on a fake clock."""

from __future__ import annotations

import pytest

from edge_media.sip.errors import SipParseError
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_parse import parse_message
from edge_media.sip.session_timer import (
    MAX_DELTA_SECONDS,
    SessionExpires,
    SessionIntervalTooSmall,
    SessionTimer,
    SessionTimerAnswer,
    SessionTimerOffer,
    SessionTimerPolicy,
    min_se_of,
    negotiate_as_uas,
    parse_min_se,
    parse_session_expires,
    requires_timer,
    session_expires_of,
    supports_timer,
    uac_offer,
)

INVITE_HEAD = (
    b"INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-st1\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Carrier" <sip:+15005550006@127.0.0.1>;tag=caller-tag\r\n'
    b"To: <sip:bot@127.0.0.1>\r\n"
    b"Call-ID: st-1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:carrier@127.0.0.1:5080>\r\n"
)


def invite(*lines: str) -> SipRequest:
    extra = "".join(f"{line}\r\n" for line in lines).encode()
    message = parse_message(INVITE_HEAD + extra + b"Content-Length: 0\r\n\r\n")
    assert isinstance(message, SipRequest)
    return message


def ok_with(*lines: tuple[str, str]) -> SipResponse:
    return make_response(invite(), 200, to_tag="callee", extra_headers=lines)


def answer(request: SipRequest, policy: SessionTimerPolicy, now: float) -> SessionTimerAnswer:
    result = negotiate_as_uas(request, policy, now)
    assert isinstance(result, SessionTimerAnswer)
    return result


# -- header grammar ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("1800;refresher=uac", SessionExpires(1800, "uac")),
        ("90 ; refresher = UAS", SessionExpires(90, "uas")),
        ("4000;x=1;refresher=uas", SessionExpires(4000, "uas")),
        ("1800;refresher=proxy", SessionExpires(1800)),
        ("1800;refresher", SessionExpires(1800)),
        ("0090", SessionExpires(90)),
        ("99999999999999999999", SessionExpires(MAX_DELTA_SECONDS)),
        ("4294967296", SessionExpires(MAX_DELTA_SECONDS)),
    ],
)
def test_session_expires_values(value: str, expected: SessionExpires) -> None:
    assert parse_session_expires(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-5", "1800;", "1800 refresher=uac", "18OO"])
def test_malformed_session_expires_is_400(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_session_expires(value)
    assert info.value.status == 400
    assert "Session-Expires" in info.value.reason


def test_session_expires_and_min_se_render() -> None:
    assert str(SessionExpires(1800)) == "1800"
    assert str(SessionExpires(1800, "uas")) == "1800;refresher=uas"
    assert parse_min_se("120") == 120
    assert parse_min_se("120;lr;foo=bar") == 120
    with pytest.raises(SipParseError, match="400 Malformed Min-SE header"):
        parse_min_se("two minutes")


def test_compact_form_and_option_tags_are_read_from_messages() -> None:
    request = invite("x: 1200;refresher=uac", "Min-SE: 120", "k: 100rel, Timer")
    assert session_expires_of(request) == SessionExpires(1200, "uac")
    assert min_se_of(request) == 120
    assert supports_timer(request) and not requires_timer(request)
    required = invite("Require: timer")
    assert supports_timer(required) and requires_timer(required)
    plain = invite("Supported: 100rel, replaces")
    assert not supports_timer(plain)
    assert session_expires_of(plain) is None and min_se_of(plain) is None


def test_two_session_expires_lines_are_400() -> None:
    request = invite("Session-Expires: 1800", "x: 90")
    with pytest.raises(SipParseError) as info:
        session_expires_of(request)
    assert info.value.status == 400


def test_policy_refuses_intervals_below_the_rfc_floor() -> None:
    with pytest.raises(ValueError, match="min_se must be at least 90"):
        SessionTimerPolicy(min_se=89)
    with pytest.raises(ValueError, match="interval must be between"):
        SessionTimerPolicy(interval=100, min_se=120)
    with pytest.raises(ValueError, match="positive"):
        SessionTimer(0, we_refresh=True, now=0.0)


# -- UAS ---------------------------------------------------------------------------------------
def test_uas_answers_a_timer_request_and_refreshes_itself_by_default() -> None:
    request = invite("Supported: timer", "Session-Expires: 1800")
    result = answer(request, SessionTimerPolicy(), now=100.0)
    assert result.headers == (("Session-Expires", "1800;refresher=uas"), ("Require", "timer"))
    timer = result.timer
    assert timer is not None and timer.we_refresh
    assert (timer.interval, timer.refresh_at, timer.expire_at) == (1800, 1000.0, 1900.0)
    ok = make_response(request, 200, to_tag="gw", extra_headers=result.headers)
    assert bytes(ok) == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-st1\r\n"
        b'From: "Carrier" <sip:+15005550006@127.0.0.1>;tag=caller-tag\r\n'
        b"To: <sip:bot@127.0.0.1>;tag=gw\r\n"
        b"Call-ID: st-1@127.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Session-Expires: 1800;refresher=uas\r\n"
        b"Require: timer\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_uas_leaves_refreshing_to_the_peer_when_policy_says_remote() -> None:
    request = invite("Supported: timer", "Session-Expires: 1800")
    result = answer(request, SessionTimerPolicy(refresher="remote"), now=0.0)
    assert result.headers[0] == ("Session-Expires", "1800;refresher=uac")
    assert result.timer is not None and not result.timer.we_refresh


def test_uas_honours_the_uac_choice_of_refresher() -> None:
    for choice, we_refresh in (("uac", False), ("uas", True)):
        request = invite("Supported: timer", f"Session-Expires: 1800;refresher={choice}")
        result = answer(request, SessionTimerPolicy(refresher="remote"), now=0.0)
        assert result.headers == (
            ("Session-Expires", f"1800;refresher={choice}"),
            ("Require", "timer"),
        )
        assert result.timer is not None and result.timer.we_refresh is we_refresh


def test_peer_refresher_gets_min_32s_or_a_third_before_we_hang_up() -> None:
    request = invite("Supported: timer", "Session-Expires: 1800;refresher=uac")
    timer = answer(request, SessionTimerPolicy(), now=10.0).timer
    assert timer is not None
    assert timer.refresh_at is None
    assert timer.session_expires_at == 1810.0
    assert timer.expire_at == 1810.0 - 32
    short = invite("Supported: timer", "Session-Expires: 90;refresher=uac")
    timer = answer(short, SessionTimerPolicy(), now=0.0).timer
    assert timer is not None and timer.expire_at == 60.0  # 90 - min(32, 30)


def test_too_small_interval_from_a_timer_capable_peer_gets_422_with_our_min_se() -> None:
    request = invite("Supported: timer", "Session-Expires: 100", "Min-SE: 90")
    result = negotiate_as_uas(request, SessionTimerPolicy(min_se=120), now=0.0)
    assert result == SessionIntervalTooSmall(120)
    assert isinstance(result, SessionIntervalTooSmall)
    response = make_response(request, result.status, to_tag="gw", extra_headers=result.headers)
    assert bytes(response).startswith(b"SIP/2.0 422 Session Interval Too Small\r\n")
    assert b"\r\nMin-SE: 120\r\n" in bytes(response)


def test_too_small_interval_without_timer_support_is_raised_not_refused() -> None:
    # A proxy inserted Session-Expires for a UAC that cannot read a 422.
    request = invite("Session-Expires: 60", "Min-SE: 60")
    result = answer(request, SessionTimerPolicy(min_se=120), now=0.0)
    assert result.headers == (("Session-Expires", "120;refresher=uas"),)
    assert result.timer is not None and result.timer.we_refresh


def test_uas_reduces_a_long_interval_but_never_below_the_request_min_se() -> None:
    long_request = invite("Supported: timer", "Session-Expires: 7200")
    assert answer(long_request, SessionTimerPolicy(), 0.0).headers[0] == (
        "Session-Expires",
        "1800;refresher=uas",
    )
    floor_request = invite("Supported: timer", "Session-Expires: 7200", "Min-SE: 2400")
    result = answer(floor_request, SessionTimerPolicy(), 0.0)
    assert result.headers[0] == ("Session-Expires", "2400;refresher=uas")
    assert result.timer is not None and result.timer.min_se == 2400
    # A shorter request within our limits is kept as asked.
    assert answer(invite("k: timer", "x: 600"), SessionTimerPolicy(), 0.0).headers[0] == (
        "Session-Expires",
        "600;refresher=uas",
    )


def test_unasked_timer_depends_on_support_and_policy() -> None:
    supported = invite("Supported: timer", "Min-SE: 2000")
    result = answer(supported, SessionTimerPolicy(), 0.0)
    assert result.headers == (("Session-Expires", "2000;refresher=uas"), ("Require", "timer"))
    assert answer(supported, SessionTimerPolicy(unasked="never"), 0.0) == SessionTimerAnswer()
    plain = invite()
    assert answer(plain, SessionTimerPolicy(), 0.0) == SessionTimerAnswer()
    always = answer(plain, SessionTimerPolicy(unasked="always"), 5.0)
    assert always.headers == (("Session-Expires", "1800;refresher=uas"),)
    assert always.timer is not None and always.timer.refresh_at == 905.0


def test_disabled_policy_ignores_everything() -> None:
    request = invite("Supported: timer", "Session-Expires: 10")
    assert negotiate_as_uas(request, SessionTimerPolicy(enabled=False), 0.0) == (
        SessionTimerAnswer()
    )
    assert uac_offer(SessionTimerPolicy(enabled=False)) is None


def test_uas_malformed_session_expires_is_a_400() -> None:
    with pytest.raises(SipParseError) as info:
        negotiate_as_uas(invite("Session-Expires: soon"), SessionTimerPolicy(), 0.0)
    assert info.value.status == 400


# -- the timer ---------------------------------------------------------------------------------
def test_refresher_deadlines_fire_once_each() -> None:
    timer = SessionTimer(1800, we_refresh=True, now=0.0)
    assert timer.next_deadline() == 900.0
    assert timer.on_deadline(899.99) is None
    assert timer.on_deadline(900.0) == "refresh"
    assert timer.on_deadline(901.0) is None
    assert timer.next_deadline() == 1800.0
    assert timer.on_deadline(1799.0) is None
    assert timer.on_deadline(1800.0) == "expire"
    assert timer.expired and timer.next_deadline() is None
    assert timer.on_deadline(5000.0) is None


def test_non_refresher_only_expires() -> None:
    timer = SessionTimer(300, we_refresh=False, now=50.0)
    assert timer.next_deadline() == 50.0 + 300 - 32
    assert timer.on_deadline(200.0) is None
    assert timer.on_deadline(318.0) == "expire"
    assert timer.on_deadline(400.0) is None


def test_expiry_wins_over_a_late_refresh() -> None:
    timer = SessionTimer(90, we_refresh=True, now=0.0)
    assert timer.on_deadline(95.0) == "expire"
    assert timer.on_deadline(96.0) is None


# -- UAC ---------------------------------------------------------------------------------------
def test_uac_offer_headers() -> None:
    offer = uac_offer(SessionTimerPolicy(interval=1200, min_se=120))
    assert offer == SessionTimerOffer(session_expires=1200, min_se=120)
    assert offer.headers() == [
        ("Supported", "timer"),
        ("Session-Expires", "1200"),
        ("Min-SE", "120"),
    ]
    assert offer.headers(supported=False) == [("Session-Expires", "1200"), ("Min-SE", "120")]


def test_uac_reads_the_refresher_from_the_2xx() -> None:
    offer = SessionTimerOffer(session_expires=1800)
    ours = offer.on_2xx(ok_with(("Require", "timer"), ("x", "1800;refresher=uac")), now=3.0)
    assert ours is not None and ours.we_refresh and ours.refresh_at == 903.0
    theirs = offer.on_2xx(ok_with(("Session-Expires", "600;refresher=uas")), now=0.0)
    assert theirs is not None and not theirs.we_refresh and theirs.expire_at == 600 - 32
    unsaid = offer.on_2xx(ok_with(("Session-Expires", "900")), now=0.0)
    assert unsaid is not None and unsaid.we_refresh  # the UAS MUST say; we take the work
    tiny = offer.on_2xx(ok_with(("Session-Expires", "30;refresher=uac")), now=0.0)
    assert tiny is not None and tiny.interval == 90
    assert offer.on_2xx(ok_with(), now=0.0) is None  # §7.2: no Session-Expires, no timer


def test_uac_follows_422_with_the_larger_min_se_a_bounded_number_of_times() -> None:
    offer = SessionTimerOffer(session_expires=1800, min_se=90)

    def too_small(min_se: str | None) -> SipResponse:
        lines = () if min_se is None else (("Min-SE", min_se),)
        return make_response(invite(), 422, to_tag="p", extra_headers=lines)

    second = offer.after_422(too_small("3600"))
    assert second == SessionTimerOffer(session_expires=3600, min_se=3600, retries=1)
    assert second.headers() == [
        ("Supported", "timer"),
        ("Session-Expires", "3600"),
        ("Min-SE", "3600"),
    ]
    third = second.after_422(too_small("7200"))
    assert third == SessionTimerOffer(session_expires=7200, min_se=7200, retries=2)
    assert third.after_422(too_small("9000")) is None  # MAX_422_RETRIES reached
    assert offer.after_422(too_small(None)) is None
    assert offer.after_422(too_small("1800")) is None  # asks for nothing more
    assert offer.after_422(too_small("a while")) is None


# -- refreshes ---------------------------------------------------------------------------------
def test_our_refresh_keeps_the_refresher_and_resets_the_deadlines() -> None:
    request = invite("Supported: timer", "Session-Expires: 1800")
    timer = answer(request, SessionTimerPolicy(), now=0.0).timer
    assert timer is not None
    assert timer.on_deadline(900.0) == "refresh"
    offer = timer.offer()
    assert offer.headers() == [
        ("Supported", "timer"),
        ("Session-Expires", "1800;refresher=uac"),
        ("Min-SE", "90"),
    ]
    # The peer answers our re-INVITE/UPDATE; we are the UAC of that transaction now.
    refreshed = offer.on_2xx(ok_with(("Require", "timer"), ("x", "1800;refresher=uac")), 901.0)
    assert refreshed is not None and refreshed.we_refresh
    assert refreshed.next_deadline() == 1801.0
    assert refreshed.on_deadline(1800.0) is None  # the old expiry no longer applies


def test_peer_refresh_received_restarts_the_expiry() -> None:
    first = invite("Supported: timer", "Session-Expires: 600;refresher=uac")
    timer = answer(first, SessionTimerPolicy(), now=0.0).timer
    assert timer is not None and timer.expire_at == 568.0
    assert timer.offer().headers(supported=False)[0] == ("Session-Expires", "600;refresher=uas")
    again = answer(first, SessionTimerPolicy(), now=300.0).timer
    assert again is not None and again.expire_at == 868.0
    turned_off = answer(invite(), SessionTimerPolicy(), now=300.0)
    assert turned_off.timer is None  # a refresh without Session-Expires ends the timer


def test_refresh_toward_a_peer_without_timer_support_keeps_refreshing() -> None:
    # We started the timer ourselves (unasked="always") for a peer that knows nothing of it.
    timer = answer(invite(), SessionTimerPolicy(unasked="always"), now=0.0).timer
    assert timer is not None and timer.on_deadline(900.0) == "refresh"
    again = timer.offer().on_2xx(ok_with(), now=910.0)
    assert again is not None and again.we_refresh and again.refresh_at == 1810.0
    # A peer that does support timers and drops Session-Expires turns the timer off.
    assert timer.offer().on_2xx(ok_with(("Supported", "timer")), now=910.0) is None


@pytest.mark.parametrize(
    ("uac_policy", "uas_policy"),
    [
        (SessionTimerPolicy(), SessionTimerPolicy()),
        (SessionTimerPolicy(), SessionTimerPolicy(refresher="remote")),
        (SessionTimerPolicy(interval=600), SessionTimerPolicy(interval=3600, min_se=300)),
    ],
)
def test_both_sides_agree_on_interval_and_exactly_one_refresher(
    uac_policy: SessionTimerPolicy, uas_policy: SessionTimerPolicy
) -> None:
    offer = uac_offer(uac_policy)
    assert offer is not None
    request = SipRequest.build(
        "INVITE",
        "sip:bot@127.0.0.1",
        from_="<sip:gw@127.0.0.1>;tag=a",
        to="<sip:bot@127.0.0.1>",
        call_id="agree@127.0.0.1",
        cseq=1,
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-agree",
        extra_headers=offer.headers(),
    )
    wire = parse_message(bytes(request))
    assert isinstance(wire, SipRequest)
    result = answer(wire, uas_policy, now=0.0)
    ok = parse_message(bytes(make_response(wire, 200, to_tag="b", extra_headers=result.headers)))
    assert isinstance(ok, SipResponse)
    uac_timer = offer.on_2xx(ok, now=0.0)
    assert uac_timer is not None and result.timer is not None
    assert uac_timer.interval == result.timer.interval
    assert uac_timer.we_refresh is not result.timer.we_refresh
