"""An in-process edge node wired to the control plane at the session's moto, for bridge tests.

The node runs in the test's event loop with its real SIP/RTP sockets on loopback, its real
aioboto3 clients (DynamoDB and SQS at moto) and a real routing/bot path, so a test can drive a
call from a real SIP peer (sipp, baresip) to a real bot (StrictTwilioBot, pipecat) and then read
the call record and the events the node published.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import secrets
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import boto3
from websockets.exceptions import ConnectionClosed

from edge_media.node import EdgeNode
from edge_media.phone.phone_options import PhoneOptions
from edge_media.phone.phone_result import PhoneResult
from edge_media.phone.softphone import run_phone
from shared.commands import Command, Originate
from shared.dynamo.repository import Repository
from shared.models import Account, Call, Direction, Number, Route, Trunk
from shared.settings import Settings
from tests.interop.peers import HOST, Peers, SippRun, free_port, free_udp_range
from tests.support.twilio_bot import BotSession, StrictTwilioBot

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13


@dataclass
class Tenant:
    account: Account
    number: str | None = None


def new_number() -> str:
    return "+1555" + "".join(secrets.choice("0123456789") for _ in range(7))


def make_tenant(repo: Repository, *, socket_url: str | None = None, **account: Any) -> Tenant:
    acct = Account(name="bridge test", webhook_secret=secrets.token_hex(16), **account)
    repo.put(acct)
    tenant = Tenant(acct)
    if socket_url is not None or account.get("webhook_url"):
        tenant.number = add_number(repo, acct, Route(socket_url=socket_url) if socket_url else None)
    return tenant


def add_number(
    repo: Repository, account: Account, route: Route | None = None, **route_fields: Any
) -> str:
    number = new_number()
    repo.put(
        Number(number=number, account_id=account.account_id, route=route or Route(**route_fields))
    )
    return number


def add_trunk(repo: Repository, account: Account, port: int, **fields: Any) -> Trunk:
    trunk = Trunk(account_id=account.account_id, name="test trunk", host=HOST, port=port, **fields)
    repo.put(trunk)
    return trunk


@asynccontextmanager
async def running_gateway(**overrides: Any) -> AsyncIterator[EdgeNode]:
    """An EdgeNode with the control plane on (the ``aws`` fixture must be active)."""
    low, high = free_udp_range(64)
    # Each node gets an events queue of its own, so a test reads exactly its calls' events.
    events = boto3.client("sqs").create_queue(
        QueueName=f"agera-test-events-{uuid.uuid4().hex[:12]}"
    )
    overrides.setdefault("events_queue_url", events["QueueUrl"])
    settings = Settings.load(
        sip_host=HOST,
        sip_port=free_port(),
        ws_port=0,
        rtp_port_min=low,
        rtp_port_max=high,
        node_id=f"test-{uuid.uuid4().hex[:12]}",
        # Stopping waits for the poll in flight; loopback is trusted unless a test says not.
        **{"originate_poll_seconds": 1, "trust_loopback": True, **overrides},
    )
    node = EdgeNode(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop(drain_seconds=0)


def node_address(node: EdgeNode) -> str:
    host, port = node.endpoint.local_addr[:2]
    return f"{host}:{port}"


async def phone_call(
    uri: str, *, hangup_after: float | None, answer_timeout: float = 10
) -> PhoneResult:
    """One call from the project's softphone on loopback (`agera call`), its output discarded."""
    options = PhoneOptions(
        uri=uri,
        hangup_after=hangup_after,
        answer_timeout=answer_timeout,
        local_host=HOST,
        rtp_ports=free_udp_range(4),
    )
    return await run_phone(options, out=io.StringIO())


async def wait_record(
    repo: Repository, call_uuid: str, *, terminal: bool = True, seconds: float = 10.0
) -> Call:
    """The call record once it is terminal (the node writes it as the call ends)."""
    with anyio.fail_after(seconds):
        while True:
            call = repo.get(Call, call_uuid, consistent=True)
            if call is not None and (not terminal or call.status.terminal):
                return call
            await anyio.sleep(0.05)


def _events_for_sync(
    queue_url: str, call_uuid: str, *, want: str = "call.completed", polls: int = 20
) -> list[dict[str, Any]]:
    """The events the node published for ``call_uuid``, read (and deleted) until ``want``."""
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    for _ in range(polls):
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
            if body.get("call_uuid") == call_uuid:
                found.append(body)
        if any(event["type"] == want for event in found):
            break
    return found


