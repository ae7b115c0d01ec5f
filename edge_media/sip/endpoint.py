"""The SIP endpoint: `SipTransport` (sockets) wired to the sans-I/O `TransactionLayer`.

Why a separate layer: the transaction layer never reads a clock or a socket
(docs/architecture.md, "Sans-I/O cores"), and the user agent above it should not know about
datagrams either. This module is the only place where the three meet: every parsed message
goes into the layer with ``loop.time()``, then one `_pump` drains what the layer produced (bytes
to send, events for the TU) and re-arms the layer's single timer. Nothing here decides what a
call does.

Client transactions get an asyncio face (`ClientTransaction`), because the UA's call flows are
much clearer as ``response = await txn.final()`` than as callbacks; server transactions stay
ids, answered with `send_response`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import Protocol

from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.tcp_connections import SipTransportError
from edge_media.sip.transaction import (
    Event,
    Outgoing,
    ResponseReceived,
    TimerConfig,
    TransactionId,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
)
from edge_media.sip.transport import SipAddress, SipTransport, SipTransportConfig, TransportKind

__all__ = [
    "ClientTransaction",
    "SipEndpoint",
    "TransactionFailed",
    "TransactionUser",
    "host_for_uri",
    "new_branch",
    "new_tag",
]

logger = logging.getLogger("agera.sip.endpoint")

MAGIC_COOKIE = "z9hG4bK"
BRANCH_BYTES = 12
TAG_BYTES = 8


def new_branch() -> str:
    """A §8.1.1.7 branch: the magic cookie plus enough randomness to be unique in space and time."""
    return MAGIC_COOKIE + secrets.token_hex(BRANCH_BYTES)


CALL_ID_BYTES = 16


def new_tag() -> str:
    """A §19.3 tag: "at least 32 bits of randomness"; we use 64."""
    return secrets.token_hex(TAG_BYTES)


def host_for_uri(host: str) -> str:
    """An IP literal as it appears in a SIP URI or Via: IPv6 in brackets (RFC 3261 §25.1)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


@dataclass(frozen=True, slots=True)
class TransactionFailed:
    """No response came: a timeout (§8.1.3.1: treat as 408) or a transport error (as 503)."""

    status: int
    reason: str


class TransactionUser(Protocol):
    """The UA core: receives every event the transaction layer does not keep for itself."""

    def on_event(self, event: Event) -> None:
        """Called from the read callback or a timer; must not block."""


class ClientTransaction:
    """One request we sent. Responses arrive in order through `next`; `final` skips 1xx."""

    def __init__(self, txn_id: TransactionId, request: SipRequest, addr: SipAddress, kind: str):
        self.id = txn_id
        self.request = request
        self.addr = addr
        self.kind = kind
        self._queue: asyncio.Queue[SipResponse | TransactionFailed] = asyncio.Queue()
        self.terminated = False

    def _put(self, item: SipResponse | TransactionFailed) -> None:
        self._queue.put_nowait(item)

    async def next(self) -> SipResponse | TransactionFailed:
        """The next response (any class) or the failure that ends the transaction."""
        return await self._queue.get()

    async def final(self) -> SipResponse | TransactionFailed:
        """The first final response, provisional ones skipped."""
        while True:
            item = await self._queue.get()
            if isinstance(item, TransactionFailed) or item.status >= 200:
                return item


