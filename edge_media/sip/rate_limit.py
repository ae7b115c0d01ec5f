"""A token bucket per source IP, so that one flooding peer cannot starve the others.

Why apart from `transport`: it is pure arithmetic on ``now`` (no socket, no loop), so it is
tested and reasoned about alone; `SipTransport` charges one token per request before parsing.
"""

from __future__ import annotations

__all__ = ["SourceRateLimiter"]

RATE_LIMIT_LOG_INTERVAL = 60.0  # at most one "rate limited" line per source per minute
MAX_TRACKED_SOURCES = 10_000  # token buckets kept; bounds memory under spoofed-source floods
SOURCE_SWEEP_INTERVAL = 1.0  # seconds between sweeps for refilled buckets when at the cap


class _Bucket:
    __slots__ = ("logged_at", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.logged_at: float | None = None


class SourceRateLimiter:
    """A token bucket per source: ``burst`` requests at once, then ``rate`` per second.

    Pure (``now`` passed in). Memory is bounded by ``max_sources``: when full, buckets that
    have refilled completely are forgotten (they carry no state worth keeping), and if that is
    not enough the oldest bucket goes. A spoofed-source flood can therefore earn some sources a
    fresh burst, but can never grow the table.
    """

    __slots__ = ("_buckets", "_burst", "_last_sweep", "_log_interval", "_max_sources", "_rate")

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_sources: int = MAX_TRACKED_SOURCES,
        log_interval: float = RATE_LIMIT_LOG_INTERVAL,
    ) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be positive, burst at least 1, max_sources at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._max_sources = max_sources
        self._log_interval = log_interval
        self._buckets: dict[str, _Bucket] = {}
        self._last_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        """Take one token from ``source``'s bucket; False when it is empty."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self._max_sources:
                self._make_room(now)
            self._buckets[source] = _Bucket(self._burst - 1, now)
            return True
        elapsed = now - bucket.stamp
        tokens = bucket.tokens
        if elapsed > 0:
            tokens = min(self._burst, tokens + elapsed * self._rate)
            bucket.stamp = now
        if tokens >= 1:
            bucket.tokens = tokens - 1
            return True
        bucket.tokens = tokens
        return False

    def should_log(self, source: str, now: float) -> bool:
        """True at most once per ``log_interval`` per source: whether to log a drop now."""
        bucket = self._buckets.get(source)
        if bucket is None:
            return False
        if bucket.logged_at is not None and now - bucket.logged_at < self._log_interval:
            return False
        bucket.logged_at = now
        return True

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        if now - self._last_sweep >= SOURCE_SWEEP_INTERVAL:
            self._last_sweep = now
            burst, rate = self._burst, self._rate
            full = [
                key
                for key, bucket in buckets.items()
                if bucket.tokens + (now - bucket.stamp) * rate >= burst
            ]
            for key in full:
                del buckets[key]
        if len(buckets) >= self._max_sources:
            del buckets[next(iter(buckets))]  # dicts keep insertion order: the oldest source
