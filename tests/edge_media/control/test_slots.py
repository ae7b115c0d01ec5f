"""The node's CallSlots over moto: counts shared with the API, fail-open acquire, quiet release,
and an inbound call refused with 486 while its account's slots are full."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from edge_media.bridge.inbound import inbound_app
from edge_media.control.slots import CallSlots
from edge_media.routing.router import CallRoute, Connect
from shared import call_slots
from shared.call_slots import SlotRefused
from shared.models import Account, AccountLimits
from tests.support.bridge_fakes import Bots, FakeSipCall, MemoryRecorder, services

pytestmark = pytest.mark.anyio

BOT = "wss://bot.example.com/stream"


def account(max_calls: int = 1, cps: float = 50) -> Account:
    return Account(
        account_id=f"acc_{uuid.uuid4().hex[:12]}",
        name="limited",
        webhook_secret="s" * 32,
        socket_url=BOT,
        limits=AccountLimits(max_concurrent_calls=max_calls, calls_per_second=cps),
    )


async def live_slots(aio: Any, account_id: str) -> int:
    item = (
        await aio.dynamodb.get_item(
            TableName=aio.table_name,
            Key=call_slots.counter_key(account_id),
            ConsistentRead=True,
        )
    ).get("Item")
    return int(item["active"]["N"]) if item else 0


class Broken:
    """A dynamodb client whose every call fails as a throttled table does."""

    async def transact_write_items(self, **_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
            "TransactWriteItems",
        )


async def test_acquire_refuses_a_full_account_and_release_frees_it(aio) -> None:
    slots = CallSlots(aio.dynamodb, aio.table_name)
    acc = account(max_calls=1)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert await slots.acquire(acc, first) is None
    refused = await slots.acquire(acc, second)
    assert refused == SlotRefused("concurrency", 1, call_slots.CONCURRENCY_RETRY_AFTER)
    await slots.release(acc.account_id, first)
    await slots.release(acc.account_id, first)  # again: nothing, no error
    assert await live_slots(aio, acc.account_id) == 0
    assert await slots.acquire(acc, second) is None


async def test_rate_refusal_comes_from_the_shared_window(aio) -> None:
    slots = CallSlots(aio.dynamodb, aio.table_name, clock=lambda: 1_770_000_000.5)
    acc = account(max_calls=10, cps=1)
    assert await slots.acquire(acc, uuid.uuid4()) is None
    refused = await slots.acquire(acc, uuid.uuid4())
    assert refused == SlotRefused("rate", 1, 1)


async def test_acquire_fails_open_and_release_never_raises(caplog) -> None:
    slots = CallSlots(Broken(), "agera")
    with caplog.at_level(logging.WARNING, logger="agera.control.slots"):
        assert await slots.acquire(account(), uuid.uuid4()) is None
        await slots.release("acc_x", uuid.uuid4())
        # With the record in the transaction: through, and told the record was not written.
        assert await slots.acquire_with(account(), uuid.uuid4(), [{"Put": {}}]) == (None, False)
    levels = [record.levelname for record in caplog.records]
    assert levels == ["WARNING", "ERROR", "WARNING"]
    assert "letting the call through" in caplog.records[0].getMessage()
    assert "ThrottlingException" in caplog.records[1].getMessage()


# --------------------------------------------------------------------------- an inbound call


class Routing:
    async def decide(self, route: CallRoute, **_: Any) -> Connect:
        return Connect(BOT, None, None, "static", None)


def call_to(acc: Account, sip: FakeSipCall, svc: Any) -> asyncio.Task[None]:
    route = CallRoute(
        account=acc,
        socket_url=BOT,
        webhook_url=None,
        agent_socket_url=None,
        callback_url=None,
        label="+15550002222",
    )
    app = inbound_app(sip, route=route, routing=Routing(), services=svc)  # type: ignore[arg-type]
    return asyncio.ensure_future(app)


async def answered(recorder: MemoryRecorder, sip: FakeSipCall) -> None:
    async with asyncio.timeout(3):
        while not any(  # noqa: ASYNC110
            e.type == "call.answered" and e.call_uuid == sip.call_uuid for e in recorder.events
        ):
            await asyncio.sleep(0.005)


async def test_inbound_call_is_486_while_the_accounts_slots_are_full(aio) -> None:
    bots, recorder = Bots(), MemoryRecorder()
    svc = services(bots, recorder)
    svc.slots = CallSlots(aio.dynamodb, aio.table_name)
    acc = account(max_calls=1)

    first = FakeSipCall()
    first_task = call_to(acc, first, svc)
    await answered(recorder, first)
    assert await live_slots(aio, acc.account_id) == 1

    refused = FakeSipCall()
    await asyncio.wait_for(call_to(acc, refused, svc), 3)
    assert refused.rejected == (486, "Busy Here", "USER_BUSY")
    assert refused.call_uuid not in recorder.calls
    assert all(event.call_uuid != refused.call_uuid for event in recorder.events)

    first.caller_hangs_up()
    await asyncio.wait_for(first_task, 3)
    assert await live_slots(aio, acc.account_id) == 0

    after = FakeSipCall()
    after_task = call_to(acc, after, svc)
    await answered(recorder, after)
    assert after.rejected is None
    after.caller_hangs_up()
    await asyncio.wait_for(after_task, 3)
    assert await live_slots(aio, acc.account_id) == 0
