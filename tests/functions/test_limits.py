"""Bodies over 64 KiB are a 413 in the error shape, whatever Content-Length claims."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from functions.api.limits import BodyLimitMiddleware

LIMIT = 65536


def padded(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    skeleton = json.dumps({"number": "+15550000000", "route": {"socket_url": "vapi"}, "pad": ""})
    body = skeleton[:-2] + "x" * (size - len(skeleton)) + '"}'
    assert len(body) == size
    return body.encode()


def test_body_over_the_limit_is_413_in_the_error_shape(front, tenant) -> None:
    reply = front.request("POST", "/api/numbers", key=tenant.key, raw=padded(LIMIT + 1))
    assert reply.status == 413
    assert reply.error == {
        "code": "payload_too_large",
        "message": f"the request body is larger than {LIMIT} bytes",
    }


def test_body_at_the_limit_reaches_validation(front, tenant) -> None:
    reply = front.request("POST", "/api/numbers", key=tenant.key, raw=padded(LIMIT))
    assert reply.status == 422
    assert reply.error["field"] == "pad"  # the unknown field, i.e. the body was read


def test_limit_applies_before_authentication(front) -> None:
    reply = front.request("PATCH", "/api/account", raw=padded(LIMIT + 1))
    assert reply.status == 413


def test_chunked_body_without_length_is_counted(uvicorn_server, api_ctx, tenant) -> None:
    """uvicorn receives it in chunks with no Content-Length: the bytes decide."""
    uvicorn_server.ctx = api_ctx
    chunk = b" " * 8192

    def stream() -> Any:
        yield b'{"name": "'
        for _ in range(LIMIT // len(chunk) + 1):
            yield chunk
        yield b'"}'

    with httpx.Client(base_url=uvicorn_server.base_url, timeout=10) as client:
        reply = client.post(
            "/api/keys",
            content=stream(),
            headers={"X-API-KEY": tenant.key, "Content-Type": "application/json"},
        )
    assert "content-length" not in reply.request.headers
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"


def test_a_lying_content_length_does_not_help(make_event, invoke_event, tenant) -> None:
    event = make_event("keys_create.json", tenant.key)
    event["body"] = json.dumps({"name": "x" * (LIMIT + 10)})
    event["headers"]["content-length"] = "20"
    reply = invoke_event(event)
    assert reply.status == 413


def test_a_declared_oversize_is_refused_before_reading(make_event, invoke_event, tenant) -> None:
    event = make_event("keys_create.json", tenant.key)
    event["headers"]["content-length"] = str(10 * LIMIT)
    reply = invoke_event(event)
    assert reply.status == 413


class Recorder:
    """A tiny ASGI app recording what reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def drive(app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> list[Any]:
    inbox = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_middleware_joins_chunks_for_the_app_and_stops_at_the_limit() -> None:
    inner = Recorder()
    app = BodyLimitMiddleware(inner, max_bytes=lambda: 10)
    sent = await drive(app, [b"12345", b"67890"], [])
    assert inner.bodies == [b"1234567890"]
    assert sent[0]["status"] == 204
    sent = await drive(app, [b"12345", b"6789", b"01"], [])
    assert inner.bodies == [b"1234567890"]  # the app never saw the oversized request
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"
    sent = await drive(app, [b""], [(b"content-length", b"11")])
    assert sent[0]["status"] == 413


@pytest.mark.anyio
async def test_middleware_passes_other_scopes_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await BodyLimitMiddleware(inner, max_bytes=lambda: 1)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]
