"""The opening of an inbound call: an INVITE we received, until we answer or refuse it (§13.3).

Why apart from `call`: once the dialog exists both directions behave the same, and that shared
part is `SipCall`; ringing, answering (offer or answer in the 200, RFC 3264 §5 and §6),
refusing and a CANCEL (§9.2) only ever happen to an INVITE we received. `InboundInvite` works
on its call's state directly: it is that call's opening, not a separate object with its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edge_media.rtp.ports import PortsExhaustedError
from edge_media.sip.call_state import SDP, CallState
from edge_media.sip.causes import cause_for_status, reason_header
from edge_media.sip.dialog import Dialog
from edge_media.sip.message import SipResponse, make_response
from edge_media.sip.sdp_offer_answer import NegotiationFailure
from edge_media.sip.session_timer import SessionIntervalTooSmall, negotiate_as_uas

if TYPE_CHECKING:
    from edge_media.sip.call import SipCall

__all__ = ["InboundInvite"]


class InboundInvite:
    """`SipCall.ring`, `answer`, `reject` and `on_cancel`, for the INVITE that opened the call."""

    def __init__(self, call: SipCall) -> None:
        self._call = call

    def _respond(self, status: int, reason: str | None = None, **kwargs: Any) -> SipResponse:
        call = self._call
        response = make_response(call.invite, status, reason, to_tag=call.local_tag, **kwargs)
        assert call.invite_txn is not None
        call.endpoint.send_response(call.invite_txn, response)
        return response

    def ring(self) -> None:
        call = self._call
        if call.state is not CallState.INCOMING:
            return
        self._ensure_dialog()
        self._respond(180, extra_headers=call._headers_for_answer()[:1])
        call.state = CallState.RINGING

    def _ensure_dialog(self) -> Dialog:
        call = self._call
        if call.dialog is None:
            call.dialog = Dialog.as_uas(call.invite, call.local_tag, secrets.randbelow(1 << 16) + 1)
            call.ua.register_dialog(call)
        return call.dialog

    async def answer(self) -> bool:
        call = self._call
        if call.state not in (CallState.INCOMING, CallState.RINGING):
            return call.state is CallState.ANSWERED
        try:
            media = await call._open_media()
        except PortsExhaustedError:
            self.reject(503, "No Media Ports Available", cause="SWITCH_CONGESTION")
            return False
        if call.is_ended:  # CANCEL while the port was being bound
            media.close()
            return False
        call.media = media
        assert call.sdp is not None
        offer = call._sdp_of(call.invite)
        if offer is False:
            self.reject(400, "Malformed SDP", cause="INTERWORKING")
            return False
        if offer is None:
            body = bytes(call.sdp.offer())
            call._answer_in_ack = True
            negotiated = None
        else:
            result = call.sdp.answer(offer)
            if isinstance(result, NegotiationFailure):
                warning = result.warning(call.ua.agent_host)
                call.log.info("no acceptable media: %s", result.detail)
                self.reject(488, extra=[("Warning", warning)], cause="INCOMPATIBLE_DESTINATION")
                return False
            body, negotiated = result.body, result.media
        timer = negotiate_as_uas(call.invite, call.ua.timer_policy, call.endpoint.now())
        if isinstance(timer, SessionIntervalTooSmall):
            self.reject(422, "Session Interval Too Small", extra=timer.headers)
            return False
        self._ensure_dialog()
        headers = call._headers_for_answer() + list(timer.headers)
        response = self._respond(200, extra_headers=headers, body=body, content_type=SDP)
        call.set_session_timer(timer.timer)
        assert call.dialog is not None
        call.dialog.confirm()
        call.state = CallState.ANSWERED
        call.answered_at = call.endpoint.now()
        if negotiated is not None:
            call._apply(negotiated)
        call._retransmission.start(response, call.invite_txn)
        call._answered.set()
        call.log.info("answered (%s)", call._media_summary())
        return True

    def reject(
        self,
        status: int,
        reason: str | None = None,
        *,
        cause: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        call = self._call
        if call.state not in (CallState.INCOMING, CallState.RINGING):
            return
        headers = list(extra)
        if cause is not None:
            headers.append(reason_header(cause))
        self._respond(status, reason, extra_headers=headers)
        call._finish(cause or cause_for_status(status), status, "local", reason or "")

    def on_cancel(self, to_tag: str) -> None:
        call = self._call
        if call.state not in (CallState.INCOMING, CallState.RINGING):
            return
        response = make_response(call.invite, 487, to_tag=call.local_tag or to_tag)
        assert call.invite_txn is not None
        call.endpoint.send_response(call.invite_txn, response)
        call._finish("ORIGINATOR_CANCEL", 487, "remote", "caller cancelled")
