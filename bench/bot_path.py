"""Per-message Python cost of a Twilio-stream bot connection, without the syscalls.

Run: .venv/bin/python bench/bot_path.py [--samples N]

Why: at 200 calls the node's CPU is about 60 % syscalls, which no change of ours moves, and the
rest is Python spread over many small steps; `bench/calls.py` moves ±10 % from run to run on a
busy 2-core box, so a few microseconds per message cannot be seen there. This drives the real
objects a bridged call uses (`TwilioStreamDriver` over `WsConnection`, websockets' client core
after a real handshake, the bridge's `PlayoutLeg`) in one process, with a transport whose
``write`` only counts bytes, and prints µs per message, median and p99 of timed batches:

* caller → bot: ``driver.send_audio(160 bytes)``: the `media` JSON, the masked frame, the write;
* bot → caller: ``conn.data_received(one media frame)``: framing, inbound budget, JSON, base64,
  the playout queue (drained by ``next_frame`` as the pacer would, inside the timed step).

Compare runs on the same box, e.g. this checkout against another with
``PYTHONPATH=<other checkout> PYTHONSAFEPATH=1 .venv/bin/python bench/bot_path.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Last, so that a PYTHONPATH naming another checkout is what gets measured.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri
from websockets.utils import accept_key

from edge_media.bridge.caller_media import PlayoutLeg
from edge_media.drivers.base import CallInfo
from edge_media.drivers.twilio_driver import TwilioStreamDriver, new_stream_sid
from edge_media.drivers.twilio_stream import TwilioStreamProtocol
from edge_media.drivers.ws_client import WsConnection

FRAME = bytes(range(160))
BATCH = 200


class CountingTransport(asyncio.Transport):
    """Takes every write and keeps only the count: the syscall is what this bench leaves out."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def open_driver(loop: asyncio.AbstractEventLoop) -> tuple[TwilioStreamDriver, WsConnection, Any]:
    """A driver on a connection whose handshake really ran (the response built for its key)."""
    info = CallInfo("c-bench", "a-bench", "inbound", "+15550000001", "+15550000002")
    protocol = TwilioStreamProtocol(
        stream_sid=new_stream_sid(), call_sid=info.call_uuid, account_sid="a-bench", info=info
    )
    leg = PlayoutLeg(logging.LoggerAdapter(logging.getLogger("bench")), capacity_seconds=60.0)
    driver = TwilioStreamDriver(protocol, leg)
    core = ClientProtocol(parse_uri("ws://127.0.0.1:9/bot"))
    conn = WsConnection(
        loop,
        core,
        url="ws://127.0.0.1:9/bot",
        on_text=driver.on_text,
        on_bytes=driver.on_bytes,
        on_open=driver.on_open,
        extra_headers=None,
        write_buffer_limit=1 << 20,
        ping_interval=None,
    )
    transport = CountingTransport()
    conn.connection_made(transport)
    key = core.key  # the Sec-WebSocket-Key it sent
    conn.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )
    assert conn.is_open, "the handshake did not complete"
    return driver, conn, leg


def measure(step: Callable[[], object], samples: int) -> tuple[float, float]:
    """Median and p99 µs per call over ``samples`` timed batches (`timeit`, after a warm-up)."""
    timeit.repeat(step, number=BATCH, repeat=5)
    costs = sorted(t / BATCH * 1e6 for t in timeit.repeat(step, number=BATCH, repeat=samples))
    return statistics.median(costs), costs[min(len(costs) - 1, int(len(costs) * 0.99))]


async def run(samples: int) -> list[tuple[str, float, float]]:
    loop = asyncio.get_running_loop()
    driver, conn, leg = open_driver(loop)
    sid = driver.stream_sid

    def to_bot() -> object:
        return driver.send_audio(FRAME)

    message = json.dumps(
        {
            "event": "media",
            "streamSid": sid,
            "media": {"payload": base64.b64encode(FRAME).decode()},
        },
        separators=(",", ":"),
    ).encode()
    frame = Frame(Opcode.TEXT, message).serialize(mask=False)
    queue = leg.queue

    def from_bot() -> object:
        conn.data_received(frame)
        return queue.next_frame()

    results = [("caller → bot: send_audio", *measure(to_bot, samples))]
    results.append(("bot → caller: data_received + next_frame", *measure(from_bot, samples)))
    stats = driver.stats()
    assert stats["media_in"] > 0 and stats["media_out"] > 0, stats
    assert stats["budget_dropped_messages"] == 0, "the budget dropped: the figure would be wrong"
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="timed batches of 200 (300)")
    args = parser.parse_args()
    from edge_media import loop

    results = loop.run(run(args.samples))
    for name, median, p99 in results:
        print(f"{name:<44} median {median:6.2f} µs  p99 {p99:6.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
