"""Tell every live edge node that a routing item changed, so its route cache forgets it at once.

Why: nodes cache the accounts, numbers, extensions and agents they route by
(``edge_media/routing/cache.py``), so that an INVITE is answered without table reads. A write
through the API (or the dashboard, which calls the same functions) is followed by
`invalidate_routes`, which sends an ``Invalidate`` command (``shared/commands.py``) to each live
node's own queue; the node drops those entries and reads the item again on the next call.

Cost, paid by each routing write: one Query of the nodes' heartbeat items (the ``NODES`` index
partition, one page per 100 nodes) plus one SendMessage per live node, up to 16 at once. A node whose
heartbeat lapsed is skipped: its queue has no reader, or it is gone.

It never fails the request: the write has happened, and an error here would tell the client it
had not. Failures (listing the nodes, or one node's queue) are logged with the AWS error code
only (never the message, which may carry ARNs; the command itself holds no secret) and counted
(``RouteInvalidationErrors``); the node's cache TTL (``AGERA_ROUTE_CACHE_SECONDS``,
``AGERA_ACCOUNT_CACHE_SECONDS``) bounds how stale it gets. A node that registers after the write
was announced cached nothing from before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from functions import observability
from functions.api.errors import aws_reason
from functions.context import Context
from functions.observability import logger
from shared.clock import utc_now
from shared.commands import Invalidate, InvalidateKind
from shared.models import EdgeNode

__all__ = ["NODES_PARTITION", "Notified", "invalidate_routes", "live_nodes"]

NODES_PARTITION = "NODES"  # the index partition of the nodes' heartbeat items
NODES_PAGE = 100
SEND_THREADS = 16  # boto3 clients are thread-safe; SQS takes these at once
MAX_PAGES = 20  # 2,000 nodes: far beyond a fleet; a runaway cursor must not loop forever


@dataclass(frozen=True, slots=True)
class Notified:
    """How an invalidation went: nodes sent to, and errors (listing or sending)."""

    sent: int
    errors: int


def live_nodes(ctx: Context) -> list[EdgeNode]:
    """Every node whose heartbeat has not lapsed (the item outlives a dead node until the TTL
    sweep, minutes to hours later)."""
    now = utc_now()
    nodes: list[EdgeNode] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = ctx.repo.list(
            NODES_PARTITION, EdgeNode, limit=NODES_PAGE, cursor=cursor, newest_first=False
        )
        nodes.extend(node for node in page.items if node.expires_at > now)
        cursor = page.next_cursor
        if not cursor:
            break
    return nodes


def invalidate_routes(
    ctx: Context, account_id: str, kind: InvalidateKind, keys: Sequence[str] = ()
) -> Notified:
    """Send ``Invalidate(kind, keys)`` of ``account_id`` to every live node; never raises."""
    command = Invalidate(account_id=account_id, kind=kind, keys=list(keys))
    fields = {"command_id": command.id, "account_id": account_id, "kind": kind}
    try:
        nodes = live_nodes(ctx)
    except Exception as exc:  # the write succeeded: this must not turn it into a 5xx
        logger.warning(
            "route invalidation not sent: the nodes could not be listed",
            extra={**fields, "reason": aws_reason(exc)},
        )
        _count_errors(1)
        return Notified(sent=0, errors=1)
    body = command.model_dump_json()

    def send(node: EdgeNode) -> bool:
        try:
            ctx.sqs.send_message(QueueUrl=node.queue_url, MessageBody=body)
        except Exception as exc:
            logger.warning(
                "route invalidation not queued for a node; its cache TTL bounds the staleness",
                extra={**fields, "node_id": node.node_id, "reason": aws_reason(exc)},
            )
            return False
        return True

    if len(nodes) <= 1:
        outcomes = [send(node) for node in nodes]
    else:  # a fleet's sends at once: the write's latency is one SendMessage, not one per node
        with ThreadPoolExecutor(min(SEND_THREADS, len(nodes))) as pool:
            outcomes = list(pool.map(send, nodes))
    sent = sum(outcomes)
    errors = len(outcomes) - sent
    _count_errors(errors)
    return Notified(sent=sent, errors=errors)


def _count_errors(errors: int) -> None:
    """RouteInvalidationErrors as its own EMF line (the shared set would mix requests)."""
    if not errors:
        return
    shared = observability.metrics
    metrics = EphemeralMetrics(namespace=shared.namespace, service=shared.service)
    metrics.add_metric(name="RouteInvalidationErrors", unit=MetricUnit.Count, value=errors)
    metrics.flush_metrics()
