"""A call's media figures at its end: the record's ``stats``, its ``stats.slo``, and the node's
per-call metrics.

Why a per-call ``slo`` object: a customer running a voice agent needs to know what the gateway
added to *their* call (how long caller audio took to reach the bot, bot audio to reach the
wire, how steady the wire was, whether the bot's speech had holes), not a node average. The
figures are measured on the node as the call runs, at O(1) cost per packet (fixed histograms,
rtp/latency.py), and read here once. The same object goes into the record and the
``call.completed`` callback (shared/events.py), and the per-call values go to the node's
metrics, so CloudWatch holds their distribution across calls.

``slo`` fields (PROTOCOL.md, "Call figures"); each is null when nothing was measured (no bot,
no caller audio, no clear), numbers rounded to 2 decimals:

- ``rtp_to_bot_ms_p50`` / ``_p99``: per caller packet handed to a bot, from the wire's hand-over
  (the RTP read callback) to the return of the driver's write to the bot's socket.
- ``bot_to_wire_ms_p50`` / ``_p99``: per talkspurt, from the bot audio message that reached an
  idle playout queue to the moment its first RTP packet had been sent.
- ``pacing_error_ms_p99``: this call's RTP departure error against the 20 ms grid, over the
  ticks its stream was on the pacer (each tick's last packet: an upper bound).
- ``loss_pct``: caller RTP lost (RFC 3550 cumulative loss) over packets received plus lost.
- ``jitter_ms``: the caller's RFC 3550 interarrival jitter at the end of the call.
- ``underruns`` / ``underrun_ms``: gaps mid-utterance in the bot's audio (rtp/session.py
  `RtpSession.slo_figures`: ≤ 400 ms, no clear in them) and the silence they inserted.
- ``barge_ins`` / ``barge_in_stop_ms_max``: clears of the bot's audio (``clear``, a native
  agent's interruption) and the longest time from one to the first packet after it.
- ``bot_rtt_ms``: the last bot connection's WebSocket ping round trip (median).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from edge_media.bridge.caller_media import CallerMedia
from edge_media.rtp.latency import LatencyHistogram

__all__ = ["SLO_FIELDS", "SloMetrics", "call_stats", "report_media", "slo_figures"]

SLO_FIELDS = (
    "rtp_to_bot_ms_p50",
    "rtp_to_bot_ms_p99",
    "bot_to_wire_ms_p50",
    "bot_to_wire_ms_p99",
    "pacing_error_ms_p99",
    "loss_pct",
    "jitter_ms",
    "underruns",
    "underrun_ms",
    "barge_ins",
    "barge_in_stop_ms_max",
    "bot_rtt_ms",
)


class SloMetrics(Protocol):
    """The per-call metrics a call reports at its end (control/metrics.py ``NodeMetrics``)."""

    def rtp_loss_pct(self, value: float) -> None: ...

    def rtp_to_bot_ms(self, value: float) -> None: ...

    def bot_to_wire_ms(self, value: float) -> None: ...

    def call_pacing_error_ms(self, value: float) -> None: ...

    def rtp_jitter_ms(self, value: float) -> None: ...

    def playout_underruns(self, value: float) -> None: ...

    def barge_in_stop_ms(self, value: float) -> None: ...

    def bot_rtt_ms(self, value: float) -> None: ...


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _pct(histogram: LatencyHistogram | None, fraction: float) -> float | None:
    return None if histogram is None else _ms(histogram.percentile_ms(fraction))


def slo_figures(
    stats: Mapping[str, Any],
    to_bot: LatencyHistogram | None,
    wire: Mapping[str, Any] | None,
    bot_rtt_ms: float | None,
) -> dict[str, Any]:
    """The ``slo`` object from the record's media ``stats``, the caller side's ``to_bot``
    histogram and the wire's figures (`RtpSession.slo_figures`; None for a wire without them)."""
    received, lost = stats.get("packets_in"), stats.get("lost")
    loss: float | None = None
    if isinstance(received, int) and isinstance(lost, int) and received + max(lost, 0) > 0:
        loss = 100.0 * max(lost, 0) / (received + max(lost, 0))
    jitter = stats.get("jitter_ms") if received else None
    wire = wire or {}
    clears = wire.get("clears")
    clear_to_wire: LatencyHistogram | None = wire.get("clear_to_wire")
    return {
        "rtp_to_bot_ms_p50": _pct(to_bot, 0.50),
        "rtp_to_bot_ms_p99": _pct(to_bot, 0.99),
        "bot_to_wire_ms_p50": _pct(wire.get("bot_to_wire"), 0.50),
        "bot_to_wire_ms_p99": _pct(wire.get("bot_to_wire"), 0.99),
        "pacing_error_ms_p99": _pct(wire.get("pacing"), 0.99),
        "loss_pct": _ms(loss),
        "jitter_ms": _ms(jitter) if isinstance(jitter, int | float) else None,
        "underruns": wire.get("underruns"),
        "underrun_ms": wire.get("underrun_ms"),
        "barge_ins": clears,
        "barge_in_stop_ms_max": None if clear_to_wire is None else _ms(clear_to_wire.max_ms),
        "bot_rtt_ms": _ms(bot_rtt_ms),
    }


