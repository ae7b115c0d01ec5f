"""Helpers for the native-agent interop tests: a sipp caller on an in-process node whose bots
are the ElevenLabs and Vapi fakes (tests/support), and what a test reads back afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from edge_media.node import EdgeNode
from shared.commands import Hangup
from shared.dynamo.repository import Repository
from shared.models import Call
from tests.interop.capture import AUDIO_PAYLOAD_TYPES, RtpSeen, read_rtp
from tests.interop.gateway import (
    Tenant,
    command_queue,
    node_address,
    read_events,
    send_command,
    wait_record,
)
from tests.interop.peers import Peers, SippRun

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)

# sipp UAC that plays the caller's speech, offers no REFER and waits for the node's BYE.
UNTIL_BYE = Path(__file__).resolve().parent / "scenarios" / "uac_until_bye.xml"


@dataclass
class PlacedCall:
    """A sipp caller dialling a tenant's number on ``node``, with an RTP capture running."""

    node: EdgeNode
    repo: Repository
    tenant: Tenant
    caller: SippRun
    capture: Any
    epoch_minus_loop: float  # loop.time() + this = the capture's clock

    def on_capture_clock(self, loop_time: float) -> float:
        return loop_time + self.epoch_minus_loop


@dataclass
class Outcome:
    result: Any  # sipp's result
    record: Call
    events: list[dict[str, Any]]
    to_caller: list[RtpSeen]  # audio packets the node sent the caller


async def place_call(
    peers: Peers, node: EdgeNode, repo: Repository, tenant: Tenant, name: str
) -> PlacedCall:
    caller = peers.sipp(UNTIL_BYE, remote=node_address(node), service=tenant.number, calls=1)
    capture = peers.capture(name, ports=[node.endpoint.local_addr[1], caller.media_port])
    await anyio.to_thread.run_sync(capture.start)
    epoch_minus_loop = time.time() - asyncio.get_running_loop().time()
    await anyio.to_thread.run_sync(caller.start)
    return PlacedCall(node, repo, tenant, caller, capture, epoch_minus_loop)


async def hang_up(placed: PlacedCall, call_uuid: uuid.UUID) -> Outcome:
    """A hangup command (as the API sends it), then the call's outcome."""
    await send_command(
        command_queue(placed.node),
        Hangup(call_uuid=call_uuid, account_id=placed.tenant.account.account_id),
    )
    return await outcome(placed, call_uuid)


async def outcome(placed: PlacedCall, call_uuid: uuid.UUID) -> Outcome:
    """Once the caller is done: its result, the terminal record, the events, the RTP heard."""
    result = await anyio.to_thread.run_sync(placed.caller.wait, 30.0)
    record = await wait_record(placed.repo, str(call_uuid))
    events = await read_events(placed.node, str(call_uuid))
    await anyio.to_thread.run_sync(placed.capture.stop)
    packets = read_rtp(placed.capture.path, sip_ports=[placed.node.endpoint.local_addr[1]])
    port = placed.caller.media_port
    to_caller = [
        p
        for p in packets
        if p.dst[1] == port and p.src[1] != port and p.payload_type in AUDIO_PAYLOAD_TYPES
    ]
    return Outcome(result, record, events, to_caller)
