"""ProviderStream: a fake CPaaS provider (Cloudonix or Twilio) dialling our agent-stream endpoint.

On the agent-stream endpoint the roles of `twilio_bot.StrictTwilioBot` are reversed: the provider
is the WebSocket client and speaks Twilio Media Streams as Twilio does toward a bot (``connected``,
``start``, 20 ms ``media``, ``dtmf``, ``mark`` echoes, ``stop``), and our node answers as a bot
would (``media``, ``mark``, ``clear``). This fake plays the provider so tests and benchmarks can
drive the endpoint without a real CPaaS.

Why it is built this way:

- Sends are synchronous (``send_dtmf``, ``send_mark_echo``, ...): a message is framed by the
  connection's sans-I/O protocol and written to the transport at once, with no await and no task
  per message. A benchmark runs a few hundred streams in one process, and a test can interleave a
  digit with playing audio without juggling coroutines. `play` alone awaits, for its deadlines
  and for flow control when the node stops reading.
- `play` paces on absolute deadlines, ``start + k * 20 ms`` on one grid per stream anchored at
  the ``start`` message, the way the node's own `MediaClock` does: a late wake-up sends the
  missed frames back to back and never shifts later ones, so a busy machine cannot stretch a
  1 s utterance into 1.2 s. ``media.timestamp`` is the frame's slot on that grid (ms since the
  stream started), so successive `play` calls continue the timeline rather than restart it.
- The base64 of a buffer's frames is computed once per buffer (`encode_frames`, cached): hundreds
  of streams looping one prompt share the encoding, and a media message is one f-string.
- Everything the node sends is recorded (``received``) and checked (``violations``): every
  message a text frame holding a JSON object with ``event`` in media/mark/clear, carrying the
  ``streamSid`` we sent in ``start``, media payloads valid base64, nothing before ``start``. A
  test asserts ``stream.violations == []``.
- A refused upgrade raises `HandshakeRefused` carrying the HTTP status, so a test of a node that
  answers 503 (draining) or 404 (unknown path) reads the status, not a library's message.

Times are the event loop's clock (``loop.time()``, monotonic), the clock pacing uses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

Provider = Literal["cloudonix", "twilio"]

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law, what Twilio puts in every media message
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
ULAW_SILENCE = b"\xff"  # μ-law code for zero; pads a buffer's last partial frame
NODE_EVENTS = frozenset({"media", "mark", "clear"})
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
DEFAULT_CLOUDONIX_DOMAIN = "acme.cloudonix.net"

# A value in ``start_fields`` that removes the key from ``start`` (a malformed-start test).
OMIT: Any = object()


class HandshakeRefused(Exception):
    """The endpoint answered the upgrade with an HTTP status other than 101."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        super().__init__(f"agent-stream upgrade to {url} refused: HTTP {status}")
        self.url = url
        self.status = status
        self.body = body


class StreamClosed(ConnectionError):
    """A send on a stream whose connection is not open (never opened, closing or closed)."""


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 lower-case hex digits."""
    return prefix + secrets.token_hex(16)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` for ``url``: Twilio's request-validation HMAC-SHA1.

    The signed string is the URL (with its query) followed by each parameter's name and value,
    sorted by name; a WebSocket upgrade carries no parameters, so it is the URL alone.
    """
    data = url + "".join(name + params[name] for name in sorted(params or {}))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@lru_cache(maxsize=32)
def encode_frames(ulaw: bytes) -> tuple[str, ...]:
    """The base64 payload of each 160-byte frame of ``ulaw``, the last padded with silence.

    Cached by buffer: many streams playing (or looping) the same prompt encode it once.
    """
    frames = []
    for offset in range(0, len(ulaw), FRAME_BYTES):
        frame = ulaw[offset : offset + FRAME_BYTES]
        frame += ULAW_SILENCE * (FRAME_BYTES - len(frame))
        frames.append(base64.b64encode(frame).decode("ascii"))
    return tuple(frames)


