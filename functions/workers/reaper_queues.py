"""Reaper step 3: the command queues (and their DLQs) of nodes that are gone for good.

Why: a node with a stable id keeps its command queue and the queue's DLQ when it stops or dies, so
that it gets them back when it restarts (edge_media/control/registry.py): SQS refuses a queue name
deleted less than a minute ago. A node that never comes back (an instance terminated by a scale-in)
would leave both behind for ever. Queues named ``{node_queue_prefix}{node_id}`` and
``{node_queue_prefix}{node_id}-dlq`` whose node has been gone for more than
``AGERA_REAPER_QUEUE_RETENTION_SECONDS`` (a day) are deleted.

How long gone: while the node's EdgeNode item exists, since its last heartbeat. The item does not
outlive the node for long (a stopping node deletes it, DynamoDB's TTL removes an expired one), so
the first run that finds a queue with no live node tags it ``agera:gone-since`` and later runs
count from the tag; a node seen alive again has the tag taken off. Right before a delete the node
is read again, so a node that came back a moment ago keeps its queues. Two reapers at once at worst
tag twice or delete a queue already deleted (ignored).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from functions.context import Context
from functions.observability import logger
from shared.clock import iso_z
from shared.models import EdgeNode

__all__ = ["GONE_TAG", "QueueRetirement", "node_queues", "retire_queues"]

AWS_ERRORS = (ClientError, BotoCoreError)
DLQ_SUFFIX = "-dlq"  # edge_media/control/registry.py names a node's DLQ so
GONE_TAG = "agera:gone-since"
LIST_PAGE = 1000  # ListQueues' largest page
NO_SUCH_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


@dataclass
class QueueRetirement:
    """What the queue step did."""

    tagged: int = 0
    deleted: int = 0
    errors: int = 0


def node_queues(ctx: Context) -> dict[str, list[str]]:
    """Node id -> the URLs of its queues (command queue and DLQ), by the node queue prefix."""
    prefix = ctx.settings.node_queue_prefix
    found: dict[str, list[str]] = defaultdict(list)
    request: dict[str, object] = {"QueueNamePrefix": prefix, "MaxResults": LIST_PAGE}
    while True:
        page = ctx.sqs.list_queues(**request)
        for url in page.get("QueueUrls", []):
            name = str(url).rsplit("/", 1)[-1]
            node_id = name.removeprefix(prefix).removesuffix(DLQ_SUFFIX)
            if node_id:
                found[node_id].append(str(url))
        token = page.get("NextToken")
        if not token:
            return dict(found)
        request["NextToken"] = token


def _alive(node: EdgeNode | None, now: datetime, grace: timedelta) -> bool:
    return node is not None and now - node.heartbeat_at <= grace


def _gone_since(ctx: Context, url: str) -> datetime | None:
    tags = ctx.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    value = tags.get(GONE_TAG)
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _retire_node(
    ctx: Context, node_id: str, urls: list[str], now: datetime, done: QueueRetirement
) -> None:
    grace = timedelta(seconds=ctx.settings.reaper_grace_seconds)
    retention = timedelta(seconds=ctx.settings.reaper_queue_retention_seconds)
    node = ctx.repo.get(EdgeNode, node_id, consistent=True)
    if _alive(node, now, grace):
        for url in urls:
            if _gone_since(ctx, url) is not None:
                ctx.sqs.untag_queue(QueueUrl=url, TagKeys=[GONE_TAG])
        return
    for url in urls:
        since = node.heartbeat_at if node is not None else _gone_since(ctx, url)
        if since is None:
            ctx.sqs.tag_queue(QueueUrl=url, Tags={GONE_TAG: iso_z(now, millis=True)})
            done.tagged += 1
            continue
        if now - since <= retention:
            continue
        if _alive(ctx.repo.get(EdgeNode, node_id, consistent=True), now, grace):
            return  # it came back a moment ago: keep everything
        try:
            ctx.sqs.delete_queue(QueueUrl=url)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in NO_SUCH_QUEUE:
                raise
            continue
        done.deleted += 1
        logger.info(
            "queue of a gone edge node deleted",
            extra={"node_id": node_id, "queue_url": url, "gone_since": iso_z(since)},
        )


def retire_queues(ctx: Context, now: datetime) -> QueueRetirement:
    """Step 3 for every node queue; a node that fails is counted and the next one goes on."""
    done = QueueRetirement()
    for node_id, urls in node_queues(ctx).items():
        try:
            _retire_node(ctx, node_id, urls, now, done)
        except AWS_ERRORS as exc:
            done.errors += 1
            logger.warning(
                "queues of an edge node not checked",
                extra={"node_id": node_id, "reason": type(exc).__name__},
            )
    return done
