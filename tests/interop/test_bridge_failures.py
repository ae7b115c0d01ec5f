"""Routing webhooks and the ways a bridged call can fail, end to end.

sipp (a carrier) → in-process edge node (control plane at moto) → a customer's routing webhook
(a real HTTP server, `tests.edge_media.routing.routing_peer`) → StrictTwilioBot. Every call that
reached routing must end with a terminal record and a ``call.completed`` event, whatever went
wrong (webhook slow, broken or down, bot unreachable, crashing or babbling, caller cancelling,
node shutting down): that is the contract users build billing and dashboards on, so each test
reads both back. Calls refused before routing (unknown number, suspended account) leave none.

SIP facts are read from sipp's own traces: the final status of a refused INVITE, the
``Reason: Q.850;cause=N`` header (RFC 3326) of a rejection or of the node's BYE.
"""

from __future__ import annotations

import base64
import gc
import json
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import boto3
import pytest

from shared.models import Account, AccountStatus, Call, CallStatus, Route
from shared.signing import canonical_json
from tests.edge_media.routing.routing_peer import Reply, WebhookPeer, closed_port
from tests.interop.capture import read_rtp
from tests.interop.gateway import (
    add_number,
    calls_to,
    event_types,
    events_for,
    new_number,
    node_address,
    running_gateway,
    wait_record,
)
from tests.interop.peers import Peers
from tests.interop.sipp import SippResult, SippRun, call_timings
from tests.support.twilio_bot import BotSession, StrictTwilioBot

pytestmark = pytest.mark.anyio

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CALLER_NUMBER = "+155501001"  # sipp's From user: +15550100[call_number], one call
SESSION_LIMIT = 3  # seconds, the routing answer's "timeout"
ROUTE_PATH = "/route"
ULAW_20MS = 160
SEED_PAYLOAD_KEYS = {
    "event_type",
    "call_uuid",
    "timestamp",
    "direction",
    "caller_number",
    "destination_number",
    "account_id",
    "request_id",
}
EVENTS_ANSWERED = ["call.ringing", "call.answered", "call.completed"]
EVENTS_UNANSWERED = ["call.ringing", "call.completed"]
REASON_HEADER = re.compile(r"^Reason:\s*Q\.850;cause=(\d+)", re.IGNORECASE | re.MULTILINE)


# --------------------------------------------------------------------------- helpers


def tenant(
    repo: Any,
    *,
    default_socket_url: str | None = None,
    status: AccountStatus = AccountStatus.ACTIVE,
) -> Account:
    """An account with an optional default bot (``Account.socket_url``)."""
    account = Account(
        name="failure test",
        webhook_secret=secrets.token_hex(16),
        socket_url=default_socket_url,
        status=status,
    )
    repo.put(account)
    return account


def caller(peers: Peers, node: Any, scenario: str, number: str, **options: Any) -> SippRun:
    """A sipp caller of one call from this file's scenarios (or the shared ones)."""
    path = SCENARIOS / scenario
    return peers.sipp(
        str(path) if path.is_file() else scenario,
        remote=node_address(node),
        service=number,
        calls=1,
        timeout_s=30,
        **options,
    )


def sip_messages(run: SippRun) -> list[tuple[bool, str]]:
    """Every SIP message in sipp's -trace_msg file: (received, text), in order."""
    text = run.messages_path.read_text(errors="replace")
    found = []
    for block in re.split(r"^-{20,}.*$", text, flags=re.MULTILINE):
        head, _, message = block.strip().partition("\n")
        if " message " not in head:
            continue
        found.append(("received" in head, message.strip()))
    return found


def received(run: SippRun, first_line: str) -> list[str]:
    """The messages sipp received whose first line starts with ``first_line``."""
    return [text for got, text in sip_messages(run) if got and text.startswith(first_line)]


def q850_causes(messages: list[str]) -> list[int]:
    causes = []
    for text in messages:
        match = REASON_HEADER.search(text)
        causes.append(int(match.group(1)) if match else -1)
    return causes


