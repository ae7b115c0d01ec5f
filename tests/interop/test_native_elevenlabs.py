"""Real SIP calls (sipp) to numbers routed to ``elevenlabs``, served by the ElevenLabs fake.

What a user of ElevenLabs mode relies on, read back from the wire, the fake agent, the record and
the logs: the key goes to the signed-URL request only; the agent is told who calls; speech goes
both ways in the agent's formats (μ-law untouched, PCM converted); pings are answered; an
interruption cuts the agent at once and its stale audio is never heard; the agent hanging up
ends the call; a failure at any connect step falls back to the account default and says which
step failed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
import warnings
from typing import Any

import pytest

from shared.models import Account, CallStatus
from tests.interop.audio import find_segments
from tests.interop.capture import AUDIO_PAYLOAD_TYPES, heard_pcm, read_rtp
from tests.interop.gateway import Tenant, add_number, event_types, make_tenant, running_gateway
from tests.interop.native_agents import Outcome, PlacedCall, hang_up, outcome, place_call
from tests.interop.peers import Peers
from tests.support.fake_elevenlabs import DEFAULT_AGENT_ID, DEFAULT_API_KEY, FakeElevenLabs, tone
from tests.support.twilio_bot import StrictTwilioBot

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

pytestmark = pytest.mark.anyio

KEYED = {"api_key": DEFAULT_API_KEY, "agent_id": DEFAULT_AGENT_ID}


def caller_pcm(audio: bytes, audio_format: str) -> bytes:
    """What the agent heard, as 8 kHz linear PCM for correlation."""
    if audio_format == "ulaw_8000":
        return audioop.ulaw2lin(audio, 2)
    rate = int(audio_format.split("_")[1])
    return audioop.ratecv(audio, 2, 1, rate, 8000, None)[0]


def gateway_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("agera"))


async def call_uuid_of(fake: FakeElevenLabs) -> tuple[Any, uuid.UUID]:
    session = await fake.next_session(10)
    await session.wait_for(lambda: session.first_message is not None, "the initiation")
    assert session.first_message is not None
    return session, uuid.UUID(session.first_message["dynamic_variables"]["call_uuid"])


# pcm_16000 (converted both ways); ulaw_8000 is test_ulaw_passes_through_untouched, byte for byte.
@pytest.mark.parametrize("audio_format", ["pcm_16000"])
async def test_a_call_to_elevenlabs_talks_both_ways(
    peers: Peers, aws: Any, repo: Any, caplog: pytest.LogCaptureFixture, audio_format: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="agera")
    async with FakeElevenLabs(
        public=False,
        echo=True,
        input_format=audio_format,
        output_format=audio_format,
        ping_interval=0.5,
    ) as fake:
        tenant = make_tenant(repo, socket_url="elevenlabs", elevenlabs=KEYED)
        async with running_gateway(elevenlabs_api_base=fake.api_base) as node:
            placed = await place_call(peers, node, repo, tenant, f"el-{audio_format}")
            session, call_uuid = await call_uuid_of(fake)
            rate = int(audio_format.split("_")[1])
            width = 1 if audio_format == "ulaw_8000" else 2
            await session.wait_audio(8 * rate * width, 20)  # 8 s of the caller: all its speech
            done = await hang_up(placed, call_uuid)
            await session.wait_closed(5)

    assert done.result.ok, done.result.describe()
    assert session.violations == [], session.violations
    # The key went to the signed-URL request only; the socket was the signed one.
    assert [(r.agent_id, r.key_valid, r.status) for r in fake.rest_requests] == [
        (DEFAULT_AGENT_ID, True, 200)
    ]
    assert session.signed and not session.api_key_on_upgrade
    # The agent was told who calls.
    assert session.first_message is not None
    assert session.first_message["type"] == "conversation_initiation_client_data"
    variables = session.first_message["dynamic_variables"]
    assert variables["called_number"] == tenant.number
    assert variables["direction"] == "inbound"
    assert variables["account_id"] == tenant.account.account_id
    assert variables["caller_number"]
    # Caller → agent, in the agent's input format.
    heard_by_agent = find_segments(
        peers.media.caller_wav, caller_pcm(bytes(session.audio), audio_format)
    )
    assert heard_by_agent.fraction >= 0.9, heard_by_agent
    # Agent → caller: the echo came back as speech.
    echoed = find_segments(
        peers.media.caller_wav, heard_pcm(done.to_caller, dst_port=placed.caller.media_port)
    )
    assert echoed.found >= 2, echoed
    # Every ping but one still in flight was answered with its event_id.
    assert len(session.pings_sent) >= 10
    assert set(session.pings_sent) - set(session.pongs) <= {session.pings_sent[-1]}
    # The caller's hangup closed the socket normally; the record names the conversation.
    assert session.close_code == 1000
    assert done.record.status is CallStatus.COMPLETED
    [media] = done.record.media
    assert media.driver == "elevenlabs" and media.target == "elevenlabs"
    assert media.provider_ids == {"conversation_id": session.conversation_id}
    assert media.failed_step is None and media.ended_at is not None
    logged = gateway_log(caplog)
    assert session.conversation_id in logged
    assert DEFAULT_API_KEY not in logged and "conversation_signature" not in logged
    assert DEFAULT_API_KEY not in str(done.record.model_dump())


async def test_ulaw_passes_through_untouched(peers: Peers, aws: Any, repo: Any) -> None:
    """With ``ulaw_8000`` both ways the agent gets the caller's RTP payload bytes as they were
    sent: no decode, no resample, no re-encode on the way."""
    async with FakeElevenLabs(public=True) as fake:
        tenant = make_tenant(
            repo, socket_url="elevenlabs", elevenlabs={"agent_id": "agent_fake_01"}
        )
        async with running_gateway(elevenlabs_api_base=fake.api_base) as node:
            placed = await place_call(peers, node, repo, tenant, "el-passthrough")
            session, call_uuid = await call_uuid_of(fake)
            await session.wait_audio(8000 * 2, 10)
            done = await hang_up(placed, call_uuid)

    assert done.result.ok, done.result.describe()
    assert fake.rest_requests == []  # no key: the public agent's URL, no REST call
    from_caller = _caller_payloads(placed, done)
    sent = bytes(session.audio)
    assert len(sent) >= 16000
    assert sent in from_caller, "the agent's audio is not the caller's bytes"


def _caller_payloads(placed: PlacedCall, done: Outcome) -> bytes:
    """Every audio payload the caller sent the node, in capture order."""
    packets = read_rtp(placed.capture.path, sip_ports=[placed.node.endpoint.local_addr[1]])
    port = placed.caller.media_port
    return b"".join(
        p.payload for p in packets if p.src[1] == port and p.payload_type in AUDIO_PAYLOAD_TYPES
    )


async def test_an_interruption_cuts_the_agent_and_its_stale_audio_is_never_heard(
    peers: Peers, aws: Any, repo: Any
) -> None:
    """The agent queues 6 s of a 400 Hz tone; a second in, it interrupts and sends a 1 kHz
    chunk under the interrupted event_id (in flight when it interrupted): the 400 Hz tone stops
    within a packet or two, and no 1 kHz frame ever reaches the caller."""
    talk = tone("ulaw_8000", 400, 6000)
    stale = tone("ulaw_8000", 1000, 1000)
    async with FakeElevenLabs(public=True) as fake:
        tenant = make_tenant(repo, socket_url=f"elevenlabs&{DEFAULT_AGENT_ID}")
        async with running_gateway(elevenlabs_api_base=fake.api_base) as node:
            placed = await place_call(peers, node, repo, tenant, "el-interrupt")
            session, call_uuid = await call_uuid_of(fake)
            await session.metadata_sent.wait()
            await session.send_audio(talk)
            await session.wait_audio(8000, 10)  # the call is up
            await asyncio.sleep(1.0)
            interrupted_at = placed.on_capture_clock(asyncio.get_running_loop().time())
            await session.interrupt_with_stale_audio(stale)
            await asyncio.sleep(1.0)
            done = await hang_up(placed, call_uuid)

    assert done.result.ok, done.result.describe()
    talk_frames = {talk[i : i + 160] for i in range(0, len(talk), 160)}
    stale_frames = {stale[i : i + 160] for i in range(0, len(stale), 160)}
    played = [p for p in done.to_caller if p.payload in talk_frames]
    assert len(played) >= 50, len(played)
    late = played[-1].time - interrupted_at
    # A window that holds under load; bench/calls.py measures the budget (docs/performance.md).
    assert late <= 0.25, f"the agent still played {late * 1000:.0f} ms after the interruption"
    assert [p for p in done.to_caller if p.payload in stale_frames] == []


async def test_the_agent_hanging_up_ends_the_call(peers: Peers, aws: Any, repo: Any) -> None:
    async with FakeElevenLabs(public=True, echo=True, hangup_after=2.0) as fake:
        tenant = make_tenant(repo, socket_url=f"elevenlabs&{DEFAULT_AGENT_ID}")
        async with running_gateway(elevenlabs_api_base=fake.api_base) as node:
            placed = await place_call(peers, node, repo, tenant, "el-agent-hangup")
            session, call_uuid = await call_uuid_of(fake)
            done = await outcome(placed, call_uuid)  # nobody but the agent ends it

    assert done.result.ok, done.result.describe()
    assert session.closed_by_agent
    assert done.record.status is CallStatus.COMPLETED
    assert done.record.hangup_cause == "NORMAL_CLEARING"
    assert event_types(done.events) == ["call.ringing", "call.answered", "call.completed"]
    [media] = done.record.media
    assert media.end_reason is not None and "1000" in media.end_reason, media


# On the wire once (the REST call refused); each step's failure is told apart in
# tests/edge_media/drivers/test_elevenlabs_driver.py.
async def test_a_failed_connect_falls_back_and_says_which_step_failed(
    peers: Peers, aws: Any, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agera")
    step = "rest"
    settings = {"api_key": "xi-not-the-key-0000", "agent_id": DEFAULT_AGENT_ID}
    async with (
        FakeElevenLabs(public=True) as fake,
        StrictTwilioBot(echo=True) as fallback,
    ):
        account = Account(
            name="fallback test",
            webhook_secret=secrets.token_hex(16),
            socket_url=fallback.url,  # the account default
            elevenlabs=settings,
        )
        repo.put(account)
        tenant = Tenant(account, add_number(repo, account, socket_url="elevenlabs"))
        async with running_gateway(
            elevenlabs_api_base=fake.api_base, bot_connect_timeout_seconds=1.0
        ) as node:
            placed = await place_call(peers, node, repo, tenant, f"el-fail-{step}")
            bot = await fallback.next_session(10)
            await bot.wait_for(lambda: bot.start is not None, "start message", 10)
            assert bot.start is not None
            call_uuid = uuid.UUID(bot.start["start"]["customParameters"]["call_uuid"])
            # Answered and bridged (the bot connects while the call still rings): its audio flows.
            await bot.wait_for(lambda: len(bot.audio) >= 1600, "200 ms of the caller", 10)
            done = await hang_up(placed, call_uuid)

    assert done.result.ok, done.result.describe()
    failed, served = done.record.media
    assert failed.driver == "elevenlabs" and failed.failed_step == step, failed
    assert failed.end_reason and failed.ended_at is not None
    assert served.driver == "websocket" and served.failed_step is None
    assert done.record.socket_url == fallback.url
    logged = gateway_log(caplog)
    assert f"({step} step failed)" in logged
    assert "xi-not-the-key-0000" not in logged and DEFAULT_API_KEY not in logged
