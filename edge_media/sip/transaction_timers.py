"""RFC 3261 §17 timer values and the deadline queue the transaction layer fires them from.

Why a module of its own: the values are policy (T1, T2 and T4 are per deployment, §17.1.1.1
"T1 ... MAY be chosen larger"), and the queue is the only place that knows how deadlines are
ordered. Nothing here reads a clock: every deadline is an absolute ``now``-based float passed in,
so a test can run 32 seconds of retransmissions in microseconds with a fake clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = [
    "DEFAULT_T1",
    "DEFAULT_T2",
    "DEFAULT_T4",
    "DEFAULT_TIMER_D",
    "TIMEOUT_FACTOR",
    "TRYING_DELAY",
    "UNRELIABLE_TRANSPORTS",
    "DeadlineQueue",
    "TimerConfig",
    "is_reliable",
]

# §17.1.1.1 and Table 4 (Appendix A): RTT estimate, maximum retransmit interval for non-INVITE
# requests and INVITE responses, maximum time a message stays in the network.
DEFAULT_T1: Final = 0.5
DEFAULT_T2: Final = 4.0
DEFAULT_T4: Final = 5.0
# Table 4: Timer D is "> 32s for UDP", fixed rather than derived from T1 (§17.1.1.2).
DEFAULT_TIMER_D: Final = 32.0
# §17.2.1: "the server transaction MUST generate a 100 (Trying) response unless it knows that
# the TU will generate a provisional or final response within 200 ms".
TRYING_DELAY: Final = 0.2
# Every transaction timer that is a multiple of T1 uses this factor (Timers B, F, H, J, L, M).
TIMEOUT_FACTOR: Final = 64

# §18: only UDP loses messages; TCP, TLS, SCTP and WebSocket deliver them or fail.
UNRELIABLE_TRANSPORTS: Final = frozenset({"UDP"})


def is_reliable(transport: str) -> bool:
    """True when ``transport`` delivers or fails (TCP, TLS, SCTP, WS, WSS), never loses."""
    return transport.upper() not in UNRELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2, T4 and Timer D, and every §17 timer derived from them (Table 4, RFC 6026 §8.4).

    Methods taking ``reliable`` give 0 where §17 says "zero seconds for reliable transports"
    and None where the timer is not started at all (retransmission timers A, E and G: a reliable
    transport retransmits by itself, §17.1.1.2).
    """

    t1: float = DEFAULT_T1
    t2: float = DEFAULT_T2
    t4: float = DEFAULT_T4
    d: float = DEFAULT_TIMER_D

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError(f"T1 must be positive: {self.t1!r}")
        if not self.t2 >= self.t1:
            raise ValueError(f"T2 must be at least T1: {self.t2!r}")
        if not self.t4 >= 0 or not self.d >= 0:
            raise ValueError("T4 and Timer D must not be negative")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M, and the 2xx retransmission window."""
        return TIMEOUT_FACTOR * self.t1

    def retransmit(self, reliable: bool) -> float | None:
        """The first interval of Timers A, E and G: T1, or None on a reliable transport."""
        return None if reliable else self.t1

    def timer_d(self, reliable: bool) -> float:
        return 0.0 if reliable else self.d

    def timer_i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4


K = TypeVar("K", bound=Hashable)


class DeadlineQueue(Generic[K]):
    """Absolute deadlines keyed by anything hashable; re-setting a key replaces its deadline.

    A binary heap with lazy deletion: `set` and `cancel` are O(log n) / O(1) and leave stale
    heap entries behind, which `next_deadline` and `pop_due` skip. Keys that share a deadline
    come out in the order they were set, so one fake-clock step fires timers deterministically.
    """

    __slots__ = ("_current", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._current: dict[K, tuple[float, int]] = {}
        self._seq = 0

    def set(self, key: K, deadline: float) -> None:
        self._seq += 1
        self._current[key] = (deadline, self._seq)
        heapq.heappush(self._heap, (deadline, self._seq, key))

    def cancel(self, key: K) -> None:
        self._current.pop(key, None)

    def get(self, key: K) -> float | None:
        entry = self._current.get(key)
        return None if entry is None else entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def __len__(self) -> int:
        return len(self._current)

    def _drop_stale(self) -> None:
        heap, current = self._heap, self._current
        while heap:
            deadline, seq, key = heap[0]
            if current.get(key) == (deadline, seq):
                return
            heapq.heappop(heap)

    def next_deadline(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> K | None:
        """Remove and return the earliest key whose deadline is at or before ``now``."""
        self._drop_stale()
        heap = self._heap
        if not heap or heap[0][0] > now:
            return None
        _, _, key = heapq.heappop(heap)
        del self._current[key]
        return key
