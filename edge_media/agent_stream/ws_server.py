"""The node's HTTP/WebSocket listener (``AGERA_WS_HOST:AGERA_WS_PORT``): ``GET /health`` for load
balancers and the agent-stream upgrades providers open.

Why websockets' sans-I/O `ServerProtocol` under a plain `asyncio.Protocol` (as the bot client,
`drivers/ws_client.py`): the stream is a caller leg, so its audio goes out from the pacer tick
and comes in on the read path, where nothing may await. `StreamConnection` is the client's
`WsConnection` with the server's handshake: same send-and-drop rules, close deadlines and
message assembly, one code path for both directions of the bridge.

What the listener decides before any upgrade, on the request line alone: ``/health`` is
answered (200 with the node's state, 503 while draining or full so the load balancer stops
sending), a path that is no agent-stream route is 404, and while draining or full an upgrade is
refused with 503 and ``Retry-After`` (live streams keep running). Everything after the upgrade is the
stream handler's, which ends a stream with a close code. A request line must arrive within
`REQUEST_SECONDS`, and no request path or header is ever logged: the path holds the agent's
UUID, which authorises a stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from websockets.datastructures import Headers
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from edge_media.agent_stream.stream_path import StreamRoute, parse_stream_path
from edge_media.drivers.inbound_budget import DEFAULT_LIMITS, BotLimits, json_audio_wire_rate
from edge_media.drivers.ws_client import WRITE_BUFFER_LIMIT, WsConnection

if TYPE_CHECKING:  # the node passes its capacity check in; this module needs only the shape
    from edge_media.node_capacity import Full

__all__ = ["StreamConnection", "StreamListener"]

logger = logging.getLogger("agera.agent_stream")
# websockets logs request lines at DEBUG and the path is a capability (as for the bot client
# in drivers/ws_client.py): its logger never goes below INFO.
_WIRE_LOGGER = logging.getLogger("agera.agent_stream.wire")
_WIRE_LOGGER.setLevel(logging.INFO)

REQUEST_SECONDS = 10.0  # the HTTP request (upgrade or health) must be complete within this
DRAIN_RETRY_AFTER = "30"
PENDING_LIMIT = 64  # messages held while the handshake reads (a provider sends two)
# A second of caller audio as a provider sends it: Twilio's media messages carry track, chunk,
# timestamp and sequenceNumber besides the payload, about twice a bot's envelope.
PROVIDER_REALTIME_WIRE_BYTES = json_audio_wire_rate(8000) + 50 * 200

StreamHandler = Callable[["StreamConnection", StreamRoute], Awaitable[None]]
Health = Callable[[], tuple[int, dict[str, Any]]]


class ConnectionGone(Exception):
    """The provider's connection ended while the handshake waited for a message."""


def _response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status, reason, headers, body)


def _text_response(status: int, reason: str, text: str) -> Response:
    return _response(status, reason, text.encode(), "text/plain; charset=utf-8")


