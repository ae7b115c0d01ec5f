"""The node's entry in the fleet: its own command queue and a heartbeat-refreshed EdgeNode item.

The API sends a live command (hangup, transfer, redirect) to the node that owns the call by reading
that node's EdgeNode item for its queue URL (``functions/api/call_control.py``). So a node creates its
queue first, then publishes the item that points at it, and keeps the item alive with a heartbeat:
``expires_at`` is the table's TTL attribute, so a node that dies silently drops out of the fleet
within ``ttl_seconds`` (DynamoDB deletes expired items lazily; readers treat a past ``expires_at``
as gone). A failed heartbeat is retried sooner, never fatal: a node with live calls keeps serving
them while AWS is unreachable.

Queue names are ``{node_queue_prefix}{node_id}``: the control plane's IAM grant to send commands is
scoped to that prefix (template.yaml, SendToEdgeNodeCommandQueues). Each has a dead-letter queue,
``{node_queue_prefix}{node_id}-dlq``: a command the node fails to handle ``DLQ_MAX_RECEIVES`` times
is parked there for an operator instead of coming back every 30 s for the rest of its retention.

A node with a stable id (instance id, ``AGERA_NODE_ID`` or its state file: control/identity.py)
keeps both queues when it stops (``keep_queue``): SQS refuses to create a queue of a name deleted
less than 60 s ago, so a node that deleted its queue could not restart at once. The reaper
(functions/workers/reaper.py) deletes the queues of nodes gone for a day. ``run_id`` names this
process's run in the EdgeNode item, so the reaper can tell a restarted node's old calls apart.

Each heartbeat also carries the node's trunk registrations (``trunk_registrations``, read from a
callable like ``active_calls``): the control plane has no other view of them, and the dashboard's
trunks page shows them per live node. At most ``MAX_PUBLISHED_REGISTRATIONS`` are written, so
the item stays far below DynamoDB's 400 KB item limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from edge_media.control.backoff import backoff_delay
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed, translate
from shared.models import EdgeNode, NodeStatus, TrunkRegistrationState
from shared.settings import Settings

__all__ = ["NodeRegistry", "RegistryError", "queue_attributes"]

logger = logging.getLogger("agera.control.registry")

# SQS queue names: 1-80 characters, alphanumerics, hyphens and underscores (CreateQueue reference).
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
# A live command is handled in well under a second: the handler returns once the call's task owns
# the work. 30 s is long enough to never redeliver one that is being handled.
COMMAND_VISIBILITY_SECONDS = 30
# Commands are about live calls: one older than five minutes concerns a call that has moved on.
# (SQS's minimum retention is 60 s.)
COMMAND_RETENTION_SECONDS = 300
RECEIVE_WAIT_SECONDS = 20  # long polling by default (SQS maximum)
DLQ_SUFFIX = "-dlq"
# Handling a command takes well under a second and a repeat is dropped by id: five receives
# without a delete means the handler fails on it every time (a poison command), not bad luck.
DLQ_MAX_RECEIVES = 5
# Standard queues keep a message's first enqueue time in the DLQ, so the DLQ keeps them longer
# than the source; 14 days is the SQS maximum (template.yaml uses the same for its DLQs).
DLQ_RETENTION_SECONDS = 1_209_600
HEARTBEAT_RETRY_BASE = 1.0  # first retry of a failed heartbeat; doubles up to the heartbeat period
# About 200 bytes each: 500 is 100 KB, a quarter of the item limit.
MAX_PUBLISHED_REGISTRATIONS = 500
QUEUE_EXISTS_CODES = frozenset({"QueueAlreadyExists", "QueueNameExists"})
QUEUE_DELETED_RECENTLY_CODES = frozenset(
    {"QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently"}
)


class RegistryError(Exception):
    """The node could not make itself reachable (its queue or its item could not be written)."""


def queue_attributes(dlq_arn: str | None = None) -> dict[str, str]:
    """Attributes of a node's command queue (SQS wants every value as a string); with
    ``dlq_arn``, the redrive policy to the node's dead-letter queue."""
    attributes = {
        "VisibilityTimeout": str(COMMAND_VISIBILITY_SECONDS),
        "MessageRetentionPeriod": str(COMMAND_RETENTION_SECONDS),
        "ReceiveMessageWaitTimeSeconds": str(RECEIVE_WAIT_SECONDS),
        "SqsManagedSseEnabled": "true",
    }
    if dlq_arn is not None:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": DLQ_MAX_RECEIVES},
            separators=(",", ":"),
        )
    return attributes


