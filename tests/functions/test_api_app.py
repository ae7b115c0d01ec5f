"""The API app through both front doors: Mangum with the sample API Gateway events, and real HTTP.

Endpoints that later issues add get their own tests; here: health, the error shape, unknown routes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from mangum import Mangum

from functions.api.app import create_app
from functions.context import Context
from infra.sqs_poller import LocalLambdaContext
from shared.settings import Settings

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def mangum_loop():
    """Mangum runs the app on asyncio's current loop and never closes it (fine on Lambda)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def test_health_through_mangum_with_the_sample_event(aws, mangum_loop) -> None:
    ctx = Context(Settings.load())
    handler = Mangum(create_app(lambda: ctx), lifespan="off")
    response = handler(load_event("api/health.json"), LocalLambdaContext("ApiFunction"))
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["status"] == "ok"
    assert set(body["components"]) == {"dynamodb", "sqs", "edge_nodes"}


def test_health_is_503_naming_the_broken_component(aws, mangum_loop) -> None:
    ctx = Context(Settings.load(table_name="no-such-table"))
    handler = Mangum(create_app(lambda: ctx), lifespan="off")
    response = handler(load_event("api/health.json"), LocalLambdaContext("ApiFunction"))
    assert response["statusCode"] == 503
    body = json.loads(response["body"])
    assert body["status"] == "degraded"
    assert body["components"]["dynamodb"]["status"] == "error"
    assert "ResourceNotFound" in body["components"]["dynamodb"]["error"]
    assert body["components"]["sqs"]["status"] == "ok"


def test_lambda_handler_module_builds_an_app(mangum_loop) -> None:
    from functions.api import handler

    assert isinstance(handler.handler, Mangum)


@pytest.mark.anyio
async def test_unknown_route_and_method_use_the_error_shape(aws) -> None:
    ctx = Context(Settings.load())
    transport = httpx.ASGITransport(app=create_app(lambda: ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        missing = await client.get("/api/nope")
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "not_found", "message": "Not Found"}}
        wrong = await client.post("/api/health")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
