"""The call endpoints: originate, hangup, transfer, redirect; read and list calls.

This module is the HTTP side: routes, the reads, and the operations the OpenAPI document is built
from. Placing a call is in ``functions.api.originate``, live commands in
``functions.api.call_control``; what clients send and get back is in ``call_bodies`` and
``call_views``.

Handlers are sync code run in a worker thread (boto3 is sync); log lines carry ``call_uuid`` and
``account_id`` through ``extra`` (``call_views.log_fields``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions.api import idempotency
from functions.api.auth import Principal, requires_key
from functions.api.bodies import parse_json_object, read_model, read_query, validate
from functions.api.call_bodies import (
    CallListQuery,
    CreateCallRequest,
    HangupRequest,
    RedirectRequest,
    TransferRequest,
)
from functions.api.call_control import LiveRequest, load_call, send_live_command
from functions.api.call_views import CallPage, CallView, CommandAccepted, call_view
from functions.api.errors import ApiError
from functions.api.operations import Operation
from functions.api.originate import originate
from functions.api.routing import Endpoint, route
from functions.context import Context
from shared.dynamo import mapping
from shared.models import Call

# A filtered listing reads at most this many DynamoDB pages (of MAX_PAGE_SIZE) per request.
MAX_LIST_QUERIES = 5


# --------------------------------------------------------------------------- reads


def get_call(ctx: Context, principal: Principal, call_uuid: uuid.UUID) -> dict[str, Any]:
    call, _ = load_call(ctx, principal, call_uuid)
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
    """The path's call id; a malformed one is the same 404 as an unknown one, not a 422."""
    text = request.path_params["call_uuid"]
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ApiError(404, "not_found", f"call {text} not found", "call_uuid") from None


def calls_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    """The call-control routes (URL hosts are resolved with ``url_guard.resolver_of(ctx)``)."""
    keyed = requires_key(ctx_provider)

    @keyed
    async def create_call(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
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

    def command_endpoint(model: type[LiveRequest]) -> Endpoint:
        @keyed
        async def endpoint(request: Request, ctx: Context, principal: Principal) -> Response:
            body = await read_model(request, model)
            run = functools.partial(send_live_command, ctx, principal, body)
            return JSONResponse(await to_thread.run_sync(run), 202)

        return endpoint

    @keyed
    async def read_call(request: Request, ctx: Context, principal: Principal) -> Response:
        call_uuid = _path_uuid(request)
        return JSONResponse(await to_thread.run_sync(get_call, ctx, principal, call_uuid))

    @keyed
    async def list_route(request: Request, ctx: Context, principal: Principal) -> Response:
        query = read_query(request, CallListQuery)
        return JSONResponse(await to_thread.run_sync(list_calls, ctx, principal, query))

    return [
        route("/api/calls", {"GET": list_route, "POST": create_call}),
        route(
            "/api/calls/hangup",
            {"POST": command_endpoint(HangupRequest)},
        ),
        route(
            "/api/calls/transfer",
            {"POST": command_endpoint(TransferRequest)},
        ),
        route(
            "/api/calls/redirect",
            {"POST": command_endpoint(RedirectRequest)},
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