async def events_for(
    queue_url: str, call_uuid: str, *, want: str = "call.completed", polls: int = 20
) -> list[dict[str, Any]]:
    """`_events_for_sync` in a worker thread: the node in this loop must keep sending meanwhile."""
    return await anyio.to_thread.run_sync(
        lambda: _events_for_sync(queue_url, call_uuid, want=want, polls=polls)
    )


def calls_to(repo: Any, number: str) -> list[dict[str, Any]]:
    """Every call record in the table whose to_number is ``number`` (a scan: no index has it)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": repo.table,
        "FilterExpression": "to_number = :n",
        "ExpressionAttributeValues": {":n": {"S": number}},
    }
    while True:
        page = repo.client.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def read_events(node: EdgeNode, call_uuid: str) -> list[dict[str, Any]]:
    """The call's events from the node's events queue, up to ``call.completed``."""
    return await events_for(node.settings.events_queue_url, call_uuid)


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


CALLER_ID = "+15550001111"  # the caller id of originated calls
DESTINATION = "+15557654321"  # the number originated calls dial


def queued_call(repo: Repository, account: Account, **fields: Any) -> Call:
    """The record POST /api/calls writes before it queues the originate command."""
    call = Call(
        account_id=account.account_id,
        direction=Direction.OUTBOUND,
        from_number=fields.pop("from_number", CALLER_ID),
        to_number=fields.pop("to_number", DESTINATION),
        **fields,
    )
    repo.put(call, create_only=True)
    return call


def originate_for(call: Call, **fields: Any) -> Originate:
    """The originate command the API queues for ``call``."""
    return Originate(
        call_uuid=call.call_uuid,
        account_id=call.account_id,
        destination_number=call.to_number,
        caller_id_number=call.from_number,
        caller_id_name=call.caller_id_name,
        socket_url=call.socket_url,
        **fields,
    )


# ----------------------------------------------------------------- commands and bots


async def send_command(queue_url: str, command: Command) -> None:
    """What the API does: the command's JSON as the body of one SQS message.

    boto3 blocks, so it runs in a worker thread: the node shares this event loop, and a
    blocked loop would delay its RTP pacer (a gap the test would then blame on the node).
    """
    body = command.model_dump_json()

    def send() -> None:
        boto3.client("sqs").send_message(QueueUrl=queue_url, MessageBody=body)

    await anyio.to_thread.run_sync(send)


def command_queue(node: EdgeNode) -> str:
    """The node's own queue (the API reads it from the node's EdgeNode item)."""
    url = node._control.registry.queue_url
    assert url, "the node has no command queue"
    return str(url)


async def started(bot: StrictTwilioBot, seconds: float = 10.0) -> BotSession:
    """The bot's next connection, once its ``start`` message arrived."""
    session = await bot.next_session(seconds)
    await session.wait_for(lambda: session.start is not None, "start message", seconds)
    return session


def custom_parameters(session: BotSession) -> dict[str, str]:
    assert session.start is not None, session.events()
    return dict(session.start["start"]["customParameters"])


def tone_frame(hz: int = 400) -> bytes:
    """20 ms of a sine whose period divides 160 samples: every frame is the same bytes."""
    samples = [round(8000 * math.sin(2 * math.pi * hz * n / 8000)) for n in range(160)]
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    return audioop.lin2ulaw(pcm, 2)


async def play_continuously(session: BotSession, frame: bytes) -> None:
    """A bot that talks without a break: 500 ms ahead, then one frame per 20 ms until stopped."""
    await session.wait_for(lambda: session.start is not None, "start")
    loop = asyncio.get_running_loop()
    try:
        await session.send_media(frame * 25)  # 500 ms ahead
        due = loop.time()
        while session.stop is None and not session.done.is_set():
            await session.send_media(frame)
            due += 0.020
            await asyncio.sleep(max(0.0, due - loop.time()))
    except ConnectionClosed:
        pass


async def trunk_peer(peers: Peers, repo: Any, account: Account, scenario: str) -> SippRun:
    """A sipp UAS running ``scenario``, started and provisioned as the account's trunk."""
    trunk = peers.sipp(scenario, calls=1)
    await anyio.to_thread.run_sync(trunk.start)
    add_trunk(repo, account, trunk.local_port)
    return trunk
