"""What bench/rtp.py and bench/calls.py compute the same way from a sipp ``uac_load.xml`` run.

Both load the node with the same scenario (N callers ramped up at a rate, each streaming speech
at 50 pps, DTMF at the end, then BYE) and judge it over the same steady window, so the plan of a
run, the window, the call-seconds in it, the pacing of what the node sent, the way a percentile
figure is kept and printed, and Ctrl-C live here once: two copies would drift, and the two
benches' figures would stop being comparable.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from types import FrameType
from typing import Any

from tests.interop.capture import AUDIO_PAYLOAD_TYPES, Percentiles, RtpSeen, grid_errors_ms
from tests.interop.sipp import CallTiming

SCENARIO = "uac_load.xml"
DTMF_TAIL_S = 3.5  # uac_load.xml: play_dtmf then a 3.5 s pause before its BYE
SETTLE_S = 2.0  # after the last call is up, before the steady window opens
SIPP_TIMEOUT_MARGIN_S = 60.0
MIN_WINDOW_S = 5.0


@dataclass
class Plan:
    calls: int
    rate: float
    duration_s: float
    find_max: bool

    @property
    def ramp_s(self) -> float:
        return self.calls / self.rate

    @property
    def call_ms(self) -> int:
        """sipp -d: the first call must still be up when the steady window closes."""
        return int((self.ramp_s + 2 * SETTLE_S + self.duration_s) * 1000)

    @property
    def total_s(self) -> float:
        return self.ramp_s + self.call_ms / 1000 + DTMF_TAIL_S


def active_calls(timings: Iterable[CallTiming], at: float) -> int:
    return sum(
        1
        for t in timings
        if t.acked_at is not None and t.acked_at <= at and (t.bye_at is None or at < t.bye_at)
    )


def call_seconds(timings: Iterable[CallTiming], start: float, end: float) -> float:
    """Sum over calls of the time each was up (ACK .. BYE) inside [start, end]."""
    total = 0.0
    for t in timings:
        if t.acked_at is None:
            continue
        up, down = max(start, t.acked_at), min(end, t.bye_at if t.bye_at is not None else end)
        total += max(0.0, down - up)
    return total


def steady_window(timings: Sequence[CallTiming]) -> tuple[float, float] | None:
    """From SETTLE_S after the last call was answered to the first hangup."""
    acked = [t.acked_at for t in timings if t.acked_at is not None]
    byes = [t.bye_at for t in timings if t.bye_at is not None]
    if not acked or not byes:
        return None
    start, end = max(acked) + SETTLE_S, min(byes)
    return (start, end) if end - start >= MIN_WINDOW_S else None


def pacing_in_window(
    streams: dict[Any, list[RtpSeen]], window: tuple[float, float] | None
) -> tuple[list[float], list[float]]:
    """|grid error| and inter-departure deltas (ms) of every audio packet inside ``window``."""
    errors: list[float] = []
    deltas: list[float] = []
    for packets in streams.values():
        audio = [p for p in packets if p.payload_type in AUDIO_PAYLOAD_TYPES]
        if len(audio) < 2:
            continue
        for pkt, error in zip(audio, grid_errors_ms(audio), strict=True):
            if window is None or window[0] <= pkt.time <= window[1]:
                errors.append(abs(error))
        for a, b in pairwise(audio):
            if window is None or window[0] <= b.time <= window[1]:
                deltas.append((b.time - a.time) * 1000)
    return errors, deltas


# -- figures -----------------------------------------------------------------------------------


def percentile_dict(p: Percentiles | None) -> dict[str, float] | None:
    """A figure as the run reports keep it: plain keys, so ``--json`` writes it as it is."""
    return None if p is None else {"p50": p.p50, "p99": p.p99, "max": p.max, "n": p.count}


def percentile_text(p: dict[str, float] | None, budget: float | None = None) -> str:
    """One line of a run's report; with a budget, whether the p99 is within it."""
    if p is None:
        return "n/a"
    verdict = "" if budget is None else ("  ok" if p["p99"] <= budget else f"  OVER {budget:g}")
    return f"p50 {p['p50']:.2f}  p99 {p['p99']:.2f}  max {p['max']:.2f}  (n={p['n']:.0f}){verdict}"


# -- Ctrl-C ------------------------------------------------------------------------------------


def interrupt(signum: int, frame: FrameType | None) -> None:
    """Unwind through the ``finally`` blocks, which stop every process (bounded).

    A second signal during that cleanup would abort it and leave peers running, so further
    ones are ignored from here on.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
