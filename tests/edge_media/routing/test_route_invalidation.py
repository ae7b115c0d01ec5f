"""Route changes through the API reach a running node's next call at once, not after the TTL.

A real node (``running_gateway``: SIP/RTP on loopback, DynamoDB and SQS at moto) takes calls from
the project's softphone to a number routed to one of two Twilio-stream bots. The number is changed
and deleted through the API's own functions (what the REST API and the dashboard run), which send
``Invalidate`` to the node's queue. The node's caches are set to an hour, so only the invalidation
can explain the next call seeing the change. Waits are bounded polls, never timing assertions.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aioboto3
import anyio
import pytest

from edge_media.control.consumer import CommandConsumer
from edge_media.node import EdgeNode
from edge_media.phone.phone_result import PhoneResult
from functions.api import numbers as num_api
from functions.api.auth import Principal
from functions.context import Context
from shared.commands import Invalidate, NodeCommand
from shared.dynamo.repository import Repository
from shared.models import ApiKeyRole, Number, Route
from shared.settings import Settings
from tests.interop.gateway import add_number, make_tenant, node_address, phone_call, running_gateway
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

WAIT_LIMIT = 10.0  # bound for background work; never a timing assertion
POLL_SECONDS = 0.02
HOUR = 3600.0


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_LIMIT / POLL_SECONDS)):
        if predicate():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"condition not met within {WAIT_LIMIT} s")


async def call(node: EdgeNode, number: str) -> PhoneResult:
    return await phone_call(f"sip:{number}@{node_address(node)}", hangup_after=0.3)


async def through_the_api(node: EdgeNode, work: Callable[[], Any]) -> None:
    """Run an API function (blocking boto3) off the loop, then wait until the node applied the
    invalidation it sent."""
    assert node.routing is not None
    before = node.routing.cache.invalidations
    await anyio.to_thread.run_sync(work)
    await until(lambda: node.routing is not None and node.routing.cache.invalidations > before)


async def test_a_number_changed_or_deleted_through_the_api_routes_the_next_call(
    aws: Any, repo: Repository
) -> None:
    ctx = Context(Settings.load())  # the API's; the bots' URLs are IP literals (no DNS)
    async with StrictTwilioBot() as first, StrictTwilioBot() as second:
        tenant = make_tenant(repo)
        number = add_number(repo, tenant.account, Route(socket_url=first.url))
        me = Principal(tenant.account.account_id, ApiKeyRole.ACCOUNT, "key_test")
        async with running_gateway(route_cache_seconds=HOUR, account_cache_seconds=HOUR) as node:
            assert node.routing is not None
            answered = await call(node, number)
            assert answered.answered, answered
            await first.next_session()

            # A write nobody tells the node about: the cached route still answers (so the
            # invalidation below, not a cache that is not there, is what changes the route).
            repo.update(Number, (number,), {"route": {"socket_url": second.url}})
            stale = await call(node, number)
            assert stale.answered, stale
            await first.next_session()
            assert len(second.sessions) == 0

            body = num_api.NumberUpdate.model_validate({"route": {"socket_url": second.url}})
            await through_the_api(node, lambda: num_api.update_number(ctx, me, number, body))
            moved = await call(node, number)
            assert moved.answered, moved
            await second.next_session()
            assert len(first.sessions) == 2

            await through_the_api(node, lambda: num_api.delete_number(ctx, me, number))
            refused = await call(node, number)
            assert (refused.answered, refused.status) == (False, 404), refused
            assert (len(first.sessions), len(second.sessions)) == (2, 1)


async def test_an_invalidate_is_handled_without_a_call_uuid_in_the_log(
    aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer's log fields name the call of a call command only: an invalidate has none."""
    async with aioboto3.Session().client("sqs") as sqs:
        queue = (await sqs.create_queue(QueueName=f"agera-node-{uuid.uuid4().hex[:12]}"))[
            "QueueUrl"
        ]
        got: list[NodeCommand] = []

        async def handler(command: NodeCommand) -> None:
            got.append(command)
            raise RuntimeError("the cache broke")  # so the consumer logs with its fields

        command = Invalidate(account_id="acc_1", kind="number", keys=["+15551230000"])
        await sqs.send_message(QueueUrl=queue, MessageBody=command.model_dump_json())
        consumer = CommandConsumer(sqs, queue, handler, name="commands", wait_seconds=0)
        with caplog.at_level(logging.ERROR, logger="agera.control.consumer"):
            assert await consumer.poll_once() == 1
    assert got == [command] and consumer.failed == 1
    [record] = [r for r in caplog.records if r.name == "agera.control.consumer"]
    fields = record.__dict__
    assert (fields["command"], fields["command_id"]) == ("invalidate", command.id)
    assert not hasattr(record, "call_uuid")
