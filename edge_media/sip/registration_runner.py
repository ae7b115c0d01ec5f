"""Keeps the node registered with a trunk that wants REGISTER: the sans-I/O client, driven.

`RegistrationClient` decides what to send and when; this class sends it through the endpoint,
feeds the answers back and sleeps until the client's next deadline (refresh before expiry,
or the backoff after a failure). One per trunk.
"""

from __future__ import annotations

import asyncio
import logging

from edge_media.sip.endpoint import SipEndpoint, TransactionFailed
from edge_media.sip.message import SipRequest
from edge_media.sip.registration import RegistrationClient, RegistrationState
from edge_media.sip.transport import SipAddress

__all__ = ["TrunkRegistration"]

logger = logging.getLogger("agera.sip.registration")

UNREGISTER_WAIT = 5.0  # seconds `stop` waits for the answer to our Expires: 0


class TrunkRegistration:
    """``start()``, then it runs by itself; ``await stop()`` unregisters (bounded)."""

    def __init__(
        self, endpoint: SipEndpoint, client: RegistrationClient, addr: SipAddress, kind: str
    ) -> None:
        self.endpoint = endpoint
        self.client = client
        self.addr = addr
        self.kind = kind
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.registered = asyncio.Event()

    @property
    def state(self) -> RegistrationState:
        return self.client.state

    def start(self) -> None:
        self._send(self.client.start(self.endpoint.now()))

    def _send(self, request: SipRequest) -> None:
        task = asyncio.ensure_future(self._transact(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transact(self, request: SipRequest) -> None:
        client = self.endpoint.send_request(request, self.addr, self.kind)
        final = await client.final()
        now = self.endpoint.now()
        if isinstance(final, TransactionFailed):
            follow_up = self.client.on_timeout(now)
        else:
            follow_up = self.client.on_response(final, now)
        self._log_state()
        if follow_up is not None:
            self._send(follow_up)
        self._arm()

    def _log_state(self) -> None:
        client = self.client
        if client.state is RegistrationState.REGISTERED:
            logger.info("registered with %s:%d for %d s", *self.addr, client.granted_expires or 0)
            self.registered.set()
        elif client.last_error is not None and client.state in (
            RegistrationState.FAILED,
            RegistrationState.BACKING_OFF,
        ):
            error = client.last_error
            logger.warning(
                "registration with %s:%d failed (%s %s); retrying later", *self.addr,
                error.status, error.reason,
            )  # fmt: skip
            self.registered.clear()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.client.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        request = self.client.on_deadline(self.endpoint.now())
        if request is not None:
            self._send(request)
        else:
            self._arm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        request = self.client.stop(self.endpoint.now())
        try:
            async with asyncio.timeout(UNREGISTER_WAIT):
                # The un-REGISTER is challenged like any REGISTER: answer until it settles.
                while request is not None:
                    client = self.endpoint.send_request(request, self.addr, self.kind)
                    final = await client.final()
                    now = self.endpoint.now()
                    if isinstance(final, TransactionFailed):
                        request = self.client.on_timeout(now)
                    else:
                        request = self.client.on_response(final, now)
        except TimeoutError:
            logger.info("no final answer to our un-REGISTER from %s:%d", *self.addr)
        self.registered.clear()
