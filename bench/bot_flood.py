"""One flooding bot among N normal ones on one node's loop: the normal calls' pacing with and
without the flood, with the inbound budget and mark cap (PROTOCOL.md §6) and without them.

Run: .venv/bin/python bench/bot_flood.py [--streams 50] [--seconds 8]
         [--floods audio10x,audio-max,marks-max,big-max] [--unguarded audio10x,audio-max,big-max]
         [--stock-asyncio]

Why in-process: the question is what one bot's messages cost the loop that paces every call,
so the node side here is exactly that loop and what a bridged call runs on it: per call a
`TwilioStreamDriver` over a real loopback WebSocket, its `PlayoutLeg`, and a stream of the one
`MediaClock`'s pacer that takes a frame from the leg's queue every 20 ms and sends it as RTP
(to a UDP socket nobody reads: the kernel discards it, at no cost to the loop), marks reported
the loop turn after, as `RtpSession` does; and caller audio to every bot, 20 ms each 20 ms. No
SIP, no control plane: they do not change what a flood does to the loop.

The bots run in a second process (`run_bots`): each normal bot sends real-time audio (one 20 ms
`media` a tick, 200 ms ahead at the start, a `mark` each second); the flooding bot, connected
last, sends one of:

* ``audio10x``: 10x real time in 20 ms messages (500 a second);
* ``audio-max``: 20 ms media messages as fast as TCP takes them;
* ``marks-max``: marks as fast as TCP takes them;
* ``big-max``: 200 KB media messages (about 19 s of audio each) as fast as TCP takes them.

Each phase is a fresh set of connections and a fresh clock, for ``--seconds``: first without a
flood, then each flood with the node's default limits ("guarded"), then the ``--unguarded``
ones with limits that never bind (the node before the budget: 1 MiB messages, no budget, no
mark cap). ``marks-max`` is not run unguarded by default: its memory grows without end, which is
what the cap is for.

Reported per phase: MediaClock wake-up lateness p50/p99/max (the node's ``pacing_error``: every
stream is sent on that wake-up, so it is the normal streams' pacing), tick+send p99; frames the
normal streams had no audio for after their first one (``gaps``: a loop too busy to read their
bots); this process's CPU share; and the flooding connection's figures (messages read, the
budget's drops, marks dropped, marks pending and audio queued at the end). Compare phases of one
run on one machine only: the bots' process shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import multiprocessing
import os
import random
import resource
import socket
import struct
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from edge_media.bridge.caller_media import PlayoutLeg
from edge_media.drivers.base import CallInfo
from edge_media.drivers.inbound_budget import BotLimits
from edge_media.drivers.twilio_driver import TwilioStreamDriver, connect_twilio_stream
from edge_media.loop import loop_name, new_loop
from edge_media.rtp.transport import MediaClock, monotonic_clock_for

HOST = "127.0.0.1"
TICK = 0.020
FRAME = bytes(range(160))
AHEAD_FRAMES = 10  # a normal bot's jitter allowance: 200 ms sent at once at the start
MARK_EVERY = 50  # a normal bot's mark after each second of audio
BIG_AUDIO_BYTES = 150_000  # the big-max flood's audio per message: 200 KB of base64
PUMP_BYTES = 64 * 1024  # a *-max flooder writes this much per write while TCP takes it
WRITE_HIGH_WATER = 1 << 20
FLOODS = ("audio10x", "audio-max", "marks-max", "big-max")
# What the node did before the inbound budget and the mark cap: nothing binds.
UNGUARDED = BotLimits(
    max_message_bytes=1 << 20,
    realtime_factor=1e9,
    burst_seconds=1e9,
    messages_per_second=1e12,
    max_pending_marks=1 << 62,
    max_mark_name_chars=1 << 62,
)
GUARDED = BotLimits()


# -- the bots (their own process) -----------------------------------------------------------


def text_frame(text: bytes) -> bytes:
    """One unmasked server text frame (RFC 6455 §5.2), written past the core: the flood must
    cost the bots' process as little as possible, or it could not flood."""
    size = len(text)
    if size < 126:
        head = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + text


def media_text(sid: bytes, audio: bytes) -> bytes:
    payload = base64.b64encode(audio)
    return b'{"event":"media","streamSid":' + sid + b',"media":{"payload":"' + payload + b'"}}'


def mark_text(sid: bytes, name: bytes) -> bytes:
    return b'{"event":"mark","streamSid":' + sid + b',"mark":{"name":"' + name + b'"}}'


