"""Server-side matching keys (§17.2.3), response addresses (§18.2.2) and 2xx resends (§13.3.1.4)."""

from __future__ import annotations

import pytest

from edge_media.sip.header_values import Via, parse_via
from edge_media.sip.message import SipRequest, make_response
from edge_media.sip.transaction_server import (
    AckNotReceived,
    Resend2xx,
    TwoXxRetransmitter,
    branch_key,
    legacy_key,
    response_address,
)
from edge_media.sip.transaction_timers import TimerConfig


def request(method: str = "INVITE", via: str = "SIP/2.0/UDP Pc.Example:5062;branch=z9hG4bKa1",
            to: str = "<sip:bot@127.0.0.1>", cseq: int = 3) -> SipRequest:  # fmt: skip
    return SipRequest.build(
        method,
        "sip:bot@127.0.0.1",
        from_="<sip:alice@127.0.0.1>;tag=a1",
        to=to,
        call_id="call-9",
        cseq=cseq,
        via=via,
    )


def via(text: str) -> Via:
    return parse_via(text)[0]


def test_branch_key_uses_branch_sent_by_and_method() -> None:
    assert branch_key(request()) == ("z9hG4bKa1", "pc.example", 5062, "INVITE")
    assert branch_key(request("BYE")) == ("z9hG4bKa1", "pc.example", 5062, "BYE")


def test_ack_and_cancel_keys() -> None:
    # §17.2.3: an ACK matches the INVITE; a CANCEL is its own transaction unless asked.
    assert branch_key(request("ACK")) == ("z9hG4bKa1", "pc.example", 5062, "INVITE")
    assert branch_key(request("CANCEL")) == ("z9hG4bKa1", "pc.example", 5062, "CANCEL")
    assert branch_key(request("CANCEL"), "INVITE") == branch_key(request())


def test_branch_key_without_port() -> None:
    key = branch_key(request(via="SIP/2.0/UDP pc.example;branch=z9hG4bKa1"))
    assert key == ("z9hG4bKa1", "pc.example", None, "INVITE")


@pytest.mark.parametrize(
    "text", ["SIP/2.0/UDP pc.example:5062;branch=1234", "SIP/2.0/UDP pc.example:5062"]
)
def test_no_branch_key_without_the_cookie(text: str) -> None:
    assert branch_key(request(via=text)) is None


def test_legacy_key() -> None:
    plain = request(via="SIP/2.0/UDP pc.example:5062;branch=1234")
    assert legacy_key(plain) == (
        "sip:bot@127.0.0.1",
        "a1",
        "call-9",
        3,
        via("SIP/2.0/UDP pc.example:5062;branch=1234"),
    )
    # The ACK and CANCEL of that INVITE share it; the To tag and method are checked after.
    ack = request("ACK", via="SIP/2.0/UDP pc.example:5062;branch=1234", to="<sip:bot@x>;tag=b")
    assert legacy_key(ack)[1:] == legacy_key(plain)[1:]
    assert legacy_key(request("INVITE", via="SIP/2.0/UDP pc.example:5062;branch=999")) != (
        legacy_key(plain)
    )


SOURCE = ("127.0.0.1", 40000)


@pytest.mark.parametrize(
    ("text", "transport", "expected"),
    [
        # reliable: back on the connection the request came in on
        ("SIP/2.0/TCP pc.example:5062;branch=z9hG4bKx", "TCP", SOURCE),
        ("SIP/2.0/TLS pc.example;branch=z9hG4bKx;maddr=10.0.0.7", "TLS", SOURCE),
        # UDP: the source address, at the sent-by port or 5060; a maddr or received the peer
        # wrote itself is never followed (it would aim our responses at a third party)
        ("SIP/2.0/UDP pc.example:5062;branch=z9hG4bKx;maddr=10.0.0.7", "UDP", ("127.0.0.1", 5062)),
        ("SIP/2.0/UDP pc.example;branch=z9hG4bKx;maddr=10.0.0.7", "UDP", ("127.0.0.1", 5060)),
        ("SIP/2.0/UDP pc.example:5062;branch=z9hG4bKx", "UDP", ("127.0.0.1", 5062)),
        ("SIP/2.0/UDP pc.example;branch=z9hG4bKx", "UDP", ("127.0.0.1", 5060)),
        ("SIP/2.0/UDP pc.example:5062;branch=z9hG4bKx;received=10.0.0.8", "UDP",
         ("127.0.0.1", 5062)),
        # RFC 3581 rport: the source port
        ("SIP/2.0/UDP pc.example:5062;branch=z9hG4bKx;rport", "UDP", SOURCE),
        ("SIP/2.0/UDP pc.example:5062;branch=z9hG4bKx;received=10.0.0.8;rport=41000", "UDP",
         SOURCE),
    ],
)  # fmt: skip
def test_response_address(text: str, transport: str, expected: tuple[str, int]) -> None:
    assert response_address(via(text), SOURCE, transport) == expected


