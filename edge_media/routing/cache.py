"""What the node remembers of the table between calls: accounts, numbers, extensions and agents.

Why: before a call can be answered the node needs its Number (or Extension), its Account and, for
an agent route, its Agent. Read from DynamoDB for every INVITE, that is two or three round trips
on the path INVITE → 200 (the performance goal is p99 ≤ 50 ms), and a burst of calls to one
number reads the same items hundreds of times a second. Misses are kept too: a scanner dialling
unknown numbers must cost a dictionary lookup per INVITE, not a table read.

How changes reach a node: the API sends an ``Invalidate`` command (``shared/commands.py``) to
every live node's queue after each write that changes routing (``functions/api/node_notify.py``),
and the node drops those entries at once. The TTLs only bound how stale an entry can get when an
invalidation is lost (a failed send, a node that registered after the write was announced):
``AGERA_ROUTE_CACHE_SECONDS`` for numbers, extensions and agents, ``AGERA_ACCOUNT_CACHE_SECONDS``
for accounts (shorter by default, as before invalidation existed: a suspension must not wait
long even then). Every kind holds at most ``AGERA_ROUTE_CACHE_SIZE`` entries, least recently used
going first. A TTL of 0 caches nothing of that kind.

A read that was in flight while an invalidation arrived may return the item as it was before the
write; storing it would undo the invalidation for a whole TTL. So each cache counts its
invalidations (``generation``), a filler notes the count before it reads, and `TtlCache.put`
drops the value when the count moved meanwhile (coarse: any invalidation of that kind, which is
rare, costs one extra read).

Pure: ``now`` (monotonic seconds) is passed in; nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, Generic, Literal, TypeVar

from shared.models import Account, Agent, Extension, Number

__all__ = [
    "ACCOUNT_CACHE_SECONDS",
    "ACCOUNT_CACHE_SIZE",
    "MISSING",
    "ROUTE_CACHE_SECONDS",
    "ROUTE_CACHE_SIZE",
    "AccountCache",
    "CacheKind",
    "RouteCache",
    "TtlCache",
]

# The defaults of the settings of the same names (shared/settings.py).
ACCOUNT_CACHE_SECONDS = 5.0
ROUTE_CACHE_SECONDS = 30.0
ROUTE_CACHE_SIZE = 10_000
ACCOUNT_CACHE_SIZE = 1024  # AccountCache's own default (kept from before the route cache)

CacheKind = Literal["account", "number", "extension", "agent"]

K = TypeVar("K")
V = TypeVar("V")


class _Missing(enum.Enum):
    MISSING = enum.auto()


# What `TtlCache.get` returns for "not cached": distinct from a cached None (a known miss).
MISSING: Final = _Missing.MISSING


class TtlCache(Generic[K, V]):
    """Values (None included: a cached miss) kept ``ttl_seconds``, at most ``max_size`` of them."""

    def __init__(self, *, ttl_seconds: float, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"cache size {max_size} must be at least 1")
        self.ttl_seconds = ttl_seconds
        self.max_size = max_size
        self.generation = 0  # invalidations so far (see the module docstring)
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K, now: float) -> V | Literal[_Missing.MISSING]:
        """The fresh value for ``key`` (possibly None), else `MISSING`."""
        entry = self._items.get(key)
        if entry is None:
            self.misses += 1
            return MISSING
        expires, value = entry
        if now >= expires:
            del self._items[key]
            self.misses += 1
            return MISSING
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: K, value: V, now: float, *, generation: int | None = None) -> None:
        """Keep ``value``; not when caching is off or ``generation`` (noted before the read that
        produced the value) is no longer current: an invalidation came while it was read."""
        if self.ttl_seconds <= 0:
            return
        if generation is not None and generation != self.generation:
            return
        self._items[key] = (now + self.ttl_seconds, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def invalidate(self, keys: Iterable[K]) -> int:
        """Forget ``keys``; how many were cached. Reads in flight will not be stored."""
        self.generation += 1
        return sum(self._items.pop(key, None) is not None for key in keys)

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()


class RouteCache:
    """One `TtlCache` per kind the router reads, and the invalidation the API asks for.

    Keys: accounts by account_id, numbers by E.164 number (numbers are gateway-wide), extensions
    by ``(account_id, extension)``, agents by agent uuid (as text).
    """

    def __init__(
        self,
        *,
        route_seconds: float = ROUTE_CACHE_SECONDS,
        account_seconds: float = ACCOUNT_CACHE_SECONDS,
        max_size: int = ROUTE_CACHE_SIZE,
    ) -> None:
        self.accounts: TtlCache[str, Account | None] = TtlCache(
            ttl_seconds=account_seconds, max_size=max_size
        )
        self.numbers: TtlCache[str, Number | None] = TtlCache(
            ttl_seconds=route_seconds, max_size=max_size
        )
        self.extensions: TtlCache[tuple[str, str], Extension | None] = TtlCache(
            ttl_seconds=route_seconds, max_size=max_size
        )
        self.agents: TtlCache[str, Agent | None] = TtlCache(
            ttl_seconds=route_seconds, max_size=max_size
        )
        self.invalidations = 0  # commands applied (tests and health wait on it)

    def invalidate(self, kind: CacheKind, account_id: str, keys: Iterable[str]) -> int:
        """Drop the entries an API write changed; how many were cached.

        ``account``: the account itself (``keys`` are not needed). ``number``: E.164 numbers,
        whatever account held them (a number can move between accounts). ``extension``: that
        account's extension names. ``agent``: agent uuids.
        """
        self.invalidations += 1
        if kind == "account":
            return self.accounts.invalidate([account_id, *keys])
        if kind == "number":
            return self.numbers.invalidate(keys)
        if kind == "extension":
            return self.extensions.invalidate((account_id, name) for name in keys)
        return self.agents.invalidate(keys)

    def sizes(self) -> dict[str, int]:
        return {
            "account": len(self.accounts),
            "number": len(self.numbers),
            "extension": len(self.extensions),
            "agent": len(self.agents),
        }


class AccountCache:
    """Accounts alone, keyed by their id: the interface of the account cache that came before
    `RouteCache` (a miss is None here, not cached)."""

    def __init__(
        self, *, ttl_seconds: float = ACCOUNT_CACHE_SECONDS, max_size: int = ACCOUNT_CACHE_SIZE
    ) -> None:
        self._cache: TtlCache[str, Account] = TtlCache(ttl_seconds=ttl_seconds, max_size=max_size)

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, account_id: str, now: float) -> Account | None:
        found = self._cache.get(account_id, now)
        return None if found is MISSING else found

    def put(self, account: Account, now: float) -> None:
        self._cache.put(account.account_id, account, now)
