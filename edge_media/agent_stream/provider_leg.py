"""A provider's media WebSocket as the caller side of a call: `ProviderWire` carries the audio,
`ProviderCall` is the call's life (its end, its hangup, its transfer) as `LiveCall` sees it.

Why the same seams as a SIP leg: `ProviderWire` is a `CallerWire` (bridge/caller_media.py), so
`CallerMedia` binds it exactly as it binds an `RtpSession`, redirects swap the bot without
touching the socket, and the bot drivers never learn which kind of caller they serve.
`ProviderCall` offers what `LiveCall` asks of a `SipCall` (``media``, ``end``, ``ended()``,
``hangup``), so one `LiveCall.run` and one `finish` serve both kinds of call.

Agent audio goes to the provider on the node's one media clock: the wire registers a stream
with the shared `Pacer` whose sink is the wire itself, so each 20 ms tick takes one frame from
the playout queue and sends it as one ``media`` message (the RTP header the pacer builds is
cut off; building it costs less than a second code path for the tick). The provider gets
audio at the pace it plays it, so its own buffer stays near empty, a ``clear`` empties ours at
once and tells the provider to drop the little it holds, and marks are reached at playout as
for RTP: the loop turn after the tick's messages left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edge_media.agent_stream.provider_protocol import (
    Malformed,
    ProviderDtmf,
    ProviderMedia,
    ProviderStop,
    clear_message,
    media_message,
    parse_event,
)
from edge_media.agent_stream.ws_server import StreamConnection
from edge_media.drivers.ws_client import WsClosed
from edge_media.rtp.dtmf import EVENT_CODES, DtmfDigit, DtmfTrigger
from edge_media.rtp.pacer import Pacer
from edge_media.rtp.playout import PlayedMark, PlayoutQueue
from edge_media.rtp.session import DISCARD, MediaSink
from edge_media.sip.call_state import CallEnd

__all__ = ["ProviderCall", "ProviderControl", "ProviderWire"]

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz: what a driver's send_audio expects
RTP_HEADER_BYTES = 12
DTMF_DURATION = 800  # 100 ms in 8 kHz timestamp units: providers report presses, not lengths
STOP_CLOSE_SECONDS = 2.0


class ProviderControl(Protocol):
    """The provider's REST side of one call, with its stored credentials bound in."""

    async def hangup(self) -> None: ...

    async def transfer(self, destination: str) -> None: ...


