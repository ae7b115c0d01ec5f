"""Calls bridged to a bot, end to end: sipp (a carrier) → edge node → StrictTwilioBot.

The node runs in-process with its control plane at moto (DynamoDB + SQS); the bot is a real
WebSocket server on loopback that checks every message of the Twilio-stream protocol. Each test
reads back the call record and the events the node published, because "a call that started
always ends with a record and a call.completed" is the contract users rely on.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from shared.models import CallStatus
from tests.interop.audio import find_segments
from tests.interop.capture import dtmf_digits, dtmf_events, heard_pcm, read_rtp, split_streams
from tests.interop.gateway import (
    events_for,
    make_tenant,
    node_address,
    running_gateway,
    wait_record,
)
from tests.interop.peers import Peers
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

CALL_MS = 6000


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    import audioop

    return audioop.ulaw2lin(ulaw, 2)


async def test_carrier_call_reaches_the_bot_both_ways(peers: Peers, aws: Any, repo: Any) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        async with running_gateway() as node:
            caller = peers.sipp("uac_audio_dtmf.xml", remote=node_address(node),
                                service=tenant.number, duration_ms=CALL_MS, calls=1)  # fmt: skip
            capture = peers.capture(
                "bridge", ports=[node.endpoint.local_addr[1], caller.media_port]
            )
            await anyio.to_thread.run_sync(capture.start)
            result = await anyio.to_thread.run_sync(caller.run)
            await anyio.to_thread.run_sync(capture.stop)
            assert result.ok, result.describe()
            session = await bot.next_session()
            await session.wait_closed()
            call_uuid = session.start["start"]["customParameters"]["call_uuid"]
            record = await wait_record(repo, call_uuid)
            events = await events_for(node.settings.events_queue_url, call_uuid)

    # The bot saw a well-formed stream: connected, start, media..., the digits, stop, close 1000.
    assert session.violations == [], session.violations
    names = session.events()
    assert names[:2] == ["connected", "start"] and names[-1] == "stop", names[:3] + names[-3:]
    assert session.close_code == 1000
    params = session.start["start"]["customParameters"]
    assert params["to_number"] == tenant.number and params["direction"] == "inbound"
    assert (
        params["from_number"] == "+155501001" and params["account_id"] == tenant.account.account_id
    )
    assert session.digits == list("1234#")
    # Caller → bot: the caller's speech arrived in the bot's media messages.
    to_bot = find_segments(peers.media.caller_wav, ulaw_to_pcm(bytes(session.audio)))
    assert to_bot.fraction >= 0.9, to_bot
    # Bot → caller: what the bot sent back is what the caller heard on the wire.
    packets = read_rtp(capture.path, sip_ports=[node.endpoint.local_addr[1]])
    from_node = [
        p for p in packets if p.dst[1] == caller.media_port and p.src[1] != caller.media_port
    ]
    assert len(split_streams(from_node)) == 1
    heard = heard_pcm(from_node, dst_port=caller.media_port)
    to_caller = find_segments(peers.media.caller_wav, heard)
    assert to_caller.fraction >= 0.9, to_caller
    assert (
        dtmf_digits(dtmf_events(from_node, payload_types=[96])) == ""
    )  # digits go to the bot only
    # The record and the events.
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert record.direction.value == "inbound" and record.node_id == node.node_id
    assert record.duration is not None and 5 <= record.duration <= 12  # ~6 s of audio + digits
    assert record.stats["packets_in"] > 200 and record.stats["packets_out"] > 200
    assert record.stats["lost"] == 0
    types = [event["type"] for event in events]
    assert types == ["call.ringing", "call.answered", "call.completed"], types
