"""The transaction layer driven with real messages and a fake clock.

Every test feeds parsed wire messages and asserts the exact datagrams and events that come out,
at the exact times. Organised by machine (RFC 3261 Figures 5-8 with RFC 6026), then CANCEL,
stray messages, RFC 2543 matching, misuse and an end-to-end pair of layers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from edge_media.sip.headers import Headers
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_parse import parse_message
from edge_media.sip.transaction import (
    AckNotReceived,
    AckReceived,
    CancelReceived,
    Event,
    InvalidTransition,
    Machine,
    Outgoing,
    RequestReceived,
    Resend2xx,
    ResponseReceived,
    State,
    StrayAck,
    StrayResponse,
    TimerConfig,
    TransactionError,
    TransactionId,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
    TwoXxRetransmitter,
    UnknownTransaction,
    build_ack_for_2xx,
    build_cancel,
    build_non_2xx_ack,
)

CALLER = ("127.0.0.1", 5062)  # the UAC: sent-by of every request below
CALLEE = ("127.0.0.1", 5060)
ID1, ID2, ID3 = TransactionId(1), TransactionId(2), TransactionId(3)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKinv1",
    transport: str = "UDP",
    cseq: int = 1,
    to: str = "<sip:bot@127.0.0.1>",
) -> SipRequest:
    """A request as the peer sends it, parsed back from its bytes."""
    params = "" if branch is None else f";branch={branch}"
    built = SipRequest.build(
        method,
        "sip:bot@127.0.0.1:5060",
        from_="<sip:alice@127.0.0.1>;tag=a1",
        to=to,
        call_id="call-1",
        cseq=cseq,
        via=f"SIP/2.0/{transport} 127.0.0.1:5062{params}",
        contact="<sip:alice@127.0.0.1:5062>" if method == "INVITE" else None,
    )
    return wire(built)


def wire(message: SipRequest) -> SipRequest:
    parsed = parse_message(message.serialize())
    assert isinstance(parsed, SipRequest)
    return parsed


def answer(
    to: SipRequest,
    status: int,
    tag: str | None = "b1",
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> SipResponse:
    built = make_response(to, status, to_tag=tag, extra_headers=extra_headers)
    parsed = parse_message(built.serialize())
    assert isinstance(parsed, SipResponse)
    return parsed


def new_layer(
    timers: TimerConfig | None = None,
    *,
    trying_delay: float | None = 0.2,
    symmetric_responses: bool = False,
) -> TransactionLayer:
    tags = itertools.count(1)
    return TransactionLayer(
        timers,
        new_tag=lambda: f"tag{next(tags)}",
        trying_delay=trying_delay,
        symmetric_responses=symmetric_responses,
    )


def sent(layer: TransactionLayer) -> list[bytes]:
    return [out.data for out in layer.datagrams_to_send()]


def drive(
    layer: TransactionLayer, until: float
) -> tuple[list[tuple[float, bytes]], list[tuple[float, Event]]]:
    """Fire the layer's timers at their deadlines up to ``until``: (time, datagram) and (time,
    event) pairs."""
    datagrams: list[tuple[float, bytes]] = []
    events: list[tuple[float, Event]] = []
    for _ in range(1000):
        deadline = layer.next_deadline()
        if deadline is None or deadline > until:
            break
        layer.on_timer(deadline)
        datagrams += [(deadline, data) for data in sent(layer)]
        events += [(deadline, event) for event in layer.events()]
    return datagrams, events


INVITE = request()
INVITE_BYTES = INVITE.serialize()
TRYING_BYTES = (
    b"SIP/2.0 100 Trying\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
ACK_486_BYTES = (
    b"ACK sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:bot@127.0.0.1>;tag=b1\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


# =============================================================================================
# INVITE client transaction (§17.1.1, RFC 6026 §8.4)
# =============================================================================================
def calling(transport: str = "UDP") -> tuple[TransactionLayer, SipRequest]:
    layer = new_layer()
    invite = request(transport=transport)
    assert layer.send_request(invite, CALLEE, transport, 0.0) == ID1
    assert layer.datagrams_to_send() == [Outgoing(CALLEE, transport, invite.serialize())]
    assert layer.state(ID1) is State.CALLING
    assert layer.machine(ID1) is Machine.INVITE_CLIENT
    assert layer.request(ID1) is invite
    return layer, invite


def test_ict_timer_a_doubles_until_timer_b() -> None:
    layer, _ = calling()
    assert layer.next_deadline() == 0.5
    datagrams, events = drive(layer, until=100.0)
    assert datagrams == [(t, INVITE_BYTES) for t in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5)]
    assert events == [(32.0, TransactionTimeout(ID1, "B")), (32.0, TransactionTerminated(ID1))]
    assert layer.next_deadline() is None
    assert ID1 not in layer and len(layer) == 0


def test_ict_provisional_stops_timer_a_and_timer_b() -> None:
    layer, invite = calling()
    assert drive(layer, until=0.5)[0] == [(0.5, INVITE_BYTES)]
    ringing = answer(invite, 180)
    layer.receive(ringing, CALLEE, "UDP", 0.7)
    assert layer.events() == [ResponseReceived(ID1, ringing)]
    assert layer.state(ID1) is State.PROCEEDING
    assert layer.next_deadline() is None  # §17.1.1.2: A stops; B only matters in Calling
    progress = answer(invite, 183)
    layer.receive(progress, CALLEE, "UDP", 5.0)
    assert layer.events() == [ResponseReceived(ID1, progress)]
    assert layer.state(ID1) is State.PROCEEDING
    assert sent(layer) == []


@pytest.mark.parametrize("ring_first", [False, True])
def test_ict_failure_is_acked_and_retransmissions_absorbed(ring_first: bool) -> None:
    layer, invite = calling()
    if ring_first:
        layer.receive(answer(invite, 180), CALLEE, "UDP", 0.1)
        layer.events()
    busy = answer(invite, 486)
    layer.receive(busy, CALLEE, "UDP", 0.2)
    assert layer.datagrams_to_send() == [Outgoing(CALLEE, "UDP", ACK_486_BYTES)]
    assert layer.events() == [ResponseReceived(ID1, busy)]
    assert layer.state(ID1) is State.COMPLETED
    assert layer.next_deadline() == pytest.approx(32.2)  # Timer D, no Timer A any more
    # §17.1.1.2: a retransmitted final gets the same ACK again and is not passed up
    layer.receive(answer(invite, 486), CALLEE, "UDP", 1.0)
    assert sent(layer) == [ACK_486_BYTES]
    assert layer.events() == []
    # late provisional: absorbed; a 2xx after the final: logged as stray
    layer.receive(answer(invite, 180), CALLEE, "UDP", 1.1)
    ok = answer(invite, 200)
    layer.receive(ok, CALLEE, "UDP", 1.2)
    assert layer.events() == [StrayResponse(ok, CALLEE, "UDP")]
    assert sent(layer) == []
    datagrams, events = drive(layer, until=100.0)
    assert datagrams == []
    assert events == [(pytest.approx(32.2), TransactionTerminated(ID1))]


def test_ict_2xx_enters_accepted_and_every_2xx_goes_to_the_tu() -> None:
    layer, invite = calling()
    ok = answer(invite, 200)
    layer.receive(ok, CALLEE, "UDP", 0.3)
    assert layer.events() == [ResponseReceived(ID1, ok)]
    assert sent(layer) == []  # the TU sends the 2xx ACK itself (§13.2.2.4)
    assert layer.state(ID1) is State.ACCEPTED
    assert layer.next_deadline() == 32.3  # Timer M; Timer A stopped
    # retransmitted 2xx, and the 2xx of another fork: both to the TU (RFC 6026 §8.4)
    layer.receive(ok, CALLEE, "UDP", 0.8)
    fork = answer(invite, 200, tag="fork2")
    layer.receive(fork, ("127.0.0.1", 5070), "UDP", 0.9)
    assert layer.events() == [ResponseReceived(ID1, ok), ResponseReceived(ID1, fork)]
    # late 1xx absorbed; a non-2xx after a 2xx is logged
    layer.receive(answer(invite, 180), CALLEE, "UDP", 1.0)
    busy = answer(invite, 486)
    layer.receive(busy, CALLEE, "UDP", 1.1)
    assert layer.events() == [StrayResponse(busy, CALLEE, "UDP")]
    assert sent(layer) == []
    assert drive(layer, until=100.0) == ([], [(32.3, TransactionTerminated(ID1))])
    # after Timer M a 2xx matches nothing
    layer.receive(ok, CALLEE, "UDP", 40.0)
    assert layer.events() == [StrayResponse(ok, CALLEE, "UDP")]


def test_ict_2xx_from_proceeding() -> None:
    layer, invite = calling()
    layer.receive(answer(invite, 180), CALLEE, "UDP", 0.1)
    ok = answer(invite, 200)
    layer.receive(ok, CALLEE, "UDP", 2.0)
    assert layer.events()[-1] == ResponseReceived(ID1, ok)
    assert layer.state(ID1) is State.ACCEPTED
    assert layer.next_deadline() == 34.0


def test_ict_transport_error_in_calling() -> None:
    layer, _ = calling()
    other = layer.send_request(request(branch="z9hG4bKother"), ("127.0.0.1", 5099), "UDP", 0.0)
    layer.transport_error(CALLEE, "udp", 0.1)
    assert layer.events() == [TransportFailed(ID1), TransactionTerminated(ID1)]
    assert layer.state(other) is State.CALLING


def test_ict_transport_error_in_completed_and_not_in_proceeding() -> None:
    layer, invite = calling()
    layer.receive(answer(invite, 180), CALLEE, "UDP", 0.1)
    layer.events()
    layer.transport_error(CALLEE, "UDP", 0.2)  # Proceeding has no such edge: ignored
    assert layer.events() == []
    layer.receive(answer(invite, 500), CALLEE, "UDP", 0.3)
    layer.events()
    layer.transport_error(CALLEE, "UDP", 0.4)
    assert layer.events() == [TransportFailed(ID1), TransactionTerminated(ID1)]


def test_ict_over_tcp_has_no_timer_a_and_timer_d_is_zero() -> None:
    layer, invite = calling("TCP")
    assert layer.next_deadline() == 32.0  # only Timer B
    assert drive(layer, until=31.0) == ([], [])
    busy = answer(invite, 486)
    layer.receive(busy, CALLEE, "TCP", 31.0)
    assert sent(layer) == [ACK_486_BYTES.replace(b"UDP", b"TCP")]
    assert layer.events() == [ResponseReceived(ID1, busy), TransactionTerminated(ID1)]
    assert layer.next_deadline() is None


def test_transport_spelling_is_kept_and_compared_without_case() -> None:
    # edge_media/sip/transport.py names its transports "udp" and "tcp".
    layer = new_layer()
    invite = request(transport="TCP")
    layer.send_request(invite, CALLEE, "tcp", 0.0)
    assert layer.datagrams_to_send() == [Outgoing(CALLEE, "tcp", invite.serialize())]
    assert layer.next_deadline() == 32.0  # reliable: no Timer A
    layer.receive(request(branch="z9hG4bKin2"), CALLER, "udp", 0.0)
    assert layer.events() == [RequestReceived(ID2, request(branch="z9hG4bKin2"), CALLER, "udp")]
    layer.send_response(ID2, answer(request(branch="z9hG4bKin2"), 180), 0.1)
    assert [out.transport for out in layer.datagrams_to_send()] == ["udp"]
    layer.transport_error(CALLEE, "TCP", 0.2)
    assert layer.events() == [TransportFailed(ID1), TransactionTerminated(ID1)]


def test_ict_timer_b_over_tcp() -> None:
    layer, _ = calling("TCP")
    assert drive(layer, until=100.0) == (
        [],
        [(32.0, TransactionTimeout(ID1, "B")), (32.0, TransactionTerminated(ID1))],
    )


def test_timer_config_is_used() -> None:
    layer = new_layer(TimerConfig(t1=0.1, t2=1.0))
    layer.send_request(INVITE, CALLEE, "UDP", 0.0)
    assert sent(layer) == [INVITE_BYTES]
    datagrams, events = drive(layer, until=100.0)
    assert [t for t, _ in datagrams] == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert events[0] == (pytest.approx(6.4), TransactionTimeout(ID1, "B"))


# =============================================================================================
# Non-INVITE client transaction (§17.1.2)
# =============================================================================================
def trying(transport: str = "UDP") -> tuple[TransactionLayer, SipRequest]:
    layer = new_layer()
    options = request("OPTIONS", branch="z9hG4bKopt1", transport=transport)
    assert layer.send_request(options, CALLEE, transport, 0.0) == ID1
    assert sent(layer) == [options.serialize()]
    assert layer.machine(ID1) is Machine.NON_INVITE_CLIENT
    assert layer.state(ID1) is State.TRYING
    return layer, options


def test_nict_timer_e_doubles_up_to_t2_until_timer_f() -> None:
    layer, options = trying()
    datagrams, events = drive(layer, until=100.0)
    times = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert datagrams == [(t, options.serialize()) for t in times]
    assert events == [(32.0, TransactionTimeout(ID1, "F")), (32.0, TransactionTerminated(ID1))]


def test_nict_proceeding_retransmits_every_t2_until_timer_f() -> None:
    layer, options = trying()
    drive(layer, until=0.5)  # E fired once, next at 1.5
    trying_100 = answer(options, 100, tag=None)
    layer.receive(trying_100, CALLEE, "UDP", 0.6)
    assert layer.events() == [ResponseReceived(ID1, trying_100)]
    assert layer.state(ID1) is State.PROCEEDING
    layer.receive(trying_100, CALLEE, "UDP", 0.7)
    assert layer.events() == [ResponseReceived(ID1, trying_100)]
    datagrams, events = drive(layer, until=100.0)
    assert [t for t, _ in datagrams] == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert events == [(32.0, TransactionTimeout(ID1, "F")), (32.0, TransactionTerminated(ID1))]


@pytest.mark.parametrize("status", [200, 404])
@pytest.mark.parametrize("proceeding", [False, True])
def test_nict_final_then_timer_k(status: int, proceeding: bool) -> None:
    layer, options = trying()
    if proceeding:
        layer.receive(answer(options, 100, tag=None), CALLEE, "UDP", 0.1)
        layer.events()
    final = answer(options, status)
    layer.receive(final, CALLEE, "UDP", 0.2)
    assert layer.events() == [ResponseReceived(ID1, final)]
    assert layer.state(ID1) is State.COMPLETED
    assert layer.next_deadline() == 5.2  # Timer K = T4; E and F stopped
    for late in (final, answer(options, 100, tag=None), answer(options, 500)):
        layer.receive(late, CALLEE, "UDP", 1.0)  # absorbed (§17.1.2.2)
    assert layer.events() == []
    assert drive(layer, until=100.0) == ([], [(5.2, TransactionTerminated(ID1))])


@pytest.mark.parametrize("proceeding", [False, True])
def test_nict_transport_error(proceeding: bool) -> None:
    layer, options = trying()
    if proceeding:
        layer.receive(answer(options, 100, tag=None), CALLEE, "UDP", 0.1)
        layer.events()
    layer.transport_error(CALLEE, "UDP", 0.2)
    assert layer.events() == [TransportFailed(ID1), TransactionTerminated(ID1)]


def test_nict_over_tcp() -> None:
    layer, options = trying("TCP")
    assert layer.next_deadline() == 32.0  # only Timer F
    final = answer(options, 200)
    layer.receive(final, CALLEE, "TCP", 1.0)
    assert layer.events() == [ResponseReceived(ID1, final), TransactionTerminated(ID1)]
    assert layer.next_deadline() is None


# =============================================================================================
# INVITE server transaction (§17.2.1, RFC 6026 §7.1)
# =============================================================================================
def proceeding(trying_delay: float | None = 0.2) -> TransactionLayer:
    layer = new_layer(trying_delay=trying_delay)
    layer.receive(INVITE, CALLER, "UDP", 0.0)
    assert layer.events() == [RequestReceived(ID1, INVITE, CALLER, "UDP")]
    assert layer.machine(ID1) is Machine.INVITE_SERVER
    assert layer.state(ID1) is State.PROCEEDING
    return layer


def test_ist_new_invite_once_retransmissions_absorbed() -> None:
    layer = proceeding()
    assert sent(layer) == []
    layer.receive(request(), CALLER, "UDP", 0.1)  # before any response: nothing to resend
    assert layer.events() == []
    assert sent(layer) == []
    assert len(layer) == 1


def test_ist_sends_100_trying_after_200_ms() -> None:
    layer = proceeding()
    assert layer.next_deadline() == 0.2
    assert drive(layer, until=10.0) == ([(0.2, TRYING_BYTES)], [])
    layer.receive(request(), CALLER, "UDP", 0.5)
    assert sent(layer) == [TRYING_BYTES]
    assert layer.events() == []


def test_ist_retransmission_gets_the_latest_provisional_not_100() -> None:
    layer = proceeding()
    drive(layer, until=0.2)
    ringing = answer(INVITE, 180)
    layer.send_response(ID1, ringing, 0.3)
    assert layer.datagrams_to_send() == [Outgoing(CALLER, "UDP", ringing.serialize())]
    layer.receive(request(), CALLER, "UDP", 0.5)
    assert sent(layer) == [ringing.serialize()]
    assert layer.events() == []  # never a second RequestReceived
    progress = answer(INVITE, 183)
    layer.send_response(ID1, progress, 0.6)
    layer.receive(request(), CALLER, "UDP", 0.7)
    assert sent(layer) == [progress.serialize(), progress.serialize()]
    assert layer.state(ID1) is State.PROCEEDING


def test_ist_tu_provisional_within_200_ms_suppresses_100() -> None:
    layer = proceeding()
    layer.send_response(INVITE, answer(INVITE, 180), 0.1)  # found by its request
    assert len(sent(layer)) == 1
    assert layer.next_deadline() is None
    assert drive(layer, until=10.0) == ([], [])


def test_ist_trying_policy_at_once() -> None:
    layer = proceeding(trying_delay=0)
    assert sent(layer) == [TRYING_BYTES]
    assert layer.next_deadline() is None


def test_ist_trying_policy_never() -> None:
    layer = proceeding(trying_delay=None)
    assert layer.next_deadline() is None
    assert sent(layer) == []


def test_ist_final_resent_by_timer_g_until_timer_h() -> None:
    layer = proceeding()
    busy = answer(INVITE, 486)
    layer.send_response(ID1, busy, 1.0)
    assert sent(layer) == [busy.serialize()]
    assert layer.state(ID1) is State.COMPLETED
    layer.receive(request(), CALLER, "UDP", 1.2)  # a retransmitted INVITE gets the final
    assert sent(layer) == [busy.serialize()]
    datagrams, events = drive(layer, until=100.0)
    times = [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]  # G: T1 doubling, cap T2
    assert datagrams == [(t, busy.serialize()) for t in times]
    assert events == [(33.0, TransactionTimeout(ID1, "H")), (33.0, TransactionTerminated(ID1))]


def test_ist_ack_confirms_then_timer_i() -> None:
    layer = proceeding()
    busy = answer(INVITE, 486)
    layer.send_response(ID1, busy, 1.0)
    sent(layer)
    ack = wire(build_non_2xx_ack(INVITE, busy))
    layer.receive(ack, CALLER, "UDP", 1.2)
    assert layer.state(ID1) is State.CONFIRMED
    assert layer.events() == []
    assert layer.next_deadline() == 6.2  # Timer I = T4; G and H stopped
    layer.receive(ack, CALLER, "UDP", 2.0)  # absorbed
    layer.receive(request(), CALLER, "UDP", 2.1)  # absorbed
    assert layer.events() == []
    assert sent(layer) == []
    assert drive(layer, until=100.0) == ([], [(6.2, TransactionTerminated(ID1))])


def test_ist_2xx_accepted_absorbs_invite_retransmissions() -> None:
    layer = proceeding()
    ok = answer(INVITE, 200, extra_headers=(("Contact", "<sip:bot@127.0.0.1:5060>"),))
    layer.send_response(ID1, ok, 1.0)
    assert sent(layer) == [ok.serialize()]  # once: the TU retransmits 2xx (RFC 6026 §7.1)
    assert layer.state(ID1) is State.ACCEPTED
    assert layer.next_deadline() == 33.0  # Timer L
    layer.receive(request(), CALLER, "UDP", 1.5)  # NOT a new call, NOT answered
    assert layer.events() == []
    assert sent(layer) == []
    # the TU's own retransmission of the 2xx goes out through the transaction
    layer.send_response(ID1, ok, 1.5)
    assert sent(layer) == [ok.serialize()]
    ack = wire(build_ack_for_2xx(INVITE, ok, branch="z9hG4bKack1"))
    layer.receive(ack, CALLER, "UDP", 1.6)
    assert layer.events() == [AckReceived(ID1, ack, CALLER, "UDP")]
    layer.receive(ack, CALLER, "UDP", 1.7)  # each ACK goes to the TU
    assert layer.events() == [AckReceived(ID1, ack, CALLER, "UDP")]
    assert drive(layer, until=100.0) == ([], [(33.0, TransactionTerminated(ID1))])
    layer.receive(ack, CALLER, "UDP", 40.0)
    assert layer.events() == [StrayAck(ack, CALLER, "UDP")]


def test_ist_ack_for_another_dialog_is_stray() -> None:
    layer = proceeding()
    ok = answer(INVITE, 200, extra_headers=(("Contact", "<sip:bot@127.0.0.1:5060>"),))
    layer.send_response(ID1, ok, 1.0)
    other = wire(build_ack_for_2xx(INVITE, answer(INVITE, 200, tag="zz"), branch="z9hG4bKa2"))
    layer.receive(other, CALLER, "UDP", 1.1)
    assert layer.events() == [StrayAck(other, CALLER, "UDP")]
    assert layer.state(ID1) is State.ACCEPTED


def test_ist_ack_before_any_final_is_stray() -> None:
    layer = proceeding()
    ack = wire(build_non_2xx_ack(INVITE, answer(INVITE, 486)))
    layer.receive(ack, CALLER, "UDP", 0.1)
    assert layer.events() == [StrayAck(ack, CALLER, "UDP")]
    assert layer.state(ID1) is State.PROCEEDING


def test_lost_ack_2xx_resent_at_half_one_and_a_half_three_and_a_half_then_given_up() -> None:
    """The UAS side of sipp's ackloss scenario: the TU resends through the layer, gives up at
    32 s (64*T1) and Timer L ends the transaction at the same moment."""
    layer = proceeding(trying_delay=None)
    ok = answer(INVITE, 200, extra_headers=(("Contact", "<sip:bot@127.0.0.1:5060>"),))
    layer.send_response(ID1, ok, 0.0)
    retransmitter = TwoXxRetransmitter(ok, 0.0)
    times = [0.0] * len(sent(layer))
    gave_up: list[float] = []
    for _ in range(100):
        deadlines = [d for d in (retransmitter.next_deadline(), layer.next_deadline()) if d]
        if not deadlines:
            break
        now = min(deadlines)
        for output in retransmitter.on_timer(now):
            if isinstance(output, Resend2xx):
                layer.send_response(ID1, output.response, now)
            else:
                assert output == AckNotReceived(ok)
                gave_up.append(now)
        layer.on_timer(now)
        times += [now] * len(sent(layer))
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert gave_up == [32.0]
    assert layer.events() == [TransactionTerminated(ID1)]


def test_ist_transport_error_in_accepted_keeps_the_transaction() -> None:
    layer = proceeding()
    layer.send_response(ID1, answer(INVITE, 200), 1.0)
    layer.transport_error(CALLER, "UDP", 1.1)
    assert layer.events() == [TransportFailed(ID1)]
    assert layer.state(ID1) is State.ACCEPTED


@pytest.mark.parametrize("final", [None, 486])
def test_ist_transport_error_terminates_proceeding_and_completed(final: int | None) -> None:
    layer = proceeding()
    if final is not None:
        layer.send_response(ID1, answer(INVITE, final), 1.0)
    layer.transport_error(CALLER, "UDP", 1.1)
    assert layer.events() == [TransportFailed(ID1), TransactionTerminated(ID1)]


def test_ist_over_tcp() -> None:
    layer = new_layer()
    invite = request(transport="TCP")
    source = ("127.0.0.1", 40001)  # the connection's peer: answers go back on it
    layer.receive(invite, source, "TCP", 0.0)
    assert layer.events() == [RequestReceived(ID1, invite, source, "TCP")]
    busy = answer(invite, 486)
    layer.send_response(ID1, busy, 1.0)
    assert layer.datagrams_to_send() == [Outgoing(source, "TCP", busy.serialize())]
    assert layer.next_deadline() == 33.0  # Timer H only, no Timer G
    layer.receive(wire(build_non_2xx_ack(invite, busy)), source, "TCP", 2.0)
    assert layer.events() == [TransactionTerminated(ID1)]  # Timer I = 0
    assert layer.next_deadline() is None


@pytest.mark.parametrize(
    ("symmetric", "destination"), [(False, ("127.0.0.1", 5062)), (True, ("127.0.0.1", 40002))]
)
def test_ist_response_address(symmetric: bool, destination: tuple[str, int]) -> None:
    layer = new_layer(symmetric_responses=symmetric)
    layer.receive(INVITE, ("127.0.0.1", 40002), "UDP", 0.0)  # sent-by says 5062, no rport
    layer.send_response(ID1, answer(INVITE, 180), 0.1)
    assert [out.addr for out in layer.datagrams_to_send()] == [destination]


# =============================================================================================
# Non-INVITE server transaction (§17.2.2)
# =============================================================================================
BYE = request("BYE", branch="z9hG4bKbye1", cseq=2, to="<sip:bot@127.0.0.1>;tag=b1")


def nist(transport: str = "UDP") -> TransactionLayer:
    layer = new_layer()
    layer.receive(BYE, CALLER, transport, 0.0)
    assert layer.events() == [RequestReceived(ID1, BYE, CALLER, transport)]
    assert layer.machine(ID1) is Machine.NON_INVITE_SERVER
    assert layer.state(ID1) is State.TRYING
    assert layer.next_deadline() is None  # no 100 Trying for non-INVITE
    return layer


def test_nist_trying_absorbs_retransmissions() -> None:
    layer = nist()
    layer.receive(BYE, CALLER, "UDP", 0.1)
    assert layer.events() == []
    assert sent(layer) == []


def test_nist_provisional_then_final_then_timer_j() -> None:
    layer = nist()
    trying_100 = answer(BYE, 100)
    layer.send_response(ID1, trying_100, 0.1)
    assert layer.state(ID1) is State.PROCEEDING
    layer.receive(BYE, CALLER, "UDP", 0.2)
    assert sent(layer) == [trying_100.serialize(), trying_100.serialize()]
    ok = answer(BYE, 200)
    layer.send_response(ID1, ok, 0.3)
    assert layer.state(ID1) is State.COMPLETED
    layer.receive(BYE, CALLER, "UDP", 0.4)
    assert sent(layer) == [ok.serialize(), ok.serialize()]
    # §17.2.2: other finals from the TU are discarded in Completed
    layer.send_response(ID1, answer(BYE, 500), 0.5)
    assert sent(layer) == []
    assert layer.next_deadline() == pytest.approx(32.3)  # Timer J = 64*T1
    assert drive(layer, until=100.0) == ([], [(pytest.approx(32.3), TransactionTerminated(ID1))])


def test_nist_final_from_trying() -> None:
    layer = nist()
    layer.send_response(ID1, answer(BYE, 481), 0.1)
    assert layer.state(ID1) is State.COMPLETED


def test_nist_provisional_after_final_is_invalid_and_changes_nothing() -> None:
    layer = nist()
    layer.send_response(ID1, answer(BYE, 200), 0.1)
    sent(layer)
    with pytest.raises(InvalidTransition):
        layer.send_response(ID1, answer(BYE, 100), 0.2)
    assert layer.state(ID1) is State.COMPLETED
    assert sent(layer) == []
    assert layer.next_deadline() == pytest.approx(32.1)


@pytest.mark.parametrize("final", [False, True])
def test_nist_transport_error(final: bool) -> None:
    layer = nist()
    layer.send_response(ID1, answer(BYE, 100), 0.1)
    if final:
        layer.send_response(ID1, answer(BYE, 200), 0.2)
    layer.transport_error(CALLER, "UDP", 0.3)
    assert layer.events() == [TransportFailed(ID1), TransactionTerminated(ID1)]


def test_nist_transport_error_in_trying_is_ignored() -> None:
    layer = nist()
    layer.transport_error(CALLER, "UDP", 0.3)  # nothing was sent yet
    assert layer.events() == []
    assert layer.state(ID1) is State.TRYING


def test_nist_over_tcp_timer_j_is_zero() -> None:
    layer = nist("TCP")
    layer.send_response(ID1, answer(BYE, 200), 0.1)
    assert layer.events() == [TransactionTerminated(ID1)]
    assert len(layer) == 0


# =============================================================================================
# CANCEL (§9)
# =============================================================================================
CANCEL = wire(build_cancel(INVITE))


def ok_to_cancel(tag: str) -> bytes:
    return (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        b"To: <sip:bot@127.0.0.1>;tag=" + tag.encode() + b"\r\n"
        b"Call-ID: call-1\r\n"
        b"CSeq: 1 CANCEL\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def test_cancel_of_a_ringing_invite() -> None:
    layer = proceeding()
    layer.send_response(ID1, answer(INVITE, 180, tag="b1"), 0.1)
    sent(layer)
    layer.receive(CANCEL, CALLER, "UDP", 1.0)
    assert sent(layer) == [ok_to_cancel("b1")]  # same To tag as the INVITE's responses
    assert layer.events() == [CancelReceived(ID1, CANCEL, "b1")]
    layer.receive(CANCEL, CALLER, "UDP", 1.2)  # retransmitted CANCEL: same 200, no event
    assert sent(layer) == [ok_to_cancel("b1")]
    assert layer.events() == []
    terminated = answer(INVITE, 487, tag="b1")
    layer.send_response(ID1, terminated, 1.3)
    assert sent(layer) == [terminated.serialize()]
    layer.receive(wire(build_non_2xx_ack(INVITE, terminated)), CALLER, "UDP", 1.4)
    assert layer.state(ID1) is State.CONFIRMED
    _, events = drive(layer, until=100.0)
    assert events == [(6.4, TransactionTerminated(ID1)), (33.0, TransactionTerminated(ID2))]


def test_cancel_before_any_tagged_response_uses_a_new_tag() -> None:
    layer = proceeding()
    layer.receive(CANCEL, CALLER, "UDP", 0.1)
    assert sent(layer) == [ok_to_cancel("tag1")]
    assert layer.events() == [CancelReceived(ID1, CANCEL, "tag1")]
    # The CANCEL does not answer the INVITE: its 100 Trying is still due, then the TU's 487.
    assert drive(layer, until=0.2) == ([(0.2, TRYING_BYTES)], [])


def test_cancel_after_the_final_response_has_no_effect() -> None:
    layer = proceeding()
    layer.send_response(ID1, answer(INVITE, 200), 0.1)
    sent(layer)
    layer.receive(CANCEL, CALLER, "UDP", 0.2)
    assert sent(layer) == [ok_to_cancel("b1")]
    assert layer.events() == []
    assert layer.state(ID1) is State.ACCEPTED


def test_cancel_matching_nothing_gets_481() -> None:
    layer = new_layer()
    layer.receive(CANCEL, CALLER, "UDP", 0.0)
    assert sent(layer) == [
        b"SIP/2.0 481 Call/Transaction Does Not Exist\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        b"To: <sip:bot@127.0.0.1>;tag=tag1\r\n"
        b"Call-ID: call-1\r\n"
        b"CSeq: 1 CANCEL\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    ]
    assert layer.events() == []
    layer.receive(CANCEL, CALLER, "UDP", 0.5)
    assert len(sent(layer)) == 1  # the 481 again, from the CANCEL's own transaction
    assert drive(layer, until=100.0) == ([], [(32.0, TransactionTerminated(ID1))])


def test_cancel_from_another_sender_does_not_match() -> None:
    # §17.2.3: sent-by is part of the key, so a same-branch CANCEL from elsewhere is a stranger.
    layer = proceeding()
    foreign = wire(
        build_cancel(INVITE).with_headers(
            build_cancel(INVITE).headers.with_replaced(
                "Via", "SIP/2.0/UDP 127.0.0.9:5062;branch=z9hG4bKinv1"
            )
        )
    )
    layer.receive(foreign, ("127.0.0.9", 5062), "UDP", 0.1)
    assert [data.split(b"\r\n")[0] for data in sent(layer)] == [
        b"SIP/2.0 481 Call/Transaction Does Not Exist"
    ]
    assert layer.events() == []


def test_client_cancel_waits_for_a_provisional_response() -> None:
    layer, invite = calling()
    assert layer.cancel(ID1, 0.1) == ID2
    assert sent(layer) == []  # §9.1: not before a provisional response
    assert ID2 not in layer
    ringing = answer(invite, 180)
    layer.receive(ringing, CALLEE, "UDP", 0.3)
    cancel_bytes = build_cancel(invite).serialize()
    assert layer.datagrams_to_send() == [Outgoing(CALLEE, "UDP", cancel_bytes)]
    assert layer.events() == [ResponseReceived(ID1, ringing)]
    assert layer.machine(ID2) is Machine.NON_INVITE_CLIENT
    ok = answer(wire(build_cancel(invite)), 200)
    layer.receive(ok, CALLEE, "UDP", 0.4)
    terminated = answer(invite, 487)
    layer.receive(terminated, CALLEE, "UDP", 0.5)
    assert layer.events() == [ResponseReceived(ID2, ok), ResponseReceived(ID1, terminated)]
    assert sent(layer) == [ACK_486_BYTES]  # the same ACK shape as for 486
    assert layer.state(ID1) is State.COMPLETED
    _, events = drive(layer, until=100.0)
    assert events == [(5.4, TransactionTerminated(ID2)), (32.5, TransactionTerminated(ID1))]


def test_client_cancel_in_proceeding_is_sent_at_once() -> None:
    layer, invite = calling()
    layer.receive(answer(invite, 183), CALLEE, "UDP", 0.2)
    layer.events()
    assert layer.cancel(ID1, 1.0, extra_headers=[("Reason", "SIP;cause=487")]) == ID2
    (cancel_bytes,) = sent(layer)
    assert cancel_bytes.startswith(b"CANCEL sip:bot@127.0.0.1:5060 SIP/2.0\r\n")
    assert b"\r\nReason: SIP;cause=487\r\n" in cancel_bytes
    assert layer.next_deadline() == 1.5  # the CANCEL's Timer E


def test_client_cancel_dropped_when_the_final_response_comes_first() -> None:
    layer, invite = calling()
    layer.cancel(ID1, 0.1)
    busy = answer(invite, 486)
    layer.receive(busy, CALLEE, "UDP", 0.2)
    assert sent(layer) == [ACK_486_BYTES]  # no CANCEL ever
    assert layer.events() == [ResponseReceived(ID1, busy), TransactionTerminated(ID2)]


def test_client_cancel_dropped_on_timer_b() -> None:
    layer, _ = calling()
    layer.cancel(ID1, 0.1)
    _, events = drive(layer, until=100.0)
    assert events == [
        (32.0, TransactionTimeout(ID1, "B")),
        (32.0, TransactionTerminated(ID1)),
        (32.0, TransactionTerminated(ID2)),
    ]


def test_client_cancel_gives_up_64_t1_after_the_cancel() -> None:
    layer, invite = calling()
    layer.receive(answer(invite, 180), CALLEE, "UDP", 0.2)
    layer.cancel(ID1, 1.0)
    layer.receive(answer(wire(build_cancel(invite)), 200), CALLEE, "UDP", 1.1)
    layer.events()
    _, events = drive(layer, until=100.0)
    assert events == [
        (6.1, TransactionTerminated(ID2)),
        (33.0, TransactionTimeout(ID1, "cancel")),
        (33.0, TransactionTerminated(ID1)),
    ]


def test_client_cancel_misuse() -> None:
    layer, invite = calling()
    layer.cancel(ID1, 0.1)
    with pytest.raises(TransactionError, match="already"):
        layer.cancel(ID1, 0.2)
    layer.receive(answer(invite, 486), CALLEE, "UDP", 0.3)
    with pytest.raises(InvalidTransition):
        layer.cancel(ID1, 0.4)
    assert layer.state(ID1) is State.COMPLETED
    options = layer.send_request(request("OPTIONS", branch="z9hG4bKo"), CALLEE, "UDP", 0.5)
    with pytest.raises(TransactionError, match="not an INVITE client"):
        layer.cancel(options, 0.6)
    with pytest.raises(UnknownTransaction):
        layer.cancel(TransactionId(99), 0.7)


# =============================================================================================
# Stray messages
# =============================================================================================
@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKunknown",
        "SIP/2.0/UDP 127.0.0.1:5062",
        "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv1",  # right branch, but CSeq BYE
    ],
)
def test_stray_responses(via: str) -> None:
    layer, _ = calling()
    bye = SipRequest.build(
        "BYE", "sip:bot@127.0.0.1", from_="<sip:alice@127.0.0.1>;tag=a1",
        to="<sip:bot@127.0.0.1>;tag=b1", call_id="call-1", cseq=2, via=via,
    )  # fmt: skip
    response = answer(wire(bye), 200)
    layer.receive(response, CALLEE, "UDP", 0.1)
    assert layer.events() == [StrayResponse(response, CALLEE, "UDP")]
    assert layer.state(ID1) is State.CALLING


def test_stray_ack() -> None:
    layer = new_layer()
    ack = wire(build_non_2xx_ack(INVITE, answer(INVITE, 486)))
    layer.receive(ack, CALLER, "UDP", 0.0)
    assert layer.events() == [StrayAck(ack, CALLER, "UDP")]
    assert len(layer) == 0
    assert sent(layer) == []


# =============================================================================================
# RFC 2543 matching (§17.2.3, branch without the magic cookie)
# =============================================================================================
@pytest.mark.parametrize("branch", ["1234", None])
def test_legacy_invite_retransmission_and_ack(branch: str | None) -> None:
    layer = new_layer()
    invite = request(branch=branch)
    layer.receive(invite, CALLER, "UDP", 0.0)
    assert layer.events() == [RequestReceived(ID1, invite, CALLER, "UDP")]
    layer.receive(request(branch=branch), CALLER, "UDP", 0.1)
    assert layer.events() == []
    busy = answer(invite, 486, tag="b1")
    layer.send_response(ID1, busy, 0.2)
    layer.receive(request(branch=branch), CALLER, "UDP", 0.3)
    assert sent(layer) == [busy.serialize(), busy.serialize()]
    # an ACK whose To tag is not the one we sent does not match
    wrong = wire(build_non_2xx_ack(invite, answer(invite, 486, tag="other")))
    layer.receive(wrong, CALLER, "UDP", 0.4)
    assert layer.events() == [StrayAck(wrong, CALLER, "UDP")]
    layer.receive(wire(build_non_2xx_ack(invite, busy)), CALLER, "UDP", 0.5)
    assert layer.state(ID1) is State.CONFIRMED
    assert layer.events() == []


def test_legacy_requests_differing_in_cseq_are_two_transactions() -> None:
    layer = new_layer()
    first, second = request(branch="1234"), request(branch="1234", cseq=2)
    layer.receive(first, CALLER, "UDP", 0.0)
    layer.receive(second, CALLER, "UDP", 0.0)
    assert layer.events() == [
        RequestReceived(ID1, first, CALLER, "UDP"),
        RequestReceived(ID2, second, CALLER, "UDP"),
    ]


def test_legacy_ack_for_2xx_and_cancel() -> None:
    layer = new_layer()
    invite = request(branch="1234")
    layer.receive(invite, CALLER, "UDP", 0.0)
    layer.send_response(invite, answer(invite, 180, tag="b1"), 0.1)
    cancel = wire(build_cancel(invite))
    layer.receive(cancel, CALLER, "UDP", 0.2)
    assert layer.events() == [RequestReceived(ID1, invite, CALLER, "UDP"),
                              CancelReceived(ID1, cancel, "b1")]  # fmt: skip
    ok = answer(invite, 200, tag="b1")
    layer.send_response(ID1, ok, 0.3)
    ack = wire(build_non_2xx_ack(invite, answer(invite, 486, tag="b1")))  # same shape, 2543
    layer.receive(ack, CALLER, "UDP", 0.4)
    assert layer.events() == [AckReceived(ID1, ack, CALLER, "UDP")]


# =============================================================================================
# Misuse by the TU
# =============================================================================================
@pytest.mark.parametrize(
    ("first", "second"), [(486, 200), (486, 180), (486, 603), (200, 486), (200, 180)]
)
def test_second_response_not_allowed_changes_nothing(first: int, second: int) -> None:
    layer = proceeding()
    layer.send_response(ID1, answer(INVITE, first), 0.1)
    state, deadline = layer.state(ID1), layer.next_deadline()
    sent(layer)
    with pytest.raises(InvalidTransition) as caught:
        layer.send_response(ID1, answer(INVITE, second), 0.2)
    assert caught.value.state is state
    assert layer.state(ID1) is state
    assert layer.next_deadline() == deadline
    assert sent(layer) == []
    assert layer.events() == []


def test_send_response_errors() -> None:
    layer = proceeding()
    with pytest.raises(UnknownTransaction):
        layer.send_response(TransactionId(42), answer(INVITE, 180), 0.1)
    with pytest.raises(UnknownTransaction):
        layer.send_response(request(branch="z9hG4bKnone"), answer(INVITE, 180), 0.1)
    with pytest.raises(ValueError, match="CSeq"):
        layer.send_response(ID1, answer(BYE, 200), 0.1)
    client = layer.send_request(request("OPTIONS", branch="z9hG4bKc"), CALLEE, "UDP", 0.1)
    with pytest.raises(TransactionError, match="client transaction"):
        layer.send_response(client, answer(INVITE, 180), 0.1)
    with pytest.raises(UnknownTransaction):
        layer.state(TransactionId(42))


def test_send_request_errors() -> None:
    layer = new_layer()
    with pytest.raises(ValueError, match="not a transaction"):
        layer.send_request(wire(build_non_2xx_ack(INVITE, answer(INVITE, 486))), CALLEE, "UDP", 0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(request(branch="1234"), CALLEE, "UDP", 0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(request(branch=None), CALLEE, "UDP", 0.0)
    no_via = SipRequest("OPTIONS", "sip:bot@127.0.0.1", Headers([("CSeq", "1 OPTIONS")]))
    with pytest.raises(ValueError, match="no Via"):
        layer.send_request(no_via, CALLEE, "UDP", 0.0)
    layer.send_request(INVITE, CALLEE, "UDP", 0.0)
    with pytest.raises(TransactionError, match="already exists"):
        layer.send_request(INVITE, CALLEE, "UDP", 0.0)
    assert len(layer) == 1


def test_send_stateless() -> None:
    layer = new_layer()
    ack = build_ack_for_2xx(INVITE, answer(INVITE, 200), branch="z9hG4bKack9")
    layer.send_stateless(ack, CALLEE, "tcp")
    assert layer.datagrams_to_send() == [Outgoing(CALLEE, "tcp", ack.serialize())]
    assert len(layer) == 0
    assert layer.datagrams_to_send() == []


# =============================================================================================
# Two layers over a lossy wire (h11-style pair)
# =============================================================================================
class Wire:
    """Carries datagrams between a UAC layer and a UAS layer, dropping the ones ``drop`` picks."""

    def __init__(self, drop: Callable[[bytes], bool]) -> None:
        self.uac = new_layer()
        self.uas = new_layer(trying_delay=None)
        self.drop = drop
        self.log: list[tuple[float, str, bytes]] = []

    def flush(self, now: float) -> None:
        for _ in range(20):
            moved = False
            for source, target, name, addr in (
                (self.uac, self.uas, "uac", CALLER),
                (self.uas, self.uac, "uas", CALLEE),
            ):
                for out in source.datagrams_to_send():
                    moved = True
                    self.log.append((now, name, out.data.split(b"\r\n")[0]))
                    if not self.drop(out.data):
                        message = parse_message(out.data)
                        assert message is not None
                        target.receive(message, addr, out.transport, now)
            if not moved:
                return


def test_pair_lost_invite_is_retransmitted_and_answered_once() -> None:
    lost: list[bytes] = []

    def drop_first_invite(data: bytes) -> bool:
        if data.startswith(b"INVITE") and not lost:
            lost.append(data)
            return True
        return False

    net = Wire(drop_first_invite)
    invite_id = net.uac.send_request(INVITE, CALLEE, "UDP", 0.0)
    net.flush(0.0)
    net.uac.on_timer(0.5)  # Timer A
    net.flush(0.5)
    (received,) = net.uas.events()
    assert isinstance(received, RequestReceived)
    ringing = answer(received.request, 180, tag="b1")
    net.uas.send_response(received.txn_id, ringing, 0.6)
    net.flush(0.6)
    ok = answer(
        received.request, 200, tag="b1", extra_headers=(("Contact", "<sip:bot@127.0.0.1>"),)
    )
    net.uas.send_response(received.txn_id, ok, 1.0)
    net.flush(1.0)
    responses = [e.response.status for e in net.uac.events() if isinstance(e, ResponseReceived)]
    assert responses == [180, 200]
    ack = build_ack_for_2xx(INVITE, ok, branch="z9hG4bKack1")
    net.uac.send_stateless(ack, CALLEE, "UDP")
    net.flush(1.1)
    events = net.uas.events()
    assert len(events) == 1 and isinstance(events[0], AckReceived)
    assert events[0].txn_id == received.txn_id
    assert [(t, who, line) for t, who, line in net.log] == [
        (0.0, "uac", b"INVITE sip:bot@127.0.0.1:5060 SIP/2.0"),
        (0.5, "uac", b"INVITE sip:bot@127.0.0.1:5060 SIP/2.0"),
        (0.6, "uas", b"SIP/2.0 180 Ringing"),
        (1.0, "uas", b"SIP/2.0 200 OK"),
        (1.1, "uac", b"ACK sip:bot@127.0.0.1 SIP/2.0"),
    ]
    assert net.uac.state(invite_id) is State.ACCEPTED
    assert net.uas.state(received.txn_id) is State.ACCEPTED
