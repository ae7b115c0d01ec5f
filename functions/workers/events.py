"""Edge events → call records and status callbacks.

Each event is applied to its call record with one conditional update (see
``mapping.call_transition_request``): statuses only move forward and an event id is applied once,
so SQS's duplicates and reordering cannot corrupt a record. When an update is refused the record is
read back. If the event was applied before, its callback is queued under the event's callback id:
that is the normal path, since the edge applies each event to the record itself (the same fold,
``shared.call_fold``) before queuing it here; it is also what a redelivery after a crash between
the update and the callback enqueue does (same callback id again). If the record had already moved
past the event (a late ``call.ringing`` after ``call.completed``), no callback is sent, since a
customer must never see a call ring after it ended.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.context import Context, default_context
from functions.observability import call_log_keys, logger, metrics
from shared.call_fold import fold
from shared.clock import utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import AlreadyExists, ConditionFailed
from shared.events import (
    CallbackMessage,
    CallCompleted,
    CallCreated,
    CallEvent,
    callback_payload,
    parse_event,
)
from shared.models import Call

processor = BatchProcessor(event_type=EventType.SQS)


class CallNotYetKnown(Exception):
    """The event's call record does not exist (yet); the record is retried."""


def _create(ctx: Context, event: CallCreated) -> None:
    call = Call(
        call_uuid=event.call_uuid,
        account_id=event.account_id,
        direction=event.direction,
        from_number=event.from_number,
        to_number=event.to_number,
        webhook_url=event.webhook_url,
        node_id=event.node_id,
        created_at=event.occurred_at,
    )
    try:
        ctx.repo.put(call, create_only=True)
    except AlreadyExists:
        logger.debug("call record already exists")


def apply(ctx: Context, event: CallEvent) -> Call | None:
    """Apply one event; returns the call when a callback is due, else None."""
    if isinstance(event, CallCreated):
        _create(ctx, event)
        return None
    status, fields, allow_same = fold(event)
    request = mapping.call_transition_request(
        ctx.settings.table_name,
        event.call_uuid,
        status,
        {k: v for k, v in fields.items() if v is not None},
        event_id=event.id,
        allow_same=allow_same,
        now=utc_now(),
    )
    try:
        return mapping.from_item(Call, ctx.repo.execute_update(request))
    except ConditionFailed:
        pass
    item = ctx.dynamodb.get_item(
        **mapping.get_request(
            ctx.settings.table_name, mapping.key(Call, event.call_uuid), consistent=True
        )
    ).get("Item")
    if item is None:
        raise CallNotYetKnown(f"no record for call {event.call_uuid}")
    applied = item.get("applied_events", {}).get("SS", [])
    call = mapping.from_item(Call, item)
    if event.id in applied:
        logger.info(
            "event applied by the edge (or redelivered); callback queued",
            extra={"event_id": event.id},
        )
        return call
    logger.info(
        "stale event ignored",
        extra={"event_type": event.type, "event_id": event.id, "record_status": call.status},
    )
    return None


def _queue_callback(ctx: Context, event: CallEvent, call: Call) -> None:
    payload = callback_payload(event)
    if payload is None:
        return
    message = CallbackMessage(
        id=f"cb_{event.id.removeprefix('evt_')}",
        account_id=call.account_id,
        call_uuid=call.call_uuid,
        webhook_url=call.webhook_url,
        payload=payload,
    )
    ctx.sqs.send_message(
        QueueUrl=ctx.settings.callbacks_queue_url, MessageBody=message.model_dump_json()
    )


def record_handler(record: SQSRecord) -> None:
    ctx = default_context()
    event = parse_event(record.body)
    with call_log_keys(str(event.call_uuid), event.account_id):
        call = apply(ctx, event)
        if call is None:
            return
        if isinstance(event, CallCompleted):
            metrics.add_metric("CallsCompleted", MetricUnit.Count, 1)
            metrics.add_metric("CallDurationSeconds", MetricUnit.Seconds, event.duration)
        _queue_callback(ctx, event, call)


@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
