"""FakeElevenLabs: the ElevenLabs Agents REST and conversation WebSocket on one loopback port.

Why a fake: the gateway is an ElevenLabs *client*, like the official SDK, so neither can test
the other; both are tested against this server, built from the published protocol and checked
once against the SDK (tests/support/test_fake_elevenlabs_sdk.py). It serves

- ``GET /v1/convai/conversation/get-signed-url?agent_id=...`` (plain HTTP on the same port,
  answered from the WebSocket server's ``process_request`` hook): checks ``xi-api-key``, returns
  ``{"signed_url": "ws://127.0.0.1:PORT/v1/convai/conversation?agent_id=...&
  conversation_signature=..."}`` with a fresh one-time signature, or a forced status;
- ``/v1/convai/conversation``: a public agent with ``agent_id`` only (``public=True``), or a
  valid signature. It waits for the client's initiation, answers with the conversation
  metadata in the configured formats, then runs the configured behaviour: echo caller audio
  back as agent audio (converted with stdlib `audioop`, independently of the gateway's own
  converter), a greeting, pings, a hang-up after some seconds, DTMF-driven actions (the
  gateway sends key presses as ``contextual_update`` "caller pressed N"), or whatever a test
  scripts through the `FakeSession` methods.

Everything the client sends is recorded per session (first message, decoded audio, pongs,
contextual updates, upgrade headers) and protocol mistakes become readable ``violations``; a
test asserts ``session.violations == []``.

Use ``async with FakeElevenLabs(...) as fake:`` in async tests, or ``with running_fake(...) as
fake:`` from sync code (interop tests, benchmarks): the latter runs the server on its own event
loop in a thread; script it with ``fake.submit(session.hang_up())``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import secrets
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "DEFAULT_AGENT_ID",
    "DEFAULT_API_KEY",
    "FakeElevenLabs",
    "FakeSession",
    "RestRequest",
    "decode_audio",
    "running_fake",
    "tone",
]

HOST = "127.0.0.1"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
CONVERSATION_PATH = "/v1/convai/conversation"
DEFAULT_API_KEY = "xi-test-key-7f3a9c"  # a made-up key; tests check it never leaks
DEFAULT_AGENT_ID = "agent_fake_01"
FORMAT_RATES = {
    "ulaw_8000": 8000,
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
}
CLIENT_TYPES = frozenset(
    {
        "conversation_initiation_client_data",
        "pong",
        "user_activity",
        "user_message",
        "contextual_update",
        "client_tool_result",
        "feedback",
        "multimodal_message",
    }
)
WAIT_SECONDS = 5.0  # default bound of every wait helper
STOP_SECONDS = 5.0
# websockets' DEBUG lines quote request lines and headers (a signature, a test key): the fake's
# own logger stays at INFO so tests that search every log record for secrets see only ours.
_WIRE_LOGGER = logging.getLogger("tests.fake_elevenlabs.wire")
_WIRE_LOGGER.setLevel(logging.INFO)


# -- audio helpers (independent of edge_media.drivers.audio_format) -------------------------


def tone(
    audio_format: str, frequency: float, ms: int, *, level: float = 0.5, start: int = 0
) -> bytes:
    """A sine of ``frequency`` Hz, ``ms`` long, at ``level`` of full scale, in ``audio_format``.
    ``start`` is the first sample's index, so consecutive calls continue one phase."""
    rate = FORMAT_RATES[audio_format]
    count = rate * ms // 1000
    index = np.arange(start, start + count)
    samples = np.round(np.sin(2 * np.pi * frequency * index / rate) * level * 32767)
    pcm = samples.astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2) if audio_format == "ulaw_8000" else pcm


def decode_audio(audio_format: str, data: bytes) -> np.ndarray:
    """Audio in ``audio_format`` as float samples in [-1, 1) (an odd PCM byte is dropped)."""
    if audio_format == "ulaw_8000":
        data = audioop.ulaw2lin(data, 2)
    data = data[: len(data) - len(data) % 2]
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


