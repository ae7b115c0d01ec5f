"""Every authenticated operation refuses a missing, unknown or revoked key with the same 401.

The list comes from the OpenAPI operations, so a new endpoint is covered the day it is declared.
Bodies are deliberately invalid: authentication must answer before validation does, or a
caller without a key could probe field rules. Admin-only operations answer 403 to other keys.
"""

from __future__ import annotations

import re
import uuid

import pytest

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
