"""A local stand-in for an EventBridge schedule: call a Lambda handler every N seconds.

moto runs no EventBridge rules, so ``agera dev`` calls the reaper's real ``handler(event,
context)`` on a thread, with the event EventBridge's scheduled rules send, the way
``infra/sqs_poller.py`` stands in for SQS triggers. A handler that raises is logged and called
again at the next tick, as Lambda would be on the next schedule.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from infra.sqs_poller import LocalLambdaContext

logger = logging.getLogger("agera.local.scheduler")

Handler = Callable[[dict[str, Any], Any], Any]


def scheduled_event(rule: str) -> dict[str, Any]:
    """The event an EventBridge schedule delivers (``aws.events``, ``Scheduled Event``)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{rule}"],
        "detail": {},
    }


class PeriodicRunner:
    """Calls ``handler`` every ``interval`` seconds on a thread (first call at once) until
    ``stop()``."""

    def __init__(self, handler: Handler, function_name: str, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.handler = handler
        self.function_name = function_name
        self.interval = interval
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"schedule-{function_name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self) -> Any:
        """One invocation; the handler's result, or None when it raised (logged)."""
        self.runs += 1
        event = scheduled_event(f"{self.function_name}-schedule")
        try:
            return self.handler(event, LocalLambdaContext(self.function_name))
        except Exception:
            self.failures += 1
            logger.exception(
                "%s failed; it runs again in %.0f s", self.function_name, self.interval
            )
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)
