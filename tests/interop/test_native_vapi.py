"""Real SIP calls (sipp) to a number routed to ``vapi``, served by the Vapi fake (tests/support).

What a user of Vapi mode relies on: the create-call request carries the account's key and the
call's variables, the caller's speech reaches the assistant and the assistant's reaches the
caller, barge-in empties what the caller would still hear, and a caller hanging up sends
``end-call`` before the socket closes. The record names the Vapi call id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from typing import Any

import pytest

from shared.models import CallStatus
from tests.interop.audio import find_segments
from tests.interop.capture import heard_pcm
from tests.interop.gateway import event_types, make_tenant, running_gateway, tone_frame
from tests.interop.native_agents import hang_up, place_call
from tests.interop.peers import Peers
from tests.support.fake_vapi import API_KEY, FakeVapi

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

pytestmark = pytest.mark.anyio

ASSISTANT = "asst-interop-1"
TONE = tone_frame()


def vapi_tenant(repo: Any) -> Any:
    return make_tenant(
        repo, socket_url="vapi", vapi={"api_key": API_KEY, "assistant_id": ASSISTANT}
    )


async def test_a_call_to_vapi_talks_both_ways_and_ends_with_end_call(
    peers: Peers, aws: Any, repo: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agera")  # every line the gateway writes
    async with FakeVapi(echo=True, echo_chunk=800) as vapi:
        tenant = vapi_tenant(repo)
        async with running_gateway(vapi_api_base=vapi.url) as node:
            placed = await place_call(peers, node, repo, tenant, "vapi")
            session = await vapi.next_session(10)
            variables = vapi.creates[0].body["assistantOverrides"]["variableValues"]
            call_uuid = uuid.UUID(variables["call_uuid"])
            await session.wait_audio(8000 * 8, 20)  # 8 s of the caller: all of its speech
            done = await hang_up(placed, call_uuid)
            await session.wait_closed(5)

    assert done.result.ok, done.result.describe()
    # The create-call request: the account's key, the assistant, the call's variables, μ-law.
    create = vapi.creates[0]
    assert create.headers["Authorization"] == f"Bearer {API_KEY}"
    assert create.body["assistantId"] == ASSISTANT
    assert create.body["transport"] == {
        "provider": "vapi.websocket",
        "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
    }
    assert variables["caller_number"] and variables["called_number"] == tenant.number
    assert "Authorization" not in session.headers  # the key went to the REST call only
    # Caller → Vapi: 20 ms binary frames of the caller's speech.
    assert {len(frame) for frame in session.frames} == {160}
    heard_by_vapi = find_segments(peers.media.caller_wav, audioop.ulaw2lin(bytes(session.audio), 2))
    assert heard_by_vapi.fraction >= 0.9, heard_by_vapi
    # Vapi → caller: its 100 ms frames came back to the caller as speech.
    echoed = find_segments(
        peers.media.caller_wav, heard_pcm(done.to_caller, dst_port=placed.caller.media_port)
    )
    assert echoed.found >= 2, echoed
    # The caller's hangup: end-call, then close 1000.
    assert session.types() == ["end-call"], session.messages
    assert session.close_code == 1000
    # The record: completed, and the media entry names the Vapi call.
    assert done.record.status is CallStatus.COMPLETED
    assert event_types(done.events) == ["call.ringing", "call.answered", "call.completed"]
    [media] = done.record.media
    assert media.driver == "vapi" and media.target == "vapi"
    assert media.provider_ids == {"vapi_call_id": session.call_id}
    assert media.ended_at is not None and media.failed_step is None
    # Neither the key nor the socket's capability URL is in any line the gateway logged.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("agera"))
    assert "Vapi call" in logged  # the driver's lines are among them
    assert API_KEY not in logged
    assert f"/{session.call_id}/transport" not in logged


async def test_barge_in_from_vapi_empties_what_the_caller_would_still_hear(
    peers: Peers, aws: Any, repo: Any
) -> None:
    """The assistant queues 6 s of tone at once; a user-interrupted a second into it must cut
    the tone within a packet or two, as a `clear` does for a Twilio-stream bot."""
    async with FakeVapi(greeting=TONE * 300, greeting_chunk=1600) as vapi:
        tenant = vapi_tenant(repo)
        async with running_gateway(vapi_api_base=vapi.url) as node:
            placed = await place_call(peers, node, repo, tenant, "vapi-barge-in")
            session = await vapi.next_session(10)
            variables = vapi.creates[0].body["assistantOverrides"]["variableValues"]
            await session.wait_audio(8000, 15)  # the call is up and playing
            await asyncio.sleep(1.0)
            barged_at = placed.on_capture_clock(asyncio.get_running_loop().time())
            await session.user_interrupted()
            await asyncio.sleep(1.0)
            done = await hang_up(placed, uuid.UUID(variables["call_uuid"]))

    assert done.result.ok, done.result.describe()
    tones = [p for p in done.to_caller if p.payload == TONE]
    assert len(tones) >= 50, len(tones)  # more than a second of it played
    late = tones[-1].time - barged_at
    # A window that holds under load; bench/calls.py measures the budget (docs/performance.md).
    assert late <= 0.25, f"tone still played {late * 1000:.0f} ms after the barge-in"
    assert len(tones) < 250  # and far from all 6 s of it
