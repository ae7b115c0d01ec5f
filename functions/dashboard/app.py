"""The dashboard: server-rendered pages under ``/dashboard``, served by the API's own app.

``DashboardMount`` is how ``functions.api.app`` serves it: a pure ASGI middleware that hands
``/dashboard`` and everything under it to the dashboard app and passes every other request
through untouched. The dashboard app is built on its first request, not at import: the API's
Lambda cold start (docs/performance.md) should not pay for Jinja2 and the templates when the
request is an API call, and an API-only bundle keeps working without them.

The dashboard is its own Starlette app because its rules differ from the API's: errors are HTML
pages, callers are browsers with a session cookie rather than clients with a key, and every
response carries the browser-security headers (``functions.dashboard.security``). What it does to
the table, it does through the REST API's domain functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from functions.context import Context

PREFIX = "/dashboard"
logger = logging.getLogger("agera.dashboard")


def create_dashboard(ctx_provider: Callable[[], Context]) -> Starlette:
    """The dashboard app; its routes carry the full ``/dashboard/...`` path."""
    from functions.api.errors import ApiError
    from functions.dashboard.pages_account import account_routes
    from functions.dashboard.pages_calls import call_routes
    from functions.dashboard.pages_keys import key_routes
    from functions.dashboard.pages_overview import overview_routes
    from functions.dashboard.pages_resources import resource_routes
    from functions.dashboard.pages_routing import extension_routes, number_routes
    from functions.dashboard.render import STATIC_DIR, error_page
    from functions.dashboard.security import (
        DashboardSessions,
        SecurityHeaders,
        SignInLimiter,
        session_secret,
    )
    from functions.dashboard.session import sign_in_endpoints

    settings = ctx_provider().settings
    limiter = SignInLimiter(
        settings.dashboard_sign_in_attempts, settings.dashboard_sign_in_window_seconds
    )
    show_sign_in, submit_sign_in, sign_out = sign_in_endpoints(ctx_provider, limiter)
    pages = [
        Route("/sign-in", show_sign_in, methods=["GET"], name="sign_in"),
        Route("/sign-in", submit_sign_in, methods=["POST"], name="sign_in_submit"),
        Route("/sign-out", sign_out, methods=["POST"], name="sign_out"),
        *overview_routes(ctx_provider),
        *key_routes(ctx_provider),
        *account_routes(ctx_provider),
        *number_routes(ctx_provider),
        *extension_routes(ctx_provider),
        *resource_routes(ctx_provider),
        *call_routes(ctx_provider),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, ApiError(404, "not_found", "There is no such page."))

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_page(request, exc)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_page(request, ApiError(405, "method_not_allowed", "Method not allowed."))

    middleware = [
        Middleware(SecurityHeaders, static_prefix=f"{PREFIX}/static/"),
        Middleware(
            DashboardSessions,
            secret_key=session_secret(settings.dashboard_session_secret),
            max_age=settings.dashboard_session_seconds,
        ),
    ]
    return Starlette(
        routes=[Mount(PREFIX, routes=pages)],
        middleware=middleware,
        exception_handlers={404: not_found, 405: method_not_allowed, ApiError: refused},
    )


def is_dashboard_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class DashboardMount:
    """Serves ``/dashboard/...`` with the dashboard app (built on first use), the rest with ``app``.

    ``/dashboard`` itself redirects to ``/dashboard/`` so relative links resolve one way.
    """

    def __init__(self, app: ASGIApp, ctx_provider: Callable[[], Context]) -> None:
        self.app = app
        self.ctx_provider = ctx_provider
        self._dashboard: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        if scope["path"] == PREFIX:
            await Response(status_code=307, headers={"location": PREFIX + "/"})(
                scope, receive, send
            )
            return
        if self._dashboard is None:
            self._dashboard = create_dashboard(self.ctx_provider)
        await self._dashboard(scope, receive, send)
