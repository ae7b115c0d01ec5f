"""Placing an outbound call (``POST /api/calls``): store it, then queue its ``originate`` command.

The call is written (``queued``) before its command goes on the shared originate queue, so a node
that takes the command always finds the record. If the queue refuses the command, the call is
marked ``failed`` at once (only while no node has claimed it) and the client gets a 503 naming the
queue: no call is left ``queued`` forever, and nothing is dialled that the client was told failed.

Account limits are checked before the call is stored: the call takes one of the account's call
slots (``shared.call_slots``: live calls and calls started this second, counted across the API and
every node in one DynamoDB transaction). A refusal is a 429 naming the limit, with Retry-After, and
stores nothing. From then on the slot belongs to the call: it is given back here if the call never
gets queued, by the API if the call is cancelled while still queued
(``functions.api.call_control``), and otherwise by the node that claimed it, when the call ends.
If the table cannot be asked, the request is a 503 (retry), not a call past its limits: the
client can retry, and the write that stores the call would fail the same way.

Sync code (boto3), run in a worker thread by the route in ``functions.api.calls``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from functions import observability
from functions.api.call_bodies import CreateCallRequest
from functions.api.call_views import call_view, log_fields
from functions.api.errors import RETRY_AFTER, ApiError, aws_reason
from functions.api.url_guard import check_urls
from functions.context import Context
from functions.observability import logger
from shared import call_slots
from shared.call_slots import SlotRefused
from shared.clock import iso_z, utc_now
from shared.commands import Originate
from shared.dynamo import mapping
from shared.dynamo.repository import AlreadyExists, ConditionFailed
from shared.models import Account, AccountStatus, Call, CallStatus, Direction
from shared.validation import MediaKind, MediaTarget, parse_media_target

UNSENT_CAUSE = "ORIGINATE_QUEUE_UNAVAILABLE"


def _route(request: CreateCallRequest, account: Account) -> tuple[MediaTarget | None, str | None]:
    """The media target and routing webhook the call will use, defaults filled from the account.

    Checked before anything is stored or queued, so a request no bot could serve is a 422 naming
    ``socket_url`` rather than a call that fails later, on a node.
    """
    target = parse_media_target(request.socket_url) if request.socket_url else None
    routing_webhook = request.webhook_url
    if target is None and routing_webhook is None:
        if account.socket_url:
            target = parse_media_target(account.socket_url)
        elif account.webhook_url:
            routing_webhook = account.webhook_url
        else:
            raise ApiError(
                422,
                "validation_error",
                "socket_url: give socket_url or webhook_url (the account has no default route)",
                "socket_url",
            )
    if (
        target is not None
        and target.kind is MediaKind.ELEVENLABS
        and not (target.agent_id or account.elevenlabs.agent_id)
    ):
        raise ApiError(
            422,
            "validation_error",
            "socket_url: 'elevenlabs' needs an agent: pass 'elevenlabs&<agent_id>' or set "
            "elevenlabs.agent_id on the account",
            "socket_url",
        )
    if target is not None and target.kind is MediaKind.VAPI:
        missing = [
            name
            for name, value in (
                ("vapi.api_key", account.vapi.api_key),
                ("vapi.assistant_id", target.agent_id or account.vapi.assistant_id),
            )
            if not value
        ]
        if missing:
            raise ApiError(
                422,
                "validation_error",
                f"socket_url: 'vapi' needs {' and '.join(missing)} on the account"
                + (" (or 'vapi&<assistant_id>')" if "vapi.assistant_id" in missing else ""),
                "socket_url",
            )
    return target, routing_webhook


def _count_originated() -> None:
    """CallsOriginated as its own EMF line: the shared Metrics set would mix concurrent requests."""
    shared = observability.metrics
    metrics = EphemeralMetrics(namespace=shared.namespace, service=shared.service)
    metrics.add_metric(name="CallsOriginated", unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()


def _take_slot(ctx: Context, account: Account, call: Call) -> None:
    """Take the call's slot; a 429 naming the limit when the account is at it, 503 on errors."""
    try:
        refused = call_slots.acquire(
            ctx.dynamodb,
            ctx.settings.table_name,
            account.account_id,
            call.call_uuid,
            account.limits,
        )
    except (ClientError, BotoCoreError) as exc:
        raise ApiError(
            503,
            "unavailable",
            f"the account's call limits could not be checked ({aws_reason(exc)}); nothing was "
            "dialled; retry",
            headers=RETRY_AFTER,
        ) from None
    if refused is not None:
        logger.info(
            "originate refused: %s",
            refused.reason,
            extra=log_fields(call, limit=refused.field, limit_value=refused.limit),
        )
        raise limit_error(refused)


