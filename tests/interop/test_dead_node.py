"""Fault injection: an edge node is killed (SIGKILL) during a call; the call record still ends.

A real ``agera edge`` process runs against the control plane in moto. A SIP phone (the node's own
softphone, in this process) calls a number routed to a StrictTwilioBot, so the call is live on
the node: answered, bot connected, account slot held. Then the node gets ``kill -9``: no drain, no
``call.completed``, its EdgeNode item left to go stale. The reaper (with a 1 s grace) ends the
call, the events worker folds its ``call.completed`` and the callbacks worker delivers it, signed,
to the account's webhook on 127.0.0.1, exactly as for a call a node ended itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from edge_media.phone.phone_options import PhoneOptions
from edge_media.phone.softphone import run_phone
from functions.context import Context, reset_default_context
from functions.workers import callbacks, events, reaper
from infra.sqs_poller import SqsPoller
from shared import call_slots
from shared.dynamo.repository import Repository
from shared.models import Account, Call, CallStatus, EdgeNode, Route
from shared.settings import Settings
from tests.functions.test_workers import Receiver
from tests.interop.edge import EdgeNode as EdgeProcess
from tests.interop.gateway import add_number, started
from tests.interop.ports import HOST, free_udp_range
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

GRACE_S = 1.0  # the reaper's grace in this test (90 s in production)
WAIT_S = 15.0


async def poll(check: Any, what: str, seconds: float = WAIT_S) -> Any:
    """``check()`` (blocking, run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + seconds
    while True:
        value = await anyio.to_thread.run_sync(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s")
        await anyio.sleep(0.2)


async def test_a_killed_nodes_call_is_ended_by_the_reaper_and_its_callback_delivered(
    aws: Any, repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = boto3.client("sqs")
    tag = uuid.uuid4().hex[:10]
    events_queue = sqs.create_queue(QueueName=f"dead-node-events-{tag}")["QueueUrl"]
    callbacks_queue = sqs.create_queue(QueueName=f"dead-node-callbacks-{tag}")["QueueUrl"]
    monkeypatch.setenv("AGERA_EVENTS_QUEUE_URL", events_queue)
    monkeypatch.setenv("AGERA_CALLBACKS_QUEUE_URL", callbacks_queue)
    reset_default_context()
    secret = secrets.token_hex(16)
    receiver = Receiver(secret)
    node_id = f"doomed-{tag}"
    edge = EdgeProcess(
        tmp_path / "edge",
        env={
            "AGERA_NODE_ID": node_id,
            "AGERA_EVENTS_QUEUE_URL": events_queue,
            "AGERA_ORIGINATE_POLL_SECONDS": "1",
        },
    )
    phone: asyncio.Future[Any] | None = None
    try:
        async with StrictTwilioBot(echo=True) as bot:
            account = Account(name="dead node", webhook_secret=secret, webhook_url=receiver.url)
            repo.put(account)
            number = add_number(repo, account, Route(socket_url=bot.url))
            await anyio.to_thread.run_sync(edge.start)
            await poll(lambda: repo.get(EdgeNode, node_id, consistent=True), "registration")

            options = PhoneOptions(
                uri=f"sip:{number}@{edge.address}",
                hangup_after=120,
                local_host=HOST,
                rtp_ports=free_udp_range(8),
            )
            phone = asyncio.ensure_future(run_phone(options, out=io.StringIO()))
            session = await started(bot)
            call_uuid = session.start["start"]["customParameters"]["call_uuid"]  # type: ignore[index]

            def answered() -> Call | None:
                call = repo.get(Call, call_uuid, consistent=True)
                return call if call and call.status is CallStatus.IN_PROGRESS else None

            live = await poll(answered, "answered call record")
            assert live.node_id == node_id

            await anyio.to_thread.run_sync(edge.process.kill)  # kill -9: nothing is cleaned up
            assert edge.process.returncode == -9
            assert repo.get(Call, call_uuid, consistent=True).status is CallStatus.IN_PROGRESS  # type: ignore[union-attr]

            ctx = Context(Settings.load(reaper_grace_seconds=GRACE_S))

            def reaped() -> bool:
                return reaper.run(ctx).calls_ended >= 1

            await poll(reaped, "reaped call")
    finally:
        if phone is not None:  # its node is gone: no BYE will ever come
            phone.cancel()
            with contextlib.suppress(BaseException):
                await phone
        await anyio.to_thread.run_sync(edge.stop)

    try:
        sync = boto3.client("sqs")
        event_poller = SqsPoller(sync, events_queue, events.handler, "EventsFunction")
        callback_poller = SqsPoller(sync, callbacks_queue, callbacks.handler, "CallbacksFunction")
        event_poller.wait_seconds = callback_poller.wait_seconds = 0

        def delivered() -> dict[str, Any] | None:
            event_poller.poll_once()
            callback_poller.poll_once()
            for request in receiver.requests:
                payload = request["payload"]
                if payload["event_type"] == "call.completed" and payload["call_uuid"] == call_uuid:
                    return request
            return None

        request = await poll(delivered, "call.completed callback")
    finally:
        receiver.close()

    record = repo.get(Call, call_uuid, consistent=True)
    assert record is not None
    assert record.status is CallStatus.COMPLETED  # it had been answered
    assert record.ended_by == "reaper"
    assert record.hangup_cause == "NETWORK_OUT_OF_ORDER"
    assert record.end_detail is not None and node_id in record.end_detail
    assert record.answered_at is not None and record.duration is not None
    assert request["valid"], request["headers"]  # the account's secret signed it
    payload = request["payload"]
    assert (payload["call_status"], payload["hangup_cause"], payload["duration"]) == (
        "completed",
        "NETWORK_OUT_OF_ORDER",
        record.duration,
    )
    counter = repo.client.get_item(
        TableName=repo.table,
        Key=call_slots.counter_key(account.account_id),
        ConsistentRead=True,
    )["Item"]
    assert counter["active"] == {"N": "0"}  # the call's slot went back