class SipEndpoint:
    """Transport plus transaction layer for one node. ``await start()``; ``await close()``.

    ``advertised_host`` is what goes into our Via sent-by and Contacts (the public address behind
    NAT); it defaults to the bound host.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        advertised_host: str | None = None,
        transport_config: SipTransportConfig | None = None,
        timers: TimerConfig | None = None,
    ) -> None:
        self._tu: TransactionUser | None = None
        self.transport = SipTransport(
            self, host, port, config=transport_config, tag_factory=new_tag
        )
        self.timers = timers or TimerConfig()
        # Our UA sends 100 Trying itself at once for INVITEs; the layer's delayed one is a backstop.
        self.layer = TransactionLayer(self.timers, new_tag=new_tag, symmetric_responses=True)
        self._advertised = advertised_host or host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._clients: dict[TransactionId, ClientTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pumping = False
        self.handler_errors = 0

    def new_call_id(self) -> str:
        """A Call-ID for a dialog or registration this node starts. With media workers sharing
        the port it is one this worker owns, so the answers reach it (``worker_spread``)."""
        spread = self.transport.config.spread
        if spread is not None:
            return spread.new_call_id()
        return secrets.token_hex(CALL_ID_BYTES)

    # -- lifecycle -----------------------------------------------------------------------------

    def attach(self, tu: TransactionUser) -> None:
        self._tu = tu

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transport.start()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        await self.transport.close()

    @property
    def local_addr(self) -> SipAddress:
        return self.transport.local_addr

    @property
    def advertised(self) -> tuple[str, int]:
        return self._advertised, self.transport.local_addr[1]

    def now(self) -> float:
        assert self._loop is not None, "SipEndpoint.start() first"
        return self._loop.time()

    # -- building blocks for the UA --------------------------------------------------------------

    def via(self, kind: str, branch: str | None = None) -> str:
        """Our Via for a new request: sent-by is the advertised address, with rport (RFC 3581)."""
        host, port = self.advertised
        return f"SIP/2.0/{kind.upper()} {host_for_uri(host)}:{port};branch={branch or new_branch()};rport"

    def contact(self, user: str | None, kind: str) -> str:
        """A Contact the peer can reach us at over ``kind`` (§8.1.1.8)."""
        host, port = self.advertised
        userinfo = f"{user}@" if user else ""
        transport = ";transport=tcp" if kind == "tcp" else ""
        return f"<sip:{userinfo}{host_for_uri(host)}:{port}{transport}>"

    # -- inputs from the transport (SipHandler) ---------------------------------------------------

    def on_message(
        self,
        message: SipRequest | SipResponse,
        remote: SipAddress,
        kind: TransportKind,
        local: SipAddress,
    ) -> None:
        self.layer.receive(message, remote, kind, self.now())
        self._pump()

    # -- inputs from the UA -----------------------------------------------------------------------

    def send_request(self, request: SipRequest, addr: SipAddress, kind: str) -> ClientTransaction:
        """Start a client transaction; its responses arrive on the returned object."""
        txn_id = self.layer.send_request(request, addr, kind, self.now())
        client = self._clients[txn_id] = ClientTransaction(txn_id, request, addr, kind)
        self._pump()
        return client

    def send_response(self, target: TransactionId | SipRequest, response: SipResponse) -> None:
        self.layer.send_response(target, response, self.now())
        self._pump()

    def send_stateless(
        self, message: SipRequest | SipResponse, addr: SipAddress, kind: str
    ) -> None:
        self.layer.send_stateless(message, addr, kind)
        self._pump()

    def cancel(
        self, client: ClientTransaction, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> ClientTransaction:
        """CANCEL an INVITE (§9.1); the CANCEL's own response arrives on the returned object."""
        cancel_id = self.layer.cancel(client.id, self.now(), extra_headers=extra_headers)
        request = self.layer.request(cancel_id) if cancel_id in self.layer else client.request
        handle = self._clients[cancel_id] = ClientTransaction(
            cancel_id, request, client.addr, client.kind
        )
        self._pump()
        return handle

    # -- the pump -------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Send what the layer queued, hand its events to the TU, re-arm the layer's timer.

        Re-entrant calls (the TU answering from inside `on_event`) only queue more work for the
        loop below, so events keep their order.
        """
        if self._pumping:
            return
        self._pumping = True
        try:
            layer = self.layer
            while True:
                outgoing = layer.datagrams_to_send()
                events = layer.events()
                if not outgoing and not events:
                    break
                for item in outgoing:
                    self._send(item)
                for event in events:
                    self._dispatch(event)
        finally:
            self._pumping = False
        self._arm()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            client = self._clients.get(event.txn_id)
            if client is not None:
                client._put(event.response)
                if event.response.status < 200 or client.request.method != "INVITE":
                    return
                # 2xx to an INVITE also goes to the TU: it ACKs every one (§13.2.2.4).
        elif isinstance(event, TransactionTimeout | TransportFailed):
            client = self._clients.get(event.txn_id)
            if client is not None:
                if isinstance(event, TransactionTimeout):
                    client._put(TransactionFailed(408, f"Request Timeout (timer {event.timer})"))
                else:
                    client._put(TransactionFailed(503, "Service Unavailable (transport error)"))
                return
        elif isinstance(event, TransactionTerminated):
            client = self._clients.pop(event.txn_id, None)
            if client is not None:
                client.terminated = True
        if self._tu is None:
            return
        try:
            self._tu.on_event(event)
        except Exception:
            self.handler_errors += 1
            logger.exception("SIP user agent failed on %s", type(event).__name__)

    def _send(self, item: Outgoing) -> None:
        kind = item.transport.lower()
        try:
            if kind == "tcp" and not self.transport.has_connection(item.addr):
                self._spawn(self._send_tcp(item))
                return
            self.transport.send_nowait(item.data, item.addr, kind)  # type: ignore[arg-type]
        except (SipTransportError, OSError) as error:
            logger.info("SIP send to %s:%d failed: %s", item.addr[0], item.addr[1], error)
            self.layer.transport_error(item.addr, item.transport, self.now())

    async def _send_tcp(self, item: Outgoing) -> None:
        try:
            await self.transport.send(item.data, item.addr, "tcp")
        except (SipTransportError, OSError) as error:
            logger.info("SIP TCP send to %s:%d failed: %s", item.addr[0], item.addr[1], error)
            self.layer.transport_error(item.addr, item.transport, self.now())
            self._pump()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm(self) -> None:
        deadline = self.layer.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.on_timer(self.now())
        self._pump()
