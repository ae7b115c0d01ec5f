"""A bridged call's middle in milliseconds: inbound, originate, bots, redirects, hangups.

`inbound_app`, `Originator`, `CommandHandler`, `LiveCall` and `CallerMedia` run as they do on a
node; the SIP leg, its RTP wire, the bots and the record writer are the in-memory stand-ins of
tests/support/bridge_fakes.py. What each test checks is what a customer sees: the events and
record fields written, what the caller heard, what each bot was sent. The same paths over real
SIP peers and real WebSocket bots are in tests/interop (test_bridge_*.py, test_native_*.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from edge_media.bridge.call_slo import SLO_FIELDS
from edge_media.bridge.commands import CommandHandler
from edge_media.bridge.inbound import inbound_app
from edge_media.bridge.outbound import Originator
from edge_media.drivers.base import ConnectStep
from edge_media.routing.router import CallRoute, Connect, Refuse
from edge_media.rtp.playout import PlayedMark
from shared.commands import Hangup, Originate, Redirect, Transfer
from shared.events import callback_payload
from shared.models import Account, Call, CallStatus, Direction, Trunk
from tests.support.bridge_fakes import FRAME, Bots, FakeSipCall, MemoryRecorder, services

pytestmark = pytest.mark.anyio

BOT = "wss://bot.example.com/stream"
OTHER = "wss://other.example.com/stream"
FALLBACK = "wss://fallback.example.com/stream"


ACCOUNT_ID = "acc_test"


def account() -> Account:
    return Account(account_id=ACCOUNT_ID, name="test", webhook_secret="s" * 32, socket_url=BOT)


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
    """The routing decision, as `CallRouter.decide` returns it; ``gate`` holds it back."""

    def __init__(self, decision: Connect | Refuse) -> None:
        self.decision = decision
        self.gate: asyncio.Event | None = None
        self.asked = asyncio.Event()

    async def decide(self, route: CallRoute, **_: Any) -> Connect | Refuse:
        self.asked.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.decision


def connect(
    target: str = BOT, *, fallback: str | None = None, max_seconds: int | None = None
) -> Connect:
    return Connect(target, max_seconds, fallback, "static", None)


async def until(predicate: Callable[[], bool], seconds: float = 2.0) -> None:
    """Let the call's tasks run until ``predicate`` holds (state spread over several fakes)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def inbound(
    bots: Bots, sip: FakeSipCall, decision: Connect | Refuse, recorder: MemoryRecorder
) -> tuple[asyncio.Task[None], Any, Routing]:
    svc = services(bots, recorder)
    routing = Routing(decision)
    app = inbound_app(sip, route=route(account()), routing=routing, services=svc)  # type: ignore[arg-type]
    return asyncio.ensure_future(app), svc, routing


async def completed(recorder: MemoryRecorder, task: Awaitable[None]) -> Any:
    async with asyncio.timeout(5):
        await task
    assert recorder.kinds().count("call.completed") == 1, recorder.kinds()
    return recorder.last("call.completed")


# --------------------------------------------------------------------------- inbound


async def test_inbound_call_joins_caller_and_bot_both_ways_until_the_bot_hangs_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agera.bridge")
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    task, svc, _ = await inbound(bots, sip, connect(), recorder)
    bot = await bots.wait_connected(1)
    bot.say(3, mark="greeting")  # before the answer: queued, played from the first tick
    await until(lambda: sip.media is not None and "call.answered" in recorder.kinds())
    wire = sip.media
    assert wire is not None
    wire.caller_says(2)
    wire.caller_presses("5")
    wire.tick(2)
    assert bot.marks == []  # the greeting's last frame has not gone out yet
    wire.tick(2)
    assert wire.sent == [FRAME, FRAME, FRAME, None]
    assert bot.marks == [PlayedMark("greeting", 60)]
    assert bot.audio == [FRAME, FRAME] and bot.digits == ["5"]
    bot.hang_up()
    done = await completed(recorder, task)
    assert sip.hangups == ["NORMAL_CLEARING"]
    assert recorder.kinds() == ["call.ringing", "call.answered", "call.completed"]
    assert done.status is CallStatus.COMPLETED and done.hangup_cause == "NORMAL_CLEARING"
    assert done.stats["bot"] == [{"media_in": 2, "target": BOT}]
    (leg,) = recorder.last_media()
    assert leg["driver"] == "websocket" and leg["end_reason"] == "bot closed"
    assert leg["provider_ids"] == {"stream_sid": f"MZ-{BOT}"}
    assert sip.call_uuid not in svc.live
    (setup,) = [r.getMessage() for r in caplog.records if "set up in" in r.getMessage()]
    steps = re.findall(r"([A-Za-z0-9 ]+?) (\d+)(?:, |\))", setup.split("(", 1)[1])
    assert [name for name, _ in steps] == [
        "slot", "record", "routing", "bot", "200 OK"
    ], setup  # fmt: skip


