"""Call control (API guide §1): originate, hangup, transfer, redirect; read and list calls.

How the pieces meet, and why:

- ``POST /api/calls`` writes the call (``queued``) before it puts the ``originate`` command on the
  shared originate queue, so a node that takes the command always finds the record. If the queue
  refuses the command, the call is marked ``failed`` at once (only while no node has claimed it)
  and the client gets a 503 naming the queue: no call is left ``queued`` forever and nothing is
  dialled that the client was told failed.
- Live commands go to the queue of the node that owns the call (``Call.node_id`` →
  ``EdgeNode.queue_url``). A call no node has claimed yet is cancelled in place: one conditional
  write (``queued`` and no ``node_id``) races the node's claim, and exactly one wins. The
  cancellation then travels as a ``call.completed`` event through the events queue, like every
  other end of a call, so the customer gets its ``call.completed`` callback from the same worker.
  The event is kept on the record until the queue takes it; a retried hangup delivers it then.
- Another account's call is a 404, never a 403 (which would confirm it exists). Admin keys may
  read and control any account's calls (operators supporting a customer).
- Handlers are sync code run in a worker thread (boto3 is sync); log lines carry ``call_uuid`` and
  ``account_id`` through ``extra`` (not ``append_keys``, whose state threads would share).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from anyio import to_thread
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions import observability
from functions.api import idempotency
from functions.api.auth import Principal, authenticate
from functions.api.bodies import parse_json_object, read_model, read_query, validate
from functions.api.errors import ApiError
from functions.api.operations import Operation
from functions.api.pagination import ListQuery, page_model
from functions.api.routing import Endpoint, route
from functions.api.url_guard import check_urls
from functions.context import Context
from functions.observability import logger
from shared.clock import iso_z, utc_now
from shared.commands import Hangup, Originate, Redirect, Transfer
from shared.dynamo import mapping
from shared.dynamo.repository import AlreadyExists, ConditionFailed
from shared.events import CallCompleted
from shared.models import Account, AccountStatus, Call, CallStatus, Direction, EdgeNode, MediaLeg
from shared.validation import (
    HttpUrl,
    MediaKind,
    MediaTarget,
    MediaTargetStr,
    PhoneNumber,
    TransferDestination,
    parse_media_target,
)

# A filtered listing reads at most this many DynamoDB pages (of MAX_PAGE_SIZE) per request.
MAX_LIST_QUERIES = 5
# Re-reads when a call changes under a control request (a node claimed it meanwhile).
CONTROL_ATTEMPTS = 3
CANCEL_CAUSE = "ORIGINATOR_CANCEL"
UNSENT_CAUSE = "ORIGINATE_QUEUE_UNAVAILABLE"
# node_id on events the control plane emits itself (a cancelled queued call has no node).
CONTROL_PLANE_NODE = "control-plane"
# Bookkeeping attribute: a cancellation event the events queue has not accepted yet.
UNDELIVERED_EVENT = "undelivered_event"
RETRY_AFTER = {"Retry-After": "1"}
# Stored fields that are infrastructure, not the customer's business.
INTERNAL_CALL_FIELDS = frozenset({"node_id", "trunk_id"})

Action = Literal["hangup", "transfer", "redirect"]


# --------------------------------------------------------------------------- request/response


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateCallRequest(_Body):
    """The API guide's originate body. Without ``socket_url`` and ``webhook_url`` the account's
    defaults route the call; with both, ``socket_url`` carries the media and ``webhook_url``
    receives this call's status callbacks."""

    destination_number: PhoneNumber
    caller_id_number: PhoneNumber
    caller_id_name: str | None = Field(None, min_length=1, max_length=128)
    socket_url: MediaTargetStr | None = Field(
        None,
        description="wss:// URL of your bot, or 'elevenlabs', 'elevenlabs&<agent_id>', "
        "'vapi', 'vapi&<assistant_id>'",
    )
    webhook_url: HttpUrl | None = Field(
        None, description="routing webhook (when no socket_url) and status callbacks"
    )


