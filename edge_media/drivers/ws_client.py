"""A WebSocket client for bot connections: websockets' sans-I/O `ClientProtocol` under a plain
`asyncio.Protocol`.

Why not the websockets asyncio client: its ``send`` is a coroutine, so every 20 ms frame of
caller audio would need an await or a task. Here `WsConnection.send_text` is a plain call that
frames the message and hands it to the transport at once, so it can run on the RTP read path
(drivers/base.py: the media path never awaits). Incoming messages reach plain callbacks from
``data_received``, with no reader task per connection.

Why sending may drop: a bot that stops reading would otherwise make us buffer caller audio
without end. Above `WRITE_BUFFER_LIMIT` bytes waiting in the transport, `send_text` refuses and
counts the drop, like an RTP socket dropping on a full queue. The bot sees gaps in
``sequenceNumber``, which is what Twilio's counters are for.

The layer also keeps what the core cannot (docs/architecture.md, "Sans-I/O cores"): the
closing-handshake timer (`close_expected`) and keepalive pings whose pong round trip is kept for
the call record; ws_connect.py opens connections within the connect and handshake deadline.

Why receiving may drop too: every call shares this loop, so what one peer sends is paid for by
every call's pacing. A connection given an `InboundBudget` checks each whole message against it
before anything else (no UTF-8 decode, no handler); ws_inbound.py drops and throttles what is
over it. A message over the size limit is refused by the core from its frame header, before
its payload is read, with 1009; the connection then ends like any close by the peer.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import NamedTuple, cast
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Side, State

from edge_media.drivers.base import BotEnd, BotUnavailable, ConnectStep
from edge_media.drivers.inbound_budget import InboundBudget
from edge_media.drivers.ws_framing import (
    CORE,
    FIN_BINARY,
    FIN_TEXT,
    DataFrameSplitter,
    client_frames,
    core_at_boundary,
    server_frame,
)
from edge_media.drivers.ws_inbound import NO_INBOUND_FIGURES, InboundGate

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "PING_INTERVAL",
    "WRITE_BUFFER_LIMIT",
    "WsClosed",
    "WsConnection",
    "connection_figures",
    "display_url",
    "peer_end",
]

logger = logging.getLogger("agera.drivers.ws")

WRITE_BUFFER_LIMIT = 128 * 1024  # ~7 s of Twilio media messages beyond the kernel's buffer
MAX_MESSAGE_BYTES = (
    1 << 20
)  # one message, the most any setting allows (AGERA_BOT_MAX_MESSAGE_BYTES)
PING_INTERVAL = 5.0  # seconds between keepalive pings (one is sent at connect)
PINGS_IN_FLIGHT = 8  # unanswered pings remembered; older ones are forgotten
RTT_SAMPLES = 32  # pong round trips kept for the median
CLOSE_TIMEOUT = 2.0  # seconds for the closing handshake before the TCP connection is aborted
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 §5.5: control payload ≤ 125 bytes, 2 of them the code
USER_AGENT = "agera-voice-gateway"
# websockets' own DEBUG lines quote the request line, whose path and query may be a capability
# (a bot token, an ElevenLabs signed URL, Vapi's call socket): its logger stays at INFO.
WIRE_LOGGER = logging.getLogger("agera.drivers.ws.wire")
WIRE_LOGGER.setLevel(logging.INFO)

OnText = Callable[[str], None]
OnBytes = Callable[[bytes], None]


class WsClosed(NamedTuple):
    """How a connection ended. ``by_peer`` is False only when we started the closing handshake
    with `WsConnection.close`; the peer closing, a reset, an EOF or a peer protocol error are
    all ``by_peer``. ``code`` is 1006 when no close frame was exchanged (RFC 6455 §7.1.5)."""

    code: int
    reason: str
    by_peer: bool


def display_url(url: str) -> str:
    """The URL fit for logs and error messages: no user info, query or fragment (bot URLs often
    carry a token in the query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WsConnection(asyncio.Protocol):
    """One client WebSocket connection. Built by `connect_websocket`, open when returned.

    Send with `send_text` / `send_bytes` (sync, never block, may drop), end with `close`,
    learn the end from `closed`. The asyncio callbacks (`connection_made` ...) belong to the
    transport, not to users.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        core: ClientProtocol,
        *,
        url: str,
        on_text: OnText,
        on_bytes: OnBytes,
        on_open: Callable[[WsConnection], None] | None,
        extra_headers: Mapping[str, str] | None,
        write_buffer_limit: int,
        ping_interval: float | None,
        budget: InboundBudget | None = None,
        log_name: str | None = None,
    ) -> None:
        self._loop = loop
        self._core = core
        self._url = url
        self._on_text = on_text
        self._on_bytes = on_bytes
        self._on_open = on_open
        self._extra_headers = extra_headers
        self._write_buffer_limit = write_buffer_limit
        self._ping_interval = ping_interval
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[WsClosed] = loop.create_future()
        self._close_requested = False
        self._close_timeout = CLOSE_TIMEOUT
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pings: dict[bytes, float] = {}
        self._ping_count = 0
        self._rtts: deque[float] = deque(maxlen=RTT_SAMPLES)
        self._fragments: list[bytes] = []
        self._fragment_opcode = Opcode.TEXT
        self._failed = False
        self.messages_in = 0
        self.messages_out = 0
        self.dropped = 0  # messages refused because the peer is not reading
        self._drop_reported = False
        self._log_name = log_name  # how warnings name this peer; None: its `url`
        self.inbound = InboundGate(loop, budget, self._shown)
        # The media path's frames skip websockets' per-frame machinery (drivers/ws_framing.py);
        # the core keeps the handshake, control frames, fragments, closing and every error.
        self._masks = core.side is Side.CLIENT
        self._splitter = DataFrameSplitter(
            masked=core.side is Side.SERVER, max_size=core.max_message_size
        )
        # True while the splitter owns the stream: `core_at_boundary` held and nothing has
        # touched the core since (feeding it, closing, failing), so it need not be asked again.
        self._splitting = False

    # -- public API --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL without credentials or query, for logs."""
        return display_url(self._url)

    @property
    def is_open(self) -> bool:
        """True while messages can be sent (handshake done, no close started)."""
        return self._core.state is State.OPEN

    @property
    def closed(self) -> asyncio.Future[WsClosed]:
        """Resolves once the TCP connection is gone. Shielded: a waiter that gives up (a
        timeout) cancels only its own wait, never the result other waiters need."""
        return asyncio.shield(self._closed)

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by `send_text` but not yet taken by the kernel."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def send_text(self, text: str, *, always: bool = False) -> bool:
        """Send one text message now. False, and nothing sent, when the connection is not open
        or the peer is not reading (the drop is counted in `dropped`). ``always`` skips the
        not-reading check: for the few messages that end a stream and must not be lost."""
        return self._send(Opcode.TEXT, text.encode(), always=always)

    def send_bytes(self, data: bytes) -> bool:
        """Send one binary message now; same rules as `send_text`."""
        return self._send(Opcode.BINARY, data)

    def take_drop_warning(self) -> bool:
        """True exactly once, after the first message dropped for a peer that is not reading:
        the driver logs one warning per connection, not one per 20 ms frame."""
        if self.dropped and not self._drop_reported:
            self._drop_reported = True
            return True
        return False

    def ping(self) -> None:
        """Send a keepalive ping now; its pong adds a round-trip sample."""
        if self._core.state is not State.OPEN:
            return
        self._ping_count += 1
        payload = struct.pack("!I", self._ping_count & 0xFFFFFFFF)
        self._pings[payload] = time.perf_counter()  # loop.time() is 1 ms coarse on uvloop
        while len(self._pings) > PINGS_IN_FLIGHT:
            del self._pings[next(iter(self._pings))]
        self._core.send_ping(payload)
        self._flush()

    @property
    def rtt_ms(self) -> tuple[float, ...]:
        """Recent ping→pong round trips in ms, oldest first."""
        return tuple(self._rtts)

    @property
    def last_rtt_ms(self) -> float | None:
        return self._rtts[-1] if self._rtts else None

    @property
    def median_rtt_ms(self) -> float | None:
        return statistics.median(self._rtts) if self._rtts else None

    async def close(
        self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", seconds: float = CLOSE_TIMEOUT
    ) -> WsClosed:
        """Start the closing handshake (if nobody did yet) and wait for the connection to end,
        at most ``seconds`` before aborting it. The reason is cut to fit a close frame."""
        if self._core.state is State.OPEN:
            self._close_requested = True
            self._close_timeout = seconds
            self._splitting = False
            self._core.send_close(code, _cut_reason(reason))
            self._flush()
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()
        return await self._closed_after_abort()

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        if self._transport is not None:
            self._transport.abort()

    async def handshake_complete(self) -> None:
        """Wait for the opening handshake; `BotUnavailable` when it fails. For `connect_websocket`."""
        await self._handshake

    def forget_handshake(self) -> None:
        """Stop waiting for the handshake (connect gave up): a late failure is then not an
        unretrieved exception."""
        if not self._handshake.done():
            self._handshake.cancel()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        request = self._core.connect()
        request.headers["User-Agent"] = USER_AGENT
        for name, value in (self._extra_headers or {}).items():
            request.headers[name] = value
        self._core.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.inbound.feed(data, self._receive)  # in slices while the peer is over budget

    def _receive(self, data: bytes) -> None:
        if self._splitting or core_at_boundary(self._core):
            self._splitting = True
            for opcode, payload in self._splitter.split(data):
                if opcode is CORE:
                    self._core_receive(payload)
                # After a close (or a failure) the core discards what follows.
                elif self._splitting or self._core.state is State.OPEN:
                    self._deliver(opcode, payload)
            return
        held = self._splitter.take_pending()
        self._core_receive(held + data if held else data)

    def _core_receive(self, data: bytes) -> None:
        self._splitting = False
        core = self._core
        core.receive_data(data)
        events = core.events_received()
        self._flush()
        if type(core.parser_exc) is PayloadTooBig:
            self.inbound.too_big(core.parser_exc)
        for event in events:
            self._core_event(event)
        if not self._handshake.done() and core.handshake_exc is not None:
            self._handshake_done()

    def _core_event(self, event: object) -> None:
        """One event of websockets' core: a frame, or (client side) the handshake's response."""
        if isinstance(event, Frame):
            self._frame(event)
        elif isinstance(event, Response):
            self._handshake_done()

    def eof_received(self) -> bool:
        self._core.receive_eof()
        self._flush()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._core.receive_eof()  # idempotent; moves the core to CLOSED
        self._core.data_to_send()  # nowhere to send it any more
        for timer in (self._close_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self.inbound.lost()
        if not self._handshake.done():
            detail = f": {exc}" if exc else ""
            self._handshake.set_exception(
                BotUnavailable(
                    f"bot at {self.url} closed the connection in the handshake{detail}",
                    step=ConnectStep.HANDSHAKE,
                )
            )
        if not self._closed.done():
            self._closed.set_result(self._how_it_ended(exc))

    # -- internals ---------------------------------------------------------------------------

    def _send(self, opcode: Opcode, data: bytes, *, always: bool = False) -> bool:
        core = self._core
        transport = self._transport
        if core.state is not State.OPEN or transport is None or transport.is_closing():
            return False
        if not always and transport.get_write_buffer_size() > self._write_buffer_limit:
            self.dropped += 1
            return False
        # No extension is ever negotiated and no message is sent in fragments on these
        # connections (ws_connect.py, agent_stream/ws_server.py), so every frame is built here.
        if self._masks:
            text = opcode is Opcode.TEXT
            transport.write(client_frames.text(data) if text else client_frames.binary(data))
        else:
            transport.write(server_frame(FIN_TEXT if opcode is Opcode.TEXT else FIN_BINARY, data))
        self.messages_out += 1
        return True

    def _flush(self) -> None:
        transport = self._transport
        writes = self._core.data_to_send()
        if transport is None or transport.is_closing():
            return
        for chunk in writes:
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():  # SEND_EOF: half-close (not possible over TLS)
                transport.write_eof()
        if self._close_timer is None and self._core.close_expected():
            # RFC 6455 §7.1.1: the server should close TCP first; give it `_close_timeout`.
            self._close_timer = self._loop.call_later(self._close_timeout, self.abort)

    def _handshake_done(self) -> None:
        if self._handshake.done():
            return
        error = self._core.handshake_exc
        if error is not None:
            if isinstance(error, InvalidStatus):
                status = error.response.status_code
                reason = f"bot at {self.url} refused the WebSocket upgrade: HTTP {status}"
            else:
                reason = f"bot at {self.url} failed the WebSocket handshake: {error}"
            self._handshake.set_exception(BotUnavailable(reason, step=ConnectStep.HANDSHAKE))
            return
        self._handshake.set_result(None)
        if self._on_open is not None:
            self._on_open(self)
        if self._ping_interval is not None:
            self._ping_tick()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(opcode, frame.data)
            else:
                self._fragment_opcode = opcode
                self._fragments = [frame.data]
        elif opcode is Opcode.CONT:
            # The core rejects out-of-place continuations and counts their size against
            # max_size, so the buffer here is bounded by MAX_MESSAGE_BYTES.
            self._fragments.append(frame.data)
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._deliver(self._fragment_opcode, data)
        elif opcode is Opcode.PONG:
            self._pong(frame.data)

    def _deliver(self, opcode: Opcode, data: bytes) -> None:
        if self._failed:
            return
        self.messages_in += 1
        if not self.inbound.admit(len(data), self._transport):
            return
        try:
            if opcode is Opcode.TEXT:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    # RFC 6455 §8.1: invalid UTF-8 in a text message fails the connection.
                    self._failed = True
                    self._splitting = False
                    self._core.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                    self._flush()
                    return
                self._on_text(text)
            else:
                self._on_bytes(bytes(data))
        except Exception:
            # Our own handler's bug must not kill the connection's reader.
            logger.exception("handler of a message from %s failed", self.url)

    def _shown(self) -> str:
        return self._log_name if self._log_name is not None else f"bot at {self.url}"

    def _ping_tick(self) -> None:
        self._ping_timer = None
        if self._core.state is not State.OPEN or self._ping_interval is None:
            return
        self.ping()
        self._ping_timer = self._loop.call_later(self._ping_interval, self._ping_tick)

    def _pong(self, payload: bytes) -> None:
        sent = self._pings.pop(bytes(payload), None)
        if sent is None:
            return  # unsolicited, or for a ping we forgot
        self._rtts.append((time.perf_counter() - sent) * 1000.0)
        # RFC 6455 §5.5.3: a peer may answer only the latest of several pings; the earlier ones
        # (sent before this one, so first in the dict) will not be answered now.
        for earlier in [key for key, at in self._pings.items() if at <= sent]:
            del self._pings[earlier]

    def _how_it_ended(self, exc: Exception | None) -> WsClosed:
        core = self._core
        sent, received = core.close_sent, core.close_rcvd
        if self._close_requested and sent is not None:
            return WsClosed(sent.code, sent.reason, by_peer=False)
        if received is not None:
            return WsClosed(received.code, received.reason, by_peer=True)
        if sent is not None:  # we failed the connection over a peer protocol error
            return WsClosed(sent.code, sent.reason, by_peer=True)
        reason = f"connection lost: {exc}" if exc else "connection lost without a close frame"
        return WsClosed(CloseCode.ABNORMAL_CLOSURE, reason, by_peer=True)

    async def _closed_after_abort(self) -> WsClosed:
        # abort() schedules connection_lost on the next loop iteration; wait for it, bounded.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                return await asyncio.shield(self._closed)
        except TimeoutError:
            if not self._closed.done():
                self._closed.set_result(self._how_it_ended(None))
            return self._closed.result()


def connection_figures(conn: WsConnection | None) -> dict[str, float | int | None]:
    """The socket's share of a driver's stats: messages dropped for a peer that does not read
    (``dropped_out``), the keepalive round trip (``bot_rtt_ms`` median, ``bot_rtt_last_ms``),
    what the inbound budget dropped (``budget_dropped_messages``, ``budget_dropped_bytes``)
    and whether the peer sent a message over the size limit (``messages_too_big``, 0 or 1)."""
    if conn is None:
        return {
            "dropped_out": 0,
            "bot_rtt_ms": None,
            "bot_rtt_last_ms": None,
            **NO_INBOUND_FIGURES,
        }
    return {
        "dropped_out": conn.dropped,
        "bot_rtt_ms": conn.median_rtt_ms,
        "bot_rtt_last_ms": conn.last_rtt_ms,
        **conn.inbound.figures(),
    }


def peer_end(closed: WsClosed, stop_reason: str | None, peer_closed: str) -> BotEnd:
    """How a driver's connection ended: stopped by us (``stop_reason``), else by the peer,
    described as ``peer_closed`` with the close code and reason."""
    if not closed.by_peer and stop_reason is not None:
        return BotEnd(by_bot=False, reason=stop_reason, code=closed.code)
    detail = f"{closed.code} {closed.reason}" if closed.reason else f"{closed.code}"
    return BotEnd(by_bot=True, reason=f"{peer_closed} ({detail})", code=closed.code)


def _cut_reason(reason: str) -> str:
    encoded = reason.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