class SlowRingingRecorder(MemoryRecorder):
    """The events queue slow to take `call.ringing` (until ``release`` is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def record(self, event: Any) -> bool:
        if event.type == "call.ringing":
            await self.release.wait()
        return await super().record(event)


async def test_the_answer_does_not_wait_for_call_ringing_but_call_answered_does() -> None:
    bots, recorder, sip = Bots(), SlowRingingRecorder(), FakeSipCall()
    task, _, _ = await inbound(bots, sip, connect(), recorder)
    bot = await bots.wait_connected(1)
    await until(lambda: sip.media is not None)  # answered: 200 OK sent, media attached
    assert recorder.kinds() == []  # call.ringing not queued yet, so no call.answered either
    recorder.release.set()
    await until(lambda: "call.answered" in recorder.kinds())
    assert recorder.kinds() == ["call.ringing", "call.answered"]
    bot.hang_up()
    await completed(recorder, task)


async def test_the_record_and_the_callback_carry_the_calls_slo_figures() -> None:
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    task, svc, _ = await inbound(bots, sip, connect(), recorder)
    bot = await bots.wait_connected(1)
    await until(lambda: sip.media is not None and "call.answered" in recorder.kinds())
    wire = sip.media
    assert wire is not None
    for _ in range(5):
        wire.caller_says(1)  # five caller packets, each timed to the bot's write
    bot.hang_up()
    done = await completed(recorder, task)
    slo = done.stats["slo"]
    assert set(slo) == set(SLO_FIELDS)
    assert slo["rtp_to_bot_ms_p50"] is not None and slo["rtp_to_bot_ms_p99"] is not None
    assert 0 < slo["rtp_to_bot_ms_p50"] <= slo["rtp_to_bot_ms_p99"]
    assert slo["loss_pct"] == 0.0
    # This wire measures nothing of its own (a provider's stream is such a wire): null, not 0.
    for name in ("bot_to_wire_ms_p99", "pacing_error_ms_p99", "underruns", "barge_in_stop_ms_max"):
        assert slo[name] is None, name
    assert slo["jitter_ms"] is None and slo["bot_rtt_ms"] is None
    assert done.stats["pacing_error_p99_ms"] == 0.4  # no per-call figure: the node's, as before
    payload = callback_payload(done)
    assert payload is not None and payload["slo"] == slo
    metrics = svc.metrics.figures
    assert metrics["rtp_loss_pct"] == [0.0]
    assert metrics["rtp_to_bot_ms"] == [slo["rtp_to_bot_ms_p99"]]
    assert "bot_to_wire_ms" not in metrics and "barge_in_stop_ms" not in metrics


async def test_unreachable_bot_falls_back_and_the_record_keeps_both_attempts() -> None:
    bots = Bots(unreachable={BOT: ConnectStep.HANDSHAKE})
    recorder, sip = MemoryRecorder(), FakeSipCall()
    task, _, _ = await inbound(bots, sip, connect(fallback=FALLBACK), recorder)
    bot = await bots.wait_connected(1)
    assert bot.target == FALLBACK
    await until(lambda: "call.answered" in recorder.kinds())
    sip.caller_hangs_up()
    done = await completed(recorder, task)
    assert done.status is CallStatus.COMPLETED and bot.stopped == "call ended"
    failed, used = recorder.last_media()
    assert failed["failed_step"] == "handshake" and "ended_at" in failed
    assert used["target"] == FALLBACK and used["end_reason"] == "call ended"


async def test_no_bot_reachable_rejects_the_call_with_480() -> None:
    bots = Bots(unreachable={BOT: ConnectStep.CONNECT, FALLBACK: ConnectStep.DNS})
    recorder, sip = MemoryRecorder(), FakeSipCall()
    task, _, _ = await inbound(bots, sip, connect(fallback=FALLBACK), recorder)
    done = await completed(recorder, task)
    assert sip.rejected == (480, "Temporarily Unavailable", "NORMAL_TEMPORARY_FAILURE")
    assert sip.media is None and "call.answered" not in recorder.kinds()
    assert done.status is CallStatus.FAILED and done.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert [leg["failed_step"] for leg in recorder.last_media()] == ["connect", "dns"]


async def test_routing_refusal_rejects_with_its_status_and_no_bot_is_asked() -> None:
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    refuse = Refuse(403, "Forbidden", "CALL_REJECTED", "webhook said hangup")
    task, _, _ = await inbound(bots, sip, refuse, recorder)
    done = await completed(recorder, task)
    assert sip.rejected == (403, "Forbidden", "CALL_REJECTED") and bots.attempts == []
    assert done.status is CallStatus.FAILED and done.hangup_cause == "CALL_REJECTED"


async def test_caller_gone_while_routing_ends_without_a_bot() -> None:
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    task, _, routing = await inbound(bots, sip, connect(), recorder)
    routing.gate = asyncio.Event()
    await asyncio.wait_for(routing.asked.wait(), 2)
    sip._end("ORIGINATOR_CANCEL", 487, "remote")
    done = await completed(recorder, task)
    assert bots.attempts == [] and sip.media is None
    assert done.status is CallStatus.CANCELED and done.hangup_cause == "ORIGINATOR_CANCEL"


async def test_caller_gone_while_the_bot_connects_stops_nothing_and_answers_nothing() -> None:
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    bots.hold[BOT] = asyncio.Event()
    task, _, _ = await inbound(bots, sip, connect(), recorder)
    await until(lambda: bots.attempts == [BOT])
    sip._end("ORIGINATOR_CANCEL", 487, "remote")
    done = await completed(recorder, task)
    assert sip.media is None and done.status is CallStatus.CANCELED


async def test_session_limit_hangs_up_the_caller() -> None:
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    task, _, _ = await inbound(bots, sip, connect(max_seconds=1), recorder)
    bot = await bots.wait_connected(1)
    await until(lambda: "call.answered" in recorder.kinds())
    done = await completed(recorder, task)  # a second later
    assert sip.hangups == ["NORMAL_CLEARING"] and bot.stopped == "call ended"
    assert done.status is CallStatus.COMPLETED and done.duration <= 2


# --------------------------------------------------------------------------- redirect


async def answered_call(
    bots: Bots, recorder: MemoryRecorder
) -> tuple[asyncio.Task[None], Any, FakeSipCall, CommandHandler]:
    sip = FakeSipCall()
    task, svc, _ = await inbound(bots, sip, connect(), recorder)
    await until(lambda: "call.answered" in recorder.kinds())
    handler = CommandHandler(None, services=svc, accounts=_no_account, trunk_for=_no_trunk)  # type: ignore[arg-type]
    return task, svc, sip, handler


async def _no_account(account_id: str) -> None:
    return None


async def _no_trunk(account: Any, trunk_id: str | None) -> None:
    return None


async def run_command(handler: CommandHandler, sent: Hangup | Redirect) -> None:
    """Hand ``sent`` to the node's handler and wait for the work it started (a redirect)."""
    await handler.handle(sent)
    if handler.tasks:
        await asyncio.wait_for(asyncio.gather(*handler.tasks), 5)


