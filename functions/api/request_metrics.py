"""Per-request metrics (ApiRequests, ApiErrors) and one structured log line per request.

Dimensions are kept low-cardinality on purpose: CloudWatch bills and indexes each distinct
dimension combination, so the route is its template (``GET /api/numbers/{number}``, never the
number itself), an unmatched path is ``unmatched``, and the status is its class (``4xx``). The
account is not a dimension; it goes in the log line, where Logs Insights can group by it.

Each request gets its own ``EphemeralMetrics`` flushed when the response is done: the shared
``Metrics`` object keeps one metric set for the process, which concurrent requests under uvicorn
would mix up, and a Lambda invocation serves exactly one request anyway.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions import observability

UNMATCHED_ROUTE = "unmatched"


def route_label(scope: Scope) -> str:
    """``METHOD /path/{template}`` of the route that handled the request."""
    route = scope.get("route")
    path = getattr(route, "path", None) or UNMATCHED_ROUTE
    return f"{scope.get('method', '')} {path}"


def account_of(scope: Scope) -> str | None:
    principal = scope.get("state", {}).get("principal")
    return getattr(principal, "account_id", None)


def record_request(route: str, status: int) -> None:
    """Emit ApiRequests (and ApiErrors for 4xx/5xx) as one EMF line."""
    metrics = EphemeralMetrics(
        namespace=observability.metrics.namespace, service=observability.metrics.service
    )
    metrics.add_dimension("route", route)
    metrics.add_dimension("status_class", f"{status // 100}xx")
    metrics.add_metric("ApiRequests", MetricUnit.Count, 1)
    if status >= 400:
        metrics.add_metric("ApiErrors", MetricUnit.Count, 1)
    metrics.flush_metrics()


class RequestMetricsMiddleware:
    """Pure ASGI middleware recording every HTTP request, including 413s and unhandled errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = route_label(scope)
            record_request(route, status)
            fields: dict[str, Any] = {
                "route": route,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
            account_id = account_of(scope)
            if account_id:
                fields["account_id"] = account_id
            observability.logger.info("api request", extra=fields)
