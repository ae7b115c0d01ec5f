"""/api/account: merge-PATCH of defaults and integrations, masked secrets, the webhook secret."""

from __future__ import annotations

import pytest

from shared.models import Account

BOT = "wss://bot.example.com/media"
HOOK = "https://hooks.example.com/events"
XI_KEY = "xi-0123456789abcdef"
VAPI_KEY = "vapi-fedcba9876543210"


def stored(api_ctx, tenant) -> Account:
    account = api_ctx.repo.get(Account, tenant.account_id, consistent=True)
    assert account is not None
    return account


def test_patch_sets_defaults_and_integrations_and_reads_them_masked(front, tenant, api_ctx) -> None:
    reply = front.request(
        "PATCH",
        "/api/account",
        key=tenant.key,
        body={
            "name": "Renamed Co",
            "webhook_url": HOOK,
            "socket_url": BOT,
            "elevenlabs": {"api_key": XI_KEY, "agent_id": "agent_1"},
            "vapi": {"api_key": VAPI_KEY, "assistant_id": "asst-2"},
        },
    )
    assert reply.status == 200, reply.content
    body = reply.json()
    assert {k: body[k] for k in ("account_id", "name", "webhook_url", "socket_url")} == {
        "account_id": tenant.account_id,
        "name": "Renamed Co",
        "webhook_url": HOOK,
        "socket_url": BOT,
    }
    assert body["elevenlabs"] == {"api_key": "…cdef", "agent_id": "agent_1"}
    assert body["vapi"] == {"api_key": "…3210", "assistant_id": "asst-2"}
    assert "webhook_secret" not in body
    text = reply.content.decode()
    assert XI_KEY not in text and VAPI_KEY not in text
    account = stored(api_ctx, tenant)
    assert (account.elevenlabs.api_key, account.vapi.api_key) == (XI_KEY, VAPI_KEY)
    assert front.request("GET", "/api/account", key=tenant.key).json() == body


def test_nested_fields_merge_and_null_clears(front, tenant, api_ctx) -> None:
    front.request(
        "PATCH",
        "/api/account",
        key=tenant.key,
        body={"webhook_url": HOOK, "elevenlabs": {"api_key": XI_KEY, "agent_id": "agent_1"}},
    )
    only_agent = front.request(
        "PATCH", "/api/account", key=tenant.key, body={"elevenlabs": {"agent_id": "agent_2"}}
    )
    assert only_agent.json()["elevenlabs"] == {"api_key": "…cdef", "agent_id": "agent_2"}
    no_key = front.request(
        "PATCH", "/api/account", key=tenant.key, body={"elevenlabs": {"api_key": None}}
    )
    assert no_key.json()["elevenlabs"] == {"api_key": None, "agent_id": "agent_2"}
    assert stored(api_ctx, tenant).elevenlabs.api_key is None
    cleared = front.request(
        "PATCH", "/api/account", key=tenant.key, body={"elevenlabs": None, "webhook_url": None}
    )
    assert cleared.status == 200
    assert cleared.json()["elevenlabs"] == {"api_key": None, "agent_id": None}
    assert cleared.json()["webhook_url"] is None
    account = stored(api_ctx, tenant)
    assert account.webhook_url is None and account.elevenlabs.agent_id is None
    untouched = front.request("PATCH", "/api/account", key=tenant.key, body={})
    assert untouched.status == 200 and untouched.json()["name"] == tenant.account.name


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": None}, "validation_error", "name"),
        ({"name": ""}, "validation_error", "name"),
        ({"webhook_url": "ftp://hooks.example.com/x"}, "validation_error", "webhook_url"),
        ({"socket_url": "https://bot.example.com"}, "validation_error", "socket_url"),
        ({"socket_url": "vapi&bad id"}, "validation_error", "socket_url"),
        ({"elevenlabs": {"agent_id": "has space"}}, "validation_error", "elevenlabs.agent_id"),
        ({"elevenlabs": {"region": "eu"}}, "validation_error", "elevenlabs.region"),
        ({"limits": {"max_concurrent_calls": 5}}, "validation_error", "limits"),
        ({"webhook_secret": "whsec_mine"}, "validation_error", "webhook_secret"),
        ({"webhook_url": "http://10.0.0.8/hook"}, "unsafe_url", "webhook_url"),
        ({"socket_url": "wss://intranet.example.net/bot"}, "unsafe_url", "socket_url"),
        ({"webhook_url": "https://nowhere.invalid/hook"}, "unsafe_url", "webhook_url"),
    ],
    ids=[
        "null-name",
        "empty-name",
        "ftp-webhook",
        "http-socket",
        "bad-vapi-id",
        "bad-agent-id",
        "unknown-nested",
        "limits-not-patchable",
        "secret-not-patchable",
        "private-webhook",
        "private-socket",
        "unresolvable",
    ],
)
def test_patch_errors_name_the_field(front, tenant, api_ctx, body, code, field) -> None:
    before = stored(api_ctx, tenant)
    reply = front.request("PATCH", "/api/account", key=tenant.key, body=body)
    assert reply.status == 422, reply.content
    assert (reply.error["code"], reply.error["field"]) == (code, field)
    assert stored(api_ctx, tenant) == before


