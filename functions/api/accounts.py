"""``/api/accounts`` (admin): create an account and its first API key; change an account's limits.

Only keys with the ``admin`` role may call it; any other valid key gets 403 (the endpoint is
documented for everyone, so saying "you lack the role" reveals nothing). The new account's first
key has the ``account`` role: admin keys are made deliberately, with ``POST /api/keys`` by an
admin. The account and key are written in one transaction (``shared.provisioning``), so a failure
never leaves an account nobody can use. The key is in the response once, like every new key.

``PATCH /api/accounts/{account_id}`` sets what an account may not set for itself: its call limits
(``limits.max_concurrent_calls``, ``limits.calls_per_second``) and its ``status`` (``suspended``
refuses new calls). Limits merge field by field, so an operator raising one limit cannot reset the
other by leaving it out; neither may be null (a limit is always set). A change reaches the API at
once and the edge nodes at once too: their cached account is invalidated
(``functions/api/node_notify.py``; if that fails, within their account cache TTL, 5 s by default).
Calls already live keep their slots, so lowering ``max_concurrent_calls`` below the live count
refuses new calls until enough end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from functions.api.account import AccountOut, account_view
from functions.api.auth import Principal, requires_key
from functions.api.bodies import patch_changes, read_model, validate
from functions.api.errors import ApiError
from functions.api.keys import KeyCreated, key_view
from functions.api.node_notify import invalidate_routes
from functions.api.operations import Operation
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import apply_patch, not_found
from functions.api.url_guard import check_urls
from functions.context import Context
from functions.observability import logger
from shared.models import Account, AccountLimits, AccountStatus, Name
from shared.provisioning import create_account_with_key, new_account
from shared.validation import HttpUrl, MediaTargetStr

TAG = "accounts"
MAX_ACCOUNT_ID = 128


class AccountCreate(RequestBody):
    name: Name
    webhook_url: HttpUrl | None = Field(None, description="Routing webhook and status callbacks.")
    socket_url: MediaTargetStr | None = Field(None, description="Default media target.")
    key_name: Name = Field("default", description="Name of the account's first API key.")


class AccountCreated(ResponseBody):
    account: AccountOut
    api_key: KeyCreated


class LimitsUpdate(RequestBody):
    """Limits to change; absent fields keep their value."""

    max_concurrent_calls: int | None = Field(
        None, ge=1, le=100_000, description="Calls of the account live at once, on every node."
    )
    calls_per_second: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Calls the account may start per second (0.5: one per 2 s).",
    )


class AccountAdminUpdate(RequestBody):
    """What an admin changes on an account; absent fields are kept."""

    limits: LimitsUpdate | None = None
    status: AccountStatus | None = Field(None, description="suspended: no new calls.")


OPERATIONS = (
    Operation(
        "POST",
        "/api/accounts",
        "Create an account and its first API key (admin keys only)",
        TAG,
        status=201,
        request=AccountCreate,
        response=AccountCreated,
        admin_only=True,
    ),
    Operation(
        "PATCH",
        "/api/accounts/{account_id}",
        "Change an account's call limits or status (admin keys only)",
        TAG,
        request=AccountAdminUpdate,
        response=AccountOut,
        admin_only=True,
    ),
)


def create_account(ctx: Context, body: AccountCreate) -> AccountCreated:
    check_urls(ctx, {"webhook_url": body.webhook_url, "socket_url": body.socket_url})
    account = new_account(body.name, webhook_url=body.webhook_url, socket_url=body.socket_url)
    issued = create_account_with_key(ctx.repo, account, body.key_name)
    key = KeyCreated(**key_view(issued.record).model_dump(), key=issued.key)
    return AccountCreated(account=AccountOut.model_validate(account_view(account)), api_key=key)


def _merged_limits(current: AccountLimits, update: LimitsUpdate) -> AccountLimits:
    """The account's limits with the fields ``update`` sets; a null limit is a 422 naming it."""
    changes: dict[str, Any] = {}
    for name in update.model_fields_set:
        value = getattr(update, name)
        if value is None:
            field = f"limits.{name}"
            raise ApiError(422, "validation_error", f"{field}: cannot be null", field)
        changes[name] = value
    return validate(AccountLimits, {**current.model_dump(), **changes})


def update_account(ctx: Context, account_id: str, body: AccountAdminUpdate) -> Account:
    """Apply an admin PATCH to any account; 404 when there is no such account."""
    changes = patch_changes(body, required={"limits", "status"})
    if len(account_id) > MAX_ACCOUNT_ID:  # no such id is issued; DynamoDB would refuse the key
        raise not_found("account", account_id[:MAX_ACCOUNT_ID] + "...")
    account = ctx.repo.get(Account, account_id, consistent=True)
    if account is None:
        raise not_found("account", account_id)
    if body.limits is not None:
        changes["limits"] = _merged_limits(account.limits, body.limits)
    updated = apply_patch(ctx, account, changes, kind="account", ident=account_id)
    invalidate_routes(ctx, account_id, "account")  # a suspension refuses the next call
    logger.info(
        "account changed by an admin",
        extra={
            "account_id": account_id,
            "limits": updated.limits.model_dump(),
            "status": updated.status.value,
        },
    )
    return updated


def accounts_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    @requires_key(ctx_provider, admin=True)
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, AccountCreate)
        created = await to_thread.run_sync(create_account, ctx, body)
        return JSONResponse(created.model_dump(mode="json"), 201)

    @requires_key(ctx_provider, admin=True)
    async def patch(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, AccountAdminUpdate)
        account_id = request.path_params["account_id"]
        account = await to_thread.run_sync(update_account, ctx, account_id, body)
        return JSONResponse(account_view(account))

    return [
        route("/api/accounts", {"POST": post}),
        route("/api/accounts/{account_id}", {"PATCH": patch}),
    ]
