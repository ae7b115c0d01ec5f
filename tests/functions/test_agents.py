"""/api/agents: stable UUIDs, telephony configs of the same account, scoping, SSRF."""

from __future__ import annotations

import uuid

import pytest

from shared.models import Agent, TelephonyConfig, TelephonyProvider

BOT = "wss://bot.example.com/media"


def test_crud_round_trip_keeps_the_uuid(front, tenant, api_ctx) -> None:
    created = front.request(
        "POST", "/api/agents", key=tenant.key, body={"name": "Support", "socket_url": BOT}
    )
    assert created.status == 201, created.content
    body = created.json()
    agent_uuid = body["agent_uuid"]
    assert str(uuid.UUID(agent_uuid)) == agent_uuid
    assert {k: v for k, v in body.items() if not k.endswith("_at")} == {
        "agent_uuid": agent_uuid,
        "name": "Support",
        "socket_url": BOT,
        "telephony_config_id": None,
        "require_token": False,
        "stream_path": f"/api/v1/agent-stream/{agent_uuid}",
    }
    stored = api_ctx.repo.get(Agent, agent_uuid)
    assert stored is not None and stored.account_id == tenant.account_id
    assert front.request("GET", f"/api/agents/{agent_uuid}", key=tenant.key).json() == body
    assert front.request("GET", "/api/agents", key=tenant.key).json() == {
        "items": [body],
        "next_cursor": None,
    }
    patched = front.request(
        "PATCH",
        f"/api/agents/{agent_uuid}",
        key=tenant.key,
        body={"name": "Support v2", "socket_url": "elevenlabs&agent_7"},
    )
    assert patched.status == 200
    assert patched.json()["agent_uuid"] == agent_uuid
    assert (patched.json()["name"], patched.json()["socket_url"]) == (
        "Support v2",
        "elevenlabs&agent_7",
    )
    token_on = front.request(
        "PATCH", f"/api/agents/{agent_uuid}", key=tenant.key, body={"require_token": True}
    )
    assert token_on.status == 200 and token_on.json()["require_token"] is True
    stored = api_ctx.repo.get(Agent, agent_uuid)
    assert stored is not None and stored.require_token is True
    token_null = front.request(
        "PATCH", f"/api/agents/{agent_uuid}", key=tenant.key, body={"require_token": None}
    )
    assert token_null.status == 422 and token_null.error["field"] == "require_token"
    uuid_change = front.request(
        "PATCH",
        f"/api/agents/{agent_uuid}",
        key=tenant.key,
        body={"agent_uuid": str(uuid.uuid4())},
    )
    assert uuid_change.status == 422 and uuid_change.error["field"] == "agent_uuid"
    assert front.request("DELETE", f"/api/agents/{agent_uuid}", key=tenant.key).status == 204
    assert api_ctx.repo.get(Agent, agent_uuid) is None
    assert front.request("GET", f"/api/agents/{agent_uuid}", key=tenant.key).status == 404


def test_listing_is_newest_first(front, new_tenant) -> None:
    owner = new_tenant()
    made = [
        front.request(
            "POST", "/api/agents", key=owner.key, body={"name": f"a{i}", "socket_url": BOT}
        ).json()["agent_uuid"]
        for i in range(3)
    ]
    page = front.request("GET", "/api/agents", key=owner.key, query={"limit": "2"}).json()
    assert [a["agent_uuid"] for a in page["items"]] == made[::-1][:2]
    rest = front.request(
        "GET", "/api/agents", key=owner.key, query={"cursor": page["next_cursor"]}
    ).json()
    assert [a["agent_uuid"] for a in rest["items"]] == made[:1]


def test_telephony_config_must_be_the_accounts(front, tenant, other_tenant, api_ctx) -> None:
    theirs = TelephonyConfig(
        account_id=other_tenant.account_id,
        provider=TelephonyProvider.CLOUDONIX,
        domain="theirs.cloudonix.net",
        bearer_token="tok-0123456789",
    )
    mine = TelephonyConfig(
        account_id=tenant.account_id,
        provider=TelephonyProvider.CLOUDONIX,
        domain="mine.cloudonix.net",
        bearer_token="tok-9876543210",
    )
    api_ctx.repo.put(theirs)
    api_ctx.repo.put(mine)
    refused = front.request(
        "POST",
        "/api/agents",
        key=tenant.key,
        body={"name": "a", "socket_url": BOT, "telephony_config_id": theirs.config_id},
    )
    assert refused.status == 422 and refused.error["field"] == "telephony_config_id"
    accepted = front.request(
        "POST",
        "/api/agents",
        key=tenant.key,
        body={"name": "a", "socket_url": BOT, "telephony_config_id": mine.config_id},
    )
    assert accepted.status == 201
    agent_uuid = accepted.json()["agent_uuid"]
    detached = front.request(
        "PATCH", f"/api/agents/{agent_uuid}", key=tenant.key, body={"telephony_config_id": None}
    )
    assert detached.status == 200 and detached.json()["telephony_config_id"] is None


def test_another_accounts_agent_is_404(front, tenant, other_tenant, api_ctx) -> None:
    agent_uuid = front.request(
        "POST", "/api/agents", key=tenant.key, body={"name": "mine", "socket_url": BOT}
    ).json()["agent_uuid"]
    for method, body in (("GET", None), ("PATCH", {"name": "stolen"}), ("DELETE", None)):
        reply = front.request(method, f"/api/agents/{agent_uuid}", key=other_tenant.key, body=body)
        assert reply.status == 404, method
    stored = api_ctx.repo.get(Agent, agent_uuid)
    assert stored is not None and stored.name == "mine"
    assert front.request("GET", "/api/agents/not-a-uuid", key=tenant.key).status == 404


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"socket_url": BOT}, "validation_error", "name"),
        ({"name": "a"}, "validation_error", "socket_url"),
        ({"name": "a", "socket_url": "https://bot.example.com"}, "validation_error", "socket_url"),
        ({"name": "a", "socket_url": "ws://172.16.0.9/bot"}, "unsafe_url", "socket_url"),
        ({"name": "a", "socket_url": BOT, "driver": "x"}, "validation_error", "driver"),
    ],
    ids=["no-name", "no-socket", "http-socket", "private-socket", "unknown"],
)
def test_errors_name_the_field(front, tenant, body, code, field) -> None:
    reply = front.request("POST", "/api/agents", key=tenant.key, body=body)
    assert reply.status == 422, reply.content
    assert (reply.error["code"], reply.error["field"]) == (code, field)


def test_sample_events_round_trip(run_sample, tenant) -> None:
    created = run_sample("agents_create.json", tenant.key)
    assert created.status == 201, created.content
    path = f"/api/agents/{created.json()['agent_uuid']}"
    assert run_sample("agents_list.json", tenant.key).json()["items"] == [created.json()]
    assert run_sample("agents_get.json", tenant.key, path=path).json() == created.json()
    assert run_sample("agents_get.json", tenant.key).status == 404
    updated = run_sample("agents_update.json", tenant.key, path=path)
    assert updated.status == 200 and updated.json()["name"] == "Support bot v2"
    assert run_sample("agents_delete.json", tenant.key, path=path).status == 204
