"""The baseline bench/calls.py compares the node with: an RTP <-> Twilio-stream bridge as a
developer would write it in an afternoon.

Run by bench/calls.py as its own process (so /proc gives its CPU alone):

    python bench/peers/naive_bridge.py --calls 200 --bot ws://127.0.0.1:8765/ --ports-file F

Per call: one UDP socket and one ``websockets`` client connection to the bot, two tasks. Caller
audio: ``sock_recvfrom`` → strip the 12-byte RTP header → base64 → ``json.dumps`` of a Twilio
``media`` message → ``ws.send``. Bot audio: ``async for`` over the connection → ``json.loads`` →
base64-decode → an RTP header with ``struct.pack`` → ``sendto`` the caller's last address at once.
Nothing else: no SIP, no pacing clock (the bot's bursts go out as bursts), no marks, no clear, no
jitter buffer, no statistics, no control plane. Stock asyncio, because that is what such a
bridge uses; ``--uvloop`` for a baseline on the node's loop.

Why this baseline: CPU per call-second moves from machine to machine (the same bridge measured
2.6-4.1 ms on different boxes), so the node's budget is a ratio against this bridge measured in
the same run on the same box (docs/performance.md).

It writes the UDP port of each call, one per line, to ``--ports-file`` once every call's bot
connection is open, and runs until SIGTERM. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import struct
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

HOST = "127.0.0.1"
RTP_HEADER = struct.Struct("!BBHII")
PCMU = 0
SAMPLES_PER_FRAME = 160


async def caller_to_bot(sock: socket.socket, ws: ClientConnection, sid: str, peer: list) -> None:
    loop = asyncio.get_running_loop()
    chunk = 0
    while True:
        data, address = await loop.sock_recvfrom(sock, 2048)
        if len(data) <= RTP_HEADER.size:
            continue
        peer[0] = address
        chunk += 1
        timestamp = RTP_HEADER.unpack_from(data)[3]
        message = {
            "event": "media",
            "sequenceNumber": str(chunk + 2),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp // 8),
                "payload": base64.b64encode(data[RTP_HEADER.size :]).decode(),
            },
            "streamSid": sid,
        }
        await ws.send(json.dumps(message))


async def bot_to_caller(sock: socket.socket, ws: ClientConnection, peer: list) -> None:
    seq = 0
    timestamp = 0
    ssrc = int.from_bytes(os.urandom(4), "big")
    async for raw in ws:
        message = json.loads(raw)
        if message.get("event") != "media" or peer[0] is None:
            continue
        payload = base64.b64decode(message["media"]["payload"])
        for start in range(0, len(payload), SAMPLES_PER_FRAME):
            frame = payload[start : start + SAMPLES_PER_FRAME]
            seq = (seq + 1) & 0xFFFF
            header = RTP_HEADER.pack(0x80, PCMU, seq, timestamp & 0xFFFFFFFF, ssrc)
            timestamp += len(frame)
            sock.sendto(header + frame, peer[0])


async def one_call(index: int, bot: str) -> tuple[int, list[asyncio.Task[None]], socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    ws = await connect(bot, max_size=1 << 20, compression=None)
    sid = f"MZnaive{index:08d}"
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    start = {
        "streamSid": sid,
        "accountSid": "ACnaive",
        "callSid": f"CAnaive{index:08d}",
        "tracks": ["inbound"],
        "customParameters": {"from": f"+1555010{index:05d}"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start}))
    peer: list = [None]
    tasks = [
        asyncio.create_task(caller_to_bot(sock, ws, sid, peer)),
        asyncio.create_task(bot_to_caller(sock, ws, peer)),
    ]
    return sock.getsockname()[1], tasks, sock


def write_ports(path: Path, ports: list[int]) -> None:
    """Whole or not at all: the bench starts its callers as soon as the file exists."""
    partial = path.with_suffix(".partial")
    partial.write_text("".join(f"{port}\n" for port in ports))
    partial.rename(path)


async def main(calls: int, bot: str, ports_file: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    made = [await one_call(i, bot) for i in range(calls)]
    await asyncio.to_thread(write_ports, ports_file, [port for port, _, _ in made])
    await stop.wait()
    for _, tasks, sock in made:
        for task in tasks:
            task.cancel()
        sock.close()
    await asyncio.gather(*(t for _, tasks, _ in made for t in tasks), return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--bot", required=True, help="the bot's ws:// URL (loopback)")
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, not stock asyncio")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.calls, args.bot, args.ports_file))
    else:
        asyncio.run(main(args.calls, args.bot, args.ports_file))