def dlq_attributes() -> dict[str, str]:
    """Attributes of a node's dead-letter queue."""
    return {
        "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
        "SqsManagedSseEnabled": "true",
    }


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class NodeRegistry:
    """``queue_url = await start()``; ``await set_draining()``; ``await stop()``.

    ``dynamodb`` and ``sqs`` are aioboto3 clients the caller has entered. ``active_calls`` is read
    at each heartbeat, and so is ``trunk_registrations`` (per trunk id) when given. ``clock``
    gives the wall time written to the item (tests pass a fake one).
    """

    def __init__(
        self,
        dynamodb: Any,
        sqs: Any,
        settings: Settings,
        *,
        node_id: str,
        sip_address: str,
        active_calls: Callable[[], int],
        trunk_registrations: Callable[[], dict[str, TrunkRegistrationState]] | None = None,
        heartbeat_seconds: float = 15.0,
        ttl_seconds: float = 60.0,
        clock: Callable[[], datetime] = utc_now,
        run_id: str | None = None,
        keep_queue: bool = False,
    ) -> None:
        queue_name = f"{settings.node_queue_prefix}{node_id}"
        if not node_id or not QUEUE_NAME.match(queue_name + DLQ_SUFFIX):
            raise ValueError(
                f"queue name {queue_name!r} is not a valid SQS name (1-80 of A-Z a-z 0-9 _ -): "
                "shorten node_id or node_queue_prefix"
            )
        if heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds must be positive")
        if ttl_seconds <= heartbeat_seconds:
            raise ValueError("ttl_seconds must exceed heartbeat_seconds, or the item lapses")
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.table = settings.table_name
        self.node_id = node_id
        self.queue_name = queue_name
        self.dlq_name = queue_name + DLQ_SUFFIX
        self.run_id = run_id
        self.keep_queue = keep_queue
        self.dlq_url: str | None = None
        self.sip_address = sip_address
        self.active_calls = active_calls
        self.trunk_registrations = trunk_registrations
        self.heartbeat_seconds = heartbeat_seconds
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.queue_url: str | None = None
        self.status = NodeStatus.ACTIVE
        self.beats = 0
        self.beat_failures = 0
        self._created_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Create the queue, publish the item, start the heartbeat; returns the queue URL.

        Raises RegistryError when AWS refuses either write: a node nobody can reach must not
        take calls.
        """
        if self._task is not None:
            raise RuntimeError("registry already started")
        try:
            self.queue_url = await self._create_queue()
            await self._put()
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"node {self.node_id} could not register: {exc}") from exc
        self._task = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name=f"heartbeat-{self.node_id}"
        )
        logger.info(
            "node %s registered (queue %s)",
            self.node_id,
            self.queue_name,
            extra={"node_id": self.node_id, "queue_url": self.queue_url},
        )
        return self.queue_url

    async def set_draining(self) -> None:
        """Mark the node draining now; if the write fails the next heartbeat carries it."""
        self.status = NodeStatus.DRAINING
        try:
            await self.beat()
        except Exception as exc:
            logger.warning("node %s: draining not recorded yet (%s)", self.node_id, exc)

    async def stop(self) -> None:
        """Stop the heartbeat, then delete the item and, unless ``keep_queue``, the queues (stop
        the consumers first).

        Failures are logged, not raised: at shutdown the TTL removes the item anyway.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        try:
            await self.dynamodb.delete_item(
                **mapping.delete_request(
                    self.table, mapping.key(EdgeNode, self.node_id), must_exist=False
                )
            )
        except Exception as exc:
            logger.warning("node %s: item not deleted (%s); its TTL ends it", self.node_id, exc)
        urls = [] if self.keep_queue else [self.queue_url, self.dlq_url]
        for url in urls:
            if url is None:
                continue
            try:
                await self.sqs.delete_queue(QueueUrl=url)
            except Exception as exc:
                logger.warning("node %s: queue %s not deleted (%s)", self.node_id, url, exc)
        logger.info("node %s unregistered", self.node_id)

    # ----------------------------------------------------------------------- heartbeat

    async def beat(self) -> None:
        """One heartbeat: refresh heartbeat_at, expires_at, active_calls and status.

        If the item is gone (expired after a long outage, or deleted), it is written again whole.
        Raises on AWS errors; the heartbeat loop logs and retries them.
        """
        now = self.clock()
        fields = {
            "heartbeat_at": iso_z(now, millis=True),
            mapping.TTL_ATTRIBUTE: int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "active_calls": self._active_calls(),
            "status": self.status.value,
            "updated_at": iso_z(now, millis=True),
        }
        registrations = self._registrations()
        if registrations is not None:
            # An empty map is written too: a trunk no longer registered must drop out.
            fields["trunk_registrations"] = {
                trunk_id: state.model_dump(mode="json", exclude_none=True)
                for trunk_id, state in registrations.items()
            }
        request = mapping.update_request(self.table, mapping.key(EdgeNode, self.node_id), fields)
        try:
            await self.dynamodb.update_item(**request)
        except ClientError as exc:
            if not isinstance(translate(exc), ConditionFailed):
                raise
            logger.warning("node %s: registry item was gone; written again", self.node_id)
            await self._put()
        self.beats += 1

    async def _heartbeat_loop(self) -> None:
        failures = 0
        while True:
            if failures:
                delay = backoff_delay(
                    failures, base=HEARTBEAT_RETRY_BASE, cap=self.heartbeat_seconds
                )
            else:
                delay = self.heartbeat_seconds
            await asyncio.sleep(delay)
            try:
                await self.beat()
            except Exception as exc:  # never fatal: calls go on while AWS is away
                failures += 1
                self.beat_failures += 1
                logger.warning(
                    "node %s: heartbeat failed %d time(s) (%s); retrying",
                    self.node_id,
                    failures,
                    exc,
                    extra={"node_id": self.node_id},
                )
            else:
                failures = 0

    # ----------------------------------------------------------------------- writes

    def _active_calls(self) -> int:
        return max(0, int(self.active_calls()))

    def _registrations(self) -> dict[str, TrunkRegistrationState] | None:
        """The node's registrations, bounded; None when there is no callable or it failed (a
        failure must not stop the heartbeat, nor wipe what the last beat published)."""
        if self.trunk_registrations is None:
            return None
        try:
            states = self.trunk_registrations()
        except Exception as exc:
            logger.warning("node %s: trunk registrations not read (%r)", self.node_id, exc)
            return None
        if len(states) > MAX_PUBLISHED_REGISTRATIONS:
            kept = sorted(states)[:MAX_PUBLISHED_REGISTRATIONS]
            states = {trunk_id: states[trunk_id] for trunk_id in kept}
        return states

    def _item(self) -> EdgeNode:
        now = self.clock()
        if self._created_at is None:
            self._created_at = now
        assert self.queue_url is not None
        return EdgeNode(
            node_id=self.node_id,
            queue_url=self.queue_url,
            sip_address=self.sip_address,
            status=self.status,
            active_calls=self._active_calls(),
            heartbeat_at=now,
            expires_at=now + timedelta(seconds=self.ttl_seconds),
            created_at=self._created_at,
            updated_at=now,
            run_id=self.run_id,
            trunk_registrations=self._registrations() or {},
        )

    async def _put(self) -> None:
        await self.dynamodb.put_item(**mapping.put_request(self.table, self._item()))

    async def _create_queue(self) -> str:
        """The dead-letter queue, then the command queue redriving to it; either is adopted
        when an earlier run of this node id left it."""
        self.dlq_url = await self._ensure_queue(self.dlq_name, dlq_attributes())
        arn = (
            await self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])
        )["Attributes"]["QueueArn"]
        return await self._ensure_queue(self.queue_name, queue_attributes(str(arn)))

    async def _ensure_queue(self, name: str, attributes: dict[str, str]) -> str:
        """CreateQueue, or adopt the queue of that name (same name, other attributes: an older
        version of this node) and set its attributes."""
        try:
            response = await self.sqs.create_queue(
                QueueName=name, Attributes=attributes, tags={"agera:node-id": self.node_id}
            )
            return str(response["QueueUrl"])
        except ClientError as exc:
            code = _code(exc)
            if code in QUEUE_DELETED_RECENTLY_CODES:
                raise RegistryError(
                    f"queue {name} was deleted less than 60 s ago (SQS forbids "
                    "reusing the name that soon): start with another node id or wait"
                ) from exc
            if code not in QUEUE_EXISTS_CODES:
                raise
        url = str((await self.sqs.get_queue_url(QueueName=name))["QueueUrl"])
        await self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        logger.info("node %s: adopted existing queue %s", self.node_id, name)
        return url
