"""The provider side of bench/streams.py: N fake Cloudonix streams into the node's agent-stream
endpoint, each playing numbered 20 ms frames on its own absolute grid, timed from outside.

Run by bench/streams.py as its own process (so /proc gives the node's CPU apart from this load's):

    python bench/peers/provider_load.py --url ws://127.0.0.1:PORT/api/v1/agent-stream/cloudonix/UUID
        --streams 100 --rate 10 --hold 22 --session-prefix bench-1- --out result.json

Why `ProviderStream` (tests/support/fake_provider.py): it is the provider the node's tests are
written against (Twilio Media Streams framing, ``connected``/``start``/``media``/``stop``,
``play`` on an absolute ``start + k * 20 ms`` grid so a late wake-up never stretches the
stream), so the bench loads the endpoint exactly as the tests exercise it. One subclass,
`TimedStream`, replaces what it does per message received: it keeps arrival times and frame
numbers instead of every parsed message, which at 200 streams (10,000 messages a second) would
cost this process a core and hundreds of MB.

Why numbered frames: every stream plays the same buffer whose frame k holds k (the encoding is
computed once, `encode_frames` is cached), and the echo bot and the node pass payloads through
untouched, so each ``media`` message the node sends back names the frame it carries. Loss is then
exact (frames sent after the first one echoed that never came back), and so is the echo's round
trip (arrival of frame k against its slot on the grid), not inferred from counts.

The schedule: stream i connects at ``i / --rate`` s; once every stream has its first echo back
(or failed, or ``--setup-limit`` s after the last connect), stream i stops ``--hold`` s plus
``i / --rate`` later. So every stream is up and bridged together for ``--hold`` s however long
the node took to set them up, and stops are as spread out as starts. A stream stops by ending
its `play`, waiting `DRAIN_S` for the echoes in flight, then ``stop`` and close 1000
(`ProviderStream.stop`), as a provider does when its call ends. SIGTERM/SIGINT cancel the load
and still write what was measured.

What is recorded per stream (times are epoch seconds, the clock of bench/lib/cpu_sampling.py):

* ``connect_at``: before the TCP connect; ``upgrade_ms``: connect → the 101 answer;
* ``first_media_ms``: connect → the first ``media`` from the node. ``connected`` and ``start``
  go out right after the 101 and audio right after ``start``, and the node has nothing to send
  until the bot echoes caller audio, so this is the time to first audio a caller would hear:
  upgrade, handshake, the session check at Cloudonix, the call slot and record, the bot's
  connection, one echo round trip and the wait for the node's next 20 ms tick;
* ``arrivals_us``: when each ``media`` from the node arrived, µs after ``start`` was sent
  (bench/streams.py cuts the steady window and measures the gaps against 20 ms), and
  ``echo_us``: that arrival against the slot its frame was sent in (the round trip through
  node, bot, node's playout queue and pacer; this process's own lateness included);
* frames sent, received, the first frame number echoed (those before it were sent before the
  bridge was up and are discarded by design), lost, duplicated, out of order, payloads that are
  no frame of ours, the close code and reason the node sent, and ``closed_early`` when the node
  closed the stream before our ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import struct
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from websockets.exceptions import WebSocketException

from edge_media.loop import run
from tests.support.fake_provider import (
    FRAME_BYTES,
    FRAME_S,
    HandshakeRefused,
    ProviderStream,
    encode_frames,
)

DRAIN_S = 1.0  # after the last frame, for the echoes still in flight or queued at the node
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 3.0
END_MARGIN_S = 30.0  # beyond the longest schedule, before the whole load is cancelled
DEFAULT_SETUP_LIMIT_S = 30.0
MAX_VIOLATIONS = 5
MAX_LOST_KEPT = 1000  # lost frame numbers kept per stream (when each was lost says why)
MEDIA_TAIL = '"}}'


def numbered_audio(frames: int) -> bytes:
    """``frames`` 20 ms μ-law frames, frame k starting with k (4 bytes) and a fill byte that
    varies with k too, so no two frames (and no two base64 payloads) are alike."""
    out = bytearray()
    for k in range(frames):
        head = struct.pack(">I", k)
        out += head + bytes([0x80 | (k % 0x7F)]) * (FRAME_BYTES - len(head))
    return bytes(out)


class Schedule:
    """When the streams stop: `hold` s after the last one is bridged (or gave up), each
    ``i / rate`` later, so stops are spread as the starts were."""

    def __init__(self, streams: int, rate: float, hold: float) -> None:
        self.pending = streams
        self.rate = rate
        self.hold = hold
        self.end_base: float | None = None  # monotonic
        self.known = asyncio.Event()
        self.limit_hit = False

    def settled(self) -> None:
        """One stream is bridged (first echo back) or failed."""
        self.pending -= 1
        if self.pending <= 0:
            self._fix()

    def give_up(self) -> None:
        """The setup limit passed with streams still unbridged: stop waiting for them."""
        if self.end_base is None:
            self.limit_hit = True
            self._fix()

    def _fix(self) -> None:
        if self.end_base is None:
            self.end_base = time.monotonic() + self.hold
            self.known.set()

    def end_of(self, index: int) -> float:
        assert self.end_base is not None
        return self.end_base + index / self.rate


class TimedStream(ProviderStream):
    """A `ProviderStream` that keeps, per ``media`` from the node, its arrival and frame number.

    The node's media messages have one compact form (provider_protocol.media_message); one
    carrying our stream's SID and a payload that is one of our frames is recorded without a JSON
    parse. Anything else goes to `ProviderStream`'s own checks, which record it and flag what
    a provider would reject (``violations``).
    """

    def __init__(
        self, url: str, *, session: str, frames: dict[str, int], schedule: Schedule
    ) -> None:
        super().__init__(
            url,
            provider="cloudonix",
            session=session,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
        )
        self._frames = frames
        self._schedule = schedule
        self._head = '{"event":"media","streamSid":"' + self.stream_sid + '","media":{"payload":"'
        self.arrivals: list[float] = []
        self.numbers: list[int] = []
        self.connect_at: float | None = None
        self.opened_at: float | None = None
        self.start_at: float | None = None  # monotonic, like every time kept here
        self.play_end_at: float | None = None  # the last frame sent (or the play cut)
        self.stop_at: float | None = None
        self.error: str | None = None
        self.closed_early = False

    @property
    def frames_sent(self) -> int:
        """Media messages sent so far: `ProviderStream`'s own chunk counter, exact even when
        `play` is cancelled mid-buffer (which is how a stream's audio ends here)."""
        return self._chunk

    def _on_frame(self, frame: str | bytes, at: float) -> None:
        at = time.monotonic()  # uvloop's loop.time() has 1 ms steps, too coarse for pacing
        if type(frame) is str and frame.startswith(self._head) and frame.endswith(MEDIA_TAIL):
            number = self._frames.get(frame[len(self._head) : -len(MEDIA_TAIL)])
            if number is not None:
                if not self.arrivals:
                    self._schedule.settled()
                self.arrivals.append(at)
                self.numbers.append(number)
                self._changed.set()
                return
        super()._on_frame(frame, at)

    def summary(self, epoch: float) -> dict[str, Any]:
        """What bench/streams.py reads for this stream (``epoch``: epoch minus monotonic)."""
        numbers = self.numbers
        sent = self.frames_sent
        first = min(numbers) if numbers else None
        unique = set(numbers)
        lost = 0 if first is None else sum(1 for k in range(first, sent) if k not in unique)
        start = self.start_at
        ws = self._ws

        def at(t: float | None) -> float | None:
            return None if t is None else t + epoch

        def ms_since_connect(t: float | None) -> float | None:
            if t is None or self.connect_at is None:
                return None
            return (t - self.connect_at) * 1000

        arrivals = [] if start is None else [round((t - start) * 1e6) for t in self.arrivals]
        return {
            "session": self.session,
            "error": self.error,
            "connect_at": at(self.connect_at),
            "start_at": at(start),
            "play_end_at": at(self.play_end_at),
            "stop_at": at(self.stop_at),
            "upgrade_ms": ms_since_connect(self.opened_at),
            "first_media_ms": ms_since_connect(self.arrivals[0] if self.arrivals else None),
            "sent": sent,
            "received": len(numbers),
            "first_number": first,
            "lost": lost,
            "lost_numbers": [k for k in range(first, sent) if k not in unique][:MAX_LOST_KEPT]
            if first is not None
            else [],
            "duplicates": len(numbers) - len(unique),
            "reordered": sum(1 for a, b in pairwise(numbers) if b < a),
            "other_messages": dict(Counter(self.events())),  # not our frames: marks, clears…
            "foreign_audio_bytes": self.audio_bytes,
            "violations": self.violations[:MAX_VIOLATIONS],
            "close_code": None if ws is None else ws.close_code,
            "close_reason": None if ws is None else ws.close_reason,
            "closed_early": self.closed_early,
            "arrivals_us": arrivals,
            "echo_us": [
                us - round(k * FRAME_S * 1e6) for us, k in zip(arrivals, numbers, strict=True)
            ],
        }


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def drive(stream: TimedStream, index: int, at: float, audio: bytes) -> None:
    """One stream's life: connect at ``at``, handshake, play until the schedule's end for it,
    drain, stop."""
    loop = asyncio.get_running_loop()
    schedule = stream._schedule
    await _sleep_until(loop, at)
    stream.connect_at = time.monotonic()
    try:
        await stream.open(handshake=False)
    except HandshakeRefused as refused:
        stream.error = f"upgrade refused: HTTP {refused.status}"
        schedule.settled()
        return
    except (OSError, TimeoutError, WebSocketException) as error:
        stream.error = f"connect failed: {type(error).__name__}: {error}"[:200]
        schedule.settled()
        return
    stream.opened_at = time.monotonic()
    player: asyncio.Future[int] | None = None
    try:
        stream.send_connected()
        stream.send_start()
        stream.start_at = time.monotonic()
        player = asyncio.ensure_future(stream.play(audio))
        known = asyncio.ensure_future(schedule.known.wait())
        await asyncio.wait({player, known}, return_when=asyncio.FIRST_COMPLETED)
        known.cancel()
        if not player.done():
            await asyncio.wait({player}, timeout=schedule.end_of(index) - time.monotonic())
        if not player.done():
            player.cancel()
            await asyncio.wait({player})
        stream.play_end_at = time.monotonic()
        await asyncio.sleep(DRAIN_S)
        if not stream.is_open:
            stream.closed_early = True
            await stream.wait_closed(CLOSE_TIMEOUT_S)
            return
        stream.stop_at = time.monotonic()
        await stream.stop()
    except (OSError, WebSocketException, AssertionError) as error:
        stream.error = f"during the stream: {type(error).__name__}: {error}"[:200]
    finally:
        if not stream.arrivals:
            schedule.settled()  # never bridged: the others need not wait for it
        if player is not None and not player.done():
            player.cancel()


async def load(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    epoch = time.time() - time.monotonic()
    ramp = args.streams / args.rate
    longest = ramp + args.setup_limit + args.hold + ramp + 1.0  # the last stream, at the latest
    frames = round(longest / FRAME_S)
    audio = numbered_audio(frames)
    by_payload = {payload: k for k, payload in enumerate(encode_frames(audio))}
    schedule = Schedule(args.streams, args.rate, args.hold)
    streams = [
        TimedStream(
            args.url, session=f"{args.session_prefix}{i}", frames=by_payload, schedule=schedule
        )
        for i in range(args.streams)
    ]
    begin = loop.time() + 0.2
    tasks = [
        asyncio.ensure_future(drive(s, i, begin + i / args.rate, audio))
        for i, s in enumerate(streams)
    ]
    limit = loop.call_at(begin + ramp + args.setup_limit, schedule.give_up)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    everything = asyncio.gather(*tasks)
    stopped = asyncio.ensure_future(stop.wait())
    bound = longest + DRAIN_S + END_MARGIN_S
    await asyncio.wait({everything, stopped}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    limit.cancel()
    interrupted = not everything.done()
    if interrupted:
        everything.cancel()
        await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        for stream in streams:
            stream.abort()
    elif (error := everything.exception()) is not None:
        raise error  # a bug of this load, not the node's doing
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "interrupted": interrupted,
        "setup_limit_hit": schedule.limit_hit,
        "streams": [s.summary(epoch) for s in streams],
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True, help="the agent-stream URL (v2, cloudonix)")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="new streams per second")
    parser.add_argument(
        "--hold", type=float, required=True, help="seconds every stream is up and bridged"
    )
    parser.add_argument(
        "--setup-limit",
        type=float,
        default=DEFAULT_SETUP_LIMIT_S,
        help="after the last connect, stop waiting for unbridged streams (30)",
    )
    parser.add_argument("--session-prefix", required=True, help="session i is PREFIX + i")
    parser.add_argument("--out", type=Path, required=True, help="the JSON result")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.rate <= 0 or args.hold <= 0 or args.setup_limit <= 0:
        parser.error("--streams, --rate, --hold and --setup-limit must be positive")
    result = run(load(args))
    args.out.write_text(json.dumps(result, separators=(",", ":")))
    print(
        f"provider load: {args.streams} streams done"
        + (" (interrupted)" if result["interrupted"] else ""),
        flush=True,
    )
    return 1 if result["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
