"""RTP callers without SIP, for the naive-bridge baseline of bench/calls.py.

    python bench/peers/rtp_callers.py --ports-file F --duration 30 --out summary.json

Every 20 ms it sends one 160-byte PCMU packet to each port in ``--ports-file`` (all of a tick
back to back, as sipp sends its calls' packets), from one socket on 127.0.0.1, and counts the
packets that come back. sipp cannot be the load here: the baseline bridge speaks no SIP. The
ticks are scheduled on absolute times (a late tick does not shift the next), so the load is the
same 50 packets a second per call that sipp offers the node.

At the end it writes JSON: the first and last send times (epoch), packets sent, packets back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import time
from pathlib import Path

HOST = "127.0.0.1"
TICK_S = 0.020
FRAME = bytes(range(40, 200))  # any payload: the bridge and the bot do not decode it


class Returns(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.count += 1


async def run(ports: list[int], duration_s: float) -> dict[str, float | int]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((HOST, 0))
    transport, returns = await loop.create_datagram_endpoint(Returns, sock=sock)
    ssrc = int.from_bytes(os.urandom(4), "big")
    header = struct.Struct("!BBHII")
    sent = 0
    first = time.time()
    start = time.monotonic()
    ticks = round(duration_s / TICK_S)
    for tick in range(ticks):
        for port in ports:
            packet = header.pack(0x80, 0, tick & 0xFFFF, tick * 160, ssrc) + FRAME
            transport.sendto(packet, (HOST, port))
            sent += 1
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK_S - time.monotonic()))
    last = time.time()
    await asyncio.sleep(0.5)  # the last echoes
    transport.close()
    return {"first": first, "last": last, "sent": sent, "returned": returns.count}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ports = [int(line) for line in args.ports_file.read_text().split()]
    summary = asyncio.run(run(ports, args.duration))
    args.out.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
