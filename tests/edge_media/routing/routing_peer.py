"""A customer's routing webhook on 127.0.0.1 for the routing tests: a real HTTP server.

uvicorn + a tiny Starlette app, in a thread with its own event loop, so a slow answer is slow on
the wire exactly as a customer's would be, whatever the test's loop does. Every request is
checked the two ways a customer may check it: `shared.signing.verify` over the raw body, and the
API guide's Python example (re-serialise the parsed JSON, HMAC it, compare).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from shared.signing import verify

HOST = "127.0.0.1"
START_LIMIT_SECONDS = 5.0
POLL_SECONDS = 0.01
CHUNK_BYTES = 4096


def guide_verify(secret: str, payload: dict[str, Any], signature_header: str | None) -> bool:
    """The API guide's `verify_signature`, as a customer would paste it."""
    if not signature_header or not signature_header.startswith("sha256="):
        return False
    payload_bytes = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    received = signature_header.split("=")[1]
    expected = hmac.new(secret.encode("utf-8"), payload_bytes, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received, expected)


@dataclass
class Reply:
    """What the peer answers next: status, body, a delay before answering, chunked or not."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    chunked: bool = False
    chunk_delay: float = 0.0  # seconds between chunks (a slow drip; implies chunked)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, **kwargs: Any) -> Reply:
        return cls(body=json.dumps(value).encode(), **kwargs)


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    headers: dict[str, str]
    raw_signature_ok: bool
    guide_signature_ok: bool


class WebhookPeer:
    """``with WebhookPeer(secret) as peer``: set ``peer.reply``, read ``peer.received``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.reply = Reply.json({"action": "hangup", "reason": "unscripted"})
        self.received: list[Received] = []
        self._release = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self.port = int(self._sock.getsockname()[1])
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def url(self, path: str = "/route") -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("x-signature")
        try:
            guide_ok = guide_verify(self.secret, json.loads(body), header)
        except ValueError:
            guide_ok = False
        self.received.append(
            Received(
                path=request.url.path,
                body=body,
                headers=dict(request.headers),
                raw_signature_ok=verify(self.secret, body, header),
                guide_signature_ok=guide_ok,
            )
        )
        reply = self.reply
        if reply.delay > 0:  # slow on the wire; the peer's exit cuts it short
            await asyncio.to_thread(self._release.wait, reply.delay)
        if reply.chunked or reply.chunk_delay:
            return StreamingResponse(
                self._chunks(reply.body, reply.chunk_delay),
                status_code=reply.status,
                headers=reply.headers,
            )
        return Response(reply.body, status_code=reply.status, headers=reply.headers)

    async def _chunks(self, body: bytes, delay: float) -> AsyncIterator[bytes]:
        size = 1 if delay else CHUNK_BYTES
        for start in range(0, len(body), size):
            if delay and not self._release.is_set():
                await asyncio.to_thread(self._release.wait, delay)
            yield body[start : start + size]

    def __enter__(self) -> WebhookPeer:
        self._thread.start()
        deadline = time.monotonic() + START_LIMIT_SECONDS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook peer did not start")
            time.sleep(POLL_SECONDS)
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()  # a slow answer ends now instead of holding the shutdown
        self._server.should_exit = True
        self._thread.join(START_LIMIT_SECONDS)
        self._sock.close()


def closed_port() -> int:
    """A loopback TCP port nobody listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def running_peer(secret: str) -> Iterator[WebhookPeer]:
    """Body of a pytest fixture: one peer for the test."""
    with WebhookPeer(secret) as peer:
        yield peer
