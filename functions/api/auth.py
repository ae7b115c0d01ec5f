"""API-key authentication: ``X-API-KEY: sk_live_...`` or ``Authorization: Bearer sk_live_...``.

A key resolves to its account and role by one GetItem on the key's SHA-256. Resolutions are cached
per warm function for ``api_key_cache_seconds`` (default 5 s): that bounds how long a revoked key
keeps working, and keeps the table out of the hot path of a busy client. Unknown keys are cached
too, so a client hammering with a wrong key costs one read per interval, not one per request. The
cache is keyed by the hash, never the key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread
from starlette.requests import Request

from functions.api.errors import ApiError
from functions.context import Context
from shared.apikeys import hash_api_key, looks_like_api_key
from shared.models import ApiKey, ApiKeyRole

MAX_CACHED_KEYS = 10_000


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "missing or invalid API key: send X-API-KEY: sk_live_... "
        "(or Authorization: Bearer sk_live_...)",
        headers={"WWW-Authenticate": 'Bearer realm="agera"'},
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the account the key belongs to and what the key may do."""

    account_id: str
    role: ApiKeyRole
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role is ApiKeyRole.ADMIN


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class KeyCache:
    """Bounded TTL cache of key-hash → ApiKey (or None for unknown keys)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()

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


def resolve_key(ctx: Context, key: str) -> Principal | None:
    """The principal for a presented key, or None (unknown, revoked, malformed)."""
    if not looks_like_api_key(key):
        return None
    key_hash = hash_api_key(key)
    cache = ctx.key_cache
    hit, record = cache.get(key_hash)
    if not hit:
        record = ctx.repo.get(ApiKey, key_hash)
        cache.put(key_hash, record)
    if record is None or not record.active:
        return None
    return Principal(record.account_id, record.role, record.key_id)


async def authenticate(request: Request, ctx: Context) -> Principal:
    """The caller's principal, or a 401 ApiError."""
    key = presented_key(request)
    if not key:
        raise _unauthorized()
    principal = await to_thread.run_sync(resolve_key, ctx, key)
    if principal is None:
        raise _unauthorized()
    return principal
