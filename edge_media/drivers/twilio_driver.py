"""The Twilio-stream bot driver: a `BotDriver` over `TwilioStreamProtocol` and `WsConnection`.

Why this split: the protocol object decides every byte (and is tested on literal JSON), the
WebSocket layer moves bytes, and this class only wires them to the caller leg: bot audio, marks
and clears go to `CallerLeg`, caller audio and digits go to the bot, and playout reaching a mark
sends its echo (marks are echoed at playout time, never on receipt). "§N" below names section N
of PROTOCOL.md's "Twilio-stream bots" part.

Once `stop` begins (caller gone, or a redirect swaps the bot), anything the old bot still sends
is dropped: its late audio must never reach the caller or the next bot's playout.

Why marks are capped here (§6): each mark the bot sends is held until playout reaches it, so a
bot sending marks faster than audio plays grows the node's memory without end (20,000 marks
held 22 MB). The driver knows how many of its marks are pending (queued and not yet handed back
by playout or a clear, each exactly once) and the node's limits, and it is the one that would
echo a mark, so it is where a mark over the cap, or with an over-long name, is dropped: not
queued, never echoed, counted in ``marks_dropped``. Each bot has a playout queue of its own,
so this is the cap per queue.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from typing import Any

from edge_media.drivers.base import (
    BotConnector,
    BotDriver,
    BotEnd,
    CallerLeg,
    CallInfo,
    PlayedMark,
)
from edge_media.drivers.context import DriverContext
from edge_media.drivers.inbound_budget import DEFAULT_LIMITS, BotLimits, json_audio_wire_rate
from edge_media.drivers.twilio_stream import (
    Clear,
    Ignored,
    PlayMark,
    PlayMedia,
    TwilioStreamProtocol,
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
from shared.ssrf import AddressPolicy

__all__ = [
    "STREAM_SID_PREFIX",
    "TwilioStreamDriver",
    "connect_twilio_stream",
    "new_stream_sid",
    "twilio_stream_connector",
]

logger = logging.getLogger("agera.drivers.twilio")

STREAM_SID_PREFIX = "MZ"  # Twilio's prefix for stream SIDs; bots may check it
STREAM_SID_HEX_BYTES = 16  # 32 hex digits after the prefix, as Twilio's
NORMAL_CLOSURE = 1000  # §7: caller hangs up → stop, then close 1000
# §6: a second of bot audio on the wire, the unit of the inbound budget: 8000 μ-law bytes as
# base64, in 20 ms media messages (~20.7 KB).
REALTIME_WIRE_BYTES = json_audio_wire_rate(8000)


def new_stream_sid() -> str:
    """A fresh Twilio-shaped stream SID: "MZ" and 32 lower-case hex digits."""
    return STREAM_SID_PREFIX + secrets.token_hex(STREAM_SID_HEX_BYTES)


class TwilioStreamDriver:
    """One call's Twilio-stream bot. Built and started by `connect_twilio_stream`."""

    def __init__(
        self,
        protocol: TwilioStreamProtocol,
        leg: CallerLeg,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        limits: BotLimits = DEFAULT_LIMITS,
    ) -> None:
        self.protocol = protocol
        self._leg = leg
        self._close_timeout = close_timeout
        self._limits = limits
        self._call = protocol.info.call_uuid
        self._conn: WsConnection | None = None
        self._stop_reason: str | None = None
        self._media_in = 0
        self._bytes_in = 0
        self._media_out = 0
        self._marks_in = 0
        self._marks_echoed = 0
        self._marks_pending = 0  # queued on the leg, not yet handed back (reached or cleared)
        self._marks_dropped = 0
        self._mark_drops_logged: set[str] = set()
        self._clears = 0
        self._ignored = 0
        self._dtmf_out = 0

    @property
    def stream_sid(self) -> str:
        return self.protocol.stream_sid

    @property
    def connection(self) -> WsConnection | None:
        """The WebSocket once open (None before the handshake completed)."""
        return self._conn

    # -- BotDriver ---------------------------------------------------------------------------

    def send_audio(self, ulaw: bytes) -> None:
        conn = self._conn
        if conn is None or self._stop_reason is not None:
            return
        if conn.send_text(self.protocol.media(ulaw)):
            self._media_out += 1
        elif conn.take_drop_warning():
            logger.warning(
                "[call %s] bot at %s is not reading: caller audio is being dropped",
                self._call,
                conn.url,
            )

    def send_dtmf(self, digit: str) -> None:
        conn = self._conn
        if conn is None or self._stop_reason is not None:
            return
        if conn.send_text(self.protocol.dtmf(digit)):
            self._dtmf_out += 1

    def marks_played(self, marks: list[PlayedMark]) -> None:
        self._marks_pending = max(0, self._marks_pending - len(marks))
        if self._stop_reason is not None:
            return
        for mark in marks:
            self._echo_mark(mark)

    async def wait_closed(self) -> BotEnd:
        conn = self._conn
        assert conn is not None, "wait_closed before the driver was connected"
        closed = await conn.closed
        return self._bot_end(closed)

    async def stop(self, reason: str) -> None:
        """§7: `stop`, then close 1000; the closing handshake is bounded by the
        driver's close timeout, after which the connection is aborted."""
        conn = self._conn
        if conn is None:
            return
        if self._stop_reason is None:
            self._stop_reason = reason
            if conn.is_open:  # past the write cap: a bot that lags still learns the call ended
                conn.send_text(self.protocol.stop(), always=True)
        await conn.close(NORMAL_CLOSURE, reason, self._close_timeout)

    def stats(self) -> dict[str, Any]:
        conn = self._conn
        return {
            "media_in": self._media_in,
            "bytes_in": self._bytes_in,
            "media_out": self._media_out,
            "dtmf_out": self._dtmf_out,
            "marks_in": self._marks_in,
            "marks_echoed": self._marks_echoed,
            "marks_dropped": self._marks_dropped,
            "clears": self._clears,
            "ignored": self._ignored,
            **connection_figures(conn),
        }

    def provider_ids(self) -> dict[str, str]:
        """The stream SID we made up for this bot: the id it logs, so the record shows it."""
        return {"stream_sid": self.stream_sid}

    # -- WebSocket callbacks -----------------------------------------------------------------

    def on_open(self, conn: WsConnection) -> None:
        """§4: `connected` first, `start` second, before anything the bot sends is handled."""
        self._conn = conn
        conn.send_text(self.protocol.connected())
        conn.send_text(self.protocol.start())

    def on_text(self, text: str) -> None:
        if self._stop_reason is not None:
            return
        leg = self._leg
        for event in self.protocol.receive_text(text):
            if type(event) is PlayMedia:
                self._media_in += 1
                self._bytes_in += len(event.payload)
                leg.play(event.payload)
            elif type(event) is PlayMark:
                self._marks_in += 1
                self._queue_mark(event.name)
            elif type(event) is Clear:
                self._clears += 1
                # §5: empty the queue, then echo every pending mark, in order; the first
                # says how much of its audio was heard before the clear, the others 0.
                marks = leg.clear()
                self._marks_pending = max(0, self._marks_pending - len(marks))
                for mark in marks:
                    self._echo_mark(mark)
            elif type(event) is Ignored:
                self._note_ignored(event)

    def on_bytes(self, data: bytes) -> None:
        if self._stop_reason is not None:
            return
        for event in self.protocol.receive_bytes(data):
            if type(event) is Ignored:
                self._note_ignored(event)

    # -- internals ---------------------------------------------------------------------------

    def _queue_mark(self, name: str) -> None:
        """§6: queue the mark unless its name is too long or too many marks are pending; a
        dropped mark is never echoed. One warning per connection and reason."""
        limits = self._limits
        if len(name) > limits.max_mark_name_chars:
            kind, why = "name", f"its name is over {limits.max_mark_name_chars} characters"
        elif self._marks_pending >= limits.max_pending_marks:
            kind, why = "cap", f"{limits.max_pending_marks} marks are already pending"
        else:
            self._marks_pending += 1
            self._leg.mark(name)
            return
        self._marks_dropped += 1
        if kind not in self._mark_drops_logged:
            self._mark_drops_logged.add(kind)
            logger.warning(
                "[call %s] dropped a bot mark (never echoed): %s; later drops are only counted",
                self._call,
                why,
            )

    def _echo_mark(self, mark: PlayedMark) -> None:
        # Past the write cap, like `stop`: a bot that lags must not lose an echo it counts on
        # (its outstanding-mark count would never return to zero). Echoes are as many as the
        # marks the bot sent, so they cannot grow the buffer without the bot's doing.
        conn = self._conn
        text = self.protocol.mark(mark.name, mark.played_ms)
        if conn is not None and conn.send_text(text, always=True):
            self._marks_echoed += 1

    def _note_ignored(self, event: Ignored) -> None:
        self._ignored += 1
        if event.first:
            logger.warning(
                "[call %s] ignored a bot message (%s): %s; later ones of this kind are only "
                "counted",
                self._call,
                event.kind,
                event.detail,
            )

    def _bot_end(self, closed: WsClosed) -> BotEnd:
        return peer_end(closed, self._stop_reason, "bot closed the stream")


