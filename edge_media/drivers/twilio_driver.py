"""The Twilio-stream bot driver: a `BotDriver` over `TwilioStreamProtocol` and `WsConnection`.

Why this split: the protocol object decides every byte (and is tested on literal JSON), the
WebSocket layer moves bytes, and this class only wires them to the caller leg: bot audio, marks
and clears go to `CallerLeg`, caller audio and digits go to the bot, and playout reaching a mark
sends its echo (marks are echoed at playout time, never on receipt). "§N" below names section N
of PROTOCOL.md's "Twilio-stream bots" part.

Once `stop` begins (caller gone, or a redirect swaps the bot), anything the old bot still sends
is dropped: its late audio must never reach the caller or the next bot's playout.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from typing import Any

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
    connect_websocket,
    connection_figures,
    peer_end,
)
from shared.ssrf import UnsafeUrlError, check_public_url

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
    ) -> None:
        self.protocol = protocol
        self._leg = leg
        self._close_timeout = close_timeout
        self._call = protocol.info.call_uuid
        self._conn: WsConnection | None = None
        self._stop_reason: str | None = None
        self._media_in = 0
        self._bytes_in = 0
        self._media_out = 0
        self._marks_in = 0
        self._marks_echoed = 0
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
                leg.mark(event.name)
            elif type(event) is Clear:
                self._clears += 1
                # §5: empty the queue, then echo every pending mark, in order; the first
                # says how much of its audio was heard before the clear, the others 0.
                for mark in leg.clear():
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
) -> TwilioStreamDriver:
    """A `BotConnector`: open ``target`` (ws:// or wss://), send `connected` and `start`.

    The callSid is the call uuid (the bot can use it with our API) and the accountSid the
    account id. Raises `BotUnavailable` when the bot cannot be reached within ``seconds``.
    """
    protocol = TwilioStreamProtocol(
        stream_sid=new_stream_sid(),
        call_sid=info.call_uuid,
        account_sid=info.account_id,
        info=info,
    )
    driver = TwilioStreamDriver(protocol, leg, close_timeout=close_timeout)
    await connect_websocket(
        target,
        seconds=seconds,
        on_open=driver.on_open,
        on_text=driver.on_text,
        on_bytes=driver.on_bytes,
        ssl_context=ssl_context,
    )
    shown = driver.connection.url if driver.connection is not None else target
    logger.info("[call %s] bot stream %s open to %s", info.call_uuid, driver.stream_sid, shown)
    return driver


def twilio_stream_connector(context: DriverContext) -> BotConnector:
    """The connector for ws(s):// targets: the address check, then `connect_twilio_stream`.

    Why the address is checked again here: the API checked the URL when it was stored, but a
    host name may resolve elsewhere by the time a call connects (DNS rebinding), and a routing
    webhook hands us URLs nobody has checked. The node refuses private and metadata addresses
    unless the operator allows them (``AGERA_SSRF_ALLOW_LIST``), exactly like the API.
    """
    settings = context.settings

    async def connect(target: str, info: CallInfo, leg: CallerLeg, seconds: float) -> BotDriver:
        try:
            await asyncio.to_thread(
                check_public_url, target, "socket_url", settings, context.resolve
            )
        except UnsafeUrlError as error:
            raise BotUnavailable(str(error), step=ConnectStep.TARGET) from None
        return await connect_twilio_stream(
            target, info, leg, seconds, ssl_context=context.ssl_context
        )

    return connect
