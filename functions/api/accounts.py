"""``POST /api/accounts`` (admin): create an account and its first API key, all or nothing.

Only keys with the ``admin`` role may call it; any other valid key gets 403 (the endpoint is
documented for everyone, so saying "you lack the role" reveals nothing). The new account's first
key has the ``account`` role: admin keys are made deliberately, with ``POST /api/keys`` by an
admin. The account and key are written in one transaction (``shared.provisioning``), so a failure
never leaves an account nobody can use. The key is in the response once, like every new key.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from functions.api.account import AccountOut, account_view
from functions.api.auth import Principal, requires_key
from functions.api.bodies import read_model
from functions.api.keys import KeyCreated, key_view
from functions.api.operations import Operation
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.url_guard import check_urls
from functions.context import Context
from shared.models import Name
from shared.provisioning import create_account_with_key, new_account
from shared.validation import HttpUrl, MediaTargetStr

TAG = "accounts"


class AccountCreate(RequestBody):
    name: Name
    webhook_url: HttpUrl | None = Field(None, description="Routing webhook and status callbacks.")
    socket_url: MediaTargetStr | None = Field(None, description="Default media target.")
    key_name: Name = Field("default", description="Name of the account's first API key.")


class AccountCreated(ResponseBody):
    account: AccountOut
    api_key: KeyCreated


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
)


def create_account(ctx: Context, body: AccountCreate) -> AccountCreated:
    check_urls(ctx, {"webhook_url": body.webhook_url, "socket_url": body.socket_url})
    account = new_account(body.name, webhook_url=body.webhook_url, socket_url=body.socket_url)
    issued = create_account_with_key(ctx.repo, account, body.key_name)
    key = KeyCreated(**key_view(issued.record).model_dump(), key=issued.key)
    return AccountCreated(account=AccountOut.model_validate(account_view(account)), api_key=key)


def accounts_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    @requires_key(ctx_provider, admin=True)
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, AccountCreate)
        created = await to_thread.run_sync(create_account, ctx, body)
        return JSONResponse(created.model_dump(mode="json"), 201)

    return [route("/api/accounts", {"POST": post})]
