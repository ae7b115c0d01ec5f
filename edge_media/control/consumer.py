"""Long-poll one SQS command queue and hand each valid, new command to the node once.

A node consumes two queues with this class: its own (hangup/transfer/redirect for calls it owns,
and invalidations of its route cache, which name no call) and the shared originate queue. The
rules come from SQS's contract:

- Delivery is at least once, so a command id handled recently is dropped (``RecentIds``); across
  nodes, the call record's conditional claim is what makes an originate run once.
- A message that is not deleted comes back after its visibility timeout. Only a handler that says
  so (``RetryLater``) leaves its message; anything else (malformed, unknown version, a handler
  crash) is deleted, because a poison command that loops forever is worse than one lost command.
- While ``accepting()`` is False (draining, or full) the node stops receiving, so the shared
  originate queue is served by nodes that can take calls.
- A long poll on a *shared* queue is never cut short when the consumer stops: cancelling the
  request only closes our side of the connection; SQS may still hand that request the next
  message, which then stays hidden for the visibility timeout (60 s for originate) with nobody to
  take it. The poll is let finish (at most ``wait_seconds``) and whatever it brings is handed
  back at once (visibility 0) for another node. A node's own queue has nobody else to serve it:
  its poll is cut at once.
- SQS errors (network, throttling) back off exponentially up to a cap; they never end the loop.

Handlers of one received batch run concurrently: a slow transfer must not hold a hangup. A handler
should return once the node owns the command's work (the call's own task does the rest); the next
receive waits for the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from edge_media.control.backoff import backoff_delay
from edge_media.control.recent_ids import DEFAULT_CAPACITY, DEFAULT_TTL_SECONDS, RecentIds
from edge_media.errors import RetryLater
from shared.commands import NodeCommand, parse_command

__all__ = ["CommandConsumer", "describe_invalid"]

logger = logging.getLogger("agera.control.consumer")

# SQS ReceiveMessage limits (API reference: MaxNumberOfMessages 1-10, WaitTimeSeconds 0-20).
MAX_BATCH = 10
MAX_WAIT_SECONDS = 20
IDLE_SECONDS = 1.0  # how often a consumer that is not accepting looks again
ERROR_BACKOFF_BASE = 0.5
ERROR_BACKOFF_CAP = 20.0
STOP_GRACE_SECONDS = 5.0  # how long stop() lets running handlers finish before cancelling them
RECEIVE_MARGIN_SECONDS = 5.0  # beyond wait_seconds, for a stopping shared queue's last poll
COMMAND_TAGS = frozenset({"originate", "hangup", "transfer", "redirect", "invalidate"})

Handler = Callable[[NodeCommand], Awaitable[None]]


def describe_invalid(exc: pydantic.ValidationError) -> str:
    """One line naming the field at fault in a rejected command body."""
    errors = exc.errors()
    if not errors:
        return "invalid command"
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    if loc and loc[0] in COMMAND_TAGS:  # the union member's name, not a field
        loc = loc[1:]
    if loc:
        field = ".".join(loc)
    elif str(first["type"]).startswith("union_tag"):
        field = "type"
    else:
        field = "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {first['msg']}{more}"


def _body_id(body: str) -> str | None:
    """The ``id`` of a body that failed validation, if it has one (for the log line)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


