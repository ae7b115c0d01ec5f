"""API-key authentication: ``X-API-KEY: sk_live_...`` or ``Authorization: Bearer sk_live_...``.

A key resolves to its account and role by one GetItem on the key's SHA-256. Resolutions are cached
per warm function for ``api_key_cache_seconds`` (default 5 s): that bounds how long a revoked key
keeps working, and keeps the table out of the hot path of a busy client. Unknown keys are cached
too, so a client hammering with a wrong key costs one read per interval, not one per request. The
cache is keyed by the hash, never the key.

``last_used_at`` is written here, in the request, at most once per ``LAST_USED_INTERVAL_SECONDS``
per key and warm function, with a condition that lets only one function per interval win. The
write rides in the same worker thread as the key lookup: one extra UpdateItem a minute per key is
cheaper than a background task, which on Lambda would either delay the response (Mangum waits for
it) or be frozen with the function. A failed write is logged and never fails the request.

Endpoints get all of this from the `requires_key` decorator rather than calling `authenticate`
themselves: one place decides that the key is checked first, and a route without the decorator is
visibly public.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from functions import observability
from functions.api.errors import ApiError
from functions.api.routing import Endpoint
from functions.context import Context
from functions.key_cache import LAST_USED_INTERVAL_SECONDS
from shared.apikeys import hash_api_key, looks_like_api_key
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed
from shared.models import ApiKey, ApiKeyRole

logger = logging.getLogger("agera.api")


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


def resolve_key(ctx: Context, key: str) -> Principal | None:
    """The principal for a presented key, or None (unknown, revoked, malformed)."""
    if not looks_like_api_key(key):
        return None
    return principal_for_hash(ctx, hash_api_key(key))


def principal_for_hash(ctx: Context, key_hash: str) -> Principal | None:
    """The principal of a live key given its hash, through the key cache.

    The dashboard's session keeps only the hash, so it resolves from here rather than the key.
    """
    cache = ctx.key_cache
    hit, record = cache.get(key_hash)
    if not hit:
        record = ctx.repo.get(ApiKey, key_hash)
        cache.put(key_hash, record)
    if record is None or not record.active:
        return None
    if cache.touch_due(key_hash):
        touch_last_used(ctx, record)
    return Principal(record.account_id, record.role, record.key_id)


def touch_last_used(ctx: Context, record: ApiKey) -> None:
    """Set ``last_used_at`` unless another function did within the interval (or it was revoked)."""
    now = utc_now()
    cutoff = now - timedelta(seconds=LAST_USED_INTERVAL_SECONDS)
    request = mapping.update_request(
        ctx.settings.table_name,
        mapping.key(ApiKey, record.key_hash),
        {"last_used_at": iso_z(now, millis=True)},
        # ISO-8601 strings of one format compare like the times they spell.
        condition="attribute_not_exists(#rev) AND (attribute_not_exists(#lu) OR #lu < :cutoff)",
        condition_names={"#rev": "revoked_at", "#lu": "last_used_at"},
        condition_values={":cutoff": iso_z(cutoff, millis=True)},
    )
    try:
        ctx.repo.execute_update(request)
    except ConditionFailed:
        pass  # another function recorded it within the interval
    except Exception:  # bookkeeping must never fail the request it rides on
        logger.warning("could not record last_used_at of %s", record.key_id, exc_info=True)


async def authenticate(request: Request, ctx: Context) -> Principal:
    """The caller's principal, or a 401 ApiError."""
    key = presented_key(request)
    if not key:
        raise _unauthorized()
    principal = await to_thread.run_sync(resolve_key, ctx, key)
    if principal is None:
        raise _unauthorized()
    # For the request log line (functions.api.request_metrics) and every log line after this one.
    request.state.principal = principal
    observability.logger.thread_safe_append_keys(account_id=principal.account_id)
    return principal


async def authenticate_admin(request: Request, ctx: Context) -> Principal:
    """The caller's principal if its key has the admin role; 401 or 403 otherwise.

    403 here reveals nothing: the endpoint exists for everyone, only the role is missing.
    """
    principal = await authenticate(request, ctx)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this endpoint needs an API key with the admin role")
    return principal


# An endpoint behind `requires_key`: it gets the request's context and the key's principal.
KeyedEndpoint = Callable[[Request, Context, Principal], Awaitable[Response]]


def requires_key(
    ctx_provider: Callable[[], Context], *, admin: bool = False
) -> Callable[[KeyedEndpoint], Endpoint]:
    """Decorator making an endpoint answer only to a valid key (``admin``: an admin key).

    The key is checked before the endpoint sees the request, so a caller without one gets the
    same 401 everywhere and learns nothing from body validation or path lookups. An endpoint
    without this decorator is open to anyone: ``tests/functions/test_auth_matrix.py`` lists the
    few that may be, and fails for any other route a request without a key can reach.
    """
    check = authenticate_admin if admin else authenticate

    def decorate(endpoint: KeyedEndpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def keyed(request: Request) -> Response:
            ctx = ctx_provider()
            principal = await check(request, ctx)
            return await endpoint(request, ctx, principal)

        return keyed

    return decorate
