"""``/api/keys``: an account's API keys. The key itself is shown once, in the 201 of its creation.

Deleting a key revokes it: the record stays (``revoked_at`` set) so the table keeps who held which
key and when it was last used, but it disappears from listings and stops authenticating at once in
the function that revoked it and within ``api_key_cache_seconds`` (5 s) everywhere else.

Two rules keep an account from locking itself out or being weakened by a lesser key:

- a key cannot revoke itself (409): revoking the last key would leave the account unreachable, and
  rotation is "create the new key, then revoke the old one with the new one";
- only an admin key may create or revoke admin keys (403).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions.api.auth import Principal, requires_key
from functions.api.bodies import read_model, read_query
from functions.api.errors import ApiError
from functions.api.operations import Operation
from functions.api.pagination import ListQuery, page_body, page_model
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import list_page, not_found
from functions.context import Context
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed
from shared.models import ApiKey, ApiKeyRole, Name
from shared.provisioning import new_key_record

TAG = "keys"
# Pages scanned to find a key by id (keys are listed by creation time, not id).
MAX_KEY_PAGES = 20


class KeyCreate(RequestBody):
    name: Name = Field(description="A label to tell keys apart, e.g. 'production'.")
    role: ApiKeyRole = Field(
        ApiKeyRole.ACCOUNT, description="'admin' keys can manage accounts; admin callers only."
    )


class KeyOut(ResponseBody):
    """An API key as listed: never the key, never its hash."""

    key_id: str
    prefix: str = Field(description="The key's first characters, e.g. 'sk_live_ab12…'.")
    name: str
    role: ApiKeyRole
    created_at: datetime
    last_used_at: datetime | None = Field(
        None, description="Updated at most once a minute per key."
    )


class KeyCreated(KeyOut):
    key: str = Field(description="The API key. Shown only in this response: store it now.")


KeyList = page_model(KeyOut, "KeyList")

OPERATIONS = (
    Operation(
        "POST",
        "/api/keys",
        "Create an API key (shown once)",
        TAG,
        status=201,
        request=KeyCreate,
        response=KeyCreated,
    ),
    Operation(
        "GET", "/api/keys", "List the account's API keys", TAG, query=ListQuery, response=KeyList
    ),
    Operation("DELETE", "/api/keys/{key_id}", "Revoke an API key", TAG, status=204),
)


def key_view(record: ApiKey) -> KeyOut:
    return KeyOut.model_validate(record.model_dump(include=set(KeyOut.model_fields)))


def create_key(ctx: Context, principal: Principal, body: KeyCreate) -> KeyCreated:
    if body.role is ApiKeyRole.ADMIN and not principal.is_admin:
        raise ApiError(403, "forbidden", "only an admin key can create admin keys", "role")
    issued = new_key_record(principal.account_id, body.name, body.role)
    ctx.repo.put(issued.record, create_only=True)
    return KeyCreated(**key_view(issued.record).model_dump(), key=issued.key)


def list_keys(ctx: Context, principal: Principal, query: ListQuery) -> dict[str, object]:
    partition = mapping.account_partition(principal.account_id, mapping.COLLECTIONS[ApiKey])
    page = list_page(ctx, ApiKey, partition, query)
    # Revoked keys stay in the table for the record but are gone as far as the API is concerned.
    return page_body([key_view(k) for k in page.items if k.active], page.next_cursor)


def find_key(ctx: Context, account_id: str, key_id: str) -> ApiKey:
    """The account's live key with this id, or a 404 (also for another account's key)."""
    partition = mapping.account_partition(account_id, mapping.COLLECTIONS[ApiKey])
    cursor: str | None = None
    for _ in range(MAX_KEY_PAGES):
        page = ctx.repo.list(
            partition,
            ApiKey,
            limit=mapping.MAX_PAGE_SIZE,
            cursor=cursor,
            filters={"key_id": key_id},
        )
        for record in page.items:
            if record.active:
                return record
        cursor = page.next_cursor
        if cursor is None:
            break
    raise not_found("API key", key_id)


def revoke_key(ctx: Context, principal: Principal, key_id: str) -> None:
    record = find_key(ctx, principal.account_id, key_id)
    if record.key_id == principal.key_id:
        raise ApiError(
            409,
            "conflict",
            "a key cannot revoke itself; revoke it with another key of the account",
        )
    if record.role is ApiKeyRole.ADMIN and not principal.is_admin:
        raise ApiError(403, "forbidden", "only an admin key can revoke admin keys")
    request = mapping.update_request(
        ctx.settings.table_name,
        mapping.key(ApiKey, record.key_hash),
        {"revoked_at": iso_z(utc_now(), millis=True)},
        condition="attribute_not_exists(#rev)",
        condition_names={"#rev": "revoked_at"},
    )
    try:
        ctx.repo.execute_update(request)
    except ConditionFailed:
        raise not_found("API key", key_id) from None  # revoked meanwhile
    ctx.key_cache.forget(record.key_hash)


def key_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def post_key(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, KeyCreate)
        created = await to_thread.run_sync(create_key, ctx, principal, body)
        return JSONResponse(created.model_dump(mode="json"), 201)

    @keyed
    async def get_keys(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        query = read_query(request, ListQuery)
        return JSONResponse(await to_thread.run_sync(list_keys, ctx, principal, query))

    @keyed
    async def delete_key(request: Request, ctx: Context, principal: Principal) -> Response:
        await to_thread.run_sync(revoke_key, ctx, principal, request.path_params["key_id"])
        return Response(status_code=204)

    return [
        route("/api/keys", {"POST": post_key, "GET": get_keys}),
        route("/api/keys/{key_id}", {"DELETE": delete_key}),
    ]
