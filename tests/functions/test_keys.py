"""/api/keys: shown once, listed without secrets, revoked for good, last use recorded cheaply."""

from __future__ import annotations

import pytest

from functions.api.auth import resolve_key, touch_last_used
from functions.api.keys import revoke_key
from functions.context import Context
from functions.key_cache import LAST_USED_INTERVAL_SECONDS, KeyCache
from shared.apikeys import hash_api_key
from shared.models import ApiKey, ApiKeyRole
from shared.settings import Settings

LISTED_FIELDS = {"key_id", "prefix", "name", "role", "created_at", "last_used_at"}


def test_create_shows_the_key_once_and_it_works(front, tenant, api_ctx) -> None:
    created = front.request("POST", "/api/keys", key=tenant.key, body={"name": "production"})
    assert created.status == 201, created.content
    body = created.json()
    new_key = body["key"]
    assert set(body) == LISTED_FIELDS | {"key"}
    assert new_key.startswith("sk_live_") and len(new_key) >= 51
    assert body["prefix"] == new_key[:12] + "…"
    assert body["key_id"] == "key_" + hash_api_key(new_key)[:16]
    assert (body["name"], body["role"], body["last_used_at"]) == ("production", "account", None)
    record = api_ctx.repo.get(ApiKey, hash_api_key(new_key))
    assert record is not None and record.account_id == tenant.account_id

    account = front.request("GET", "/api/account", key=new_key)
    assert account.status == 200 and account.json()["account_id"] == tenant.account_id

    listed = front.request("GET", "/api/keys", key=tenant.key)
    assert listed.status == 200
    items = listed.json()["items"]
    assert [item["key_id"] for item in items] == [body["key_id"], tenant.key_id]  # newest first
    assert all(set(item) == LISTED_FIELDS for item in items)
    assert new_key not in listed.content.decode()
    assert hash_api_key(new_key) not in listed.content.decode()
    assert hash_api_key(tenant.key) not in listed.content.decode()


def test_revoked_key_stops_working_and_leaves_the_listing(front, tenant, new_key) -> None:
    spare = new_key(tenant)
    assert front.request("GET", "/api/account", key=spare.key).status == 200
    revoked = front.request("DELETE", f"/api/keys/{spare.key_id}", key=tenant.key)
    assert (revoked.status, revoked.content) == (204, b"")
    after = front.request("GET", "/api/account", key=spare.key)
    assert after.status == 401 and after.error["code"] == "unauthorized"
    listed = front.request("GET", "/api/keys", key=tenant.key).json()["items"]
    assert [item["key_id"] for item in listed] == [tenant.key_id]
    again = front.request("DELETE", f"/api/keys/{spare.key_id}", key=tenant.key)
    assert again.status == 404
    assert again.error["message"] == f"API key {spare.key_id} not found"


def test_a_key_cannot_revoke_itself(front, tenant) -> None:
    reply = front.request("DELETE", f"/api/keys/{tenant.key_id}", key=tenant.key)
    assert reply.status == 409
    assert reply.error["code"] == "conflict"
    assert "cannot revoke itself" in reply.error["message"]
    assert front.request("GET", "/api/account", key=tenant.key).status == 200


def test_another_accounts_key_is_404(front, tenant, other_tenant) -> None:
    reply = front.request("DELETE", f"/api/keys/{other_tenant.key_id}", key=tenant.key)
    assert reply.status == 404
    assert front.request("GET", "/api/account", key=other_tenant.key).status == 200


def test_only_admin_keys_make_or_revoke_admin_keys(front, tenant, new_key) -> None:
    refused = front.request(
        "POST", "/api/keys", key=tenant.key, body={"name": "root", "role": "admin"}
    )
    assert refused.status == 403
    assert refused.error == {
        "code": "forbidden",
        "message": "only an admin key can create admin keys",
        "field": "role",
    }
    admin = new_key(tenant, ApiKeyRole.ADMIN)
    made = front.request("POST", "/api/keys", key=admin.key, body={"name": "ops", "role": "admin"})
    assert made.status == 201 and made.json()["role"] == "admin"
    made_id = made.json()["key_id"]
    lesser = front.request("DELETE", f"/api/keys/{made_id}", key=tenant.key)
    assert lesser.status == 403 and lesser.error["code"] == "forbidden"
    assert front.request("DELETE", f"/api/keys/{made_id}", key=admin.key).status == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "x", "scope": "all"}, "scope"),
    ],
    ids=["missing", "empty", "bad-role", "unknown"],
)
def test_create_validation_names_the_field(front, tenant, body, field) -> None:
    reply = front.request("POST", "/api/keys", key=tenant.key, body=body)
    assert reply.status == 422 and reply.error["field"] == field


