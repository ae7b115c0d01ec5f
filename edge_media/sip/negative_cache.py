"""A short memory of SIP usernames the extension directory did not know.

Why: a scanner REGISTERs or INVITEs as ``100``, ``101``, ``admin``... with made-up credentials,
and in production each lookup is two DynamoDB reads (`routing.stores.DynamoDirectory`). After
the first miss, the same username is answered from here until ``ttl`` passes, at no read. The
TTL is short because an extension created through the API must start working soon; the cache
is bounded, so random usernames cannot grow it. Only misses are kept: credentials are never
cached (the registrar caches nothing secret).

Pure: ``now`` (monotonic seconds) is passed in.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DEFAULT_MAX_USERS", "UnknownUsers"]

DEFAULT_MAX_USERS = 10_000


class UnknownUsers:
    """Usernames looked up in vain, each remembered for ``ttl`` seconds (``ttl`` 0: none)."""

    __slots__ = ("_expiry", "max_users", "ttl")

    def __init__(self, ttl: float, *, max_users: int = DEFAULT_MAX_USERS) -> None:
        if ttl < 0 or max_users < 1:
            raise ValueError("ttl must not be negative and max_users at least 1")
        self.ttl = ttl
        self.max_users = max_users
        # One TTL for all, so insertion order is expiry order: the front expires first.
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def known_missing(self, username: str, now: float) -> bool:
        """True while a miss of ``username`` is remembered: skip the lookup."""
        until = self._expiry.get(username)
        if until is None:
            return False
        if now >= until:
            del self._expiry[username]
            return False
        return True

    def missed(self, username: str, now: float) -> None:
        """Remember that the directory has no ``username``."""
        if self.ttl <= 0:
            return
        expiry = self._expiry
        expiry[username] = now + self.ttl
        expiry.move_to_end(username)
        while expiry and (len(expiry) > self.max_users or next(iter(expiry.values())) <= now):
            expiry.popitem(last=False)

    def forget(self, username: str) -> None:
        """Drop a remembered miss (the extension was found after all)."""
        self._expiry.pop(username, None)
