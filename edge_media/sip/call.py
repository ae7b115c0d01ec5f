"""One SIP call leg: an INVITE dialog usage with its media, inbound (UAS) or outbound (UAC).

Why one class for both directions: once the dialog exists, the two sides behave the same
(BYE, re-INVITE and UPDATE for hold and refresh, INFO, REFER, session timers), and the bridge
(edge_media/bridge/) must treat a leg the same whichever side dialled. The parts that differ
are the opening: `ring`/`answer`/`reject` for an INVITE we received (`call_inbound`),
`run_outbound` for one we sent (`call_outbound`); the timers are in `call_timers`. `SipCall`
keeps the methods and delegates to those.

Applications hold a `SipCall` and await it: ``await call.answer()``, ``await call.ended()``,
``await call.hangup(cause)``; audio goes through ``call.media`` (an `RtpSession`). Everything
here runs on the event loop; the SIP decisions come from sans-I/O modules (dialog, sdp,
digest, transaction) and this class only sequences them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from edge_media.rtp.dtmf import DtmfDigit, DtmfTrigger
from edge_media.rtp.session import MediaSink, RtpSession
from edge_media.sip.call_inbound import InboundInvite
from edge_media.sip.call_outbound import OutboundInvite
from edge_media.sip.call_state import SDP, CallEnd, CallState, allow_of
from edge_media.sip.call_timers import SessionRefresh, TwoXxRetransmission
from edge_media.sip.causes import NORMAL_CLEARING, reason_header, status_for_cause
from edge_media.sip.dialog import Dialog, DialogError, DialogState
from edge_media.sip.endpoint import ClientTransaction, TransactionFailed
from edge_media.sip.info_dtmf import KEYS
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_bodies import body_of_type
from edge_media.sip.refer_transferor import OutgoingRefer
from edge_media.sip.rtp_params import rtp_params
from edge_media.sip.sdp_model import Direction, SdpError
from edge_media.sip.sdp_offer_answer import NegotiatedMedia, NegotiationFailure, SdpSession
from edge_media.sip.sdp_parse import parse_sdp
from edge_media.sip.session_timer import SessionIntervalTooSmall, SessionTimer, negotiate_as_uas
from edge_media.sip.transaction import TransactionId
from edge_media.sip.transport import SipAddress

if TYPE_CHECKING:
    from edge_media.sip.ua import UserAgent

__all__ = ["SipCall"]

logger = logging.getLogger("agera.sip.call")

BYE_WAIT = 5.0  # seconds we wait for the answer to our BYE before forgetting the dialog
REFRESHING = frozenset({"INVITE", "UPDATE", "REFER", "NOTIFY", "SUBSCRIBE"})  # carry Contact


class _CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # The call's name may hold "%" (a Call-ID may: RFC 3261 word); it is part of the format
        # string here, so it is escaped, or every line of that call would fail to format.
        name = str(self.extra["call"]).replace("%", "%%")  # type: ignore[index]
        return f"[call {name}] {msg}", kwargs


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
        self.negotiated: NegotiatedMedia | None = None  # the last offer/answer's result
        # Where inbound audio goes from the moment the RTP port opens: set it right after
        # `UserAgent.invite` to hear the very first packet after the answer (`media.connect`
        # once the answer is seen misses what arrives in between).
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
        self._retransmission = TwoXxRetransmission(self)
        self._answer_in_ack = False  # we offered in a 2xx; the ACK carries the answer
        self._server_reinvite: TransactionId | None = None  # re-INVITE we have not answered
        self._client_reinvite = False  # our re-INVITE/UPDATE is outstanding (491 to theirs)
        self._acks: dict[str, SipRequest] = {}  # UAC: the ACK per 2xx To tag, for retransmits
        self._hold = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.peer_allow = allow_of(invite) if direction == "inbound" else frozenset()
        self.bye_task: asyncio.Task[Any] | None = None  # our BYE's transaction, for shutdown
        self.app: Any = None  # the application running this call (a REFER re-runs it)
        self._session_refresh = SessionRefresh(self)
        self._inbound = InboundInvite(self)  # the opening, for an INVITE we received
        self._outbound = OutboundInvite(self)  # the opening, for the INVITE we send
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

    def ring(self) -> None:
        """Send 180 Ringing (once); it creates the early dialog (§12.1.1)."""
        self._inbound.ring()

    async def answer(self) -> bool:
        """Answer with 200 OK and start the media; False when the call ended meanwhile.

        An INVITE with an offer is answered (488 when nothing is acceptable); an INVITE
        without one gets our offer in the 200 and the answer is expected in the ACK (§13.2.1).
        """
        return await self._inbound.answer()

    def reject(
        self,
        status: int,
        reason: str | None = None,
        *,
        cause: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Refuse an INVITE we have not answered; the call ends with ``cause``."""
        self._inbound.reject(status, reason, cause=cause, extra=extra)

    async def _open_media(self) -> RtpSession:
        session = await RtpSession.open(
            self.ua.ports,
            self.ua.media_host,
            self.ua.pacer,
            playout_seconds=self.ua.playout_seconds,
        )
        if self.media_sink is not None:
            session.connect(session.playout, self.media_sink)
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
        self.negotiated = negotiated
        if self.media is not None:
            self.media.apply(rtp_params(negotiated))

    def _media_summary(self) -> str:
        negotiated = self.negotiated
        if negotiated is None:
            return "media pending"
        return (
            f"{negotiated.codec_name} to {negotiated.remote_address}:{negotiated.remote_port}, "
            f"{negotiated.direction}, DTMF PT {negotiated.dtmf_payload_type}"
        )

    # -- events from the UA (server side) -------------------------------------------------------

    def on_cancel(self, to_tag: str) -> None:
        """CANCEL for our unanswered INVITE: 487 to it (§9.2); the layer already sent 200."""
        self._inbound.on_cancel(to_tag)

    def on_ack(self, ack: SipRequest) -> None:
        """The ACK for our 2xx: stop retransmitting; it may carry the answer to our offer."""
        self._retransmission.ack_received()
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
            direction = self.negotiated.direction if self.negotiated else None
            body = bytes(self.sdp.offer(direction or Direction.SENDRECV))
            self._answer_in_ack = True
            response = self.reply(txn, request, 200, extra=headers, body=body, content_type=SDP)
            self._retransmission.start(response, txn)
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
            self._retransmission.start(response, txn)

    # -- UAC: sending the INVITE ---------------------------------------------------------------

    async def run_outbound(self, credentials: tuple[str, str] | None) -> None:
        """Send the INVITE and follow it to an answer or a failure (§13.2)."""
        await self._outbound.run(credentials)

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
            self._send_ack(tag, ack)
            return
        self._outbound.on_2xx(response, tag)

    def _send_ack(self, tag: str, ack: SipRequest) -> None:
        """Send the ACK for a 2xx and keep it for that 2xx's retransmissions."""
        self._acks[tag] = ack
        self._send_in_dialog(ack, stateless=True)

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
            negotiated = self.negotiated
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

    @property
    def session_timer(self) -> SessionTimer | None:
        return self._session_refresh.timer

    def set_session_timer(self, timer: SessionTimer | None) -> None:
        self._session_refresh.set(timer)

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
        self._retransmission.stop()
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