def redirect(sip: FakeSipCall, target: str) -> Redirect:
    return Redirect(call_uuid=sip.call_uuid, account_id=ACCOUNT_ID, media_server=target)


async def test_redirect_moves_the_call_to_the_new_bot_and_drops_the_old_ones_audio() -> None:
    bots, recorder = Bots(), MemoryRecorder()
    task, _, sip, handler = await answered_call(bots, recorder)
    old = bots.connected[0]
    wire = sip.media
    assert wire is not None
    old.say(50, mark="long")  # a second of audio the caller will not hear the end of
    wire.tick(2)
    await run_command(handler, redirect(sip, OTHER))
    new = await bots.wait_connected(2)
    assert old.stopped == "redirected"
    new.say(1, mark="hello")
    wire.caller_says(1)
    wire.tick(2)
    assert wire.sent[-2:] == [FRAME, None]  # the new bot's frame, then silence
    assert new.marks == [PlayedMark("hello", 20)] and old.marks == []
    assert new.audio == [FRAME] and old.audio == []
    redirected = recorder.last("call.redirected")
    assert redirected.media_server == OTHER and redirected.driver == "websocket"
    assert [leg["target"] for leg in recorder.last_media()] == [BOT, OTHER]
    assert recorder.last_media()[0]["end_reason"] == "redirected"
    new.hang_up()
    done = await completed(recorder, task)
    assert [entry["target"] for entry in done.stats["bot"]] == [BOT, OTHER]


