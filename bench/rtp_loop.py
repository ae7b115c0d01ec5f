"""N RTP calls through real sockets, echoed back through the shared pacer: CPU per call-second.

Run: .venv/bin/python bench/rtp_loop.py [--streams 200] [--seconds 10] [--phases 10] [--stock-asyncio]

The gateway side (this process) opens one `RtpSocket` per call from a `PortAllocator`; each
call's handler is an "echo app" stand-in that pushes the caller's frames into a `PlayoutQueue`
drained by the call's pacer stream, and one `MediaClock` drives the pacer for every call. A
sender process (its own core if there is one) plays N callers: a 172-byte PCMU packet per call
every 20 ms on an absolute-deadline grid, counting the echoes that come back. Real callers
send on unrelated phases, so by default they are spread over 10 phases; ``--phases 1`` sends
every call's packet in one burst, the worst case for the pacer's wake-ups.

Reported: this process's CPU (time.process_time) while the sender sends, per stream-second,
which covers receive, handler, pacer and send, both directions (docs/performance.md budgets
1.5 ms per bridged call-second, WebSocket side included, so this share must stay well below
it); packets lost inbound and on the echo path; and MediaClock wake-up lateness (sub-ms when the loop's
clock is the monotonic clock). Numbers depend on the machine and its load: compare runs on the
same box only, and note what else was running.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_media.loop import loop_name, new_loop
from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.pacer import Pacer
from edge_media.rtp.packet import Address, pack_header
from edge_media.rtp.playout import PlayoutQueue
from edge_media.rtp.ports import PortAllocator
from edge_media.rtp.transport import (
    MediaClock,
    RtpSocket,
    monotonic_clock_for,
    open_rtp_socket,
)

HOST = "127.0.0.1"
INTERVAL = 0.020
PAYLOAD = bytes(range(160))
DRAIN_SECONDS = 0.5  # after sending stops: let the playout queues empty and echoes arrive
SETUP_TIMEOUT = 30.0


# -- the callers (sender process) ---------------------------------------------------------------


class _Caller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.echoes = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.echoes += 1

    def error_received(self, exc: Exception) -> None:
        pass


async def _callers(ports: list[int], seconds: float, conn: Connection, groups: int) -> None:
    """Each caller sends on its own phase of the 20 ms grid: ``groups`` phases, callers spread
    round-robin over them (1 = every caller in one burst, the worst case for the pacer)."""
    loop = asyncio.get_running_loop()
    endpoints = [await loop.create_datagram_endpoint(_Caller, local_addr=(HOST, 0)) for _ in ports]
    phases = [
        [
            (endpoints[index][0], (HOST, ports[index]), 0x10000 + index)
            for index in range(group, len(ports), groups)
        ]
        for group in range(groups)
    ]
    ticks = round(seconds / INTERVAL)
    step_length = INTERVAL / groups
    conn.send(("go", time.monotonic()))
    start = loop.time()
    late_steps = 0
    for step in range(ticks * groups):
        deadline = start + step * step_length
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -INTERVAL:
            late_steps += 1
        tick, group = divmod(step, groups)
        sequence, timestamp = tick & 0xFFFF, tick * 160
        for transport, target, ssrc in phases[group]:
            transport.sendto(pack_header(0, sequence, timestamp, ssrc) + PAYLOAD, target)
    conn.send(("sent", time.monotonic()))
    await asyncio.sleep(DRAIN_SECONDS)
    echoes = sum(protocol.echoes for _, protocol in endpoints)
    for transport, _ in endpoints:
        transport.close()
    conn.send(
        (
            "report",
            {
                "sent": ticks * len(ports),
                "echoes": echoes,
                "late_steps": late_steps,
                "cpu": time.process_time(),
                "loop": loop_name(loop),
            },
        )
    )


def run_callers(
    ports: list[int], seconds: float, conn: Connection, groups: int, prefer_uvloop: bool
) -> None:
    """Sender process entry point (module level so that the spawn start method can import it)."""
    loop = new_loop(prefer_uvloop=prefer_uvloop)
    try:
        loop.run_until_complete(_callers(ports, seconds, conn, groups))
    finally:
        loop.close()
        conn.close()


# -- the gateway (this process) -----------------------------------------------------------------


class EchoCall:
    """Handler of one call: frames into a playout queue; the pacer stream starts on latching."""

    __slots__ = ("pacer", "queue", "rng", "socket")

    def __init__(self, pacer: Pacer, rng: random.Random) -> None:
        self.pacer = pacer
        self.queue = PlayoutQueue()
        self.rng = rng
        self.socket: RtpSocket | None = None

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        push = self.queue.push_media
        for frame in frames:
            push(frame)
        sock = self.socket
        if sock is not None and sock.stream_id is None:
            remote: Address | None = sock.remote_addr
            assert remote is not None
            sock.start_sending(
                self.pacer,
                self.source,
                addr=remote,
                ssrc=self.rng.getrandbits(32),
                payload_type=0,
                sequence=self.rng.getrandbits(16),
                timestamp=self.rng.getrandbits(32),
            )

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        pass

    def source(self) -> bytes | None:
        return self.queue.next_frame()


async def _recv(conn: Connection) -> tuple[str, Any]:
    loop = asyncio.get_running_loop()
    message: tuple[str, Any] = await asyncio.wait_for(
        loop.run_in_executor(None, conn.recv), SETUP_TIMEOUT
    )
    return message


async def gateway(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    allocator = PortAllocator(args.port_min, args.port_max, rng=rng)
    clock = MediaClock.create(clock=monotonic_clock_for(loop))
    calls = [EchoCall(clock.pacer, rng) for _ in range(args.streams)]
    sockets = []
    for call in calls:
        sock = await open_rtp_socket(allocator, HOST, call, rtcp=False)
        call.socket = sock
        sockets.append(sock)
    clock.start()

    parent, child = multiprocessing.get_context("spawn").Pipe()
    sender = multiprocessing.get_context("spawn").Process(
        target=run_callers,
        args=(
            [s.port for s in sockets],
            args.seconds,
            child,
            args.phases,
            not args.stock_asyncio,
        ),
        daemon=True,
    )
    sender.start()
    child.close()
    try:
        kind, _ = await _recv(parent)
        assert kind == "go"
        cpu_start, wall_start = time.process_time(), time.monotonic()
        kind, _ = await asyncio.wait_for(_recv(parent), args.seconds + SETUP_TIMEOUT)
        assert kind == "sent"
        cpu_end, wall_end = time.process_time(), time.monotonic()
        kind, report = await _recv(parent)
        assert kind == "report"
    finally:
        sender.join(timeout=SETUP_TIMEOUT)
        parent.close()
    clock.stop()
    received = sum(s.stats().packets_in for s in sockets)
    rfc3550_lost = sum(s.stats().lost for s in sockets)
    for sock in sockets:
        sock.close()
    await asyncio.sleep(0.05)
    wall = wall_end - wall_start
    return {
        "loop": loop_name(loop),
        "sender_loop": report["loop"],
        "wall": wall,
        "cpu": cpu_end - cpu_start,
        "received": received,
        "rfc3550_lost": rfc3550_lost,
        "sender": report,
        "clock": clock.stats(),
        "pacer": clock.pacer.stats(),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port-min", type=int, default=20000)
    parser.add_argument("--port-max", type=int, default=29999)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--phases",
        type=int,
        default=10,
        help="callers spread over this many phases of the 20 ms grid (1: all in one burst)",
    )
    parser.add_argument("--stock-asyncio", action="store_true", help="compare without uvloop")
    args = parser.parse_args()

    loop = new_loop(prefer_uvloop=not args.stock_asyncio)
    try:
        result = loop.run_until_complete(gateway(args))
    finally:
        loop.close()

    streams, wall, cpu = args.streams, result["wall"], result["cpu"]
    sender = result["sender"]
    clock, pacer = result["clock"], result["pacer"]
    stream_seconds = streams * wall
    print(f"loop {result['loop']} (sender {result['sender_loop']}), {os.cpu_count()} CPUs")
    print(
        f"{streams} streams x {wall:.2f} s = {stream_seconds:.0f} stream-seconds, "
        f"callers on {args.phases} phases of the 20 ms grid"
    )
    print(
        f"gateway CPU {cpu:.3f} s = {100 * cpu / wall:.1f} % of a core; "
        f"{1000 * cpu / stream_seconds:.3f} ms per stream-second "
        f"({1e6 * cpu / max(1, result['received'] + pacer.packets_sent):.2f} µs per packet)"
    )
    inbound_lost = sender["sent"] - result["received"]
    print(
        f"inbound: sent {sender['sent']}, received {result['received']}, lost {inbound_lost} "
        f"(RFC 3550 count {result['rfc3550_lost']}); sender late steps {sender['late_steps']}"
    )
    print(
        f"echo: pacer sent {pacer.packets_sent}, callers got {sender['echoes']}, "
        f"lost {pacer.packets_sent - sender['echoes']}; pacer dropped frames "
        f"{pacer.dropped_frames}, skipped ticks {pacer.skipped_ticks}"
    )
    print(
        f"MediaClock wake-up lateness p50 {clock.late_p50_ms} ms, p99 {clock.late_p99_ms} ms, "
        f"max {clock.late_max_ms} ms; tick+send p50 {clock.busy_p50_ms} ms, "
        f"p99 {clock.busy_p99_ms} ms, max {clock.busy_max_ms} ms; "
        f"{clock.wakeups} wake-ups ({clock.early_wakeups} early)"
    )
    print(f"sender CPU {sender['cpu']:.2f} s; gateway max RSS {result['maxrss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
