"""Account call slots: the pure request builders on literal dicts, then both callers on moto."""

from __future__ import annotations

import uuid
from typing import Any

import aioboto3
import pytest

from shared import call_slots
from shared.call_slots import (
    CONCURRENCY_RETRY_AFTER,
    SLOT_TTL_SECONDS,
    RateWindow,
    SlotRefused,
    acquire_outcome,
    acquire_request,
    rate_window,
    release_request,
)
from shared.dynamo.repository import Repository
from shared.models import AccountLimits

NOW = 1_770_000_000.25  # a fixed instant, 0.25 s into a window that starts on a whole second
TABLE = "agera-test"
CCF = "ConditionalCheckFailed"


def limits(concurrent: int = 100, cps: float = 10.0) -> AccountLimits:
    return AccountLimits(max_concurrent_calls=concurrent, calls_per_second=cps)


def fresh_account() -> str:
    return f"acc_{uuid.uuid4().hex[:20]}"


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("cps", "window"),
    [
        (10.0, RateWindow(1, 10)),
        (1.0, RateWindow(1, 1)),
        (2.5, RateWindow(1, 2)),  # a fractional part rounds down: never above the rate
        (1000.0, RateWindow(1, 1000)),
        (0.5, RateWindow(2, 1)),
        (1 / 3, RateWindow(3, 1)),  # 1 / (1/3) is 3.0000000000000004, not a 4 s window
        (0.3, RateWindow(4, 1)),
        (0.1, RateWindow(10, 1)),
    ],
)
def test_rate_window_never_allows_more_than_the_rate(cps: float, window: RateWindow) -> None:
    assert rate_window(cps) == window
    assert window.cap / window.seconds <= cps + 1e-9


def test_rate_window_aligns_to_the_epoch_and_says_when_the_next_opens() -> None:
    two = RateWindow(2, 1)
    assert (two.start(1001.9), two.retry_after(1001.9)) == (1000, 1)
    assert (two.start(1000.0), two.retry_after(1000.0)) == (1000, 2)
    assert RateWindow(1, 5).retry_after(1000.99) == 1  # never 0: "now" is still this window
    with pytest.raises(ValueError, match="positive"):
        rate_window(0)


