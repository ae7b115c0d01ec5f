"""Events SQS would not take wait in the spool and go late, oldest first; the spool is bounded."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from edge_media.control.event_spool import EventSpool
from edge_media.control.records import CallRecorder
from shared.dynamo.repository import Repository
from shared.events import CallRinging, parse_event
from shared.models import Call, Direction
from shared.settings import Settings

pytestmark = pytest.mark.anyio


class FlakyQueue:
    """Stands in for SQS: refuses the first ``failures`` sends, then takes everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.taken: list[str] = []

    async def send(self, body: str) -> bool:
        if self.failures > 0:
            self.failures -= 1
            return False
        self.taken.append(body)
        return True


async def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached in time")


async def test_spooled_events_go_late_in_order() -> None:
    queue = FlakyQueue(failures=3)
    spool = EventSpool(queue.send, retry_base=0.001, retry_cap=0.002)
    for n in range(3):
        spool.put(f"e{n}", f"event {n}")
    spool.start()
    await wait_until(lambda: spool.pending == 0)
    await spool.close()
    assert queue.taken == ["e0", "e1", "e2"]
    assert (spool.spooled, spool.resent, spool.dropped) == (3, 3, 0)


async def test_a_full_spool_drops_the_oldest_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    queue = FlakyQueue(failures=10**9)
    spool = EventSpool(queue.send, capacity=2)
    with caplog.at_level(logging.ERROR, logger="agera.control.events"):
        for n in range(4):
            spool.put(f"e{n}", f"event {n}")
    assert spool.pending == 2 and spool.dropped == 2
    assert len([r for r in caplog.records if "spool full" in r.getMessage()]) == 1
    queue.failures = 0
    await spool.close()
    assert queue.taken == ["e2", "e3"]  # the newest survive: call.completed of calls ending now


async def test_close_logs_what_it_leaves_behind(caplog: pytest.LogCaptureFixture) -> None:
    spool = EventSpool(FlakyQueue(failures=10**9).send)
    spool.put("e0", "call x call.completed")
    with caplog.at_level(logging.ERROR, logger="agera.control.events"):
        await spool.close(seconds=0.05)
    assert any(
        "never queued" in r.getMessage() and "call x" in r.getMessage() for r in caplog.records
    )


@pytest.fixture
def sync_repo(aws: Any) -> Repository:
    return Repository(boto3.session.Session().client("dynamodb"), aws.table_name)


async def test_an_event_sqs_refused_reaches_the_queue_once_it_is_back(
    aio, settings: Settings, sync_repo: Repository
) -> None:
    real = await aio.new_queue("events-back")
    gone = real.rsplit("/", 1)[0] + f"/missing-{uuid.uuid4().hex[:8]}"
    recorder = CallRecorder(
        aio.dynamodb,
        aio.sqs,
        settings.model_copy(update={"events_queue_url": gone}),
        node_id="node-spool",
        send_backoff_seconds=0.01,
    )
    recorder.spool = EventSpool(recorder._send_once, retry_base=0.01, retry_cap=0.02)
    call = Call(
        account_id="acc_spool",
        direction=Direction.INBOUND,
        from_number="+15550001",
        to_number="+15550002",
        node_id="node-spool",
    )
    sync_repo.put(call)
    ringing = CallRinging(
        call_uuid=call.call_uuid, account_id=call.account_id, node_id="node-spool"
    )
    assert await recorder.record(ringing) is True  # the record took it; SQS did not
    assert recorder.unsent == 1 and recorder.spool.pending == 1
    recorder.events_queue_url = real  # SQS is back
    recorder.spool.start()
    await wait_until(lambda: recorder.spool.pending == 0)
    await recorder.spool.close()
    assert [parse_event(b).id for b in await aio.bodies(real)] == [ringing.id]
