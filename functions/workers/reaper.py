"""The reaper: ends the calls of edge nodes that died, and tidies what those nodes left behind.

Why it exists: only the node that owns a call writes its ``call.completed``
(edge_media/bridge/live_call.py). A node that dies (kill -9, a lost instance) ends nothing: its
calls would stay ``in-progress`` forever, the customer would never get ``call.completed``, every
hangup would answer 503, an originate it had claimed would stay ``queued``, and the account's call
slots would stay taken. A scheduled Lambda (every minute, template.yaml ``ReaperFunction``; locally
``infra/scheduler.py``) does each of those ends on the node's behalf, in three steps:

1. calls (this module): end every live call whose node is dead, and release its slot;
2. slots (``reaper_slots.py``): release slots whose call ended or never existed, repair counts;
3. queues (``reaper_queues.py``): delete the command queues (and DLQs) of nodes gone for a day.

**Finding the calls.** A sparse GSI, ``live`` (``mapping.LIVE_INDEX``), holds exactly the calls a
node owns that have not ended: ``live_node`` is written with the record when a node creates it or
claims it, and the terminal transition removes it (``mapping.call_transition_request``). A Scan of
it reads the live calls only (keys plus ``created_at`` and ``node_run``: a few dozen bytes each),
never the table's call history, and it costs the edge no extra write. Rejected: a Query per account
over ``gsi1`` reads every account's whole call history each minute; a per-node index item
(``NODE#<id>/CALL#<uuid>``) costs the edge a put and a delete per call and still needs the list of
node ids, which vanishes with the EdgeNode items' TTL. The index's hash key is the node id, so its
writes spread over partitions however many calls start at once.

**When a node is dead.** Its ``EdgeNode`` item is missing, or its heartbeat is older than
``AGERA_REAPER_GRACE_SECONDS`` (90 s: six heartbeats of 15 s, so one late beat or a short AWS
blip never ends a live call), or it came back under the same id with a new run (``run_id``, see
edge_media/control/identity.py) that is not the run that took the call. A call younger than the
grace is never ended: a node writes its first calls a moment before its EdgeNode item exists.
The price of judging by heartbeat: a node cut off from DynamoDB for longer than the grace while
its calls go on has them ended here; when it is back, its own end is refused as stale, and the
record keeps the reaper's (the customer got one ``call.completed`` either way).

**Ending a call** is the edge's own path, done from here: a ``call.completed`` event built the way
a node builds one (``failed`` if never answered, else ``completed`` with ``duration`` from
``answered_at``; cause ``NETWORK_OUT_OF_ORDER``, Q.850 cause 38, with ``end_detail`` saying which
node stopped and how; ``ended_by: "reaper"``), folded into the record by ``shared.call_fold`` with
the forward-only condition of ``call_transition_request`` plus "still the status and node this run
read", then sent to the events queue, where the events worker finds the event applied and queues
the signed callback exactly as for a node's end. The end time is the dead run's last heartbeat when
it is known (the call cannot have outlived its node), else now.

**Idempotent, safe to run twice at once.** The record write is conditional, so of two reapers one
ends the call and the other's write is refused. The event rides on the record (``reaper_event``)
and the call stays in the live index until the event is queued and the slot released; a reaper
that dies half-way leaves the call there, and a later run queues the same event again (same event
id, so the same callback id) once ``RESEND_AFTER_SECONDS`` have passed: longer than any run may
last (the function times out at 60 s), so a run still sending it is never doubled. Then the call
leaves the index and nothing finds it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from functions.context import Context, default_context
from functions.observability import logger, metrics
from functions.workers.reaper_queues import retire_queues
from functions.workers.reaper_slots import audit_slots
from shared import call_slots
from shared.call_fold import fold
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed
from shared.events import CallCompleted
from shared.models import Call, CallStatus, EdgeNode

__all__ = [
    "CAUSE",
    "REAPER",
    "LiveEntry",
    "ReapReport",
    "dead_reason",
    "handler",
    "reap_calls",
    "run",
]

REAPER = "reaper"  # ended_by on the record, node_id on the event
CAUSE = "NETWORK_OUT_OF_ORDER"  # Q.850 cause 38: the network carrying the call stopped working
PENDING_EVENT = "reaper_event"  # bookkeeping: the end's event, until the events queue took it
REAPED_AT = "reaped_at"
# A pending event older than this was left by a reaper that died after its write: send it again.
RESEND_AFTER_SECONDS = 120.0
END_ATTEMPTS = 3  # re-reads when a record changes under the reaper (a late event folded)
AWS_ERRORS = (ClientError, BotoCoreError)
STEP_MIN_SECONDS = 5.0  # a step is not started with less Lambda time than this left


@dataclass
class ReapReport:
    """What one run did (the handler's result, its log line and its metrics)."""

    calls_ended: int = 0
    events_resent: int = 0
    slots_released: int = 0
    counters_repaired: int = 0
    queues_tagged: int = 0
    queues_deleted: int = 0
    errors: int = 0


@dataclass(frozen=True)
class LiveEntry:
    """One call in the live index: what the reaper needs to judge its node."""

    call_uuid: str
    node_id: str
    node_run: str | None
    created_at: datetime


def parse_time(value: str) -> datetime:
    """A stored ISO timestamp (``...Z``) as an aware datetime."""
    return datetime.fromisoformat(value)


def _entry(item: dict[str, Any]) -> LiveEntry | None:
    pk = item.get("pk", {}).get("S", "")
    node = item.get(mapping.LIVE_NODE_ATTRIBUTE, {}).get("S")
    created = item.get("created_at", {}).get("S")
    if not pk.startswith("CALL#") or not node or not created:
        return None
    run = item.get(mapping.NODE_RUN_ATTRIBUTE, {}).get("S")
    return LiveEntry(pk.removeprefix("CALL#"), node, run, parse_time(created))


def live_entries(ctx: Context) -> Iterator[LiveEntry]:
    """Every call in the live index (a Scan of the sparse index, page by page)."""
    request: dict[str, Any] = {
        "TableName": ctx.settings.table_name,
        "IndexName": mapping.LIVE_INDEX,
    }
    while True:
        page = ctx.dynamodb.scan(**request)
        for item in page.get("Items", []):
            entry = _entry(item)
            if entry is not None:
                yield entry
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


def dead_reason(
    entry: LiveEntry, node: EdgeNode | None, now: datetime, grace: timedelta
) -> str | None:
    """Why ``entry``'s node can no longer end it (the end's detail), or None: leave it alone."""
    if now - entry.created_at <= grace:
        return None  # just taken: its node may not have registered yet
    name = f"edge node {entry.node_id}"
    if node is None:
        return f"{name} stopped heartbeating and is no longer registered"
    if node.run_id and entry.node_run and node.run_id != entry.node_run:
        return f"{name} restarted; the run that carried this call is gone"
    if now - node.heartbeat_at > grace:
        return f"{name} stopped heartbeating (last at {iso_z(node.heartbeat_at)})"
    return None


def _end_time(call: Call, entry: LiveEntry, node: EdgeNode | None, now: datetime) -> datetime:
    """The dead run's last heartbeat when known (the call cannot have outlived it), else now."""
    start = call.answered_at or call.created_at
    same_run = node is not None and (
        not node.run_id or not entry.node_run or node.run_id == entry.node_run
    )
    end = node.heartbeat_at if same_run and node is not None else now
    return min(max(end, start), now)


def end_event(
    call: Call, entry: LiveEntry, node: EdgeNode | None, reason: str, now: datetime
) -> CallCompleted:
    """The ``call.completed`` a node would have sent, had it lived."""
    end = _end_time(call, entry, node, now)
    answered = call.answered_at
    return CallCompleted(
        call_uuid=call.call_uuid,
        account_id=call.account_id,
        node_id=REAPER,
        occurred_at=end,
        status=CallStatus.COMPLETED if answered else CallStatus.FAILED,
        answered_at=answered,
        duration=max(0, int((end - answered).total_seconds())) if answered else 0,
        hangup_cause=CAUSE,
        ended_by=REAPER,
        end_detail=reason,
    )


def _end_request(ctx: Context, call: Call, event: CallCompleted, now: datetime) -> dict[str, Any]:
    """The fold's conditional write, kept in the live index, and only if the call is still what
    this run read (status and node): a late event folded meanwhile changes what the end is."""
    status, fields, _ = fold(event)
    stored = {name: value for name, value in fields.items() if value is not None}
    stored[PENDING_EVENT] = event.model_dump_json()
    stored[REAPED_AT] = iso_z(now, millis=True)
    request = mapping.call_transition_request(
        ctx.settings.table_name,
        call.call_uuid,
        status,
        stored,
        event_id=event.id,
        keep_live=True,
        now=now,
    )
    request["ConditionExpression"] += " AND #st = :seen AND #owner = :owner"
    request["ExpressionAttributeNames"].update({"#st": "status", "#owner": "node_id"})
    request["ExpressionAttributeValues"].update(
        {":seen": {"S": call.status.value}, ":owner": {"S": call.node_id or ""}}
    )
    return request


def _read(ctx: Context, call_uuid: str) -> dict[str, Any] | None:
    request = mapping.get_request(
        ctx.settings.table_name, mapping.key(Call, call_uuid), consistent=True
    )
    item = ctx.dynamodb.get_item(**request).get("Item")
    return dict(item) if item else None


def _deliver(ctx: Context, call: Call, body: str, report: ReapReport) -> bool:
    """The end's event to the events queue; False (logged, retried by a later run) if refused."""
    try:
        ctx.sqs.send_message(QueueUrl=ctx.settings.events_queue_url, MessageBody=body)
    except AWS_ERRORS as exc:
        report.errors += 1
        logger.error(
            "reaped call's event not queued; a later run sends it again",
            extra=_fields(call, reason=type(exc).__name__),
        )
        return False
    return True


def _settle(ctx: Context, call: Call, report: ReapReport) -> None:
    """After the event is queued: give the slot back, then take the call out of the index."""
    try:
        if call_slots.release(
            ctx.dynamodb, ctx.settings.table_name, call.account_id, call.call_uuid
        ):
            report.slots_released += 1
        request = mapping.update_request(
            ctx.settings.table_name,
            mapping.key(Call, call.call_uuid),
            {PENDING_EVENT: None, REAPED_AT: None},
            remove=(mapping.LIVE_NODE_ATTRIBUTE,),
        )
        ctx.dynamodb.update_item(**request)
    except AWS_ERRORS as exc:
        report.errors += 1
        logger.warning(
            "reaped call not settled; a later run finishes it",
            extra=_fields(call, reason=type(exc).__name__),
        )


def _finish_ended(
    ctx: Context, call: Call, item: dict[str, Any], now: datetime, report: ReapReport
) -> None:
    """A terminal call still in the index: a reaper's end that did not finish (see the module
    docstring). Its event goes again once it is old enough, then it is settled."""
    pending = item.get(PENDING_EVENT, {}).get("S")
    if pending:
        reaped = item.get(REAPED_AT, {}).get("S")
        if reaped and (now - parse_time(reaped)).total_seconds() < RESEND_AFTER_SECONDS:
            return  # another run is on it right now
        if not _deliver(ctx, call, pending, report):
            return
        report.events_resent += 1
        logger.info("reaped call's event sent again", extra=_fields(call))
    _settle(ctx, call, report)


def end_call(
    ctx: Context,
    entry: LiveEntry,
    node: EdgeNode | None,
    reason: str,
    now: datetime,
    report: ReapReport,
) -> None:
    """End one call of a dead node (see the module docstring); never raises for AWS errors."""
    for _ in range(END_ATTEMPTS):
        item = _read(ctx, entry.call_uuid)
        if item is None:
            return
        call = mapping.from_item(Call, item)
        if call.status.terminal:
            _finish_ended(ctx, call, item, now, report)
            return
        if call.node_id != entry.node_id:
            logger.warning("live index names another node; left alone", extra=_fields(call))
            return
        event = end_event(call, entry, node, reason, now)
        try:
            ctx.repo.execute_update(_end_request(ctx, call, event, now))
        except ConditionFailed:
            continue  # it changed under us (a late event, another reaper): read it again
        report.calls_ended += 1
        logger.warning(
            "call of a dead edge node ended",
            extra=_fields(call, node_id=entry.node_id, status=event.status, detail=reason),
        )
        if _deliver(ctx, call, event.model_dump_json(), report):
            _settle(ctx, call, report)
        return


def reap_calls(ctx: Context, now: datetime, report: ReapReport) -> None:
    """Step 1: every live call whose node is dead is ended."""
    grace = timedelta(seconds=ctx.settings.reaper_grace_seconds)
    nodes: dict[str, EdgeNode | None] = {}
    for entry in live_entries(ctx):
        if entry.node_id not in nodes:
            nodes[entry.node_id] = ctx.repo.get(EdgeNode, entry.node_id, consistent=True)
        node = nodes[entry.node_id]
        reason = dead_reason(entry, node, now, grace)
        if reason is None:
            continue
        try:
            end_call(ctx, entry, node, reason, now, report)
        except Exception as exc:  # one bad record (AWS error, corrupt item) must not stop the rest
            report.errors += 1
            logger.exception(
                "call of a dead node not ended this run",
                extra={"call_uuid": entry.call_uuid, "reason": type(exc).__name__},
            )


def _fields(call: Call, **more: Any) -> dict[str, Any]:
    return {"call_uuid": str(call.call_uuid), "account_id": call.account_id, **more}


def run(
    ctx: Context,
    *,
    now: datetime | None = None,
    time_left: Callable[[], float] | None = None,
) -> ReapReport:
    """One reaper run: calls, then slots, then queues. A step that fails is logged and counted;
    the next still runs (a queue listing error must not keep a dead node's calls open).

    ``time_left`` (seconds) lets the Lambda handler skip the later steps when a run is slow.
    """
    moment = now or utc_now()
    report = ReapReport()

    def calls() -> None:
        reap_calls(ctx, moment, report)

    def slots() -> None:
        audit = audit_slots(ctx, moment)
        report.slots_released += audit.released
        report.counters_repaired += audit.repaired
        report.errors += audit.errors

    def queues() -> None:
        retired = retire_queues(ctx, moment)
        report.queues_tagged += retired.tagged
        report.queues_deleted += retired.deleted
        report.errors += retired.errors

    for name, step in (("calls", calls), ("slots", slots), ("queues", queues)):
        if time_left is not None and time_left() < STEP_MIN_SECONDS:
            logger.warning("reaper out of time; step skipped", extra={"step": name})
            continue
        try:
            step()
        except AWS_ERRORS as exc:
            report.errors += 1
            logger.exception("reaper step failed", extra={"step": name, "reason": str(exc)})
    return report


@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """EventBridge's scheduled event; the report as the result (visible in a test invoke)."""
    started = time.monotonic()
    budget = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0

    def time_left() -> float:
        return budget - (time.monotonic() - started)

    report = run(default_context(), time_left=time_left)
    counts = asdict(report)
    metrics.add_metric("CallsReaped", MetricUnit.Count, report.calls_ended)
    metrics.add_metric("ReaperErrors", MetricUnit.Count, report.errors)
    logger.info("reaper run", extra=counts)
    return counts