class HangupRequest(_Body):
    call_uuid: uuid.UUID


class TransferRequest(_Body):
    call_uuid: uuid.UUID
    destination_number: TransferDestination = Field(
        description="a phone number, an extension or a sip: URI"
    )


class RedirectRequest(_Body):
    call_uuid: uuid.UUID
    media_server: MediaTargetStr = Field(
        description="'elevenlabs', 'vapi', their '&<id>' forms, or a ws:// / wss:// URL"
    )


class CallView(BaseModel):
    """A call as the API shows it."""

    call_uuid: uuid.UUID
    account_id: str
    direction: Direction
    status: CallStatus
    from_number: str
    to_number: str
    caller_id_name: str | None = None
    socket_url: str | None = None
    webhook_url: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: int | None = None
    hangup_cause: str | None = None
    sip_status: int | None = None
    transferred_to: str | None = None
    media: list[MediaLeg] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    callback_attempts: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


CallPage = page_model(CallView, "CallPage")


class CallListQuery(ListQuery):
    status: CallStatus | None = Field(None, description="only calls in this status")
    direction: Direction | None = Field(None, description="only inbound or outbound calls")
    account_id: str | None = Field(None, description="admin keys only: another account's calls")


class CommandAccepted(BaseModel):
    """A live command was handed to the call's node (or, for a queued call, applied in place)."""

    call_uuid: uuid.UUID
    command: Action
    command_id: str
    status: CallStatus = Field(description="the call's status when the command was accepted")


def call_view(call: Call) -> dict[str, Any]:
    data = call.model_dump(exclude=set(INTERNAL_CALL_FIELDS))
    return CallView.model_validate(data).model_dump(mode="json")


# --------------------------------------------------------------------------- helpers


def _aws_reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def _log_extra(call: Call, **more: Any) -> dict[str, Any]:
    return {"call_uuid": str(call.call_uuid), "account_id": call.account_id, **more}


def _route(request: CreateCallRequest, account: Account) -> tuple[MediaTarget | None, str | None]:
    """The media target and routing webhook the call will use, defaults filled from the account."""
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


# --------------------------------------------------------------------------- originate