def limit_error(refused: SlotRefused) -> ApiError:
    """The 429 for a call over an account limit, with the seconds to wait in Retry-After."""
    if refused.kind == "concurrency":
        message = (
            f"account concurrency limit reached: {refused.field} is {refused.shown_limit} and "
            "that many calls are live; retry when one ends"
        )
    else:
        message = (
            f"account call rate limit reached: {refused.field} is {refused.shown_limit} "
            f"calls per second; retry in {refused.retry_after} s"
        )
    return ApiError(
        429, "limit_exceeded", message, headers={"Retry-After": str(refused.retry_after)}
    )


def release_slot(ctx: Context, call: Call) -> None:
    """Give back the slot of a call no node will run (never raises: the caller is failing)."""
    try:
        call_slots.release(ctx.dynamodb, ctx.settings.table_name, call.account_id, call.call_uuid)
    except (ClientError, BotoCoreError) as exc:
        logger.error(
            "call slot not released; it stays counted",
            extra=log_fields(call, reason=aws_reason(exc)),
        )


def _mark_unsent(ctx: Context, call: Call) -> bool:
    """Fail a call whose originate command was not queued; False if a node claimed it anyway."""
    now = utc_now()
    request = mapping.call_transition_request(
        ctx.settings.table_name,
        call.call_uuid,
        CallStatus.FAILED,
        {"ended_at": iso_z(now, millis=True), "hangup_cause": UNSENT_CAUSE},
        unclaimed=True,
        now=now,
    )
    try:
        ctx.repo.execute_update(request)
    except ConditionFailed:
        return False
    except (ClientError, BotoCoreError):
        # The table is failing too: the call stays queued with no command behind it. Say so
        # loudly; the client still gets its 503 and nothing will be dialled.
        logger.exception("could not mark an unsent call failed", extra=log_fields(call))
    return True


def originate(
    ctx: Context,
    account_id: str,
    request: CreateCallRequest,
    *,
    idempotency: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the call and queue its originate command; ``{"status", "body"}`` of the response.

    ``idempotency`` is the data Powertools hashes when the request carries a key (unused here).
    """
    account = ctx.repo.get(Account, account_id)
    if account is None:
        raise ApiError(404, "not_found", "account not found")
    if account.status is AccountStatus.SUSPENDED:
        raise ApiError(403, "forbidden", "the account is suspended: it cannot place calls")
    target, routing_webhook = _route(request, account)
    # The account's defaults were checked when they were set; only this request's URLs are new.
    check_urls(ctx, {"socket_url": request.socket_url, "webhook_url": request.webhook_url})
    call = Call(
        account_id=account_id,
        direction=Direction.OUTBOUND,
        from_number=request.caller_id_number,
        to_number=request.destination_number,
        caller_id_name=request.caller_id_name,
        socket_url=str(target) if target else None,
        webhook_url=request.webhook_url,
    )
    _take_slot(ctx, account, call)
    try:
        ctx.repo.put(call, create_only=True)
    except AlreadyExists:  # a uuid4 collision: never in practice, but never overwrite a call
        # The slot is the other call's too (same uuid): releasing it would free a live call's.
        raise ApiError(503, "unavailable", "could not allocate a call id; retry") from None
    except (ClientError, BotoCoreError) as exc:
        release_slot(ctx, call)
        raise ApiError(
            503,
            "unavailable",
            f"the call could not be stored ({aws_reason(exc)}); nothing was dialled; retry",
            headers=RETRY_AFTER,
        ) from None
    command = Originate(
        call_uuid=call.call_uuid,
        account_id=account_id,
        destination_number=request.destination_number,
        caller_id_number=request.caller_id_number,
        caller_id_name=request.caller_id_name,
        socket_url=str(target) if target else None,
        webhook_url=routing_webhook,
    )
    try:
        ctx.sqs.send_message(
            QueueUrl=ctx.settings.originate_queue_url, MessageBody=command.model_dump_json()
        )
    except (ClientError, BotoCoreError) as exc:
        reason = aws_reason(exc)
        if _mark_unsent(ctx, call):
            release_slot(ctx, call)
            logger.error(
                "originate command not queued; call marked failed",
                extra=log_fields(call, reason=reason),
            )
            raise ApiError(
                503,
                "unavailable",
                f"the originate queue did not accept the command ({reason}); call "
                f"{call.call_uuid} was marked failed and will not be dialled; retry the request",
                headers=RETRY_AFTER,
            ) from None
        logger.warning(
            "originate send reported an error but a node claimed the call",
            extra=log_fields(call, reason=reason),
        )
    _count_originated()
    logger.info("outbound call queued", extra=log_fields(call, command_id=command.id))
    return {"status": 201, "body": call_view(call)}
