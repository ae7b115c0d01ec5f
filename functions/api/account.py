"""``/api/account``: the calling key's account, its defaults and integrations, its webhook secret.

Secrets (provider API keys) are write-only: a read shows only their last four characters so a user
can tell which key is configured (``functions.api.masking``). The webhook secret is the one secret
a customer must read, to verify ``X-Signature``; it has its own endpoint so that it never travels in
ordinary account reads, and rotating it takes effect for the next webhook sent (there is no overlap
period: rotate, then update the receiver).

Edge nodes cache the account they route by (its defaults, integrations and webhook secret): every
change here is followed by an invalidation to the live nodes (``functions/api/node_notify.py``).

PATCH follows JSON merge semantics per field: an absent field is left alone, ``null`` clears it,
and inside ``elevenlabs``/``vapi`` each sub-field is merged the same way (``"elevenlabs": null``
clears the whole integration).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from anyio import to_thread
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from functions.api.auth import Principal, requires_key
from functions.api.bodies import patch_changes, read_model
from functions.api.masking import mask
from functions.api.node_notify import invalidate_routes
from functions.api.operations import Operation
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import apply_patch, get_owned
from functions.api.url_guard import check_urls
from functions.context import Context
from shared.apikeys import generate_webhook_secret
from shared.models import (
    Account,
    AccountLimits,
    AccountStatus,
    ElevenLabsSettings,
    Name,
    VapiSettings,
)
from shared.validation import HttpUrl, MediaTargetStr

__all__ = ["OPERATIONS", "AccountOut", "account_routes", "account_view", "mask"]

_DRIVER_ID = r"^[A-Za-z0-9_-]+$"
TAG = "account"


class ElevenLabsOut(ResponseBody):
    api_key: str | None = Field(None, description="Masked: only the last four characters.")
    agent_id: str | None = None


class VapiOut(ResponseBody):
    api_key: str | None = Field(None, description="Masked: only the last four characters.")
    assistant_id: str | None = None


class AccountOut(ResponseBody):
    """An account as the API shows it: secrets masked, the webhook secret left out."""

    account_id: str
    name: str
    status: AccountStatus
    webhook_url: str | None = Field(None, description="Routing webhook and status callbacks.")
    socket_url: str | None = Field(None, description="Default media target of calls.")
    elevenlabs: ElevenLabsOut
    vapi: VapiOut
    limits: AccountLimits
    created_at: datetime
    updated_at: datetime


class ElevenLabsUpdate(RequestBody):
    api_key: str | None = Field(None, min_length=1, max_length=256, description="Write-only.")
    agent_id: str | None = Field(None, min_length=1, max_length=128, pattern=_DRIVER_ID)


class VapiUpdate(RequestBody):
    api_key: str | None = Field(None, min_length=1, max_length=256, description="Write-only.")
    assistant_id: str | None = Field(None, min_length=1, max_length=128, pattern=_DRIVER_ID)


class AccountUpdate(RequestBody):
    """Fields to change; absent fields are kept, ``null`` clears."""

    name: Name | None = None
    webhook_url: HttpUrl | None = Field(None, description="http(s) URL; public addresses only.")
    socket_url: MediaTargetStr | None = Field(
        None, description="ws(s) URL, 'elevenlabs[&agent_id]' or 'vapi[&assistant_id]'."
    )
    elevenlabs: ElevenLabsUpdate | None = None
    vapi: VapiUpdate | None = None


class WebhookSecretOut(ResponseBody):
    webhook_secret: str = Field(description="HMAC-SHA256 key of X-Signature on webhooks.")


OPERATIONS = (
    Operation("GET", "/api/account", "The calling key's account", TAG, response=AccountOut),
    Operation(
        "PATCH",
        "/api/account",
        "Change the account's defaults and integrations",
        TAG,
        request=AccountUpdate,
        response=AccountOut,
    ),
    Operation(
        "GET",
        "/api/account/webhook-secret",
        "The secret that signs webhooks (X-Signature)",
        TAG,
        response=WebhookSecretOut,
    ),
    Operation(
        "POST",
        "/api/account/webhook-secret/rotate",
        "Replace the webhook secret; the next webhook is signed with the new one",
        TAG,
        response=WebhookSecretOut,
    ),
)


def account_view(account: Account) -> dict[str, Any]:
    body = account.model_dump(mode="json", exclude={"webhook_secret"})
    body["elevenlabs"]["api_key"] = mask(account.elevenlabs.api_key)
    body["vapi"]["api_key"] = mask(account.vapi.api_key)
    return body


def _merged(current: BaseModel, update: BaseModel | None, empty: BaseModel) -> BaseModel:
    """A nested integration after a PATCH: null clears it, set sub-fields replace theirs."""
    if update is None:
        return empty
    return type(current).model_validate(
        {**current.model_dump(), **{n: getattr(update, n) for n in update.model_fields_set}}
    )


def load_account(ctx: Context, principal: Principal) -> Account:
    """The key's own account, read consistently (a settings page must show what was just saved)."""
    return get_owned(
        ctx,
        Account,
        (principal.account_id,),
        principal.account_id,
        kind="account",
        ident=principal.account_id,
        consistent=True,
    )


def update_account(ctx: Context, principal: Principal, body: AccountUpdate) -> Account:
    changes = patch_changes(body, required={"name"})
    check_urls(ctx, {"webhook_url": body.webhook_url, "socket_url": body.socket_url})
    account = load_account(ctx, principal)
    if "elevenlabs" in changes:
        changes["elevenlabs"] = _merged(account.elevenlabs, body.elevenlabs, ElevenLabsSettings())
    if "vapi" in changes:
        changes["vapi"] = _merged(account.vapi, body.vapi, VapiSettings())
    updated = apply_patch(ctx, account, changes, kind="account", ident=account.account_id)
    invalidate_routes(ctx, account.account_id, "account")  # defaults, integrations
    return updated


def rotate_webhook_secret(ctx: Context, principal: Principal) -> Account:
    account = load_account(ctx, principal)
    changes = {"webhook_secret": generate_webhook_secret()}
    updated = apply_patch(ctx, account, changes, kind="account", ident=account.account_id)
    invalidate_routes(ctx, account.account_id, "account")  # nodes sign routing webhooks with it
    return updated


def account_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def get_account(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        account = await to_thread.run_sync(load_account, ctx, principal)
        return JSONResponse(account_view(account))

    @keyed
    async def patch_account(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, AccountUpdate)
        account = await to_thread.run_sync(update_account, ctx, principal, body)
        return JSONResponse(account_view(account))

    @keyed
    async def get_webhook_secret(
        request: Request, ctx: Context, principal: Principal
    ) -> JSONResponse:
        account = await to_thread.run_sync(load_account, ctx, principal)
        return JSONResponse({"webhook_secret": account.webhook_secret})

    @keyed
    async def rotate(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        account = await to_thread.run_sync(rotate_webhook_secret, ctx, principal)
        return JSONResponse({"webhook_secret": account.webhook_secret})

    return [
        route("/api/account", {"GET": get_account, "PATCH": patch_account}),
        route("/api/account/webhook-secret", {"GET": get_webhook_secret}),
        route("/api/account/webhook-secret/rotate", {"POST": rotate}),
    ]
