"""Structured logs and CloudWatch metrics (EMF) for the control plane, via Powertools.

Every log line is JSON and carries ``call_uuid``/``account_id`` when a handler appends them, so one
call can be followed across the API, the workers and the edge. Keys are appended per thread or
task (`call_log_keys`, a ContextVar), never on the shared formatter: in ``agera dev`` the workers'
pollers, the API and the edge node log through this one logger in one process, and a key left on
the formatter would name another call on every line that follows. Metrics go out as EMF log lines
(no PutMetricData calls, no extra latency) in the namespace ``AgeraVoiceGateway``. The X-Ray tracer
is created only when ``AGERA_TRACING`` is on: it costs ~110 ms of cold start.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger, Metrics

NAMESPACE = "AgeraVoiceGateway"

# A worker invocation that had nothing to count is normal, not worth a warning per batch.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "agera"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE))


@contextmanager
def call_log_keys(call_uuid: str, account_id: str) -> Iterator[None]:
    """``call_uuid`` and ``account_id`` on every line logged in this thread or task meanwhile,
    and on no other line; the keys that were there before come back afterwards."""
    before = dict(logger.thread_safe_get_current_keys())
    logger.thread_safe_append_keys(call_uuid=call_uuid, account_id=account_id)
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()
        if before:
            logger.thread_safe_append_keys(**before)
