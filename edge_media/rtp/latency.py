"""A fixed-size latency histogram for per-call media figures (the record's ``stats.slo``).

Why fixed, log-spaced buckets: the figures are read once, at the end of a call, but recorded on
the media path (one sample per caller packet for the RTP → bot latency), for hundreds of calls on
one event loop. A list of samples would grow with the call and cost an allocation per packet;
a bucket array costs one ``math.log`` and one list increment per sample, O(1) time and a
constant ~1 KB per histogram whatever the call's length (the bucket is found by `bisect` over the
fixed edges: one C call, cheaper than a ``math.log``). Log spacing keeps the *relative* error
the same from 10 µs to 10 s: 20 buckets per decade, so a percentile read from a bucket's upper
edge is at most 12 % (one bucket, a factor 10^(1/20)) above the true value, and never above
the largest sample seen.

Samples are seconds (the clock's unit); percentiles are read in milliseconds. Samples at or
below `FLOOR_S` (10 µs, negatives included: a clock read early) fall in the first bucket, whose
upper edge is 0.01 ms; samples of 10 s or more fall in the last one, read as the largest sample.

A histogram can also be windowed: `snapshot` then `add_since` adds what another histogram
recorded since the snapshot. That is how a call gets the node pacer's departure errors for the
ticks that carried its packets without one sample per packet (rtp/session.py).
"""

from __future__ import annotations

import math
from bisect import bisect_right

__all__ = ["BINS", "BINS_PER_DECADE", "FLOOR_S", "LatencyHistogram", "upper_edge_ms"]

FLOOR_S = 1e-5  # 0.01 ms: the first bucket holds everything up to here
DECADES = 6  # 10 µs .. 10 s
BINS_PER_DECADE = 20
BINS = DECADES * BINS_PER_DECADE + 2  # + the floor bucket and the overflow bucket
_TOP = BINS - 1


def upper_edge_ms(index: int) -> float:
    """The upper edge of bucket ``index`` in milliseconds (the overflow bucket has none: inf)."""
    if index >= _TOP:
        return math.inf
    return FLOOR_S * 10 ** (index / BINS_PER_DECADE) * 1000


# Upper edges in seconds: bucket i holds [_EDGES[i-1], _EDGES[i]), bucket 0 everything below
# FLOOR_S, the last bucket everything from 10 s up.
_EDGES = tuple(FLOOR_S * 10 ** (index / BINS_PER_DECADE) for index in range(_TOP))


class LatencyHistogram:
    """Counts of samples in fixed log-spaced buckets; `record` is O(1) and allocates nothing."""

    __slots__ = ("bins", "max")

    def __init__(self) -> None:
        self.bins = [0] * BINS
        self.max = 0.0  # largest sample, seconds

    def record(self, seconds: float) -> None:
        """Add one sample (seconds)."""
        self.bins[bisect_right(_EDGES, seconds)] += 1
        if seconds > self.max:
            self.max = seconds

    @property
    def count(self) -> int:
        """Samples recorded (summed when read: one counter less to bump per sample)."""
        return sum(self.bins)

    def percentile_ms(self, fraction: float) -> float | None:
        """The value (ms) at or below which ``fraction`` (0..1) of the samples lie, read as the
        upper edge of the bucket that holds that rank and capped at the largest sample; None
        when nothing was recorded."""
        count = self.count
        if not count:
            return None
        rank = max(1, math.ceil(fraction * count))
        seen = 0
        for index, in_bin in enumerate(self.bins):
            seen += in_bin
            if seen >= rank:
                edge = upper_edge_ms(index)
                return edge if index == 0 else min(edge, self.max * 1000)
        return self.max * 1000  # pragma: no cover: the ranks add up to count

    @property
    def max_ms(self) -> float | None:
        return self.max * 1000 if self.count else None

    def snapshot(self) -> list[int]:
        """The bucket counts now, for a later `add_since`."""
        return self.bins.copy()

    def add_since(self, other: LatencyHistogram, snapshot: list[int]) -> None:
        """Add what ``other`` recorded after ``snapshot`` was taken of it. The window's largest
        sample is not known, so it is taken as the upper edge of its highest bucket."""
        bins = self.bins
        top = -1
        for index, (now, then) in enumerate(zip(other.bins, snapshot, strict=True)):
            added = now - then
            if added:
                bins[index] += added
                top = index
        if top > 0:
            edge = min(upper_edge_ms(top) / 1000, other.max)
            if edge > self.max:
                self.max = edge