async def test_failed_redirect_keeps_the_old_bot_and_records_the_attempt() -> None:
    bots, recorder = Bots(unreachable={OTHER: ConnectStep.TLS}), MemoryRecorder()
    task, _, sip, handler = await answered_call(bots, recorder)
    old = bots.connected[0]
    await run_command(handler, redirect(sip, OTHER))
    assert old.stopped is None and "call.redirected" not in recorder.kinds()
    current, attempt = recorder.last_media()
    assert current["target"] == BOT and "ended_at" not in current
    assert attempt["failed_step"] == "tls"
    wire = sip.media
    assert wire is not None
    wire.caller_says(1)
    assert old.audio == [FRAME]
    sip.caller_hangs_up()
    await completed(recorder, task)


async def test_redirect_before_the_bot_connected_connects_there_instead() -> None:
    bots, recorder, sip = Bots(), MemoryRecorder(), FakeSipCall()
    task, svc, routing = await inbound(bots, sip, connect(), recorder)
    routing.gate = asyncio.Event()
    await asyncio.wait_for(routing.asked.wait(), 2)
    handler = CommandHandler(None, services=svc, accounts=_no_account, trunk_for=_no_trunk)  # type: ignore[arg-type]
    await run_command(handler, redirect(sip, OTHER))
    routing.gate.set()
    bot = await bots.wait_connected(1)
    assert bots.attempts == [OTHER] and bot.target == OTHER
    sip.caller_hangs_up()
    await completed(recorder, task)


async def test_hangup_command_ends_an_answered_call_once() -> None:
    bots, recorder = Bots(), MemoryRecorder()
    task, _, sip, handler = await answered_call(bots, recorder)
    command = Hangup(call_uuid=sip.call_uuid, account_id=ACCOUNT_ID, cause="NORMAL_CLEARING")
    await run_command(handler, command)
    await run_command(handler, command)  # a repeat finds the call gone or ended: nothing more
    done = await completed(recorder, task)
    assert sip.hangups == ["NORMAL_CLEARING"] and done.status is CallStatus.COMPLETED


# --------------------------------------------------------------------------- originate


class FakeUa:
    def __init__(self) -> None:
        self.accepting = True
        self.calls: list[FakeSipCall] = []
        self.invited = asyncio.Event()

    def invite(self, target: str, **_: Any) -> FakeSipCall:
        call = FakeSipCall(dialed=target)
        self.calls.append(call)
        self.invited.set()
        return call


def originate_setup(
    bots: Bots, decision: Connect | Refuse
) -> tuple[Originator, FakeUa, MemoryRecorder, Routing, Originate, Any]:
    acc = account()
    command = Originate(
        call_uuid=uuid.uuid4(),
        account_id=acc.account_id,
        destination_number="+15550003333",
        caller_id_number="+15550004444",
        ring_timeout=5,
    )
    queued = Call(
        call_uuid=command.call_uuid,
        account_id=acc.account_id,
        direction=Direction.OUTBOUND,
        from_number="+15550004444",
        to_number="+15550003333",
        status=CallStatus.QUEUED,
    )
    recorder = MemoryRecorder(queued=[queued])
    svc = services(bots, recorder)
    routing = Routing(decision)
    trunk = Trunk(account_id=acc.account_id, name="carrier", host="127.0.0.1", port=5099)

    async def accounts(account_id: str) -> Account:
        return acc

    async def trunk_for(account: Account, trunk_id: str | None) -> Trunk:
        return trunk

    ua = FakeUa()
    originator = Originator(
        ua,  # type: ignore[arg-type]
        services=svc,
        routing=routing,  # type: ignore[arg-type]
        accounts=accounts,
        trunk_for=trunk_for,
    )
    return originator, ua, recorder, routing, command, svc