def test_last_used_is_recorded_at_most_once_a_minute(front, new_tenant, api_ctx) -> None:
    owner = new_tenant()
    record = api_ctx.repo.get(ApiKey, hash_api_key(owner.key), consistent=True)
    assert record is not None and record.last_used_at is None
    front.request("GET", "/api/account", key=owner.key)
    first = api_ctx.repo.get(ApiKey, hash_api_key(owner.key), consistent=True)
    assert first is not None and first.last_used_at is not None
    front.request("GET", "/api/account", key=owner.key)
    second = api_ctx.repo.get(ApiKey, hash_api_key(owner.key), consistent=True)
    assert second is not None and second.last_used_at == first.last_used_at
    listed = front.request("GET", "/api/keys", key=owner.key).json()["items"]
    assert listed[0]["last_used_at"] is not None


def test_the_table_lets_one_function_per_interval_record_last_use(tenant, api_ctx) -> None:
    """Warm functions throttle themselves; the conditional write throttles them together."""
    key_hash = hash_api_key(tenant.key)
    record = api_ctx.repo.get(ApiKey, key_hash, consistent=True)
    assert record is not None
    touch_last_used(api_ctx, record)
    first = api_ctx.repo.get(ApiKey, key_hash, consistent=True)
    touch_last_used(api_ctx, record)  # another function, same minute
    second = api_ctx.repo.get(ApiKey, key_hash, consistent=True)
    assert first is not None and second is not None
    assert first.last_used_at is not None and second.last_used_at == first.last_used_at
    api_ctx.repo.update(
        ApiKey, (key_hash,), {"last_used_at": None, "revoked_at": "2026-01-01T00:00:00Z"}
    )
    touch_last_used(api_ctx, record)
    revoked = api_ctx.repo.get(ApiKey, key_hash, consistent=True)
    assert revoked is not None and revoked.last_used_at is None


def test_touch_throttle_uses_its_clock() -> None:
    now = [1000.0]
    cache = KeyCache(5.0, clock=lambda: now[0])
    assert cache.touch_due("h") is True
    now[0] += LAST_USED_INTERVAL_SECONDS - 0.001
    assert cache.touch_due("h") is False
    assert cache.touch_due("other") is True
    now[0] += 0.001
    assert cache.touch_due("h") is True


def warm_function(clock: list[float], cache_seconds: float = 5.0) -> Context:
    """Another warm Lambda: its own context and key cache, on a fake clock."""
    ctx = Context(Settings.load(api_key_cache_seconds=cache_seconds))
    ctx.__dict__["key_cache"] = KeyCache(cache_seconds, clock=lambda: clock[0])
    return ctx


def test_revocation_reaches_other_warm_functions_within_the_cache_ttl(
    front, tenant, new_key
) -> None:
    spare = new_key(tenant)
    clock = [100.0]
    elsewhere = warm_function(clock)
    assert resolve_key(elsewhere, spare.key) is not None  # now cached there
    assert front.request("DELETE", f"/api/keys/{spare.key_id}", key=tenant.key).status == 204
    clock[0] += 4.9
    assert resolve_key(elsewhere, spare.key) is not None  # the documented delay, at most 5 s
    clock[0] += 0.1
    assert resolve_key(elsewhere, spare.key) is None


def test_the_revoking_function_forgets_the_key_at_once(tenant, new_key) -> None:
    spare = new_key(tenant)
    clock = [100.0]
    here = warm_function(clock)
    assert resolve_key(here, spare.key) is not None
    caller = resolve_key(here, tenant.key)
    assert caller is not None
    revoke_key(here, caller, spare.key_id)
    assert resolve_key(here, spare.key) is None  # no clock movement needed


def test_sample_events(run_sample, tenant) -> None:
    created = run_sample("keys_create.json", tenant.key)
    assert created.status == 201 and created.json()["name"] == "production"
    listed = run_sample("keys_list.json", tenant.key)
    assert listed.status == 200
    assert [k["key_id"] for k in listed.json()["items"]] == [
        created.json()["key_id"],
        tenant.key_id,
    ]
    deleted = run_sample(
        "keys_delete.json", tenant.key, path=f"/api/keys/{created.json()['key_id']}"
    )
    assert (deleted.status, deleted.content) == (204, b"")
    unknown = run_sample("keys_delete.json", tenant.key)  # the sample's id is nobody's
    assert unknown.status == 404
