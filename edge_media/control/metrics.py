"""The node's CloudWatch metrics as EMF lines on stdout (Powertools ``Metrics``, outside Lambda).

Why EMF: the node's stdout goes to CloudWatch Logs (systemd journal → agent), and an EMF line there
becomes metrics with no PutMetricData call on the media path. Values are kept in
memory and written as one line per flush: every ``flush_seconds``, when one metric reaches the 100
values an EMF line may carry (Powertools writes that line by itself), and at ``stop()``.

Two departures from Powertools' Lambda habits, on purpose:

- Each NodeMetrics has its own provider. ``Metrics()`` shares one metric set across all instances
  in a process; the node's values must not mix with anything else that records metrics.
- ``node_id`` is a property of each line (searchable in Logs Insights), not a dimension, unless
  ``per_node_dimension``: nodes come and go with the fleet, and every new dimension value is a new
  billed custom metric.

``POWERTOOLS_METRICS_DISABLED`` is honoured for every line, including the 100-value one that
Powertools itself writes without checking it: a disabled NodeMetrics records nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

__all__ = ["NodeMetrics"]

logger = logging.getLogger("agera.control.metrics")

FLUSH_SECONDS = 60.0  # CloudWatch's standard resolution: one line a minute per node
CALL_SETUP_TIME = "CallSetupMs"  # INVITE received (or originate taken) → 200 OK / answered
ROUTING_WEBHOOK_TIME = "RoutingWebhookMs"
BOT_CONNECT_TIME = "BotConnectMs"
RTP_LOSS = "RtpLossPct"  # per call, at its end
PACING_ERROR = "PacingErrorMs"  # outbound RTP departure error against the 20 ms grid
# Per call, at its end, from the record's ``stats.slo`` (bridge/call_slo.py): one value per call,
# so a metric's percentiles are across calls. CallPacingErrorMs is each call's own p99, beside
# the node-wide PacingErrorMs (a gauge) that EdgePacingAlarm watches.
RTP_TO_BOT_TIME = "RtpToBotMs"  # the call's p99, caller packet → bot socket write
BOT_TO_WIRE_TIME = "BotToWireMs"  # the call's p99, bot audio into an idle queue → first packet
CALL_PACING_ERROR = "CallPacingErrorMs"  # the call's p99 departure error
RTP_JITTER = "RtpJitterMs"  # the caller's RFC 3550 interarrival jitter at the end
PLAYOUT_UNDERRUNS = "PlayoutUnderruns"  # gaps mid-utterance in the bot's audio
BARGE_IN_STOP_TIME = "BargeInStopMs"  # the call's longest clear → first packet after it
BOT_RTT = "BotRttMs"  # the bot connection's WebSocket ping round trip
ACTIVE_CALLS = "ActiveCalls"
EVENTS_UNSENT = "EventsUnsent"  # events waiting in the node's spool (control/event_spool.py)


class NodeMetrics:
    """Record with the named methods; ``start()`` the flush task, ``await stop()`` flushes."""

    def __init__(
        self,
        namespace: str = "Agera",
        service: str = "edge-node",
        *,
        node_id: str,
        flush_seconds: float = FLUSH_SECONDS,
        per_node_dimension: bool = False,
        disabled: bool | None = None,
    ) -> None:
        if flush_seconds <= 0:
            raise ValueError("flush_seconds must be positive")
        self.node_id = node_id
        self.flush_seconds = flush_seconds
        self.per_node_dimension = per_node_dimension
        self.disabled = is_metrics_disabled() if disabled is None else disabled
        dimensions = {"node_id": node_id} if per_node_dimension else {}
        self.provider = AmazonCloudWatchEMFProvider(
            namespace=namespace, service=service, default_dimensions=dimensions
        )
        self.metrics = Metrics(namespace=namespace, service=service, provider=self.provider)
        self.flushes = 0
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------- what is measured

    def call_setup_ms(self, value: float) -> None:
        self._add(CALL_SETUP_TIME, MetricUnit.Milliseconds, value)

    def routing_webhook_ms(self, value: float) -> None:
        self._add(ROUTING_WEBHOOK_TIME, MetricUnit.Milliseconds, value)

    def bot_connect_ms(self, value: float) -> None:
        self._add(BOT_CONNECT_TIME, MetricUnit.Milliseconds, value)

    def rtp_loss_pct(self, value: float) -> None:
        self._add(RTP_LOSS, MetricUnit.Percent, value)

    def pacing_error_ms(self, value: float) -> None:
        self._add(PACING_ERROR, MetricUnit.Milliseconds, value)

    def rtp_to_bot_ms(self, value: float) -> None:
        self._add(RTP_TO_BOT_TIME, MetricUnit.Milliseconds, value)

    def bot_to_wire_ms(self, value: float) -> None:
        self._add(BOT_TO_WIRE_TIME, MetricUnit.Milliseconds, value)

    def call_pacing_error_ms(self, value: float) -> None:
        self._add(CALL_PACING_ERROR, MetricUnit.Milliseconds, value)

    def rtp_jitter_ms(self, value: float) -> None:
        self._add(RTP_JITTER, MetricUnit.Milliseconds, value)

    def playout_underruns(self, value: float) -> None:
        self._add(PLAYOUT_UNDERRUNS, MetricUnit.Count, value)

    def barge_in_stop_ms(self, value: float) -> None:
        self._add(BARGE_IN_STOP_TIME, MetricUnit.Milliseconds, value)

    def bot_rtt_ms(self, value: float) -> None:
        self._add(BOT_RTT, MetricUnit.Milliseconds, value)

    def active_calls(self, count: int) -> None:
        """A gauge: record it on a schedule (the heartbeat), not per call."""
        self._add(ACTIVE_CALLS, MetricUnit.Count, count)

    def events_unsent(self, count: int) -> None:
        """A gauge, once a minute: call events the events queue has not taken yet."""
        self._add(EVENTS_UNSENT, MetricUnit.Count, count)

    def _add(self, name: str, unit: MetricUnit, value: float) -> None:
        if self.disabled:
            return
        if not math.isfinite(value):  # NaN/inf would make the EMF line invalid JSON
            logger.debug("metric %s: non-finite value %r dropped", name, value)
            return
        if not self.per_node_dimension and "node_id" not in self.provider.metadata_set:
            self.provider.add_metadata("node_id", self.node_id)  # cleared by each flush
        self.metrics.add_metric(name=name, unit=unit, value=value)

    # ----------------------------------------------------------------------- flushing

    @property
    def pending(self) -> int:
        """Values waiting for the next flush."""
        return sum(len(metric["Value"]) for metric in self.provider.metric_set.values())

    def flush(self) -> None:
        """Write one EMF line with every pending value (nothing when there is none)."""
        if self.disabled or not self.provider.metric_set:
            return
        self.metrics.flush_metrics()
        self.flushes += 1

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("metrics flush task already started")
        self._task = asyncio.get_running_loop().create_task(
            self._flush_loop(), name="metrics-flush"
        )

    async def stop(self) -> None:
        """Stop the flush task and write what is left."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        self._safe_flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            self._safe_flush()

    def _safe_flush(self) -> None:
        try:
            self.flush()
        except Exception:  # a metrics bug must not end the node
            logger.exception("metrics flush failed; values dropped")
            self.provider.clear_metrics()