def test_acquire_request_is_one_transaction_of_slot_counter_and_window() -> None:
    call = uuid.UUID(int=7)
    request = acquire_request(TABLE, "acc_1", call, limits(3, 0.5), NOW)
    put, counter, window = (next(iter(op.items())) for op in request["TransactItems"])
    assert put == (
        "Put",
        {
            "TableName": TABLE,
            "Item": {
                "pk": {"S": "ACCOUNT#acc_1"},
                "sk": {"S": f"SLOT#{call}"},
                "entity": {"S": "slot"},
                "account_id": {"S": "acc_1"},
                "call_uuid": {"S": str(call)},
                "acquired_at": {"S": "2026-02-02T02:40:00.250Z"},
                "expires_at": {"N": str(1_770_000_000 + SLOT_TTL_SECONDS)},
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        },
    )
    kind, update = counter
    assert kind == "Update"
    assert update["Key"] == {"pk": {"S": "ACCOUNT#acc_1"}, "sk": {"S": "SLOTS"}}
    assert update["UpdateExpression"] == "SET #kind = :kind ADD #active :one"
    assert update["ConditionExpression"] == "attribute_not_exists(#active) OR #active < :max"
    assert update["ExpressionAttributeNames"]["#active"] == "active"
    assert update["ExpressionAttributeValues"][":max"] == {"N": "3"}
    kind, update = window
    assert kind == "Update"
    # 0.5/s: a 2 s window starting on an even second, cap 1, gone a minute after it ends.
    assert update["Key"] == {"pk": {"S": "ACCOUNT#acc_1"}, "sk": {"S": "CPS#1770000000"}}
    assert update["ConditionExpression"] == "attribute_not_exists(#n) OR #n < :cap"
    assert update["ExpressionAttributeValues"][":cap"] == {"N": "1"}
    assert update["ExpressionAttributeValues"][":exp"] == {"N": str(1_770_000_002 + 60)}


def test_release_request_deletes_the_slot_and_never_counts_below_zero() -> None:
    request = release_request(TABLE, "acc_1", "c-1")
    delete, update = request["TransactItems"]
    assert delete == {
        "Delete": {
            "TableName": TABLE,
            "Key": {"pk": {"S": "ACCOUNT#acc_1"}, "sk": {"S": "SLOT#c-1"}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }
    assert update["Update"]["UpdateExpression"] == "ADD #active :minus"
    assert update["Update"]["ConditionExpression"] == "#active > :zero"
    assert update["Update"]["ExpressionAttributeValues"] == {
        ":minus": {"N": "-1"},
        ":zero": {"N": "0"},
    }


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        ([CCF, None, None], "held"),
        ([CCF, CCF, CCF], "held"),  # the call has its slot: the limits do not matter to it
        ([None, CCF, None], SlotRefused("concurrency", 3, CONCURRENCY_RETRY_AFTER)),
        ([None, CCF, CCF], SlotRefused("concurrency", 3, CONCURRENCY_RETRY_AFTER)),
        ([None, None, CCF], SlotRefused("rate", 0.5, 2)),
        ([None, "TransactionConflict", None], None),
        ([], None),
    ],
)
def test_acquire_outcome_reads_which_condition_failed(reasons, expected) -> None:
    assert acquire_outcome(reasons, limits(3, 0.5), 1000.0) == expected


def test_refusal_names_the_account_field() -> None:
    concurrency = SlotRefused("concurrency", 3, 5)
    rate = SlotRefused("rate", 0.5, 2)
    assert (concurrency.field, concurrency.shown_limit) == ("limits.max_concurrent_calls", "3")
    assert (rate.field, rate.shown_limit) == ("limits.calls_per_second", "0.5")
    assert "concurrency" in concurrency.reason and "rate" in rate.reason


# --------------------------------------------------------------------------- against moto


def active(repo: Repository, account_id: str) -> int | None:
    item = repo.client.get_item(
        TableName=repo.table, Key=call_slots.counter_key(account_id), ConsistentRead=True
    ).get("Item")
    return None if item is None else int(item["active"]["N"])


def slot_exists(repo: Repository, account_id: str, call_uuid: Any) -> bool:
    key = call_slots.slot_key(account_id, call_uuid)
    return "Item" in repo.client.get_item(TableName=repo.table, Key=key, ConsistentRead=True)


def test_concurrency_limit_refuses_then_a_release_frees_the_slot(repo: Repository) -> None:
    account, rules = fresh_account(), limits(1)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert call_slots.acquire(repo.client, repo.table, account, first, rules, now=NOW) is None
    refused = call_slots.acquire(repo.client, repo.table, account, second, rules, now=NOW)
    assert refused == SlotRefused("concurrency", 1, CONCURRENCY_RETRY_AFTER)
    assert not slot_exists(repo, account, second)  # a refusal writes nothing
    assert active(repo, account) == 1
    assert call_slots.release(repo.client, repo.table, account, first) is True
    assert active(repo, account) == 0 and not slot_exists(repo, account, first)
    assert call_slots.acquire(repo.client, repo.table, account, second, rules, now=NOW) is None
    assert active(repo, account) == 1


def test_releases_are_idempotent_and_the_count_never_goes_negative(repo: Repository) -> None:
    account, rules, call = fresh_account(), limits(2), uuid.uuid4()
    assert call_slots.release(repo.client, repo.table, account, call) is False  # never acquired
    assert active(repo, account) is None
    call_slots.acquire(repo.client, repo.table, account, call, rules, now=NOW)
    assert call_slots.release(repo.client, repo.table, account, call) is True
    assert call_slots.release(repo.client, repo.table, account, call) is False
    assert call_slots.release(repo.client, repo.table, account, uuid.uuid4()) is False
    assert active(repo, account) == 0


def test_acquiring_the_same_call_twice_counts_it_once(repo: Repository) -> None:
    account, rules, call = fresh_account(), limits(1), uuid.uuid4()
    assert call_slots.acquire(repo.client, repo.table, account, call, rules, now=NOW) is None
    # At the limit, the same call still "gets" its slot: it is the one holding it.
    assert call_slots.acquire(repo.client, repo.table, account, call, rules, now=NOW) is None
    assert active(repo, account) == 1
    call_slots.release(repo.client, repo.table, account, call)
    assert active(repo, account) == 0


def test_rate_limit_refuses_the_third_call_in_a_window(repo: Repository) -> None:
    account, rules = fresh_account(), limits(100, 2)
    for _ in range(2):
        assert (
            call_slots.acquire(repo.client, repo.table, account, uuid.uuid4(), rules, now=NOW)
            is None
        )
    refused = call_slots.acquire(repo.client, repo.table, account, uuid.uuid4(), rules, now=NOW)
    assert refused is not None and (refused.kind, refused.limit) == ("rate", 2)
    assert refused.retry_after >= 1
    assert active(repo, account) == 2  # the refused call took no concurrency slot either
    later = NOW + 1  # the next window
    assert (
        call_slots.acquire(repo.client, repo.table, account, uuid.uuid4(), rules, now=later) is None
    )


def test_a_stray_slot_item_is_cleaned_without_counting_below_zero(repo: Repository) -> None:
    """A slot item whose count was already given back (a count reset by hand) just goes."""
    account, call = fresh_account(), uuid.uuid4()
    request = acquire_request(repo.table, account, call, limits(), NOW)
    repo.client.put_item(**request["TransactItems"][0]["Put"])
    assert call_slots.release(repo.client, repo.table, account, call) is False
    assert not slot_exists(repo, account, call)
    assert active(repo, account) is None


@pytest.mark.anyio
async def test_async_callers_share_the_counts(repo: Repository) -> None:
    account, rules = fresh_account(), limits(1)
    first, second = uuid.uuid4(), uuid.uuid4()
    async with aioboto3.Session().client("dynamodb") as client:
        assert await call_slots.acquire_async(client, repo.table, account, first, rules) is None
        assert await call_slots.acquire_async(client, repo.table, account, first, rules) is None
        refused = await call_slots.acquire_async(client, repo.table, account, second, rules)
        assert refused is not None and refused.kind == "concurrency"
        # The sync caller sees the same count and releases what the async one took.
        assert call_slots.release(repo.client, repo.table, account, first) is True
        assert await call_slots.release_async(client, repo.table, account, first) is False
        assert await call_slots.acquire_async(client, repo.table, account, second, rules) is None
        assert await call_slots.release_async(client, repo.table, account, second) is True
    assert active(repo, account) == 0


def _record_put(repo: Repository, account: str, call: uuid.UUID) -> dict[str, Any]:
    from shared.dynamo import mapping
    from shared.models import Call, Direction

    record = Call(
        call_uuid=call,
        account_id=account,
        direction=Direction.INBOUND,
        from_number="+15550100",
        to_number="+15550101",
    )
    return {"Put": mapping.put_request(repo.table, record, create_only=True)}


def _record_exists(repo: Repository, call: uuid.UUID) -> bool:
    from shared.models import Call

    return repo.get(Call, call, consistent=True) is not None


@pytest.mark.anyio
async def test_the_record_goes_with_the_slot_or_not_at_all(repo: Repository) -> None:
    account, rules = fresh_account(), limits(1)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with aioboto3.Session().client("dynamodb") as client:
        acquire = call_slots.acquire_with_async
        # Taken with its record, in one transaction.
        got = await acquire(
            client, repo.table, account, first, rules, [_record_put(repo, account, first)]
        )
        assert got == (None, True) and _record_exists(repo, first)
        assert slot_exists(repo, account, first) and active(repo, account) == 1
        # Refused (the one slot is taken): neither the slot nor the record is written.
        refused, written = await acquire(
            client, repo.table, account, second, rules, [_record_put(repo, account, second)]
        )
        assert refused is not None and refused.kind == "concurrency" and written is False
        assert not _record_exists(repo, second) and active(repo, account) == 1
        # A repeat for a call holding its slot: nothing counted twice, the record not written.
        assert await acquire(client, repo.table, account, first, rules, []) == (None, False)
        assert active(repo, account) == 1
        assert await call_slots.release_async(client, repo.table, account, first) is True
        # The record exists already: the slot is taken alone, and the caller is told.
        repo.client.put_item(**_record_put(repo, account, third)["Put"])
        got = await acquire(
            client, repo.table, account, third, rules, [_record_put(repo, account, third)]
        )
        assert got == (None, False)
        assert slot_exists(repo, account, third) and active(repo, account) == 1
        assert await call_slots.release_async(client, repo.table, account, third) is True
    assert active(repo, account) == 0
