"""The user agent core (the TU of RFC 3261 §8): what the node does with each SIP request.

It sits on `SipEndpoint` and receives the transaction layer's events. Out-of-dialog requests are
checked in §8.2 order (`validate_request`), then: OPTIONS is answered with our capabilities,
REGISTER goes to the registrar, an INVITE passes the source check (a trusted source, else an
extension's digest: both in `ua_extensions`, which reports failures to the `SourceGuard`) and
becomes a `SipCall` whose fate the router decides (an application such as echo, or a
rejection; a trunk source only reaches its own accounts' numbers), and anything else that
needs a dialog gets 481. In-dialog requests go to their call by Call-ID and local
tag (§12.2.2).

Calls run their applications as tasks; the UA guarantees that every call it accepted ends,
whatever the application does (an exception, or returning without hanging up).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edge_media.rtp.pacer import Pacer
from edge_media.rtp.ports import PortAllocator
from edge_media.sip.bindings import Aor, Binding
from edge_media.sip.call import SipCall
from edge_media.sip.call_state import SDP, CallState
from edge_media.sip.causes import NORMAL_CLEARING, reason_header
from edge_media.sip.endpoint import ClientTransaction, SipEndpoint, host_for_uri, new_tag
from edge_media.sip.errors import SipParseError
from edge_media.sip.extensions import ExtensionDirectory, StaticDirectory
from edge_media.sip.info_dtmf import InfoDtmfError, dtmf_of_info
from edge_media.sip.media_timeout import MediaTimeoutSweep
from edge_media.sip.message import SipRequest, make_response
from edge_media.sip.message_policy import validate_request
from edge_media.sip.negative_cache import UnknownUsers
from edge_media.sip.registrar import ExtensionAuth, Registrar
from edge_media.sip.sdp_offer_answer import LocalMedia
from edge_media.sip.session_timer import SessionTimerPolicy
from edge_media.sip.source_guard import SourceGuard
from edge_media.sip.transaction import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayAck,
    StrayResponse,
    TransactionId,
    TransactionTerminated,
    TransactionTimeout,
)
from edge_media.sip.transfer import follow_refer, on_refer_notify
from edge_media.sip.transport import SipAddress
from edge_media.sip.ua_extensions import ExtensionIntake
from edge_media.sip.uri import SipUri

__all__ = ["CallApp", "Reject", "Router", "UserAgent"]

logger = logging.getLogger("agera.sip.ua")

AGENT = "AgeraVoiceGateway"
DIALOG_LINGER = 32.0  # seconds an ended call still absorbs late in-dialog messages (64*T1)
DEFAULT_SIP_PORT = 5060
DRAIN_RETRY_AFTER = "30"


@dataclass(frozen=True, slots=True)
class Reject:
    """A routing decision not to take the call: the final status, its reason and the cause;
    ``extra`` header fields go on the response (a Warning saying why, for the carrier)."""

    status: int
    reason: str
    cause: str
    extra: tuple[tuple[str, str], ...] = ()


CallApp = Callable[[SipCall], Awaitable[None]]
Router = Callable[[SipCall], Awaitable["CallApp | Reject"]]


class UserAgent:
    """The TU of one node. ``router`` decides each inbound call; ``source_allowed`` is the ACL."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        *,
        ports: PortAllocator,
        pacer: Pacer,
        router: Router,
        source_allowed: Callable[[str], bool],
        media_host: str,
        advertised_media: str | None = None,
        playout_seconds: float = 60.0,
        rng: random.Random | None = None,
        timer_policy: SessionTimerPolicy | None = None,
        registrar: Registrar | None = None,
        directory: ExtensionDirectory | None = None,
        rtp_timeout: float = 0.0,
        guard: SourceGuard | None = None,
        unknown_users: UnknownUsers | None = None,
        admission: Callable[[], tuple[str, int] | None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        # None while a new call may start, else (why not, Retry-After seconds): the node's
        # capacity (edge_media/node_capacity.py), asked for every new INVITE.
        self.admission = admission
        self.ports = ports
        self.pacer = pacer
        self.media_host = media_host
        self.advertised_media = advertised_media or media_host
        self.playout_seconds = playout_seconds
        self._router = router
        self._source_allowed = source_allowed
        self._rng = rng or random.SystemRandom()
        self.allowed_methods: tuple[str, ...] = (
            "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "REFER", "NOTIFY",
        )  # fmt: skip
        self.supported: tuple[str, ...] = ("timer", "norefersub")
        self.timer_policy = timer_policy or SessionTimerPolicy()
        self.accepting = True
        self.rtp_timeout = rtp_timeout
        self._media_sweep = MediaTimeoutSweep(
            rtp_timeout,
            calls=lambda: self._active,
            now=endpoint.now,
            hang_up=lambda call: self._spawn(call.hangup("MEDIA_TIMEOUT")),
        )
        self.registrar = registrar
        self.directory = directory
        if registrar is not None:
            self.allowed_methods += ("REGISTER",)
        self._calls: dict[tuple[str, str], SipCall] = {}  # (Call-ID, our tag)
        self._by_server_txn: dict[TransactionId, SipCall] = {}
        self._by_client_txn: dict[TransactionId, SipCall] = {}
        self._merged: dict[tuple[str, str | None, int], TransactionId] = {}
        self._active: set[SipCall] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats = {"calls_in": 0, "calls_out": 0, "rejected": 0, "app_errors": 0}
        self.guard = guard
        self._extensions = (
            ExtensionIntake(
                registrar,
                directory if directory is not None else StaticDirectory(),
                send_response=endpoint.send_response,
                reply=self._reply,
                accept=self._accept_invite,
                clock=endpoint.now,
                guard=guard,
                unknown_users=unknown_users,
                stats=self.stats,
            )
            if registrar is not None
            else None
        )
        endpoint.attach(self)

    # -- helpers the calls use ----------------------------------------------------------------

    @property
    def agent_host(self) -> str:
        host, port = self.endpoint.advertised
        return f"{host_for_uri(host)}:{port}"

    def local_media(self, port: int) -> LocalMedia:
        return LocalMedia(
            address=self.advertised_media,
            rtp_port=port,
            session_id=self._rng.getrandbits(62),
            username="agera",
        )

    def capability_headers(self) -> list[tuple[str, str]]:
        """What OPTIONS answers with (§11.2): methods, body types, extensions."""
        headers = [
            ("Allow", ", ".join(self.allowed_methods)),
            ("Accept", SDP),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
        ]
        if self.supported:
            headers.append(("Supported", ", ".join(self.supported)))
        return headers

    def resolve(self, uri: Any, fallback: SipAddress, kind: str) -> tuple[SipAddress, str]:
        """An IP-literal SIP URI to (address, transport); anything else goes to ``fallback``."""
        if not isinstance(uri, SipUri):
            return fallback, kind
        host = uri.host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return fallback, kind
        transport = uri.params.get("transport")
        kind = transport.lower() if isinstance(transport, str) else kind
        return (host, uri.port or DEFAULT_SIP_PORT), kind

    def register_dialog(self, call: SipCall) -> None:
        self._calls[(call.call_id, call.local_tag)] = call

    def register_client_invite(self, call: SipCall, client: ClientTransaction) -> None:
        self._by_client_txn[client.id] = call

    def _track(self, call: SipCall) -> None:
        self._active.add(call)
        self._idle.clear()

    def call_ended(self, call: SipCall) -> None:
        self._active.discard(call)
        if not self._active:
            self._idle.set()
        loop = asyncio.get_running_loop()
        loop.call_later(DIALOG_LINGER, self._forget, call)

    def _forget(self, call: SipCall) -> None:
        key = (call.call_id, call.local_tag)
        if self._calls.get(key) is call:
            del self._calls[key]

    @property
    def active_calls(self) -> int:
        return len(self._active)

    async def wait_idle(self, limit: float) -> bool:
        """Wait until no call is live; False when ``limit`` seconds passed first."""
        try:
            async with asyncio.timeout(limit):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- transaction events --------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, AckReceived | StrayAck):
            ack = event.ack
            call = self._call_for(ack.call_id, ack.to_tag)
            if call is not None:
                call.on_ack(ack)
        elif isinstance(event, CancelReceived):
            call = self._by_server_txn.get(event.txn_id)
            if call is not None:
                call.on_cancel(event.to_tag)
        elif isinstance(event, ResponseReceived | StrayResponse):
            self._on_response(event)
        elif isinstance(event, TransactionTerminated):
            self._by_server_txn.pop(event.txn_id, None)
            self._by_client_txn.pop(event.txn_id, None)
        elif isinstance(event, TransactionTimeout) and event.timer == "H":
            logger.info("no ACK for a final response (transaction %s)", event.txn_id)

    def _call_for(self, call_id: str, local_tag: str | None) -> SipCall | None:
        if local_tag is None:
            return None
        return self._calls.get((call_id, local_tag))

    def _on_response(self, event: ResponseReceived | StrayResponse) -> None:
        response = event.response
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        call = None
        if isinstance(event, ResponseReceived):
            call = self._by_client_txn.get(event.txn_id)
        if call is None:
            call = self._call_for(response.call_id, response.from_tag)
        if call is not None:
            call.on_2xx(response)

    # -- requests --------------------------------------------------------------------------------

    def _reply(
        self,
        txn: TransactionId,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        tag = request.to_tag or new_tag()
        response = make_response(request, status, reason, to_tag=tag, extra_headers=extra)
        self.endpoint.send_response(txn, response)

    def _on_request(self, event: RequestReceived) -> None:
        request = event.request
        if request.to_tag is not None:
            call = self._call_for(request.call_id, request.to_tag)
            if call is None or call.dialog is None or call.dialog.remote.tag != request.from_tag:
                self._reply(event.txn_id, request, 481, "Call/Transaction Does Not Exist")
                return
            call.on_request(event.txn_id, request)
            return
        rejection = validate_request(
            request,
            allowed_methods=self.allowed_methods,
            supported=self.supported,
            accepted_content_types=(SDP,),
            answer_content_type=SDP if request.method in ("INVITE", "OPTIONS") else None,
        )
        if rejection is not None:
            self._reply(
                event.txn_id, request, rejection.status, rejection.reason, rejection.headers
            )
            return
        method = request.method
        if method == "INVITE":
            self._on_invite(event)
        elif method == "OPTIONS":
            self._reply(event.txn_id, request, 200, extra=self.capability_headers())
        elif method == "REGISTER" and self._extensions is not None:
            self._spawn(self._extensions.on_register(event))
        else:
            # BYE, INFO, UPDATE, REFER, NOTIFY outside a dialog (§12.2.2).
            self._reply(event.txn_id, request, 481, "Call/Transaction Does Not Exist")

    def _on_invite(self, event: RequestReceived) -> None:
        request = event.request
        # §8.2.2.2 merged requests: the same INVITE arriving by two paths gets 482 on the second.
        merge_key = (request.call_id, request.from_tag, request.cseq.number)
        first = self._merged.setdefault(merge_key, event.txn_id)
        if first != event.txn_id:
            self._reply(event.txn_id, request, 482, "Loop Detected")
            return
        if request.max_forwards == 0:
            self._reply(event.txn_id, request, 483, "Too Many Hops")
            return
        missing = _missing_dialog_field(request)
        if missing is not None:  # refused before routing: a dialog cannot be built without it
            self.stats["rejected"] += 1
            self._reply(event.txn_id, request, 400, missing)
            return
        if not self.accepting:
            self.stats["rejected"] += 1
            self._reply(
                event.txn_id,
                request,
                503,
                "Node Draining",
                [("Retry-After", DRAIN_RETRY_AFTER), reason_header("SYSTEM_SHUTDOWN")],
            )
            return
        full = self.admission() if self.admission is not None else None
        if full is not None:
            self.stats["rejected"] += 1
            reason, retry_after = full
            logger.info("INVITE %s refused: %s", request.call_id, reason)
            self._reply(
                event.txn_id,
                request,
                503,
                "Service Unavailable",
                [
                    ("Retry-After", str(retry_after)),
                    reason_header("SWITCH_CONGESTION"),
                    ("Warning", f'399 {self.agent_host} "{reason}"'),
                ],
            )
            return
        source = event.addr[0]
        if not self._source_allowed(source):
            if self._extensions is not None and self.directory is not None:
                self._spawn(self._extensions.authorize_invite(event))
                return
            self.stats["rejected"] += 1
            logger.info("INVITE %s from %s refused: source not allowed", request.call_id, source)
            self._reply(event.txn_id, request, 403, "Forbidden (source address not allowed)")
            return
        self._accept_invite(event, merge_key)

    def _accept_invite(
        self,
        event: RequestReceived,
        merge_key: tuple[str, str | None, int],
        extension: ExtensionAuth | None = None,
    ) -> None:
        request = event.request
        call = SipCall(
            self,
            direction="inbound",
            invite=request,
            local_tag=new_tag(),
            peer=event.addr,
            kind=event.transport.lower(),
        )
        call.invite_txn = event.txn_id
        call.extension = extension
        self._by_server_txn[event.txn_id] = call
        self.register_dialog(call)
        self._track(call)
        self.stats["calls_in"] += 1
        # §17.2.1: 100 Trying at once, so the caller stops retransmitting while we route.
        self.endpoint.send_response(event.txn_id, make_response(request, 100))
        call.log.info(
            "INVITE %s from %s:%d (%s), From %s",
            request.uri,
            event.addr[0],
            event.addr[1],
            event.transport,
            request.from_.uri,
        )
        self._spawn(self._run_inbound(call, merge_key))

    async def _run_inbound(self, call: SipCall, merge_key: tuple[str, str | None, int]) -> None:
        try:
            decision = await self._router(call)
            if isinstance(decision, Reject):
                self.stats["rejected"] += 1
                call.reject(
                    decision.status, decision.reason, cause=decision.cause, extra=decision.extra
                )
                return
            if not call.is_ended:
                call.app = decision
                await decision(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats["app_errors"] += 1
            call.log.exception("call application failed")
            if call.state in (CallState.INCOMING, CallState.RINGING):
                call.reject(500, "Server Internal Error", cause="NORMAL_TEMPORARY_FAILURE")
        finally:
            if not call.is_ended:
                await call.hangup(NORMAL_CLEARING)
            asyncio.get_running_loop().call_later(DIALOG_LINGER, self._merged.pop, merge_key, None)

    # -- extensions (REGISTER and authenticated INVITEs: `ua_extensions`) ---------------------

    def contacts_for(self, account_id: str, extension: str) -> list[Binding]:
        """Live registrations of an extension, best first (for calls to it)."""
        if self.registrar is None:
            return []
        return self.registrar.store.contacts_for(Aor(account_id, extension), time.time())

    def call_binding(self, binding: Binding, *, from_user: str, **options: Any) -> SipCall:
        """Call a registered contact: Request-URI its Contact, sent where it registered from."""
        target = binding.target()
        return self.invite(
            str(target.uri), addr=target.address, kind=target.transport.lower(),
            from_user=from_user, **options,
        )  # fmt: skip

    # -- outbound --------------------------------------------------------------------------------

    def invite(
        self,
        target: str,
        *,
        addr: SipAddress,
        kind: str = "udp",
        from_user: str,
        from_display: str | None = None,
        to: str | None = None,
        credentials: tuple[str, str] | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> SipCall:
        """Start an outbound call to ``target`` (a SIP URI) through ``addr``; returns at once.

        Follow it with ``await call.wait_answered()``; end it with ``await call.hangup()``.
        """
        host, _ = self.endpoint.advertised
        local_tag = new_tag()
        display = ""
        if from_display:
            escaped = from_display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        from_ = f"{display}<sip:{from_user}@{host_for_uri(host)}>;tag={local_tag}"
        call_id = self.endpoint.new_call_id()
        headers = [
            ("Allow", ", ".join(self.allowed_methods)),
            *((("Supported", ", ".join(self.supported)),) if self.supported else ()),
            *extra_headers,
        ]
        request = SipRequest.build(
            "INVITE",
            target,
            from_=from_,
            to=to or f"<{target}>",
            call_id=call_id,
            cseq=1,
            via=self.endpoint.via(kind),
            contact=self.endpoint.contact(from_user, kind),
            extra_headers=headers,
            body=b"v=0\r\n",
            content_type=SDP,
        )
        call = SipCall(
            self, direction="outbound", invite=request, local_tag=local_tag, peer=addr, kind=kind
        )
        self.register_dialog(call)
        self._track(call)
        self.stats["calls_out"] += 1
        call.log.info("INVITE %s via %s:%d (%s)", target, addr[0], addr[1], kind)
        self._spawn(self._run_outbound(call, credentials))
        return call

    async def _run_outbound(self, call: SipCall, credentials: tuple[str, str] | None) -> None:
        try:
            await call.run_outbound(credentials)
        except Exception:
            call.log.exception("outbound call failed")
            await call.hangup("NORMAL_TEMPORARY_FAILURE")

    # -- in-dialog methods the calls delegate ------------------------------------------------------

    def on_info(self, call: SipCall, txn: TransactionId, request: SipRequest) -> None:
        """INFO: DTMF (application/dtmf-relay, application/dtmf); bodiless INFO is a ping."""
        try:
            dtmf = dtmf_of_info(request)
        except InfoDtmfError as error:
            call.reply(txn, request, error.status, error.reason, extra=error.headers)
            return
        call.reply(txn, request, 200)
        if dtmf is not None:
            call.log.info("INFO digit %s", dtmf.digit)
            call.deliver_info_digit(dtmf.digit, dtmf.duration_ms)

    def on_refer(self, call: SipCall, txn: TransactionId, request: SipRequest) -> None:
        self._spawn(follow_refer(call, txn, request))

    def on_notify(self, call: SipCall, txn: TransactionId, request: SipRequest) -> None:
        on_refer_notify(call, txn, request)

    def run_app(self, call: SipCall, app: CallApp) -> None:
        """Run ``app`` on an outbound call (a transfer target); the call ends with it."""
        call.app = app

        async def run() -> None:
            try:
                await app(call)
            except Exception:
                self.stats["app_errors"] += 1
                call.log.exception("call application failed")
            finally:
                if not call.is_ended:
                    await call.hangup(NORMAL_CLEARING)

        self._spawn(run())

    # -- dead-call detection ------------------------------------------------------------------------

    def start_media_sweep(self) -> None:
        """Hang up calls whose peer stopped sending RTP (`media_timeout`); one timer for all."""
        self._media_sweep.start()

    # -- lifecycle ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def hangup_all(self, cause: str, settle: float = 2.0) -> None:
        """End every live call (node shutdown); wait up to ``settle`` s for the BYEs' answers."""
        calls = list(self._active)
        for call in calls:
            await call.hangup(cause)
        pending = [call.bye_task for call in calls if call.bye_task and not call.bye_task.done()]
        if pending:
            await asyncio.wait(pending, timeout=settle)

    async def close(self) -> None:
        self._media_sweep.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)


def _missing_dialog_field(request: SipRequest) -> str | None:
    """What an INVITE lacks to set up a dialog (RFC 3261 §12.1.1: the remote target is its
    Contact, the remote tag its From tag), as a 400 reason phrase; None when nothing is missing.

    The parser accepts such INVITEs (RFC 2543 peers sent them; RFC 4475 §3.4.3), so the check is
    here, before routing, rather than in the dialog, where it would surface as a 500.
    """
    if request.from_tag is None:
        return "Missing From tag"
    try:
        contacts = request.contacts
    except (SipParseError, ValueError):
        return "Malformed Contact"
    if contacts == "*" or not contacts:
        return "Missing Contact"
    return None
