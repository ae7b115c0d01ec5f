"""Request body size limit: anything over ``max_body_bytes`` (64 KiB) is a 413, before parsing.

Why a middleware: every write handler is covered without remembering to be, and it runs the same
under uvicorn (the body arrives in chunks) and Mangum (one chunk from the API Gateway event).
``Content-Length`` lets an honest oversized request fail without reading it, but the limit is
enforced on the bytes actually received, since a chunked request has no length and a lying client
sends more than it declared. The body is buffered (at most the limit) and replayed to the app.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.api.errors import error_body


def _too_large(limit: int) -> tuple[Message, Message]:
    body = json.dumps(
        error_body("payload_too_large", f"the request body is larger than {limit} bytes")
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class BodyLimitMiddleware:
    """Pure ASGI middleware; ``max_bytes`` is read per request (settings may differ per context)."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away: let the app see it
                await self.app(scope, _replay(b"", receive, first=message), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        start, body = _too_large(limit)
        await send(start)
        await send(body)


def _replay(body: bytes, receive: Receive, first: Message | None = None) -> Receive:
    """A receive callable that returns the buffered body once, then defers to the server."""
    pending: list[Message] = [
        first if first is not None else {"type": "http.request", "body": body, "more_body": False}
    ]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
