"""The native Vapi driver: a `BotDriver` over `VapiProtocol` and `WsConnection`.

Why a REST step before the socket: Vapi has no fixed socket to dial. ``POST /call`` (with the
account's private API key) creates a call for an assistant and answers with a one-off
``websocketCallUrl``; we open it at once, because a created call nobody joins is dropped after
a short while (third parties report ~20 s; unverified). Both steps share the bot connect
timeout, so a slow REST answer leaves less time for the handshake, never more in total.

Secrets: the API key goes only into the REST request's header. The ``websocketCallUrl`` is a
capability (the docs show no other credential on the socket), so neither it nor its path is
logged, raised or kept in stats; logs name the Vapi call id instead, which Vapi's console shows.

Media: binary frames of raw μ-law 8 kHz both ways, so caller RTP payloads go out one frame per
packet and Vapi's frames (any size) go to the playout queue untouched. Vapi documents no playout
acknowledgement and no "clear": barge-in is inferred from its client messages (see
vapi_protocol.py, an assumption) and flushes our playout queue. Once `stop` begins, anything Vapi
still sends is dropped: its late audio must never reach the caller or the next bot's playout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from edge_media.drivers.base import (
    BotConnector,
    BotDriver,
    BotEnd,
    BotUnavailable,
    CallerLeg,
    CallInfo,
    ConnectStep,
    PlayedMark,
)
from edge_media.drivers.context import DriverContext
from edge_media.drivers.inbound_budget import FRAMES_PER_SECOND, JSON_OVERHEAD_BYTES, BotLimits
from edge_media.drivers.provider_connect import Deadline, http_failure, read_account, socket_step
from edge_media.drivers.vapi_protocol import (
    BargeIn,
    CreatedCall,
    Ignored,
    VapiProtocol,
    VapiResponseError,
    create_call_body,
    error_message,
    parse_create_call_response,
)
from edge_media.drivers.ws_client import (
    CLOSE_TIMEOUT,
    WsClosed,
    WsConnection,
    connection_figures,
    display_url,
    peer_end,
)
from edge_media.drivers.ws_connect import connect_websocket
from shared.models import Account
from shared.validation import MediaKind, parse_media_target

__all__ = ["VapiDriver", "connect_vapi", "create_vapi_call", "vapi_connector"]

logger = logging.getLogger("agera.drivers.vapi")

NORMAL_CLOSURE = 1000  # we hang up: end-call, then close 1000
# A second of assistant audio on the wire, the unit of the inbound budget (PROTOCOL.md §6):
# 8000 bytes of binary μ-law, and room for one JSON control message (transcripts, status) per
# 20 ms beside it.
REALTIME_WIRE_BYTES = 8000 + FRAMES_PER_SECOND * JSON_OVERHEAD_BYTES


class VapiDriver:
    """One call's Vapi assistant. Built and started by `connect_vapi`."""

    def __init__(
        self,
        call_id: str,
        info: CallInfo,
        leg: CallerLeg,
        *,
        protocol: VapiProtocol | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.call_id = call_id
        self.protocol = protocol if protocol is not None else VapiProtocol()
        self._leg = leg
        self._call = info.call_uuid
        self._close_timeout = close_timeout
        self._conn: WsConnection | None = None
        self._stop_reason: str | None = None
        self._errors_logged = False
        self._frames_out = 0
        self._bytes_out = 0
        self._frames_in = 0
        self._bytes_in = 0
        self._control_in = 0
        self._barge_ins = 0
        self._ignored = 0
        self._malformed = 0
        self._dtmf_not_sent = 0
        self._late_in = 0  # frames Vapi sent after stop began (dropped)
        self._handler_errors = 0

    @property
    def connection(self) -> WsConnection | None:
        """The WebSocket once open (None before the handshake completed)."""
        return self._conn

    # -- BotDriver ---------------------------------------------------------------------------

    def send_audio(self, ulaw: bytes) -> None:
        """One binary frame per caller RTP payload (160 bytes = 20 ms), no envelope."""
        conn = self._conn
        if conn is None or self._stop_reason is not None:
            return
        if conn.send_bytes(ulaw):
            self._frames_out += 1
            self._bytes_out += len(ulaw)
        elif conn.take_drop_warning():
            logger.warning(
                "[call %s] Vapi call %s is not reading: caller audio is being dropped",
                self._call,
                self.call_id,
            )

    def send_dtmf(self, digit: str) -> None:
        """Nothing is sent: Vapi documents no way to pass caller key presses over the WebSocket
        transport (its transport-message API covers only its SIP and Twilio transports), and an
        undocumented message could be taken as an error. The digit is only counted."""
        if self._stop_reason is None:
            self._dtmf_not_sent += 1

    def marks_played(self, marks: list[PlayedMark]) -> None:
        """Nothing to do: we never queue marks for Vapi, which has no playout acknowledgement."""

    async def wait_closed(self) -> BotEnd:
        conn = self._conn
        assert conn is not None, "wait_closed before the driver was connected"
        closed = await conn.closed
        return self._bot_end(closed)

    async def stop(self, reason: str) -> None:
        """``end-call``, then close 1000; the closing handshake is bounded by the driver's close
        timeout, after which the connection is aborted. Stopping twice keeps the first reason."""
        conn = self._conn
        if conn is None:
            return
        if self._stop_reason is None:
            self._stop_reason = reason
            if conn.is_open:  # past the write cap: a lagging Vapi still learns the call ended
                conn.send_text(self.protocol.end_call(), always=True)
        await conn.close(NORMAL_CLOSURE, reason, self._close_timeout)

    def stats(self) -> dict[str, Any]:
        conn = self._conn
        return {
            "frames_out": self._frames_out,
            "bytes_out": self._bytes_out,
            "frames_in": self._frames_in,
            "bytes_in": self._bytes_in,
            "control_in": self._control_in,
            "barge_ins": self._barge_ins,
            "ignored": self._ignored,
            "malformed": self._malformed,
            "dtmf_not_sent": self._dtmf_not_sent,
            "late_in": self._late_in,
            "end_call_sent": self.protocol.ended,
            **connection_figures(conn),
        }

    def provider_ids(self) -> dict[str, str]:
        return {"vapi_call_id": self.call_id}

    # -- WebSocket callbacks -----------------------------------------------------------------
    # They never raise: the WebSocket layer would log a failing handler with the socket's URL.

    def on_open(self, conn: WsConnection) -> None:
        self._conn = conn

    def on_bytes(self, data: bytes) -> None:
        """Assistant audio, μ-law 8 kHz, any length: straight to the playout queue."""
        if self._stop_reason is not None:
            self._late_in += 1
            return
        if not data:
            return
        self._frames_in += 1
        self._bytes_in += len(data)
        try:
            self._leg.play(data)
        except Exception:
            self._handler_failed("playing Vapi audio")

    def on_text(self, text: str) -> None:
        if self._stop_reason is not None:
            self._late_in += 1
            return
        self._control_in += 1
        try:
            event = self.protocol.receive_text(text)
            if type(event) is BargeIn:
                self._barge_ins += 1
                self._leg.clear()  # no marks are ever queued for Vapi: nothing to echo
            elif type(event) is Ignored:
                self._note_ignored(event)
        except Exception:
            self._handler_failed("handling a Vapi message")

    # -- internals ---------------------------------------------------------------------------

    def _note_ignored(self, event: Ignored) -> None:
        self._ignored += 1
        if event.malformed:
            self._malformed += 1
            if event.first:
                logger.warning(
                    "[call %s] ignored a Vapi message (%s): %s; later ones of this kind are only "
                    "counted",
                    self._call,
                    event.kind,
                    event.detail,
                )
        elif event.first and event.kind != "unused":
            logger.info(
                "[call %s] ignored a Vapi message of unknown %s; later ones are only counted",
                self._call,
                event.detail,
            )

    def _handler_failed(self, what: str) -> None:
        self._handler_errors += 1
        if not self._errors_logged:
            self._errors_logged = True
            logger.exception("[call %s] failed %s (Vapi call %s)", self._call, what, self.call_id)

    def _bot_end(self, closed: WsClosed) -> BotEnd:
        return peer_end(closed, self._stop_reason, "Vapi closed the call")


# -- connecting ------------------------------------------------------------------------------


async def create_vapi_call(
    http: httpx.AsyncClient, api_base: str, api_key: str, body: dict[str, Any]
) -> CreatedCall:
    """``POST {api_base}/call``; `BotUnavailable` (REST, DNS, TLS, CONNECT or TIMEOUT) when it
    fails. The caller bounds it in time. Errors name the HTTP status and Vapi's message, never
    the key (removed from Vapi's message too, should it ever be echoed)."""
    url = api_base.rstrip("/") + "/call"
    try:
        response = await http.post(
            url,
            content=json.dumps(body, separators=(",", ":")).encode(),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
    except httpx.HTTPError as exc:
        step, why = http_failure(exc)
        raise BotUnavailable(f"Vapi create-call at {display_url(url)}: {why}", step=step) from None
    status = response.status_code
    if status not in (200, 201):
        said = error_message(response.content, redact=(api_key,))
        detail = f": {said}" if said else ""
        if status in (401, 403):
            why = f"HTTP {status}, the API key was refused{detail}"
        elif status == 404:
            why = f"HTTP 404, not found (is the assistant id right?){detail}"
        else:
            why = f"HTTP {status}{detail}"
        raise BotUnavailable(f"Vapi create-call refused: {why}", step=ConnectStep.REST)
    try:
        return parse_create_call_response(response.content, secure=url.startswith("https:"))
    except VapiResponseError as exc:
        raise BotUnavailable(str(exc), step=ConnectStep.REST) from None


def _credentials(target: str, info: CallInfo, account: Account | None) -> tuple[str, str]:
    """The API key and assistant id for a ``vapi[&<assistant id>]`` target, or `BotUnavailable`
    (CREDENTIALS) naming each missing account setting."""
    try:
        parsed = parse_media_target(target)
    except ValueError as error:
        raise BotUnavailable(f"not a media target: {error}", step=ConnectStep.TARGET) from None
    if parsed.kind is not MediaKind.VAPI:
        raise BotUnavailable(f"not a Vapi target: {parsed.kind}", step=ConnectStep.TARGET)
    settings = account.vapi if account is not None else None
    api_key = settings.api_key if settings is not None else None
    assistant_id = parsed.agent_id or (settings.assistant_id if settings is not None else None)
    missing = []
    if not api_key:
        missing.append("vapi.api_key")
    if not assistant_id:
        missing.append("vapi.assistant_id")
    if missing:
        where = f"account {info.account_id}" + (" (not found)" if account is None else "")
        raise BotUnavailable(
            f"{where} has no {' and no '.join(missing)}: set it to connect calls to Vapi",
            step=ConnectStep.CREDENTIALS,
        )
    assert api_key is not None and assistant_id is not None
    return api_key, assistant_id


async def connect_vapi(
    target: str,
    info: CallInfo,
    leg: CallerLeg,
    seconds: float,
    *,
    context: DriverContext,
    close_timeout: float = CLOSE_TIMEOUT,
) -> VapiDriver:
    """A `BotConnector` for ``vapi[&<assistant id>]``: credentials, ``POST /call``, the socket.

    All of it within ``seconds``. Raises `BotUnavailable` whose step says what failed.
    """
    deadline = Deadline(seconds, "Vapi")
    account = await read_account(context, info.account_id, deadline)
    api_key, assistant_id = _credentials(target, info, account)
    http = context.http
    if http is None:
        raise BotUnavailable("this node has no HTTP client for Vapi", step=ConnectStep.REST)

    body = create_call_body(assistant_id, info)
    try:
        async with asyncio.timeout(deadline.left("create call")):
            created = await create_vapi_call(http, context.settings.vapi_api_base, api_key, body)
    except TimeoutError:
        raise BotUnavailable(
            f"Vapi create-call did not answer within {seconds:g} s", step=ConnectStep.TIMEOUT
        ) from None

    driver = VapiDriver(created.call_id, info, leg, close_timeout=close_timeout)
    remaining = deadline.left(f"socket of call {created.call_id}")
    limits = BotLimits.from_settings(context.settings)
    try:
        await connect_websocket(
            created.websocket_url,
            seconds=remaining,
            on_open=driver.on_open,
            on_text=driver.on_text,
            on_bytes=driver.on_bytes,
            ssl_context=context.ssl_context,
            max_message_bytes=limits.max_message_bytes,
            budget=limits.budget(REALTIME_WIRE_BYTES),
            # Never the socket URL in a log: its path is the call's capability.
            log_name=f"[call {info.call_uuid}] Vapi call {created.call_id}",
        )
    except BotUnavailable as exc:
        raise BotUnavailable(_redact(str(exc), created), step=socket_step(exc)) from None
    logger.info(
        "[call %s] Vapi call %s connected (assistant %s)",
        info.call_uuid,
        created.call_id,
        assistant_id,
    )
    return driver


def _redact(message: str, created: CreatedCall) -> str:
    """The WebSocket layer's reason with the socket URL (and its path) replaced by the call id."""
    shown = display_url(created.websocket_url)
    text = message.replace(created.websocket_url, "<socket>").replace(shown, "<socket>")
    path = shown.split("://", 1)[-1].partition("/")[2]
    if path:
        text = text.replace("/" + path, "")
    text = text.replace("bot at <socket>", "the socket").replace("<socket>", "the socket")
    return f"Vapi call {created.call_id}: {text}"


def vapi_connector(context: DriverContext) -> BotConnector:
    """The connector for ``vapi`` and ``vapi&<assistant id>`` targets (see `connect_vapi`).

    No address check, unlike ws(s) targets: the socket URL comes from the operator's configured
    Vapi API over TLS, not from a user, and the node's loopback fake in tests needs none."""

    async def connect(target: str, info: CallInfo, leg: CallerLeg, seconds: float) -> BotDriver:
        return await connect_vapi(target, info, leg, seconds, context=context)

    return connect
