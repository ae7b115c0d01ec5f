"""Bot failover (edge_media/bridge/bot_failover.py) in a bridged call's middle, in milliseconds:
which ends are failures, the budget's rules, and what the caller, the bots and the record see.
The same with a real bot process killed by SIGKILL is tests/interop/test_bot_failover.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from edge_media.bridge.bot_failover import ReconnectBudget, ReconnectPolicy, hold_tone
from edge_media.drivers.base import BotEnd, CallInfo, ConnectStep
from edge_media.drivers.twilio_stream import TwilioStreamProtocol
from edge_media.rtp.playout import FRAME_BYTES, ULAW_SILENCE
from shared.call_fold import fold
from shared.events import CallBotReconnected, callback_payload
from shared.models import CallStatus
from tests.edge_media.bridge.test_bridged_call import (
    BOT,
    FALLBACK,
    completed,
    connect,
    inbound,
    until,
)
from tests.support.bridge_fakes import Bots, FakeSipCall, MemoryRecorder

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("code", "failed"),
    [(1006, True), (1001, True), (1011, True), (1012, True), (1000, False), (1009, False)],
)
def test_which_ends_are_failures(code: int, failed: bool) -> None:
    assert BotEnd(by_bot=True, reason="x", code=code).failed is failed
    assert not BotEnd(by_bot=False, reason="we stopped it", code=code).failed


def test_the_budget_slides_and_its_pauses_grow() -> None:
    now = [0.0]
    budget = ReconnectBudget(ReconnectPolicy(attempts=2, window_seconds=60), clock=lambda: now[0])
    assert [budget.next_pause(n) for n in range(4)] == [0.25, 0.5, 1.0, 2.0]
    budget.spend()
    budget.spend()
    assert budget.next_pause(2) is None  # two attempts within the minute: none left
    now[0] = 61.0
    assert budget.next_pause(0) == 0.25  # the window slid past them


def test_hold_tone_is_a_short_beep_then_silence() -> None:
    tone = hold_tone()
    assert len(tone) == 16000  # two seconds of μ-law
    beep, rest = tone[:1600], tone[1600:]
    assert len(set(beep)) > 10 and set(rest) <= {ULAW_SILENCE, 0x7F}


def test_a_resumed_start_names_the_failed_stream_and_the_gap() -> None:
    info = CallInfo(
        "c-1",
        "acc",
        "inbound",
        "+1555",
        "+1666",
        extra={"resumed_from": "forged"},
        resumed_from="MZ" + "a" * 32,
        resume_gap_ms=1250,
    )
    stream = TwilioStreamProtocol("MZ" + "b" * 32, "CA" + "c" * 32, "AC" + "d" * 32, info)
    stream.connected()
    start = json.loads(stream.start())["start"]["customParameters"]
    assert start["resumed_from"] == "MZ" + "a" * 32 and start["resume_gap_ms"] == "1250"


def reconnect_services(svc: Any, **policy: Any) -> None:
    svc.reconnect = ReconnectPolicy(**policy)


async def call_with(bots: Bots, **policy: Any) -> tuple[Any, FakeSipCall, MemoryRecorder]:
    recorder, sip = MemoryRecorder(), FakeSipCall()
    task, svc, _ = await inbound(bots, sip, connect(fallback=FALLBACK), recorder)
    reconnect_services(svc, **policy)  # before the call's task first runs and reads it
    await until(lambda: "call.answered" in recorder.kinds())
    return task, sip, recorder


async def test_a_crashed_bot_is_reconnected_with_resumed_from_and_the_call_goes_on() -> None:
    bots = Bots()
    task, sip, recorder = await call_with(bots, attempts=3)
    first = bots.connected[0]
    first.crash(1006)
    second = await bots.wait_connected(2)
    await until(lambda: "call.bot_reconnected" in recorder.kinds())
    assert second.target == BOT and not sip.is_ended
    assert bots.infos[-1].resumed_from == f"MZ-{BOT}" and bots.infos[-1].resume_gap_ms is not None
    wire = sip.media
    assert wire is not None
    wire.caller_says(2)
    assert len(second.audio) == 2  # caller audio goes to the new connection
    event = recorder.last("call.bot_reconnected")
    assert (event.fallback, event.attempts, event.resumed_from) == (False, 1, f"MZ-{BOT}")
    sip.caller_hangs_up()
    done = await completed(recorder, task)
    assert done.stats["bot_reconnects"] == 1
    media = recorder.last_media()
    assert [m.get("resumed_from") for m in media] == [None, f"MZ-{BOT}"]


async def test_after_its_attempts_the_account_default_takes_over() -> None:
    bots = Bots()
    task, sip, recorder = await call_with(bots, attempts=2)
    bots.unreachable[BOT] = ConnectStep.CONNECT  # the bot is gone for good
    bots.connected[0].crash(1011)
    fallback = await bots.wait_connected(2)
    assert fallback.target == FALLBACK
    assert bots.attempts == [BOT, BOT, BOT, FALLBACK]
    await until(lambda: "call.bot_reconnected" in recorder.kinds())
    event = recorder.last("call.bot_reconnected")
    assert (event.fallback, event.attempts) == (True, 3)
    assert callback_payload(event)["fallback"] is True  # type: ignore[index]
    sip.caller_hangs_up()
    await completed(recorder, task)


async def test_with_nothing_to_fall_back_to_the_call_ends() -> None:
    bots = Bots()
    recorder, sip = MemoryRecorder(), FakeSipCall()
    task, svc, _ = await inbound(bots, sip, connect(), recorder)
    reconnect_services(svc, attempts=1)
    await until(lambda: "call.answered" in recorder.kinds())
    bots.unreachable[BOT] = ConnectStep.CONNECT
    bots.connected[0].crash()
    done = await completed(recorder, task)
    assert done.hangup_cause == "NORMAL_CLEARING" and sip.hangups == ["NORMAL_CLEARING"]
    assert "call.bot_reconnected" not in recorder.kinds()


async def test_a_bot_that_hangs_up_is_not_reconnected() -> None:
    bots = Bots()
    task, sip, recorder = await call_with(bots, attempts=3)
    bots.connected[0].hang_up("goodbye")
    await completed(recorder, task)
    assert bots.attempts == [BOT] and sip.hangups == ["NORMAL_CLEARING"]


async def test_the_caller_hears_the_hold_tone_until_the_bot_is_back() -> None:
    bots = Bots()
    task, sip, recorder = await call_with(bots, attempts=3, hold_tone=True)
    gate = bots.hold[BOT] = asyncio.Event()  # the reconnection waits until released
    bots.connected[0].crash()
    wire = sip.media
    assert wire is not None
    await until(lambda: len(bots.attempts) == 2)
    wire.tick(10)
    heard = b"".join(frame or b"" for frame in wire.sent[-10:])
    assert len(heard) == 10 * FRAME_BYTES and len(set(heard)) > 10  # the beep, not silence
    gate.set()
    await bots.wait_connected(2)
    wire.tick(1)
    assert wire.sent[-1] is None  # the new bot's (empty) queue: comfort silence, tone gone
    sip.caller_hangs_up()
    await completed(recorder, task)


async def test_a_caller_who_hangs_up_during_the_gap_ends_the_call_once() -> None:
    bots = Bots()
    task, sip, recorder = await call_with(bots, attempts=3)
    bots.hold[BOT] = asyncio.Event()  # never released
    bots.connected[0].crash()
    await until(lambda: len(bots.attempts) == 2)
    sip.caller_hangs_up()
    await completed(recorder, task)
    assert "call.bot_reconnected" not in recorder.kinds()


def test_the_event_folds_like_a_redirect() -> None:
    event = CallBotReconnected(
        call_uuid=uuid.uuid4(),
        account_id="acc",
        node_id="n",
        media_server=BOT,
        gap_ms=900,
        attempts=2,
    )
    assert fold(event) == (CallStatus.IN_PROGRESS, {"socket_url": BOT}, True)
    payload = callback_payload(event)
    assert payload is not None and payload["call_status"] == "in-progress"
    assert payload["event_type"] == "call.bot_reconnected" and payload["gap_ms"] == 900
