"""What the node writes so the reaper can clean up after it: the live index, its run, its queues.

The reaper (functions/workers/reaper.py) finds a dead node's calls through the sparse ``live``
index and tells a restarted node's runs apart by ``run_id``; these tests hold the node's side of
that contract against moto: CallRecorder puts a call in the index when it creates or claims it
(with its run), every terminal transition takes it out, and NodeRegistry publishes its run and
gives its command queue a DLQ that it keeps across a restart when its id is stable.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from edge_media.control.records import CallRecorder
from edge_media.control.registry import DLQ_MAX_RECEIVES, NodeRegistry
from shared.dynamo import mapping
from shared.dynamo.repository import AsyncRepository
from shared.events import CallAnswered, CallCompleted
from shared.models import Call, CallStatus, Direction, EdgeNode
from shared.settings import Settings

pytestmark = pytest.mark.anyio
RUN = "run-0123456789abcdef"


def new_call(**fields: Any) -> Call:
    values: dict[str, Any] = {
        "account_id": "acc_live_index",
        "direction": Direction.INBOUND,
        "from_number": "+15005550006",
        "to_number": "+15005550001",
    }
    return Call(**{**values, **fields})


async def raw(aio: Any, call: Call) -> dict[str, Any]:
    request = mapping.get_request(
        aio.table_name, mapping.key(Call, call.call_uuid), consistent=True
    )
    item: dict[str, Any] = (await aio.dynamodb.get_item(**request))["Item"]
    return item


async def live_index(aio: Any) -> dict[str, dict[str, Any]]:
    """The live index as the reaper scans it: call pk -> projected item."""
    reply = await aio.dynamodb.scan(TableName=aio.table_name, IndexName=mapping.LIVE_INDEX)
    return {item["pk"]["S"]: item for item in reply.get("Items", [])}


@pytest.fixture
async def recorder(aio: Any, settings: Settings, wall: Any) -> CallRecorder:
    events_queue = await aio.new_queue("events")
    node_settings = settings.model_copy(update={"events_queue_url": events_queue})
    return CallRecorder(
        aio.dynamodb, aio.sqs, node_settings, node_id="node-live", run_id=RUN, clock=wall
    )


async def test_a_created_call_is_in_the_live_index_until_it_ends(
    aio: Any, recorder: CallRecorder
) -> None:
    call = new_call()
    assert await recorder.create(call)
    pk = f"CALL#{call.call_uuid}"
    entry = (await live_index(aio))[pk]
    assert entry["live_node"] == {"S": "node-live"}
    assert entry["node_run"] == {"S": RUN}
    assert entry["created_at"]["S"].startswith(str(call.created_at.year))
    assert "from_number" not in entry  # projected: keys, created_at and node_run only

    answered = CallAnswered(call_uuid=call.call_uuid, account_id=call.account_id, node_id="n")
    assert await recorder.record(answered)
    assert pk in await live_index(aio)  # a forward, non-terminal move keeps it
    completed = CallCompleted(call_uuid=call.call_uuid, account_id=call.account_id, node_id="n")
    assert await recorder.record(completed)
    assert pk not in await live_index(aio)
    item = await raw(aio, call)
    assert item["status"] == {"S": "completed"} and "live_node" not in item


async def test_a_claimed_originate_enters_the_index_with_the_claiming_run(
    aio: Any, recorder: CallRecorder
) -> None:
    call = new_call(direction=Direction.OUTBOUND)  # queued, no node: as the API writes it
    await aio.dynamodb.put_item(**mapping.put_request(aio.table_name, call))
    assert f"CALL#{call.call_uuid}" not in await live_index(aio)

    claimed = await recorder.claim(call.call_uuid)

    assert claimed is not None and claimed.node_id == "node-live"
    entry = (await live_index(aio))[f"CALL#{call.call_uuid}"]
    assert (entry["live_node"], entry["node_run"]) == ({"S": "node-live"}, {"S": RUN})
    assert claimed.status is CallStatus.QUEUED


async def test_the_registry_publishes_its_run_and_gives_its_queue_a_dlq(
    aio: Any, settings: Settings, wall: Any
) -> None:
    node_id = f"node-{uuid.uuid4().hex[:10]}"
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address="127.0.0.1:5060",
        active_calls=lambda: 0,
        clock=wall,
        run_id=RUN,
    )
    queue_url = await registry.start()
    try:
        node = await AsyncRepository(aio.dynamodb, aio.table_name).get(EdgeNode, node_id)
        assert node is not None and node.run_id == RUN
        dlq_url = (
            await aio.sqs.get_queue_url(QueueName=f"{settings.node_queue_prefix}{node_id}-dlq")
        )["QueueUrl"]
        assert registry.dlq_url == dlq_url
        dlq_arn = (await aio.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"]))[
            "Attributes"
        ]["QueueArn"]
        attrs = (await aio.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
            "Attributes"
        ]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_arn
        assert int(redrive["maxReceiveCount"]) == DLQ_MAX_RECEIVES
    finally:
        await registry.stop()
    # Not a stable id here (keep_queue off): both queues go with the node.
    for url in (queue_url, dlq_url):
        listed = await aio.sqs.list_queues(QueueNamePrefix=url.rsplit("/", 1)[-1])
        assert url not in listed.get("QueueUrls", [])


async def test_a_stable_node_keeps_its_queues_and_gets_them_back(
    aio: Any, settings: Settings, wall: Any
) -> None:
    node_id = f"node-{uuid.uuid4().hex[:10]}"

    def registry(run_id: str) -> NodeRegistry:
        return NodeRegistry(
            aio.dynamodb,
            aio.sqs,
            settings,
            node_id=node_id,
            sip_address="127.0.0.1:5060",
            active_calls=lambda: 0,
            clock=wall,
            run_id=run_id,
            keep_queue=True,
        )

    first = registry("run-1")
    queue_url = await first.start()
    await aio.sqs.send_message(QueueUrl=queue_url, MessageBody="{}")
    await first.stop()
    second = registry("run-2")
    try:
        assert await second.start() == queue_url  # the same queue, message and all
        assert await aio.counts(queue_url) == (1, 0)
        node = await AsyncRepository(aio.dynamodb, aio.table_name).get(EdgeNode, node_id)
        assert node is not None and node.run_id == "run-2"
    finally:
        await second.stop()
    await aio.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
