"""Live commands on a call (hangup, transfer, redirect), and loading a call for its caller.

- A command goes to the queue of the node that owns the call (``Call.node_id`` →
  ``EdgeNode.queue_url``); only that node holds the call's SIP dialog and media.
- A call no node has claimed yet is cancelled in place: one conditional write (``queued`` and no
  ``node_id``) races the node's claim, and exactly one wins. The cancellation then travels as a
  ``call.completed`` event through the events queue, like every other end of a call, so the
  customer gets its ``call.completed`` callback from the same worker. The event is kept on the
  record until the queue takes it; a retried hangup delivers it then.
- A call cancelled in place gives back the account call slot the originate took
  (``shared.call_slots``): no node will ever run it, so no node would release it. Releasing is
  idempotent, so a retried hangup releases again harmlessly (and catches a release that failed).
- Another account's call is a 404, never a 403 (which would confirm it exists). Admin keys may
  read and control any account's calls (operators supporting a customer).

Sync code (boto3), run in a worker thread by the routes in ``functions.api.calls``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.api.auth import Principal
from functions.api.call_bodies import Action, HangupRequest, RedirectRequest, TransferRequest
from functions.api.call_views import command_accepted, log_fields
from functions.api.errors import RETRY_AFTER, ApiError, aws_reason
from functions.api.originate import release_slot
from functions.api.url_guard import check_transfer_destination, check_urls
from functions.context import Context
from functions.observability import logger
from shared.clock import iso_z, utc_now
from shared.commands import Hangup, Redirect, Transfer
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed
from shared.events import CallCompleted
from shared.models import Call, CallStatus, EdgeNode

# Re-reads when a call changes under a control request (a node claimed it meanwhile).
CONTROL_ATTEMPTS = 3
CANCEL_CAUSE = "ORIGINATOR_CANCEL"
# node_id on events the control plane emits itself (a cancelled queued call has no node).
CONTROL_PLANE_NODE = "control-plane"
# Bookkeeping attribute: a cancellation event the events queue has not accepted yet.
UNDELIVERED_EVENT = "undelivered_event"

LiveCommand = Hangup | Transfer | Redirect


def load_call(
    ctx: Context, principal: Principal, call_uuid: uuid.UUID
) -> tuple[Call, dict[str, Any]]:
    """The call and its raw item (bookkeeping attributes included); 404 if not the caller's.

    Read consistently: a client hanging up right after its originate must find the call it was
    just given.
    """
    request = mapping.get_request(
        ctx.settings.table_name, mapping.key(Call, call_uuid), consistent=True
    )
    item = ctx.dynamodb.get_item(**request).get("Item")
    call = mapping.from_item(Call, item) if item else None
    if call is None or not (principal.is_admin or call.account_id == principal.account_id):
        raise ApiError(404, "not_found", f"call {call_uuid} not found", "call_uuid")
    return call, item or {}


def _deliver_cancel_event(ctx: Context, call: Call, event_json: str) -> None:
    """Queue the cancellation's call.completed event, then forget it; 503 if the queue refuses."""
    try:
        ctx.sqs.send_message(QueueUrl=ctx.settings.events_queue_url, MessageBody=event_json)
    except (ClientError, BotoCoreError) as exc:
        reason = aws_reason(exc)
        logger.error("cancel event not queued", extra=log_fields(call, reason=reason))
        raise ApiError(
            503,
            "unavailable",
            f"call {call.call_uuid} is canceled, but the events queue did not accept its "
            f"call.completed event ({reason}); retry this request to deliver it",
            headers=RETRY_AFTER,
        ) from None
    forget = mapping.update_request(
        ctx.settings.table_name, mapping.key(Call, call.call_uuid), {UNDELIVERED_EVENT: None}
    )
    try:
        ctx.dynamodb.update_item(**forget)
    except (ClientError, BotoCoreError):  # a repeat later only re-sends a duplicate event
        logger.warning("could not clear the delivered cancel event", extra=log_fields(call))


def _cancel_in_place(ctx: Context, call: Call) -> CallCompleted:
    """Cancel a call no node has claimed; raises ConditionFailed if one did meanwhile."""
    now = utc_now()
    event = CallCompleted(
        call_uuid=call.call_uuid,
        account_id=call.account_id,
        node_id=CONTROL_PLANE_NODE,
        occurred_at=now,
        status=CallStatus.CANCELED,
        duration=0,
        hangup_cause=CANCEL_CAUSE,
    )
    fields = {
        "ended_at": iso_z(now, millis=True),
        "duration": 0,
        "hangup_cause": CANCEL_CAUSE,
        UNDELIVERED_EVENT: event.model_dump_json(),
    }
    request = mapping.call_transition_request(
        ctx.settings.table_name,
        call.call_uuid,
        CallStatus.CANCELED,
        fields,
        event_id=event.id,
        unclaimed=True,
        now=now,
    )
    ctx.repo.execute_update(request)
    return event


