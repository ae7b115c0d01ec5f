"""API keys: list, create (the key shown once, with a copy button) and revoke with confirmation.

Everything goes through ``functions.api.keys`` (``list_keys``, ``create_key``, ``revoke_key``), so
the REST API's rules hold here too: only an admin key creates or revokes admin keys, and the key
this session signed in with cannot revoke itself. The new key is rendered in the response to the
POST that created it and nowhere else: it is not put in the session or a redirect, so reloading
the listing never shows it again.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.keys import KeyCreate, create_key, list_keys, revoke_key
from functions.context import Context
from functions.dashboard import forms
from functions.dashboard.render import field_errors, render
from functions.dashboard.session import page
from shared.models import ApiKeyRole


async def _keys_page(
    request: Request,
    ctx: Context,
    principal: Principal,
    *,
    status: int = 200,
    **extra: object,
) -> Response:
    listing = await to_thread.run_sync(list_keys, ctx, principal, forms.list_query(request))
    context = {"keys": listing["items"], "next_cursor": listing["next_cursor"], "created": None}
    context.update(extra)
    return render(request, "keys.html", context, status=status)


def key_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    @guarded
    async def keys(request: Request, ctx: Context, principal: Principal) -> Response:
        return await _keys_page(request, ctx, principal)

    @guarded
    async def create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        data = {"name": forms.text(form, "name")}
        if principal.is_admin:
            data["role"] = forms.text(form, "role") or ApiKeyRole.ACCOUNT.value
        try:
            body = validate(KeyCreate, data)
            created = await to_thread.run_sync(create_key, ctx, principal, body)
        except ApiError as exc:
            return await _keys_page(
                request,
                ctx,
                principal,
                status=exc.status,
                errors=field_errors(exc),
                form=forms.values(form),
            )
        return await _keys_page(request, ctx, principal, created=created.model_dump(mode="json"))

    @guarded
    async def revoke(request: Request, ctx: Context, principal: Principal) -> Response:
        key_id = request.path_params["key_id"]
        try:
            await to_thread.run_sync(revoke_key, ctx, principal, key_id)
        except ApiError as exc:
            if exc.status == 404:
                raise
            return await _keys_page(
                request, ctx, principal, status=exc.status, errors={"": exc.message}
            )
        return await _keys_page(request, ctx, principal, notice=f"Key {key_id} was revoked.")

    return [
        Route("/keys", keys, methods=["GET"], name="keys"),
        Route("/keys", create, methods=["POST"], name="key_create"),
        Route("/keys/{key_id}/revoke", revoke, methods=["POST"], name="key_revoke"),
    ]
