"""/api/extensions: digest HA1 instead of passwords, gateway-wide SIP usernames, scoping."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from edge_media.sip.digest import compute_ha1
from shared.clock import utc_now
from shared.dynamo import mapping
from shared.models import Extension, Registration

PASSWORD = "correct-horse-battery"
BOT = "wss://bot.example.com/media"


def username() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


def index_item(api_ctx, name: str) -> dict[str, Any] | None:
    item = api_ctx.dynamodb.get_item(
        TableName=api_ctx.settings.table_name, Key=mapping.sip_user_key(name), ConsistentRead=True
    ).get("Item")
    return dict(item) if item else None


def stored(api_ctx, tenant, extension: str) -> Extension | None:
    return api_ctx.repo.get(Extension, tenant.account_id, extension, consistent=True)


def create(front, tenant, extension: str = "101", **fields: Any) -> Any:
    body = {"extension": extension, "sip_username": username(), "password": PASSWORD, **fields}
    return front.request("POST", "/api/extensions", key=tenant.key, body=body)


def test_create_stores_only_digest_ha1_the_edge_accepts(front, tenant, api_ctx) -> None:
    user = username()
    reply = front.request(
        "POST",
        "/api/extensions",
        key=tenant.key,
        body={
            "extension": "101",
            "sip_username": user,
            "password": PASSWORD,
            "route": {"socket_url": BOT},
            "description": "Front desk",
        },
    )
    assert reply.status == 201, reply.content
    body = reply.json()
    assert {k: v for k, v in body.items() if not k.endswith("_at")} == {
        "extension": "101",
        "sip_username": user,
        "realm": "agera",
        "route": {"socket_url": BOT, "webhook_url": None, "agent_uuid": None},
        "description": "Front desk",
    }
    assert PASSWORD not in reply.content.decode()
    extension = stored(api_ctx, tenant, "101")
    assert extension is not None
    assert extension.ha1_md5 == compute_ha1(user, "agera", PASSWORD, "MD5")
    assert extension.ha1_sha256 == compute_ha1(user, "agera", PASSWORD, "SHA-256")
    assert extension.ha1_md5 not in reply.content.decode()
    index = index_item(api_ctx, user)
    assert index is not None
    assert (index["account_id"]["S"], index["extension"]["S"]) == (tenant.account_id, "101")

    got = front.request("GET", "/api/extensions/101", key=tenant.key)
    assert (got.status, got.json()) == (200, body)
    listed = front.request("GET", "/api/extensions", key=tenant.key).json()
    assert listed == {"items": [body], "next_cursor": None}


def test_password_change_recomputes_ha1_and_rename_moves_the_index(front, tenant, api_ctx) -> None:
    old_user = username()
    create(front, tenant, sip_username=old_user)
    changed = front.request(
        "PATCH", "/api/extensions/101", key=tenant.key, body={"password": "a-brand-new-secret"}
    )
    assert changed.status == 200
    extension = stored(api_ctx, tenant, "101")
    assert extension is not None
    assert extension.ha1_md5 == compute_ha1(old_user, "agera", "a-brand-new-secret")

    new_user = username()
    no_password = front.request(
        "PATCH", "/api/extensions/101", key=tenant.key, body={"sip_username": new_user}
    )
    assert no_password.status == 422
    assert no_password.error["field"] == "password"
    renamed = front.request(
        "PATCH",
        "/api/extensions/101",
        key=tenant.key,
        body={"sip_username": new_user, "password": "third-secret-here"},
    )
    assert renamed.status == 200, renamed.content
    assert renamed.json()["sip_username"] == new_user
    extension = stored(api_ctx, tenant, "101")
    assert extension is not None and extension.sip_username == new_user
    assert extension.ha1_sha256 == compute_ha1(new_user, "agera", "third-secret-here", "SHA-256")
    assert index_item(api_ctx, old_user) is None
    assert index_item(api_ctx, new_user) is not None


def test_sip_usernames_are_unique_across_the_gateway(front, tenant, other_tenant, api_ctx) -> None:
    user = username()
    assert create(front, tenant, sip_username=user).status == 201
    taken = create(front, other_tenant, sip_username=user)
    assert taken.status == 409
    assert taken.error["field"] == "sip_username"
    assert stored(api_ctx, other_tenant, "101") is None  # the transaction wrote nothing
    # The same extension name in another account is fine: names are per account.
    assert create(front, other_tenant).status == 201
    duplicate = create(front, tenant)
    assert duplicate.status == 409 and duplicate.error["field"] == "extension"
    # Renaming onto a taken username fails and leaves everything as it was.
    mine = stored(api_ctx, tenant, "101")
    theirs = stored(api_ctx, other_tenant, "101")
    assert mine is not None and theirs is not None
    clash = front.request(
        "PATCH",
        "/api/extensions/101",
        key=other_tenant.key,
        body={"sip_username": user, "password": PASSWORD},
    )
    assert clash.status == 409 and clash.error["field"] == "sip_username"
    assert stored(api_ctx, other_tenant, "101") == theirs
    assert index_item(api_ctx, theirs.sip_username) is not None


def test_another_accounts_extension_is_404(front, tenant, other_tenant, api_ctx) -> None:
    create(front, tenant)
    for method, body in (("GET", None), ("PATCH", {"description": "x"}), ("DELETE", None)):
        reply = front.request(method, "/api/extensions/101", key=other_tenant.key, body=body)
        assert reply.status == 404, method
    extension = stored(api_ctx, tenant, "101")
    assert extension is not None and extension.description is None


def test_delete_drops_the_index_and_registrations(front, tenant, api_ctx) -> None:
    user = username()
    create(front, tenant, sip_username=user)
    registration = Registration(
        account_id=tenant.account_id,
        extension="101",
        contact="sip:101@198.51.100.9:5060",
        source="198.51.100.9:5060",
        node_id="node-t",
        expires_at=utc_now() + timedelta(seconds=300),
    )
    api_ctx.repo.put(registration)
    deleted = front.request("DELETE", "/api/extensions/101", key=tenant.key)
    assert (deleted.status, deleted.content) == (204, b"")
    assert stored(api_ctx, tenant, "101") is None
    assert index_item(api_ctx, user) is None
    assert (
        api_ctx.repo.get(
            Registration, tenant.account_id, "101", registration.contact, consistent=True
        )
        is None
    )
    assert front.request("GET", "/api/extensions/101", key=tenant.key).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"extension": "1 01", "sip_username": "ok", "password": PASSWORD}, "extension"),
        ({"extension": "101", "sip_username": "bad name", "password": PASSWORD}, "sip_username"),
        ({"extension": "101", "sip_username": "ok", "password": "short"}, "password"),
        ({"extension": "101", "sip_username": "ok"}, "password"),
        (
            {"extension": "101", "sip_username": "ok", "password": PASSWORD, "ha1_md5": "0" * 32},
            "ha1_md5",
        ),
        (
            {
                "extension": "101",
                "sip_username": "ok",
                "password": PASSWORD,
                "route": {"webhook_url": "http://192.168.1.1/x"},
            },
            "route.webhook_url",
        ),
    ],
    ids=["bad-extension", "bad-username", "short-password", "no-password", "ha1", "ssrf"],
)
def test_create_errors_name_the_field(front, tenant, body, field) -> None:
    reply = front.request("POST", "/api/extensions", key=tenant.key, body=body)
    assert reply.status == 422, reply.content
    assert reply.error["field"] == field


def test_patch_refuses_null_credentials_and_clears_the_route(front, tenant, api_ctx) -> None:
    create(front, tenant, route={"socket_url": BOT})
    for field in ("password", "sip_username"):
        reply = front.request("PATCH", "/api/extensions/101", key=tenant.key, body={field: None})
        assert reply.status == 422 and reply.error["field"] == field
    cleared = front.request("PATCH", "/api/extensions/101", key=tenant.key, body={"route": None})
    assert cleared.status == 200 and cleared.json()["route"] is None
    extension = stored(api_ctx, tenant, "101")
    assert extension is not None and extension.route is None


def test_sample_events_round_trip(run_sample, tenant, api_ctx) -> None:
    created = run_sample("extensions_create.json", tenant.key)
    try:
        assert created.status == 201, created.content
        assert created.json()["route"]["socket_url"] == "elevenlabs&tVvN0123456789"
        listed = run_sample("extensions_list.json", tenant.key)
        assert [e["extension"] for e in listed.json()["items"]] == ["101"]
        assert run_sample("extensions_get.json", tenant.key).json() == created.json()
        updated = run_sample("extensions_update.json", tenant.key)
        assert updated.status == 200
        assert updated.json()["description"] == "Front desk"
        deleted = run_sample("extensions_delete.json", tenant.key)
        assert deleted.status == 204
    finally:
        api_ctx.dynamodb.delete_item(
            TableName=api_ctx.settings.table_name, Key=mapping.sip_user_key("acme-101")
        )
