"""/api/numbers through uvicorn and Mangum: CRUD, gateway-wide uniqueness, scoping, validation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from shared.models import Agent, Number

BOT = "wss://bot.example.com/media"
HOOK = "https://hooks.example.com/route"


def unique_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def route(**target: Any) -> dict[str, Any]:
    return {"socket_url": None, "webhook_url": None, "agent_uuid": None, **target}


def test_crud_round_trip(front, tenant, api_ctx) -> None:
    number = unique_number()
    created = front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number[1:], "route": {"socket_url": BOT}, "description": "Sales"},
    )
    assert created.status == 201, created.content
    body = created.json()
    assert {k: v for k, v in body.items() if not k.endswith("_at")} == {
        "number": number,
        "route": route(socket_url=BOT),
        "description": "Sales",
    }
    created_at = datetime.fromisoformat(body["created_at"])
    assert abs((datetime.fromisoformat(body["updated_at"]) - created_at).total_seconds()) < 1
    stored = api_ctx.repo.get(Number, number)
    assert stored is not None and stored.account_id == tenant.account_id

    got = front.request("GET", f"/api/numbers/{number}", key=tenant.key)
    assert (got.status, got.json()) == (200, body)

    listed = front.request("GET", "/api/numbers", key=tenant.key)
    assert listed.status == 200
    assert listed.json() == {"items": [body], "next_cursor": None}

    patched = front.request(
        "PATCH",
        f"/api/numbers/{number}",
        key=tenant.key,
        body={"route": {"webhook_url": HOOK}, "description": None},
    )
    assert patched.status == 200, patched.content
    after = patched.json()
    assert after["route"] == route(webhook_url=HOOK)
    assert after["description"] is None
    assert after["created_at"] == body["created_at"]
    assert after["updated_at"] > body["updated_at"]
    stored = api_ctx.repo.get(Number, number, consistent=True)
    assert stored is not None and stored.description is None
    assert stored.route.webhook_url == HOOK

    deleted = front.request("DELETE", f"/api/numbers/{number}", key=tenant.key)
    assert (deleted.status, deleted.content) == (204, b"")
    assert api_ctx.repo.get(Number, number, consistent=True) is None
    again = front.request("DELETE", f"/api/numbers/{number}", key=tenant.key)
    assert again.status == 404 and again.error["code"] == "not_found"


@pytest.mark.parametrize("spelling", ["plain", "no-plus", "encoded"])
def test_path_accepts_the_number_with_or_without_plus(front, tenant, spelling) -> None:
    number = unique_number()
    front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"socket_url": BOT}},
    )
    path = {"plain": number, "no-plus": number[1:], "encoded": "%2B" + number[1:]}[spelling]
    got = front.request("GET", f"/api/numbers/{path}", key=tenant.key)
    assert got.status == 200 and got.json()["number"] == number


def test_a_number_belongs_to_one_account_gateway_wide(front, tenant, other_tenant) -> None:
    number = unique_number()
    body = {"number": number, "route": {"socket_url": BOT}}
    assert front.request("POST", "/api/numbers", key=tenant.key, body=body).status == 201
    taken = front.request("POST", "/api/numbers", key=other_tenant.key, body=body)
    assert taken.status == 409
    assert taken.error == {
        "code": "conflict",
        "message": f"number {number} is already registered",
        "field": "number",
    }
    again = front.request("POST", "/api/numbers", key=tenant.key, body=body)
    assert again.status == 409


def test_another_accounts_number_is_404_and_untouched(front, tenant, other_tenant, api_ctx) -> None:
    number = unique_number()
    front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"socket_url": BOT}},
    )
    path = f"/api/numbers/{number}"
    for method, body in (("GET", None), ("PATCH", {"description": "mine"}), ("DELETE", None)):
        reply = front.request(method, path, key=other_tenant.key, body=body)
        assert reply.status == 404, (method, reply.content)
        assert reply.error["message"] == f"number {number} not found"
    assert front.request("GET", "/api/numbers", key=other_tenant.key).json()["items"] == []
    stored = api_ctx.repo.get(Number, number, consistent=True)
    assert stored is not None and stored.description is None


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"route": {"socket_url": BOT}}, "number", "field required"),
        ({"number": "12", "route": {"socket_url": BOT}}, "number", "E.164"),
        ({"number": "+15551234567"}, "route", "field required"),
        (
            {"number": "+15551234567", "route": {"socket_url": BOT, "webhook_url": HOOK}},
            "route",
            "exactly one",
        ),
        ({"number": "+15551234567", "route": {"socket_url": "http://x"}}, "route.socket_url", "ws"),
        (
            {"number": "+15551234567", "route": {"socket_url": BOT}, "color": "red"},
            "color",
            "unknown field",
        ),
        (
            {"number": "+15551234567", "route": {"socket_url": BOT, "extra": 1}},
            "route.extra",
            "unknown field",
        ),
        (
            {"number": "+15551234567", "route": {"socket_url": BOT}, "description": "x" * 257},
            "description",
            "256",
        ),
    ],
    ids=[
        "missing-number",
        "bad-number",
        "missing-route",
        "two-targets",
        "bad-socket-url",
        "unknown-field",
        "unknown-route-field",
        "long-description",
    ],
)
def test_validation_errors_name_the_field(front, tenant, body, field, message) -> None:
    reply = front.request("POST", "/api/numbers", key=tenant.key, body=body)
    assert reply.status == 422, reply.content
    error = reply.error
    assert (error["code"], error["field"]) == ("validation_error", field)
    assert error["message"].startswith(f"{field}: ")
    assert message in error["message"]


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"socket_url": "ws://10.1.2.3/bot"}, "route.socket_url"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data"}, "route.webhook_url"),
        ({"webhook_url": "https://intranet.example.net/hook"}, "route.webhook_url"),
    ],
    ids=["private", "metadata", "resolves-private"],
)
def test_route_urls_pass_the_ssrf_guard(front, tenant, target, field) -> None:
    body = {"number": unique_number(), "route": target}
    reply = front.request("POST", "/api/numbers", key=tenant.key, body=body)
    assert reply.status == 422
    assert (reply.error["code"], reply.error["field"]) == ("unsafe_url", field)


def test_native_drivers_need_no_url_check(front, tenant) -> None:
    body = {"number": unique_number(), "route": {"socket_url": "elevenlabs&agent_42"}}
    reply = front.request("POST", "/api/numbers", key=tenant.key, body=body)
    assert reply.status == 201 and reply.json()["route"]["socket_url"] == "elevenlabs&agent_42"


def test_route_to_an_agent_of_another_account_is_refused(
    front, tenant, other_tenant, api_ctx
) -> None:
    theirs = Agent(account_id=other_tenant.account_id, name="theirs", socket_url=BOT)
    mine = Agent(account_id=tenant.account_id, name="mine", socket_url=BOT)
    api_ctx.repo.put(theirs)
    api_ctx.repo.put(mine)
    number = unique_number()
    refused = front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"agent_uuid": str(theirs.agent_uuid)}},
    )
    assert refused.status == 422
    assert refused.error["field"] == "route.agent_uuid"
    accepted = front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"agent_uuid": str(mine.agent_uuid)}},
    )
    assert accepted.status == 201
    assert accepted.json()["route"] == route(agent_uuid=str(mine.agent_uuid))


def test_patch_refuses_null_route_and_unknown_fields(front, tenant) -> None:
    number = unique_number()
    front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"socket_url": BOT}},
    )
    null_route = front.request(
        "PATCH", f"/api/numbers/{number}", key=tenant.key, body={"route": None}
    )
    assert null_route.status == 422
    assert null_route.error == {
        "code": "validation_error",
        "message": "route: cannot be null",
        "field": "route",
    }
    renumber = front.request(
        "PATCH", f"/api/numbers/{number}", key=tenant.key, body={"number": "+15550000000"}
    )
    assert renumber.status == 422 and renumber.error["field"] == "number"


def test_listing_pages_in_number_order_with_a_cursor(front, new_tenant) -> None:
    owner = new_tenant()
    numbers = sorted(unique_number() for _ in range(3))
    for number in numbers:
        front.request(
            "POST",
            "/api/numbers",
            key=owner.key,
            body={"number": number, "route": {"socket_url": BOT}},
        )
    first = front.request("GET", "/api/numbers", key=owner.key, query={"limit": "2"})
    assert first.status == 200
    page = first.json()
    assert [n["number"] for n in page["items"]] == numbers[:2]
    assert page["next_cursor"]
    second = front.request(
        "GET", "/api/numbers", key=owner.key, query={"limit": "2", "cursor": page["next_cursor"]}
    ).json()
    assert [n["number"] for n in second["items"]] == numbers[2:]
    assert second["next_cursor"] is None


def test_cursor_of_another_account_and_bad_limits_are_422(front, tenant, other_tenant) -> None:
    for _ in range(2):
        front.request(
            "POST",
            "/api/numbers",
            key=tenant.key,
            body={"number": unique_number(), "route": {"socket_url": BOT}},
        )
    cursor = front.request("GET", "/api/numbers", key=tenant.key, query={"limit": "1"}).json()[
        "next_cursor"
    ]
    stolen = front.request("GET", "/api/numbers", key=other_tenant.key, query={"cursor": cursor})
    assert stolen.status == 422 and stolen.error["field"] == "cursor"
    for limit in ("0", "101", "ten"):
        bad = front.request("GET", "/api/numbers", key=tenant.key, query={"limit": limit})
        assert bad.status == 422 and bad.error["field"] == "limit", limit
    typo = front.request("GET", "/api/numbers", key=tenant.key, query={"limt": "5"})
    assert typo.status == 422 and typo.error["field"] == "limt"


def test_sample_events_round_trip(run_sample, tenant, api_ctx) -> None:
    created = run_sample("numbers_create.json", tenant.key)
    assert created.status == 201, created.content
    assert created.json()["number"] == "+5511999999999"
    try:
        listed = run_sample("numbers_list.json", tenant.key)
        assert listed.status == 200 and [n["number"] for n in listed.json()["items"]] == [
            "+5511999999999"
        ]
        got = run_sample("numbers_get.json", tenant.key)
        assert got.status == 200 and got.json() == created.json()
        updated = run_sample("numbers_update.json", tenant.key)
        assert updated.status == 200
        assert updated.json()["route"] == route(webhook_url="https://my-api.com/route-call")
        deleted = run_sample("numbers_delete.json", tenant.key)
        assert (deleted.status, deleted.content) == (204, b"")
    finally:
        api_ctx.repo.client.delete_item(
            TableName=api_ctx.settings.table_name,
            Key={"pk": {"S": "NUMBER#+5511999999999"}, "sk": {"S": "NUMBER"}},
        )
