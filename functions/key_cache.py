"""Resolved API keys per warm function: key hash → its record (or None), for a short TTL.

Why a module of its own: the function `Context` owns one cache per warm function and the API's
authentication (`functions/api/auth.py`) reads it; neither may import the other. The TTL bounds
how long a revoked key keeps working; ``touch_due`` spaces the ``last_used_at`` writes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shared.models import ApiKey

__all__ = ["LAST_USED_INTERVAL_SECONDS", "MAX_CACHED_KEYS", "KeyCache"]

MAX_CACHED_KEYS = 10_000
LAST_USED_INTERVAL_SECONDS = 60.0


class KeyCache:
    """Bounded TTL cache of key-hash → ApiKey (or None for unknown keys)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._touched: OrderedDict[str, float] = OrderedDict()

    def get(self, key_hash: str) -> tuple[bool, ApiKey | None]:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] <= self.clock():
            return False, None
        return True, entry[1]

    def put(self, key_hash: str, record: ApiKey | None) -> None:
        self._entries[key_hash] = (self.clock() + self.ttl, record)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > MAX_CACHED_KEYS:
            self._entries.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        """Drop a key at once (this function revoked it; others wait for the TTL)."""
        self._entries.pop(key_hash, None)

    def touch_due(self, key_hash: str, interval: float = LAST_USED_INTERVAL_SECONDS) -> bool:
        """True at most once per ``interval`` per key: time to record ``last_used_at``."""
        now = self.clock()
        last = self._touched.get(key_hash)
        if last is not None and now - last < interval:
            return False
        self._touched[key_hash] = now
        self._touched.move_to_end(key_hash)
        while len(self._touched) > MAX_CACHED_KEYS:
            self._touched.popitem(last=False)
        return True