class CommandConsumer:
    """``start()`` a polling task; ``await stop()`` ends it (an idle long poll at once)."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        *,
        name: str,
        wait_seconds: int = MAX_WAIT_SECONDS,
        max_messages: int = MAX_BATCH,
        accepting: Callable[[], bool] = lambda: True,
        recent: RecentIds | None = None,
        idle_seconds: float = IDLE_SECONDS,
        backoff_base: float = ERROR_BACKOFF_BASE,
        backoff_cap: float = ERROR_BACKOFF_CAP,
        clock: Callable[[], float] = time.monotonic,
        shared: bool = False,
    ) -> None:
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(f"wait_seconds must be 0..{MAX_WAIT_SECONDS}")
        if not 1 <= max_messages <= MAX_BATCH:
            raise ValueError(f"max_messages must be 1..{MAX_BATCH}")
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.name = name
        self.wait_seconds = wait_seconds
        self.max_messages = max_messages
        self.accepting = accepting
        self.recent = (
            recent if recent is not None else RecentIds(DEFAULT_CAPACITY, DEFAULT_TTL_SECONDS)
        )
        self.idle_seconds = idle_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self.shared = shared  # other nodes consume the queue too (see the module docstring)
        # Counters for tests, health and metrics.
        self.handled = 0
        self.duplicates = 0
        self.invalid = 0
        self.failed = 0
        self.retried = 0
        self.receive_errors = 0
        self.handed_back = 0  # received by a poll that finished after stop()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._receiving = False  # a ReceiveMessage is in flight
        self._sleeping = False  # idle or backing off

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"consumer {self.name} already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"commands-{self.name}"
        )

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Stop receiving. A pause is cut at once; a long poll too, unless the queue is shared
        (then it finishes and its messages are handed back); running handlers get a grace."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        limit = grace_seconds
        if self._sleeping or (self._receiving and not self.shared):
            task.cancel()
        elif self._receiving:
            limit += self.wait_seconds + RECEIVE_MARGIN_SECONDS
        await asyncio.wait({task}, timeout=limit)
        if not task.done():
            logger.warning(
                "%s: handlers still running after %.1f s; cancelled", self.name, grace_seconds
            )
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: consumer ended with an error", self.name, exc_info=task.exception())

    # ----------------------------------------------------------------------- the loop

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            if not self.accepting():
                await self._pause(self.idle_seconds)
                continue
            try:
                messages = await self._receive()
            except Exception as exc:  # network, throttling, credentials: never fatal
                failures += 1
                self.receive_errors += 1
                delay = backoff_delay(failures, base=self.backoff_base, cap=self.backoff_cap)
                logger.warning(
                    "%s: receive failed (%s); retrying in %.1f s",
                    self.name,
                    exc,
                    delay,
                    extra={"queue": self.name, "failures": failures},
                )
                await self._pause(delay)
                continue
            failures = 0
            if self._stopping:
                await self._hand_back(messages)
                break
            if messages:
                await self.handle_batch(messages)

    async def _receive(self) -> list[dict[str, Any]]:
        self._receiving = True
        try:
            response = await self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.max_messages,
                WaitTimeSeconds=self.wait_seconds,
            )
        finally:
            self._receiving = False
        return list(response.get("Messages", []))

    async def _pause(self, seconds: float) -> None:
        self._sleeping = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._sleeping = False

    async def _hand_back(self, messages: list[dict[str, Any]]) -> None:
        """Messages of a poll that ended after stop(): visible again at once, for another node."""
        for message in messages:
            self.handed_back += 1
            logger.info(
                "%s: stopping; message %s handed back to the queue",
                self.name,
                message.get("MessageId"),
                extra={"queue": self.name},
            )
            await self._release(message, 0, _body_id(str(message.get("Body", ""))) or "unknown")

    async def poll_once(self) -> int:
        """One receive and its handling, outside the loop (tools and tests); messages received."""
        messages = await self._receive()
        if messages:
            await self.handle_batch(messages)
        return len(messages)

    async def handle_batch(self, messages: list[dict[str, Any]]) -> None:
        """Handle received messages concurrently; each one is deleted, left, or released.

        Copies of one command in the same batch are handled once: the first runs, the others
        follow its outcome (deleted when it was handled, left on the queue when handed back).
        """
        jobs: list[Awaitable[None]] = []
        copies: dict[str, list[dict[str, Any]]] = {}
        commands: dict[str, NodeCommand] = {}
        for message in messages:
            command = self._parse(message)
            if command is None:
                jobs.append(self._delete(message, None))
                continue
            copies.setdefault(command.id, []).append(message)
            commands.setdefault(command.id, command)
        jobs.extend(self._handle_copies(commands[cid], found) for cid, found in copies.items())
        await asyncio.gather(*jobs)

    # ----------------------------------------------------------------------- one command

    def _parse(self, message: dict[str, Any]) -> NodeCommand | None:
        body = str(message.get("Body", ""))
        try:
            return parse_command(body)
        except pydantic.ValidationError as exc:
            self.invalid += 1
            logger.warning(
                "%s: dropped an invalid command (id %s): %s",
                self.name,
                _body_id(body) or "unknown",
                describe_invalid(exc),
                extra={"queue": self.name, "message_id": message.get("MessageId")},
            )
            return None

    async def _handle_copies(self, command: NodeCommand, messages: list[dict[str, Any]]) -> None:
        first, *others = messages
        await self._handle(command, first)
        for other in others:
            self.duplicates += 1
            if self.recent.seen(command.id, self.clock()):
                logger.debug("%s: command %s handled; copy dropped", self.name, command.id)
                await self._delete(other, command.id)
            else:  # handed back: this copy stays on the queue as a retry too
                logger.debug("%s: command %s handed back; copy left", self.name, command.id)

    async def _handle(self, command: NodeCommand, message: dict[str, Any]) -> None:
        if self.recent.seen(command.id, self.clock()):
            self.duplicates += 1
            logger.debug("%s: command %s already handled; dropped", self.name, command.id)
            await self._delete(message, command.id)
            return
        extra = {"queue": self.name, "command_id": command.id, "command": command.type}
        call_uuid = getattr(command, "call_uuid", None)  # an invalidate is about no call
        if call_uuid is not None:
            extra["call_uuid"] = str(call_uuid)
        try:
            await self.handler(command)
        except RetryLater as retry:
            self.retried += 1
            logger.info(
                "%s: command %s left for redelivery: %s", self.name, command.id, retry, extra=extra
            )
            await self._release(message, retry.delay_seconds, command.id)
            return
        except Exception:
            self.failed += 1
            logger.exception(
                "%s: %s command %s failed; dropped (not retried)",
                self.name,
                command.type,
                command.id,
                extra=extra,
            )
        else:
            self.handled += 1
        self.recent.add(command.id, self.clock())
        await self._delete(message, command.id)

    async def _delete(self, message: dict[str, Any], command_id: str | None) -> None:
        try:
            await self.sqs.delete_message(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        except Exception as exc:  # it comes back later; the id memory drops it then
            logger.warning(
                "%s: could not delete message of command %s (%s)",
                self.name,
                command_id or "unknown",
                exc,
            )

    async def _release(
        self, message: dict[str, Any], delay_seconds: int | None, command_id: str
    ) -> None:
        if delay_seconds is None:
            return
        try:
            await self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=max(0, int(delay_seconds)),
            )
        except Exception as exc:  # then the visibility timeout runs out instead
            logger.warning(
                "%s: could not release command %s early (%s)", self.name, command_id, exc
            )
