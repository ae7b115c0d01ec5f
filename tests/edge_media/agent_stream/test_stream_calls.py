"""Agent streams end to end on loopback: a fake provider streams into the node, the node drives
the agent's bot, and the record, callbacks and provider REST calls say what happened."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import anyio
import httpx
import pytest
from twilio.request_validator import RequestValidator

from edge_media.node import EdgeNode
from shared.commands import Hangup, Redirect, Transfer
from shared.dynamo.repository import Repository
from shared.models import Call, CallStatus, Direction, TelephonyProvider
from tests.edge_media.agent_stream.conftest import provision, stream_base
from tests.interop.gateway import (
    command_queue,
    event_types,
    read_events,
    running_gateway,
    send_command,
    started,
    tone_frame,
    wait_record,
)
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_provider import HandshakeRefused, ProviderStream
from tests.support.fake_twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest
from tests.support.twilio_bot import StrictTwilioBot


def twilio_signature(auth_token: str, url: str) -> str:
    """The X-Twilio-Signature Twilio would send, made by the official library's validator."""
    return str(RequestValidator(auth_token).compute_signature(url, {}))


pytestmark = pytest.mark.anyio

RUN_NAME = re.compile(r"^WR-AGS-[A-Z2-9]{8}$")
TONE = tone_frame(400)


async def record_of(repo: Repository, account_id: str, seconds: float = 10.0) -> Call:
    """The account's one call record, once terminal."""
    with anyio.fail_after(seconds):
        while True:
            calls = [
                item
                for item in repo.client.scan(TableName=repo.table).get("Items", [])
                if item.get("account_id", {}).get("S") == account_id
                and item.get("sk", {}).get("S") == "CALL"
            ]
            if calls:
                call_uuid = calls[0]["call_uuid"]["S"]
                return await wait_record(repo, call_uuid, seconds=seconds)
            await anyio.sleep(0.05)


def v1_url(node: EdgeNode, agent: uuid.UUID, **query: str) -> str:
    params = {"provider": "cloudonix", "Domain": "Acme", **query}
    text = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{stream_base(node)}/api/v1/agent-stream/{agent}?{text}"


def v2_url(node: EdgeNode, provider: str, agent: uuid.UUID) -> str:
    return f"{stream_base(node)}/api/v1/agent-stream/{provider}/{agent}"


