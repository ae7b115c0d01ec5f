"""What a bench/soak.py run measured, how it is judged, and how it is printed.

The goals are the issue's: at N calls with churn, the node's RSS is flat after warm-up (within
GOAL_DRIFT_PCT), it does not grow with the calls that ended (no leak per call), no call is stuck
(no non-final record, the node's live count and the account's slot counter back at 0 once the
callers stop) and memory per live call is at most GOAL_MB_PER_CALL (VoiceBlender, a Go gateway,
publishes 0.16 MB per session).

How each figure is taken (times are the node samples' epochs, bench/lib/soak_sampling.py):

* idle RSS: median over the samples before the callers start (the node up, no call).
* warm-up: from the callers' start until ``warmup_s`` after the node first held ~N calls
  (NEAR_N of N): Python's allocator keeps the arenas a peak filled, and the first churn fills
  the caches every call shares, so growth before that is not a leak.
* RSS warm / end: medians over the first / last ``span_s`` of the steady window (warm-up end to
  the callers' soft stop), so one noisy sample does not decide the drift; drift % = (end - warm)
  / warm.
* memory per live call: (median RSS in the steady window - idle RSS) / median live calls in it.
* leak per call: the least-squares slope of RSS over time in the steady window, times its
  length, divided by the calls that ended in it: KB the node kept per finished call. Over a
  30-minute run a 1 KB leak is about 7 MB; over a few minutes it is below the noise.
* fds / threads: idle, peak, and after the drain; fds after the drain beyond idle + FD_SLACK are
  descriptors some finished call left open.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.lib.soak_sampling import KB, NodeSample

GOAL_DRIFT_PCT = 5.0
GOAL_MB_PER_CALL = 0.2
GOAL_LEAK_KB_PER_CALL = 1.0
FD_SLACK = 16  # control-plane HTTP connections the node's SDK pools open under load and keep
NEAR_N = 0.95  # "N calls live": churn keeps the count a call or two under N at any instant
MB = 1024 * 1024


@dataclass
class Check:
    name: str
    value: str
    goal: str
    ok: bool


@dataclass
class Records:
    """The account's call records in the control plane after the drain."""

    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    not_final: list[dict[str, Any]] = field(default_factory=list)  # uuid, status, node, ...
    slot_counter: int | None = None  # ACCOUNT#id / SLOTS ``active``
    slot_items: int | None = None  # SLOT#<call> items left


@dataclass
class SoakInputs:
    """Everything a run hands to `analyse` (times are epochs)."""

    calls: int
    minutes: float
    seed: int
    warmup_s: float
    samples: Sequence[NodeSample]
    callers_start: float
    soft_stop: float  # SIGUSR1 to sipp: no new call from here
    callers_done: float | None
    drained_s: float | None  # soft stop → node live count 0 (None: it never got there)
    after_drain: NodeSample | None
    created: int
    successful: int
    failed: int
    ended_at: Sequence[float]  # each call's BYE (sipp's trace)
    records: Records
    bot_sessions: int
    bot_open_at_exit: int
    clear_calls: int
    mark_echoes: int
    node_rc: int | None
    notes: list[str]


