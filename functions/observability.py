"""Structured logs and CloudWatch metrics (EMF) for the control plane, via Powertools.

Every log line is JSON and carries ``call_uuid``/``account_id`` when a handler appends them, so one
call can be followed across the API, the workers and the edge. Metrics go out as EMF log lines
(no PutMetricData calls, no extra latency) in the namespace ``AgeraVoiceGateway``. The X-Ray tracer
is created only when ``AGERA_TRACING`` is on: it costs ~110 ms of cold start.
"""

from __future__ import annotations

import os
import warnings

from aws_lambda_powertools import Logger, Metrics

NAMESPACE = "AgeraVoiceGateway"

# A worker invocation that had nothing to count is normal, not worth a warning per batch.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "agera"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE))
