"""Exponential back-off delays for the node's AWS loops (SQS polls, heartbeats, event sends).

Why one helper: three loops retry against the same services and must all stay bounded; a cap keeps
a node that lost AWS for minutes from sleeping for hours once AWS is back. No jitter: delays are
pure so they can be tested, and each node already polls on its own schedule.
"""

from __future__ import annotations

MAX_EXPONENT = 30  # 2**30 x any sane base is far past every cap; avoids huge floats


def backoff_delay(failures: int, *, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1 → base, 2 → 2 x base, ...)."""
    if failures < 1:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, MAX_EXPONENT)))