def final_responses(result: SippResult) -> list[str]:
    """Status lines of the final responses to the INVITE that sipp received."""
    return [
        m.first_line.strip()
        for m in result.messages
        if not m.sent and m.cseq_method == "INVITE" and (m.status or 0) >= 200
    ]


def no_events(queue_url: str, polls: int = 2) -> list[dict[str, Any]]:
    """Whatever the node published (there should be nothing)."""
    sqs = boto3.client("sqs")
    found = []
    for _ in range(polls):
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        found += [json.loads(m["Body"]) for m in reply.get("Messages", [])]
    return found


def open_http_sessions() -> list[aiohttp.ClientSession]:
    return [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]


def completed_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    done = [event for event in events if event["type"] == "call.completed"]
    assert len(done) == 1, events
    return done[0]


async def run_caller(run: SippRun) -> SippResult:
    return await anyio.to_thread.run_sync(run.run)


class Background:
    """A sipp run in a worker thread while the test drives the bot."""

    def __init__(self, run: SippRun) -> None:
        self.run = run
        self.result: SippResult | None = None
        self._done = anyio.Event()

    async def _go(self) -> None:
        try:
            # abandon_on_cancel: a failing test must not wait out sipp's timeout (the peers
            # fixture stops sipp at teardown).
            self.result = await anyio.to_thread.run_sync(self.run.run, abandon_on_cancel=True)
        finally:
            self._done.set()

    async def wait(self, seconds: float = 40.0) -> SippResult:
        with anyio.fail_after(seconds):
            await self._done.wait()
        assert self.result is not None
        return self.result


def call_uuid_of(session: BotSession) -> str:
    assert session.start is not None
    return str(session.start["start"]["customParameters"]["call_uuid"])


def media_after(session: BotSession, at: float) -> int:
    """How many caller media messages the bot received after loop time ``at``."""
    return sum(
        1
        for item in session.received
        if item.at > at and item.message and item.message.get("event") == "media"
    )


def assert_answered_record(
    record: Call, node_id: str, events: list[dict[str, Any]], *, cause: str = "NORMAL_CLEARING"
) -> None:
    assert record.status is CallStatus.COMPLETED, record
    assert record.hangup_cause == cause
    assert record.node_id == node_id and record.answered_at is not None
    assert event_types(events) == EVENTS_ANSWERED, events
    done = completed_event(events)
    assert done["status"] == "completed" and done["hangup_cause"] == cause, done


def assert_refused_record(
    record: Call,
    events: list[dict[str, Any]],
    *,
    status: CallStatus,
    cause: str,
    sip_status: int,
) -> None:
    assert record.status is status, record
    assert record.hangup_cause == cause and record.sip_status == sip_status, record
    assert record.answered_at is None and record.duration in (0, None), record
    assert event_types(events) == EVENTS_UNANSWERED, events
    done = completed_event(events)
    assert done["status"] == status.value and done["hangup_cause"] == cause, done


# --------------------------------------------------------------------------- 1. connect


