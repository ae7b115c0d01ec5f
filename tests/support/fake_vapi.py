"""FakeVapi: Vapi's create-call REST API and WebSocket transport on one loopback port.

Built from Vapi's published protocol: ``POST /call`` (bearer key, ``transport.provider =
"vapi.websocket"``) answers 201 with the call's ``id`` and ``transport.websocketCallUrl``
(``ws://127.0.0.1:PORT/<id>/transport``); that socket carries raw audio as binary frames both
ways and JSON control messages as text frames.

Why one port and not the websockets server: Vapi serves both on one origin, and the gateway's
``vapi_api_base`` is one origin. websockets' own server parses every request as a handshake and
refuses a request body ("unsupported request body") before its ``process_request`` hook runs, so
it cannot answer ``POST /call``. Instead a plain asyncio stream server reads each request head
and either answers the REST call itself or hands the upgrade to websockets' sans-I/O
`ServerProtocol`, which does all WebSocket framing, pings and the closing handshake.

Behaviour is set by attributes a test may change between calls (see `FakeVapi.__init__`): echo
caller audio in chunks of a chosen size, a greeting, barge-in messages after some caller audio
or on demand, transcript and status noise, closing after a time or some audio, slow REST, slow
upgrade, forced REST status or body. Everything received is recorded: create-call requests
(headers, body), upgrade requests, binary frames, text frames (end-call ...) and close codes.
Every wait is bounded; `stop` ends every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

__all__ = ["API_KEY", "CreateRequest", "FakeVapi", "FakeVapiCall", "VapiSession"]

HOST = "127.0.0.1"
API_KEY = "vapi-test-key-7d1f0c2a9b8e4f63"  # the key the fake accepts unless told otherwise
HEAD_LIMIT = 64 * 1024  # request head and REST body cap
HEAD_TIMEOUT = 5.0  # seconds a client may take to send a request head or body
SEND_TIMEOUT = 5.0  # seconds a send may wait for the gateway to read
STOP_TIMEOUT = 3.0  # seconds `stop` waits for connections to end before giving up
NOISE_EVERY_BYTES = 8000  # with ``noise``: a transcript message per second of caller audio
ULAW_BYTES_PER_SECOND = 8000


@dataclass(slots=True)
class CreateRequest:
    """One ``POST /call`` as received, and the status the fake answered."""

    headers: Headers
    raw: bytes
    body: Any  # the parsed JSON, None when it was not JSON
    status: int = 0


@dataclass(slots=True)
class FakeVapiCall:
    """A call created by ``POST /call``. Its socket may be opened once."""

    call_id: str
    body: dict[str, Any]
    session: VapiSession | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """One frame from the gateway: ``text`` or ``data`` (binary), with its arrival time."""

    at: float
    text: str | None
    data: bytes | None


@dataclass(slots=True)
class _Upgrade:
    path: str
    headers: Headers
    status: int


class VapiSession:
    """One gateway connection to a call's transport socket, as Vapi sees it."""

    def __init__(
        self,
        fake: FakeVapi,
        call: FakeVapiCall,
        protocol: ServerProtocol,
        request: Request,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.fake = fake
        self.call = call
        self.call_id = call.call_id
        self.path = request.path
        self.headers = request.headers
        self.received: list[Received] = []
        self.audio = bytearray()  # caller audio, in order
        self.frames: list[bytes] = []  # caller binary frames, as framed by the gateway
        self.messages: list[Any] = []  # parsed text frames (None for invalid JSON)
        self.sent_audio = bytearray()  # audio the fake sent to the gateway
        self.close_code: int | None = None  # the code the gateway closed (or answered) with
        self.close_reason: str | None = None
        self.closed_by_fake = False
        self.done = asyncio.Event()
        self._protocol = protocol
        self._writer = writer
        self._changed = asyncio.Event()
        self._echo_buffer = bytearray()
        self._barged = False
        self._noise_mark = NOISE_EVERY_BYTES
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the test sees ------------------------------------------------------------------

    def types(self) -> list[str]:
        """The ``type`` of every JSON text frame the gateway sent, in order."""
        return [m.get("type") for m in self.messages if isinstance(m, dict)]

    @property
    def end_calls(self) -> int:
        return self.types().count("end-call")

    async def wait_for(
        self, predicate: Callable[[], bool], what: str = "condition", seconds: float = 5.0
    ) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"fake Vapi: no {what} within {seconds} s") from None

    async def wait_audio(self, count: int, seconds: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.audio) >= count, f"{count} audio bytes", seconds)

    async def wait_closed(self, seconds: float = 5.0) -> None:
        await self.wait_for(self.done.is_set, "close", seconds)

    # -- what the test makes Vapi do ---------------------------------------------------------

    async def send_audio(self, ulaw: bytes, chunk: int | None = None) -> None:
        """Assistant audio as binary frames of ``chunk`` bytes (one frame when None)."""
        size = chunk or len(ulaw) or 1
        for start in range(0, len(ulaw), size):
            piece = ulaw[start : start + size]
            self.sent_audio += piece
            await self._send(Opcode.BINARY, piece)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self._send(Opcode.TEXT, text.encode())

    async def send_raw_bytes(self, data: bytes) -> None:
        await self._send(Opcode.BINARY, data)

    async def speech_update(self, role: str = "user", status: str = "started") -> None:
        await self.send_json({"type": "speech-update", "status": status, "role": role, "turn": 1})

    async def user_interrupted(self) -> None:
        await self.send_json({"type": "user-interrupted", "turnId": str(uuid.uuid4())})

    async def barge_in(self) -> None:
        """The messages of ``fake.barge_in_messages``, in order."""
        for kind in self.fake.barge_in_messages:
            if kind == "user-interrupted":
                await self.user_interrupted()
            else:
                await self.speech_update("user", "started")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Vapi ends the call: close frame, then wait (bounded) for the gateway's answer."""
        if self._protocol.state is State.OPEN:
            self.closed_by_fake = True
            self._protocol.send_close(code, reason)
            self._flush()
        with contextlib.suppress(AssertionError):
            await self.wait_closed(SEND_TIMEOUT)
        if not self.done.is_set():
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection with no close frame (Vapi crashed)."""
        self.closed_by_fake = True
        self._writer.transport.abort()

    # -- the connection ----------------------------------------------------------------------

    async def run(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        self._start(self._on_open())
        try:
            while True:
                data = await reader.read(65536)
                protocol = self._protocol
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                events = protocol.events_received()
                self._flush()
                for event in events:
                    if isinstance(event, Frame):
                        await self._on_frame(event, loop.time())
                if not data or protocol.state is State.CLOSED:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            received = self._protocol.close_rcvd
            if received is not None:
                self.close_code, self.close_reason = received.code, received.reason
            self._writer.close()
            self.done.set()
            self._changed.set()

    def _start(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_open(self) -> None:
        fake = self.fake
        if fake.close_after_seconds is not None:  # counted from the open, greeting or not
            self._start(self._close_later(fake.close_after_seconds))
        if fake.noise:
            await self.send_json({"type": "status-update", "status": "in-progress"})
            await self.send_json({"type": "conversation-update", "conversation": []})
        if fake.greeting:
            await self._paced(fake.greeting, fake.greeting_chunk)

    async def _close_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.close(1000, "assistant ended the call")

    async def _paced(self, ulaw: bytes, chunk: int) -> None:
        if not self.fake.realtime:
            await self.send_audio(ulaw, chunk)
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        for start in range(0, len(ulaw), chunk):
            await asyncio.sleep(max(0.0, began + start / ULAW_BYTES_PER_SECOND - loop.time()))
            piece = ulaw[start : start + chunk]
            self.sent_audio += piece
            await self._send(Opcode.BINARY, piece)

    async def _on_frame(self, frame: Frame, at: float) -> None:
        fake = self.fake
        if frame.opcode is Opcode.BINARY:
            data = bytes(frame.data)
            self.received.append(Received(at, None, data))
            self.frames.append(data)
            self.audio += data
            self._changed.set()
            if fake.echo:
                self._echo_buffer += data
                size = fake.echo_chunk
                while len(self._echo_buffer) >= size:
                    piece = bytes(self._echo_buffer[:size])
                    del self._echo_buffer[:size]
                    self.sent_audio += piece
                    await self._send(Opcode.BINARY, piece)
            total = len(self.audio)
            if fake.noise and total >= self._noise_mark:
                self._noise_mark += NOISE_EVERY_BYTES
                await self.send_json(
                    {
                        "type": "transcript",
                        "role": "user",
                        "transcriptType": "partial",
                        "transcript": "hello",
                    }
                )
            after = fake.barge_in_after_bytes
            if after is not None and not self._barged and total >= after:
                self._barged = True
                await self.barge_in()
            after = fake.close_after_bytes
            if after is not None and total >= after and self._protocol.state is State.OPEN:
                self._start(self.close(1000, "assistant ended the call"))
        elif frame.opcode is Opcode.TEXT:
            text = bytes(frame.data).decode(errors="replace")
            self.received.append(Received(at, text, None))
            try:
                message: Any = json.loads(text)
            except ValueError:
                message = None
            self.messages.append(message)
            self._changed.set()
            is_end = isinstance(message, dict) and message.get("type") == "end-call"
            if is_end and fake.close_on_end_call and self._protocol.state is State.OPEN:
                self._start(self.close(1000, "customer ended the call"))

    async def _send(self, opcode: Opcode, data: bytes) -> None:
        protocol = self._protocol
        if protocol.state is not State.OPEN:
            return
        if opcode is Opcode.BINARY:
            protocol.send_binary(data)
        else:
            protocol.send_text(data)
        self._flush()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._writer.drain()

    def _flush(self) -> None:
        writer = self._writer
        for chunk in self._protocol.data_to_send():
            if writer.transport.is_closing():
                return
            if chunk:
                writer.write(chunk)
            elif writer.can_write_eof():
                writer.write_eof()


class FakeVapi:
    """A fake Vapi on 127.0.0.1 (port chosen by the OS): ``vapi_api_base = fake.url``.

    Use as ``async with FakeVapi(echo=True) as vapi:``; each socket opened to a created call
    becomes a `VapiSession`, handed out by ``await vapi.next_session()``.
    """

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        echo: bool = False,
        echo_chunk: int = 320,
        greeting: bytes = b"",
        greeting_chunk: int = 320,
        realtime: bool = False,
        noise: bool = False,
        barge_in_after_bytes: int | None = None,
        barge_in_messages: tuple[str, ...] = ("speech-update", "user-interrupted"),
        close_after_seconds: float | None = None,
        close_after_bytes: int | None = None,
        close_on_end_call: bool = False,
        rest_status: int | None = None,
        rest_body: bytes | None = None,
        rest_delay: float = 0.0,
        upgrade_delay: float = 0.0,
    ) -> None:
        self.api_key = api_key  # the bearer key POST /call accepts (else 401)
        self.echo = echo  # send caller audio back as binary frames ...
        self.echo_chunk = echo_chunk  # ... of this many bytes (e.g. 320 = 40 ms, 800 = 100 ms)
        self.greeting = greeting  # μ-law sent as soon as the socket opens
        self.greeting_chunk = greeting_chunk
        self.realtime = realtime  # pace the greeting at 8000 bytes per second
        self.noise = noise  # status/conversation updates at open, transcripts every second
        self.barge_in_after_bytes = barge_in_after_bytes  # send barge_in_messages once after this
        self.barge_in_messages = barge_in_messages  # "speech-update" and/or "user-interrupted"
        self.close_after_seconds = close_after_seconds  # Vapi hangs up (close 1000) after this
        self.close_after_bytes = close_after_bytes  # ... or after this much caller audio
        self.close_on_end_call = close_on_end_call  # answer end-call by closing 1000 itself
        self.rest_status = rest_status  # POST /call answers this status (with a valid key)
        self.rest_body = rest_body  # POST /call answers 201 with this body instead
        self.rest_delay = rest_delay  # seconds before POST /call answers
        self.upgrade_delay = upgrade_delay  # seconds before the socket upgrade answers
        self.creates: list[CreateRequest] = []
        self.upgrades: list[_Upgrade] = []
        self.calls: dict[str, FakeVapiCall] = {}
        self.sessions: list[VapiSession] = []
        self.port = 0
        self._queue: asyncio.Queue[VapiSession] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """The API origin, for ``vapi_api_base``."""
        return f"http://{HOST}:{self.port}"

    def socket_url(self, call_id: str) -> str:
        return f"ws://{HOST}:{self.port}/{call_id}/transport"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, HOST, 0, limit=HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            if not session.done.is_set():
                session.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=STOP_TIMEOUT)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self._server.wait_closed()

    async def __aenter__(self) -> FakeVapi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def next_session(self, seconds: float = 5.0) -> VapiSession:
        async with asyncio.timeout(seconds):
            return await self._queue.get()

    # -- connections -------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                first = await reader.readexactly(1)
                if not first.isalpha():  # e.g. a TLS ClientHello: answer in clear, like HTTP
                    writer.write(_http(HTTPStatus.BAD_REQUEST, {"message": "plain HTTP only"}))
                    return
                head = first + await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"POST "):
                await self._rest(head, reader, writer)
            else:
                await self._upgrade(head, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the connection ends with the fake
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short when the fake stops."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._closing.wait()

    # -- REST: POST /call --------------------------------------------------------------------

    async def _rest(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else ""
        headers = Headers()
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
        try:
            length = int(headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= HEAD_LIMIT:
            writer.write(_http(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "body size"}))
            return
        async with asyncio.timeout(HEAD_TIMEOUT):
            raw = await reader.readexactly(length)
        if urlsplit(target).path != "/call":
            writer.write(_http(HTTPStatus.NOT_FOUND, {"message": f"Cannot POST {target}"}))
            return
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        record = CreateRequest(headers, raw, body)
        self.creates.append(record)
        await self._pause(self.rest_delay)
        status, answer = self._create(headers, body)
        record.status = status
        writer.write(_http(status, answer))
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(SEND_TIMEOUT):
                await writer.drain()

    def _create(self, headers: Headers, body: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, _error(401, "Invalid Key. Hot tip, you may be using the private key.")
        if self.rest_status is not None:
            return self.rest_status, _error(self.rest_status, "forced by the test")
        if not isinstance(body, dict):
            return 400, _error(400, "body must be a JSON object")
        transport = body.get("transport")
        if not isinstance(transport, dict) or transport.get("provider") != "vapi.websocket":
            return 400, _error(400, "transport.provider must be vapi.websocket")
        if "phoneNumber" in body or "phoneNumberId" in body:
            return 400, _error(400, "phoneNumber is not allowed with a websocket transport")
        if not isinstance(body.get("assistantId"), str) and "assistant" not in body:
            return 400, _error(400, "assistantId or assistant is required")
        call_id = str(uuid.uuid4())
        self.calls[call_id] = FakeVapiCall(call_id, body)
        if self.rest_body is not None:
            return 201, self.rest_body
        return 201, {
            "id": call_id,
            "orgId": "00000000-0000-4000-8000-00000000f4ce",
            "type": "vapi.websocketCall",
            "status": "queued",
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "transport": {
                "provider": "vapi.websocket",
                "websocketCallUrl": self.socket_url(call_id),
            },
        }

    # -- the transport socket ----------------------------------------------------------------

    async def _upgrade(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        protocol = ServerProtocol(max_size=1 << 20)
        protocol.receive_data(head)
        requests = [event for event in protocol.events_received() if isinstance(event, Request)]
        if not requests:  # not a parsable handshake: the core queued a 400 answer
            _write_all(protocol, writer)
            return
        request = requests[0]
        await self._pause(self.upgrade_delay)
        parts = urlsplit(request.path).path.strip("/").split("/")
        call = self.calls.get(parts[0]) if len(parts) == 2 and parts[1] == "transport" else None
        if self._closing.is_set():
            response = protocol.reject(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        elif call is None or call.session is not None:
            response = protocol.reject(HTTPStatus.NOT_FOUND, "no such call\n")
        else:
            response = protocol.accept(request)
        protocol.send_response(response)
        self.upgrades.append(_Upgrade(request.path, request.headers, response.status_code))
        _write_all(protocol, writer)
        if response.status_code != 101 or call is None:
            return
        session = VapiSession(self, call, protocol, request, writer)
        call.session = session
        self.sessions.append(session)
        self._queue.put_nowait(session)
        await session.run(reader)


def _error(status: int, message: str) -> dict[str, Any]:
    return {"message": message, "statusCode": status}


def _http(status: int, body: Any) -> bytes:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(content)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + content


def _write_all(protocol: ServerProtocol, writer: asyncio.StreamWriter) -> None:
    for chunk in protocol.data_to_send():
        if chunk:
            writer.write(chunk)