class BotSession(asyncio.Protocol):
    """One gateway connection; what it sends depends on its path (/normal, /flood/<kind>)."""

    def __init__(self, bots: Bots) -> None:
        self.bots = bots
        self.core = ServerProtocol(max_size=1 << 20)
        self.transport: asyncio.Transport | None = None
        self.kind = ""
        self.media = b""
        self.mark = b""
        self.pump_batch = b""
        self.paused = False
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        core = self.core
        core.receive_data(data)
        for event in core.events_received():
            if isinstance(event, Request):
                self.kind = event.path.rsplit("/", 1)[-1]
                core.send_response(core.accept(event))
            elif (
                type(event) is Frame
                and event.opcode is Opcode.TEXT
                and not self.started
                and b'"event":"start"' in event.data
            ):
                self.start(json.loads(event.data)["streamSid"].encode())
        self.flush()

    def flush(self) -> None:
        transport = self.transport
        for chunk in self.core.data_to_send():
            if transport is not None and not transport.is_closing() and chunk:
                transport.write(chunk)

    def start(self, sid: bytes) -> None:
        self.started = True
        quoted = json.dumps(sid.decode()).encode()
        self.media = text_frame(media_text(quoted, FRAME))
        self.mark = text_frame(mark_text(quoted, b"m"))
        if self.kind == "normal":
            self.write(self.media * AHEAD_FRAMES)
            self.bots.normal.add(self)
        elif self.kind == "audio10x":
            self.bots.paced[self] = 10
        else:
            one = {
                "audio-max": self.media,
                "marks-max": self.mark,
                "big-max": text_frame(media_text(quoted, bytes(BIG_AUDIO_BYTES))),
            }[self.kind]
            self.pump_batch = one * max(1, PUMP_BYTES // len(one))
            self.pump()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def pump(self) -> None:
        transport = self.transport
        while not self.paused and transport is not None and not transport.is_closing():
            transport.write(self.pump_batch)  # pause_writing stops this at the high water

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.pump_batch:
            self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.bots.normal.discard(self)
        self.bots.paced.pop(self, None)
        self.transport = None


class Bots:
    """Every bot session, and the 20 ms grid the paced ones send on."""

    def __init__(self) -> None:
        self.normal: set[BotSession] = set()
        self.paced: dict[BotSession, int] = {}

    async def run(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: BotSession(self), HOST, 0)
        conn.send(server.sockets[0].getsockname()[1])
        start = loop.time()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * TICK - loop.time()))
            for session in list(self.normal):
                session.write(session.media + (session.mark if tick % MARK_EVERY == 0 else b""))
            for session, times in list(self.paced.items()):
                session.write(session.media * times)


def run_bots(conn: Connection, prefer_uvloop: bool) -> None:
    """The bots' process entry point (module level, for the spawn start method)."""
    # The node aborts a flooder that is still writing when its phase ends; stock asyncio then
    # may report the reset twice (a selector-transport quirk of the flooding side, not the node).
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = new_loop(prefer_uvloop=prefer_uvloop)
    try:
        loop.run_until_complete(Bots().run(conn))
    finally:
        loop.close()


# -- the node side (this process) -----------------------------------------------------------


class Call:
    """One bridged call's node side: a driver, its playout leg, a pacer stream."""

    def __init__(self, driver: TwilioStreamDriver, leg: PlayoutLeg) -> None:
        self.driver = driver
        self.leg = leg
        self.queue = leg.queue
        self.loop = asyncio.get_running_loop()
        self.playing = False
        self.gaps = 0
        self.reporting = False

    def source(self) -> bytes | None:
        queue = self.queue
        frame = queue.next_frame()
        if frame is not None:
            self.playing = True
        elif self.playing:
            self.gaps += 1
        if queue.has_reached and not self.reporting:
            self.reporting = True
            self.loop.call_soon(self.report)  # after the tick's packets, as RtpSession does
        return frame

    def report(self) -> None:
        self.reporting = False
        marks = self.queue.take_reached()
        if marks:
            self.driver.marks_played(marks)


async def open_call(url: str, index: int, limits: BotLimits) -> Call:
    info = CallInfo(f"call-{index}", "acc-bench", "inbound", "+15550100", "+15550199")
    log = logging.LoggerAdapter(logging.getLogger("bench.flood"), {})
    leg = PlayoutLeg(log, capacity_seconds=60.0)
    driver = await connect_twilio_stream(url, info, leg, 10.0, limits=limits)
    return Call(driver, leg)


async def caller_audio(calls: list[Call]) -> None:
    """Each caller's 20 ms frame to its bot, every 20 ms, half a tick off the pacer's grid."""
    loop = asyncio.get_running_loop()
    start = loop.time() + TICK / 2
    tick = 0
    while True:
        await asyncio.sleep(max(0.0, start + tick * TICK - loop.time()))
        tick += 1
        for call in calls:
            call.driver.send_audio(FRAME)


@dataclass
class Phase:
    name: str
    late_p50: float
    late_p99: float
    late_max: float
    busy_p99: float
    gaps: int
    wall: float
    cpu_share: float
    flood: dict[str, Any]
    rss_mb: float


