"""``GET /api/health``: is this API able to do its job right now?

It checks what a request needs (the table, the queues) with the cheapest calls that prove access,
and reports the edge nodes whose heartbeat is live. 200 when the table and queues answer, 503
otherwise, with each component's status and latency so an operator sees which part failed. Edge
nodes are informational: an API with no live node still serves its other endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from anyio import to_thread
from pydantic import ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from functions.api.operations import Operation
from functions.api.schemas import ResponseBody
from functions.context import Context
from shared.clock import utc_now
from shared.dynamo import mapping

try:
    VERSION = version("agera-voice-gateway")
except PackageNotFoundError:  # running from a Lambda zip without metadata
    VERSION = "unknown"


class ComponentHealth(ResponseBody):
    model_config = ConfigDict(extra="allow", defer_build=True)

    status: str = Field(description="'ok' or 'error'.")
    latency_ms: float | None = None
    error: str | None = Field(None, description="What failed, when status is 'error'.")


class HealthOut(ResponseBody):
    status: str = Field(description="'ok', or 'degraded' (with HTTP 503).")
    version: str
    components: dict[str, ComponentHealth] = Field(
        description="dynamodb, sqs and edge_nodes (with 'live': the nodes with a heartbeat)."
    )


OPERATIONS = (
    Operation(
        "GET",
        "/api/health",
        "Whether the API can do its job (503 names the failing component)",
        "health",
        response=HealthOut,
        auth=False,
    ),
)


def _timed(check: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # any failure is the answer, not an error of the endpoint
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    result: dict[str, Any] = {
        "status": "ok",
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if isinstance(detail, dict):
        result.update(detail)
    return result


def check_components(ctx: Context) -> dict[str, dict[str, Any]]:
    settings = ctx.settings

    def table() -> None:
        ctx.dynamodb.describe_table(TableName=settings.table_name)

    def queues() -> None:
        for url in (
            settings.originate_queue_url,
            settings.events_queue_url,
            settings.callbacks_queue_url,
        ):
            if not url:
                raise RuntimeError("a queue URL setting is empty")
            ctx.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])

    def nodes() -> dict[str, Any]:
        now = int(utc_now().timestamp())
        response = ctx.dynamodb.query(
            TableName=settings.table_name,
            IndexName=mapping.GSI_NAME,
            KeyConditionExpression="gsi1pk = :p",
            FilterExpression=f"{mapping.TTL_ATTRIBUTE} > :now",
            ExpressionAttributeValues={":p": {"S": "NODES"}, ":now": {"N": str(now)}},
        )
        return {"live": len(response.get("Items", []))}

    return {"dynamodb": _timed(table), "sqs": _timed(queues), "edge_nodes": _timed(nodes)}


def health_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    async def health(request: Request) -> JSONResponse:
        components = await to_thread.run_sync(check_components, ctx_provider())
        healthy = all(components[name]["status"] == "ok" for name in ("dynamodb", "sqs"))
        body = {
            "status": "ok" if healthy else "degraded",
            "version": VERSION,
            "components": components,
        }
        return JSONResponse(body, 200 if healthy else 503)

    return [Route("/api/health", health, methods=["GET"])]
