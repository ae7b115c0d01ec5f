"""The Starlette application behind API Gateway (Mangum) and uvicorn (local stack).

``create_app`` assembles routes from the resource modules; each module exports a function that
returns its routes given a context provider, so tests can build an app on their own context.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware

from functions.api.account import account_routes
from functions.api.accounts import accounts_routes
from functions.api.agents import agent_routes
from functions.api.calls import calls_routes
from functions.api.errors import EXCEPTION_HANDLERS
from functions.api.extensions import extension_routes
from functions.api.health import health_routes
from functions.api.keys import key_routes
from functions.api.limits import BodyLimitMiddleware
from functions.api.numbers import number_routes
from functions.api.openapi import openapi_routes
from functions.api.request_metrics import RequestMetricsMiddleware
from functions.api.telephony_configs import telephony_config_routes
from functions.api.trunks import trunk_routes
from functions.context import Context, default_context
from functions.dashboard.app import DashboardMount


def create_app(ctx_provider: Callable[[], Context] = default_context) -> Starlette:
    routes = [
        *health_routes(ctx_provider),
        *account_routes(ctx_provider),
        *calls_routes(ctx_provider),
        *accounts_routes(ctx_provider),
        *key_routes(ctx_provider),
        *number_routes(ctx_provider),
        *extension_routes(ctx_provider),
        *trunk_routes(ctx_provider),
        *agent_routes(ctx_provider),
        *telephony_config_routes(ctx_provider),
        *openapi_routes(ctx_provider),
    ]
    # Outermost first: metrics see every response, including the body limit's 413.
    middleware = [
        Middleware(RequestMetricsMiddleware),
        Middleware(BodyLimitMiddleware, max_bytes=lambda: ctx_provider().settings.max_body_bytes),
        Middleware(DashboardMount, ctx_provider=ctx_provider),  # /dashboard (docs/dashboard.md)
    ]
    return Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
