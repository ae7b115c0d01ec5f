"""Keeps the node registered with a trunk that wants REGISTER: the sans-I/O client, driven.

`RegistrationClient` decides what to send and when; this class sends it through the endpoint,
feeds the answers back and sleeps until the client's next deadline (refresh before expiry,
or the backoff after a failure). One per trunk.

`snapshot` is what the node publishes about it in its heartbeat (the dashboard's trunks page):
three states a person can act on, the last answer, when the binding lapses and since when the
state holds. Retries after a failure stay ``failed`` until a 200, so "failed since" is when the
trouble began, not the last retry. Nothing in it comes from our credentials: the reason is the
registrar's reason phrase or the client's own words.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge_media.sip.endpoint import SipEndpoint, TransactionFailed
from edge_media.sip.message import SipRequest
from edge_media.sip.registration import RegistrationClient, RegistrationState
from edge_media.sip.transport import SipAddress

__all__ = ["RegistrationSnapshot", "TrunkRegistration"]

logger = logging.getLogger("agera.sip.registration")

UNREGISTER_WAIT = 5.0  # seconds `stop` waits for the answer to our Expires: 0
MAX_REASON_LENGTH = 200  # a registrar's reason phrase is its own text, of any length
REGISTERING = "registering"
REGISTERED = "registered"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RegistrationSnapshot:
    """What the node publishes about one registration (``status_code`` None: no answer)."""

    state: str
    status_code: int | None
    reason: str
    expires_at: datetime | None
    since: datetime


class TrunkRegistration:
    """``start()``, then it runs by itself; ``await stop()`` unregisters (bounded)."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        client: RegistrationClient,
        addr: SipAddress,
        kind: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.endpoint = endpoint
        self.client = client
        self.addr = addr
        self.kind = kind
        self.clock = clock  # wall time, for what is published (the loop's clock is monotonic)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.registered = asyncio.Event()
        self.last_answer: tuple[int | None, str] | None = None  # last final answer (None: timeout)
        self._published = REGISTERING
        self._since = clock()

    @property
    def state(self) -> RegistrationState:
        return self.client.state

    def published_state(self) -> str:
        """``registered`` while the client is, ``failed`` from a failure until the next 200,
        else ``registering``."""
        if self.client.state is RegistrationState.REGISTERED:
            return REGISTERED
        if self.client.failures > 0 or self.client.state in (
            RegistrationState.FAILED,
            RegistrationState.BACKING_OFF,
        ):
            return FAILED
        return REGISTERING

    def _note_state(self) -> None:
        state = self.published_state()
        if state != self._published:
            self._published = state
            self._since = self.clock()

    def snapshot(self) -> RegistrationSnapshot:
        self._note_state()
        state = self._published
        error = self.client.last_error
        if state == FAILED and error is not None:
            status, reason = error.status, error.reason
        elif self.last_answer is not None:
            status, reason = self.last_answer
        else:
            status, reason = None, ""
        expires_at = None
        until = self.client.registered_until
        if until is not None:
            left = until - self.endpoint.now()
            if left > 0:
                expires_at = self.clock() + timedelta(seconds=left)
        return RegistrationSnapshot(
            state=state,
            status_code=status,
            reason=reason[:MAX_REASON_LENGTH],
            expires_at=expires_at,
            since=self._since,
        )

    def start(self) -> None:
        self._send(self.client.start(self.endpoint.now()))
        self._note_state()

    def _send(self, request: SipRequest) -> None:
        task = asyncio.ensure_future(self._transact(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transact(self, request: SipRequest) -> None:
        client = self.endpoint.send_request(request, self.addr, self.kind)
        final = await client.final()
        now = self.endpoint.now()
        if isinstance(final, TransactionFailed):
            self.last_answer = (None, "no answer")
            follow_up = self.client.on_timeout(now)
        else:
            self.last_answer = (final.status, final.reason)
            follow_up = self.client.on_response(final, now)
        self._note_state()
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
        self._note_state()
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
