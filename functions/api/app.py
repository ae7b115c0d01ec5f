"""The Starlette application behind API Gateway (Mangum) and uvicorn (local stack).

``create_app`` assembles routes from the resource modules; each module exports a function that
returns its routes given a context provider, so tests can build an app on their own context.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette

from functions.api.account import account_routes
from functions.api.errors import EXCEPTION_HANDLERS
from functions.api.health import health_routes
from functions.context import Context, default_context


def create_app(ctx_provider: Callable[[], Context] = default_context) -> Starlette:
    routes = [*health_routes(ctx_provider), *account_routes(ctx_provider)]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
