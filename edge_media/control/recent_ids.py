"""Command ids a node handled recently: the memory that makes at-least-once delivery act once.

SQS standard queues may deliver a message twice, and the API may send the same command twice
(a client retry). A node remembers the ids it handled for a while and drops repeats. The memory is
bounded both ways: at most ``capacity`` ids (least recently added go first) and each for at most
``ttl_seconds``, which only needs to outlive SQS's redelivery window (visibility timeout x receive
count). Sans-I/O: the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_CAPACITY = 10_000
DEFAULT_TTL_SECONDS = 900.0  # originate: 60 s visibility x 3 receives, with room to spare


class RecentIds:
    """A bounded, expiring set of ids: ``add(id, now)``, ``seen(id, now)``, ``discard(id)``."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, ttl_seconds: float = DEFAULT_TTL_SECONDS
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._added: OrderedDict[str, float] = OrderedDict()  # id -> when added, oldest first

    def __len__(self) -> int:
        return len(self._added)

    def seen(self, item: str, now: float) -> bool:
        """True if ``item`` was added less than ``ttl_seconds`` before ``now``."""
        self._expire(now)
        return item in self._added

    def add(self, item: str, now: float) -> None:
        """Remember ``item`` from ``now`` on (re-adding refreshes it)."""
        self._added.pop(item, None)
        self._added[item] = now
        self._expire(now)
        while len(self._added) > self.capacity:
            self._added.popitem(last=False)

    def discard(self, item: str) -> None:
        """Forget ``item`` (a command handed back for redelivery must be handled when it returns)."""
        self._added.pop(item, None)

    def _expire(self, now: float) -> None:
        horizon = now - self.ttl_seconds
        while self._added:
            oldest, added = next(iter(self._added.items()))
            if added > horizon:
                break
            del self._added[oldest]
