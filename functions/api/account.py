"""``GET /api/account``: the calling key's account, with secrets masked.

Secrets (provider API keys) are write-only: a read shows only their last four characters so a user
can tell which key is configured. The webhook secret has its own endpoint and never appears here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from functions.api.auth import authenticate
from functions.api.errors import ApiError
from functions.context import Context
from shared.models import Account


def mask(secret: str | None) -> str | None:
    if not secret:
        return None
    return "…" + secret[-4:] if len(secret) > 8 else "…"


def account_view(account: Account) -> dict[str, Any]:
    body = account.model_dump(mode="json", exclude={"webhook_secret"})
    body["elevenlabs"]["api_key"] = mask(account.elevenlabs.api_key)
    body["vapi"]["api_key"] = mask(account.vapi.api_key)
    return body


def account_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    async def get_account(request: Request) -> JSONResponse:
        ctx = ctx_provider()
        principal = await authenticate(request, ctx)
        account = await to_thread.run_sync(ctx.repo.get, Account, principal.account_id)
        if account is None:
            raise ApiError(404, "not_found", "account not found")
        return JSONResponse(account_view(account))

    return [Route("/api/account", get_account, methods=["GET"])]