@dataclass
class SoakReport:
    calls: int
    minutes: float
    seed: int
    warmup_s: float
    idle_rss_mb: float | None = None
    first_n_at_s: float | None = None  # seconds after the callers' start
    warm_rss_mb: float | None = None
    end_rss_mb: float | None = None
    min_rss_mb: float | None = None
    median_rss_mb: float | None = None
    max_rss_mb: float | None = None
    drift_pct: float | None = None
    pss_warm_mb: float | None = None
    pss_end_mb: float | None = None
    median_live: float | None = None
    mb_per_call: float | None = None
    leak_kb_per_call: float | None = None
    ended_in_window: int = 0
    after_drain_rss_mb: float | None = None
    fds_idle: int | None = None
    fds_peak: int | None = None
    fds_after_drain: int | None = None
    threads_idle: int | None = None
    threads_peak: int | None = None
    threads_after_drain: int | None = None
    live_after_drain: int | None = None
    drained_s: float | None = None
    health_misses: int = 0
    created: int = 0
    successful: int = 0
    failed: int = 0
    records: Records = field(default_factory=Records)
    bot_sessions: int = 0
    bot_open_at_exit: int = 0
    clear_calls: int = 0
    mark_echoes: int = 0
    node_cpu_pct: float | None = None
    node_rc: int | None = None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _mb(kb: float | None) -> float | None:
    return None if kb is None else kb / KB


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 3 points or no spread in x."""
    if len(points) < 3 or len({x for x, _ in points}) < 2:
        return None
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


def analyse(run: SoakInputs, *, clock_ticks: int, keep_samples: bool = True) -> SoakReport:
    """Figures and checks of one soak run."""
    report = SoakReport(run.calls, run.minutes, run.seed, run.warmup_s, notes=list(run.notes))
    samples = sorted(run.samples, key=lambda s: s.time)
    report.health_misses = sum(1 for s in samples if s.live is None)
    idle = [s for s in samples if s.time < run.callers_start]
    if idle:
        report.idle_rss_mb = _mb(_median([s.rss_kb for s in idle]))
        report.fds_idle = idle[-1].fds
        report.threads_idle = idle[-1].threads
    first_n = next(
        (
            s.time
            for s in samples
            if s.time >= run.callers_start and s.live is not None and s.live >= NEAR_N * run.calls
        ),
        None,
    )
    if first_n is None:
        report.notes.append(f"the node never held {NEAR_N:.0%} of {run.calls} calls at a sample")
    else:
        report.first_n_at_s = first_n - run.callers_start
    warm_end = (first_n if first_n is not None else run.callers_start) + run.warmup_s
    steady = [s for s in samples if warm_end <= s.time <= run.soft_stop]
    span = min(60.0, max(0.0, run.soft_stop - warm_end) / 4)
    if len(steady) < 4:
        report.notes.append(
            "too few samples after warm-up for the drift and leak figures: run longer, or "
            "shorten --warmup / --sample-every"
        )
    else:
        head = [s for s in steady if s.time <= warm_end + span] or steady[:1]
        tail = [s for s in steady if s.time >= run.soft_stop - span] or steady[-1:]
        warm = _median([s.rss_kb for s in head])
        end = _median([s.rss_kb for s in tail])
        rss = [s.rss_kb for s in steady]
        report.warm_rss_mb, report.end_rss_mb = _mb(warm), _mb(end)
        report.min_rss_mb, report.max_rss_mb = _mb(min(rss)), _mb(max(rss))
        report.median_rss_mb = _mb(_median(rss))
        if warm and end is not None:
            report.drift_pct = (end - warm) / warm * 100
        pss_head = [s.pss_kb for s in head if s.pss_kb is not None]
        pss_tail = [s.pss_kb for s in tail if s.pss_kb is not None]
        report.pss_warm_mb = _mb(_median(pss_head))
        report.pss_end_mb = _mb(_median(pss_tail))
        live = [s.live for s in steady if s.live is not None]
        report.median_live = _median(live)
        if report.median_live and report.idle_rss_mb is not None and report.median_rss_mb:
            report.mb_per_call = (report.median_rss_mb - report.idle_rss_mb) / report.median_live
        window = (steady[0].time, steady[-1].time)
        report.ended_in_window = sum(1 for t in run.ended_at if window[0] <= t <= window[1])
        slope = _slope([(s.time, float(s.rss_kb)) for s in steady])  # KB per second
        if slope is not None and report.ended_in_window:
            report.leak_kb_per_call = slope * (window[1] - window[0]) / report.ended_in_window
        seconds = window[1] - window[0]
        if seconds > 0:
            ticks = steady[-1].cpu_ticks - steady[0].cpu_ticks
            report.node_cpu_pct = ticks / clock_ticks / seconds * 100
    loaded = [s for s in samples if run.callers_start <= s.time <= run.soft_stop]
    if loaded:
        report.fds_peak = max(s.fds for s in loaded)
        report.threads_peak = max(s.threads for s in loaded)
    if run.after_drain is not None:
        report.after_drain_rss_mb = _mb(run.after_drain.rss_kb)
        report.fds_after_drain = run.after_drain.fds
        report.threads_after_drain = run.after_drain.threads
        report.live_after_drain = run.after_drain.live
    report.drained_s = run.drained_s
    report.created, report.successful, report.failed = run.created, run.successful, run.failed
    report.records = run.records
    report.bot_sessions, report.bot_open_at_exit = run.bot_sessions, run.bot_open_at_exit
    report.clear_calls, report.mark_echoes = run.clear_calls, run.mark_echoes
    report.node_rc = run.node_rc
    if run.node_rc not in (None, 0):
        report.notes.append(f"the node exited with {run.node_rc} on SIGTERM (0 expected)")
    report.checks = checks(report)
    if keep_samples:
        report.samples = [
            {
                "t": round(s.time - run.callers_start, 1),
                "rss_mb": round(s.rss_kb / KB, 2),
                "pss_mb": None if s.pss_kb is None else round(s.pss_kb / KB, 2),
                "fds": s.fds,
                "threads": s.threads,
                "live": s.live,
            }
            for s in samples
        ]
    return report


def _fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def checks(r: SoakReport) -> list[Check]:
    """The issue's goals, each judged on one figure (n/a counts as a failure: not shown)."""
    out = [
        Check(
            "RSS drift after warm-up",
            _fmt(r.drift_pct, "{:+.1f} %"),
            f"within ±{GOAL_DRIFT_PCT:g} %",
            r.drift_pct is not None and abs(r.drift_pct) <= GOAL_DRIFT_PCT,
        ),
        Check(
            "memory per live call",
            _fmt(r.mb_per_call, "{:.3f} MB"),
            f"≤ {GOAL_MB_PER_CALL:g} MB",
            r.mb_per_call is not None and r.mb_per_call <= GOAL_MB_PER_CALL,
        ),
        Check(
            "leak per finished call",
            _fmt(r.leak_kb_per_call, "{:+.2f} KB"),
            f"≤ {GOAL_LEAK_KB_PER_CALL:g} KB",
            r.leak_kb_per_call is not None and r.leak_kb_per_call <= GOAL_LEAK_KB_PER_CALL,
        ),
        Check(
            "stuck call records",
            str(len(r.records.not_final)),
            "0 not final",
            not r.records.not_final and r.records.total > 0,
        ),
        Check(
            "node live calls after drain",
            _fmt(r.live_after_drain, "{:d}"),
            "0",
            r.live_after_drain == 0,
        ),
        Check(
            "account slot counter",
            _fmt(r.records.slot_counter, "{:d}")
            + ("" if r.records.slot_items is None else f" ({r.records.slot_items} SLOT# items)"),
            "0",
            r.records.slot_counter == 0 and not r.records.slot_items,
        ),
        Check(
            "fds after drain",
            f"{_fmt(r.fds_after_drain, '{:d}')} (idle {_fmt(r.fds_idle, '{:d}')})",
            f"≤ idle + {FD_SLACK}",
            r.fds_after_drain is not None
            and r.fds_idle is not None
            and r.fds_after_drain <= r.fds_idle + FD_SLACK,
        ),
        Check("failed calls (sipp)", str(r.failed), "0", r.failed == 0 and r.successful > 0),
        Check(
            "bot connections left open",
            str(r.bot_open_at_exit),
            "0",
            r.bot_open_at_exit == 0,
        ),
    ]
    return out