class _Converter:
    """Caller format → agent format for the echo, with `audioop.ratecv` state per session."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target
        self._state: Any = None
        self._odd = b""

    def convert(self, data: bytes) -> bytes:
        if self.source == self.target:
            return data
        if self.source == "ulaw_8000":
            pcm = audioop.ulaw2lin(data, 2)
        else:
            pcm = self._odd + data
            self._odd = pcm[len(pcm) - len(pcm) % 2 :]
            pcm = pcm[: len(pcm) - len(pcm) % 2]
        source_rate, target_rate = FORMAT_RATES[self.source], FORMAT_RATES[self.target]
        if source_rate != target_rate:
            pcm, self._state = audioop.ratecv(pcm, 2, 1, source_rate, target_rate, self._state)
        return audioop.lin2ulaw(pcm, 2) if self.target == "ulaw_8000" else pcm


# -- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One signed-URL request: what it asked and what it got (the key itself is not kept)."""

    path: str
    agent_id: str | None
    key_present: bool
    key_valid: bool
    status: int


class FakeSession:
    """One conversation socket as the fake agent sees it."""

    def __init__(self, fake: FakeElevenLabs, ws: ServerConnection) -> None:
        request = ws.request
        self.fake = fake
        self.ws = ws
        self.path = request.path if request is not None else ""
        self.headers: Headers = request.headers if request is not None else Headers()
        query = parse_qs(urlsplit(self.path).query)
        self.query = {name: values[0] for name, values in query.items()}
        self.agent_id = self.query.get("agent_id")
        self.signed = "conversation_signature" in self.query
        self.api_key_on_upgrade = "xi-api-key" in self.headers
        self.input_format = fake.input_format
        self.output_format = fake.output_format
        self.conversation_id = "conv_" + secrets.token_hex(8)
        self.messages: list[Any] = []  # every parsed JSON message (or raw text when invalid)
        self.first_message: dict[str, Any] | None = None
        self.audio_chunks: list[bytes] = []  # caller audio, decoded, in order
        self.audio = bytearray()
        self.pongs: list[int] = []
        self.contextual_updates: list[str] = []
        self.user_messages: list[str] = []
        self.tool_results: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.pings_sent: list[int] = []
        self.audio_event_ids: list[int] = []  # ids of the audio events sent
        self.metadata_sent = asyncio.Event()
        self.close_code: int | None = None  # how the client closed (None while open)
        self.close_reason: str | None = None
        self.closed_by_agent = False
        self.done = asyncio.Event()
        self._event_ids = itertools.count(1)  # the SDK drops audio with event_id <= 0
        self._echo = _Converter(self.input_format, self.output_format)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS
    ) -> None:
        """Until ``predicate()`` holds (checked after every message and at the close);
        `AssertionError` naming ``what`` after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {seconds:g} s") from None

    async def wait_audio(self, size: int, seconds: float = WAIT_SECONDS) -> None:
        await self.wait_for(lambda: len(self.audio) >= size, f"{size} bytes of audio", seconds)

    async def wait_closed(self, seconds: float = WAIT_SECONDS) -> None:
        await self.wait_for(self.done.is_set, "close", seconds)

    # -- what the agent sends ----------------------------------------------------------------

    def next_event_id(self) -> int:
        return next(self._event_ids)

    async def send_metadata(self) -> None:
        await self.send_json(
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": {
                    "conversation_id": self.conversation_id,
                    "agent_output_audio_format": self.output_format,
                    "user_input_audio_format": self.input_format,
                },
            }
        )
        self.metadata_sent.set()

    async def send_audio(self, data: bytes, event_id: int | None = None) -> int:
        """One agent audio event (``data`` in the output format); returns its event_id."""
        event_id = self.next_event_id() if event_id is None else event_id
        self.audio_event_ids.append(event_id)
        payload = base64.b64encode(data).decode("ascii")
        await self.send_json(
            {"type": "audio", "audio_event": {"audio_base_64": payload, "event_id": event_id}}
        )
        return event_id

    async def send_interruption(self, event_id: int | None = None) -> int:
        """Barge-in for ``event_id`` (default: the last audio event sent)."""
        if event_id is None:
            event_id = self.audio_event_ids[-1] if self.audio_event_ids else 0
        await self.send_json({"type": "interruption", "interruption_event": {"event_id": event_id}})
        return event_id

    async def interrupt_with_stale_audio(self, stale: bytes, fresh: bytes | None = None) -> int:
        """An interruption, then audio that was already in flight (same event_id: stale),
        then optionally ``fresh`` audio of a new reply. Returns the interrupted id."""
        interrupted = await self.send_interruption()
        await self.send_audio(stale, event_id=interrupted)
        if fresh is not None:
            await self.send_audio(fresh)
        return interrupted

    async def send_ping(self, ping_ms: int | None = 42) -> int:
        event_id = self.next_event_id()
        self.pings_sent.append(event_id)
        await self.send_json(
            {"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": ping_ms}}
        )
        return event_id

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        """A text (str) or binary (bytes) frame exactly as given."""
        await self.ws.send(data)

    async def hang_up(self, code: int = 1000, reason: str = "Agent ended the call") -> None:
        """The agent ends the conversation: a normal close with a reason."""
        self.closed_by_agent = True
        await self.ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection with no close frame (a crashed server)."""
        self.closed_by_agent = True
        self.ws.transport.abort()

    # -- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        if self.api_key_on_upgrade:
            self._violation("xi-api-key header on the WebSocket upgrade")
        try:
            async for frame in self.ws:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            if not self.closed_by_agent:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
            self.done.set()
            self._changed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_conversation(self) -> None:
        fake = self.fake
        if not fake.send_metadata:
            return
        if fake.metadata_delay:
            await asyncio.sleep(fake.metadata_delay)
        await self.send_metadata()
        if fake.greeting is not None:
            step = FORMAT_RATES[self.output_format] * fake.greeting_chunk_ms // 1000
            step *= 1 if self.output_format == "ulaw_8000" else 2
            for offset in range(0, len(fake.greeting), max(step, 2)):
                await self.send_audio(fake.greeting[offset : offset + step])
        if fake.ping_interval is not None:
            self._spawn(self._pinging(fake.ping_interval))
        if fake.hangup_after is not None:
            self._spawn(self._hang_up_later(fake.hangup_after))

    async def _pinging(self, interval: float) -> None:
        while True:
            await self.send_ping()
            await asyncio.sleep(interval)

    async def _hang_up_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.hang_up()

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, bytes):
                self._violation(f"binary frame of {len(frame)} bytes")
                return
            try:
                message: Any = json.loads(frame)
            except ValueError:
                self.messages.append(frame)
                self._violation(f"invalid JSON: {frame[:80]!r}")
                return
            self.messages.append(message)
            if not isinstance(message, dict):
                self._violation(f"JSON that is not an object: {frame[:80]!r}")
                return
            if len(self.messages) == 1:
                self.first_message = message
                if message.get("type") != "conversation_initiation_client_data":
                    self._violation(f"first message is not the initiation: {frame[:80]!r}")
                self._spawn(self._start_conversation())
                return
            await self._check(message)
        finally:
            self._changed.set()

    async def _check(self, message: dict[str, Any]) -> None:
        if "user_audio_chunk" in message:
            await self._user_audio(message)
            return
        kind = message.get("type")
        if kind not in CLIENT_TYPES:
            self._violation(f"unknown client message type {kind!r}")
        elif kind == "conversation_initiation_client_data":
            self._violation("a second initiation message")
        elif kind == "pong":
            event_id = message.get("event_id")
            if event_id not in self.pings_sent or event_id in self.pongs:
                self._violation(f"pong for event_id {event_id!r}, pings sent {self.pings_sent}")
            self.pongs.append(event_id)  # type: ignore[arg-type]
        elif kind == "contextual_update":
            text = message.get("text")
            if not isinstance(text, str):
                self._violation(f"contextual_update text {text!r}")
                return
            self.contextual_updates.append(text)
            await self._dtmf_action(text)
        elif kind == "user_message":
            self.user_messages.append(str(message.get("text")))
        elif kind == "client_tool_result":
            self.tool_results.append(message)

    async def _user_audio(self, message: dict[str, Any]) -> None:
        if set(message) != {"user_audio_chunk"}:
            self._violation(f"audio message keys {sorted(message)}")
        payload = message.get("user_audio_chunk")
        try:
            chunk = base64.b64decode(payload, validate=True)  # type: ignore[arg-type]
        except (binascii.Error, TypeError, ValueError):
            self._violation(f"user_audio_chunk is not base64: {str(payload)[:40]!r}")
            return
        self.audio_chunks.append(chunk)
        self.audio += chunk
        if self.fake.echo and self.metadata_sent.is_set():
            echoed = self._echo.convert(chunk)
            if echoed:
                await self.send_audio(echoed)

    async def _dtmf_action(self, text: str) -> None:
        prefix = "caller pressed "
        if not text.startswith(prefix):
            return
        action = self.fake.dtmf_actions.get(text[len(prefix) :])
        if action == "hangup":
            await self.hang_up()
        elif action == "interrupt":
            await self.interrupt_with_stale_audio(
                tone(self.output_format, 440, 100), tone(self.output_format, 660, 100)
            )
        elif action == "ping":
            await self.send_ping()

    def _violation(self, text: str) -> None:
        self.violations.append(f"message {len(self.messages)}: {text}")