def run(retransmitter: TwoXxRetransmitter, until: float) -> list[tuple[float, object]]:
    """Drive the retransmitter at each of its deadlines; (time, output) pairs."""
    outputs: list[tuple[float, object]] = []
    for _ in range(100):
        deadline = retransmitter.next_deadline()
        if deadline is None or deadline > until:
            break
        outputs += [(deadline, output) for output in retransmitter.on_timer(deadline)]
    return outputs


def test_2xx_resent_until_64_t1_then_ack_not_received() -> None:
    response = make_response(request(), 200, to_tag="b1")
    retransmitter = TwoXxRetransmitter(response, now=0.0)
    outputs = run(retransmitter, until=100.0)
    resend = Resend2xx(response)
    times = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # T1 doubling, capped at T2
    assert outputs == [(t, resend) for t in times] + [(32.0, AckNotReceived(response))]
    assert retransmitter.timed_out and retransmitter.finished and not retransmitter.acked
    assert retransmitter.next_deadline() is None
    assert retransmitter.on_timer(50.0) == []


def test_2xx_resends_stop_at_the_ack() -> None:
    response = make_response(request(), 200, to_tag="b1")
    retransmitter = TwoXxRetransmitter(response, now=10.0)
    assert run(retransmitter, until=11.5) == [
        (10.5, Resend2xx(response)),
        (11.5, Resend2xx(response)),
    ]
    retransmitter.ack_received()
    assert retransmitter.acked and retransmitter.finished and not retransmitter.timed_out
    assert retransmitter.next_deadline() is None
    assert retransmitter.on_timer(100.0) == []
    retransmitter.ack_received()  # a retransmitted ACK changes nothing
    assert retransmitter.acked


def test_2xx_resend_timer_not_due_yet() -> None:
    response = make_response(request(), 200, to_tag="b1")
    retransmitter = TwoXxRetransmitter(response, now=0.0)
    assert retransmitter.on_timer(0.4) == []
    assert retransmitter.next_deadline() == 0.5


def test_2xx_resend_late_timer_restarts_from_now() -> None:
    response = make_response(request(), 200, to_tag="b1")
    retransmitter = TwoXxRetransmitter(response, now=0.0)
    assert retransmitter.on_timer(0.9) == [Resend2xx(response)]
    assert retransmitter.next_deadline() == 1.9
    # a timer so late that 64*T1 has passed gives up without a last resend
    assert retransmitter.on_timer(40.0) == [AckNotReceived(response)]


def test_2xx_resends_follow_the_timer_config() -> None:
    response = make_response(request(), 200, to_tag="b1")
    retransmitter = TwoXxRetransmitter(response, 0.0, TimerConfig(t1=0.25, t2=1.0))
    outputs = run(retransmitter, until=100.0)
    assert [t for t, _ in outputs] == [0.25, 0.75, 1.75] + [2.75 + n for n in range(14)] + [16.0]


@pytest.mark.parametrize("status", [180, 300, 486])
def test_only_2xx_are_retransmitted_by_the_tu(status: int) -> None:
    with pytest.raises(ValueError):
        TwoXxRetransmitter(make_response(request(), status, to_tag="b1"), now=0.0)
