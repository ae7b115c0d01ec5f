"""Opening a bot WebSocket: the address check, TLS, one deadline for connect and handshake, and
a one-line reason for every way it fails (`BotUnavailable`).

Why apart from ws_client.py: that module is the open connection (framing, budget, closing);
this one is how a connection comes to be, which only the drivers call.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable, Mapping

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from edge_media.drivers.base import BotUnavailable, ConnectStep
from edge_media.drivers.inbound_budget import InboundBudget
from edge_media.drivers.pinned_connect import open_connection
from edge_media.drivers.ws_client import (
    MAX_MESSAGE_BYTES,
    PING_INTERVAL,
    WIRE_LOGGER,
    WRITE_BUFFER_LIMIT,
    OnBytes,
    OnText,
    WsConnection,
    display_url,
)
from shared.ssrf import AddressPolicy

__all__ = ["connect_step", "connect_websocket"]


def _why(exc: OSError) -> str:
    """One line on a failed connect, the same on asyncio and uvloop (asyncio words a refusal
    "Connect call failed (addr)", uvloop "Connection refused")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS certificate verify failed: {exc.verify_message}"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS error: {exc.reason or exc}"
    elif exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        text = os.strerror(exc.errno)
    else:
        text = exc.strerror or str(exc)
    return " ".join(text.split())


def connect_step(exc: BaseException) -> ConnectStep:
    """Which connect step an OS-level failure belongs to (for logs and the call record)."""
    if isinstance(exc, socket.gaierror):
        return ConnectStep.DNS
    if isinstance(exc, ssl.SSLError):
        return ConnectStep.TLS
    return ConnectStep.CONNECT


async def connect_websocket(
    url: str,
    *,
    seconds: float,
    on_text: OnText,
    on_bytes: OnBytes,
    on_open: Callable[[WsConnection], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    extra_headers: Mapping[str, str] | None = None,
    write_buffer_limit: int = WRITE_BUFFER_LIMIT,
    ping_interval: float | None = PING_INTERVAL,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    budget: InboundBudget | None = None,
    log_name: str | None = None,
    policy: AddressPolicy | None = None,
) -> WsConnection:
    """Open a WebSocket to ``url`` (ws:// or wss://) within ``seconds``; with a ``policy``,
    only at an address it checked (SSRF, DNS rebinding: `drivers.pinned_connect`).

    ``on_open`` runs once, right when the handshake completes and before any message is
    delivered, so a caller can send its greeting ahead of handling the peer's first message.
    Messages then reach ``on_text`` / ``on_bytes`` as they arrive, whole (fragments joined),
    unless ``budget`` drops them. A message over ``max_message_bytes`` fails the connection
    with 1009. ``log_name`` names the peer in the layer's warnings (default: its `display_url`;
    a driver whose URL is a capability, Vapi's, passes its own).

    Raises `BotUnavailable` with a one-line reason naming the URL (no query) when the
    connection is refused, fails, times out or the server rejects the upgrade.
    """
    shown = display_url(url)
    try:
        uri = parse_uri(url)
    except (InvalidURI, ValueError):
        raise BotUnavailable(f"not a WebSocket URL: {shown}", step=ConnectStep.TARGET) from None
    loop = asyncio.get_running_loop()
    connection = WsConnection(
        loop,
        ClientProtocol(uri, max_size=max_message_bytes, logger=WIRE_LOGGER),
        url=url,
        on_text=on_text,
        on_bytes=on_bytes,
        on_open=on_open,
        extra_headers=extra_headers,
        write_buffer_limit=write_buffer_limit,
        ping_interval=ping_interval,
        budget=budget,
        log_name=log_name,
    )
    tls = (ssl_context or ssl.create_default_context()) if uri.secure else None
    try:
        async with asyncio.timeout(seconds):
            await open_connection(
                loop, lambda: connection, uri.host, uri.port, tls=tls, policy=policy, shown=shown
            )
            await connection.handshake_complete()
    except TimeoutError:
        connection.abort()
        raise BotUnavailable(
            f"bot at {shown} did not answer within {seconds:g} s", step=ConnectStep.TIMEOUT
        ) from None
    except BotUnavailable:
        connection.abort()
        raise
    except OSError as exc:  # refused, unreachable, DNS, TLS verification
        connection.abort()
        raise BotUnavailable(
            f"cannot connect to bot at {shown}: {_why(exc)}", step=connect_step(exc)
        ) from None
    except BaseException:  # cancelled: leave nothing open behind
        connection.abort()
        raise
    finally:
        connection.forget_handshake()
    return connection
