"""CommandConsumer against moto SQS: once-only handling, poison bodies, retries, stop, back-off."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import anyio
import pydantic
import pytest

from edge_media.control.consumer import CommandConsumer, describe_invalid
from edge_media.control.recent_ids import RecentIds
from edge_media.errors import RetryLater
from shared.commands import Command, Hangup, Redirect, parse_command

pytestmark = pytest.mark.anyio
WAIT_LIMIT = 10.0  # bound for background work; never a timing assertion
POLL_SECONDS = 0.02
CALL = uuid.UUID("6f2b1a52-8d0e-4c55-9a43-2b8d1f0e9c11")


def hangup(**fields: Any) -> Hangup:
    return Hangup(call_uuid=CALL, account_id="acc_test", **fields)


class Recorder:
    """A handler that records what it got and can be told to fail."""

    def __init__(self) -> None:
        self.got: list[Command] = []
        self.fail_with: dict[str, BaseException] = {}

    async def __call__(self, command: Command) -> None:
        self.got.append(command)
        error = self.fail_with.pop(command.id, None)
        if error is not None:
            raise error

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.got]


async def send(aio: Any, queue_url: str, body: str) -> None:
    await aio.sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def until(predicate: Any) -> None:
    """Poll a condition on the consumer's counters, within WAIT_LIMIT (bounded)."""
    for _ in range(int(WAIT_LIMIT / POLL_SECONDS)):
        if predicate():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"condition not met within {WAIT_LIMIT} s")


async def test_a_command_sent_twice_is_handled_once(aio) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=1)
    command = hangup()
    await send(aio, queue, command.model_dump_json())
    await send(aio, queue, command.model_dump_json())  # the API retried; SQS may also repeat
    consumer.start()
    try:
        await until(lambda: consumer.handled + consumer.duplicates == 2)
    finally:
        await consumer.stop()
    assert handler.ids == [command.id]
    assert (consumer.handled, consumer.duplicates) == (1, 1)
    assert await aio.counts(queue) == (0, 0)  # both copies deleted


async def test_a_repeat_in_a_later_receive_is_dropped(aio) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=0)
    command = hangup(cause="USER_BUSY")
    await send(aio, queue, command.model_dump_json())
    assert await consumer.poll_once() == 1
    await send(aio, queue, command.model_dump_json())
    assert await consumer.poll_once() == 1
    assert handler.got == [command]
    assert await aio.counts(queue) == (0, 0)


async def test_ids_already_known_to_the_memory_are_dropped(aio) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    command = hangup()
    recent = RecentIds(capacity=10, ttl_seconds=60.0)
    recent.add(command.id, now=0.0)
    consumer = CommandConsumer(
        aio.sqs, queue, handler, name="node", wait_seconds=0, recent=recent, clock=lambda: 1.0
    )
    await send(aio, queue, command.model_dump_json())
    assert await consumer.poll_once() == 1
    assert (handler.got, consumer.duplicates) == ([], 1)
    assert await aio.counts(queue) == (0, 0)


async def test_a_copy_in_the_same_batch_stays_when_the_first_is_handed_back(aio) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    command = hangup()
    handler.fail_with[command.id] = RetryLater("not yet", delay_seconds=0)
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=0)
    await send(aio, queue, command.model_dump_json())
    await send(aio, queue, command.model_dump_json())
    assert await consumer.poll_once() == 2  # one batch holding both copies
    assert handler.ids == [command.id]  # the copy waited for the first, then stayed
    assert (consumer.retried, consumer.duplicates) == (1, 1)
    assert await aio.counts(queue) == (1, 1)  # released one visible, the copy still in flight


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("not json", "body: Invalid JSON"),
        ('{"type": "teleport"}', "type: Input tag 'teleport'"),
        (
            '{"type": "hangup", "version": 2, "id": "cmd_v2", "account_id": "a",'
            ' "call_uuid": "6f2b1a52-8d0e-4c55-9a43-2b8d1f0e9c11"}',
            "version: Input should be 1",
        ),
        (
            '{"type": "originate", "id": "cmd_o", "account_id": "a",'
            ' "call_uuid": "6f2b1a52-8d0e-4c55-9a43-2b8d1f0e9c11"}',
            "destination_number: Field required",
        ),
    ],
)
async def test_a_malformed_body_is_logged_naming_the_field_and_deleted(
    aio, caplog: pytest.LogCaptureFixture, body: str, named: str
) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=0)
    await send(aio, queue, body)
    with caplog.at_level(logging.WARNING, logger="agera.control.consumer"):
        assert await consumer.poll_once() == 1
    assert handler.got == []
    assert consumer.invalid == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "agera.control.consumer"]
    assert named in line
    assert "\n" not in line
    assert await aio.counts(queue) == (0, 0)


def test_describe_invalid_reports_how_many_more_errors() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        parse_command('{"type": "redirect", "account_id": 5}')
    text = describe_invalid(raised.value)
    assert text.startswith("call_uuid: Field required (and ")
    assert text.endswith(" more)")


async def test_the_loop_keeps_going_after_a_handler_raises(
    aio, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    poison, good = hangup(), hangup()
    handler.fail_with[poison.id] = RuntimeError("boom")
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=1)
    consumer.start()
    try:
        with caplog.at_level(logging.ERROR, logger="agera.control.consumer"):
            await send(aio, queue, poison.model_dump_json())
            await until(lambda: consumer.failed == 1)
            await send(aio, queue, good.model_dump_json())
            await until(lambda: consumer.handled == 1)
    finally:
        await consumer.stop()
    assert handler.ids == [poison.id, good.id]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [poison.id in r.getMessage() for r in errors] == [True]
    assert errors[0].exc_info is not None
    assert await aio.counts(queue) == (0, 0)  # the poison command was deleted, not looped


