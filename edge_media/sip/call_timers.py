"""The two timers a call keeps on the event loop: its 2xx re-sent until the ACK comes (RFC 3261
§13.3.1.4) and the RFC 4028 session timer.

Why apart from `call`: both drive a sans-I/O machine (`TwoXxRetransmitter`, `SessionTimer`)
with one asyncio timer re-armed at the machine's next deadline, which is bookkeeping the call's
SIP logic does not need to see. When a timer gives up, the call is hung up like any other
(``RECOVERY_ON_TIMER_EXPIRE``); a session refresh is a re-offer of the call's media (`reoffer`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edge_media.sip.endpoint import TransactionFailed
from edge_media.sip.message import SipResponse
from edge_media.sip.session_timer import SessionTimer
from edge_media.sip.transaction import (
    AckNotReceived,
    Resend2xx,
    TransactionId,
    TwoXxRetransmitter,
)

if TYPE_CHECKING:
    from edge_media.sip.call import SipCall

__all__ = ["SessionRefresh", "TwoXxRetransmission"]

TIMER_EXPIRED = "RECOVERY_ON_TIMER_EXPIRE"


class TwoXxRetransmission:
    """Our 2xx to an INVITE (or re-INVITE), re-sent until its ACK comes.

    RFC 6026 §7.1 leaves this to the TU, not the transaction: the INVITE server transaction
    ends once the 2xx is sent. Without an ACK within 64*T1 the call ends (§13.3.1.4: "the
    UAS MUST ... terminate the dialog").
    """

    def __init__(self, call: SipCall) -> None:
        self._call = call
        self._retransmitter: TwoXxRetransmitter | None = None
        self._txn: TransactionId | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, response: SipResponse, txn: TransactionId | None) -> None:
        """Re-send ``response`` on server transaction ``txn`` (a 2xx replaces the one before)."""
        self.stop()
        endpoint = self._call.endpoint
        self._retransmitter = TwoXxRetransmitter(response, endpoint.now(), endpoint.timers)
        self._txn = txn
        self._arm()

    def ack_received(self) -> None:
        if self._retransmitter is not None:
            self._retransmitter.ack_received()
            self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._retransmitter = None

    def _arm(self) -> None:
        retransmitter = self._retransmitter
        deadline = retransmitter.next_deadline() if retransmitter else None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        retransmitter = self._retransmitter
        if retransmitter is None:
            return
        call = self._call
        for action in retransmitter.on_timer(call.endpoint.now()):
            if isinstance(action, Resend2xx) and self._txn is not None:
                try:
                    call.endpoint.send_response(self._txn, action.response)
                except Exception as error:  # the transaction ended under us: stop resending
                    call.log.debug("2xx resend stopped: %s", error)
                    self._retransmitter = None
                    return
            elif isinstance(action, AckNotReceived):
                call.log.warning("no ACK for our 2xx within 64*T1: ending the call")
                self._retransmitter = None
                call._spawn(call.hangup(TIMER_EXPIRED))
                return
        self._arm()


class SessionRefresh:
    """The call's RFC 4028 session timer: refresh the session when we are the refresher, end
    the call when the session expires without a refresh (§10)."""

    def __init__(self, call: SipCall) -> None:
        self._call = call
        self.timer: SessionTimer | None = None
        self._handle: asyncio.TimerHandle | None = None

    def set(self, timer: SessionTimer | None) -> None:
        """Run ``timer`` from now on (None: no session timer), replacing the one before."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.timer = timer
        self._arm()

    def _arm(self) -> None:
        timer = self.timer
        deadline = timer.next_deadline() if timer is not None else None
        if deadline is None or self._call.is_ended:
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._handle = None
        timer = self.timer
        if timer is None:
            return
        call = self._call
        action = timer.on_deadline(call.endpoint.now())
        if action == "expire":
            call.log.info("session timer expired without a refresh (RFC 4028 §10): BYE")
            call._spawn(call.hangup(TIMER_EXPIRED))
            return
        if action == "refresh":
            call._spawn(self._refresh(timer))
        self._arm()

    async def _refresh(self, timer: SessionTimer) -> None:
        call = self._call
        offer = timer.offer()
        final = await call.reoffer(extra=offer.headers())
        if isinstance(final, SipResponse) and 200 <= final.status < 300:
            self.set(offer.on_2xx(final, call.endpoint.now()))
        elif isinstance(final, TransactionFailed) or (
            isinstance(final, SipResponse) and final.status in (408, 481)
        ):
            # RFC 4028 §10 with RFC 3261 §12.2.1.2: a refresh that finds no dialog ends it.
            call._spawn(call.hangup(TIMER_EXPIRED))
