"""Redirect between any two drivers on one live SIP call: Twilio-stream bot → ElevenLabs →
Vapi → Twilio-stream bot, with the SIP leg up throughout.

What the caller must get: one RTP stream with no gap over 60 ms from answer to hangup (silence
between bots, never a drop); what each bot must get: its protocol's goodbye (Twilio: `stop`
then close 1000; ElevenLabs: close 1000; Vapi: `end-call` then close 1000); what the customer
sees: one ``call.redirected`` per switch naming the driver, and a record whose ``media`` lists
the four connections with the providers' ids.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from shared.commands import Redirect
from shared.models import CallStatus
from tests.interop.audio import find_segments
from tests.interop.capture import heard_pcm, inter_departure_ms, split_streams
from tests.interop.gateway import (
    command_queue,
    custom_parameters,
    event_types,
    make_tenant,
    play_continuously,
    running_gateway,
    send_command,
    started,
    tone_frame,
)
from tests.interop.native_agents import hang_up, place_call
from tests.interop.peers import Peers
from tests.support.fake_elevenlabs import DEFAULT_AGENT_ID, FakeElevenLabs
from tests.support.fake_vapi import API_KEY, FakeVapi
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

MAX_GAP_MS = 60.0
SECOND_OF_ULAW = 8000
TOKEN = "s3cret-bot-token-0a1b"


async def test_redirect_moves_a_call_through_every_driver_and_back_without_a_gap(
    peers: Peers, aws: Any, repo: Any
) -> None:
    tone = tone_frame()
    async with (
        StrictTwilioBot() as bot_a,
        StrictTwilioBot(echo=True) as bot_b,
        FakeElevenLabs(public=True, echo=True) as eleven,
        FakeVapi(echo=True) as vapi,
    ):
        tenant = make_tenant(
            repo,
            socket_url=bot_a.url,
            elevenlabs={"agent_id": DEFAULT_AGENT_ID},
            vapi={"api_key": API_KEY, "assistant_id": "asst-redirect"},
        )
        async with running_gateway(
            elevenlabs_api_base=eleven.api_base, vapi_api_base=vapi.url
        ) as node:
            placed = await place_call(peers, node, repo, tenant, "redirect-chain")
            a = await started(bot_a, 10)
            talking = asyncio.ensure_future(play_continuously(a, tone))
            call_uuid = uuid.UUID(custom_parameters(a)["call_uuid"])
            account = tenant.account.account_id

            async def redirect(target: str) -> None:
                command = Redirect(call_uuid=call_uuid, account_id=account, media_server=target)
                await send_command(command_queue(node), command)

            await asyncio.sleep(1.0)
            await redirect("elevenlabs")
            el = await eleven.next_session(10)
            await el.wait_audio(SECOND_OF_ULAW, 10)
            await a.wait_closed(5)
            await redirect("vapi")
            vp = await vapi.next_session(10)
            await vp.wait_audio(SECOND_OF_ULAW, 10)
            await el.wait_closed(5)
            await redirect(f"{bot_b.url}?token={TOKEN}")  # a bot's secret in its URL
            b = await started(bot_b, 10)
            await b.wait_for(lambda: len(b.audio) >= SECOND_OF_ULAW, "1 s of audio at B", 10)
            await vp.wait_closed(5)
            done = await hang_up(placed, call_uuid)
            await talking

    assert done.result.ok, done.result.describe()
    # Each bot got its protocol's goodbye.
    assert a.violations == [] and a.events()[-1] == "stop" and a.close_code == 1000
    assert el.violations == [] and not el.closed_by_agent and el.close_code == 1000
    assert vp.types() == ["end-call"] and vp.close_code == 1000
    assert b.violations == [] and b.events()[:2] == ["connected", "start"]
    assert b.events()[-1] == "stop" and b.close_code == 1000
    # Each native agent heard the caller while it had the call.
    assert len(el.audio) >= SECOND_OF_ULAW and len(vp.audio) >= SECOND_OF_ULAW
    # One RTP stream to the caller, no gap over 60 ms from the first packet to the hangup.
    streams = split_streams(done.to_caller)
    assert len(streams) == 1, list(streams)
    gaps = inter_departure_ms(done.to_caller)
    assert len(gaps) >= 150, len(gaps)
    late = [round(gap) for gap in gaps if gap > MAX_GAP_MS]
    assert late == [], late
    # A's tone, then the agents' and B's echo of the caller.
    assert sum(1 for p in done.to_caller if p.payload == tone) >= 40
    echoed = find_segments(
        peers.media.caller_wav, heard_pcm(done.to_caller, dst_port=placed.caller.media_port)
    )
    assert echoed.found >= 2, echoed
    # What the customer sees.
    assert done.record.status is CallStatus.COMPLETED
    types = event_types(done.events)
    assert types == [
        "call.ringing",
        "call.answered",
        "call.redirected",
        "call.redirected",
        "call.redirected",
        "call.completed",
    ], types
    redirects = [e for e in done.events if e["type"] == "call.redirected"]
    assert [(e["media_server"], e["driver"]) for e in redirects] == [
        ("elevenlabs", "elevenlabs"),
        ("vapi", "vapi"),
        (bot_b.url, "websocket"),
    ]
    media = done.record.media
    assert [m.driver for m in media] == ["websocket", "elevenlabs", "vapi", "websocket"]
    assert [m.end_reason for m in media] == ["redirected", "redirected", "redirected", "call ended"]
    assert media[0].provider_ids["stream_sid"] == a.start["streamSid"]
    assert media[1].provider_ids == {"conversation_id": el.conversation_id}
    assert media[2].provider_ids == {"vapi_call_id": vp.call_id}
    assert all(m.ended_at is not None and m.failed_step is None for m in media)
    # The bot's token reached the bot, and nothing the customer or an operator reads.
    assert any(TOKEN in request.path for request in bot_b.requests), bot_b.requests
    assert done.record.socket_url == bot_b.url
    assert TOKEN not in done.record.model_dump_json()
    assert TOKEN not in json.dumps(done.events)
