"""/api/telephony-configs: per-provider fields, masked tokens, in-use configs kept."""

from __future__ import annotations

from typing import Any

import pytest

from shared.models import Agent, TelephonyConfig

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-token-0123"


def create(front, tenant, **body: Any) -> Any:
    return front.request("POST", "/api/telephony-configs", key=tenant.key, body=body)


def test_crud_round_trip_with_masked_tokens(front, tenant, api_ctx) -> None:
    reply = create(front, tenant, provider="twilio", account_sid=SID, auth_token=TOKEN)
    assert reply.status == 201, reply.content
    body = reply.json()
    config_id = body["config_id"]
    assert {k: v for k, v in body.items() if not k.endswith("_at")} == {
        "config_id": config_id,
        "provider": "twilio",
        "domain": None,
        "bearer_token": None,
        "account_sid": SID,
        "auth_token": "…0123",
    }
    assert TOKEN not in reply.content.decode()
    stored = api_ctx.repo.get(TelephonyConfig, tenant.account_id, config_id, consistent=True)
    assert stored is not None and stored.auth_token == TOKEN
    path = f"/api/telephony-configs/{config_id}"
    assert front.request("GET", path, key=tenant.key).json() == body
    assert front.request("GET", "/api/telephony-configs", key=tenant.key).json()["items"] == [body]
    rotated = front.request(
        "PATCH", path, key=tenant.key, body={"auth_token": "rotated-token-4567"}
    )
    assert rotated.status == 200 and rotated.json()["auth_token"] == "…4567"
    assert front.request("DELETE", path, key=tenant.key).status == 204
    assert front.request("GET", path, key=tenant.key).status == 404


def test_cloudonix_config(front, tenant) -> None:
    reply = create(
        front, tenant, provider="cloudonix", domain="acme.cloudonix.net", bearer_token="XI" * 10
    )
    assert reply.status == 201, reply.content
    assert (reply.json()["domain"], reply.json()["bearer_token"]) == ("acme.cloudonix.net", "…XIXI")


def test_cloudonix_domain_is_stored_normalised(front, tenant, api_ctx) -> None:
    """The edge looks a config up by the normalised domain, so the API stores that spelling."""
    reply = create(front, tenant, provider="cloudonix", domain="Acme", bearer_token="XI" * 10)
    assert reply.status == 201, reply.content
    config_id = reply.json()["config_id"]
    assert reply.json()["domain"] == "acme.cloudonix.net"
    stored = api_ctx.repo.get(TelephonyConfig, tenant.account_id, config_id, consistent=True)
    assert stored is not None and stored.domain == "acme.cloudonix.net"
    path = f"/api/telephony-configs/{config_id}"
    assert front.request("GET", path, key=tenant.key).json()["domain"] == "acme.cloudonix.net"
    patched = front.request("PATCH", path, key=tenant.key, body={"domain": "Sub.Example.COM."})
    assert patched.status == 200, patched.content
    assert patched.json()["domain"] == "sub.example.com"
    stored = api_ctx.repo.get(TelephonyConfig, tenant.account_id, config_id, consistent=True)
    assert stored is not None and stored.domain == "sub.example.com"
    empty = front.request("PATCH", path, key=tenant.key, body={"domain": "..."})
    assert empty.status == 422 and empty.error["field"] == "domain"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "twilio", "auth_token": TOKEN}, "account_sid"),
        ({"provider": "twilio", "account_sid": SID}, "auth_token"),
        ({"provider": "twilio", "account_sid": "AC123", "auth_token": TOKEN}, "account_sid"),
        (
            {"provider": "twilio", "account_sid": SID, "auth_token": TOKEN, "domain": "x.net"},
            "domain",
        ),
        ({"provider": "cloudonix", "domain": "acme.cloudonix.net"}, "bearer_token"),
        ({"provider": "plivo"}, "provider"),
        ({"account_sid": SID, "auth_token": TOKEN}, "provider"),
        ({"provider": "twilio", "account_sid": SID, "auth_token": TOKEN, "x": 1}, "x"),
    ],
    ids=[
        "no-sid",
        "no-token",
        "bad-sid",
        "foreign-field",
        "no-bearer",
        "unknown-provider",
        "no-provider",
        "unknown-field",
    ],
)
def test_errors_name_the_field(front, tenant, body, field) -> None:
    reply = create(front, tenant, **body)
    assert reply.status == 422, reply.content
    assert reply.error["field"] == field


def test_patch_keeps_the_provider_rules(front, tenant) -> None:
    config_id = create(front, tenant, provider="twilio", account_sid=SID, auth_token=TOKEN).json()[
        "config_id"
    ]
    path = f"/api/telephony-configs/{config_id}"
    for body, field in (
        ({"auth_token": None}, "auth_token"),
        ({"domain": "x.cloudonix.net"}, "domain"),
        ({"provider": "cloudonix"}, "provider"),
    ):
        reply = front.request("PATCH", path, key=tenant.key, body=body)
        assert reply.status == 422 and reply.error["field"] == field, body


def test_in_use_config_is_kept_and_other_accounts_see_404(
    front, tenant, other_tenant, api_ctx
) -> None:
    config_id = create(front, tenant, provider="twilio", account_sid=SID, auth_token=TOKEN).json()[
        "config_id"
    ]
    path = f"/api/telephony-configs/{config_id}"
    for method, body in (("GET", None), ("PATCH", {"auth_token": "x" * 12}), ("DELETE", None)):
        assert front.request(method, path, key=other_tenant.key, body=body).status == 404
    agent = Agent(
        account_id=tenant.account_id,
        name="uses it",
        socket_url="wss://bot.example.com/media",
        telephony_config_id=config_id,
    )
    api_ctx.repo.put(agent)
    busy = front.request("DELETE", path, key=tenant.key)
    assert busy.status == 409
    assert str(agent.agent_uuid) in busy.error["message"]
    api_ctx.repo.delete(Agent, agent.agent_uuid)
    assert front.request("DELETE", path, key=tenant.key).status == 204


def test_sample_events_round_trip(run_sample, tenant) -> None:
    created = run_sample("telephony_configs_create.json", tenant.key)
    assert created.status == 201, created.content
    path = f"/api/telephony-configs/{created.json()['config_id']}"
    listed = run_sample("telephony_configs_list.json", tenant.key)
    assert listed.json()["items"] == [created.json()]
    assert run_sample("telephony_configs_get.json", tenant.key, path=path).json() == created.json()
    assert run_sample("telephony_configs_get.json", tenant.key).status == 404
    updated = run_sample("telephony_configs_update.json", tenant.key, path=path)
    assert updated.status == 200 and updated.json()["auth_token"] == "…4567"
    assert run_sample("telephony_configs_delete.json", tenant.key, path=path).status == 204