def call_stats(
    media: Any,
    caller: CallerMedia,
    bot_stats: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any],
    node_pacing_p99: float | None,
    log: logging.LoggerAdapter,  # type: ignore[type-arg]
) -> dict[str, Any]:
    """The record's ``stats`` at the end of a call: the wire's counters, ``slo``, the bot
    connections' figures (``bot``) and what the call added (``extra``: reconnects).

    ``pacing_error_p99_ms`` (the field records had before ``slo``) is this call's figure; a
    wire that does not measure it (a provider's stream) keeps the node's, ``node_pacing_p99``.
    """
    stats: dict[str, Any] = {}
    wire: Mapping[str, Any] | None = None
    if media is not None:
        try:
            stats.update(media.stats())
            figures = getattr(media, "slo_figures", None)
            wire = figures() if figures is not None else None
        except Exception:
            log.exception("media stats failed")
    rtts = [s["bot_rtt_ms"] for s in bot_stats if s.get("bot_rtt_ms") is not None]
    rtt = float(rtts[-1]) if rtts else None
    slo = slo_figures(stats, caller.to_bot, wire, rtt)
    pacing = slo["pacing_error_ms_p99"]
    if pacing is None:
        pacing = node_pacing_p99
    if pacing is not None:
        stats["pacing_error_p99_ms"] = round(pacing, 2)
    if rtt is not None:
        stats["bot_rtt_ms"] = round(rtt, 2)
    if bot_stats:
        stats["bot"] = list(bot_stats)
    stats["slo"] = slo
    stats.update(extra)
    return stats


def report_media(metrics: SloMetrics, stats: Mapping[str, Any]) -> None:
    """The call's figures as node metrics, once, at its end: one value per call each, so the
    metric's percentiles are across calls (EMF carries the values; CloudWatch computes them)."""
    received, lost = stats.get("packets_in"), stats.get("lost")
    if isinstance(received, int) and isinstance(lost, int) and received + lost > 0:
        metrics.rtp_loss_pct(100.0 * max(lost, 0) / (received + max(lost, 0)))
    slo = stats.get("slo") or {}
    sends = (
        ("rtp_to_bot_ms_p99", metrics.rtp_to_bot_ms),
        ("bot_to_wire_ms_p99", metrics.bot_to_wire_ms),
        ("pacing_error_ms_p99", metrics.call_pacing_error_ms),
        ("jitter_ms", metrics.rtp_jitter_ms),
        ("underruns", metrics.playout_underruns),
        ("barge_in_stop_ms_max", metrics.barge_in_stop_ms),
        ("bot_rtt_ms", metrics.bot_rtt_ms),
    )
    for name, send in sends:
        value = slo.get(name)
        if value is not None:
            send(float(value))
