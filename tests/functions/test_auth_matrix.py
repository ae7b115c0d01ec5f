"""Every authenticated operation refuses a missing, unknown or revoked key with the same 401.

The list comes from the OpenAPI operations, so a new endpoint is covered the day it is declared.
Bodies are deliberately invalid: authentication must answer before validation does, or a
caller without a key could probe field rules. Admin-only operations answer 403 to other keys.
"""

from __future__ import annotations

import re
import uuid

import pytest
from starlette.routing import Route

from functions.api.app import create_app
from functions.api.openapi import all_operations
from shared.apikeys import hash_api_key
from shared.clock import iso_z, utc_now
from shared.models import ApiKey

PLACEHOLDERS = {
    "call_uuid": str(uuid.UUID(int=1)),
    "agent_uuid": str(uuid.UUID(int=2)),
    "number": "+15550000000",
}
AUTHED = [op for op in all_operations() if op.auth]
UNKNOWN_KEY = "sk_live_" + "Q" * 43


def concrete(path: str) -> str:
    return re.sub(r"\{([^}:]+)[^}]*\}", lambda m: PLACEHOLDERS.get(m.group(1), "x_1"), path)


def op_id(op) -> str:
    return f"{op.method} {op.path}"


def call(front, op, key: str | None):
    body = {"not_a_field": True} if op.request is not None else None
    return front.request(op.method, concrete(op.path), key=key, body=body)


@pytest.fixture
def revoked_key(tenant, api_ctx) -> str:
    api_ctx.repo.update(
        ApiKey, (hash_api_key(tenant.key),), {"revoked_at": iso_z(utc_now(), millis=True)}
    )
    return str(tenant.key)


@pytest.mark.parametrize("op", AUTHED, ids=op_id)
def test_missing_unknown_malformed_and_revoked_keys_are_401(front, revoked_key, op) -> None:
    for key in (None, UNKNOWN_KEY, "not-even-a-key", revoked_key):
        reply = call(front, op, key)
        assert reply.status == 401, (key, reply.content)
        assert reply.error["code"] == "unauthorized"
        assert reply.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("op", [op for op in AUTHED if op.admin_only], ids=op_id)
def test_admin_operations_are_403_for_account_keys(front, tenant, op) -> None:
    reply = call(front, op, tenant.key)
    assert reply.status == 403 and reply.error["code"] == "forbidden"


def test_bearer_token_works_like_x_api_key(front, tenant) -> None:
    reply = front.request("GET", "/api/numbers", headers={"Authorization": f"Bearer {tenant.key}"})
    assert reply.status == 200 and reply.json() == {"items": [], "next_cursor": None}


def test_admin_keys_manage_their_own_accounts_resources(front, admin_tenant) -> None:
    number = "+1555" + str(uuid.uuid4().int)[:7]
    created = front.request(
        "POST",
        "/api/numbers",
        key=admin_tenant.key,
        body={"number": number, "route": {"socket_url": "vapi"}},
    )
    assert created.status == 201
    for path in ("/api/numbers", "/api/extensions", "/api/trunks", "/api/agents", "/api/keys"):
        assert front.request("GET", path, key=admin_tenant.key).status == 200, path
    assert front.request("DELETE", f"/api/numbers/{number}", key=admin_tenant.key).status == 204


# --------------------------------------------------------------------------- every served route

# The only routes a caller without a key may reach. A new public route must be added here on
# purpose; anything else the app serves has to answer the 401 below.
PUBLIC_ROUTES = {
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
}
# The 401 as clients have always received it, byte for byte.
UNAUTHORIZED_BODY = (
    b'{"error":{"code":"unauthorized","message":"missing or invalid API key: send X-API-KEY: '
    b'sk_live_... (or Authorization: Bearer sk_live_...)"}}'
)


def served_routes() -> list[tuple[str, str]]:
    """Every (method, path template) the app answers, read from the app rather than the docs."""
    served = []
    for app_route in create_app().routes:
        assert isinstance(app_route, Route)
        for method in sorted(app_route.methods or ()):
            served.append((method, app_route.path))
    return served


SERVED = served_routes()


def test_the_public_routes_are_still_served() -> None:
    assert set(SERVED) >= PUBLIC_ROUTES


@pytest.mark.parametrize("method,path", SERVED, ids=[f"{m} {p}" for m, p in SERVED])
def test_every_served_route_needs_a_key_unless_public(front, method, path) -> None:
    public = ((method if method != "HEAD" else "GET"), path) in PUBLIC_ROUTES
    for key in (None, UNKNOWN_KEY):
        body = {"not_a_field": True} if method in {"POST", "PATCH", "PUT"} else None
        reply = front.request(method, concrete(path), key=key, body=body)
        if public:
            assert reply.status == 200, (method, path, key, reply.content)
            continue
        assert reply.status == 401, (method, path, key, reply.content)
        assert reply.headers["www-authenticate"] == 'Bearer realm="agera"'
        assert reply.headers["content-type"] == "application/json"
        if method != "HEAD":
            assert reply.content == UNAUTHORIZED_BODY
            assert reply.headers["content-length"] == str(len(UNAUTHORIZED_BODY))