async def test_cloudonix_v1_stream_reaches_the_bot_and_completes_on_stop(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("sess-1", DOMAIN)
    async with StrictTwilioBot(echo=True) as bot:
        tenant = provision(repo, bot.url)
        url = v1_url(gateway, tenant.agent_uuid, callId="gw-7f3a", to="%2B15550009999")
        stream = ProviderStream(
            url, provider="cloudonix", session="sess-1", custom_parameters={"campaign": "x"}
        )
        await stream.open()
        session = await started(bot)
        await stream.play(TONE * 25)  # 500 ms of caller audio, echoed by the bot
        stream.send_dtmf("7")
        await session.wait_for(lambda: session.digits == ["7"], "the digit")
        await stream.wait_audio(160 * 20)
        await stream.stop()
        call = await record_of(repo, tenant.account.account_id)
    assert not stream.violations, stream.violations
    assert not session.violations, session.violations
    assert bytes(session.audio[: 160 * 20]) == TONE * 20  # caller audio reached the bot intact
    heard = stream.received_audio()
    assert heard.count(TONE) >= 20, "the bot's echo did not come back to the provider"
    params = session.start["start"]["customParameters"] if session.start else {}
    assert params.get("campaign") == "x"
    assert params.get("from_number") == "+15550100001"
    assert params.get("to_number") == "+15550009999"
    assert call.status is CallStatus.COMPLETED
    assert call.hangup_cause == "NORMAL_CLEARING"
    assert call.direction is Direction.INBOUND
    assert call.mode == "cloudonix"
    assert call.run_name and RUN_NAME.match(call.run_name), call.run_name
    assert call.call_id == "gw-7f3a"
    assert call.provider_id == DOMAIN  # "Acme" normalised
    assert call.stream_sid == stream.stream_sid
    assert call.call_sid == stream.call_sid
    assert call.agent_uuid == tenant.agent_uuid
    assert (call.from_number, call.to_number) == ("+15550100001", "+15550009999")
    assert call.stats["packets_in"] >= 25 and call.stats["packets_out"] >= 20
    events = await read_events(gateway, str(call.call_uuid))
    assert event_types(events)[-2:] == ["call.answered", "call.completed"]
    completed = events[-1]
    assert completed["hangup_cause"] == "NORMAL_CLEARING"
    assert completed["duration"] is not None
    # the bot was told the call ended; the session was validated with the stored token
    assert session.stop is not None
    checks = [r for r in cloudonix.requests if r.method == "GET"]
    assert checks and checks[0].authorization == f"Bearer {TOKEN}"
    assert checks[0].path.endswith("/domains/acme.cloudonix.net/sessions/sess-1")


async def test_bot_hangup_ends_the_call_at_cloudonix_and_closes_1000(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("sess-2", DOMAIN)
    async with StrictTwilioBot() as bot:
        tenant = provision(repo, bot.url)
        stream = ProviderStream(
            v2_url(gateway, "cloudonix", tenant.agent_uuid),
            provider="cloudonix",
            session="sess-2",
            start_fields={"context": "outbound-api", "from": "+15550001000", "to": "+1555000200"},
        )
        await stream.open()
        session = await started(bot)
        await session.close(1000, "goodbye")
        assert await stream.wait_closed() == (1000, "")
        call = await record_of(repo, tenant.account.account_id)
    deletes = [r for r in cloudonix.requests if r.method == "DELETE"]
    assert len(deletes) == 1 and deletes[0].authorization == f"Bearer {TOKEN}"
    assert cloudonix.ended("sess-2", DOMAIN)
    assert call.status is CallStatus.COMPLETED
    assert call.direction is Direction.OUTBOUND
    assert call.call_id == "sess-2"  # v2: the session is the call id
    assert (call.from_number, call.to_number) == ("+15550001000", "+1555000200")
    assert call.stats.get("provider_api") == "hangup: ok"


async def test_twilio_stream_signed_marks_at_playout_and_clear_reaches_the_provider(
    gateway: EdgeNode, repo: Repository, twilio_rest: FakeTwilioRest
) -> None:
    twilio_call = twilio_rest.add_call(account_sid=ACCOUNT_SID)
    async with StrictTwilioBot() as bot:
        tenant = provision(repo, bot.url, provider=TelephonyProvider.TWILIO)
        url = v2_url(gateway, "twilio", tenant.agent_uuid)
        stream = ProviderStream(
            url,
            provider="twilio",
            call_sid=twilio_call.sid,
            account_sid=ACCOUNT_SID,
            headers={"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url)},
            custom_parameters={"From": "+15005550006", "To": "+15005550001"},
        )
        await stream.open()
        session = await started(bot)
        sent = time.monotonic()
        await session.send_media(TONE * 10)  # 200 ms
        await session.send_mark("m1")
        await session.wait_for(lambda: session.mark_echoes, "the mark echo")
        echoed = session.mark_echoes[0][1]
        await stream.wait_audio(160 * 10)
        # the mark comes back after its audio went out, not on receipt
        assert echoed - sent >= 0.15, echoed - sent
        assert session.mark_played[0] == ("m1", 200)
        await session.send_media(TONE * 100)  # 2 s, then barge-in
        await asyncio.sleep(0.1)
        await session.send_clear()
        await stream.wait_for(lambda: bool(stream.clears), "clear")
        await asyncio.sleep(0.2)
        heard = len(stream.received_audio())
        await asyncio.sleep(0.2)
        assert len(stream.received_audio()) == heard, "audio kept coming after the clear"
        await stream.stop()
        call = await record_of(repo, tenant.account.account_id)
    assert not stream.violations, stream.violations
    assert heard < 160 * (10 + 50), "the cleared audio played on"
    assert call.mode == "twilio" and call.provider_id == ACCOUNT_SID
    assert (call.from_number, call.to_number) == ("+15005550006", "+15005550001")
    assert call.call_id == twilio_call.sid
    assert call.stats["provider_clears_out"] == 1
    fetched = [r for r in twilio_rest.requests if r.method == "GET"]
    assert fetched, "the call was not checked with Twilio"


async def test_hangup_command_goes_to_the_provider_then_closes(
    gateway: EdgeNode, repo: Repository, twilio_rest: FakeTwilioRest
) -> None:
    twilio_call = twilio_rest.add_call(account_sid=ACCOUNT_SID)
    async with StrictTwilioBot() as bot:
        tenant = provision(repo, bot.url, provider=TelephonyProvider.TWILIO)
        url = v2_url(gateway, "twilio", tenant.agent_uuid)
        stream = ProviderStream(
            url,
            provider="twilio",
            call_sid=twilio_call.sid,
            account_sid=ACCOUNT_SID,
            headers={"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url)},
        )
        await stream.open()
        await started(bot)
        call_uuid = next(iter(gateway.live))
        hangup = Hangup(call_uuid=call_uuid, account_id=tenant.account.account_id)
        await send_command(command_queue(gateway), hangup)
        assert await stream.wait_closed(10) == (1000, "")
        call = await record_of(repo, tenant.account.account_id)
    updates = [r for r in twilio_rest.requests if r.method == "POST"]
    assert [r.form().get("Status") for r in updates] == ["completed"]
    assert twilio_rest.calls[twilio_call.sid].status == "completed"
    assert call.status is CallStatus.COMPLETED


async def test_transfer_command_moves_the_call_at_the_provider(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("sess-3", DOMAIN)
    async with StrictTwilioBot() as bot:
        tenant = provision(repo, bot.url)
        stream = ProviderStream(
            v2_url(gateway, "cloudonix", tenant.agent_uuid), provider="cloudonix", session="sess-3"
        )
        await stream.open()
        session = await started(bot)
        call_uuid = next(iter(gateway.live))
        move = Transfer(
            call_uuid=call_uuid, account_id=tenant.account.account_id, destination="+15550003333"
        )
        await send_command(command_queue(gateway), move)
        assert await stream.wait_closed(10) == (1000, "")
        await session.wait_closed()
        call = await record_of(repo, tenant.account.account_id)
    posts = [r for r in cloudonix.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].authorization == f"Bearer {TOKEN}"
    assert "<Number>+15550003333</Number>" in posts[0].json()["cxml"]
    assert not [r for r in cloudonix.requests if r.method == "DELETE"]  # moved, not hung up
    assert session.stop is not None
    events = await read_events(gateway, str(call.call_uuid))
    assert "call.transferred" in event_types(events)
    transferred = next(e for e in events if e["type"] == "call.transferred")
    assert transferred["method"] == "provider"


async def test_redirect_swaps_the_bot_and_keeps_the_provider_socket(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("sess-4", DOMAIN)
    async with StrictTwilioBot() as first, StrictTwilioBot(echo=True) as second:
        tenant = provision(repo, first.url)
        stream = ProviderStream(
            v2_url(gateway, "cloudonix", tenant.agent_uuid), provider="cloudonix", session="sess-4"
        )
        await stream.open()
        old = await started(first)
        call_uuid = next(iter(gateway.live))
        redirect = Redirect(
            call_uuid=call_uuid, account_id=tenant.account.account_id, media_server=second.url
        )
        await send_command(command_queue(gateway), redirect)
        new = await started(second)
        await old.wait_closed()
        await stream.play(TONE * 10)
        await stream.wait_audio(160 * 5)  # the new bot's echo comes back
        assert stream.is_open
        await stream.stop()
        call = await record_of(repo, tenant.account.account_id)
    assert not new.violations and old.stop is not None
    assert [leg.end_reason for leg in call.media][:1] == ["redirected"]
    assert len(call.media) == 2


async def test_health_answers_and_drain_refuses_new_streams_while_live_ones_run(
    aws: Any, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("sess-5", DOMAIN)
    async with (
        running_gateway(cloudonix_api_base=cloudonix.base_url) as node,
        StrictTwilioBot() as bot,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        base = stream_base(node).replace("ws://", "http://")
        health = await http.get(f"{base}/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        assert (await http.get(f"{base}/nothing-here")).status_code == 404
        tenant = provision(repo, bot.url)
        live = ProviderStream(
            v2_url(node, "cloudonix", tenant.agent_uuid), provider="cloudonix", session="sess-5"
        )
        await live.open()
        await started(bot)
        assert (await http.get(f"{base}/health")).json()["streams"] == 1
        stopping = asyncio.ensure_future(node.stop(drain_seconds=5.0))
        await asyncio.sleep(0.1)
        draining = await http.get(f"{base}/health")
        assert (draining.status_code, draining.json()["status"]) == (503, "draining")
        refused = ProviderStream(v1_url(node, tenant.agent_uuid), provider="cloudonix")
        with pytest.raises(HandshakeRefused) as error:
            await refused.open()
        assert error.value.status == 503
        assert live.is_open  # the live stream runs on through the drain
        await live.play(TONE * 5)
        await live.stop()
        await asyncio.wait_for(stopping, 10)
        call = await record_of(repo, tenant.account.account_id)
    assert call.status is CallStatus.COMPLETED and call.hangup_cause == "NORMAL_CLEARING"