async def phase(port: int, streams: int, seconds: float, flood: str | None, guarded: bool) -> Phase:
    loop = asyncio.get_running_loop()
    limits = GUARDED if guarded else UNGUARDED
    rng = random.Random(7)
    discard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: the kernel drops
    discard.bind((HOST, 0))
    target = discard.getsockname()
    sink, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(HOST, 0))
    base = f"ws://{HOST}:{port}"
    calls = [await open_call(f"{base}/normal", index, limits) for index in range(streams)]
    normal = list(calls)
    if flood is not None:
        calls.append(await open_call(f"{base}/flood/{flood}", streams, limits))
    clock = MediaClock.create(clock=monotonic_clock_for(loop))
    for call in calls:
        clock.pacer.register(
            call.source,
            addr=target,
            ssrc=rng.getrandbits(32),
            payload_type=0,
            sequence=rng.getrandbits(16),
            timestamp=rng.getrandbits(32),
            sink=sink,
            comfort_silence=True,
        )
    cpu, wall = time.process_time(), time.monotonic()
    clock.start()
    callers = asyncio.ensure_future(caller_audio(calls))
    await asyncio.sleep(seconds)
    clock.stop()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    callers.cancel()
    stats = clock.stats()
    figures: dict[str, Any] = {}
    if flood is not None:
        flooder = calls[-1]
        conn = flooder.driver.connection
        figures = {
            **flooder.driver.stats(),
            "messages_read": conn.messages_in if conn is not None else 0,
            "pending_marks": flooder.queue.pending_marks,
            "queued_s": flooder.queue.buffered_ms / 1000,
        }
    await asyncio.gather(
        *(call.driver.stop("bench over") for call in calls), return_exceptions=True
    )
    sink.close()
    discard.close()
    label = "no flood" if flood is None else f"{flood} {'guarded' if guarded else 'unguarded'}"
    return Phase(
        name=label,
        late_p50=stats.late_p50_ms,
        late_p99=stats.late_p99_ms,
        late_max=stats.late_max_ms,
        busy_p99=stats.busy_p99_ms,
        gaps=sum(call.gaps for call in normal),
        wall=wall,
        cpu_share=cpu / wall,
        flood=figures,
        rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


async def node(args: argparse.Namespace) -> list[Phase]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    bots = context.Process(target=run_bots, args=(child, not args.stock_asyncio), daemon=True)
    bots.start()
    child.close()
    try:
        loop = asyncio.get_running_loop()
        port = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 30)
        plan: list[tuple[str | None, bool]] = [(None, True)]
        plan += [(kind, True) for kind in args.floods]
        plan += [(kind, False) for kind in args.unguarded]
        results = []
        for flood, guarded in plan:
            results.append(await phase(port, args.streams, args.seconds, flood, guarded))
            print(render(results[-1]), flush=True)
            await asyncio.sleep(0.5)  # let the last phase's sockets drain and close
        return results
    finally:
        bots.terminate()
        bots.join(timeout=5)
        parent.close()


def header() -> str:
    return (
        f"{'phase':<22} {'late p50':>8} {'p99':>6} {'max':>7} {'busy p99':>8} "
        f"{'gaps':>6} {'CPU':>5}  flood: read/s, budget-dropped msgs (MB), marks dropped, "
        "pending marks, queued s"
    )


def render(p: Phase) -> str:
    row = (
        f"{p.name:<22} {p.late_p50:>8.2f} {p.late_p99:>6.2f} {p.late_max:>7.2f} "
        f"{p.busy_p99:>8.2f} {p.gaps:>6} {100 * p.cpu_share:>4.0f}%"
    )
    f = p.flood
    if f:
        row += (
            f"  {f['messages_read'] / p.wall:,.0f}/s, {f['budget_dropped_messages']:,} "
            f"({f['budget_dropped_bytes'] / 1e6:.1f} MB), {f['marks_dropped']:,}, "
            f"{f['pending_marks']:,}, {f['queued_s']:.1f}"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50, help="normal bridged calls")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument(
        "--floods", type=lambda s: [k for k in s.split(",") if k], default=list(FLOODS)
    )
    parser.add_argument(
        "--unguarded",
        type=lambda s: [k for k in s.split(",") if k],
        default=["audio10x", "audio-max", "big-max"],
        help="floods also run with limits that never bind (the node before the budget)",
    )
    parser.add_argument("--stock-asyncio", action="store_true", help="compare without uvloop")
    args = parser.parse_args()
    for kind in (*args.floods, *args.unguarded):
        if kind not in FLOODS:
            parser.error(f"unknown flood {kind!r} (known: {', '.join(FLOODS)})")
    logging.basicConfig(level=logging.ERROR)  # the per-call warnings are the point, not noise
    loop = new_loop(prefer_uvloop=not args.stock_asyncio)
    print(
        f"loop {loop_name(loop)}, {os.cpu_count()} CPUs; {args.streams} normal streams + one "
        f"flooding bot, {args.seconds:g} s a phase; times in ms"
    )
    print(header(), flush=True)
    try:
        results = loop.run_until_complete(node(args))
    finally:
        loop.close()
    print(f"max RSS {max(p.rss_mb for p in results):.0f} MB")


if __name__ == "__main__":
    main()