class FakeElevenLabs:
    """The fake ElevenLabs API on 127.0.0.1 (port chosen by the OS): ``fake.api_base`` is the
    value for ``elevenlabs_api_base``. Attributes may be changed between calls."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        agent_id: str | None = DEFAULT_AGENT_ID,
        public: bool = True,
        input_format: str = "ulaw_8000",
        output_format: str = "ulaw_8000",
        echo: bool = False,
        greeting: bytes | None = None,
        greeting_chunk_ms: int = 100,
        ping_interval: float | None = None,
        hangup_after: float | None = None,
        metadata_delay: float = 0.0,
        send_metadata: bool = True,
        signed_url_status: int | None = None,
        dtmf_actions: dict[str, str] | None = None,
    ) -> None:
        for name in (input_format, output_format):
            if name not in FORMAT_RATES:
                raise ValueError(f"unknown format {name!r}")
        self.api_key = api_key
        self.agent_id = agent_id  # None: any agent id exists
        self.public = public  # False: the socket needs a signature from the REST call
        self.input_format = input_format
        self.output_format = output_format
        self.echo = echo
        self.greeting = greeting
        self.greeting_chunk_ms = greeting_chunk_ms
        self.ping_interval = ping_interval
        self.hangup_after = hangup_after
        self.metadata_delay = metadata_delay
        self.send_metadata = send_metadata
        self.signed_url_status = signed_url_status
        self.dtmf_actions = dict(dtmf_actions or {"#": "hangup", "1": "interrupt"})
        self.rest_requests: list[RestRequest] = []
        self.refused_upgrades: list[tuple[str, int]] = []  # (path without query, status)
        self.sessions: list[FakeSession] = []
        self.port = 0
        self._signatures: dict[str, str] = {}  # one-time signature -> agent id
        self._queue: asyncio.Queue[FakeSession] | None = None
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def api_base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def conversation_url(self) -> str:
        """The public conversation URL of the configured agent."""
        return f"ws://{HOST}:{self.port}{CONVERSATION_PATH}?agent_id={self.agent_id}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._server = await serve(
            self._handle,
            HOST,
            0,
            process_request=self._process_request,
            ping_interval=None,
            compression=None,
            max_size=16 * 1024 * 1024,
            logger=_WIRE_LOGGER,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await self._server.wait_closed()
            except TimeoutError:
                pass

    async def __aenter__(self) -> FakeElevenLabs:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def next_session(self, seconds: float = WAIT_SECONDS) -> FakeSession:
        """The next conversation socket opened (in order)."""
        assert self._queue is not None, "the fake is not started"
        try:
            async with asyncio.timeout(seconds):
                return await self._queue.get()
        except TimeoutError:
            raise AssertionError(f"no conversation opened within {seconds:g} s") from None

    def submit(self, coro: Coroutine[Any, Any, Any], seconds: float = WAIT_SECONDS) -> Any:
        """Run ``coro`` on the fake's loop from another thread (see `running_fake`)."""
        assert self._loop is not None, "the fake is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(seconds)

    # -- HTTP --------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        if parts.path == SIGNED_URL_PATH:
            return self._signed_url(request, query)
        if parts.path != CONVERSATION_PATH:
            return self._refuse(parts.path, HTTPStatus.NOT_FOUND)
        agent_id = query.get("agent_id")
        if not agent_id or (self.agent_id is not None and agent_id != self.agent_id):
            return self._refuse(parts.path, HTTPStatus.NOT_FOUND)
        signature = query.get("conversation_signature")
        if signature is not None:
            if self._signatures.pop(signature, None) != agent_id:
                return self._refuse(parts.path, HTTPStatus.FORBIDDEN)
        elif not self.public:
            return self._refuse(parts.path, HTTPStatus.FORBIDDEN)
        return None

    def _signed_url(self, request: Request, query: dict[str, str]) -> Response:
        key = request.headers.get("xi-api-key")
        agent_id = query.get("agent_id")
        if self.signed_url_status is not None:
            status = self.signed_url_status
        elif key != self.api_key:
            status = HTTPStatus.UNAUTHORIZED
        elif not agent_id or (self.agent_id is not None and agent_id != self.agent_id):
            status = HTTPStatus.NOT_FOUND
        else:
            status = HTTPStatus.OK
        self.rest_requests.append(
            RestRequest(SIGNED_URL_PATH, agent_id, key is not None, key == self.api_key, status)
        )
        if status == HTTPStatus.OK:
            signature = secrets.token_urlsafe(24)
            self._signatures[signature] = agent_id  # type: ignore[assignment]
            query_text = urlencode({"agent_id": agent_id, "conversation_signature": signature})
            body: dict[str, Any] = {
                "signed_url": f"ws://{HOST}:{self.port}{CONVERSATION_PATH}?{query_text}"
            }
        else:
            body = {"detail": {"status": "refused", "message": f"fake refusal {status}"}}
        return _json_response(status, body)

    def _refuse(self, path: str, status: int) -> Response:
        self.refused_upgrades.append((path, status))
        return _json_response(status, {"detail": "refused by the fake"})

    # -- WebSocket ---------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session = FakeSession(self, ws)
        self.sessions.append(session)
        assert self._queue is not None
        self._queue.put_nowait(session)
        await session.run()


def _json_response(status: int, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    )
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return Response(int(status), phrase, headers, data)


@contextlib.contextmanager
def running_fake(**config: Any) -> Iterator[FakeElevenLabs]:
    """A started `FakeElevenLabs` on its own event loop in a daemon thread, for sync code."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-elevenlabs", daemon=True)
    thread.start()
    fake = FakeElevenLabs(**config)
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(STOP_SECONDS)
        yield fake
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(fake.close(), loop).result(STOP_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_SECONDS)
        if not thread.is_alive():
            loop.close()