class StreamConnection(WsConnection):
    """One provider connection, server side. Until the handler calls `route_to`, messages wait
    (bounded) for `receive_text`; afterwards they go straight to the handler's callback."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: StreamListener,
        *,
        write_buffer_limit: int = WRITE_BUFFER_LIMIT,
    ) -> None:
        limits = listener.limits
        self._server_core = ServerProtocol(max_size=limits.max_message_bytes, logger=_WIRE_LOGGER)
        super().__init__(
            loop,
            self._server_core,  # type: ignore[arg-type]  # same Protocol base, other side
            url="",
            on_text=self._hold_text,
            on_bytes=self._hold_bytes,
            on_open=None,
            extra_headers=None,
            write_buffer_limit=write_buffer_limit,
            ping_interval=None,  # the provider keeps its own connection alive
            # A provider sends caller audio in real time; the bots' budget (4x, with a burst)
            # keeps a flooding provider from taking the loop that paces every call.
            budget=limits.budget(PROVIDER_REALTIME_WIRE_BYTES),
            log_name="provider stream",
        )
        self._handshake.cancel()  # the client side's handshake; nobody waits for it here
        self._listener = listener
        self._pending: collections.deque[str | bytes] = collections.deque()
        self._arrived = asyncio.Event()
        self._request_timer: asyncio.TimerHandle | None = None
        self.peer = ""
        self.request: Request | None = None
        self.binary_ignored = 0

    @property
    def url(self) -> str:  # display_url of the client side: here, who connected (no path)
        return f"provider stream from {self.peer}"

    # -- the handshake's reads -------------------------------------------------------------

    def _hold_text(self, text: str) -> None:
        self._hold(text)

    def _hold_bytes(self, data: bytes) -> None:
        self._hold(data)

    def _hold(self, message: str | bytes) -> None:
        if len(self._pending) < PENDING_LIMIT:
            self._pending.append(message)
        self._arrived.set()

    async def receive_text(self, seconds: float) -> str | bytes:
        """The next message held for the handshake; TimeoutError, or ConnectionGone."""
        async with asyncio.timeout(seconds):
            while not self._pending:
                if self._closed.done():
                    raise ConnectionGone
                self._arrived.clear()
                closed = asyncio.ensure_future(asyncio.shield(self._closed))
                arrived = asyncio.ensure_future(self._arrived.wait())
                try:
                    await asyncio.wait({closed, arrived}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                    arrived.cancel()
        return self._pending.popleft()

    def route_to(self, on_text: Callable[[str], None]) -> None:
        """From now on messages go to ``on_text`` (binary ones are counted and dropped);
        those that arrived during the handshake go first, in order."""
        self._on_text = on_text
        self._on_bytes = self._ignore_bytes
        while self._pending:
            message = self._pending.popleft()
            if isinstance(message, str):
                on_text(message)
            else:
                self._ignore_bytes(message)

    def _ignore_bytes(self, data: bytes) -> None:
        self.binary_ignored += 1

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
            self.peer = f"{host}:{peer[1]}"
        self._request_timer = self._loop.call_later(REQUEST_SECONDS, self._request_timeout)
        self._listener.connections.add(self)

    def data_received(self, data: bytes) -> None:
        # Not through the inbound gate's slicing, as before: the budget is still charged for
        # every message (`_deliver`).
        self._receive(data)

    def _core_event(self, event: object) -> None:
        if isinstance(event, Request):
            self._on_request(event)
        elif isinstance(event, Frame):
            self._frame(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
        self._listener.connections.discard(self)
        super().connection_lost(exc)
        self._arrived.set()

    # -- internals -------------------------------------------------------------------------

    def _request_timeout(self) -> None:
        self._request_timer = None
        if self.request is None:
            self.abort()

    def _on_request(self, request: Request) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        self.request = request
        response, route = self._listener.answer(self, request)
        self._server_core.send_response(response)
        self._flush()
        if response.status_code == 101 and route is not None:
            self._listener.spawn(self, route)


class StreamListener:
    """``await start()``; `close` stops listening and waits (bounded) for the handlers."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        handle: StreamHandler | None,
        health: Health,
        accepting: Callable[[], bool],
        room: Callable[[], Full | None] = lambda: None,
        reuse_port: bool = False,
        limits: BotLimits = DEFAULT_LIMITS,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits  # message size and inbound budget, as for bots (AGERA_BOT_*)
        self._reuse_port = reuse_port  # media workers share the port, as they share SIP's
        self._handle = handle
        self._health = health
        self._accepting = accepting
        self._room = room  # the node's capacity (edge_media/node_capacity.py)
        self._server: asyncio.Server | None = None
        self.connections: set[StreamConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def local_addr(self) -> tuple[str, int]:
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: StreamConnection(loop, self),
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )

    def answer(
        self, conn: StreamConnection, request: Request
    ) -> tuple[Response, StreamRoute | None]:
        """The response to a request: health, 404, 503 while draining or full, or the upgrade."""
        path = request.path.split("?", 1)[0]
        if path == "/health":
            status, body = self._health()
            reason = "OK" if status == 200 else "Service Unavailable"
            encoded = json.dumps(body, separators=(",", ":")).encode()
            return _response(status, reason, encoded, "application/json"), None
        route = parse_stream_path(request.path)
        if route is None or self._handle is None:
            return _text_response(404, "Not Found", "no such endpoint\n"), None
        if not self._accepting():
            response = _text_response(503, "Service Unavailable", "node is draining\n")
            response.headers["Retry-After"] = DRAIN_RETRY_AFTER
            return response, None
        full = self._room()
        if full is not None:
            logger.info("agent stream from %s refused: %s", conn.peer, full.reason)
            response = _text_response(503, "Service Unavailable", "node is full\n")
            response.headers["Retry-After"] = str(full.retry_after)
            return response, None
        return conn._server_core.accept(request), route

    def spawn(self, conn: StreamConnection, route: StreamRoute) -> None:
        assert self._handle is not None
        task = asyncio.ensure_future(self._run(conn, route))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, conn: StreamConnection, route: StreamRoute) -> None:
        assert self._handle is not None
        try:
            await self._handle(conn, route)
        except Exception:
            logger.exception("agent stream from %s failed", conn.peer)
            await conn.close(1011, "Internal server error")
        finally:
            if conn.is_open:
                await conn.close(1000, "")

    async def stop_listening(self) -> None:
        """No new connections (live ones go on): the first step of a drain's end."""
        if self._server is not None:
            self._server.close()

    async def close(self, seconds: float = 5.0) -> None:
        await self.stop_listening()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=seconds)
            for task in pending:
                task.cancel()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