def test_allow_listed_loopback_and_native_drivers_are_accepted(front, tenant) -> None:
    # The suite's environment allow-lists 127.0.0.0/8, like the local stack.
    local = front.request(
        "PATCH", "/api/account", key=tenant.key, body={"socket_url": "ws://127.0.0.1:9000/bot"}
    )
    assert local.status == 200 and local.json()["socket_url"] == "ws://127.0.0.1:9000/bot"
    native = front.request(
        "PATCH", "/api/account", key=tenant.key, body={"socket_url": "vapi&asst-9"}
    )
    assert native.status == 200 and native.json()["socket_url"] == "vapi&asst-9"


def test_webhook_secret_read_and_rotate(front, tenant, api_ctx) -> None:
    original = tenant.account.webhook_secret
    read = front.request("GET", "/api/account/webhook-secret", key=tenant.key)
    assert (read.status, read.json()) == (200, {"webhook_secret": original})
    rotated = front.request("POST", "/api/account/webhook-secret/rotate", key=tenant.key)
    assert rotated.status == 200
    fresh = rotated.json()["webhook_secret"]
    assert fresh.startswith("whsec_") and fresh != original
    assert stored(api_ctx, tenant).webhook_secret == fresh
    assert front.request("GET", "/api/account/webhook-secret", key=tenant.key).json() == {
        "webhook_secret": fresh
    }
    assert fresh not in front.request("GET", "/api/account", key=tenant.key).content.decode()


def test_other_methods_are_405_listing_the_allowed(front, tenant) -> None:
    reply = front.request("DELETE", "/api/account", key=tenant.key)
    assert reply.status == 405
    assert set(reply.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH"}
    assert reply.error["code"] == "method_not_allowed"


def test_sample_events(run_sample, tenant, api_ctx) -> None:
    got = run_sample("account_get.json", tenant.key)
    assert got.status == 200 and got.json()["account_id"] == tenant.account_id
    updated = run_sample("account_update.json", tenant.key)
    assert updated.status == 200, updated.content
    assert updated.json()["socket_url"] == "wss://my-bot-server.com/media"
    assert updated.json()["elevenlabs"] == {"api_key": "…cdef", "agent_id": "tVvN0123456789"}
    secret = run_sample("account_webhook_secret.json", tenant.key)
    assert secret.json() == {"webhook_secret": tenant.account.webhook_secret}
    rotated = run_sample("account_webhook_secret_rotate.json", tenant.key)
    assert rotated.status == 200
    assert rotated.json()["webhook_secret"] == stored(api_ctx, tenant).webhook_secret
