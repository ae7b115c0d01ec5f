"""The UAS side of §17 that is not a state machine: matching keys, response addresses, 2xx resends.

Why these are separate from the tables: they answer "which transaction is this?" (§17.2.3) and
"where does the answer go?" (§18.2.2) with pure functions of a request, and the 2xx retransmission
of §13.3.1.4 belongs to the TU, not to any transaction (RFC 6026 §7.1: "The server transaction
MUST NOT generate 2xx retransmissions on its own"), so the dialog layer owns a
`TwoXxRetransmitter` per answered INVITE and feeds its output back through the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from edge_media.sip.header_values import Via
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.transaction_client import has_magic_cookie
from edge_media.sip.transaction_timers import TimerConfig, is_reliable

__all__ = [
    "DEFAULT_SIP_PORT",
    "AckNotReceived",
    "Address",
    "BranchKey",
    "LegacyKey",
    "Resend2xx",
    "TwoXxRetransmitter",
    "branch_key",
    "legacy_key",
    "response_address",
]

Address: TypeAlias = tuple[Any, ...]  # (host, port) or an IPv6 (host, port, flow, scope)
# §18.2.2 / §19.1.2: the port when sent-by has none.
DEFAULT_SIP_PORT: Final = 5060

# §17.2.3 with the magic cookie: branch, sent-by (host, port) and method (ACK counts as INVITE).
BranchKey: TypeAlias = tuple[str, str, int | None, str]
# §17.2.3 RFC 2543 fallback, the fields shared by INVITE, ACK and CANCEL matching: Request-URI,
# From tag, Call-ID, CSeq number and the whole top Via. To tag and CSeq method are checked after.
LegacyKey: TypeAlias = tuple[str, str | None, str, int, Via]


def branch_key(request: SipRequest, method: str | None = None) -> BranchKey | None:
    """The §17.2.3 key of a request whose branch has the magic cookie, else None.

    "1. the branch parameter in the request is equal to the one in the top Via header field of
    the request that created the transaction, and 2. the sent-by value in the top Via of the
    request is equal to the one in the request that created the transaction, and 3. the method
    of the request matches the one that created the transaction, except for ACK, where the
    method of the request that created the transaction is INVITE." ``method`` overrides the
    request's (a CANCEL looks for the transaction it cancels, §9.2).
    """
    via = request.top_via
    branch = via.branch
    if branch is None or not has_magic_cookie(branch):
        return None
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    return branch, via.host.lower(), via.port, method


def legacy_key(request: SipRequest) -> LegacyKey:
    """The RFC 2543 matching fields shared by every method (§17.2.3, §9.2)."""
    return str(request.uri), request.from_tag, request.call_id, request.cseq.number, request.top_via


def response_address(via: Via, source: Address, transport: str) -> Address:
    """Where a response to a request with top ``via`` received from ``source`` goes (§18.2.2).

    Reliable transports answer on the connection the request came in on, i.e. to ``source``.
    On UDP the response goes to the source IP (what §18.2.1's ``received`` would say: we stamp
    none, the source address is the fact) at the sent-by port, or with RFC 3581 ``rport`` at the
    source port, which is what gets through NAT.

    Deliberately not followed: a ``maddr`` or ``received`` the peer wrote into its own top Via.
    §18.2.2 sends to ``maddr``, but both are the sender's word, and honouring them lets anyone
    aim our responses (and their retransmissions) at a third party: a reflection amplifier.
    No UA we serve uses multicast ``maddr``; proxies and carriers reach us directly.
    """
    if is_reliable(transport):
        return source
    if via.has_rport:
        return source
    return (source[0], via.port if via.port is not None else DEFAULT_SIP_PORT)


@dataclass(frozen=True, slots=True)
class Resend2xx:
    """Send this 2xx again: pass it to `TransactionLayer.send_response` for the INVITE."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class AckNotReceived:
    """64*T1 passed without an ACK: the dialog is confirmed but should end with a BYE
    (§13.3.1.4)."""

    response: SipResponse


class TwoXxRetransmitter:
    """Resends a 2xx to an INVITE until its ACK arrives, as the UAS core must (§13.3.1.4).

    §13.3.1.4: "The 2xx response is passed to the transport with an interval that starts at T1
    seconds and doubles for each retransmission until it reaches T2 seconds. Response
    retransmissions cease when an ACK request for the response is received. This is independent
    of whatever transport protocols are used to send the response." and "If the server
    retransmits the 2xx response for 64*T1 seconds without receiving an ACK, the dialog is
    confirmed, but the session SHOULD be terminated. This is accomplished with a BYE".

    Because the 2xx may cross UDP hops behind a TCP proxy, resends happen on every transport.
    Create it when the 2xx is first sent; call `ack_received` on `AckReceived`; arm a timer at
    `next_deadline()` and feed `on_timer(now)`. Intervals restart from the time of each resend.
    """

    __slots__ = ("_give_up_at", "_interval", "_next_send", "_state", "_t2", "response")

    def __init__(
        self, response: SipResponse, now: float, timers: TimerConfig | None = None
    ) -> None:
        if not 200 <= response.status <= 299:
            raise ValueError(f"only a 2xx is retransmitted by the TU, not {response.status}")
        config = timers if timers is not None else TimerConfig()
        self.response = response
        self._interval = config.t1
        self._t2 = config.t2
        self._next_send = now + config.t1
        self._give_up_at = now + config.timeout
        self._state = "waiting"

    @property
    def acked(self) -> bool:
        return self._state == "acked"

    @property
    def timed_out(self) -> bool:
        return self._state == "timed_out"

    @property
    def finished(self) -> bool:
        return self._state != "waiting"

    def ack_received(self) -> None:
        """Stop: the ACK arrived (a late call after a timeout changes nothing)."""
        if self._state == "waiting":
            self._state = "acked"

    def next_deadline(self) -> float | None:
        if self._state != "waiting":
            return None
        return min(self._next_send, self._give_up_at)

    def on_timer(self, now: float) -> list[Resend2xx | AckNotReceived]:
        if self._state != "waiting":
            return []
        if now >= self._give_up_at:
            self._state = "timed_out"
            return [AckNotReceived(self.response)]
        if now < self._next_send:
            return []
        self._interval = min(2 * self._interval, self._t2)
        self._next_send = now + self._interval
        return [Resend2xx(self.response)]
