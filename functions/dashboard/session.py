"""Signing in with an API key, who is signed in, and the guard every page goes through.

The session cookie holds the SHA-256 of the key (never the key), the CSRF token and an absolute
expiry. Each request resolves that hash to the key's record through the same cache the REST API
uses (``ctx.key_cache``): revoking a key ends its dashboard sessions within
``api_key_cache_seconds``, like its API use, and the principal (account, role) comes from the
record, never from the cookie. Sign-in itself is ``functions.api.auth.resolve_key``, the REST
API's own check, so a key the API refuses cannot sign in.

``page`` wraps every page endpoint: no session sends a browser to the sign-in page (htmx gets an
``HX-Redirect`` so a polling fragment does not swap a sign-in form into a table), an account key
on an admin page gets 403, and a POST without this session's CSRF token gets 403 before the
endpoint reads anything.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from functions import observability
from functions.api.auth import Principal, principal_for_hash, resolve_key
from functions.api.errors import ApiError
from functions.context import Context
from functions.dashboard import forms
from functions.dashboard.render import error_page, render
from functions.dashboard.security import SignInLimiter, csrf_ok
from shared.apikeys import hash_api_key

logger = logging.getLogger("agera.dashboard")

SAFE_METHODS = frozenset({"GET", "HEAD"})
PageEndpoint = Callable[[Request, Context, Principal], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def current_principal(request: Request, ctx: Context) -> Principal | None:
    key_hash = request.session.get("kh")
    expires = request.session.get("exp")
    if not isinstance(key_hash, str) or not isinstance(expires, int | float):
        return None
    if expires <= time.time():
        request.session.clear()
        return None
    principal = await to_thread.run_sync(principal_for_hash, ctx, key_hash)
    if principal is None:
        request.session.clear()
    return principal


def _to_sign_in(request: Request) -> Response:
    target = request.app.url_path_for("sign_in")
    if request.method in SAFE_METHODS:
        target += "?next=" + quote(request.url.path, safe="/")
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def forbidden(request: Request, message: str) -> Response:
    return error_page(request, ApiError(403, "forbidden", message))


def page(
    ctx_provider: Callable[[], Context], *, admin: bool = False
) -> Callable[[PageEndpoint], Endpoint]:
    """Decorator: the endpoint runs only for a signed-in principal (an admin one if ``admin``)."""

    def decorate(endpoint: PageEndpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            ctx = ctx_provider()
            principal = await current_principal(request, ctx)
            if principal is None:
                return _to_sign_in(request)
            request.scope["dashboard.principal"] = principal
            request.state.principal = principal  # for the request log line
            observability.logger.thread_safe_append_keys(account_id=principal.account_id)
            if request.method not in SAFE_METHODS and not await csrf_ok(request):
                return forbidden(request, "the form was stale or came from another site: reload")
            if admin and not principal.is_admin:
                return forbidden(request, "this page needs an API key with the admin role")
            try:
                return await endpoint(request, ctx, principal)
            except ApiError as exc:
                return error_page(request, exc)

        return guarded

    return decorate


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(value: str | None, default: str) -> str:
    """Only paths inside the dashboard: ``?next=`` must not make the sign-in an open redirect."""
    if value and value.startswith("/dashboard") and not value.startswith("//"):
        return value
    return default


def sign_in_endpoints(
    ctx_provider: Callable[[], Context], limiter: SignInLimiter
) -> tuple[Endpoint, Endpoint, Endpoint]:
    """GET and POST of the sign-in page, and the sign-out POST."""

    async def show(request: Request) -> Response:
        principal = await current_principal(request, ctx_provider())
        overview = request.app.url_path_for("overview")
        if principal is not None:
            return RedirectResponse(overview, status_code=303)
        nxt = _safe_next(request.query_params.get("next"), overview)
        return render(request, "sign_in.html", {"next": nxt})

    async def submit(request: Request) -> Response:
        ctx = ctx_provider()
        client = _client(request)
        overview = request.app.url_path_for("overview")
        form = await forms.read(request)
        nxt = _safe_next(str(form.get("next") or ""), overview)
        wait = limiter.retry_after(client)
        if wait is not None:
            logger.warning("dashboard sign-in refused: too many failures from %s", client)
            return render(
                request,
                "sign_in.html",
                {"next": nxt, "errors": {"": f"Too many failed sign-ins; try in {wait} s."}},
                status=429,
                headers={"Retry-After": str(wait)},
            )
        if not await csrf_ok(request):
            return render(
                request,
                "sign_in.html",
                {"next": nxt, "errors": {"": "The form was stale; try again."}},
                status=403,
            )
        key = str(form.get("api_key") or "").strip()
        principal = await to_thread.run_sync(resolve_key, ctx, key) if key else None
        if principal is None:
            limiter.failed(client)
            return render(
                request,
                "sign_in.html",
                {"next": nxt, "errors": {"api_key": "This key is unknown or revoked."}},
                status=401,
            )
        limiter.succeeded(client)
        # A fresh session (and CSRF token) at sign-in: a token planted before cannot carry over.
        request.session.clear()
        request.session.update(
            kh=hash_api_key(key),
            exp=int(time.time()) + ctx.settings.dashboard_session_seconds,
        )
        logger.info("dashboard sign-in", extra={"account_id": principal.account_id})
        return RedirectResponse(nxt, status_code=303)

    async def sign_out(request: Request) -> Response:
        if not await csrf_ok(request):
            return forbidden(request, "the form was stale or came from another site: reload")
        request.session.clear()
        return RedirectResponse(request.app.url_path_for("sign_in"), status_code=303)

    return show, submit, sign_out
