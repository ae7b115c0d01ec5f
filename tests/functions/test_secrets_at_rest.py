"""Every API path that writes a secret stores it sealed; reads still mask it; workers open it.

The table is read with the plain boto3 client (what moto stored), never through our repository.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from shared.dynamo import mapping
from shared.models import Account, Extension, TelephonyConfig, Trunk
from shared.secret_box import PREFIX


def raw(api_ctx, model: type, *ids: Any) -> dict[str, Any]:
    item = api_ctx.dynamodb.get_item(
        TableName=api_ctx.settings.table_name, Key=mapping.key(model, *ids), ConsistentRead=True
    )["Item"]
    return dict(item)


def assert_sealed(item: dict[str, Any], *plaintexts: str) -> None:
    text = json.dumps(item)
    for plaintext in plaintexts:
        assert plaintext not in text
    assert PREFIX in text


def test_a_new_account_is_stored_with_its_webhook_secret_sealed(tenant, api_ctx) -> None:
    """The accounts every API and worker test uses: workers sign with what they open."""
    item = raw(api_ctx, Account, tenant.account_id)
    assert item["webhook_secret"]["S"].startswith(PREFIX)
    assert_sealed(item, tenant.account.webhook_secret)


def test_account_integrations_and_rotation_are_sealed_and_still_masked(
    front, tenant, api_ctx
) -> None:
    xi, vapi = "xi-" + uuid.uuid4().hex, "vapi-" + uuid.uuid4().hex
    reply = front.request(
        "PATCH",
        "/api/account",
        key=tenant.key,
        body={"elevenlabs": {"api_key": xi}, "vapi": {"api_key": vapi, "assistant_id": "a1"}},
    )
    assert reply.status == 200, reply.content
    assert (reply.json()["elevenlabs"]["api_key"], reply.json()["vapi"]["api_key"]) == (
        "…" + xi[-4:],
        "…" + vapi[-4:],
    )
    item = raw(api_ctx, Account, tenant.account_id)
    assert_sealed(item, xi, vapi, tenant.account.webhook_secret)
    # A PATCH of one integration keeps the other's sealed key (merged from the opened value).
    again = front.request(
        "PATCH", "/api/account", key=tenant.key, body={"vapi": {"assistant_id": "a2"}}
    )
    assert again.json()["vapi"] == {"api_key": "…" + vapi[-4:], "assistant_id": "a2"}
    assert_sealed(raw(api_ctx, Account, tenant.account_id), vapi)

    rotated = front.request("POST", "/api/account/webhook-secret/rotate", key=tenant.key)
    fresh = rotated.json()["webhook_secret"]
    assert_sealed(raw(api_ctx, Account, tenant.account_id), fresh)
    shown = front.request("GET", "/api/account/webhook-secret", key=tenant.key)
    assert shown.json() == {"webhook_secret": fresh}


def test_trunk_passwords_are_sealed_on_create_and_patch(front, tenant, api_ctx) -> None:
    first, second = "pw-" + uuid.uuid4().hex, "pw-" + uuid.uuid4().hex
    reply = front.request(
        "POST",
        "/api/trunks",
        key=tenant.key,
        body={"name": "c", "host": "sip.carrier.example", "username": "u", "password": first},
    )
    assert reply.status == 201, reply.content
    trunk_id = reply.json()["trunk_id"]
    assert reply.json()["password"] == "…" + first[-4:]
    assert_sealed(raw(api_ctx, Trunk, tenant.account_id, trunk_id), first)
    patched = front.request(
        "PATCH", f"/api/trunks/{trunk_id}", key=tenant.key, body={"password": second}
    )
    assert patched.json()["password"] == "…" + second[-4:]
    assert_sealed(raw(api_ctx, Trunk, tenant.account_id, trunk_id), first, second)
    stored = api_ctx.repo.get(Trunk, tenant.account_id, trunk_id, consistent=True)
    assert stored is not None and stored.password == second


def test_telephony_tokens_are_sealed(front, tenant, api_ctx) -> None:
    token = uuid.uuid4().hex
    reply = front.request(
        "POST",
        "/api/telephony-configs",
        key=tenant.key,
        body={"provider": "twilio", "account_sid": "AC" + uuid.uuid4().hex, "auth_token": token},
    )
    assert reply.status == 201, reply.content
    assert reply.json()["auth_token"] == "…" + token[-4:]
    config_id = reply.json()["config_id"]
    assert_sealed(raw(api_ctx, TelephonyConfig, tenant.account_id, config_id), token)


def test_extension_digests_are_sealed_on_create_and_on_rename(front, tenant, api_ctx) -> None:
    body = {
        "extension": "201",
        "sip_username": f"u{uuid.uuid4().hex[:10]}",
        "password": "first-password-1",
    }
    assert front.request("POST", "/api/extensions", key=tenant.key, body=body).status == 201
    stored = api_ctx.repo.get(Extension, tenant.account_id, "201", consistent=True)
    assert stored is not None
    assert_sealed(raw(api_ctx, Extension, tenant.account_id, "201"), stored.ha1_md5)
    renamed = front.request(
        "PATCH",
        "/api/extensions/201",
        key=tenant.key,
        body={"sip_username": f"u{uuid.uuid4().hex[:10]}", "password": "second-password-2"},
    )
    assert renamed.status == 200, renamed.content  # the transaction path (index moves too)
    moved = api_ctx.repo.get(Extension, tenant.account_id, "201", consistent=True)
    assert moved is not None and moved.ha1_md5 != stored.ha1_md5
    item = raw(api_ctx, Extension, tenant.account_id, "201")
    assert_sealed(item, moved.ha1_md5, moved.ha1_sha256)
    assert "ha1" not in renamed.content.decode()
