"""``/api/numbers``: the DIDs an account owns, each routed to a bot, a webhook or an agent.

A number can belong to one account only, gateway-wide: an inbound INVITE is routed by its DID
before any account is known. The item's key is the E.164 number itself (``NUMBER#+15551234567``),
so "unique across the gateway" is a create-only conditional put; a taken number is a 409 whichever
account holds it (saying which would leak another account's data).

The number in the path may be written with or without ``+`` (``/api/numbers/15551234567``) or
URL-encoded (``%2B15551234567``); it is normalised to E.164 like the body's.

Edge nodes cache numbers (unknown ones too): every create, update and delete is followed by an
invalidation to the live nodes (``functions/api/node_notify.py``), so a change routes the next
call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions.api.agents import check_route
from functions.api.auth import Principal, requires_key
from functions.api.bodies import patch_changes, read_model, read_query
from functions.api.errors import ApiError
from functions.api.node_notify import invalidate_routes
from functions.api.operations import Operation
from functions.api.pagination import ListQuery, page_body, page_model
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import apply_patch, delete_owned, get_owned, list_page, not_found
from functions.context import Context
from shared.dynamo import mapping
from shared.dynamo.repository import AlreadyExists
from shared.models import Number
from shared.models import Route as CallRoute
from shared.validation import E164Number, normalize_number

TAG = "numbers"
MAX_DESCRIPTION_LENGTH = 256


class NumberCreate(RequestBody):
    number: E164Number = Field(description="The DID, E.164 with or without '+'.")
    route: CallRoute
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class NumberUpdate(RequestBody):
    route: CallRoute | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class NumberOut(ResponseBody):
    number: str = Field(description="E.164 with '+'.")
    route: CallRoute
    description: str | None = None
    created_at: datetime
    updated_at: datetime


NumberList = page_model(NumberOut, "NumberList")

OPERATIONS = (
    Operation(
        "POST",
        "/api/numbers",
        "Add a number (DID) and its route",
        TAG,
        status=201,
        request=NumberCreate,
        response=NumberOut,
    ),
    Operation(
        "GET", "/api/numbers", "List numbers (by number)", TAG, query=ListQuery, response=NumberList
    ),
    Operation("GET", "/api/numbers/{number}", "Get a number", TAG, response=NumberOut),
    Operation(
        "PATCH",
        "/api/numbers/{number}",
        "Change a number's route or description",
        TAG,
        request=NumberUpdate,
        response=NumberOut,
    ),
    Operation("DELETE", "/api/numbers/{number}", "Release a number", TAG, status=204),
)


def number_view(number: Number) -> NumberOut:
    return NumberOut.model_validate(number.model_dump(include=set(NumberOut.model_fields)))


def _path_number(raw: str) -> str:
    try:
        return normalize_number(raw)
    except ValueError:
        raise not_found("number", raw) from None


def _get(ctx: Context, principal: Principal, raw: str, *, consistent: bool = False) -> Number:
    number = _path_number(raw)
    return get_owned(
        ctx,
        Number,
        (number,),
        principal.account_id,
        kind="number",
        ident=number,
        consistent=consistent,
    )


def create_number(ctx: Context, principal: Principal, body: NumberCreate) -> NumberOut:
    check_route(ctx, principal.account_id, body.route)
    number = Number(account_id=principal.account_id, **body.model_dump())
    try:
        ctx.repo.put(number, create_only=True)
    except AlreadyExists:
        raise ApiError(
            409, "conflict", f"number {number.number} is already registered", "number"
        ) from None
    invalidate_routes(ctx, number.account_id, "number", [number.number])  # nodes cache misses
    return number_view(number)


def update_number(ctx: Context, principal: Principal, raw: str, body: NumberUpdate) -> NumberOut:
    changes = patch_changes(body, required={"route"})
    number = _get(ctx, principal, raw, consistent=True)
    check_route(ctx, principal.account_id, body.route)
    updated = apply_patch(ctx, number, changes, kind="number", ident=number.number)
    invalidate_routes(ctx, number.account_id, "number", [number.number])
    return number_view(updated)


def list_numbers(ctx: Context, principal: Principal, query: ListQuery) -> dict[str, object]:
    partition = mapping.account_partition(principal.account_id, mapping.COLLECTIONS[Number])
    page = list_page(ctx, Number, partition, query, newest_first=False)
    return page_body([number_view(n) for n in page.items], page.next_cursor)


def delete_number(ctx: Context, principal: Principal, raw: str) -> None:
    number = _path_number(raw)
    delete_owned(ctx, Number, (number,), principal.account_id, kind="number")
    invalidate_routes(ctx, principal.account_id, "number", [number])


def number_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, NumberCreate)
        out = await to_thread.run_sync(create_number, ctx, principal, body)
        return JSONResponse(out.model_dump(mode="json"), 201)

    @keyed
    async def get_list(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        query = read_query(request, ListQuery)
        return JSONResponse(await to_thread.run_sync(list_numbers, ctx, principal, query))

    @keyed
    async def get_one(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        number = await to_thread.run_sync(_get, ctx, principal, request.path_params["number"])
        return JSONResponse(number_view(number).model_dump(mode="json"))

    @keyed
    async def patch(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, NumberUpdate)
        raw = request.path_params["number"]
        out = await to_thread.run_sync(update_number, ctx, principal, raw, body)
        return JSONResponse(out.model_dump(mode="json"))

    @keyed
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        await to_thread.run_sync(delete_number, ctx, principal, request.path_params["number"])
        return Response(status_code=204)

    return [
        route("/api/numbers", {"POST": post, "GET": get_list}),
        route("/api/numbers/{number}", {"GET": get_one, "PATCH": patch, "DELETE": delete}),
    ]