async def test_originate_dials_the_trunk_and_bridges_on_answer() -> None:
    bots = Bots()
    originator, ua, recorder, _, command, _ = originate_setup(bots, connect())
    await originator.handle(command)
    await asyncio.wait_for(ua.invited.wait(), 2)
    (callee,) = ua.calls
    assert callee.request_user == "sip:+15550003333@127.0.0.1:5099"
    callee.far_end_rings()
    await until(lambda: "call.ringing" in recorder.kinds())
    assert bots.attempts == []  # the bot connects on answer, as <Connect><Stream> does
    callee.far_end_answers()
    bot = await bots.wait_connected(1)
    await until(lambda: "call.answered" in recorder.kinds())
    bot.hang_up()
    (task,) = originator.tasks
    done = await completed(recorder, task)
    assert recorder.kinds() == ["call.ringing", "call.answered", "call.completed"]
    assert done.status is CallStatus.COMPLETED and callee.hangups == ["NORMAL_CLEARING"]


async def test_hangup_command_before_dialing_cancels_without_an_invite() -> None:
    bots = Bots()
    originator, ua, recorder, routing, command, svc = originate_setup(bots, connect())
    routing.gate = asyncio.Event()
    await originator.handle(command)
    await asyncio.wait_for(routing.asked.wait(), 2)
    handler = CommandHandler(None, services=svc, accounts=_no_account, trunk_for=_no_trunk)  # type: ignore[arg-type]
    await run_command(handler, Hangup(call_uuid=command.call_uuid, account_id=command.account_id))
    routing.gate.set()
    (task,) = originator.tasks
    done = await completed(recorder, task)
    assert ua.calls == [] and bots.attempts == []
    assert done.status is CallStatus.CANCELED and done.hangup_cause == "ORIGINATOR_CANCEL"


async def test_originate_the_carrier_gives_up_on_ends_no_answer_without_a_bot() -> None:
    bots = Bots()
    originator, ua, recorder, _, command, _ = originate_setup(bots, connect())
    await originator.handle(command)
    await asyncio.wait_for(ua.invited.wait(), 2)
    (callee,) = ua.calls
    callee.far_end_rings()
    await until(lambda: "call.ringing" in recorder.kinds())
    callee._end("NO_ANSWER", 480, "remote")
    (task,) = originator.tasks
    done = await completed(recorder, task)
    assert done.status is CallStatus.NO_ANSWER and done.sip_status == 480
    assert bots.attempts == [] and callee.hangups == []


async def test_draining_node_hands_originate_back_to_the_queue() -> None:
    from edge_media.errors import RetryLater

    bots = Bots()
    originator, ua, recorder, _, command, _ = originate_setup(bots, connect())
    ua.accepting = False
    with pytest.raises(RetryLater) as raised:
        await originator.handle(command)
    assert raised.value.delay_seconds == 0 and recorder.events == []


async def test_unanswered_originate_is_canceled_at_the_ring_timeout() -> None:
    bots = Bots()
    originator, ua, recorder, _, command, _ = originate_setup(bots, connect())
    # The API accepts 5-300 s; the bridge's timer is the same for any value.
    quick = Originate.model_construct(**{**command.model_dump(), "ring_timeout": 0.05})
    await originator.handle(quick)
    await asyncio.wait_for(ua.invited.wait(), 2)
    (callee,) = ua.calls
    callee.far_end_rings()
    (task,) = originator.tasks
    done = await completed(recorder, task)
    assert callee.hangups == ["NO_ANSWER"] and bots.attempts == []
    assert recorder.kinds() == ["call.ringing", "call.completed"]
    assert done.status is CallStatus.NO_ANSWER and done.hangup_cause == "NO_ANSWER"
    assert done.duration == 0 and done.answered_at is None


async def test_commands_for_a_call_the_node_does_not_own_are_dropped() -> None:
    bots, recorder = Bots(), MemoryRecorder()
    task, _, sip, handler = await answered_call(bots, recorder)
    stranger = uuid.uuid4()
    for stray in (
        Hangup(call_uuid=stranger, account_id=ACCOUNT_ID),
        Redirect(call_uuid=stranger, account_id=ACCOUNT_ID, media_server=OTHER),
        Transfer(call_uuid=stranger, account_id=ACCOUNT_ID, destination="sip:x@127.0.0.1"),
    ):
        await handler.handle(stray)
    assert handler.tasks == set() and bots.attempts == [BOT]
    assert recorder.kinds() == ["call.ringing", "call.answered"]  # nothing for the stranger
    assert sip.hangups == [] and not sip.is_ended  # the live call is untouched
    sip.caller_hangs_up()
    await completed(recorder, task)
