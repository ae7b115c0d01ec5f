"""Whether this node (one worker process) has room for one more call.

Two limits, and above either a new call is refused where it arrives, so it lands on a node with
room instead of failing here: an INVITE gets 503 with Retry-After (a carrier then tries its next
route), an agent-stream upgrade gets HTTP 503 (and ``/health`` says ``full``, so the load
balancer sends new streams elsewhere), and the originate consumer stops receiving (the commands
stay on the shared queue for another node). Calls already up are never touched.

- ``AGERA_MAX_CALLS``: calls on the node, counted from the INVITE (or stream upgrade, or claimed
  originate) to the end, so a burst of INVITEs cannot overshoot while the first ones are set up.
  With several media workers each worker takes an even share (``infra/edge.py``).
- ``AGERA_MAX_LOOP_LAG_MS``: how late the event loop wakes up. Why the loop's lag and not CPU
  percent: a worker is one thread, so a saturated CPU shows up as lag, and lag is what the
  callers hear (every call's 20 ms packets leave from this loop); CPU percent also counts work
  that costs no one anything when the loop is otherwise idle. The probe sleeps 50 ms at a time
  and records how late it woke; the node is full while the 90th percentile of the last second
  is over the limit, and has room again only below half of it (hysteresis: a node at the
  boundary does not flap between full and not full every second). One long GC pause is one
  sample and does not trip it.

The window is sans-I/O (`LagWindow`), fed by `NodeCapacity.watch` on the running loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Full", "LagWindow", "NodeCapacity", "worker_share"]

logger = logging.getLogger("agera.edge.capacity")

PROBE_SECONDS = 0.05
WINDOW_SAMPLES = 20  # one second of probes
LAG_PERCENTILE = 0.9
RETRY_AFTER_SECONDS = 5  # Retry-After on a refusal: load changes within seconds, not minutes


@dataclass(frozen=True, slots=True)
class Full:
    """Why the node takes no new call now: ``reason`` goes into a Warning header and logs."""

    reason: str
    retry_after: int = RETRY_AFTER_SECONDS


class LagWindow:
    """The loop's recent lateness: over the limit at the 90th percentile, clear below half."""

    def __init__(self, limit_ms: float, samples: int = WINDOW_SAMPLES) -> None:
        self.limit_ms = limit_ms
        self._samples: deque[float] = deque(maxlen=samples)
        self.over = False

    def observe(self, lag_ms: float) -> bool:
        """Record one probe's lateness; returns True when the over/clear state changed."""
        self._samples.append(max(0.0, lag_ms))
        if len(self._samples) < self._samples.maxlen:  # type: ignore[operator]
            return False
        level = self.level_ms()
        was = self.over
        if not was and level > self.limit_ms:
            self.over = True
        elif was and level < self.limit_ms / 2:
            self.over = False
        return self.over != was

    def level_ms(self) -> float:
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * LAG_PERCENTILE))]


def worker_share(max_calls: int, workers: int, index: int) -> int:
    """Worker ``index``'s part of a node-wide ``max_calls`` (0: no limit).

    The remainder goes to the first workers; every worker gets at least one call, since a share
    of 0 would read as "no limit".
    """
    if max_calls <= 0:
        return 0
    base, extra = divmod(max_calls, workers)
    return max(1, base + (1 if index < extra else 0))


class NodeCapacity:
    """``room()`` is None while a new call may start, else a `Full` that says why not."""

    def __init__(
        self,
        *,
        max_calls: int,
        max_loop_lag_ms: float,
        calls: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_calls = max_calls
        self.calls = calls
        self.lag = LagWindow(max_loop_lag_ms) if max_loop_lag_ms > 0 else None
        self._clock = clock
        self.refused = 0  # INVITEs and stream upgrades turned away (held originates are not)
        self._task: asyncio.Task[None] | None = None
        self._state: str | None = None  # why the node was full at the last look

    def room(self) -> Full | None:
        if self.lag is not None and self.lag.over:
            state, full = (
                "lag",
                Full(f"node overloaded (event loop lag {self.lag.level_ms():.0f} ms)"),
            )
        elif self.max_calls > 0 and self.calls() >= self.max_calls:
            state, full = "calls", Full(f"node full ({self.max_calls} calls)")
        else:
            state, full = None, None
        if state != self._state:  # one line per change, not per refused call
            self._state = state
            if full is not None:
                logger.warning("taking no new calls: %s", full.reason)
            else:
                logger.info("taking calls again (%d live)", self.calls())
        return full

    def refuse(self) -> Full | None:
        """`room()` for a call that is turned away when there is none (counted)."""
        full = self.room()
        if full is not None:
            self.refused += 1
        return full

    def start(self) -> None:
        if self.lag is not None and self._task is None:
            self._task = asyncio.ensure_future(self.watch())

    async def watch(self) -> None:
        """Feed the lag window from the running loop until `stop`."""
        assert self.lag is not None
        while True:
            expected = self._clock() + PROBE_SECONDS
            await asyncio.sleep(PROBE_SECONDS)
            if self.lag.observe((self._clock() - expected) * 1000.0):
                self.room()  # logs the change when it happens, not at the next call

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
