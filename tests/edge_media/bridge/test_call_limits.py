"""Account call limits in a bridged call: a refused inbound call leaves nothing, a call's end
gives its slot back (after call.completed), an originated call releases the API's slot.

The slots here are in memory (`MemorySlots`, the `CallLimits` seam); the same paths over the real
DynamoDB transaction (moto) are in tests/edge_media/control/test_slots.py.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from edge_media.bridge.inbound import inbound_app
from edge_media.bridge.outbound import Originator
from edge_media.routing.router import CallRoute, Connect
from shared.call_slots import CONCURRENCY_RETRY_AFTER, SlotRefused
from shared.commands import Originate
from shared.models import Account, AccountLimits, Call, CallStatus, Direction, Trunk
from tests.support.bridge_fakes import Bots, FakeSipCall, MemoryRecorder, services

pytestmark = pytest.mark.anyio

BOT = "wss://bot.example.com/stream"


def account(max_calls: int = 1) -> Account:
    return Account(
        account_id=f"acc_{uuid.uuid4().hex[:8]}",
        name="limited",
        webhook_secret="s" * 32,
        socket_url=BOT,
        limits=AccountLimits(max_concurrent_calls=max_calls, calls_per_second=5),
    )


def route(acc: Account) -> CallRoute:
    return CallRoute(
        account=acc,
        socket_url=BOT,
        webhook_url=None,
        agent_socket_url=None,
        callback_url=None,
        label="+15550002222",
    )


class Routing:
    async def decide(self, route: CallRoute, **_: Any) -> Connect:
        return Connect(BOT, None, None, "static", None)


class MemorySlots:
    """`CallLimits` in memory: a concurrency count per account, or a forced rate refusal."""

    def __init__(self, recorder: MemoryRecorder) -> None:
        self.recorder = recorder
        self.held: dict[uuid.UUID, str] = {}
        self.rate_refusal: SlotRefused | None = None
        self.fail_release = False
        # (call, the event kinds already written when its release came)
        self.released: list[tuple[uuid.UUID, list[str]]] = []

    async def acquire(self, account: Account, call_uuid: uuid.UUID) -> SlotRefused | None:
        if self.rate_refusal is not None:
            return self.rate_refusal
        live = sum(1 for owner in self.held.values() if owner == account.account_id)
        if call_uuid not in self.held and live >= account.limits.max_concurrent_calls:
            limit = account.limits.max_concurrent_calls
            return SlotRefused("concurrency", limit, CONCURRENCY_RETRY_AFTER)
        self.held[call_uuid] = account.account_id
        return None

    async def acquire_with(
        self, account: Account, call_uuid: uuid.UUID, also: list[dict[str, Any]]
    ) -> tuple[SlotRefused | None, bool]:
        return await self.acquire(account, call_uuid), False

    async def release(self, account_id: str, call_uuid: uuid.UUID) -> None:
        self.released.append((call_uuid, self.recorder.kinds()))
        if self.fail_release:
            raise RuntimeError("table unreachable")
        self.held.pop(call_uuid, None)


def setup() -> tuple[Bots, MemoryRecorder, MemorySlots, Any]:
    bots, recorder = Bots(), MemoryRecorder()
    slots = MemorySlots(recorder)
    svc = services(bots, recorder)
    svc.slots = slots
    return bots, recorder, slots, svc


def start(sip: FakeSipCall, acc: Account, svc: Any) -> asyncio.Task[None]:
    app = inbound_app(sip, route=route(acc), routing=Routing(), services=svc)  # type: ignore[arg-type]
    return asyncio.ensure_future(app)


async def until(predicate: Any, seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def test_full_account_gets_486_and_a_finished_call_frees_its_slot() -> None:
    bots, recorder, slots, svc = setup()
    acc = account(max_calls=1)
    first = FakeSipCall()
    first_task = start(first, acc, svc)
    await until(lambda: "call.answered" in recorder.kinds())

    second = FakeSipCall()
    await asyncio.wait_for(start(second, acc, svc), 2)
    assert second.rejected == (486, "Busy Here", "USER_BUSY")
    assert second.reject_headers["Warning"] == '399 agera "account concurrency limit reached"'
    # Refused before anything was written: no record, no event, no live call, nothing to release.
    assert second.call_uuid not in recorder.calls and second.call_uuid not in svc.live
    assert {event.call_uuid for event in recorder.events} == {first.call_uuid}
    assert len(bots.connected) == 1

    first.caller_hangs_up()
    await asyncio.wait_for(first_task, 2)
    (released,) = slots.released
    assert released == (first.call_uuid, ["call.ringing", "call.answered", "call.completed"])

    third = FakeSipCall()
    third_task = start(third, acc, svc)
    await bots.wait_connected(2)
    assert third.rejected is None
    third.caller_hangs_up()
    await asyncio.wait_for(third_task, 2)
    assert slots.held == {}


async def test_rate_limited_call_gets_503_with_retry_after() -> None:
    _, recorder, slots, svc = setup()
    slots.rate_refusal = SlotRefused("rate", 5, 1)
    sip = FakeSipCall()
    await asyncio.wait_for(start(sip, account(), svc), 2)
    assert sip.rejected == (503, "Service Unavailable", "NORMAL_TEMPORARY_FAILURE")
    assert sip.reject_headers == {
        "Retry-After": "1",
        "Warning": '399 agera "account call rate limit reached"',
    }
    assert recorder.events == [] and recorder.calls == {} and slots.released == []


async def test_a_failed_release_never_costs_the_call_its_completed_event() -> None:
    _, recorder, slots, svc = setup()
    slots.fail_release = True
    sip = FakeSipCall()
    task = start(sip, account(), svc)
    await until(lambda: "call.answered" in recorder.kinds())
    sip.caller_hangs_up()
    await asyncio.wait_for(task, 2)
    assert recorder.kinds()[-1] == "call.completed"
    assert [call for call, _ in slots.released] == [sip.call_uuid]
    assert sip.call_uuid not in svc.live


class FakeUa:
    accepting = True

    def __init__(self) -> None:
        self.calls: list[FakeSipCall] = []

    def invite(self, target: str, **_: Any) -> FakeSipCall:
        call = FakeSipCall(dialed=target)
        self.calls.append(call)
        return call


async def test_an_originated_call_gives_back_the_slot_the_api_took() -> None:
    bots, recorder, slots, svc = setup()
    acc = account()
    command = Originate(
        call_uuid=uuid.uuid4(),
        account_id=acc.account_id,
        destination_number="+15550003333",
        caller_id_number="+15550004444",
        ring_timeout=5,
    )
    recorder.calls[command.call_uuid] = Call(
        call_uuid=command.call_uuid,
        account_id=acc.account_id,
        direction=Direction.OUTBOUND,
        from_number="+15550004444",
        to_number="+15550003333",
        status=CallStatus.QUEUED,
    )
    trunk = Trunk(account_id=acc.account_id, name="carrier", host="127.0.0.1", port=5099)

    async def accounts(account_id: str) -> Account:
        return acc

    async def trunk_for(account: Account, trunk_id: str | None) -> Trunk:
        return trunk

    ua = FakeUa()
    originator = Originator(
        ua,  # type: ignore[arg-type]
        services=svc,
        routing=Routing(),  # type: ignore[arg-type]
        accounts=accounts,
        trunk_for=trunk_for,
    )
    await originator.handle(command)
    await until(lambda: bool(ua.calls))
    ua.calls[0]._end("NO_ANSWER", 480, "remote")
    (task,) = originator.tasks
    await asyncio.wait_for(task, 2)
    (released,) = slots.released
    assert released == (command.call_uuid, ["call.completed"])
    assert bots.attempts == []
