"""Account settings and the webhook secret.

Settings are saved with ``functions.api.account.update_account``, the PATCH of ``/api/account``:
the same URL checks (SSRF guard), the same merge of the ElevenLabs and Vapi sub-settings. Provider
API keys are write-only: the page shows ``account_view``'s masked form (last four characters) and
an empty input; an empty input leaves the stored key alone, "Remove" clears it, and the key a user
types is never put back into a page, not even when another field of the same form is refused.

The webhook secret is the one secret a user must read (to verify ``X-Signature``). The page shows
it masked; "Reveal" fetches it with a POST (CSRF-checked, ``no-store``) into the page, never into a
URL or the browser history. Rotation is ``rotate_webhook_secret``, behind a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from functions.api.account import (
    AccountUpdate,
    account_view,
    load_account,
    rotate_webhook_secret,
    update_account,
)
from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.masking import mask
from functions.context import Context
from functions.dashboard import forms
from functions.dashboard.render import field_errors, render
from functions.dashboard.session import page
from shared.models import Account

SECRET_FIELDS = ("elevenlabs.api_key", "vapi.api_key")
PLAIN_FIELDS = ("webhook_url", "socket_url", "elevenlabs.agent_id", "vapi.assistant_id")


def account_update(form: Any) -> dict[str, Any]:
    """The PATCH body for a submitted settings form.

    Plain fields are always sent (empty clears them); a provider key is sent only when typed, and
    as null when its "Remove" box is ticked.
    """
    body: dict[str, Any] = {
        "webhook_url": forms.optional(form, "webhook_url"),
        "socket_url": forms.optional(form, "socket_url"),
    }
    for provider, id_field in (("elevenlabs", "agent_id"), ("vapi", "assistant_id")):
        nested: dict[str, Any] = {id_field: forms.optional(form, f"{provider}.{id_field}")}
        if forms.checked(form, f"{provider}.api_key_clear"):
            nested["api_key"] = None
        elif key := forms.text(form, f"{provider}.api_key"):
            nested["api_key"] = key
        body[provider] = nested
    return body


def _settings_context(account: Account) -> dict[str, Any]:
    view = account_view(account)
    form = {
        "webhook_url": view.get("webhook_url") or "",
        "socket_url": view.get("socket_url") or "",
        "elevenlabs.agent_id": view["elevenlabs"].get("agent_id") or "",
        "vapi.assistant_id": view["vapi"].get("assistant_id") or "",
    }
    return {"account": view, "form": form}


def account_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    @guarded
    async def settings(request: Request, ctx: Context, principal: Principal) -> Response:
        account = await to_thread.run_sync(load_account, ctx, principal)
        return render(request, "account.html", _settings_context(account))

    @guarded
    async def save(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            body = validate(AccountUpdate, account_update(form))
            account = await to_thread.run_sync(update_account, ctx, principal, body)
        except ApiError as exc:
            account = await to_thread.run_sync(load_account, ctx, principal)
            context = _settings_context(account)
            # What was typed comes back, except provider keys (write-only, never rendered).
            context["form"].update({name: forms.text(form, name) for name in PLAIN_FIELDS})
            context["errors"] = field_errors(exc)
            return render(request, "account.html", context, status=exc.status)
        context = {**_settings_context(account), "notice": "Settings saved."}
        return render(request, "account.html", context)

    @guarded
    async def secret(request: Request, ctx: Context, principal: Principal) -> Response:
        account = await to_thread.run_sync(load_account, ctx, principal)
        return render(request, "webhook_secret.html", {"masked": mask(account.webhook_secret)})

    @guarded
    async def reveal(request: Request, ctx: Context, principal: Principal) -> Response:
        account = await to_thread.run_sync(load_account, ctx, principal)
        return render(request, "_secret_revealed.html", {"secret": account.webhook_secret})

    @guarded
    async def rotate(request: Request, ctx: Context, principal: Principal) -> Response:
        account = await to_thread.run_sync(rotate_webhook_secret, ctx, principal)
        context = {
            "masked": mask(account.webhook_secret),
            "notice": "The webhook secret was replaced: the next webhook is signed with the new "
            "one. Update your receiver now.",
        }
        return render(request, "webhook_secret.html", context)

    return [
        Route("/account", settings, methods=["GET"], name="account"),
        Route("/account", save, methods=["POST"], name="account_save"),
        Route("/webhook-secret", secret, methods=["GET"], name="webhook_secret"),
        Route("/webhook-secret/reveal", reveal, methods=["POST"], name="webhook_secret_reveal"),
        Route("/webhook-secret/rotate", rotate, methods=["POST"], name="webhook_secret_rotate"),
    ]
