"""Per-operation cost of the RTP media core's hot paths (measured here, never in tests).

Run: .venv/bin/python bench/rtp_core.py [--samples N]

Each figure is the cost of one operation in µs: a sample times a small batch of operations
and divides, so timer overhead stays out; the median and p99 are over the samples. The pacer is
also shown per tick for 400 streams. Numbers depend on the machine and its load; compare runs
on the same box only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_media.rtp.g711 import ulaw_to_alaw
from edge_media.rtp.pacer import Pacer
from edge_media.rtp.packet import RtpPacket, pack_header
from edge_media.rtp.playout import PlayoutQueue
from edge_media.rtp.receiver import RtpReceiver

FRAME = bytes(range(160))
PACKET = pack_header(0, 1234, 160_000, 0x12345678) + FRAME
PEER = ("127.0.0.1", 40000)
STREAMS = 400


def measure(step: Callable[[], object], samples: int, batch: int) -> tuple[float, float]:
    """Median and p99 of the per-call cost in µs over `samples` timed batches."""
    for _ in range(batch * 10):
        step()  # warm-up
    costs = []
    clock = time.perf_counter_ns
    for _ in range(samples):
        begin = clock()
        for _ in range(batch):
            step()
        costs.append((clock() - begin) / batch / 1000)
    costs.sort()
    return statistics.median(costs), costs[min(len(costs) - 1, int(len(costs) * 0.99))]


def receiver_step() -> Callable[[], object]:
    receiver = RtpReceiver()
    packets = [pack_header(0, seq, seq * 160, 0x1111) + FRAME for seq in range(65536)]
    state = {"index": 0, "now": 0.0}

    def step() -> object:
        index = state["index"]
        state["index"] = (index + 1) & 0xFFFF
        state["now"] += 0.02
        return receiver.on_packet(packets[int(index)], PEER, state["now"])

    return step


def pacer_step(playout: bool, ticks: int) -> Callable[[], object]:
    """400 streams; with `playout`, each source is a PlayoutQueue pre-filled for `ticks` ticks
    (filled up front so that pushing bot audio is not timed as part of a tick)."""
    pacer = Pacer(0.0)
    audio = FRAME * ticks
    for index in range(STREAMS):
        if playout:
            queue = PlayoutQueue()
            queue.push_media(audio)

            def source(queue: PlayoutQueue = queue) -> bytes | None:
                return queue.next_frame()

        else:

            def source() -> bytes | None:
                return FRAME

        pacer.register(
            source,
            addr=("127.0.0.1", 20000 + 2 * index),
            ssrc=index,
            payload_type=0,
            sequence=index,
            timestamp=index * 1000,
        )
    state = {"tick": 0}

    def step() -> object:
        state["tick"] += 1
        return pacer.tick(state["tick"] * 0.02)

    return step


def playout_step() -> Callable[[], object]:
    queue = PlayoutQueue()
    audio = FRAME * 500
    state = {"left": 0}

    def step() -> object:
        if not state["left"]:
            queue.push_media(audio)
            state["left"] = 500
        state["left"] -= 1
        return queue.next_frame()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    samples = args.samples
    rows: list[tuple[str, float, float]] = []

    def add(name: str, step: Callable[[], object], batch: int, per: int = 1) -> None:
        median, p99 = measure(step, samples, batch)
        rows.append((name, median / per, p99 / per))

    add("RtpPacket.parse (172 B)", lambda: RtpPacket.parse(PACKET), 50)
    add("pack_header + payload", lambda: pack_header(0, 1234, 160_000, 0x1234, False) + FRAME, 50)
    add("RtpReceiver.on_packet (in order)", receiver_step(), 50)
    add("PlayoutQueue.next_frame (+push)", playout_step(), 50)
    add("ulaw_to_alaw 160 B", lambda: ulaw_to_alaw(FRAME), 50)
    tick_samples = max(50, samples // 10)
    for playout in (False, True):
        label = "PlayoutQueue sources" if playout else "constant sources"
        # measure() runs 10 warm-up ticks first; the queues hold enough for every tick.
        median, p99 = measure(pacer_step(playout, tick_samples + 20), tick_samples, 1)
        rows.append((f"Pacer.tick, {STREAMS} streams, {label}: per tick", median, p99))
        rows.append(
            (f"Pacer.tick, {STREAMS} streams, {label}: per stream", median / STREAMS, p99 / STREAMS)
        )

    width = max(len(name) for name, _, _ in rows)
    print(f"Python {sys.version.split()[0]}, {samples} samples per figure")
    print(f"{'operation':<{width}}  {'median µs':>10}  {'p99 µs':>10}")
    for name, median, p99 in rows:
        print(f"{name:<{width}}  {median:>10.3f}  {p99:>10.3f}")


if __name__ == "__main__":
    main()
