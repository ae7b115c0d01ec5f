"""The key printed by the local stack works; the auth matrix for what exists so far."""

from __future__ import annotations

import httpx
import pytest

from functions.api.app import create_app
from functions.context import Context
from functions.key_cache import KeyCache
from shared.clock import utc_now
from shared.models import ApiKey
from shared.provisioning import create_account_with_key, new_account
from shared.settings import Settings


@pytest.fixture
def ctx(aws) -> Context:
    return Context(Settings.load(api_key_cache_seconds=0))


@pytest.fixture
def issued(ctx):
    account = new_account("Auth Co")
    account.elevenlabs.api_key = "xi-0123456789abcdef"
    return account, create_account_with_key(ctx.repo, account, "default")


async def get(ctx: Context, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(lambda: ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get("/api/account", headers=headers)


@pytest.mark.anyio
@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
async def test_key_resolves_to_its_account_with_secrets_masked(ctx, issued, style) -> None:
    account, key = issued
    headers = (
        {"X-API-KEY": key.key} if style == "x-api-key" else {"Authorization": f"Bearer {key.key}"}
    )
    response = await get(ctx, headers)
    assert response.status_code == 200
    body = response.json()
    assert body["account_id"] == account.account_id
    assert body["elevenlabs"]["api_key"] == "…cdef"
    assert "webhook_secret" not in body
    assert account.webhook_secret not in response.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-KEY": "sk_live_short"},
        {"X-API-KEY": "sk_live_" + "Z" * 43},  # well-formed, unknown
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "malformed", "unknown", "basic"],
)
async def test_bad_keys_are_401_in_the_error_shape(ctx, headers) -> None:
    response = await get(ctx, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.anyio
async def test_revoked_key_stops_working(ctx, issued) -> None:
    _, key = issued
    assert (await get(ctx, {"X-API-KEY": key.key})).status_code == 200
    ctx.repo.update(ApiKey, (key.record.key_hash,), {"revoked_at": utc_now().isoformat()})
    assert (await get(ctx, {"X-API-KEY": key.key})).status_code == 401


def test_cache_expires_after_its_ttl() -> None:
    now = [100.0]
    cache = KeyCache(5.0, clock=lambda: now[0])
    cache.put("h", None)
    assert cache.get("h") == (True, None)
    now[0] += 5.0
    assert cache.get("h") == (False, None)