async def connect_twilio_stream(
    target: str,
    info: CallInfo,
    leg: CallerLeg,
    seconds: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    close_timeout: float = CLOSE_TIMEOUT,
    limits: BotLimits = DEFAULT_LIMITS,
    policy: AddressPolicy | None = None,
) -> TwilioStreamDriver:
    """A `BotConnector`: open ``target`` (ws:// or wss://), send `connected` and `start`.

    The callSid is the call uuid (the bot can use it with our API) and the accountSid the
    account id. ``limits`` bound what the bot may send (§6). ``policy``: the SSRF rule the
    connect is pinned to (see `twilio_stream_connector`). Raises `BotUnavailable` when the
    bot cannot be reached within ``seconds``.
    """
    protocol = TwilioStreamProtocol(
        stream_sid=new_stream_sid(),
        call_sid=info.call_uuid,
        account_sid=info.account_id,
        info=info,
    )
    driver = TwilioStreamDriver(protocol, leg, close_timeout=close_timeout, limits=limits)
    await connect_websocket(
        target,
        seconds=seconds,
        on_open=driver.on_open,
        on_text=driver.on_text,
        on_bytes=driver.on_bytes,
        ssl_context=ssl_context,
        max_message_bytes=limits.max_message_bytes,
        budget=limits.budget(REALTIME_WIRE_BYTES),
        log_name=f"[call {info.call_uuid}] bot at {display_url(target)}",
        policy=policy,
    )
    shown = driver.connection.url if driver.connection is not None else target
    logger.info("[call %s] bot stream %s open to %s", info.call_uuid, driver.stream_sid, shown)
    return driver


def twilio_stream_connector(context: DriverContext) -> BotConnector:
    """The connector for ws(s):// targets: `connect_twilio_stream`, pinned to checked addresses.

    Why the address is checked again here: the API checked the URL when it was stored, but a
    host name may resolve elsewhere by the time a call connects (DNS rebinding), and a routing
    webhook hands us URLs nobody has checked. The node refuses private and metadata addresses
    unless the operator allows them (``AGERA_SSRF_ALLOW_LIST``), exactly like the API, and the
    socket goes to an address that check passed (`drivers.pinned_connect`): one resolution for
    both, so a rebinding name cannot answer the check and the connect differently.
    """
    settings = context.settings
    limits = BotLimits.from_settings(settings)
    policy = AddressPolicy.from_settings(settings, context.resolve)

    async def connect(target: str, info: CallInfo, leg: CallerLeg, seconds: float) -> BotDriver:
        return await connect_twilio_stream(
            target,
            info,
            leg,
            seconds,
            ssl_context=context.ssl_context,
            limits=limits,
            policy=policy,
        )

    return connect
