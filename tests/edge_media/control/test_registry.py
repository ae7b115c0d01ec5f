"""NodeRegistry against moto: the node's queue, its EdgeNode item, heartbeat, draining and stop."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from edge_media.control.registry import NodeRegistry, queue_attributes
from shared.dynamo import mapping
from shared.dynamo.repository import AsyncRepository
from shared.models import EdgeNode, NodeStatus
from shared.settings import Settings

pytestmark = pytest.mark.anyio
WAIT_LIMIT = 10.0  # generous bound for a background task to act; never a timing assertion
POLL_SECONDS = 0.02


def new_node_id() -> str:
    return f"node-{uuid.uuid4().hex[:12]}"


async def raw_item(aio: Any, node_id: str) -> dict[str, Any] | None:
    request = mapping.get_request(aio.table_name, mapping.key(EdgeNode, node_id), consistent=True)
    item = (await aio.dynamodb.get_item(**request)).get("Item")
    return dict(item) if item else None


async def wait_for(predicate: Any) -> None:
    """Poll an async condition within WAIT_LIMIT (bounded)."""
    for _ in range(int(WAIT_LIMIT / POLL_SECONDS)):
        if await predicate():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"condition not met within {WAIT_LIMIT} s")


class FlakyDynamo:
    """The real aioboto3 client, except that the next ``failures`` UpdateItem calls fail."""

    def __init__(self, client: Any, failures: int) -> None:
        self._client = client
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def update_item(self, **request: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return await self._client.update_item(**request)


async def test_start_creates_the_queue_and_writes_the_item(aio, settings: Settings, wall) -> None:
    node_id = new_node_id()
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: 3,
        ttl_seconds=60.0,
        clock=wall,
    )
    queue_url = await registry.start()
    try:
        assert queue_url == registry.queue_url
        assert queue_url.endswith(f"/{settings.node_queue_prefix}{node_id}")
        attrs = (await aio.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
            "Attributes"
        ]
        assert attrs["VisibilityTimeout"] == "30"
        assert attrs["MessageRetentionPeriod"] == "300"
        assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
        node = await AsyncRepository(aio.dynamodb, aio.table_name).get(EdgeNode, node_id)
        assert node is not None
        assert (node.queue_url, node.sip_address, node.status, node.active_calls) == (
            queue_url,
            "127.0.0.1:5060",
            NodeStatus.ACTIVE,
            3,
        )
        assert node.heartbeat_at == wall.now
        item = await raw_item(aio, node_id)
        assert item is not None
        # The TTL attribute is epoch seconds (a number), now + ttl.
        assert item["expires_at"] == {"N": str(int(wall.now.timestamp()) + 60)}
        assert item["gsi1pk"] == {"S": "NODES"}
    finally:
        await registry.stop()


async def test_heartbeat_moves_expiry_and_reports_active_calls(
    aio, settings: Settings, wall
) -> None:
    node_id = new_node_id()
    calls = [0]
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: calls[0],
        heartbeat_seconds=0.05,
        ttl_seconds=60.0,
        clock=wall,
    )
    await registry.start()
    first = int(wall.now.timestamp()) + 60
    try:
        wall.advance(30)
        calls[0] = 7
        later = int(wall.now.timestamp()) + 60

        async def refreshed() -> bool:
            item = await raw_item(aio, node_id)
            return item is not None and item["expires_at"] == {"N": str(later)}

        await wait_for(refreshed)
        item = await raw_item(aio, node_id)
        assert item is not None
        assert int(item["expires_at"]["N"]) == first + 30
        assert item["active_calls"] == {"N": "7"}
        assert item["heartbeat_at"] == {"S": "2026-02-09T14:30:30.000Z"}
        assert registry.beats >= 1
    finally:
        await registry.stop()


async def test_heartbeat_failures_are_retried_not_fatal(aio, settings: Settings, wall) -> None:
    node_id = new_node_id()
    flaky = FlakyDynamo(aio.dynamodb, failures=2)
    registry = NodeRegistry(
        flaky,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: 1,
        heartbeat_seconds=0.05,
        ttl_seconds=60.0,
        clock=wall,
    )
    await registry.start()
    try:
        wall.advance(15)

        async def beaten() -> bool:
            return registry.beats >= 1

        await wait_for(beaten)
        assert registry.beat_failures == 2
        assert flaky.failures == 0
        item = await raw_item(aio, node_id)
        assert item is not None
        assert item["expires_at"] == {"N": str(int(wall.now.timestamp()) + 60)}
    finally:
        await registry.stop()


async def test_a_lost_item_is_written_again_by_the_next_beat(aio, settings: Settings, wall) -> None:
    node_id = new_node_id()
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="10.0.0.5:5060",
        active_calls=lambda: 2,
        heartbeat_seconds=3600.0,  # the loop stays asleep; the test beats by hand
        ttl_seconds=7200.0,
        clock=wall,
    )
    queue_url = await registry.start()
    try:
        await aio.dynamodb.delete_item(TableName=aio.table_name, Key=mapping.key(EdgeNode, node_id))
        await registry.beat()
        node = await AsyncRepository(aio.dynamodb, aio.table_name).get(EdgeNode, node_id)
        assert node is not None
        assert (node.queue_url, node.sip_address, node.active_calls) == (
            queue_url,
            "10.0.0.5:5060",
            2,
        )
    finally:
        await registry.stop()


async def test_draining_is_written_and_kept_by_later_beats(aio, settings: Settings, wall) -> None:
    node_id = new_node_id()
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: 0,
        heartbeat_seconds=3600.0,
        ttl_seconds=7200.0,
        clock=wall,
    )
    await registry.start()
    try:
        await registry.set_draining()
        item = await raw_item(aio, node_id)
        assert item is not None and item["status"] == {"S": "draining"}
        await registry.beat()
        item = await raw_item(aio, node_id)
        assert item is not None and item["status"] == {"S": "draining"}
    finally:
        await registry.stop()


async def test_stop_removes_the_item_and_the_queue(aio, settings: Settings, wall) -> None:
    node_id = new_node_id()
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: 0,
        heartbeat_seconds=0.05,
        clock=wall,
    )
    queue_url = await registry.start()
    await registry.stop()
    assert await raw_item(aio, node_id) is None
    with pytest.raises(ClientError) as raised:
        await aio.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    assert "NonExistentQueue" in str(raised.value.response["Error"]["Code"])
    # The heartbeat is over: nothing writes the item again.
    await asyncio.sleep(0.2)
    assert await raw_item(aio, node_id) is None


async def test_an_existing_queue_of_the_same_node_is_adopted(aio, settings: Settings, wall) -> None:
    node_id = new_node_id()
    name = f"{settings.node_queue_prefix}{node_id}"
    old = (await aio.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "7"}))[
        "QueueUrl"
    ]
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: 0,
        clock=wall,
    )
    try:
        assert await registry.start() == old
        attrs = (await aio.sqs.get_queue_attributes(QueueUrl=old, AttributeNames=["All"]))[
            "Attributes"
        ]
        assert attrs["VisibilityTimeout"] == queue_attributes()["VisibilityTimeout"]
    finally:
        await registry.stop()


@pytest.mark.parametrize(
    ("node_id", "heartbeat", "ttl"),
    [("bad id!", 15.0, 60.0), ("x" * 80, 15.0, 60.0), ("", 15.0, 60.0), ("ok", 15.0, 15.0)],
)
def test_bad_names_and_a_ttl_shorter_than_the_beat_are_refused(
    node_id: str, heartbeat: float, ttl: float
) -> None:
    settings = Settings.load({})
    with pytest.raises(ValueError):
        NodeRegistry(
            None,
            None,
            settings,
            node_id=node_id,
            sip_address="127.0.0.1:5060",
            active_calls=lambda: 0,
            heartbeat_seconds=heartbeat,
            ttl_seconds=ttl,
        )
