"""``/api/extensions``: SIP users that register with the gateway, each with an optional route.

The password is write-only and never stored: the edge authenticates REGISTER and INVITE with
digest (RFC 7616 / RFC 8760), which needs only HA1 = H(username ":" realm ":" password) per
algorithm (RFC 7616 §3.4.2), so that is what is kept, for MD5 and SHA-256. HA1 is as good as the
password against this realm, so it is never returned either. The realm is ``settings.sip_realm``
at the time the password is set; changing that setting needs every password set again.

A digest username identifies the user before any account is known (the realm is gateway-wide),
so ``sip_username`` is unique across the gateway: an index item ``SIPUSER#<name>`` is written in
the same transaction as the extension. Changing the username needs the password too, since the
stored HA1 covers both. Deleting an extension also drops its live registrations.

Passwords must be at least ``MIN_PASSWORD_LENGTH`` characters: SIP registrars on the internet are
brute-forced around the clock, and a registered extension can place calls.

Edge nodes cache an extension's route (an unknown one too): every create, update and delete is
followed by an invalidation to the live nodes (``functions/api/node_notify.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions.api.agents import check_route
from functions.api.auth import Principal, requires_key
from functions.api.bodies import patch_changes, read_model, read_query, validate
from functions.api.errors import ApiError
from functions.api.node_notify import invalidate_routes
from functions.api.operations import Operation
from functions.api.pagination import ListQuery, page_body, page_model
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import (
    apply_patch,
    get_owned,
    list_page,
    not_found,
    owner_condition,
)
from functions.context import Context
from shared.clock import utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import TransactionConflict
from shared.models import Extension
from shared.models import Route as CallRoute
from shared.validation import ExtensionName, check_extension

TAG = "extensions"
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 256
# Registrations dropped with an extension, at most (one query page).
MAX_REGISTRATIONS = 100

SipUsername = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")]
Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description=f"Write-only; at least {MIN_PASSWORD_LENGTH} characters.",
    ),
]


class ExtensionCreate(RequestBody):
    extension: ExtensionName = Field(description="The extension's name in the account, e.g. '101'.")
    sip_username: SipUsername = Field(description="Digest username; unique across the gateway.")
    password: Password
    route: CallRoute | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class ExtensionUpdate(RequestBody):
    sip_username: SipUsername | None = Field(None, description="Needs password in the same body.")
    password: Password | None = None
    route: CallRoute | None = Field(None, description="null removes the route.")
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class ExtensionOut(ResponseBody):
    """An extension as the API shows it: no password, no digest hashes."""

    extension: str
    sip_username: str
    realm: str = Field(description="Digest realm the password was set for.")
    route: CallRoute | None = None
    description: str | None = None
    created_at: datetime
    updated_at: datetime


ExtensionList = page_model(ExtensionOut, "ExtensionList")

OPERATIONS = (
    Operation(
        "POST",
        "/api/extensions",
        "Create a SIP extension",
        TAG,
        status=201,
        request=ExtensionCreate,
        response=ExtensionOut,
    ),
    Operation(
        "GET",
        "/api/extensions",
        "List extensions (by name)",
        TAG,
        query=ListQuery,
        response=ExtensionList,
    ),
    Operation("GET", "/api/extensions/{extension}", "Get an extension", TAG, response=ExtensionOut),
    Operation(
        "PATCH",
        "/api/extensions/{extension}",
        "Change an extension's credentials, route or description",
        TAG,
        request=ExtensionUpdate,
        response=ExtensionOut,
    ),
    Operation("DELETE", "/api/extensions/{extension}", "Delete an extension", TAG, status=204),
)


def digest_ha1(username: str, realm: str, password: str) -> dict[str, str]:
    """RFC 7616 §3.4.2: A1 = username ":" realm ":" passwd; HA1 = H(A1), per algorithm."""
    a1 = f"{username}:{realm}:{password}".encode()
    return {
        # MD5 is what RFC 2617 clients speak; it protects nothing here beyond what digest does.
        "ha1_md5": hashlib.md5(a1, usedforsecurity=False).hexdigest(),
        "ha1_sha256": hashlib.sha256(a1).hexdigest(),
    }


def extension_view(extension: Extension) -> ExtensionOut:
    return ExtensionOut.model_validate(extension.model_dump(include=set(ExtensionOut.model_fields)))


def _path_extension(raw: str) -> str:
    try:
        return check_extension(raw)
    except ValueError:
        raise not_found("extension", raw) from None


def _get(ctx: Context, principal: Principal, raw: str, *, consistent: bool = False) -> Extension:
    name = _path_extension(raw)
    return get_owned(
        ctx,
        Extension,
        (principal.account_id, name),
        principal.account_id,
        kind="extension",
        ident=name,
        consistent=consistent,
    )


def _username_taken() -> ApiError:
    return ApiError(
        409, "conflict", "sip_username: already used by another extension", "sip_username"
    )


def _index_put(table: str, username: str, account_id: str, extension: str) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": mapping.sip_user_item(username, account_id, extension),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def create_extension(ctx: Context, principal: Principal, body: ExtensionCreate) -> ExtensionOut:
    check_route(ctx, principal.account_id, body.route)
    realm = ctx.settings.sip_realm
    extension = Extension(
        account_id=principal.account_id,
        realm=realm,
        **body.model_dump(exclude={"password"}),
        **digest_ha1(body.sip_username, realm, body.password),
    )
    table = ctx.settings.table_name
    index = _index_put(table, extension.sip_username, extension.account_id, extension.extension)
    try:
        ctx.repo.transact([(extension, True)], [index])
    except TransactionConflict as exc:
        if exc.reasons and exc.reasons[0] is not None:
            raise ApiError(
                409,
                "conflict",
                f"extension {extension.extension} already exists",
                "extension",
            ) from None
        raise _username_taken() from None
    invalidate_routes(ctx, extension.account_id, "extension", [extension.extension])
    return extension_view(extension)


def update_extension(
    ctx: Context, principal: Principal, raw: str, body: ExtensionUpdate
) -> ExtensionOut:
    changes = patch_changes(body, required={"sip_username", "password"})
    extension = _get(ctx, principal, raw, consistent=True)
    check_route(ctx, principal.account_id, body.route)
    password = changes.pop("password", None)
    username = changes.pop("sip_username", extension.sip_username)
    renamed = username != extension.sip_username
    if renamed and password is None:
        raise ApiError(
            422,
            "validation_error",
            "password: required when sip_username changes (the stored digest covers both)",
            "password",
        )
    if password is not None:
        realm = ctx.settings.sip_realm
        changes.update(realm=realm, **digest_ha1(username, realm, password))
    if not renamed:
        updated = apply_patch(ctx, extension, changes, kind="extension", ident=raw)
    else:
        changes["sip_username"] = username
        updated = _rename(ctx, extension, changes)
    invalidate_routes(ctx, extension.account_id, "extension", [extension.extension])
    return extension_view(updated)


def _rename(ctx: Context, extension: Extension, changes: dict[str, Any]) -> Extension:
    """Move the SIP user index to the new username and update the extension, all or nothing."""
    table = ctx.settings.table_name
    merged = validate(Extension, {**extension.model_dump(), **changes, "updated_at": utc_now()})
    dump = merged.model_dump(mode="json")
    fields = {name: dump.get(name) for name in [*changes, "updated_at"]}
    item_key = mapping.key(Extension, extension.account_id, extension.extension)
    update = mapping.update_request(
        table,
        item_key,
        ctx.repo.seal_fields(Extension, item_key, fields),  # the HA1 values are stored sealed
        **owner_condition(extension.account_id),
    )
    old_index = {
        "Delete": {"TableName": table, "Key": mapping.sip_user_key(extension.sip_username)}
    }
    new_index = _index_put(table, merged.sip_username, merged.account_id, merged.extension)
    try:
        ctx.repo.transact([], [{"Update": update}, old_index, new_index])
    except TransactionConflict as exc:
        if exc.reasons and exc.reasons[0] is not None:
            raise not_found("extension", extension.extension) from None
        raise _username_taken() from None
    return merged


def list_extensions(ctx: Context, principal: Principal, query: ListQuery) -> dict[str, object]:
    partition = mapping.account_partition(principal.account_id, mapping.COLLECTIONS[Extension])
    page = list_page(ctx, Extension, partition, query, newest_first=False)
    return page_body([extension_view(e) for e in page.items], page.next_cursor)


def delete_extension(ctx: Context, principal: Principal, raw: str) -> None:
    extension = _get(ctx, principal, raw, consistent=True)
    table = ctx.settings.table_name
    delete = mapping.delete_request(
        table, mapping.key(Extension, extension.account_id, extension.extension)
    )
    delete["ConditionExpression"] += " AND #own = :own"
    delete["ExpressionAttributeNames"] = {"#own": "account_id"}
    delete["ExpressionAttributeValues"] = {":own": {"S": principal.account_id}}
    index = {"Delete": {"TableName": table, "Key": mapping.sip_user_key(extension.sip_username)}}
    try:
        ctx.repo.transact([], [{"Delete": delete}, index])
    except TransactionConflict:
        raise not_found("extension", extension.extension) from None
    _drop_registrations(ctx, extension)
    invalidate_routes(ctx, extension.account_id, "extension", [extension.extension])


def _drop_registrations(ctx: Context, extension: Extension) -> None:
    """Registrations share the extension's partition; they would outlive it until their TTL."""
    pk = mapping.key(Extension, extension.account_id, extension.extension)["pk"]["S"]
    response = ctx.dynamodb.query(
        TableName=ctx.settings.table_name,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :reg)",
        ExpressionAttributeValues={":pk": {"S": pk}, ":reg": {"S": "REG#"}},
        ProjectionExpression="pk, sk",
        Limit=MAX_REGISTRATIONS,
    )
    for item in response.get("Items", []):
        ctx.dynamodb.delete_item(TableName=ctx.settings.table_name, Key=item)


def extension_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, ExtensionCreate)
        out = await to_thread.run_sync(create_extension, ctx, principal, body)
        return JSONResponse(out.model_dump(mode="json"), 201)

    @keyed
    async def get_list(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        query = read_query(request, ListQuery)
        return JSONResponse(await to_thread.run_sync(list_extensions, ctx, principal, query))

    @keyed
    async def get_one(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        extension = await to_thread.run_sync(_get, ctx, principal, request.path_params["extension"])
        return JSONResponse(extension_view(extension).model_dump(mode="json"))

    @keyed
    async def patch(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, ExtensionUpdate)
        raw = request.path_params["extension"]
        out = await to_thread.run_sync(update_extension, ctx, principal, raw, body)
        return JSONResponse(out.model_dump(mode="json"))

    @keyed
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["extension"]
        await to_thread.run_sync(delete_extension, ctx, principal, raw)
        return Response(status_code=204)

    return [
        route("/api/extensions", {"POST": post, "GET": get_list}),
        route("/api/extensions/{extension}", {"GET": get_one, "PATCH": patch, "DELETE": delete}),
    ]
