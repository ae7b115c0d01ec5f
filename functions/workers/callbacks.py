"""Status-callback delivery: one SQS message = one signed POST to the customer's webhook.

Delivery follows the API guide: body = the canonical JSON the signature covers, headers
``Content-Type``, ``X-Call-UUID``, ``X-Signature: sha256=…``, ``User-Agent: VoiceAPI/1.0``, plus
``X-Callback-ID`` so a receiver can drop the duplicate that at-least-once delivery can produce,
and the Standard Webhooks replay headers (``webhook-id`` = the callback id, ``webhook-timestamp``,
``webhook-signature``; ``shared.signing``).
A 2xx within the timeout is success. Anything else fails the record: SQS makes it visible again after
a back-off we set on the message itself (``callback_backoff_seconds``: 10 s, 20 s, 40 s, …, capped
at 15 minutes, SQS's visibility limit for us), and after ``callback_max_attempts``
receives the redrive policy moves it to the DLQ.

SSRF: the URL is the customer's, and this worker runs inside our network. The POST goes through
``shared.pinned_http.PinnedTransport``: the host is resolved once, every address is checked
against the SSRF rule (``AGERA_SSRF_ALLOW_LIST`` opens private ranges), and the connection goes to
a checked address, so a rebinding name cannot swap in a private one between check and connect. A
refused target is recorded as ``refused by policy`` and not retried (no request was made, and a
retry would be refused the same way); the message is then dropped.

What is recorded: every attempt is appended to the call record, which the customer reads through
the API, with only a status class (``2xx``, ``3xx``, ``4xx``, ``5xx``, ``timeout``, ``connection
failed``, ``refused by policy``) and a fixed, generic reason. Never the target's answer (its body
is not even read), its exact status or an exception's text: those would make the callback a
scanner of whatever the URL points at (which ports answer, what a service says). Our own logs keep
the exact HTTP status and the exception's type for support.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
from functions.observability import call_log_keys, logger, metrics
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.events import CallbackMessage, parse_callback
from shared.models import Account, Call
from shared.pinned_http import PinnedTransport, refusal_of
from shared.signing import signed_webhook
from shared.ssrf import AddressPolicy, resolve_host

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


REFUSED = "refused by policy"
TIMEOUT = "timeout"
CONNECTION_FAILED = "connection failed"
_CLASS_REASONS = {
    "2xx": "delivered",
    "3xx": "the webhook answered with a redirect, which is not followed",
    "4xx": "the webhook answered with a client error",
    "5xx": "the webhook answered with a server error",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt as the customer may see it (``status`` class, generic ``reason``), plus what
    only our logs get (``code``: the exact HTTP status, ``error``: an exception's type name)."""

    status: str
    reason: str
    code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "2xx"


def status_outcome(code: int) -> Outcome:
    """The class of an HTTP status (``404`` → ``4xx``) and its generic reason."""
    status = f"{code // 100}xx"
    return Outcome(
        status, _CLASS_REASONS.get(status, "the webhook answered an unexpected status"), code
    )


def post(ctx: Context, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST ``body`` to ``url`` through a pinned, SSRF-checked connection; never raises.

    The response is opened as a stream and closed unread: only its status line is used.
    """
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return Outcome(REFUSED, "the webhook URL is not an http:// or https:// URL")
    timeout = ctx.settings.callback_timeout_seconds
    policy = AddressPolicy.from_settings(ctx.settings, ctx.resolve_host or resolve_host)
    try:
        with (
            httpx.Client(
                transport=PinnedTransport(policy), follow_redirects=False, trust_env=False
            ) as client,
            client.stream("POST", url, content=body, headers=headers, timeout=timeout) as answer,
        ):
            return status_outcome(answer.status_code)
    except httpx.TimeoutException as exc:
        return Outcome(TIMEOUT, f"no answer within {timeout:g} s", error=type(exc).__name__)
    except httpx.HTTPError as exc:
        if refusal_of(exc) is not None:
            return Outcome(
                REFUSED,
                "the webhook URL points to an address the gateway does not call",
                error="AddressRefused",
            )
        return Outcome(
            CONNECTION_FAILED, "could not connect to the webhook", error=type(exc).__name__
        )
    except (httpx.InvalidURL, ValueError) as exc:
        return Outcome(REFUSED, "the webhook URL is not a valid URL", error=type(exc).__name__)


def deliver(ctx: Context, record: SQSRecord) -> None:
    message = parse_callback(record.body)
    # This thread's (or task's) keys only, for this record only: functions/observability.py.
    with call_log_keys(str(message.call_uuid), message.account_id):
        _deliver(ctx, record, message)


def _deliver(ctx: Context, record: SQSRecord, message: CallbackMessage) -> None:
    attempt_no = int(record.attributes.approximate_receive_count or 1)
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
        webhook_id=message.id,  # the same on every retry: the receiver's replay/dedupe key
        **{"X-Callback-ID": message.id},
    )
    started = time.perf_counter()
    outcome = post(ctx, url, body, headers)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    _record_attempt(
        ctx,
        message,
        {
            "callback_id": message.id,
            "event_type": message.payload.get("event_type"),
            "attempt": attempt_no,
            "at": iso_z(utc_now(), millis=True),
            "status": outcome.status,
            "reason": outcome.reason,
            "ms": elapsed_ms,
        },
    )
    logged = {
        "status": outcome.status,
        "http_status": outcome.code,
        "error_type": outcome.error,
        "attempt": attempt_no,
        "ms": elapsed_ms,
    }
    if outcome.ok:
        metrics.add_metric("CallbackDeliveries", MetricUnit.Count, 1)
        logger.info("callback delivered", extra=logged)
        return
    metrics.add_metric("CallbackFailures", MetricUnit.Count, 1)
    if outcome.status == REFUSED:
        logger.warning("callback refused by the SSRF policy; not retried", extra=logged)
        return
    logger.warning("callback delivery failed", extra=logged)
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
    raise DeliveryFailed(f"webhook delivery failed ({outcome.status})")


def record_handler(record: SQSRecord) -> None:
    deliver(default_context(), record)


@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
