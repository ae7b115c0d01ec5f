"""One SIP call leg: an INVITE dialog usage with its media, inbound (UAS) or outbound (UAC).

Why one class for both directions: once the dialog exists, the two sides behave the same
(BYE, re-INVITE and UPDATE for hold and refresh, INFO, REFER, session timers), and the bridge
(issue 5) must treat a leg the same whichever side dialled. The parts that differ are the
opening: `ring`/`answer`/`reject` for an INVITE we received, `run_outbound` for one we sent.

Applications hold a `SipCall` and await it: ``await call.answer()``, ``await call.ended()``,
``await call.hangup(cause)``; audio goes through ``call.media`` (an `RtpSession`). Everything
here runs on the event loop; the SIP decisions come from sans-I/O modules (dialog, sdp,
digest, transaction) and this class only sequences them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from edge_media.rtp.dtmf import DtmfDigit, DtmfTrigger
from edge_media.rtp.ports import PortsExhaustedError
from edge_media.rtp.session import MediaSink, RtpSession
from edge_media.sip.causes import (
    NORMAL_CLEARING,
    cause_for_status,
    reason_header,
    status_for_cause,
)
from edge_media.sip.dialog import Dialog, DialogError, DialogState
from edge_media.sip.digest import DigestClient, DigestError
from edge_media.sip.endpoint import ClientTransaction, TransactionFailed, new_branch
from edge_media.sip.errors import SipParseError
from edge_media.sip.info_dtmf import KEYS
from edge_media.sip.message import SipRequest, SipResponse, body_of_type, make_response
from edge_media.sip.refer import OutgoingRefer
from edge_media.sip.sdp import (
    Direction,
    NegotiatedMedia,
    NegotiationFailure,
    SdpError,
    SdpSession,
    parse_sdp,
)
from edge_media.sip.session_timer import (
    SessionIntervalTooSmall,
    SessionTimer,
    SessionTimerOffer,
    negotiate_as_uas,
    uac_offer,
)
from edge_media.sip.transaction import (
    AckNotReceived,
    Resend2xx,
    TransactionId,
    TwoXxRetransmitter,
    build_ack_for_2xx,
)
from edge_media.sip.transport import SipAddress

if TYPE_CHECKING:
    from edge_media.sip.ua import UserAgent

__all__ = ["CallEnd", "CallState", "SipCall"]

logger = logging.getLogger("agera.sip.call")

SDP = "application/sdp"
BYE_WAIT = 5.0  # seconds we wait for the answer to our BYE before forgetting the dialog
MAX_AUTH_ATTEMPTS = 2  # a second challenge after our credentials means they are wrong
REFRESHING = frozenset({"INVITE", "UPDATE", "REFER", "NOTIFY", "SUBSCRIBE"})  # carry Contact


def _allow_of(message: SipRequest | SipResponse) -> frozenset[str]:
    """The methods a peer said it allows (§20.5); empty when it did not say."""
    return frozenset(m.strip().upper() for m in message.headers.get_all("allow"))


class CallState(StrEnum):
    INCOMING = "incoming"  # INVITE received, nothing but 100 sent
    RINGING = "ringing"  # UAS: 18x sent; UAC: 18x received
    CALLING = "calling"  # UAC: INVITE sent
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How the call ended: a Q.850 cause name, the SIP status when one decided it, who ended it."""

    cause: str
    status: int | None
    by: str  # "local", "remote" or "error"
    detail: str = ""


class _CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[call {self.extra['call']}] {msg}", kwargs  # type: ignore[index]


