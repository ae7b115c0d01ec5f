"""Every way an agent stream is refused, with its close code and reason, and what it leaves.

A refusal before the call exists leaves no call record; its reason names the problem and never
repeats a token, a session or the URL.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from edge_media.node import EdgeNode
from shared.dynamo.repository import Repository
from shared.models import AccountLimits, AccountStatus, CallStatus, TelephonyProvider
from shared.stream_tokens import make_stream_token
from tests.edge_media.agent_stream.conftest import provision, stream_base
from tests.edge_media.agent_stream.test_stream_calls import (
    record_of,
    twilio_signature,
    v1_url,
    v2_url,
)
from tests.interop.gateway import started
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_provider import OMIT, ProviderStream
from tests.support.fake_twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

BOT = "ws://127.0.0.1:9/never-reached"


async def close_of(stream: ProviderStream, *, handshake: bool = True) -> tuple[int, str]:
    await stream.open(handshake=handshake)
    return await stream.wait_closed(5)


def account_calls(repo: Repository, account_id: str) -> list[dict[str, Any]]:
    items = repo.client.scan(TableName=repo.table).get("Items", [])
    return [
        item
        for item in items
        if item.get("sk", {}).get("S") == "CALL"
        and item.get("account_id", {}).get("S") == account_id
    ]


async def test_url_refusals_close_before_the_handshake(gateway: EdgeNode, repo: Repository) -> None:
    tenant = provision(repo, BOT)
    suspended = provision(repo, BOT, status=AccountStatus.SUSPENDED)
    base = stream_base(gateway)
    agent = tenant.agent_uuid
    cases = {
        f"{base}/api/v1/agent-stream/{agent}": (1008, "Missing provider"),
        f"{base}/api/v1/agent-stream/{agent}?provider=foo": (1008, "Unknown provider: foo"),
        f"{base}/api/v1/agent-stream/telnyx/{agent}": (
            1011,
            "Agent stream not supported for provider telnyx",
        ),
        f"{base}/api/v1/agent-stream/cloudonix/{uuid.uuid4()}": (1008, "Agent not found"),
        f"{base}/api/v1/agent-stream/cloudonix/not-a-uuid": (1008, "Agent not found"),
        v2_url(gateway, "cloudonix", suspended.agent_uuid): (1008, "Account suspended"),
        f"{base}/api/v1/agent-stream/{agent}?provider=cloudonix": (
            4400,
            "Missing Domain query param",
        ),
    }
    got = {}
    for url in cases:
        got[url] = await close_of(ProviderStream(url, provider="cloudonix"), handshake=False)
    assert got == cases
    assert account_calls(repo, tenant.account.account_id) == []


async def test_handshake_refusals(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("live", DOMAIN)
    tenant = provision(repo, BOT)
    url = v2_url(gateway, "cloudonix", tenant.agent_uuid)

    async def silent() -> tuple[int, str]:
        return await close_of(ProviderStream(url), handshake=False)

    async def start_first() -> tuple[int, str]:
        stream = ProviderStream(url)
        await stream.open(handshake=False)
        stream.send_start()
        return await stream.wait_closed(5)

    async def garbage_start() -> tuple[int, str]:
        stream = ProviderStream(url)
        await stream.open(handshake=False)
        stream.send_connected()
        stream.send_raw("{not json")
        return await stream.wait_closed(5)

    async def binary_connected() -> tuple[int, str]:
        stream = ProviderStream(url)
        await stream.open(handshake=False)
        stream.send_raw(b"\x00\x01")
        return await stream.wait_closed(5)

    def start_with(**fields: Any) -> ProviderStream:
        return ProviderStream(url, session="live", start_fields=fields)

    started_at = time.monotonic()
    assert await silent() == (4408, "Handshake timeout")
    assert time.monotonic() - started_at < 3  # the setting (0.5 s), not the 10 s default
    assert await start_first() == (4400, "Expected connected event")
    assert await garbage_start() == (4400, "Malformed start event: not JSON")
    assert await binary_connected() == (4400, "Expected connected event")
    cases = {
        "no callSid": (start_with(callSid=OMIT), (4400, "Missing stream identifiers")),
        "no session": (
            ProviderStream(url, start_fields={"session": OMIT}),
            (4400, "Missing Cloudonix session in start message"),
        ),
        "other domain": (
            start_with(accountSid="other"),
            (4400, "No matching telephony configuration"),
        ),
        "dead session": (
            ProviderStream(url, session="gone"),
            (4400, "Cloudonix session validation failed"),
        ),
        "a-law": (
            start_with(mediaFormat={"encoding": "audio/x-alaw", "sampleRate": 8000}),
            (4400, "Unsupported media format: audio/x-mulaw, 8000 Hz, mono only"),
        ),
    }
    got = {name: await close_of(stream) for name, (stream, _) in cases.items()}
    assert got == {name: want for name, (_, want) in cases.items()}
    assert all(TOKEN not in reason for _, reason in got.values())
    assert account_calls(repo, tenant.account.account_id) == []
    # the dead session was asked about with the stored token, and refused by Cloudonix
    dead = [r for r in cloudonix.requests if r.path.endswith("/sessions/gone")]
    assert [r.status for r in dead] == [404]


async def test_twilio_signature_and_call_checks(
    gateway: EdgeNode, repo: Repository, twilio_rest: FakeTwilioRest
) -> None:
    tenant = provision(repo, BOT, provider=TelephonyProvider.TWILIO)
    url = v2_url(gateway, "twilio", tenant.agent_uuid)
    live = twilio_rest.add_call(account_sid=ACCOUNT_SID)
    over = twilio_rest.add_call(account_sid=ACCOUNT_SID, status="completed")

    def twilio(headers: dict[str, str], call_sid: str) -> ProviderStream:
        return ProviderStream(
            url, provider="twilio", headers=headers, call_sid=call_sid, account_sid=ACCOUNT_SID
        )

    signed = {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url)}
    wrong = {"X-Twilio-Signature": twilio_signature("not-the-token", url)}
    other_url = {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url + "x")}
    assert await close_of(twilio({}, live.sid)) == (4400, "Missing X-Twilio-Signature")
    assert await close_of(twilio(wrong, live.sid)) == (4400, "Invalid X-Twilio-Signature")
    assert await close_of(twilio(other_url, live.sid)) == (4400, "Invalid X-Twilio-Signature")
    assert await close_of(twilio(signed, over.sid)) == (4400, "Twilio call validation failed")
    unknown_account = ProviderStream(
        url, provider="twilio", headers=signed, call_sid=live.sid, account_sid="AC" + "0" * 32
    )
    assert await close_of(unknown_account) == (4400, "No matching telephony configuration")
    assert account_calls(repo, tenant.account.account_id) == []


async def test_token_required_agents(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("tok", DOMAIN)
    async with StrictTwilioBot() as bot:
        tenant = provision(repo, bot.url, require_token=True)
        secret = tenant.account.webhook_secret
        agent = tenant.agent_uuid
        good = make_stream_token(secret, agent, int(time.time()) + 600)
        expired = make_stream_token(secret, agent, int(time.time()) - 1)
        other_agent = make_stream_token(secret, uuid.uuid4(), int(time.time()) + 600)

        def with_token(token: str | None) -> ProviderStream:
            url = v1_url(gateway, agent) + (f"&token={token}" if token is not None else "")
            return ProviderStream(url, session="tok")

        assert await close_of(with_token(None)) == (4400, "Token required")
        assert await close_of(with_token("123.abc")) == (4400, "Invalid token")
        assert await close_of(with_token("abc")) == (4400, "Malformed token")
        assert await close_of(with_token(expired)) == (4400, "Token expired")
        assert await close_of(with_token(other_agent)) == (4400, "Invalid token")
        accepted = with_token(good)
        await accepted.open()
        session = await started(bot)
        # the token is the gateway's: it never reaches the bot
        assert "token" not in (session.start or {}).get("start", {}).get("customParameters", {})
        await accepted.stop()
        call = await record_of(repo, tenant.account.account_id)
    assert call.status is CallStatus.COMPLETED


async def test_concurrency_limit_refuses_a_second_stream_until_the_first_ends(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    for name in ("c1", "c2", "c3"):
        cloudonix.add_session(name, DOMAIN)
    async with StrictTwilioBot() as bot:
        tenant = provision(repo, bot.url, limits=AccountLimits(max_concurrent_calls=1))
        url = v2_url(gateway, "cloudonix", tenant.agent_uuid)
        first = ProviderStream(url, session="c1")
        await first.open()
        await started(bot)
        second = ProviderStream(url, session="c2")
        assert await close_of(second) == (1008, "Concurrent call limit reached")
        await first.stop()
        await record_of(repo, tenant.account.account_id)
        third = ProviderStream(url, session="c3")
        await third.open()
        await started(bot)
        await third.stop()
    calls = account_calls(repo, tenant.account.account_id)
    assert len(calls) == 2  # the refused stream left no record


async def test_an_unreachable_agent_closes_1011_and_records_a_failed_call(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("nobot", DOMAIN)
    tenant = provision(repo, BOT)
    stream = ProviderStream(v2_url(gateway, "cloudonix", tenant.agent_uuid), session="nobot")
    assert await close_of(stream) == (1011, "Agent unavailable")
    call = await record_of(repo, tenant.account.account_id)
    assert call.status is CallStatus.FAILED
    assert call.media and call.media[0].failed_step is not None
