"""Account call limits on the API: admins change them, originate enforces them, cancels free them.

``PATCH /api/accounts/{account_id}`` is admin-only; ``POST /api/calls`` takes one of the account's
call slots (``shared.call_slots``) and answers 429 with Retry-After past a limit; hanging up a
call that is still queued gives its slot back.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from functions.api.call_bodies import CreateCallRequest
from functions.api.errors import ApiError
from functions.api.originate import originate
from shared import call_slots
from shared.models import Account, AccountStatus, CallStatus
from tests.functions.conftest import make_api_ctx

CALL = {
    "destination_number": "+15551230000",
    "caller_id_number": "+15551239999",
    "socket_url": "wss://bot.example.com/media",
}


def set_limits(front: Any, admin: Any, account_id: str, body: dict[str, Any]) -> Any:
    return front.request("PATCH", f"/api/accounts/{account_id}", key=admin.key, body=body)


def live_slots(api_ctx: Any, account_id: str) -> int:
    item = api_ctx.dynamodb.get_item(
        TableName=api_ctx.settings.table_name,
        Key=call_slots.counter_key(account_id),
        ConsistentRead=True,
    ).get("Item")
    return int(item["active"]["N"]) if item else 0


# --------------------------------------------------------------------------- PATCH (admin)


def test_admin_changes_limits_and_the_account_sees_them(front, admin_tenant, tenant) -> None:
    reply = set_limits(
        front,
        admin_tenant,
        tenant.account_id,
        {"limits": {"max_concurrent_calls": 7, "calls_per_second": 0.5}},
    )
    assert reply.status == 200, reply.content
    assert reply.json()["limits"] == {"max_concurrent_calls": 7, "calls_per_second": 0.5}
    assert "webhook_secret" not in reply.json()
    mine = front.request("GET", "/api/account", key=tenant.key)
    assert mine.status == 200 and mine.json() == reply.json()
    # Partial: the field left out keeps its value.
    again = set_limits(front, admin_tenant, tenant.account_id, {"limits": {"calls_per_second": 3}})
    assert again.json()["limits"] == {"max_concurrent_calls": 7, "calls_per_second": 3.0}


def test_admin_suspends_an_account_and_it_cannot_originate(front, admin_tenant, tenant) -> None:
    reply = set_limits(front, admin_tenant, tenant.account_id, {"status": "suspended"})
    assert reply.status == 200 and reply.json()["status"] == "suspended"
    assert reply.json()["limits"]["max_concurrent_calls"] == 100  # untouched
    refused = front.request("POST", "/api/calls", key=tenant.key, body=CALL)
    assert refused.status == 403
    back = set_limits(front, admin_tenant, tenant.account_id, {"status": "active"})
    assert back.json()["status"] == "active"


def test_account_keys_get_403_and_change_nothing(front, tenant, api_ctx) -> None:
    reply = set_limits(front, tenant, tenant.account_id, {"limits": {"max_concurrent_calls": 1}})
    assert reply.status == 403 and reply.error["code"] == "forbidden"
    stored = api_ctx.repo.get(Account, tenant.account_id, consistent=True)
    assert stored.limits.max_concurrent_calls == 100


def test_unknown_account_is_404(front, admin_tenant) -> None:
    for account_id in ("acc_nobody", "x" * 300):
        reply = set_limits(front, admin_tenant, account_id, {"status": "suspended"})
        assert reply.status == 404 and reply.error["code"] == "not_found", account_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limits": {"calls_per_second": 0}}, "limits.calls_per_second"),
        ({"limits": {"calls_per_second": -1}}, "limits.calls_per_second"),
        ({"limits": {"calls_per_second": None}}, "limits.calls_per_second"),
        ({"limits": {"max_concurrent_calls": 0}}, "limits.max_concurrent_calls"),
        ({"limits": {"max_concurrent_calls": 1.5}}, "limits.max_concurrent_calls"),
        ({"limits": {"burst": 3}}, "limits.burst"),
        ({"limits": None}, "limits"),
        ({"status": "closed"}, "status"),
    ],
    ids=["cps-0", "cps-negative", "cps-null", "max-0", "max-fraction", "unknown", "null", "status"],
)
def test_bad_values_are_422_naming_the_field(
    front, admin_tenant, tenant, api_ctx, body, field
) -> None:
    reply = set_limits(front, admin_tenant, tenant.account_id, body)
    assert reply.status == 422, reply.content
    assert (reply.error["code"], reply.error["field"]) == ("validation_error", field)
    stored = api_ctx.repo.get(Account, tenant.account_id, consistent=True)
    assert stored.limits.calls_per_second == 10.0 and stored.status is AccountStatus.ACTIVE


# --------------------------------------------------------------------------- originate


def test_originate_past_the_concurrency_limit_is_429_until_a_queued_call_is_canceled(
    front, admin_tenant, tenant, api_ctx
) -> None:
    assert (
        set_limits(
            front, admin_tenant, tenant.account_id, {"limits": {"max_concurrent_calls": 1}}
        ).json()["limits"]["max_concurrent_calls"]
        == 1
    )
    first = front.request("POST", "/api/calls", key=tenant.key, body=CALL)
    assert first.status == 201, first.content
    refused = front.request("POST", "/api/calls", key=tenant.key, body=CALL)
    assert refused.status == 429, refused.content
    assert refused.error["code"] == "limit_exceeded"
    assert "limits.max_concurrent_calls is 1" in refused.error["message"]
    assert refused.headers["retry-after"] == str(call_slots.CONCURRENCY_RETRY_AFTER)
    listed = front.request("GET", "/api/calls", key=tenant.key).json()["items"]
    assert [call["call_uuid"] for call in listed] == [first.json()["call_uuid"]]  # none stored

    hangup = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": first.json()["call_uuid"]}
    )
    assert hangup.status == 202 and hangup.json()["status"] == CallStatus.CANCELED.value
    assert live_slots(api_ctx, tenant.account_id) == 0
    again = front.request("POST", "/api/calls", key=tenant.key, body=CALL)
    assert again.status == 201, again.content
    assert live_slots(api_ctx, tenant.account_id) == 1


def test_originate_past_the_rate_limit_is_429_with_the_wait(front, admin_tenant, tenant) -> None:
    # 0.1/s: one call per 10 s window. Three quick requests cross at most one window boundary,
    # so at least one of them lands in a full window.
    set_limits(front, admin_tenant, tenant.account_id, {"limits": {"calls_per_second": 0.1}})
    replies = [front.request("POST", "/api/calls", key=tenant.key, body=CALL) for _ in range(3)]
    statuses = [reply.status for reply in replies]
    assert statuses[0] == 201 and 429 in statuses, statuses
    refused = replies[statuses.index(429)]
    assert refused.error["code"] == "limit_exceeded"
    assert "limits.calls_per_second is 0.1" in refused.error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 10


def test_a_call_that_is_never_queued_gives_its_slot_back(aws, tenant, api_ctx) -> None:
    gone = f"{api_ctx.settings.originate_queue_url}-missing-{uuid.uuid4().hex[:6]}"
    broken = make_api_ctx(originate_queue_url=gone)
    request = CreateCallRequest.model_validate(CALL)
    with pytest.raises(ApiError) as failed:
        originate(broken, tenant.account_id, request)
    assert failed.value.status == 503
    assert live_slots(api_ctx, tenant.account_id) == 0
    assert originate(api_ctx, tenant.account_id, request)["status"] == 201
    assert live_slots(api_ctx, tenant.account_id) == 1