async def test_webhook_connect_bridges_and_the_session_limit_hangs_up(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        account = tenant(repo)
        with WebhookPeer(account.webhook_secret) as hook:
            hook.reply = Reply.json(
                {"action": "connect", "socket_url": bot.url, "timeout": SESSION_LIMIT}
            )
            number = add_number(repo, account, webhook_url=hook.url(ROUTE_PATH))
            async with running_gateway() as node:
                run = caller(peers, node, "uac_talk_until_bye.xml", number)
                result = await run_caller(run)
                session = await bot.next_session()
                await session.wait_closed()
                call_uuid = call_uuid_of(session)
                record = await wait_record(repo, call_uuid)
                events = await events_for(node.settings.events_queue_url, call_uuid)
            requests = list(hook.received)

    assert result.ok, result.describe()
    # The node hung up (its BYE, cause 16 NORMAL_CLEARING) once the session limit passed.
    (timing,) = call_timings(result.messages)
    assert timing.final_status == 200 and timing.bye_by_us is False, timing
    assert timing.acked_at is not None and timing.bye_at is not None
    assert SESSION_LIMIT - 0.2 <= timing.bye_at - timing.acked_at <= SESSION_LIMIT + 2.5, timing
    assert q850_causes(received(run, "BYE ")) == [16]
    # The routing request: the seed's headers and payload, signed both ways a customer checks.
    assert len(requests) == 1, requests
    request = requests[0]
    assert request.path == ROUTE_PATH
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-call-uuid"] == call_uuid
    assert request.headers["user-agent"] == "VoiceAPI/1.0"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", request.headers["x-signature"])
    assert request.raw_signature_ok and request.guide_signature_ok
    payload = json.loads(request.body)
    assert request.body == canonical_json(payload)  # the bytes signed are the bytes sent
    assert set(payload) == SEED_PAYLOAD_KEYS, payload
    assert payload["event_type"] == "call.routing_request"
    assert payload["direction"] == "inbound"
    assert payload["caller_number"] == CALLER_NUMBER
    assert payload["destination_number"] == number
    assert payload["account_id"] == account.account_id
    assert payload["call_uuid"] == call_uuid == str(record.call_uuid)
    assert re.fullmatch(r"req_[0-9a-f]+", payload["request_id"]), payload
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", payload["timestamp"]), payload
    # The bot had a whole, well-formed stream that the node ended (stop, close 1000).
    assert session.violations == [], session.violations
    assert session.stop is not None and session.close_code == 1000
    assert len(session.audio) >= (SESSION_LIMIT - 1) * 8000  # caller audio reached the bot
    # Record and events.
    assert_answered_record(record, node.node_id, events)
    assert record.duration is not None and SESSION_LIMIT <= record.duration <= SESSION_LIMIT + 3


# --------------------------------------------------------------------------- 2. hangup


async def test_webhook_hangup_answers_603_with_q850_cause_21(
    peers: Peers, aws: Any, repo: Any
) -> None:
    account = tenant(repo)
    with WebhookPeer(account.webhook_secret) as hook:
        hook.reply = Reply.json({"action": "hangup", "reason": "closed"})
        number = add_number(repo, account, webhook_url=hook.url(ROUTE_PATH))
        async with running_gateway() as node:
            run = caller(peers, node, "uac_expect_reject.xml", number)
            result = await run_caller(run)
            assert len(hook.received) == 1
            call_uuid = hook.received[0].headers["x-call-uuid"]
            record = await wait_record(repo, call_uuid)
            events = await events_for(node.settings.events_queue_url, call_uuid)

    assert result.ok, result.describe()
    assert final_responses(result) == ["SIP/2.0 603 Decline"]
    assert q850_causes(received(run, "SIP/2.0 603")) == [21]
    assert_refused_record(
        record, events, status=CallStatus.FAILED, cause="CALL_REJECTED", sip_status=603
    )


# --------------------------------------------------------------------------- 3. webhook fails


def break_webhook(hook: WebhookPeer, how: str, wrong_bot: str) -> str:
    """Make ``hook`` fail ``how``; returns the webhook URL to provision.

    Each broken answer would route elsewhere if the node used it: the slow one answers hangup
    (after the deadline), the 500 carries a connect to ``wrong_bot``.
    """
    connect_wrong = json.dumps({"action": "connect", "socket_url": wrong_bot}).encode()
    if how == "timeout":
        hook.reply = Reply.json({"action": "hangup", "reason": "too late"}, delay=2.0)
    elif how == "http_500":
        hook.reply = Reply(status=500, body=connect_wrong)
    return hook.url(ROUTE_PATH)


# One failure shape per test on the wire; every shape (timeout, HTTP 500, bad JSON, down) and its
# fallback is tested against a real HTTP server in tests/edge_media/routing (test_webhook.py,
# test_router.py), and the bridge's fallback in tests/edge_media/bridge/test_bridged_call.py.
@pytest.mark.parametrize("how", ["timeout"])
async def test_failed_webhook_falls_back_to_the_account_default(
    peers: Peers, aws: Any, repo: Any, how: str
) -> None:
    async with StrictTwilioBot(echo=True) as default_bot, StrictTwilioBot(echo=True) as wrong_bot:
        account = tenant(repo, default_socket_url=default_bot.url)
        with WebhookPeer(account.webhook_secret) as hook:
            number = add_number(repo, account, webhook_url=break_webhook(hook, how, wrong_bot.url))
            async with running_gateway(routing_webhook_timeout_seconds=0.5) as node:
                run = caller(peers, node, "uac_talk_then_bye.xml", number, duration_ms=1500)
                result = await run_caller(run)
                session = await default_bot.next_session()
                await session.wait_closed()
                call_uuid = call_uuid_of(session)
                record = await wait_record(repo, call_uuid)
                events = await events_for(node.settings.events_queue_url, call_uuid)
            asked = len(hook.received)

    assert result.ok, result.describe()
    assert final_responses(result) == ["SIP/2.0 200 OK"]
    assert asked == (0 if how == "down" else 1)
    assert wrong_bot.requests == []
    assert session.violations == [], session.violations
    assert session.stop is not None and session.close_code == 1000
    assert len(session.audio) > 0
    assert_answered_record(record, node.node_id, events)
    assert record.to_number == number


@pytest.mark.parametrize("how", ["http_500"])
async def test_failed_webhook_without_a_default_answers_480(
    peers: Peers, aws: Any, repo: Any, how: str
) -> None:
    async with StrictTwilioBot(echo=True) as wrong_bot:
        account = tenant(repo)
        with WebhookPeer(account.webhook_secret) as hook:
            number = add_number(repo, account, webhook_url=break_webhook(hook, how, wrong_bot.url))
            async with running_gateway(routing_webhook_timeout_seconds=0.5) as node:
                run = caller(peers, node, "uac_expect_reject.xml", number)
                result = await run_caller(run)
                (record_item,) = calls_to(repo, number)
                call_uuid = record_item["call_uuid"]["S"]
                record = await wait_record(repo, call_uuid)
                events = await events_for(node.settings.events_queue_url, call_uuid)
            asked = len(hook.received)

    assert result.ok, result.describe()
    assert final_responses(result) == ["SIP/2.0 480 Temporarily Unavailable"]
    assert q850_causes(received(run, "SIP/2.0 480")) == [41]
    assert asked == (0 if how == "down" else 1)
    assert wrong_bot.requests == []
    assert_refused_record(
        record,
        events,
        status=CallStatus.FAILED,
        cause="NORMAL_TEMPORARY_FAILURE",
        sip_status=480,
    )


# --------------------------------------------------------------------------- 4. bot unreachable


def dead_bot_url() -> str:
    return f"ws://127.0.0.1:{closed_port()}/twilio"


# A refusing, silent or stalling bot is each told apart in tests/edge_media/drivers
# (test_ws_client.py, test_twilio_driver.py); the bridge's fallback on any of them is in
# tests/edge_media/bridge/test_bridged_call.py. On the wire: the bot the webhook picks refuses.
async def test_unreachable_bot_falls_back_to_the_account_default(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with (
        StrictTwilioBot(echo=True) as default_bot,
        StrictTwilioBot(refuse_status=503) as bad,
    ):
        account = tenant(repo, default_socket_url=default_bot.url)
        with WebhookPeer(account.webhook_secret) as hook:
            hook.reply = Reply.json({"action": "connect", "socket_url": bad.url})
            number = add_number(repo, account, webhook_url=hook.url(ROUTE_PATH))
            async with running_gateway(bot_connect_timeout_seconds=0.5) as node:
                run = caller(peers, node, "uac_talk_then_bye.xml", number, duration_ms=1500)
                result = await run_caller(run)
                session = await default_bot.next_session()
                await session.wait_closed()
                call_uuid = call_uuid_of(session)
                record = await wait_record(repo, call_uuid)
                events = await events_for(node.settings.events_queue_url, call_uuid)
            asked = len(hook.received)

    assert result.ok, result.describe()
    assert final_responses(result) == ["SIP/2.0 200 OK"]
    assert asked == 1
    assert len(bad.requests) == 1  # the refusing bot was asked once, then the default
    assert bad.sessions == []
    assert session.violations == [], session.violations
    assert session.stop is not None and session.close_code == 1000
    assert_answered_record(record, node.node_id, events)
    assert record.to_number == number


@pytest.mark.parametrize("default", ["dead_default"])  # no default: test_bridged_call.py
async def test_unreachable_bot_without_a_working_default_answers_480(
    peers: Peers, aws: Any, repo: Any, default: str
) -> None:
    async with StrictTwilioBot(refuse_status=503) as refusing:
        account = tenant(
            repo, default_socket_url=dead_bot_url() if default == "dead_default" else None
        )
        number = add_number(repo, account, Route(socket_url=refusing.url))
        async with running_gateway() as node:
            run = caller(peers, node, "uac_expect_reject.xml", number)
            result = await run_caller(run)
            (record_item,) = calls_to(repo, number)
            call_uuid = record_item["call_uuid"]["S"]
            record = await wait_record(repo, call_uuid)
            events = await events_for(node.settings.events_queue_url, call_uuid)

    assert result.ok, result.describe()
    assert final_responses(result) == ["SIP/2.0 480 Temporarily Unavailable"]
    assert q850_causes(received(run, "SIP/2.0 480")) == [41]
    assert len(refusing.requests) == 1 and refusing.sessions == []
    assert_refused_record(
        record,
        events,
        status=CallStatus.FAILED,
        cause="NORMAL_TEMPORARY_FAILURE",
        sip_status=480,
    )


# --------------------------------------------------------------------------- 5. bot ends mid-call


@pytest.mark.parametrize(
    "how", ["crash"]
)  # a clean close: test_twilio_driver.py, test_bridged_call.py
async def test_bot_gone_mid_call_hangs_up_the_caller(
    peers: Peers, aws: Any, repo: Any, how: str
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        account = tenant(repo)
        number = add_number(repo, account, Route(socket_url=bot.url))
        # Failover off: a crashed bot then ends the call (failover: tests/interop/test_bot_failover.py).
        async with (
            running_gateway(bot_reconnect_attempts=0) as node,
            anyio.create_task_group() as tasks,
        ):
            run = caller(peers, node, "uac_talk_until_bye.xml", number)
            sipp = Background(run)
            tasks.start_soon(sipp._go)
            session = await bot.next_session()
            await session.wait_for(lambda: len(session.audio) >= 8000, "1 s of caller audio")
            if how == "crash":
                session.abort()
            else:
                await session.close(1000, "goodbye")
            result = await sipp.wait()
            call_uuid = call_uuid_of(session)
            record = await wait_record(repo, call_uuid)
            events = await events_for(node.settings.events_queue_url, call_uuid)

    assert result.ok, result.describe()
    (timing,) = call_timings(result.messages)
    assert timing.final_status == 200 and timing.bye_by_us is False, timing
    assert q850_causes(received(run, "BYE ")) == [16]
    assert session.violations == [], session.violations
    assert session.stop is None  # the bot left first: nobody to send stop to
    assert_answered_record(record, node.node_id, events)


# --------------------------------------------------------------------------- 6. bot babbles


def junk_frames(stream_sid: str) -> list[str | bytes]:
    """What a buggy bot sends: a binary frame, bad JSON, an unknown event, another stream."""
    stranger = base64.b64encode(bytes([0x11]) * ULAW_20MS * 25).decode()
    return [
        b"\x00\x01 not a text frame",
        '{"event": "media", "streamSid": ',
        json.dumps({"event": "dance", "streamSid": stream_sid}),
        json.dumps(
            {"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": stranger}}
        ),
    ]


async def test_malformed_bot_messages_are_ignored_and_the_call_goes_on(
    peers: Peers, aws: Any, repo: Any
) -> None:
    good = bytes([0x22]) * ULAW_20MS * 25  # half a second the caller must hear
    async with StrictTwilioBot() as bot:
        account = tenant(repo)
        number = add_number(repo, account, Route(socket_url=bot.url))
        async with running_gateway() as node:
            run = caller(peers, node, "uac_talk_then_bye.xml", number, duration_ms=4000)
            capture = peers.capture("babble", ports=[node.endpoint.local_addr[1], run.media_port])
            await anyio.to_thread.run_sync(capture.start)
            async with anyio.create_task_group() as tasks:
                sipp = Background(run)
                tasks.start_soon(sipp._go)
                session = await bot.next_session()
                await session.wait_for(lambda: len(session.audio) >= 4000, "the call flowing")
                assert session.stream_sid is not None
                for frame in junk_frames(session.stream_sid):
                    await session.send_raw(frame)
                loop_now = anyio.current_time()
                await session.send_media(good)
                await session.send_mark("after-junk")
                await session.wait_for(lambda: bool(session.mark_echoes), "mark echo", 5.0)
                result = await sipp.wait()
            await anyio.to_thread.run_sync(capture.stop)
            await session.wait_closed()
            call_uuid = call_uuid_of(session)
            record = await wait_record(repo, call_uuid)
            events = await events_for(node.settings.events_queue_url, call_uuid)

    # The caller ended the call (its BYE after 4 s); the node never hung up on the junk.
    assert result.ok, result.describe()
    (timing,) = call_timings(result.messages)
    assert timing.final_status == 200 and timing.bye_by_us is True, timing
    # Caller → bot went on after the junk; bot → caller too: the mark came back once played.
    assert media_after(session, loop_now) >= 50, media_after(session, loop_now)
    assert [name for name, _ in session.mark_echoes] == ["after-junk"]
    assert session.violations == [], session.violations
    assert session.stop is not None and session.close_code == 1000
    # On the wire: the good audio reached the caller, the other stream's never did.
    packets = read_rtp(capture.path, sip_ports=[node.endpoint.local_addr[1]])
    to_caller = [p for p in packets if p.dst[1] == run.media_port and p.src[1] != run.media_port]
    payloads = [p.payload for p in to_caller]
    assert payloads.count(bytes([0x22]) * ULAW_20MS) == 25, len(to_caller)
    assert bytes([0x11]) * ULAW_20MS not in payloads
    # The record: a normal end, and the driver counted the four ignored messages.
    assert_answered_record(record, node.node_id, events)
    assert [bot_stats["ignored"] for bot_stats in record.stats["bot"]] == [4], record.stats
    assert record.stats["bot"][0]["marks_echoed"] == 1


# --------------------------------------------------------------------------- 7. CANCEL


async def test_cancel_while_the_webhook_thinks(peers: Peers, aws: Any, repo: Any) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        account = tenant(repo)
        with WebhookPeer(account.webhook_secret) as hook:
            # Would connect, but only after 2 s: the caller gives up 1 s after the ringing.
            hook.reply = Reply.json({"action": "connect", "socket_url": bot.url}, delay=2.0)
            number = add_number(repo, account, webhook_url=hook.url(ROUTE_PATH))
            async with running_gateway(routing_webhook_timeout_seconds=3.0) as node:
                run = caller(peers, node, "uac_cancel.xml", number, duration_ms=1000)
                result = await run_caller(run)  # ends ~4 s after the 487: the answer came by then
                assert len(hook.received) == 1
                call_uuid = hook.received[0].headers["x-call-uuid"]
                record = await wait_record(repo, call_uuid)
                events = await events_for(node.settings.events_queue_url, call_uuid)

    assert result.ok, result.describe()
    assert final_responses(result) == ["SIP/2.0 487 Request Terminated"]
    assert bot.requests == []  # the late connect answer was not acted on
    assert_refused_record(
        record, events, status=CallStatus.CANCELED, cause="ORIGINATOR_CANCEL", sip_status=487
    )


# --------------------------------------------------------------------------- 8. shutdown


async def test_node_shutdown_hangs_up_live_calls(peers: Peers, aws: Any, repo: Any) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        account = tenant(repo)
        number = add_number(repo, account, Route(socket_url=bot.url))
        async with anyio.create_task_group() as tasks:
            async with running_gateway() as node:
                run = caller(peers, node, "uac_talk_until_bye.xml", number)
                sipp = Background(run)
                tasks.start_soon(sipp._go)
                session = await bot.next_session()
                await session.wait_for(lambda: len(session.audio) >= 8000, "1 s of caller audio")
                call_uuid = call_uuid_of(session)
                stopping = anyio.current_time()
            # Leaving running_gateway is `await node.stop(drain_seconds=0)` with the call live
            # (called once: stopping twice is its own test below).
            stopped = anyio.current_time()
            result = await sipp.wait()
        # stop() waits for call.completed to be written before it returns.
        record = await wait_record(repo, call_uuid, seconds=1.0)
        events = await events_for(node.settings.events_queue_url, call_uuid)
        await session.wait_closed()

    assert result.ok, result.describe()
    (timing,) = call_timings(result.messages)
    assert timing.final_status == 200 and timing.bye_by_us is False, timing
    # causes.py: SYSTEM_SHUTDOWN has no Q.850 value; the Reason carries 41 (temporary failure).
    assert q850_causes(received(run, "BYE ")) == [41]
    assert stopped - stopping < 15, "stop(drain_seconds=0) took too long"
    assert session.violations == [], session.violations
    assert session.stop is not None and session.close_code == 1000
    assert_answered_record(record, node.node_id, events, cause="SYSTEM_SHUTDOWN")


async def test_stopping_a_node_twice_leaves_nothing_open(aws: Any) -> None:
    """`node.stop()` inside running_gateway, which stops the node again on the way out (as a
    SIGTERM handler and a context manager may both do): the second stop must not reopen the
    AWS clients the first one closed.

    Leaks are found by looking at the live aiohttp sessions (aiobotocore's transport) rather
    than by waiting for their ResourceWarning, which fires whenever the garbage collector gets
    to them, in whatever test runs then. Any found are closed here so no later test pays.
    """
    before = set(map(id, open_http_sessions()))
    async with running_gateway() as node:
        await node.stop(drain_seconds=0)
    leaked = [s for s in open_http_sessions() if id(s) not in before]
    for http in leaked:
        await http.close()
    assert leaked == [], f"{len(leaked)} aiohttp sessions left open by the second stop()"


# --------------------------------------------------------------------------- 9. refused up front


@pytest.mark.parametrize(
    ("case", "status"),
    [("unknown_number", "SIP/2.0 404 Not Found"), ("suspended", "SIP/2.0 403 Forbidden")],
)
async def test_refused_before_routing_leaves_no_record(
    peers: Peers, aws: Any, repo: Any, case: str, status: str
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        if case == "unknown_number":
            number = new_number()
        else:
            account = tenant(repo, default_socket_url=bot.url, status=AccountStatus.SUSPENDED)
            number = add_number(repo, account, Route(socket_url=bot.url))
        async with running_gateway() as node:
            run = caller(peers, node, "uac_expect_reject.xml", number)
            result = await run_caller(run)
            published = no_events(node.settings.events_queue_url)

    assert result.ok, result.describe()
    assert final_responses(result) == [status]
    assert bot.requests == []
    assert calls_to(repo, number) == []
    assert published == []
