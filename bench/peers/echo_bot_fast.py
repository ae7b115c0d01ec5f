"""The bench bot for bench/calls.py: a Twilio-Media-Streams echo server cheap enough to share a
2-core box with the node it measures.

Run by bench/calls.py as its own process (so /proc gives the node's CPU alone):

    python bench/peers/echo_bot_fast.py --port 8765 --out sessions.jsonl [--clear-every 20]

Why not examples/echo_bot.py: at 200 calls a bot receives and sends 10,000 media messages a
second. The websockets asyncio server costs a task wake-up and a ``json.loads`` per message, which
would take a core the node needs. Here websockets' sans-I/O `ServerProtocol` sits under a plain
`asyncio.Protocol` (uvloop when installed) and a media message is echoed by slicing its base64
payload out of the text, without parsing the JSON: about one fifth of the cost.

What it records, one JSON line per connection when it ends (or at SIGTERM for those still open):
the call's ``start`` parameters, counts of each event, the epoch of the first and last media
message (``time.time()``, the clock tshark stamps packets with), the digits, and for "clear"
calls when the tone was sent, when ``clear`` was sent and when the gateway echoed the mark that
the clear dropped.

Clear calls (``--clear-every K``: calls whose sipp call number is a multiple of K) also echo, but
at ``--tone-at`` seconds after the first call's ``start`` (plus ``--tone-stagger`` per clear
call) they queue 5 s of a 1 kHz tone with a mark behind it, and ``--clear-after`` seconds later
send ``clear``: every tone packet the caller gets after that moment is stale (docs/performance.md:
clear → last stale RTP packet ≤ 20 ms). With ``--tone-per-call`` (bench/soak.py) ``--tone-at`` counts
from each clear call's own ``start`` instead: calls start all through a soak, so the tone, mark
and clear paths are exercised all through it, not only in its first minute.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

HOST = "127.0.0.1"
MEDIA_PREFIX = b'{"event":"media"'
PAYLOAD_KEY = b'"payload":"'
CALLER_PREFIX = "+15550100"  # sipp uac_load.xml: From is +15550100[call_number]
SAMPLE_RATE = 8000
TONE_HZ = 1000  # 8 samples a period: every 160-byte frame of the tone is the same bytes
TONE_AMPLITUDE = 8000  # of 32767: about -12 dBFS
TONE_SECONDS = 5.0
TONE_CHUNK_MS = 100  # a TTS-like chunk per media message
TONE_MARK = "tone-end"
MAX_MESSAGE_BYTES = 1 << 20
CLOSE_GRACE_S = 2.0  # after our close frame, before the TCP connection is dropped


def ulaw_encode(sample: int) -> int:
    """G.711 μ-law of one 16-bit sample (ITU-T G.711 §A, the segment/mantissa table)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone_frame() -> bytes:
    """20 ms of the tone (160 μ-law bytes); bench/calls.py recognises it on the wire."""
    period = SAMPLE_RATE // TONE_HZ
    cycle = bytes(
        ulaw_encode(round(TONE_AMPLITUDE * math.sin(2 * math.pi * i / period)))
        for i in range(period)
    )
    return cycle * (160 // period)


class Bot:
    """Settings and the shared output file of every session."""

    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.clear_every: int = args.clear_every
        self.tone_at: float = args.tone_at
        self.tone_stagger: float = args.tone_stagger
        self.clear_after: float = args.clear_after
        self.tone_per_call: bool = args.tone_per_call
        self.out = out
        self.first_start: float | None = None
        self.clear_calls = 0
        self.sessions: set[Session] = set()
        chunk = tone_frame() * (TONE_CHUNK_MS // 20)
        self.tone_payload = base64.b64encode(chunk)
        self.tone_chunks = int(TONE_SECONDS * 1000 / TONE_CHUNK_MS)

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()


class Session(asyncio.Protocol):
    """One gateway connection: one call."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.core = ServerProtocol(max_size=MAX_MESSAGE_BYTES)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.sid_json = b'""'
        self.echo_head = b'{"event":"media","media":{"payload":"'
        self.record: dict[str, Any] = {
            "connected_at": time.time(),
            "events": {},
            "media_in": 0,
            "echoed": 0,
            "digits": "",
            "violations": [],
        }
        self.first_media: float | None = None
        self.last_media: float | None = None
        self.written = False
        self.close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.bot.sessions.add(self)

    def data_received(self, data: bytes) -> None:
        core = self.core
        core.receive_data(data)
        for event in core.events_received():
            if type(event) is Frame:
                if event.opcode is Opcode.TEXT:
                    self.on_text(event.data)
            elif isinstance(event, Request):
                core.send_response(core.accept(event))
        self.flush()

    def eof_received(self) -> bool:
        self.core.receive_eof()
        self.flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.bot.sessions.discard(self)
        close = self.core.close_rcvd
        self.record["close_code"] = close.code if close is not None else None
        self.finish()

    # -- messages ------------------------------------------------------------------------------

    def on_text(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        if raw.startswith(MEDIA_PREFIX):  # the gateway's compact form: no JSON parse
            start = raw.rfind(PAYLOAD_KEY)
            if start >= 0:
                start += len(PAYLOAD_KEY)
                self.echo(raw[start : raw.find(b'"', start)])
                return
        try:
            message = json.loads(raw)
            name = message["event"]
        except (ValueError, KeyError, TypeError):
            self.violation(f"unreadable message {raw[:60]!r}")
            return
        if name == "media":
            payload = message.get("media", {}).get("payload")
            if isinstance(payload, str):
                self.echo(payload.encode())
            else:
                self.violation("media without a string payload")
            return
        events = self.record["events"]
        events[name] = events.get(name, 0) + 1
        if name == "start":
            self.on_start(message)
        elif name == "dtmf":
            self.record["digits"] += str(message.get("dtmf", {}).get("digit", "?"))
        elif name == "mark":
            if message.get("mark", {}).get("name") == TONE_MARK:
                self.record["mark_echo_at"] = time.time()
        elif name == "stop":
            self.record["stop_at"] = time.time()

    def echo(self, payload: bytes) -> None:
        now = time.time()
        if self.first_media is None:
            self.first_media = now
        self.last_media = now
        self.record["media_in"] += 1
        self.send(self.echo_head + payload + b'"}}')
        self.record["echoed"] += 1

    def on_start(self, message: dict[str, Any]) -> None:
        now = time.time()
        start = message.get("start", {})
        params = start.get("customParameters", {})
        sid = start.get("streamSid") or message.get("streamSid") or ""
        self.sid_json = json.dumps(sid).encode()
        self.echo_head = b'{"event":"media","streamSid":' + self.sid_json + b',"media":{"payload":"'
        from_number = str(params.get("from_number", ""))
        self.record.update(
            start_at=now,
            stream_sid=sid,
            call_uuid=params.get("call_uuid"),
            from_number=from_number,
            to_number=params.get("to_number"),
        )
        bot = self.bot
        if bot.first_start is None:
            bot.first_start = now
        number = from_number.removeprefix(CALLER_PREFIX)
        if bot.clear_every and number.isdigit() and int(number) % bot.clear_every == 0:
            if bot.tone_per_call:
                at = now + bot.tone_at
            else:
                at = bot.first_start + bot.tone_at + bot.clear_calls * bot.tone_stagger
            bot.clear_calls += 1
            self.record["clear_call"] = True
            self.loop.call_at(self.loop.time() + max(0.0, at - now), self.send_tone)

    def send_tone(self) -> None:
        if self.core.state is not State.OPEN:
            return
        tone = self.echo_head + self.bot.tone_payload + b'"}}'
        for _ in range(self.bot.tone_chunks):
            self.send(tone)
        mark = b'{"event":"mark","streamSid":' + self.sid_json + b',"mark":{"name":"'
        self.send(mark + TONE_MARK.encode() + b'"}}')
        self.record["tone_at"] = time.time()
        self.flush()
        self.loop.call_later(self.bot.clear_after, self.send_clear)

    def send_clear(self) -> None:
        if self.core.state is not State.OPEN:
            return
        self.record["clear_at"] = time.time()
        self.send(b'{"event":"clear","streamSid":' + self.sid_json + b"}")
        self.flush()

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
        if len(self.record["violations"]) < 10:
            self.record["violations"].append(text)

    def finish(self) -> None:
        if self.written:
            return
        self.written = True
        self.record["first_media_at"] = self.first_media
        self.record["last_media_at"] = self.last_media
        self.record["ended_at"] = time.time()
        self.bot.write(self.record)


async def serve(args: argparse.Namespace, out: IO[str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bot = Bot(args, out)
    server = await loop.create_server(lambda: Session(bot), args.host, args.port, backlog=1024)
    print(f"bench bot listening on {args.host}:{args.port}", flush=True)
    await stop.wait()
    server.close()
    for session in list(bot.sessions):
        session.record["open_at_exit"] = True
        session.finish()
        if session.transport is not None:
            session.transport.abort()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True, help="JSON lines, one per connection")
    parser.add_argument("--clear-every", type=int, default=0, help="clear calls: number %% K == 0")
    parser.add_argument("--tone-at", type=float, default=5.0, help="s after the first start")
    parser.add_argument("--tone-stagger", type=float, default=0.137, help="s between clear calls")
    parser.add_argument("--clear-after", type=float, default=2.5, help="s of tone before clear")
    parser.add_argument(
        "--tone-per-call", action="store_true", help="--tone-at from each call's start"
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
