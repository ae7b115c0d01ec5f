"""The ElevenLabs fake agent for bench/calls.py: the conversation protocol, cheap enough to share
a 2-core box with the node it measures.

Run by bench/calls.py as its own process (so /proc gives the node's CPU alone):

    python bench/peers/elevenlabs_fast.py --port 8766 --out sessions.jsonl \
        [--format ulaw_8000|pcm_16000] [--agent-id ID] [--api-key KEY] [--ping-every 3]

Why not a websockets asyncio server: at 200 calls the agent receives and sends 10,000 audio
messages a second, and a task wake-up plus a ``json.loads`` per message would take a core the
node needs. As in echo_bot_fast.py, websockets' sans-I/O `ServerProtocol` sits under a plain
`asyncio.Protocol` (uvloop when installed), and a ``user_audio_chunk`` is echoed by slicing its
base64 out of the text without parsing the JSON.

Why one port for REST and socket: the node is given one origin (``AGERA_ELEVENLABS_API_BASE``)
and derives both from it. ``GET /v1/convai/conversation/get-signed-url?agent_id=…`` (header
``xi-api-key``) answers ``{"signed_url": "ws://…/v1/convai/conversation?agent_id=…&
conversation_signature=…"}``; the socket path is the same with or without the signature. With
``--api-key`` the agent is private: the GET needs that key and the socket a signature this
process issued (each once), as for a real private agent.

What the agent does, and nothing more: answers the client's
``conversation_initiation_client_data`` with ``conversation_initiation_metadata`` in
``--format`` both ways; echoes each caller chunk back unchanged as an agent ``audio`` event (for
pcm_16000 the chunks are PCM16 16 kHz, so the node converts both ways, which is what the bench
measures); sends a ``ping`` every ``--ping-every`` seconds and counts the ``pong`` answers; and
keeps the digits of the node's DTMF ``contextual_update`` texts, so the bench can check them.

What it records, one JSON line per connection when it ends (or at SIGTERM for those still open):
the agent id, whether the URL was signed, the conversation id, the dynamic variables, counts of
every message type, the epoch of the first and last caller audio (``time.time()``, the clock
tshark stamps packets with), pings sent and pongs received, and the close code. The keys
bench/calls.py reads from echo_bot_fast.py sessions (``start_at``, ``media_in``, ``echoed``,
``from_number``, ``digits``, ``close_code``, ``violations``) mean the same here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

HOST = "127.0.0.1"
SOCKET_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
FORMATS = ("ulaw_8000", "pcm_16000")
CHUNK_KEY = b'"user_audio_chunk"'
CHUNK_KEY_WITHIN = 8  # the key is the first one in the node's compact form: look only this far
AUDIO_HEAD = b'{"type":"audio","audio_event":{"audio_base_64":"'
CALLER_KEYS = ("caller_number", "system__caller_id", "caller_id", "from_number")
DTMF_PREFIX = "caller pressed "  # the node's contextual_update for a key press
MAX_MESSAGE_BYTES = 1 << 20
MAX_PENDING_SIGNATURES = 100_000  # issued but not yet used: bounded against a client that leaks
MAX_VIOLATIONS = 10
CLOSE_GRACE_S = 2.0  # after our close frame, before the TCP connection is dropped
DEFAULT_PING_S = 3.0


class Agent:
    """Settings, issued signatures and the shared output file of every session."""

    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.format: str = args.format
        self.agent_id: str | None = args.agent_id
        self.api_key: str | None = args.api_key
        self.ping_every: float = args.ping_every
        self.port: int = args.port
        self.host: str = args.host
        self.out = out
        self.signatures: set[str] = set()
        self.signed_url_requests = 0
        self.sessions: set[Session] = set()
        self.metadata_tail = (
            f'","agent_output_audio_format":"{self.format}",'
            f'"user_input_audio_format":"{self.format}"}}}}'
        )

    def signed_url(self, agent_id: str) -> str:
        signature = secrets.token_urlsafe(18)
        if len(self.signatures) < MAX_PENDING_SIGNATURES:
            self.signatures.add(signature)
        return (
            f"ws://{self.host}:{self.port}{SOCKET_PATH}?agent_id={agent_id}"
            f"&conversation_signature={signature}"
        )

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()


class Session(asyncio.Protocol):
    """One node connection: a signed-URL request, or one call's conversation."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.core = ServerProtocol(max_size=MAX_MESSAGE_BYTES)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.record: dict[str, Any] = {
            "connected_at": time.time(),
            "format": agent.format,
            "events": {},
            "media_in": 0,
            "bytes_in": 0,
            "echoed": 0,
            "pings": 0,
            "pongs": 0,
            "digits": "",
            "violations": [],
        }
        self.event_id = 0
        self.pending_pings: dict[int, float] = {}
        self.ping_rtt_ms: list[float] = []
        self.first_media: float | None = None
        self.last_media: float | None = None
        self.conversation = False  # a WebSocket, not a REST request: recorded at the end
        self.initiated = False
        self.written = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.ping_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.agent.sessions.add(self)

    def data_received(self, data: bytes) -> None:
        core = self.core
        core.receive_data(data)
        for event in core.events_received():
            if type(event) is Frame:
                if event.opcode is Opcode.TEXT:
                    self.on_text(event.data)
            elif isinstance(event, Request):
                self.on_request(event)
        self.flush()

    def eof_received(self) -> bool:
        self.core.receive_eof()
        self.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.close_timer, self.ping_timer):
            if timer is not None:
                timer.cancel()
        self.agent.sessions.discard(self)
        close = self.core.close_rcvd
        self.record["close_code"] = close.code if close is not None else None
        self.finish()

    # -- HTTP ----------------------------------------------------------------------------------

    def on_request(self, request: Request) -> None:
        core, agent = self.core, self.agent
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        agent_id = query.get("agent_id", "")
        if url.path == SIGNED_URL_PATH:
            agent.signed_url_requests += 1
            if agent.api_key is not None and request.headers.get("xi-api-key") != agent.api_key:
                core.send_response(self.json_response(401, {"detail": "invalid api key"}))
            elif not agent_id or (agent.agent_id and agent_id != agent.agent_id):
                core.send_response(self.json_response(404, {"detail": "agent not found"}))
            else:
                body = {"signed_url": agent.signed_url(agent_id)}
                core.send_response(self.json_response(200, body))
            return
        if url.path != SOCKET_PATH:
            core.send_response(core.reject(404, "not found\n"))
            return
        if agent.agent_id and agent_id != agent.agent_id:
            core.send_response(core.reject(404, "agent not found\n"))
            return
        signature = query.get("conversation_signature")
        signed = signature is not None and signature in agent.signatures
        if signed:
            agent.signatures.discard(signature)  # type: ignore[arg-type]
        elif agent.api_key is not None:  # a private agent: only a signed URL opens a socket
            core.send_response(core.reject(403, "signature required\n"))
            return
        response = core.accept(request)
        core.send_response(response)
        if response.status_code == 101:
            self.conversation = True
            self.record.update(agent_id=agent_id, signed=signed, opened_at=time.time())

    def json_response(self, status: int, body: dict[str, Any]) -> Any:
        response = self.core.reject(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # -- messages ------------------------------------------------------------------------------

    def on_text(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        key = raw.find(CHUNK_KEY, 0, CHUNK_KEY_WITHIN + len(CHUNK_KEY))
        if key >= 0:  # the caller's audio: no JSON parse
            start = raw.find(b'"', key + len(CHUNK_KEY)) + 1
            end = raw.find(b'"', start) if start > 0 else -1
            if end >= 0:
                self.echo(raw[start:end])
                return
        try:
            message = json.loads(raw)
        except ValueError:
            self.violation(f"unreadable message {raw[:60]!r}")
            return
        if not isinstance(message, dict):
            self.violation(f"not an object {raw[:60]!r}")
            return
        if "user_audio_chunk" in message:  # another key order or spacing than expected
            chunk = message["user_audio_chunk"]
            if isinstance(chunk, str):
                self.echo(chunk.encode())
            else:
                self.violation("user_audio_chunk not a string")
            return
        name = str(message.get("type"))
        events = self.record["events"]
        events[name] = events.get(name, 0) + 1
        if name == "conversation_initiation_client_data":
            self.on_initiation(message)
        elif name == "pong":
            self.on_pong(message)
        elif name == "contextual_update":
            text = str(message.get("text", ""))
            if text.startswith(DTMF_PREFIX):
                self.record["digits"] += text.removeprefix(DTMF_PREFIX)[:1]

    def on_initiation(self, message: dict[str, Any]) -> None:
        if self.initiated:
            self.violation("a second conversation_initiation_client_data")
            return
        self.initiated = True
        variables = message.get("dynamic_variables")
        variables = variables if isinstance(variables, dict) else {}
        caller = next((str(variables[k]) for k in CALLER_KEYS if variables.get(k)), "")
        conversation_id = "conv_" + secrets.token_hex(12)
        self.record.update(
            start_at=time.time(),
            conversation_id=conversation_id,
            dynamic_variables=variables,
            from_number=caller,
            initiation_keys=sorted(message),
        )
        self.send(
            b'{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":'
            + f'{{"conversation_id":"{conversation_id}{self.agent.metadata_tail}'.encode()
        )
        if self.agent.ping_every > 0:
            self.ping_timer = self.loop.call_later(self.agent.ping_every, self.send_ping)

    def echo(self, payload: bytes) -> None:
        now = time.time()
        if self.first_media is None:
            self.first_media = now
            if not self.initiated:
                self.violation("audio before conversation_initiation_client_data")
        self.last_media = now
        record = self.record
        record["media_in"] += 1
        record["bytes_in"] += len(payload) * 3 // 4 - payload[-2:].count(b"=")
        self.event_id += 1
        self.send(AUDIO_HEAD + payload + b'","event_id":' + str(self.event_id).encode() + b"}}")
        record["echoed"] += 1

    def send_ping(self) -> None:
        self.ping_timer = None
        if self.core.state is not State.OPEN:
            return
        self.event_id += 1
        self.pending_pings[self.event_id] = time.monotonic()
        self.record["pings"] += 1
        self.send(
            b'{"type":"ping","ping_event":{"event_id":'
            + str(self.event_id).encode()
            + b',"ping_ms":null}}'
        )
        self.flush()
        self.ping_timer = self.loop.call_later(self.agent.ping_every, self.send_ping)

    def on_pong(self, message: dict[str, Any]) -> None:
        event_id = message.get("event_id")
        sent = self.pending_pings.pop(event_id, None) if isinstance(event_id, int) else None
        if sent is None:
            self.violation(f"pong for no pending ping: {message.get('event_id')!r}")
            return
        self.record["pongs"] += 1
        self.ping_rtt_ms.append((time.monotonic() - sent) * 1000)

    # -- plumbing ------------------------------------------------------------------------------

    def send(self, text: bytes) -> None:
        if self.core.state is State.OPEN:
            self.core.send_text(text)

    def flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.core.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # SEND_EOF: the server closes TCP first (RFC 6455 §7.1.1)
                transport.close()
                return
        if self.close_timer is None and self.core.close_expected():
            self.close_timer = self.loop.call_later(CLOSE_GRACE_S, transport.abort)

    def violation(self, text: str) -> None:
        if len(self.record["violations"]) < MAX_VIOLATIONS:
            self.record["violations"].append(text)

    def finish(self) -> None:
        if self.written or not self.conversation:
            return
        self.written = True
        rtt = sorted(self.ping_rtt_ms)
        self.record.update(
            first_media_at=self.first_media,
            last_media_at=self.last_media,
            ended_at=time.time(),
            pings_unanswered=len(self.pending_pings),
            pong_rtt_ms_max=round(rtt[-1], 2) if rtt else None,
        )
        self.agent.write(self.record)


async def serve(args: argparse.Namespace, out: IO[str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(args, out)
    server = await loop.create_server(lambda: Session(agent), args.host, args.port, backlog=1024)
    print(f"ElevenLabs fake agent ({args.format}) listening on {args.host}:{args.port}", flush=True)
    await stop.wait()
    server.close()
    for session in list(agent.sessions):
        session.record["open_at_exit"] = True
        session.finish()
        if session.transport is not None:
            session.transport.abort()
    print(f"signed URLs issued: {agent.signed_url_requests}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True, help="JSON lines, one per conversation")
    parser.add_argument("--format", choices=FORMATS, default="ulaw_8000", help="both directions")
    parser.add_argument("--agent-id", help="accept only this agent id (default: any)")
    parser.add_argument("--api-key", help="a private agent: signed URLs need this xi-api-key")
    parser.add_argument(
        "--ping-every", type=float, default=DEFAULT_PING_S, help="s between pings (0: none)"
    )
    args = parser.parse_args(argv)
    with Path(args.out).open("a") as out:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(serve(args, out))
        return uvloop.run(serve(args, out))


if __name__ == "__main__":
    sys.exit(main())
