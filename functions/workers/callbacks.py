"""Status-callback delivery: one SQS message = one signed POST to the customer's webhook.

Delivery follows the API guide: body = the canonical JSON the signature covers, headers
``Content-Type``, ``X-Call-UUID``, ``X-Signature: sha256=…``, ``User-Agent: VoiceAPI/1.0``, plus
``X-Callback-ID`` so a receiver can drop the duplicate that at-least-once delivery can produce.
A 2xx within the timeout is success. Anything else fails the record: SQS makes it visible again after
a back-off we set on the message itself (``callback_backoff_seconds``: 10 s, 20 s, 40 s, …, capped
at 15 minutes, SQS's visibility limit for us), and after ``callback_max_attempts``
receives the redrive policy moves it to the DLQ. Every attempt is appended to the call record so a
support engineer can see what the customer's server answered.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.context import Context, default_context
from functions.observability import logger, metrics
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.events import CallbackMessage, parse_callback
from shared.models import Account, Call
from shared.signing import signed_webhook

BACKOFF_MAX_SECONDS = 900
MAX_RECORDED_ATTEMPTS = 50

processor = BatchProcessor(event_type=EventType.SQS)


class DeliveryFailed(Exception):
    """The webhook did not accept the callback; the record is retried."""


def backoff_seconds(attempt: int, base: int = 10) -> int:
    return min(base * 2 ** max(attempt - 1, 0), BACKOFF_MAX_SECONDS)


def _record_attempt(ctx: Context, message: CallbackMessage, attempt: dict[str, Any]) -> None:
    """Append the attempt to the call record (bounded); a missing call is not an error."""
    with contextlib.suppress(ctx.dynamodb.exceptions.ConditionalCheckFailedException):
        ctx.dynamodb.update_item(
            TableName=ctx.settings.table_name,
            Key=mapping.key(Call, message.call_uuid),
            UpdateExpression="SET #a = list_append(if_not_exists(#a, :empty), :one)",
            ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(#a) OR size(#a) < :max)",
            ExpressionAttributeNames={"#a": "callback_attempts"},
            ExpressionAttributeValues={
                ":empty": {"L": []},
                ":one": {"L": [mapping.serialize(attempt)]},
                ":max": {"N": str(MAX_RECORDED_ATTEMPTS)},
            },
        )


def deliver(ctx: Context, record: SQSRecord) -> None:
    message = parse_callback(record.body)
    attempt_no = int(record.attributes.approximate_receive_count or 1)
    # This thread's (or task's) keys only: functions/observability.py says why.
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(call_uuid=str(message.call_uuid), account_id=message.account_id)
    account = ctx.repo.get(Account, message.account_id)
    if account is None:
        logger.warning("callback dropped: account no longer exists")
        return
    url = message.webhook_url or account.webhook_url
    if not url:
        logger.info("no webhook_url configured; callback not sent")
        return
    body, headers = signed_webhook(
        account.webhook_secret,
        message.payload,
        str(message.call_uuid),
        **{"X-Callback-ID": message.id},
    )
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        response = httpx.post(
            url,
            content=body,
            headers=headers,
            timeout=ctx.settings.callback_timeout_seconds,
            follow_redirects=False,
        )
        status = response.status_code
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    ok = status is not None and 200 <= status < 300
    _record_attempt(
        ctx,
        message,
        {
            "callback_id": message.id,
            "event_type": message.payload.get("event_type"),
            "attempt": attempt_no,
            "at": iso_z(utc_now(), millis=True),
            "status": status,
            "error": error,
            "ms": elapsed_ms,
        },
    )
    if ok:
        metrics.add_metric("CallbackDeliveries", MetricUnit.Count, 1)
        logger.info("callback delivered", extra={"status": status, "ms": elapsed_ms})
        return
    metrics.add_metric("CallbackFailures", MetricUnit.Count, 1)
    logger.warning(
        "callback delivery failed",
        extra={"status": status, "error": error, "attempt": attempt_no},
    )
    if attempt_no < ctx.settings.callback_max_attempts and record.receipt_handle:
        try:
            ctx.sqs.change_message_visibility(
                QueueUrl=record.queue_url,
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=backoff_seconds(
                    attempt_no, ctx.settings.callback_backoff_seconds
                ),
            )
        except Exception:  # the default visibility timeout still retries it
            logger.exception("could not set the retry back-off")
    raise DeliveryFailed(f"webhook answered {status or error}")


def record_handler(record: SQSRecord) -> None:
    deliver(default_context(), record)


@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