class ProviderStream:
    """One provider connection to the agent-stream endpoint, as Cloudonix or Twilio opens it.

    Use as ``async with ProviderStream(url, provider="twilio") as stream:`` (opens, sends
    ``connected`` and ``start``; on exit closes what is still open), or call `open` yourself,
    with ``handshake=False`` to script the handshake by hand.
    """

    def __init__(
        self,
        url: str,
        *,
        provider: Provider = "cloudonix",
        headers: Mapping[str, str] | None = None,
        start_fields: Mapping[str, Any] | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        session: str | None = None,
        open_timeout: float = 5.0,
        close_timeout: float = 2.0,
    ) -> None:
        if provider not in ("cloudonix", "twilio"):
            raise ValueError(f"unknown provider {provider!r}")
        self.url = url
        self.provider: Provider = provider
        self.headers = dict(headers or {})
        self.start_fields = dict(start_fields or {})
        self.custom_parameters = dict(custom_parameters or {})
        self.stream_sid = stream_sid or new_sid("MZ")
        self.call_sid = call_sid or new_sid("CA")
        default_account = DEFAULT_CLOUDONIX_DOMAIN if provider == "cloudonix" else new_sid("AC")
        self.account_sid = account_sid or default_account
        self.session = session or secrets.token_hex(16)
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout

        self.received: list[tuple[float, Any]] = []  # (arrival, JSON value or the raw frame)
        self.violations: list[str] = []
        self.clears: list[float] = []  # arrival time of each clear
        self.marks: list[tuple[str, float]] = []  # (name, arrival time) of each mark
        self.started_at: float | None = None  # loop time the start message was sent
        self._audio = bytearray()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sequence = 0  # last sequenceNumber sent; start is 1
        self._chunk = 0  # last media chunk sent
        self._slot = -1  # grid slot (20 ms since start) of the last media sent
        self._start_sent = False
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()

    # -- connection ---------------------------------------------------------------------------

    async def open(self, *, handshake: bool = True) -> None:
        """Connect; then, unless ``handshake`` is false, send ``connected`` and ``start``.

        Raises `HandshakeRefused` when the endpoint answers with an HTTP status.
        """
        try:
            self._ws = await connect(
                self.url,
                additional_headers=self.headers,
                compression=None,  # Twilio offers no permessage-deflate; and it costs CPU
                ping_interval=None,  # a test owns the connection's lifetime, not keepalive
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                proxy=None,  # never route loopback through an HTTP(S)_PROXY from the env
            )
        except InvalidStatus as exc:
            response = exc.response
            raise HandshakeRefused(self.url, response.status_code, response.body) from exc
        self._reader = asyncio.create_task(self._read())
        if handshake:
            self.send_connected()
            self.send_start()

    async def __aenter__(self) -> ProviderStream:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._ws.protocol.state is State.OPEN

    async def stop(self) -> None:
        """End the stream as the provider does when the call ends: ``stop``, then close 1000."""
        self.send_stop()
        await self.close(1000)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (no ``stop``) and wait, bounded by ``close_timeout``, until the reader ends."""
        if self._ws is None:
            return
        await self._ws.close(code, reason)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.close_timeout):
                    await asyncio.shield(self._reader)
            if not self._reader.done():  # pragma: no cover - websockets closes before this
                self._reader.cancel()

    def abort(self) -> None:
        """Drop the TCP connection with no close frame (a provider edge that crashed)."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def wait_closed(self, seconds: float = 5.0) -> tuple[int, str]:
        """(code, reason) of the close frame the node sent; 1006 if the TCP connection ended
        without one. `AssertionError` if the connection is still open after ``seconds``."""
        await self.wait_for(self._closed.is_set, "close", seconds)
        ws = self._ws
        assert ws is not None
        return (ws.close_code or 1006, ws.close_reason or "")

    # -- what the provider sends --------------------------------------------------------------

    def send_connected(self) -> None:
        self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def send_start(self) -> None:
        """Send ``start`` (sequenceNumber "1" when first) and anchor the media grid at now."""
        message = {
            "event": "start",
            "sequenceNumber": self._next_sequence(),
            "streamSid": self.stream_sid,
            "start": self.start_body(),
        }
        self._send_json(message)
        self._start_sent = True
        if self.started_at is None:
            self.started_at = asyncio.get_running_loop().time()

    def start_body(self) -> dict[str, Any]:
        """The ``start`` object this stream sends: Twilio's fields, Cloudonix's extras for a
        Cloudonix stream, then ``start_fields`` laid over it (`OMIT` removes a key)."""
        body: dict[str, Any] = {"streamSid": self.stream_sid, "accountSid": self.account_sid}
        body["callSid"] = self.call_sid
        if self.provider == "cloudonix":
            body["session"] = self.session
            body["from"] = "+15550100001"
            body["to"] = "+15550100002"
            body["context"] = "inbound"
        body["tracks"] = ["inbound"]
        body["customParameters"] = dict(self.custom_parameters)
        body["mediaFormat"] = dict(MEDIA_FORMAT)
        for key, value in self.start_fields.items():
            if value is OMIT:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def send_dtmf(self, digit: str) -> None:
        self._send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def send_mark_echo(self, name: str) -> None:
        """Echo a mark the node sent, as the provider does once the audio before it played."""
        self._send_json(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def send_stop(self) -> None:
        self._send_json(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    def send_raw(self, data: str | bytes) -> None:
        """A text (str) or binary (bytes) frame exactly as given; counters are not touched."""
        ws = self._open_ws()
        if isinstance(data, str):
            ws.protocol.send_text(data.encode())
        else:
            ws.protocol.send_binary(data)
        ws.send_data()

    async def play(self, ulaw: bytes, *, realtime: bool = True) -> int:
        """Send ``ulaw`` as 20 ms media messages; return how many went out.

        ``realtime`` paces them on the stream's grid (slot k due at ``started_at + k * 20 ms``);
        otherwise they go out back to back. The first frame takes the current slot, or the one
        after the previous frame if that is later, and each next frame the next slot, so the
        timeline never jumps inside one call. Stops early (or sends nothing), without raising,
        once the connection is no longer open: a node that hangs up mid-utterance is normal.
        """
        ws = self._ws
        if ws is None:
            raise StreamClosed("stream not opened")
        loop = asyncio.get_running_loop()
        if self.started_at is None:  # media without start: a handshake-error test
            self.started_at = loop.time()
        origin = self.started_at
        slot = max(self._slot + 1, int((loop.time() - origin) / FRAME_S))
        sid = json.dumps(self.stream_sid)
        sent = 0
        for payload in encode_frames(bytes(ulaw)):
            if realtime:
                deadline = origin + slot * FRAME_S
                if deadline > loop.time():
                    await _sleep_until(loop, deadline)
            if ws.protocol.state is not State.OPEN:
                break
            self._sequence += 1
            self._chunk += 1
            self._slot = slot
            ws.protocol.send_text(
                f'{{"event":"media","sequenceNumber":"{self._sequence}","streamSid":{sid},'
                f'"media":{{"track":"inbound","chunk":"{self._chunk}",'
                f'"timestamp":"{slot * FRAME_MS}","payload":"{payload}"}}}}'.encode()
            )
            ws.send_data()
            sent += 1
            slot += 1
            await ws.drain()  # returns at once unless the node stopped reading
        return sent

    # -- what the node sent -------------------------------------------------------------------

    def received_audio(self) -> bytes:
        """Every media payload the node sent, decoded and concatenated in arrival order."""
        return bytes(self._audio)

    @property
    def audio_bytes(self) -> int:
        """len(received_audio()) without copying it (for `wait_for` predicates)."""
        return len(self._audio)

    def events(self) -> list[str]:
        """The ``event`` of every JSON object the node sent, in order."""
        return [str(m.get("event")) for _, m in self.received if isinstance(m, dict)]

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

    async def wait_audio(self, nbytes: int, seconds: float = 5.0) -> None:
        await self.wait_for(lambda: len(self._audio) >= nbytes, f"{nbytes} bytes of audio", seconds)

    async def wait_messages(self, count: int, seconds: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.received) >= count, f"{count} messages", seconds)

    # -- internals ----------------------------------------------------------------------------

    def _open_ws(self) -> ClientConnection:
        if self._ws is None:
            raise StreamClosed("stream not opened")
        if self._ws.protocol.state is not State.OPEN:
            raise StreamClosed(f"stream connection is {self._ws.protocol.state.name.lower()}")
        return self._ws

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _send_json(self, message: dict[str, Any]) -> None:
        ws = self._open_ws()
        ws.protocol.send_text(json.dumps(message, separators=(",", ":")).encode())
        ws.send_data()

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for frame in ws:
                self._on_frame(frame, loop.time())
        except ConnectionClosed:
            pass  # an abnormal close; wait_closed reports its code
        finally:
            self._closed.set()
            self._changed.set()

    def _violation(self, text: str) -> None:
        self.violations.append(f"message {len(self.received)}: {text}")

    def _on_frame(self, frame: str | bytes, at: float) -> None:
        try:
            self._check(frame, at)
        finally:
            self._changed.set()

    def _check(self, frame: str | bytes, at: float) -> None:
        if isinstance(frame, bytes):
            self.received.append((at, frame))
            self._violation(f"binary frame of {len(frame)} bytes")
            return
        try:
            message: Any = json.loads(frame)
        except ValueError:
            self.received.append((at, frame))
            self._violation(f"invalid JSON: {frame[:120]!r}")
            return
        self.received.append((at, message))
        if not isinstance(message, dict):
            self._violation(f"JSON that is not an object: {frame[:120]!r}")
            return
        event = message.get("event")
        if not self._start_sent:
            self._violation(f"{event!r} before start was sent")
        elif message.get("streamSid") != self.stream_sid:
            self._violation(f"streamSid {message.get('streamSid')!r} is not {self.stream_sid!r}")
        if event == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._violation(f"media without a payload string: {frame[:120]!r}")
                return
            try:
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except binascii.Error:
                self._violation(f"payload is not base64: {payload[:40]!r}")
                return
            if not audio:
                self._violation("empty media payload")
            self._audio += audio
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._violation(f"mark without a name string: {frame[:120]!r}")
                return
            self.marks.append((name, at))
        elif event == "clear":
            self.clears.append(at)
        else:
            self._violation(f"unexpected event {event!r}")


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep to an absolute loop time (``call_at``), not for a computed delay."""
    waiter = loop.create_future()
    handle = loop.call_at(deadline, _wake, waiter)
    try:
        await waiter
    finally:
        handle.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