async def test_retry_later_leaves_the_command_for_redelivery(aio) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    command = Redirect(call_uuid=CALL, account_id="acc_test", media_server="wss://bot.test/ws")
    handler.fail_with[command.id] = RetryLater("table busy", delay_seconds=0)
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=0)
    await send(aio, queue, command.model_dump_json())
    assert await consumer.poll_once() == 1
    assert consumer.retried == 1
    assert await aio.counts(queue) == (1, 0)  # released: visible again at once
    assert await consumer.poll_once() == 1  # the retry is handled, not taken for a duplicate
    assert handler.ids == [command.id, command.id]
    assert (consumer.handled, consumer.duplicates) == (1, 0)
    assert await aio.counts(queue) == (0, 0)


async def test_retry_later_without_delay_keeps_the_visibility_timeout(aio) -> None:
    queue = await aio.new_queue("node")
    handler = Recorder()
    command = hangup()
    handler.fail_with[command.id] = RetryLater("node full")
    consumer = CommandConsumer(aio.sqs, queue, handler, name="node", wait_seconds=0)
    await send(aio, queue, command.model_dump_json())
    await consumer.poll_once()
    assert await aio.counts(queue) == (0, 1)  # still there, invisible until its timeout


async def test_nothing_is_received_while_not_accepting(aio) -> None:
    queue = await aio.new_queue("originate")
    handler = Recorder()
    accepting = [False]
    consumer = CommandConsumer(
        aio.sqs,
        queue,
        handler,
        name="originate",
        wait_seconds=1,
        accepting=lambda: accepting[0],
        idle_seconds=0.05,
    )
    command = hangup()
    await send(aio, queue, command.model_dump_json())
    consumer.start()
    try:
        await asyncio.sleep(0.3)  # several idle rounds
        assert handler.got == []
        assert await aio.counts(queue) == (1, 0)  # never received: other nodes may take it
        accepting[0] = True
        await until(lambda: consumer.handled == 1)
    finally:
        await consumer.stop()
    assert handler.ids == [command.id]


async def test_stop_cuts_a_long_poll(aio) -> None:
    queue = await aio.new_queue("node")
    consumer = CommandConsumer(aio.sqs, queue, Recorder(), name="node", wait_seconds=20)
    consumer.start()
    await asyncio.sleep(0.2)  # now inside the 20 s long poll
    with anyio.fail_after(5):  # far below the 20 s the poll would otherwise take
        await consumer.stop()
    assert not consumer.running


async def test_stopping_a_shared_queue_finishes_its_poll_and_hands_back_what_it_brings(
    aio,
) -> None:
    """A cut poll would still take the next message at SQS and hide it for the visibility
    timeout; a shared queue's consumer lets it end and makes its messages visible at once."""
    queue = await aio.new_queue("originate")
    handler = Recorder()
    consumer = CommandConsumer(
        aio.sqs, queue, handler, name="originate", wait_seconds=3, shared=True
    )
    consumer.start()
    await asyncio.sleep(0.3)  # inside the long poll
    stopping = asyncio.ensure_future(consumer.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # the poll is not cut
    command = hangup()
    await send(aio, queue, command.model_dump_json())  # the poll in flight takes it
    with anyio.fail_after(WAIT_LIMIT):
        await stopping
    assert not consumer.running
    assert (consumer.handed_back, handler.ids) == (1, [])
    assert await aio.counts(queue) == (1, 0)  # visible again at once, for another node
    other = Recorder()
    taker = CommandConsumer(aio.sqs, queue, other, name="originate", wait_seconds=1, shared=True)
    await taker.poll_once()
    assert other.ids == [command.id]


async def test_stop_lets_a_running_handler_finish(aio) -> None:
    queue = await aio.new_queue("node")
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(command: Command) -> None:
        started.set()
        await release.wait()
        finished.append(command.id)

    consumer = CommandConsumer(aio.sqs, queue, slow, name="node", wait_seconds=1)
    command = hangup()
    await send(aio, queue, command.model_dump_json())
    consumer.start()
    await until(started.is_set)
    stopping = asyncio.ensure_future(consumer.stop(grace_seconds=WAIT_LIMIT))
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await stopping
    assert finished == [command.id]
    assert await aio.counts(queue) == (0, 0)


async def test_sqs_errors_back_off_and_the_loop_survives(aio) -> None:
    missing = f"agera-test-missing-{uuid.uuid4().hex[:8]}"
    probe = await aio.new_queue("probe")  # a real URL; the missing queue's differs by name
    url = probe.rsplit("/", 1)[0] + "/" + missing
    handler = Recorder()
    consumer = CommandConsumer(
        aio.sqs, url, handler, name="node", wait_seconds=0, backoff_base=0.01, backoff_cap=0.05
    )
    consumer.start()
    try:
        await until(lambda: consumer.receive_errors >= 3)
        assert consumer.running
        created = (await aio.sqs.create_queue(QueueName=missing))["QueueUrl"]
        assert created == url
        command = hangup()
        await send(aio, url, command.model_dump_json())
        await until(lambda: consumer.handled == 1)
    finally:
        await consumer.stop()
    assert handler.ids == [command.id]


@pytest.mark.parametrize(("wait", "batch"), [(21, 10), (-1, 10), (20, 0), (20, 11)])
def test_limits_outside_sqs_are_refused(wait: int, batch: int) -> None:
    async def handler(command: Command) -> None:
        pass

    with pytest.raises(ValueError):
        CommandConsumer(None, "url", handler, name="x", wait_seconds=wait, max_messages=batch)