def _count_originated() -> None:
    """CallsOriginated as its own EMF line: the shared Metrics set would mix concurrent requests."""
    shared = observability.metrics
    metrics = EphemeralMetrics(namespace=shared.namespace, service=shared.service)
    metrics.add_metric(name="CallsOriginated", unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()


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
        logger.exception("could not mark an unsent call failed", extra=_log_extra(call))
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
    try:
        ctx.repo.put(call, create_only=True)
    except AlreadyExists:  # a uuid4 collision: never in practice, but never overwrite a call
        raise ApiError(503, "unavailable", "could not allocate a call id; retry") from None
    except (ClientError, BotoCoreError) as exc:
        raise ApiError(
            503,
            "unavailable",
            f"the call could not be stored ({_aws_reason(exc)}); nothing was dialled; retry",
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
        reason = _aws_reason(exc)
        if _mark_unsent(ctx, call):
            logger.error(
                "originate command not queued; call marked failed",
                extra=_log_extra(call, reason=reason),
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
            extra=_log_extra(call, reason=reason),
        )
    _count_originated()
    logger.info("outbound call queued", extra=_log_extra(call, command_id=command.id))
    return {"status": 201, "body": call_view(call)}


# --------------------------------------------------------------------------- live commands


def _load(ctx: Context, principal: Principal, call_uuid: uuid.UUID) -> tuple[Call, dict[str, Any]]:
    """The call and its raw item (bookkeeping attributes included); 404 if not the caller's."""
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
        reason = _aws_reason(exc)
        logger.error("cancel event not queued", extra=_log_extra(call, reason=reason))
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
        logger.warning("could not clear the delivered cancel event", extra=_log_extra(call))


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


def _send_to_node(ctx: Context, call: Call, command: Hangup | Transfer | Redirect) -> None:
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
        reason = _aws_reason(exc)
        logger.error(
            "command not queued", extra=_log_extra(call, node_id=node.node_id, reason=reason)
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
    build: Callable[[Call], Hangup | Transfer | Redirect],
) -> dict[str, Any]:
    """Apply a live command; the CommandAccepted body, or ApiError 404/409/503."""
    for _ in range(CONTROL_ATTEMPTS):
        call, item = _load(ctx, principal, call_uuid)
        if call.status.terminal:
            pending = item.get(UNDELIVERED_EVENT, {}).get("S")
            if action == "hangup" and pending:
                _deliver_cancel_event(ctx, call, pending)
                event_id = str(json.loads(pending)["id"])
                return _accepted(call, action, event_id, call.status)
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
            logger.info("queued call canceled in place", extra=_log_extra(call))
            _deliver_cancel_event(ctx, call, event.model_dump_json())
            return _accepted(call, action, event.id, CallStatus.CANCELED)
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
            extra=_log_extra(call, command=action, command_id=command.id, node_id=call.node_id),
        )
        return _accepted(call, action, command.id, call.status)
    raise ApiError(
        409, "conflict", f"call {call_uuid} changed while the request was handled; retry"
    )


def _accepted(call: Call, action: Action, command_id: str, status: CallStatus) -> dict[str, Any]:
    return CommandAccepted(
        call_uuid=call.call_uuid, command=action, command_id=command_id, status=status
    ).model_dump(mode="json")


# --------------------------------------------------------------------------- reads


def get_call(ctx: Context, principal: Principal, call_uuid: uuid.UUID) -> dict[str, Any]:
    call, _ = _load(ctx, principal, call_uuid)
    return call_view(call)


def list_calls(ctx: Context, principal: Principal, query: CallListQuery) -> dict[str, Any]:
    """Newest first. Filters apply after DynamoDB reads a page, so a filtered listing reads up to
    MAX_LIST_QUERIES pages to fill ``limit``; the cursor always resumes after the last call shown.
    """
    account_id = query.account_id or principal.account_id
    if account_id != principal.account_id and not principal.is_admin:
        raise ApiError(404, "not_found", "account not found", "account_id")
    partition = mapping.account_partition(account_id, mapping.COLLECTIONS[Call])
    filters = {
        name: value.value
        for name, value in (("status", query.status), ("direction", query.direction))
        if value is not None
    }
    calls: list[Call] = []
    cursor = query.cursor
    for _ in range(MAX_LIST_QUERIES):
        need = query.limit - len(calls)
        try:
            request = mapping.query_partition_request(
                ctx.settings.table_name,
                partition,
                limit=mapping.MAX_PAGE_SIZE if filters else need,
                cursor=cursor,
                filters=filters,
            )
        except mapping.CursorError as exc:
            raise ApiError(422, "validation_error", f"cursor: {exc}", "cursor") from None
        response = ctx.dynamodb.query(**request)
        items = response.get("Items", [])
        last = response.get("LastEvaluatedKey")
        if len(items) > need:
            items = items[:need]
            last = {name: items[-1][name] for name in mapping.KEY_ATTRIBUTES}
        calls.extend(mapping.from_item(Call, item) for item in items)
        cursor = mapping.encode_cursor(last) if last else None
        if cursor is None or len(calls) >= query.limit:
            break
    return {"items": [call_view(call) for call in calls], "next_cursor": cursor}


# --------------------------------------------------------------------------- HTTP


def _path_uuid(request: Request) -> uuid.UUID:
    text = request.path_params["call_uuid"]
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ApiError(404, "not_found", f"call {text} not found", "call_uuid") from None


def _hangup_command(body: HangupRequest, call: Call) -> Hangup:
    return Hangup(call_uuid=call.call_uuid, account_id=call.account_id)


def _transfer_command(body: TransferRequest, call: Call) -> Transfer:
    return Transfer(
        call_uuid=call.call_uuid, account_id=call.account_id, destination=body.destination_number
    )


def _redirect_command(body: RedirectRequest, call: Call) -> Redirect:
    return Redirect(
        call_uuid=call.call_uuid, account_id=call.account_id, media_server=body.media_server
    )


def calls_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    """The call-control routes (URL hosts are resolved with ``url_guard.resolver_of(ctx)``)."""

    async def create_call(request: Request) -> JSONResponse:
        ctx = ctx_provider()
        principal = await authenticate(request, ctx)
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
        data = parse_json_object(await request.body(), request.headers.get("content-type"))
        body = validate(CreateCallRequest, data)
        if key is None:
            run = functools.partial(originate, ctx, principal.account_id, body)
        else:
            run = functools.partial(
                idempotency.run_once,
                ctx,
                originate,
                (ctx, principal.account_id, body),
                account_id=principal.account_id,
                key=key,
                body=data,
                lambda_context=request.scope.get("aws.context"),
            )
        result = await to_thread.run_sync(run)
        view = result["body"]
        headers = {"Location": f"/api/calls/{view['call_uuid']}"}
        if result.get("replayed"):
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(view, result["status"], headers=headers)

    def command_endpoint(
        action: Action,
        model: type[HangupRequest | TransferRequest | RedirectRequest],
        build: Callable[[Any, Call], Hangup | Transfer | Redirect],
    ) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            ctx = ctx_provider()
            principal = await authenticate(request, ctx)
            body = await read_model(request, model)
            if isinstance(body, RedirectRequest):
                await to_thread.run_sync(check_urls, ctx, {"media_server": body.media_server})
            run = functools.partial(
                control, ctx, principal, action, body.call_uuid, functools.partial(build, body)
            )
            return JSONResponse(await to_thread.run_sync(run), 202)

        return endpoint

    async def read_call(request: Request) -> Response:
        ctx = ctx_provider()
        principal = await authenticate(request, ctx)
        call_uuid = _path_uuid(request)
        return JSONResponse(await to_thread.run_sync(get_call, ctx, principal, call_uuid))

    async def list_route(request: Request) -> Response:
        ctx = ctx_provider()
        principal = await authenticate(request, ctx)
        query = read_query(request, CallListQuery)
        return JSONResponse(await to_thread.run_sync(list_calls, ctx, principal, query))

    return [
        route("/api/calls", {"GET": list_route, "POST": create_call}),
        route(
            "/api/calls/hangup",
            {"POST": command_endpoint("hangup", HangupRequest, _hangup_command)},
        ),
        route(
            "/api/calls/transfer",
            {"POST": command_endpoint("transfer", TransferRequest, _transfer_command)},
        ),
        route(
            "/api/calls/redirect",
            {"POST": command_endpoint("redirect", RedirectRequest, _redirect_command)},
        ),
        route("/api/calls/{call_uuid}", {"GET": read_call}),
    ]


OPERATIONS = (
    Operation(
        "POST",
        "/api/calls",
        "Place an outbound call",
        "calls",
        status=201,
        request=CreateCallRequest,
        response=CallView,
        idempotent_header=True,
    ),
    Operation(
        "GET",
        "/api/calls",
        "List calls, newest first",
        "calls",
        response=CallPage,
        query=CallListQuery,
    ),
    Operation("GET", "/api/calls/{call_uuid}", "Read a call", "calls", response=CallView),
    Operation(
        "POST",
        "/api/calls/hangup",
        "Hang up a call (a queued call is canceled)",
        "calls",
        status=202,
        request=HangupRequest,
        response=CommandAccepted,
    ),
    Operation(
        "POST",
        "/api/calls/transfer",
        "Blind-transfer an answered call to a number, extension or SIP URI",
        "calls",
        status=202,
        request=TransferRequest,
        response=CommandAccepted,
    ),
    Operation(
        "POST",
        "/api/calls/redirect",
        "Switch the call's media to another bot without hanging up",
        "calls",
        status=202,
        request=RedirectRequest,
        response=CommandAccepted,
    ),
)
