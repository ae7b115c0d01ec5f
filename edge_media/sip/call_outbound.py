"""The opening of an outbound call: our INVITE, from sending it to an answer or a failure (§13.2).

Why apart from `call`: once the dialog exists both directions behave the same, and that shared
part is `SipCall`; answering digest challenges (§22.2, at most one retry: a second challenge
means the credentials are wrong), retrying after 422 with a larger Session-Expires (RFC 4028
§7.4), following provisional responses to the early dialog, and taking the first 2xx as the
answer only ever happen to an INVITE we sent. `OutboundInvite` works on its call's state
directly: it is that call's opening, not a separate object with its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge_media.rtp.ports import PortsExhaustedError
from edge_media.sip.call_state import CallState, allow_of
from edge_media.sip.causes import NORMAL_CLEARING, cause_for_status, reason_header
from edge_media.sip.dialog import Dialog
from edge_media.sip.digest import DigestError
from edge_media.sip.digest_client import DigestClient
from edge_media.sip.endpoint import ClientTransaction, TransactionFailed, new_branch
from edge_media.sip.errors import SipParseError
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.sdp_offer_answer import NegotiatedMedia
from edge_media.sip.session_timer import SessionTimerOffer, uac_offer
from edge_media.sip.transaction import build_ack_for_2xx

if TYPE_CHECKING:
    from edge_media.sip.call import SipCall

__all__ = ["OutboundInvite"]

MAX_AUTH_ATTEMPTS = 2  # a second challenge after our credentials means they are wrong


def _with_headers(request: SipRequest, headers: Iterable[tuple[str, str]]) -> SipRequest:
    """``request`` with each header field set to the given value (replacing any there)."""
    fields = request.headers
    for name, value in headers:
        fields = fields.with_replaced(name, value)
    return request.with_headers(fields)


class OutboundInvite:
    """`SipCall.run_outbound`, and the 2xx responses to the INVITE that opened the call."""

    def __init__(self, call: SipCall) -> None:
        self._call = call
        self._digest = DigestClient()
        self.timer_offer: SessionTimerOffer | None = None  # what our INVITE asked for

    async def run(self, credentials: tuple[str, str] | None) -> None:
        call = self._call
        try:
            call.media = await call._open_media()
        except PortsExhaustedError:
            call._finish("SWITCH_CONGESTION", None, "error", "no RTP ports available")
            return
        assert call.sdp is not None
        call.invite = call.invite.with_body(bytes(call.sdp.offer()))
        self.timer_offer = uac_offer(call.ua.timer_policy)
        if self.timer_offer is not None:
            call.invite = _with_headers(call.invite, self.timer_offer.headers())
        attempts = 0
        while not call.is_ended:
            client = call.invite_client = call.endpoint.send_request(
                call.invite, call.peer, call.kind
            )
            call.ua.register_client_invite(call, client)
            final = await self._follow(client)
            if final is None or call.is_ended:
                return
            status = final.status
            if status == 422 and self.timer_offer is not None:
                retry_offer = self.timer_offer.after_422(final)
                if retry_offer is not None:
                    self.timer_offer = retry_offer
                    call.invite = self._next_invite(call.invite, retry_offer.headers())
                    continue
            if status in (401, 407) and credentials and attempts < MAX_AUTH_ATTEMPTS - 1:
                attempts += 1
                retry = self._authenticated_invite(final, credentials)
                if retry is not None:
                    call.invite = retry
                    continue
            call._finish(cause_for_status(status), status, "remote", final.reason)
            return

    async def _follow(self, client: ClientTransaction) -> SipResponse | None:
        """Provisional responses until a final one. 2xx is handled by `on_2xx`; None then."""
        call = self._call
        while True:
            item = await client.next()
            if isinstance(item, TransactionFailed):
                if not call._answered.is_set():
                    cause = cause_for_status(item.status)
                    call._finish(cause, item.status, "error", item.reason)
                return None
            status = item.status
            if status < 200:
                if status > 100 and item.to_tag is not None and call.dialog is None:
                    call.dialog = Dialog.as_uac(call.invite, item)
                    call.ua.register_dialog(call)
                if status in (180, 183) and call.state is CallState.CALLING:
                    call.state = CallState.RINGING
                    call._ringing.set()
                    call.log.info("%d %s", status, item.reason)
                continue
            if status < 300:
                return None  # the UA passes every 2xx to on_2xx, which ACKs it
            return item

    def _authenticated_invite(
        self, challenge: SipResponse, credentials: tuple[str, str]
    ) -> SipRequest | None:
        call = self._call
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        try:
            username, password = credentials
            value = self._digest.respond(
                challenge.headers.get_lines(header.lower()),
                "INVITE",
                str(call.invite.uri),
                username,
                password,
                cnonce=secrets.token_hex(8),
            )
        except (DigestError, SipParseError) as error:
            call.log.info("cannot answer the %d challenge: %s", challenge.status, error)
            return None
        invite = call.invite.with_headers(call.invite.headers.without(answer.lower()))
        return self._next_invite(invite, [(answer, value)])

    def _next_invite(self, invite: SipRequest, headers: Iterable[tuple[str, str]]) -> SipRequest:
        """The INVITE re-sent after a challenge or a 422: new branch, next CSeq (§8.1.3.5)."""
        fields = invite.headers.with_replaced("Via", self._call.endpoint.via(self._call.kind))
        fields = fields.with_replaced("CSeq", f"{invite.cseq.number + 1} INVITE")
        return _with_headers(invite.with_headers(fields), headers)

    def on_2xx(self, response: SipResponse, tag: str) -> None:
        """A 2xx to the INVITE that opened the call, not seen before: ACK it (§13.2.2.4).

        The first one answers the call; a later one (a second fork, or one that crossed our
        CANCEL) gets its ACK and then a BYE. ``tag`` is the key its ACK is kept under.
        """
        call = self._call
        first = not call._answered.is_set() and not call.is_ended
        if call.dialog is None:
            call.dialog = Dialog.as_uac(call.invite, response)
            call.ua.register_dialog(call)
        elif first:
            call.dialog.confirm_with(response)
        ack = build_ack_for_2xx(call.invite, response, branch=new_branch())
        ack = ack.with_headers(ack.headers.with_replaced("Via", call.endpoint.via(call.kind)))
        call._send_ack(tag, ack)
        if not first:
            # A 2xx after we gave up (CANCEL crossed it) or from a second fork: ACK, then BYE.
            call._spawn(self._bye_for(response))
            return
        answer = call._sdp_of(response)
        negotiated = call.sdp.process_answer(answer) if answer and call.sdp else None
        call.state = CallState.ANSWERED
        call.answered_at = call.endpoint.now()
        call._answered.set()
        if not isinstance(negotiated, NegotiatedMedia):
            detail = negotiated.detail if negotiated is not None else "no SDP answer"
            call.log.info("answered without acceptable media (%s): hanging up", detail)
            call._spawn(call.hangup("INCOMPATIBLE_DESTINATION"))
            return
        call._apply(negotiated)
        if self.timer_offer is not None:
            call.set_session_timer(self.timer_offer.on_2xx(response, call.endpoint.now()))
        call.peer_allow = allow_of(response)
        call.log.info("answered by peer (%s)", call._media_summary())

    async def _bye_for(self, response: SipResponse) -> None:
        call = self._call
        dialog = Dialog.as_uac(call.invite, response)
        request = dialog.create_request(
            "BYE", via=call.endpoint.via(call.kind), extra_headers=[reason_header(NORMAL_CLEARING)]
        )
        await call._send_and_wait(request, dialog)