def _send_to_node(ctx: Context, call: Call, command: LiveCommand) -> None:
    """Queue ``command`` for the call's node; a 503 when that node cannot be reached."""
    node = ctx.repo.get(EdgeNode, call.node_id)
    if node is None:
        raise ApiError(
            503,
            "unavailable",
            f"edge node {call.node_id}, which owns call {call.call_uuid}, is not registered; "
            "the command was not sent",
            headers=RETRY_AFTER,
        )
    if node.expires_at <= utc_now():
        # The item outlives the node until DynamoDB's TTL sweep (minutes to hours): a node that
        # missed its heartbeats has crashed or lost AWS, and its queue has no reader.
        raise ApiError(
            503,
            "unavailable",
            f"edge node {call.node_id}, which owns call {call.call_uuid}, has sent no heartbeat "
            f"since {iso_z(node.expires_at)}; the command was not sent",
            headers=RETRY_AFTER,
        )
    try:
        ctx.sqs.send_message(QueueUrl=node.queue_url, MessageBody=command.model_dump_json())
    except (ClientError, BotoCoreError) as exc:
        reason = aws_reason(exc)
        logger.error(
            "command not queued", extra=log_fields(call, node_id=node.node_id, reason=reason)
        )
        raise ApiError(
            503,
            "unavailable",
            f"the command queue of edge node {node.node_id} did not accept the command "
            f"({reason}); retry the request",
            headers=RETRY_AFTER,
        ) from None


def control(
    ctx: Context,
    principal: Principal,
    action: Action,
    call_uuid: uuid.UUID,
    build: Callable[[Call], LiveCommand],
) -> dict[str, Any]:
    """Apply a live command; the CommandAccepted body, or ApiError 404/409/503."""
    for _ in range(CONTROL_ATTEMPTS):
        call, item = load_call(ctx, principal, call_uuid)
        if call.status.terminal:
            pending = item.get(UNDELIVERED_EVENT, {}).get("S")
            if action == "hangup" and pending:
                release_slot(ctx, call)
                _deliver_cancel_event(ctx, call, pending)
                event_id = str(json.loads(pending)["id"])
                return command_accepted(call, action, event_id, call.status)
            raise ApiError(
                409,
                "conflict",
                f"call {call_uuid} has already ended ({call.status})",
                "call_uuid",
            )
        if call.node_id is None:
            if action != "hangup":
                raise ApiError(
                    409,
                    "conflict",
                    f"call {call_uuid} is still queued: it has no media to {action} yet",
                    "call_uuid",
                )
            try:
                event = _cancel_in_place(ctx, call)
            except ConditionFailed:
                continue  # a node claimed it, or it ended: read it again
            logger.info("queued call canceled in place", extra=log_fields(call))
            release_slot(ctx, call)
            _deliver_cancel_event(ctx, call, event.model_dump_json())
            return command_accepted(call, action, event.id, CallStatus.CANCELED)
        if action == "transfer" and call.status is not CallStatus.IN_PROGRESS:
            raise ApiError(
                409,
                "conflict",
                f"call {call_uuid} is {call.status}: only an answered call can be transferred",
                "call_uuid",
            )
        command = build(call)
        _send_to_node(ctx, call, command)
        logger.info(
            "command sent to node",
            extra=log_fields(call, command=action, command_id=command.id, node_id=call.node_id),
        )
        return command_accepted(call, action, command.id, call.status)
    raise ApiError(
        409, "conflict", f"call {call_uuid} changed while the request was handled; retry"
    )


LiveRequest = HangupRequest | TransferRequest | RedirectRequest


def command_for(body: LiveRequest, call: Call) -> LiveCommand:
    """The node command a validated request body asks for, addressed to ``call``."""
    if isinstance(body, TransferRequest):
        return Transfer(
            call_uuid=call.call_uuid,
            account_id=call.account_id,
            destination=body.destination_number,
        )
    if isinstance(body, RedirectRequest):
        return Redirect(
            call_uuid=call.call_uuid, account_id=call.account_id, media_server=body.media_server
        )
    return Hangup(call_uuid=call.call_uuid, account_id=call.account_id)


def send_live_command(ctx: Context, principal: Principal, body: LiveRequest) -> dict[str, Any]:
    """Check a live command's targets, then apply it: the one path of the REST API and the
    dashboard. A redirect's URL and a transfer's sip: host are checked here (SSRF) before any
    node is asked."""
    action: Action
    if isinstance(body, RedirectRequest):
        check_urls(ctx, {"media_server": body.media_server})
        action = "redirect"
    elif isinstance(body, TransferRequest):
        check_transfer_destination(ctx, body.destination_number, "destination_number")
        action = "transfer"
    else:
        action = "hangup"
    return control(ctx, principal, action, body.call_uuid, lambda call: command_for(body, call))