class ProviderWire:
    """The provider socket as a `CallerWire`: plays a queue on the pacer, hears the caller."""

    def __init__(
        self,
        conn: StreamConnection,
        pacer: Pacer,
        stream_sid: str,
        log: logging.LoggerAdapter,  # type: ignore[type-arg]
        on_stop: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._pacer = pacer
        self._sid = stream_sid
        self._log = log
        self._on_stop = on_stop
        self.playout = PlayoutQueue()
        self.sink: MediaSink = DISCARD
        self._stream: int | None = None
        self._marks_due = False
        self._inbound = bytearray()
        self.media_in = 0
        self.frames_in = 0
        self.media_out = 0
        self.dtmf_in = 0
        self.clears_out = 0
        self.malformed = 0
        self._malformed_logged = False

    # -- CallerWire --------------------------------------------------------------------------

    def connect(self, playout: PlayoutQueue, sink: MediaSink) -> None:
        self.playout = playout
        self.sink = sink
        if self._stream is None and self._conn.is_open:
            self._stream = self._pacer.register(
                self._next_frame,
                addr=("provider", 0),
                ssrc=0,
                payload_type=0,
                sequence=0,
                timestamp=0,
                sink=self,
            )

    def disconnect(self) -> None:
        self.sink = DISCARD

    def playout_cleared(self) -> None:
        """The bot cleared its audio (barge-in): the provider drops what it still holds."""
        if self._conn.send_text(clear_message(self._sid), always=True):
            self.clears_out += 1

    # -- the pacer's side ----------------------------------------------------------------------

    def _next_frame(self) -> bytes | None:
        playout = self.playout
        frame = playout.next_frame()
        if playout.has_reached and not self._marks_due:
            self._marks_due = True  # rtp/session.py: echoed once this tick's messages left
            asyncio.get_running_loop().call_soon(self._report_marks)
        return frame

    def _report_marks(self) -> None:
        self._marks_due = False
        marks: list[PlayedMark] = self.playout.take_reached()
        if marks:
            self.sink.on_marks(marks)

    def sendto(self, packet: bytes, addr: Any) -> None:
        """The pacer's packet for this stream: its payload goes out as one ``media`` message."""
        if self._conn.send_text(media_message(self._sid, packet[RTP_HEADER_BYTES:])):
            self.media_out += 1

    # -- from the provider ---------------------------------------------------------------------

    def on_text(self, text: str) -> None:
        try:
            event = parse_event(text)
        except Malformed as error:
            self.malformed += 1
            if not self._malformed_logged:
                self._malformed_logged = True
                self._log.warning("provider sent a malformed message (%s); dropped", error)
            return
        if type(event) is ProviderMedia:
            self.media_in += 1
            self._caller_audio(event.payload)
        elif type(event) is ProviderDtmf:
            self.dtmf_in += 1
            code = EVENT_CODES.get(event.digit, 0)
            digit = DtmfDigit(event.digit, code, 0, DTMF_DURATION, 10, DtmfTrigger.END)
            self.sink.on_digits((digit,))
        elif type(event) is ProviderStop:
            self._on_stop()

    def _caller_audio(self, payload: bytes) -> None:
        if len(payload) == FRAME_BYTES and not self._inbound:
            self.frames_in += 1
            self.sink.on_frames((payload,))
            return
        buffer = self._inbound
        buffer += payload
        whole = len(buffer) - len(buffer) % FRAME_BYTES
        if not whole:
            return
        frames = tuple(bytes(buffer[i : i + FRAME_BYTES]) for i in range(0, whole, FRAME_BYTES))
        del buffer[:whole]
        self.frames_in += len(frames)
        self.sink.on_frames(frames)

    # -- the end ------------------------------------------------------------------------------

    def stop_sending(self) -> None:
        if self._stream is not None:
            self._pacer.unregister(self._stream)
            self._stream = None

    def stats(self) -> dict[str, Any]:
        """Figures for the call record, named as a SIP leg's where they mean the same."""
        return {
            "packets_in": self.frames_in,
            "lost": 0,
            "packets_out": self.media_out,
            "dtmf_in": self.dtmf_in,
            "provider_messages_in": self.media_in,
            "provider_clears_out": self.clears_out,
            "provider_malformed": self.malformed,
            "provider_dropped_out": self._conn.dropped,
        }


class ProviderCall:
    """A stream's call as `LiveCall` drives it: ``media``, ``end``, ``ended()``, ``hangup``.

    The provider ends the call with ``stop`` or by closing; we end it (bot hung up, API hangup,
    session limit, node shutdown) by hanging the call up at the provider, when its REST side is
    known, then closing the socket 1000.
    """

    def __init__(
        self,
        conn: StreamConnection,
        pacer: Pacer,
        stream_sid: str,
        log: logging.LoggerAdapter,  # type: ignore[type-arg]
        control: ProviderControl | None,
    ) -> None:
        self.conn = conn
        self.log = log
        self.control = control
        self.media = ProviderWire(conn, pacer, stream_sid, log, self._provider_stopped)
        self.end: CallEnd | None = None
        self._ended = asyncio.get_running_loop().create_future()
        self.provider_result: str | None = None  # how our REST hangup/transfer went
        self._transferred = False
        self._closing: asyncio.Future[Any] | None = None
        conn.route_to(self.media.on_text)
        self._watch = asyncio.ensure_future(self._watch_close())

    @property
    def is_ended(self) -> bool:
        return self.end is not None

    async def ended(self) -> CallEnd:
        return await asyncio.shield(self._ended)

    def _finish(self, end: CallEnd) -> None:
        if self.end is None:
            self.end = end
            self.media.stop_sending()
            self._ended.set_result(end)

    def _provider_stopped(self) -> None:
        self.log.info("provider sent stop")
        self._finish(CallEnd("NORMAL_CLEARING", None, "remote", "provider stop"))
        self._closing = asyncio.ensure_future(self.conn.close(1000, "", seconds=STOP_CLOSE_SECONDS))

    async def _watch_close(self) -> None:
        closed: WsClosed = await self.conn.closed
        if self.end is None:
            self.log.info("provider closed the stream (%d)", closed.code)
            self._finish(CallEnd("NORMAL_CLEARING", None, "remote", f"closed {closed.code}"))

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """End the call from our side: at the provider first (unless the provider already
        moved it elsewhere, `transfer`), then the socket (1000)."""
        if self.end is not None:
            return
        if self._transferred:
            self._finish(CallEnd(cause, None, "local", "transferred"))
        else:
            self._finish(CallEnd(cause, None, "local"))
            await self._at_provider("hangup", lambda c: c.hangup())
        await self.conn.close(1000, "")

    async def transfer(self, destination: str) -> bool:
        """Ask the provider to move the call to ``destination`` (its REST API dials it); True
        when it took the request. The stream stays open until `hangup` closes it."""
        if self.end is not None or self.control is None:
            return False
        self._transferred = await self._at_provider("transfer", lambda c: c.transfer(destination))
        return self._transferred

    async def _at_provider(
        self, what: str, action: Callable[[ProviderControl], Awaitable[None]]
    ) -> bool:
        control = self.control
        if control is None:
            self.provider_result = f"{what}: no provider API for this stream"
            return False
        try:
            await action(control)
        except Exception as error:  # the API's own exceptions name no secret
            self.provider_result = f"{what} failed: {error}"[:256]
            self.log.warning("provider %s failed: %s", what, error)
            return False
        self.provider_result = f"{what}: ok"
        return True

    def close(self) -> None:
        self._watch.cancel()
        self.media.stop_sending()