class SipCall:
    """An INVITE dialog usage and its media. Created by `UserAgent`, never directly."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        direction: str,
        invite: SipRequest,
        local_tag: str,
        peer: SipAddress,
        kind: str,
    ) -> None:
        self.ua = ua
        self.endpoint = ua.endpoint
        self.call_uuid = uuid.uuid4()
        self.direction = direction
        self.invite = invite
        self.call_id = invite.call_id
        self.local_tag = local_tag
        self.peer = peer  # where in-dialog requests go when the target is not an IP literal
        self.kind = kind
        self.state = CallState.INCOMING if direction == "inbound" else CallState.CALLING
        self.dialog: Dialog | None = None
        self.media: RtpSession | None = None
        # Where inbound audio goes from the moment the RTP port opens: set it right after
        # `UserAgent.invite` to hear the very first packet after the answer (media.sink, set once
        # the answer is seen, misses what arrives in between).
        self.media_sink: MediaSink | None = None
        self.sdp: SdpSession | None = None
        self.end: CallEnd | None = None
        self.log = _CallLog(logger, {"call": self.call_id})
        self.invite_txn: TransactionId | None = None  # UAS: the INVITE server transaction
        self.invite_client: ClientTransaction | None = None  # UAC
        self.on_digit: Callable[[str, int], None] | None = None  # INFO digits (digit, ms)
        self.on_end: Callable[[SipCall], None] | None = None
        self.answered_at: float | None = None
        self.created_at = self.endpoint.now()
        self._answered = asyncio.Event()
        self._ringing = asyncio.Event()
        self._ended = asyncio.Event()
        self._retransmitter: TwoXxRetransmitter | None = None
        self._retransmit_txn: TransactionId | None = None
        self._retransmit_timer: asyncio.TimerHandle | None = None
        self._answer_in_ack = False  # we offered in a 2xx; the ACK carries the answer
        self._server_reinvite: TransactionId | None = None  # re-INVITE we have not answered
        self._client_reinvite = False  # our re-INVITE/UPDATE is outstanding (491 to theirs)
        self._acks: dict[str, SipRequest] = {}  # UAC: the ACK per 2xx To tag, for retransmits
        self._hold = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._digest = DigestClient()
        self.peer_allow = _allow_of(invite) if direction == "inbound" else frozenset()
        self.bye_task: asyncio.Task[Any] | None = None  # our BYE's transaction, for shutdown
        self.app: Any = None  # the application running this call (a REFER re-runs it)
        self.session_timer: SessionTimer | None = None
        self._session_timer_handle: asyncio.TimerHandle | None = None
        self._timer_offer: SessionTimerOffer | None = None  # UAC: what our INVITE asked for
        self.outgoing_refer: OutgoingRefer | None = None
        self.refer_done = asyncio.Event()
        self.refers_received = 0
        self.extension: Any = None  # the ExtensionAuth that authenticated this INVITE, if any

    # -- observation -------------------------------------------------------------------------

    @property
    def is_ended(self) -> bool:
        return self.state is CallState.ENDED

    @property
    def remote_user(self) -> str | None:
        """The caller's user part (inbound: From; outbound: To)."""
        who = self.invite.from_ if self.direction == "inbound" else self.invite.to
        return getattr(who.uri, "user", None)

    @property
    def request_user(self) -> str | None:
        """The Request-URI user of the INVITE: the number or service dialled."""
        return getattr(self.invite.uri, "user", None)

    async def wait_answered(self) -> bool:
        """True once answered; False if the call ended first."""
        answered = asyncio.ensure_future(self._answered.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({answered, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            ended.cancel()
        return self._answered.is_set()

    @property
    def ringing_seen(self) -> bool:
        """A provisional 180/183 came (outbound calls)."""
        return self._ringing.is_set()

    async def wait_ringing(self) -> bool:
        ringing = asyncio.ensure_future(self._ringing.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({ringing, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ringing.cancel()
            ended.cancel()
        return self._ringing.is_set()

    async def ended(self) -> CallEnd:
        await self._ended.wait()
        assert self.end is not None
        return self.end

    # -- UAS: answering an INVITE --------------------------------------------------------------

    def _headers_for_answer(self) -> list[tuple[str, str]]:
        return [
            ("Contact", self.endpoint.contact(None, self.kind)),
            ("Allow", ", ".join(self.ua.allowed_methods)),
            ("Supported", ", ".join(self.ua.supported)),
        ]

    def _respond(self, status: int, reason: str | None = None, **kwargs: Any) -> SipResponse:
        response = make_response(self.invite, status, reason, to_tag=self.local_tag, **kwargs)
        assert self.invite_txn is not None
        self.endpoint.send_response(self.invite_txn, response)
        return response

    def ring(self) -> None:
        """Send 180 Ringing (once); it creates the early dialog (§12.1.1)."""
        if self.state is not CallState.INCOMING:
            return
        self._ensure_uas_dialog()
        self._respond(180, extra_headers=self._headers_for_answer()[:1])
        self.state = CallState.RINGING

    def _ensure_uas_dialog(self) -> Dialog:
        if self.dialog is None:
            self.dialog = Dialog.as_uas(self.invite, self.local_tag, secrets.randbelow(1 << 16) + 1)
            self.ua.register_dialog(self)
        return self.dialog

    async def answer(self) -> bool:
        """Answer with 200 OK and start the media; False when the call ended meanwhile.

        An INVITE with an offer is answered (488 when nothing is acceptable); an INVITE
        without one gets our offer in the 200 and the answer is expected in the ACK (§13.2.1).
        """
        if self.state not in (CallState.INCOMING, CallState.RINGING):
            return self.state is CallState.ANSWERED
        try:
            media = await self._open_media()
        except PortsExhaustedError:
            self.reject(503, "No Media Ports Available", cause="SWITCH_CONGESTION")
            return False
        if self.is_ended:  # CANCEL while the port was being bound
            media.close()
            return False
        self.media = media
        assert self.sdp is not None
        offer = self._sdp_of(self.invite)
        if offer is False:
            self.reject(400, "Malformed SDP", cause="INTERWORKING")
            return False
        if offer is None:
            body = bytes(self.sdp.offer())
            self._answer_in_ack = True
            negotiated = None
        else:
            result = self.sdp.answer(offer)
            if isinstance(result, NegotiationFailure):
                warning = result.warning(self.ua.agent_host)
                self.log.info("no acceptable media: %s", result.detail)
                self.reject(488, extra=[("Warning", warning)], cause="INCOMPATIBLE_DESTINATION")
                return False
            body, negotiated = result.body, result.media
        timer = negotiate_as_uas(self.invite, self.ua.timer_policy, self.endpoint.now())
        if isinstance(timer, SessionIntervalTooSmall):
            self.reject(422, "Session Interval Too Small", extra=timer.headers)
            return False
        self._ensure_uas_dialog()
        headers = self._headers_for_answer() + list(timer.headers)
        response = self._respond(200, extra_headers=headers, body=body, content_type=SDP)
        self.set_session_timer(timer.timer)
        assert self.dialog is not None
        self.dialog.confirm()
        self.state = CallState.ANSWERED
        self.answered_at = self.endpoint.now()
        if negotiated is not None:
            self._apply(negotiated)
        self._start_retransmitter(response, self.invite_txn)
        self._answered.set()
        self.log.info("answered (%s)", self._media_summary())
        return True

    def reject(
        self,
        status: int,
        reason: str | None = None,
        *,
        cause: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Refuse an INVITE we have not answered; the call ends with ``cause``."""
        if self.state not in (CallState.INCOMING, CallState.RINGING):
            return
        headers = list(extra)
        if cause is not None:
            headers.append(reason_header(cause))
        self._respond(status, reason, extra_headers=headers)
        self._finish(cause or cause_for_status(status), status, "local", reason or "")

    async def _open_media(self) -> RtpSession:
        session = await RtpSession.open(
            self.ua.ports,
            self.ua.media_host,
            self.ua.pacer,
            playout_seconds=self.ua.playout_seconds,
        )
        if self.media_sink is not None:
            session.sink = self.media_sink
        self.sdp = SdpSession(self.ua.local_media(session.port))
        return session

    def _sdp_of(self, message: SipRequest | SipResponse) -> Any:
        """The SDP body parsed; None without one; False when it does not parse."""
        body = body_of_type(message, SDP)
        if not body:
            return None
        try:
            return parse_sdp(body)
        except SdpError as error:
            self.log.info("unparsable SDP: %s", error)
            return False

    def _apply(self, negotiated: NegotiatedMedia) -> None:
        if self.media is not None:
            self.media.apply(negotiated)

    def _media_summary(self) -> str:
        negotiated = self.media.negotiated if self.media else None
        if negotiated is None:
            return "media pending"
        return (
            f"{negotiated.codec_name} to {negotiated.remote_address}:{negotiated.remote_port}, "
            f"{negotiated.direction}, DTMF PT {negotiated.dtmf_payload_type}"
        )

    # -- 2xx retransmission (§13.3.1.4) --------------------------------------------------------

    def _start_retransmitter(self, response: SipResponse, txn: TransactionId | None) -> None:
        self._stop_retransmitter()
        self._retransmitter = TwoXxRetransmitter(
            response, self.endpoint.now(), self.endpoint.timers
        )
        self._retransmit_txn = txn
        self._arm_retransmitter()

    def _arm_retransmitter(self) -> None:
        retransmitter = self._retransmitter
        deadline = retransmitter.next_deadline() if retransmitter else None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._retransmit_timer = loop.call_at(deadline, self._on_retransmit_timer)

    def _on_retransmit_timer(self) -> None:
        retransmitter = self._retransmitter
        if retransmitter is None:
            return
        for action in retransmitter.on_timer(self.endpoint.now()):
            if isinstance(action, Resend2xx) and self._retransmit_txn is not None:
                try:
                    self.endpoint.send_response(self._retransmit_txn, action.response)
                except Exception as error:  # the transaction ended under us: stop resending
                    self.log.debug("2xx resend stopped: %s", error)
                    self._retransmitter = None
                    return
            elif isinstance(action, AckNotReceived):
                self.log.warning("no ACK for our 2xx within 64*T1: ending the call")
                self._retransmitter = None
                self._spawn(self.hangup("RECOVERY_ON_TIMER_EXPIRE"))
                return
        self._arm_retransmitter()

    def _stop_retransmitter(self) -> None:
        if self._retransmit_timer is not None:
            self._retransmit_timer.cancel()
            self._retransmit_timer = None
        self._retransmitter = None

    # -- events from the UA (server side) -------------------------------------------------------

    def on_cancel(self, to_tag: str) -> None:
        """CANCEL for our unanswered INVITE: 487 to it (§9.2); the layer already sent 200."""
        if self.state not in (CallState.INCOMING, CallState.RINGING):
            return
        response = make_response(self.invite, 487, to_tag=self.local_tag or to_tag)
        assert self.invite_txn is not None
        self.endpoint.send_response(self.invite_txn, response)
        self._finish("ORIGINATOR_CANCEL", 487, "remote", "caller cancelled")

    def on_ack(self, ack: SipRequest) -> None:
        """The ACK for our 2xx: stop retransmitting; it may carry the answer to our offer."""
        if self._retransmitter is not None:
            self._retransmitter.ack_received()
            self._stop_retransmitter()
        if not self._answer_in_ack:
            return
        self._answer_in_ack = False
        answer = self._sdp_of(ack)
        if not answer or self.sdp is None:
            self.log.info("ACK carried no usable answer to our offer: ending the call")
            self._spawn(self.hangup("INCOMPATIBLE_DESTINATION"))
            return
        result = self.sdp.process_answer(answer)
        if isinstance(result, NegotiationFailure):
            self.log.info("answer in ACK not acceptable: %s", result.detail)
            self._spawn(self.hangup("INCOMPATIBLE_DESTINATION"))
            return
        self._apply(result)
        self.log.info("media from ACK answer (%s)", self._media_summary())

    def on_request(self, txn: TransactionId, request: SipRequest) -> None:
        """An in-dialog request (§12.2.2); the UA found the dialog by Call-ID and tags."""
        dialog = self.dialog
        if dialog is None:
            self.reply(txn, request, 481)
            return
        try:
            dialog.receive_request(request)
        except DialogError as error:
            self.reply(txn, request, error.status, error.reason)
            return
        method = request.method
        if method == "BYE":
            self.reply(txn, request, 200)
            self._finish(NORMAL_CLEARING, None, "remote", "BYE received")
        elif method in ("INVITE", "UPDATE"):
            self._on_offer_request(txn, request)
        elif method == "INFO":
            self.ua.on_info(self, txn, request)
        elif method == "REFER":
            self.ua.on_refer(self, txn, request)
        elif method == "NOTIFY":
            self.ua.on_notify(self, txn, request)
        elif method == "OPTIONS":
            self.reply(txn, request, 200, extra=self.ua.capability_headers())
        else:
            self.reply(txn, request, 405, extra=[("Allow", ", ".join(self.ua.allowed_methods))])

    def reply(
        self,
        txn: TransactionId,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        *,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipResponse:
        """Answer an in-dialog request of this call (our To tag), on its server transaction."""
        response = make_response(
            request,
            status,
            reason,
            to_tag=self.local_tag,
            extra_headers=extra,
            body=body,
            content_type=content_type,
        )
        self.endpoint.send_response(txn, response)
        return response

    def _on_offer_request(self, txn: TransactionId, request: SipRequest) -> None:
        """re-INVITE or UPDATE: hold/resume, a new address, or a session refresh (§14.2)."""
        is_invite = request.method == "INVITE"
        if self._client_reinvite:
            # §14.2: "a UAS that receives a second INVITE before it sends the final response to
            # a first INVITE with a lower CSeq ... MUST return a 491"; likewise while ours is out.
            self.reply(txn, request, 491)
            return
        if is_invite and self._server_reinvite is not None:
            self.reply(txn, request, 500, extra=[("Retry-After", "1")])
            return
        assert self.dialog is not None
        if is_invite or request.contacts:
            self.dialog.refresh_target(request)
        if self.sdp is None or self.media is None:
            self.reply(txn, request, 488 if request.body else 200)
            return
        offer = self._sdp_of(request)
        timer = negotiate_as_uas(request, self.ua.timer_policy, self.endpoint.now())
        if isinstance(timer, SessionIntervalTooSmall):
            self.reply(txn, request, 422, "Session Interval Too Small", extra=timer.headers)
            return
        self.set_session_timer(timer.timer)
        headers = self._headers_for_answer() + list(timer.headers)
        if offer is False:
            self.reply(txn, request, 400, "Malformed SDP")
            return
        if offer is None:
            if not is_invite:  # an UPDATE without SDP is a plain session refresh
                self.reply(txn, request, 200, extra=headers)
                return
            direction = self.media.negotiated.direction if self.media.negotiated else None
            body = bytes(self.sdp.offer(direction or Direction.SENDRECV))
            self._answer_in_ack = True
            response = self.reply(txn, request, 200, extra=headers, body=body, content_type=SDP)
            self._start_retransmitter(response, txn)
            return
        result = self.sdp.answer(offer)
        if isinstance(result, NegotiationFailure):
            # RFC 3264 §8: a rejected re-offer leaves the session as it was.
            warning = ("Warning", result.warning(self.ua.agent_host))
            self.reply(txn, request, 488, extra=[warning])
            return
        response = self.reply(txn, request, 200, extra=headers, body=result.body, content_type=SDP)
        was_on_hold = self._hold
        self._hold = result.media.peer_on_hold
        self._apply(result.media)
        if was_on_hold != self._hold:
            self.log.info("%s (%s)", "held" if self._hold else "resumed", self._media_summary())
        if is_invite:
            self._start_retransmitter(response, txn)

    # -- UAC: sending the INVITE ---------------------------------------------------------------

    async def run_outbound(self, credentials: tuple[str, str] | None) -> None:
        """Send the INVITE and follow it to an answer or a failure (§13.2)."""
        try:
            self.media = await self._open_media()
        except PortsExhaustedError:
            self._finish("SWITCH_CONGESTION", None, "error", "no RTP ports available")
            return
        assert self.sdp is not None
        self.invite = self.invite.with_body(bytes(self.sdp.offer()))
        self._timer_offer = uac_offer(self.ua.timer_policy)
        if self._timer_offer is not None:
            self.invite = self._with_headers(self.invite, self._timer_offer.headers())
        attempts = 0
        while not self.is_ended:
            client = self.invite_client = self.endpoint.send_request(
                self.invite, self.peer, self.kind
            )
            self.ua.register_client_invite(self, client)
            final = await self._follow_invite(client)
            if final is None or self.is_ended:
                return
            status = final.status
            if status == 422 and self._timer_offer is not None:
                retry_offer = self._timer_offer.after_422(final)
                if retry_offer is not None:
                    self._timer_offer = retry_offer
                    self.invite = self._next_invite(self.invite, retry_offer.headers())
                    continue
            if status in (401, 407) and credentials and attempts < MAX_AUTH_ATTEMPTS - 1:
                attempts += 1
                retry = self._authenticated_invite(final, credentials)
                if retry is not None:
                    self.invite = retry
                    continue
            self._finish(cause_for_status(status), status, "remote", final.reason)
            return

    async def _follow_invite(self, client: ClientTransaction) -> SipResponse | None:
        """Provisional responses until a final one. 2xx is handled by `on_2xx`; None then."""
        while True:
            item = await client.next()
            if isinstance(item, TransactionFailed):
                if not self._answered.is_set():
                    cause = cause_for_status(item.status)
                    self._finish(cause, item.status, "error", item.reason)
                return None
            status = item.status
            if status < 200:
                if status > 100 and item.to_tag is not None and self.dialog is None:
                    self.dialog = Dialog.as_uac(self.invite, item)
                    self.ua.register_dialog(self)
                if status in (180, 183) and self.state is CallState.CALLING:
                    self.state = CallState.RINGING
                    self._ringing.set()
                    self.log.info("%d %s", status, item.reason)
                continue
            if status < 300:
                return None  # the UA passes every 2xx to on_2xx, which ACKs it
            return item

    def _authenticated_invite(
        self, challenge: SipResponse, credentials: tuple[str, str]
    ) -> SipRequest | None:
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        try:
            username, password = credentials
            value = self._digest.respond(
                challenge.headers.get_lines(header.lower()),
                "INVITE",
                str(self.invite.uri),
                username,
                password,
                cnonce=secrets.token_hex(8),
            )
        except (DigestError, SipParseError) as error:
            self.log.info("cannot answer the %d challenge: %s", challenge.status, error)
            return None
        invite = self.invite.with_headers(self.invite.headers.without(answer.lower()))
        return self._next_invite(invite, [(answer, value)])

    def _next_invite(self, invite: SipRequest, headers: Iterable[tuple[str, str]]) -> SipRequest:
        """The INVITE re-sent after a challenge or a 422: new branch, next CSeq (§8.1.3.5)."""
        fields = invite.headers.with_replaced("Via", self.endpoint.via(self.kind))
        fields = fields.with_replaced("CSeq", f"{invite.cseq.number + 1} INVITE")
        return self._with_headers(invite.with_headers(fields), headers)

    @staticmethod
    def _with_headers(request: SipRequest, headers: Iterable[tuple[str, str]]) -> SipRequest:
        fields = request.headers
        for name, value in headers:
            fields = fields.with_replaced(name, value)
        return request.with_headers(fields)

    def on_2xx(self, response: SipResponse) -> None:
        """Every 2xx to our INVITE, retransmissions included: ACK it (§13.2.2.4)."""
        tag = f"{response.to_tag}/{response.cseq.number}"
        cached = self._acks.get(tag)
        if cached is not None:
            self._send_in_dialog(cached, stateless=True)
            return
        if response.cseq.number != self.invite.cseq.number and self.dialog is not None:
            # The 2xx of a re-INVITE of ours: its ACK is an in-dialog request (§14.1).
            ack = self.dialog.create_request(
                "ACK", via=self.endpoint.via(self.kind), cseq=response.cseq.number
            )
            self._acks[tag] = ack
            self._send_in_dialog(ack, stateless=True)
            return
        first = not self._answered.is_set() and not self.is_ended
        if self.dialog is None:
            self.dialog = Dialog.as_uac(self.invite, response)
            self.ua.register_dialog(self)
        elif first:
            self.dialog.confirm_with(response)
        ack = build_ack_for_2xx(self.invite, response, branch=new_branch())
        ack = ack.with_headers(ack.headers.with_replaced("Via", self.endpoint.via(self.kind)))
        self._acks[tag] = ack
        self._send_in_dialog(ack, stateless=True)
        if not first:
            # A 2xx after we gave up (CANCEL crossed it) or from a second fork: ACK, then BYE.
            self._spawn(self._bye_for(response))
            return
        answer = self._sdp_of(response)
        negotiated = self.sdp.process_answer(answer) if answer and self.sdp else None
        self.state = CallState.ANSWERED
        self.answered_at = self.endpoint.now()
        self._answered.set()
        if not isinstance(negotiated, NegotiatedMedia):
            detail = negotiated.detail if negotiated is not None else "no SDP answer"
            self.log.info("answered without acceptable media (%s): hanging up", detail)
            self._spawn(self.hangup("INCOMPATIBLE_DESTINATION"))
            return
        self._apply(negotiated)
        if self._timer_offer is not None:
            self.set_session_timer(self._timer_offer.on_2xx(response, self.endpoint.now()))
        self.peer_allow = _allow_of(response)
        self.log.info("answered by peer (%s)", self._media_summary())

    async def _bye_for(self, response: SipResponse) -> None:
        dialog = Dialog.as_uac(self.invite, response)
        request = dialog.create_request(
            "BYE", via=self.endpoint.via(self.kind), extra_headers=[reason_header(NORMAL_CLEARING)]
        )
        await self._send_and_wait(request, dialog)

    # -- requests inside the dialog (UAC side) -----------------------------------------------

    async def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> SipResponse | TransactionFailed | None:
        """Send an in-dialog request and wait for its final response (None: no dialog)."""
        dialog = self.dialog
        if dialog is None or self.is_ended:
            return None
        contact = self.endpoint.contact(None, self.kind) if method in REFRESHING else None
        request = dialog.create_request(
            method,
            via=self.endpoint.via(self.kind),
            contact=contact,
            body=body,
            content_type=content_type,
            extra_headers=extra,
        )
        client = self._send_in_dialog(request)
        assert client is not None
        return await client.final()

    async def reoffer(
        self, direction: Direction | None = None, *, extra: Iterable[tuple[str, str]] = ()
    ) -> SipResponse | TransactionFailed | None:
        """A new offer by re-INVITE, or UPDATE when the peer allows it (hold, resume, refresh).

        ``direction`` None keeps the current one (a session refresh).
        """
        if self.sdp is None or self.media is None or self._client_reinvite:
            return None
        if direction is None:
            negotiated = self.media.negotiated
            direction = negotiated.direction if negotiated is not None else Direction.SENDRECV
        method = "UPDATE" if "UPDATE" in self.peer_allow else "INVITE"
        self._client_reinvite = True
        try:
            body = bytes(self.sdp.offer(direction))
            final = await self.request(method, body=body, content_type=SDP, extra=extra)
        finally:
            self._client_reinvite = False
        if isinstance(final, SipResponse) and 200 <= final.status < 300:
            answer = self._sdp_of(final)
            result = self.sdp.process_answer(answer) if answer else None
            if isinstance(result, NegotiatedMedia):
                self._apply(result)
        return final

    async def hold(self) -> bool:
        """Put the peer on hold (we stop sending; RFC 3264 §8.4)."""
        final = await self.reoffer(Direction.SENDONLY)
        return isinstance(final, SipResponse) and 200 <= final.status < 300

    async def resume(self) -> bool:
        final = await self.reoffer(Direction.SENDRECV)
        return isinstance(final, SipResponse) and 200 <= final.status < 300

    # -- RFC 4028 session timers -----------------------------------------------------------------

    def set_session_timer(self, timer: SessionTimer | None) -> None:
        if self._session_timer_handle is not None:
            self._session_timer_handle.cancel()
            self._session_timer_handle = None
        self.session_timer = timer
        self._arm_session_timer()

    def _arm_session_timer(self) -> None:
        timer = self.session_timer
        deadline = timer.next_deadline() if timer is not None else None
        if deadline is None or self.is_ended:
            return
        loop = asyncio.get_running_loop()
        self._session_timer_handle = loop.call_at(deadline, self._on_session_timer)

    def _on_session_timer(self) -> None:
        self._session_timer_handle = None
        timer = self.session_timer
        if timer is None:
            return
        action = timer.on_deadline(self.endpoint.now())
        if action == "expire":
            self.log.info("session timer expired without a refresh (RFC 4028 §10): BYE")
            self._spawn(self.hangup("RECOVERY_ON_TIMER_EXPIRE"))
            return
        if action == "refresh":
            self._spawn(self._refresh_session(timer))
        self._arm_session_timer()

    async def _refresh_session(self, timer: SessionTimer) -> None:
        offer = timer.offer()
        final = await self.reoffer(extra=offer.headers())
        if isinstance(final, SipResponse) and 200 <= final.status < 300:
            self.set_session_timer(offer.on_2xx(final, self.endpoint.now()))
        elif isinstance(final, TransactionFailed) or (
            isinstance(final, SipResponse) and final.status in (408, 481)
        ):
            # RFC 4028 §10 with RFC 3261 §12.2.1.2: a refresh that finds no dialog ends it.
            self._spawn(self.hangup("RECOVERY_ON_TIMER_EXPIRE"))

    # -- INFO digits -------------------------------------------------------------------------------

    def deliver_info_digit(self, digit: str, duration_ms: int | None) -> None:
        """A digit from INFO (RFC 6086 / dtmf-relay): same destination as RFC 4733 digits."""
        duration = duration_ms or 100
        if self.on_digit is not None:
            self.on_digit(digit, duration)
        elif self.media is not None:
            event = KEYS.index(digit) if digit in KEYS else 0
            press = DtmfDigit(digit, event, 0, duration * 8, 10, DtmfTrigger.END)
            self.media.sink.on_digits((press,))

    # -- ending ----------------------------------------------------------------------------------

    async def hangup(self, cause: str = NORMAL_CLEARING) -> None:
        """End the call however far it got: BYE, CANCEL, or a final response to the INVITE.

        Returns once the request is sent; the BYE's answer is awaited in ``bye_task``.
        """
        if self.is_ended:
            return
        if self.direction == "inbound" and self.state in (CallState.INCOMING, CallState.RINGING):
            self.reject(status_for_cause(cause), cause=cause)
            return
        if self.state is CallState.ANSWERED and self.dialog is not None:
            dialog = self.dialog
            request = dialog.create_request(
                "BYE", via=self.endpoint.via(self.kind), extra_headers=[reason_header(cause)]
            )
            self._finish(cause, None, "local", "")
            self.bye_task = self._spawn(self._send_and_wait(request, dialog))
            return
        # UAC before the answer: CANCEL (§9.1); the INVITE then ends with 487.
        client = self.invite_client
        if client is not None and not client.terminated:
            try:
                self.endpoint.cancel(client, (reason_header(cause),))
            except Exception as error:  # already final: the 2xx path sends BYE
                self.log.debug("CANCEL not sent: %s", error)
        self._finish(cause, None, "local", "")

    async def _send_and_wait(self, request: SipRequest, dialog: Dialog) -> SipResponse | None:
        client = self._send_in_dialog(request, dialog=dialog)
        if client is None:
            return None
        try:
            async with asyncio.timeout(BYE_WAIT + 32):
                final = await client.final()
        except TimeoutError:
            return None
        return final if isinstance(final, SipResponse) else None

    def next_hop(self, dialog: Dialog | None = None) -> tuple[SipAddress, str]:
        """Where in-dialog requests go: the next hop if it is an IP literal, else the peer.

        Without DNS (RFC 3263) a host name cannot be used; and a peer behind NAT puts a private
        address in its Contact, so with no route set an inbound call answers to where the
        INVITE came from (the same thing symmetric RTP does for media).
        """
        dialog = dialog or self.dialog
        if dialog is None:
            return self.peer, self.kind
        if self.direction == "inbound" and not dialog.route_set:
            return self.peer, self.kind
        return self.ua.resolve(dialog.next_hop(), self.peer, self.kind)

    def _send_in_dialog(
        self, request: SipRequest, *, dialog: Dialog | None = None, stateless: bool = False
    ) -> ClientTransaction | None:
        addr, kind = self.next_hop(dialog)
        if stateless:
            self.endpoint.send_stateless(request, addr, kind)
            return None
        return self.endpoint.send_request(request, addr, kind)

    def _finish(self, cause: str, status: int | None, by: str, detail: str) -> None:
        if self.is_ended:
            return
        self.state = CallState.ENDED
        self.end = CallEnd(cause, status, by, detail)
        if self.dialog is not None and self.dialog.state is not DialogState.TERMINATED:
            self.dialog.terminate()
        if self.media is not None:
            self.media.close()
        self.set_session_timer(None)
        self.refer_done.set()
        self._stop_retransmitter()
        self.log.info("ended: %s (%s%s)", cause, by, f", SIP {status}" if status else "")
        self._ended.set()
        self.ua.call_ended(self)
        if self.on_end is not None:
            try:
                self.on_end(self)
            except Exception:
                self.log.exception("on_end callback failed")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