def render(r: SoakReport) -> str:
    """The run's block: the figures, then the goals with a verdict each."""
    lines = [
        f"soak: {r.calls} calls for {r.minutes:g} min (seed {r.seed}, warm-up {r.warmup_s:g} s "
        f"after {NEAR_N:.0%} of N first live"
        + (f", reached at +{r.first_n_at_s:.0f} s" if r.first_n_at_s is not None else "")
        + ")",
        f"  calls            created {r.created}  completed {r.successful}  failed {r.failed}"
        f"  (bot connections {r.bot_sessions}; clear calls {r.clear_calls}, marks echoed"
        f" {r.mark_echoes})",
        f"  node RSS MB      idle {_fmt(r.idle_rss_mb)}  warm {_fmt(r.warm_rss_mb)}"
        f"  end {_fmt(r.end_rss_mb)}  (min {_fmt(r.min_rss_mb)} median {_fmt(r.median_rss_mb)}"
        f" max {_fmt(r.max_rss_mb)})  after drain {_fmt(r.after_drain_rss_mb)}",
        f"  node PSS MB      warm {_fmt(r.pss_warm_mb)}  end {_fmt(r.pss_end_mb)}",
        f"  drift            {_fmt(r.drift_pct, '{:+.2f} %')}",
        f"  per live call    {_fmt(r.mb_per_call, '{:.3f} MB')} (median live"
        f" {_fmt(r.median_live, '{:.0f}')})",
        f"  leak per call    {_fmt(r.leak_kb_per_call, '{:+.2f} KB')} over"
        f" {r.ended_in_window} calls that ended after warm-up",
        f"  fds              idle {_fmt(r.fds_idle, '{:d}')}  peak {_fmt(r.fds_peak, '{:d}')}"
        f"  after drain {_fmt(r.fds_after_drain, '{:d}')}",
        f"  threads          idle {_fmt(r.threads_idle, '{:d}')}"
        f"  peak {_fmt(r.threads_peak, '{:d}')}  after drain"
        f" {_fmt(r.threads_after_drain, '{:d}')}",
        f"  drain            live 0 {_fmt(r.drained_s, '{:.1f} s')} after the callers' exit;"
        f" health misses {r.health_misses}",
        f"  records          {r.records.total}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.records.by_status.items())),
        f"  node CPU         {_fmt(r.node_cpu_pct, '{:.0f} %')} of one core after warm-up",
    ]
    for stuck in r.records.not_final[:10]:
        lines.append(f"  not final: {stuck}")
    lines.append("")
    width = max(len(c.name) for c in r.checks) if r.checks else 10
    lines.append(f"  {'goal':<{width}}  {'value':>24}  {'target':<14} verdict")
    for c in r.checks:
        lines.append(f"  {c.name:<{width}}  {c.value:>24}  {c.goal:<14} {'ok' if c.ok else 'FAIL'}")
    for note in r.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
