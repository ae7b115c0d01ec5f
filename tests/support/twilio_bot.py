"""StrictTwilioBot: a real Twilio-Media-Streams bot server on loopback that checks every message.

Why strict: real bots read different parts of the protocol (pipecat reads the nested
``start.streamSid`` and ``callSid``, the OpenAI sample ``media.timestamp``, the Agents SDK example
mark names), so the gateway must get every field, type and counter of PROTOCOL.md §2 and §4
right, not only the ones one bot happens to use. Each `BotSession` records every message with
its arrival time (``loop.time()``) and collects violations as readable strings; a test asserts
``session.violations == []``.

Mark echoes carry our ``played_ms`` beside ``name``; the bot records each one
(`BotSession.mark_played`) and, for each mark it sends, how much audio that mark covers
(`BotSession.marks_sent_ms`), so a test can compare what the gateway says was played with what
the bot queued.

Modes: ``echo=True`` sends every caller payload straight back; otherwise the test scripts the
bot (`BotSession.send_media`, `send_mark`, `send_clear`, `send_raw`, `close`, `abort`,
`stop_reading`). For failure tests the bot can refuse the upgrade (``refuse_status``), accept
and close at once (``close_at_once``) or stall the handshake (``handshake_delay``); these are
attributes a test may change between calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

HOST = "127.0.0.1"
PATH = "/twilio"
ULAW_BYTES_PER_MS = 8
FRAME_BYTES = 160  # the gateway plays whole 20 ms frames, a partial one padded at a mark
FRAME_MS = 20
DIGITS = frozenset("0123456789*#ABCD")
START_PARAMETERS = ("from_number", "to_number", "call_uuid", "direction", "account_id")
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
_INVALID = object()


@dataclass(frozen=True, slots=True)
class Received:
    """One frame from the gateway: ``text`` or ``data`` (binary), and the parsed JSON object."""

    at: float
    text: str | None
    data: bytes | None
    message: dict[str, Any] | None


class BotSession:
    """One gateway connection as the bot sees it."""

    def __init__(self, bot: StrictTwilioBot, ws: ServerConnection) -> None:
        self.bot = bot
        self.ws = ws
        self.path = ws.request.path if ws.request is not None else ""
        self.headers: Headers = ws.request.headers if ws.request is not None else Headers()
        self.received: list[Received] = []
        self.violations: list[str] = []
        self.audio = bytearray()  # caller audio, in order
        self.digits: list[str] = []
        self.mark_echoes: list[tuple[str, float]] = []  # (name, arrival time)
        self.mark_played: list[tuple[str, int]] = []  # (name, played_ms) of each echo
        self.marks_sent: list[str] = []
        # (name, ms) per mark sent: the audio sent via send_media since the previous mark, in
        # whole frames (the gateway pads a partial frame when a mark follows it).
        self.marks_sent_ms: list[tuple[str, int]] = []
        self._bytes_since_mark = 0
        self.start: dict[str, Any] | None = None  # the whole start message
        self.stop: dict[str, Any] | None = None
        self.stream_sid: str | None = None
        self.close_code: int | None = None  # the code the gateway closed with
        self.close_reason: str | None = None
        self.closed_by_bot = False
        self._sequence = 0
        self._chunk = 0
        self._pending_marks: list[str] = []
        self._changed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self.done = asyncio.Event()

    # -- what the test sees ------------------------------------------------------------------

    def events(self) -> list[str]:
        """The ``event`` of every JSON message received, in order."""
        return [str(item.message.get("event")) for item in self.received if item.message]

    def messages(self, event: str) -> list[dict[str, Any]]:
        return [
            item.message
            for item in self.received
            if item.message and item.message.get("event") == event
        ]

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, seconds: float = 5.0
    ) -> None:
        """Wait until ``predicate()`` holds, checked after every message and at the close;
        `AssertionError` naming ``what`` after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {seconds:g} s") from None

    async def wait_events(self, count: int, seconds: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.received) >= count, f"{count} messages", seconds)

    async def wait_closed(self, seconds: float = 5.0) -> None:
        await self.wait_for(self.done.is_set, "close", seconds)

    # -- what the bot sends ------------------------------------------------------------------

    async def send_media(self, ulaw: bytes) -> None:
        self._bytes_since_mark += len(ulaw)
        payload = base64.b64encode(ulaw).decode("ascii")
        await self.send_json(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )

    async def send_mark(self, name: str) -> None:
        self.marks_sent.append(name)
        frames = -(-self._bytes_since_mark // FRAME_BYTES)
        self.marks_sent_ms.append((name, frames * FRAME_MS))
        self._bytes_since_mark = 0
        self._pending_marks.append(name)
        await self.send_json(
            {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
        )

    async def send_clear(self) -> None:
        await self.send_json({"event": "clear", "streamSid": self.stream_sid})

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        """A text (str) or binary (bytes) frame exactly as given."""
        await self.ws.send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_by_bot = True
        await self.ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection with no close frame (a crashed bot)."""
        self.closed_by_bot = True
        self.ws.transport.abort()

    def stop_reading(self) -> None:
        """Stop consuming messages; websockets then stops reading the socket after its queue
        fills, and the gateway's writes back up (a bot that hangs)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # -- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._reading.wait()
                frame = await self.ws.recv()  # queued messages first, then ConnectionClosed
                # A reply (an echo) the closing connection cannot take ends nothing: what the
                # node sent before its close (its stop) is still queued, so keep reading.
                with contextlib.suppress(ConnectionClosed):
                    await self._on_frame(frame, loop.time())
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self._check_close()
            self.done.set()
            self._changed.set()

    async def _on_frame(self, frame: str | bytes, at: float) -> None:
        if isinstance(frame, bytes):
            self.received.append(Received(at, None, frame, None))
            self._violation(f"binary frame of {len(frame)} bytes")
            self._changed.set()
            return
        try:
            message: Any = json.loads(frame)
        except ValueError:
            message = _INVALID
        obj = message if isinstance(message, dict) else None
        self.received.append(Received(at, frame, None, obj))
        if message is _INVALID:
            self._violation(f"invalid JSON: {frame[:80]!r}")
        elif obj is None:
            self._violation(f"JSON that is not an object: {frame[:80]!r}")
        if obj is not None:
            try:
                self._check(obj, at)
            except Exception as exc:  # a message shaped beyond what the checks expect
                self._violation(f"unreadable message ({exc!r}): {frame[:80]!r}")
            if self.bot.echo and obj.get("event") == "media":
                payload = obj.get("media", {}).get("payload")
                await self.send_json(
                    {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
                )
        self._changed.set()

    # -- the checks (PROTOCOL.md §2, §4, §5) ---------------------------------------------------

    def _violation(self, text: str) -> None:
        self.violations.append(f"message {len(self.received)}: {text}")

    def _check(self, message: dict[str, Any], at: float) -> None:
        index = len(self.received)  # 1-based position of this message
        event = message.get("event")
        if self.stop is not None:
            self._violation(f"{event!r} after stop")
            return
        if index == 1:
            expected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
            if message != expected:
                self._violation(f"first message must be {expected}, got {message}")
            return
        if index == 2:
            self._check_start(message)
            return
        self._check_sequence(message)
        if message.get("streamSid") != self.stream_sid:
            self._violation(f"streamSid {message.get('streamSid')!r} is not {self.stream_sid!r}")
        if event == "media":
            self._check_media(message)
        elif event == "dtmf":
            self._check_keys(message, {"event", "sequenceNumber", "streamSid", "dtmf"})
            dtmf = message.get("dtmf")
            if not isinstance(dtmf, dict) or set(dtmf) != {"track", "digit"}:
                self._violation(f"dtmf body {dtmf!r}")
                return
            if dtmf["track"] != "inbound_track":
                self._violation(f"dtmf track {dtmf['track']!r}")
            if not (isinstance(dtmf["digit"], str) and dtmf["digit"] in DIGITS):
                self._violation(f"dtmf digit {dtmf['digit']!r}")
            else:
                self.digits.append(dtmf["digit"])
        elif event == "mark":
            self._check_keys(message, {"event", "sequenceNumber", "streamSid", "mark"})
            mark = message.get("mark")
            if not isinstance(mark, dict) or set(mark) != {"name", "played_ms"}:
                self._violation(f"mark body {mark!r}")
                return
            name, played = mark["name"], mark["played_ms"]
            if not isinstance(name, str):
                self._violation(f"mark body {mark!r}")
                return
            if type(played) is not int or played < 0:
                self._violation(f"mark played_ms {played!r}")
                return
            self.mark_echoes.append((name, at))
            self.mark_played.append((name, played))
            # PROTOCOL.md §2: marks are echoed in the order the bot sent them, each once.
            if not self._pending_marks or self._pending_marks[0] != name:
                self._violation(f"mark echo {name!r}, expected {self._pending_marks[:1]}")
            else:
                self._pending_marks.pop(0)
        elif event == "stop":
            self._check_keys(message, {"event", "sequenceNumber", "streamSid", "stop"})
            body = (self.start or {}).get("start")
            body = body if isinstance(body, dict) else {}
            expected_stop = {"accountSid": body.get("accountSid"), "callSid": body.get("callSid")}
            if message.get("stop") != expected_stop:
                self._violation(f"stop body {message.get('stop')!r}, expected {expected_stop}")
            self.stop = message
        else:
            self._violation(f"unexpected event {event!r}")

    def _check_keys(self, message: dict[str, Any], keys: set[str]) -> None:
        if set(message) != keys:
            self._violation(f"keys {sorted(message)}, expected {sorted(keys)}")

    def _check_start(self, message: dict[str, Any]) -> None:
        self.start = message
        if message.get("event") != "start":
            self._violation(f"second message must be start, got {message.get('event')!r}")
            return
        self._check_keys(message, {"event", "sequenceNumber", "streamSid", "start"})
        if message.get("sequenceNumber") != "1":
            self._violation(f"start sequenceNumber {message.get('sequenceNumber')!r}")
        self._sequence = 1
        sid = message.get("streamSid")
        if not isinstance(sid, str) or not sid:
            self._violation(f"streamSid {sid!r}")
        self.stream_sid = sid
        start = message.get("start")
        if not isinstance(start, dict):
            self._violation(f"start body {start!r}")
            return
        keys = {"streamSid", "accountSid", "callSid", "tracks", "customParameters", "mediaFormat"}
        if set(start) != keys:
            self._violation(f"start keys {sorted(start)}, expected {sorted(keys)}")
        if start.get("streamSid") != sid:
            self._violation(f"start.streamSid {start.get('streamSid')!r} is not {sid!r}")
        for name in ("accountSid", "callSid"):
            if not isinstance(start.get(name), str) or not start.get(name):
                self._violation(f"start.{name} {start.get(name)!r}")
        if start.get("tracks") != ["inbound"]:
            self._violation(f"start.tracks {start.get('tracks')!r}")
        media_format = start.get("mediaFormat")
        if media_format != MEDIA_FORMAT or not all(
            type(media_format[key]) is type(MEDIA_FORMAT[key]) for key in MEDIA_FORMAT
        ):
            self._violation(f"start.mediaFormat {media_format!r}")
        parameters = start.get("customParameters")
        if not isinstance(parameters, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in parameters.items()
        ):
            self._violation(f"start.customParameters {parameters!r}")
            return
        for name in START_PARAMETERS:
            if name not in parameters:
                self._violation(f"start.customParameters has no {name}")

    def _check_sequence(self, message: dict[str, Any]) -> None:
        expected = str(self._sequence + 1)
        number = message.get("sequenceNumber")
        if number != expected:
            self._violation(f"sequenceNumber {number!r}, expected {expected!r}")
        if isinstance(number, str) and number.isdigit():
            self._sequence = int(number)
        else:
            self._sequence += 1

    def _check_media(self, message: dict[str, Any]) -> None:
        self._check_keys(message, {"event", "sequenceNumber", "streamSid", "media"})
        media = message.get("media")
        if not isinstance(media, dict) or set(media) != {"track", "chunk", "timestamp", "payload"}:
            self._violation(
                f"media body keys {sorted(media) if isinstance(media, dict) else media}"
            )
            return
        if media["track"] != "inbound":
            self._violation(f"media track {media['track']!r}")
        expected_chunk = str(self._chunk + 1)
        if media["chunk"] != expected_chunk:
            self._violation(f"chunk {media['chunk']!r}, expected {expected_chunk!r}")
        self._chunk += 1
        expected_timestamp = str(len(self.audio) // ULAW_BYTES_PER_MS)
        if media["timestamp"] != expected_timestamp:
            self._violation(f"timestamp {media['timestamp']!r}, expected {expected_timestamp!r}")
        try:
            audio = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            self._violation(f"payload is not base64: {str(media['payload'])[:40]!r}")
            return
        self.audio += audio

    def _check_close(self) -> None:
        if self.closed_by_bot:
            return
        if self.stop is None:
            self._violation(f"connection closed ({self.close_code}) without a stop message")
        elif self.close_code != 1000:
            self._violation(f"close code {self.close_code} after stop, expected 1000")


class StrictTwilioBot:
    """A strict Twilio-stream bot server on 127.0.0.1, port chosen by the OS.

    Use as ``async with StrictTwilioBot(echo=True) as bot:``; connect the gateway to
    ``bot.url`` and get each connection with ``await bot.next_session()``.
    """

    def __init__(
        self,
        *,
        echo: bool = False,
        refuse_status: int | None = None,
        close_at_once: int | None = None,
        handshake_delay: float = 0.0,
    ) -> None:
        self.echo = echo
        self.refuse_status = refuse_status
        self.close_at_once = close_at_once
        self.handshake_delay = handshake_delay
        self.sessions: list[BotSession] = []
        self.requests: list[Request] = []
        self._queue: asyncio.Queue[BotSession] = asyncio.Queue()
        self._server: Server | None = None
        self._closing = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}{PATH}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            HOST,
            0,
            process_request=self._process_request,
            ping_interval=None,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def close(self) -> None:
        self._closing.set()
        for session in self.sessions:
            session.resume_reading()  # a stalled handler would hold the server open
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> StrictTwilioBot:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def next_session(self, seconds: float = 5.0) -> BotSession:
        async with asyncio.timeout(seconds):
            return await self._queue.get()

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.handshake_delay:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.handshake_delay):
                    await self._closing.wait()  # cut short when the test shuts the bot down
        if self._closing.is_set():
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "bot shutting down\n")
        if self.refuse_status is not None:
            return ws.respond(HTTPStatus(self.refuse_status), "bot unavailable\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = BotSession(self, ws)
        self.sessions.append(session)
        self._queue.put_nowait(session)
        if self.close_at_once is not None:
            session.closed_by_bot = True
            await ws.close(self.close_at_once, "closing at once")
        await session.run()
