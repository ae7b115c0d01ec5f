"""Events the node could not hand to the events queue, kept and retried until they go.

Why a spool: an event is the customer's status callback. When SQS fails for longer than the
recorder's few short retries (a regional blip, throttling, a network partition), dropping the
event loses the callback for good although the record was written. So the event waits here, in
memory, and one retry loop sends the oldest first with back-off until SQS takes it again.

Bounded: a node cut off from SQS for a long time must not grow without end. Beyond ``capacity``
the oldest waiting event is dropped (counted, logged once per burst), because the newest ones
(``call.completed`` of calls ending now) are the ones a customer waits for; the record itself
holds the final state either way. A node that stops with events still waiting tries them once
more, bounded in time, and logs what it leaves behind.

`pending` and `dropped` feed the node's ``EventsUnsent`` metric (control/metrics.py) and its
alarm, so an operator hears of it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from edge_media.control.backoff import backoff_delay

__all__ = ["EventSpool"]

logger = logging.getLogger("agera.control.events")

DEFAULT_CAPACITY = 10_000
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 30.0
FINAL_FLUSH_SECONDS = 5.0

Send = Callable[[str], Awaitable[bool]]  # one attempt: True when SQS took the body


class EventSpool:
    """``put`` what could not be sent; `start` the retry loop; `close` tries once more."""

    def __init__(
        self,
        send: Send,
        *,
        capacity: int = DEFAULT_CAPACITY,
        retry_base: float = RETRY_BASE_SECONDS,
        retry_cap: float = RETRY_CAP_SECONDS,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._send = send
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._capacity = capacity
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.spooled = 0  # events ever put here
        self.resent = 0  # of those, sent later
        self.dropped = 0  # lost for capacity
        self._drop_logged = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, body: str, label: str) -> None:
        """Keep ``body`` (an event's JSON) for a later try; ``label`` names it in logs."""
        if len(self._queue) >= self._capacity:
            _, lost = self._queue.popleft()
            self.dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                logger.error(
                    "event spool full (%d): dropping the oldest waiting event (%s); the call "
                    "records hold the final state, the callbacks of dropped events are lost",
                    self._capacity,
                    lost,
                )
        self._queue.append((body, label))
        self.spooled += 1
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            body, label = self._queue[0]
            if await self._try(body):
                self._queue.popleft()
                self.resent += 1
                failures = 0
                if not self._queue:
                    self._drop_logged = False
                    logger.info("event spool drained: %d events sent late", self.resent)
                continue
            failures += 1
            delay = backoff_delay(failures, base=self._retry_base, cap=self._retry_cap)
            logger.warning(
                "%d events wait for the events queue (oldest: %s); next try in %.0f s",
                len(self._queue),
                label,
                delay,
            )
            await asyncio.sleep(delay)

    async def _try(self, body: str) -> bool:
        try:
            return await self._send(body)
        except Exception:
            logger.exception("sending a spooled event failed")
            return False

    async def close(self, seconds: float = FINAL_FLUSH_SECONDS) -> None:
        """Stop the loop and try what waits once more, for at most ``seconds``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(seconds):
                while self._queue and await self._try(self._queue[0][0]):
                    self._queue.popleft()
                    self.resent += 1
        except TimeoutError:
            pass
        if self._queue:
            labels = ", ".join(label for _, label in list(self._queue)[:10])
            logger.error(
                "node stopping with %d events never queued (first: %s); their callbacks are lost",
                len(self._queue),
                labels,
            )
