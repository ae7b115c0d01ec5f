"""How a bench/streams.py run is judged and printed: the provider load's record per stream
(bench/peers/provider_load.py) and the CPU samples become one `StreamReport`; a block per run,
then one table of every run.

Why apart from the command: as for bench/calls.py (bench/lib/calls_analysis.py and
calls_report.py), the figures are kept as plain numbers, so ``--json`` writes them as measured,
and they become text, with the goal they are held against, only here.

The steady window is the calls bench's (bench/lib/sipp_load.py ``SETTLE_S``, ``MIN_WINDOW_S``):
it opens SETTLE_S after the last stream's first audio and closes at the first stream's last
frame; the node's CPU over it is divided by the stream-seconds in it, as SIP's is by the
call-seconds.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.lib.calls_analysis import RunReport
from bench.lib.cpu_sampling import CpuSampler
from bench.lib.sipp_load import MIN_WINDOW_S, SETTLE_S, percentile_dict, percentile_text
from tests.interop.capture import percentiles

__all__ = ["GOAL_RATIO", "StreamReport", "analyse_streams", "render", "sip_summary", "table"]

GOAL_RATIO = 1.0  # node CPU per stream-second over per bridged SIP call-second, at most
FRAME_MS = 20.0
MAX_EXAMPLES = 5


@dataclass
class StreamReport:
    """One stream run's figures; ``sip*`` filled in by the SIP run of the same N, if any."""

    streams: int
    run: int
    ok: int
    failed: int
    errors: list[str]
    closed_early: int
    close_codes: dict[str, int]
    close_reasons: list[str]
    bot_sessions: int
    bot_close_codes: dict[str, int]
    records: dict[str, int]  # call status -> count, for this run's account
    record_stats: dict[str, int]  # summed node-side counters of those records
    window_s: float | None
    window_streams: float | None
    cpu_ms_per_stream_s: float | None
    cpu_percent: dict[str, float] | None
    cpu_idle_percent: dict[str, float] | None
    upgrade_ms: dict[str, float] | None
    setup_ms: dict[str, float] | None
    pacing_ms: dict[str, float] | None
    gaps_over_40ms: int
    echo_ms: dict[str, float] | None  # a frame's round trip: sent slot → back at the provider
    sent: int
    expected: int
    lost: int
    streams_lossy: int
    before_bridge: dict[str, float] | None  # frames discarded before the bot was attached
    lost_examples: list[str]
    lost_by_phase: dict[str, int]  # lost frames by when they were sent: setup, steady, stops
    duplicates: int
    reordered: int
    foreign: dict[str, int]  # messages that were not one of our frames, by event
    violations: list[str]
    load_cpu_s: float | None
    node_rc: int | None
    node_log: dict[str, Any]
    notes: list[str]
    sip_cpu_ms_per_call_s: float | None = None
    sip: dict[str, Any] = field(default_factory=dict)
    moto_errors: dict[str, int] = field(default_factory=dict)  # requests the local stack failed
    cpu_setup_percent: dict[str, float] | None = None  # first connect → last first audio

    @property
    def ratio(self) -> float | None:
        a, b = self.cpu_ms_per_stream_s, self.sip_cpu_ms_per_call_s
        return None if a is None or b is None or b <= 0 else a / b


def steady(
    streams: Sequence[dict[str, Any]], *, by_audio: bool = True
) -> tuple[float, float] | None:
    """SETTLE_S after the last stream's first audio back (``by_audio``) or its ``start``, to the
    first stream's last frame. The second is the fallback when no window is left after the
    last first audio: every stream is then up, though not every one bridged yet."""
    firsts = [
        s["start_at"] + (s["arrivals_us"][0] / 1e6 if by_audio else 0.0)
        for s in streams
        if s["start_at"] is not None and (s["arrivals_us"] or not by_audio)
    ]
    ends = [s["play_end_at"] for s in streams if s["play_end_at"] is not None]
    if not firsts or not ends:
        return None
    start, end = max(firsts) + SETTLE_S, min(ends)
    return (start, end) if end - start >= MIN_WINDOW_S else None


def stream_seconds(streams: Iterable[dict[str, Any]], start: float, end: float) -> float:
    """Sum over streams of the time each was streaming (``start`` sent to its last frame)
    inside [start, end]: what a SIP call's ACK to BYE is in bench/calls.py."""
    total = 0.0
    for s in streams:
        if s["start_at"] is None:
            continue
        down = s["play_end_at"]
        if down is None:
            down = s["start_at"] + (s["arrivals_us"][-1] / 1e6 if s["arrivals_us"] else 0.0)
        total += max(0.0, min(end, down) - max(start, s["start_at"]))
    return total


def pacing(
    streams: Iterable[dict[str, Any]], window: tuple[float, float] | None
) -> tuple[list[float], int, list[float]]:
    """Per media message of each stream arrived inside the window: |gap - 20 ms| from the one
    before, how many gaps exceeded two frames (a tick with nothing sent), and its echo round
    trip (ms)."""
    errors: list[float] = []
    echoes: list[float] = []
    long_gaps = 0
    for s in streams:
        if s["start_at"] is None:
            continue
        origin = s["start_at"]
        times = [origin + us / 1e6 for us in s["arrivals_us"]]
        for i, (at, echo) in enumerate(zip(times, s["echo_us"], strict=True)):
            if window is not None and not window[0] <= at <= window[1]:
                continue
            echoes.append(echo / 1000)
            if i:
                gap = (at - times[i - 1]) * 1000
                errors.append(abs(gap - FRAME_MS))
                long_gaps += gap > 2 * FRAME_MS
    return errors, long_gaps, echoes


def _lost_examples(streams: Sequence[dict[str, Any]]) -> list[str]:
    """Where the lost frames were, for the first few lossy streams: mid-stream, or the last
    ones (still queued at the node when our ``stop`` went)."""
    out = []
    for i, s in enumerate(streams):
        if s["lost"] and len(out) < MAX_EXAMPLES:
            numbers = s["lost_numbers"]
            out.append(
                f"stream {i}: {s['lost']} lost of frames {s['first_number']}..{s['sent'] - 1}, "
                f"first lost {numbers[:5]}{'…' if len(numbers) > 5 else ''}"
            )
    return out


def lost_by_phase(
    streams: Iterable[dict[str, Any]], window: tuple[float, float] | None
) -> dict[str, int]:
    """Lost frames by when they were sent: before the window (streams still being set up),
    inside it, or after it (streams stopping). A frame the node's clock skipped (its pacer
    drops what it cannot catch up after a stall of more than a few ticks) is lost on every
    stream at the same moment, so when says more than how many."""
    out = {"setup": 0, "steady": 0, "stops": 0}
    for s in streams:
        if s["start_at"] is None:
            continue
        for k in s["lost_numbers"]:
            at = s["start_at"] + k * FRAME_MS / 1000
            if window is None or at < window[0]:
                out["setup"] += 1
            elif at <= window[1]:
                out["steady"] += 1
            else:
                out["stops"] += 1
    return out


def analyse_streams(
    count: int,
    *,
    run: int,
    result: dict[str, Any],
    sampler: CpuSampler,
    idle: tuple[float, float] | None,
    sessions: list[dict[str, Any]],
    node_log: dict[str, Any],
    node_rc: int | None,
    records: dict[str, int],
    record_stats: dict[str, int],
    notes: list[str],
) -> StreamReport:
    """The run's figures from the load's record (``result``), the CPU samples, the bot's
    sessions, the node's log and the call records the node wrote."""
    streams: list[dict[str, Any]] = result["streams"]
    window = steady(streams)
    if window is None:
        window = steady(streams, by_audio=False)
        fallback = (
            "the window opens SETTLE_S after the last start instead"
            if window is not None
            else "no CPU figure, pacing over the whole run"
        )
        notes.append(
            "no steady window from the streams' first audio (streams failed, audio came back "
            f"late, or --duration too short): {fallback}"
        )
    cpu_ms = window_streams = None
    shares = None if window is None else sampler.shares(*window)
    if shares is not None:
        t0, t1, percent = shares
        up = stream_seconds(streams, t0, t1)
        if up > 0 and "node" in percent:
            cpu_ms = percent["node"] / 100 * (t1 - t0) * 1000 / up
            window_streams = up / (t1 - t0)
    idle_shares = None if idle is None else sampler.shares(*idle)
    connects = [s["connect_at"] for s in streams if s["connect_at"] is not None]
    bridged = [
        s["start_at"] + s["arrivals_us"][0] / 1e6
        for s in streams
        if s["start_at"] is not None and s["arrivals_us"]
    ]
    setup_shares = sampler.shares(min(connects), max(bridged)) if connects and bridged else None

    def is_ok(s: dict[str, Any]) -> bool:
        return (
            s["error"] is None
            and not s["closed_early"]
            and s["close_code"] == 1000
            and s["received"] > 0
        )

    errors, long_gaps, echoes = pacing(streams, window)
    reasons = Counter(f"{s['close_code']} {s['close_reason'] or ''}".strip() for s in streams)
    foreign: Counter[str] = Counter()
    for s in streams:
        foreign.update(s["other_messages"])
    bot_codes = Counter(str(s.get("close_code")) for s in sessions)
    started = [s for s in streams if s["first_number"] is not None]
    return StreamReport(
        streams=count,
        run=run,
        ok=sum(1 for s in streams if is_ok(s)),
        failed=sum(1 for s in streams if not is_ok(s)),
        errors=sorted({s["error"] for s in streams if s["error"]})[:MAX_EXAMPLES],
        closed_early=sum(1 for s in streams if s["closed_early"]),
        close_codes=dict(Counter(str(s["close_code"]) for s in streams)),
        close_reasons=[r for r in reasons if not r.startswith("1000")][:MAX_EXAMPLES],
        bot_sessions=sum(1 for s in sessions if s.get("start_at")),
        bot_close_codes=dict(bot_codes),
        records=records,
        record_stats=record_stats,
        window_s=None if window is None else window[1] - window[0],
        window_streams=window_streams,
        cpu_ms_per_stream_s=cpu_ms,
        cpu_percent=_rounded(shares),
        cpu_idle_percent=_rounded(idle_shares),
        cpu_setup_percent=_rounded(setup_shares),
        upgrade_ms=_figure(s["upgrade_ms"] for s in streams),
        setup_ms=_figure(s["first_media_ms"] for s in streams),
        pacing_ms=percentile_dict(percentiles(errors)),
        gaps_over_40ms=long_gaps,
        echo_ms=percentile_dict(percentiles(echoes)),
        sent=sum(s["sent"] for s in streams),
        expected=sum(s["sent"] - s["first_number"] for s in started),
        lost=sum(s["lost"] for s in streams),
        streams_lossy=sum(1 for s in streams if s["lost"]),
        before_bridge=_figure(float(s["first_number"]) for s in started),
        lost_examples=_lost_examples(streams),
        lost_by_phase=lost_by_phase(streams, window),
        duplicates=sum(s["duplicates"] for s in streams),
        reordered=sum(s["reordered"] for s in streams),
        foreign=dict(foreign),
        violations=sorted({v for s in streams for v in s["violations"]})[:MAX_EXAMPLES],
        load_cpu_s=result.get("cpu_s"),
        node_rc=node_rc,
        node_log=node_log,
        notes=notes,
    )


def _figure(values: Iterable[float | None]) -> dict[str, float] | None:
    return percentile_dict(percentiles(v for v in values if v is not None))


def _rounded(shares: tuple[float, float, dict[str, float]] | None) -> dict[str, float] | None:
    return None if shares is None else {k: round(v, 1) for k, v in shares[2].items()}


def sip_summary(r: RunReport) -> dict[str, Any]:
    """What the stream report shows of the SIP run beside its own figures."""
    return {
        "successful": r.successful,
        "failed": r.failed,
        "bot_sessions": r.bot_sessions,
        "node_percent": (r.cpu_percent or {}).get("node"),
        "lost": r.lost,
        "packets": r.packets,
        "pacing_ms": r.pacing_ms,
        "node_log": {k: v for k, v in r.node_log.items() if k != "examples"},
        "notes": r.notes,
    }


# -- output ------------------------------------------------------------------------------------


def _share(shares: dict[str, float] | None, name: str, digits: int = 0) -> str:
    value = (shares or {}).get(name)
    return "n/a" if value is None else f"{value:.{digits}f}"


def _shares_text(shares: dict[str, float] | None) -> str:
    if not shares:
        return "n/a"
    names = ("node", "provider", "bot", "moto", "others", "box")
    text = "  ".join(f"{n} {shares[n]:.0f}" for n in names if n in shares)
    if "node.user" in shares:
        text += (
            f"  [node: user {shares['node.user']:.0f} sys {shares['node.sys']:.0f}, "
            f"runnable but waiting for a CPU {shares['node.waiting']:.0f} % of the time]"
        )
    return text


def _ratio_text(r: StreamReport) -> str:
    if r.ratio is None:
        return "n/a"
    verdict = "ok" if r.ratio <= GOAL_RATIO else "OVER"
    return f"{r.ratio:.2f}  goal ≤ {GOAL_RATIO:g}  {verdict}"


def render(r: StreamReport) -> str:
    cpu = r.cpu_percent or {}
    cpu_text = (
        "n/a"
        if r.cpu_ms_per_stream_s is None
        else f"{r.cpu_ms_per_stream_s:.2f} ms per stream-second ({cpu.get('node', 0):.0f} % of "
        f"one core at {r.window_streams or 0:.0f} streams)"
    )
    sip = r.sip
    lines = [
        f"== {r.streams} agent streams (Cloudonix) bridged to the echo bot, run {r.run}",
        f"streams            OK {r.ok}  failed {r.failed}  closed by the node first "
        f"{r.closed_early}  close codes {r.close_codes}",
        f"bot                sessions {r.bot_sessions}  close codes {r.bot_close_codes}",
        f"call records       {r.records}  node counters {r.record_stats}",
        f"steady window      {'n/a' if r.window_s is None else f'{r.window_s:.1f} s'}",
        f"node CPU           {cpu_text}",
        f"box CPU, % of one core: steady  {_shares_text(r.cpu_percent)}",
        f"                        setup   {_shares_text(r.cpu_setup_percent)}",
        f"                        idle    {_shares_text(r.cpu_idle_percent)}",
        f"connect→101 ms     {percentile_text(r.upgrade_ms)}",
        f"connect→1st media  {percentile_text(r.setup_ms)}  [ms; see bench/peers/provider_load.py]",
        f"pacing |gap-20| ms {percentile_text(r.pacing_ms)}  gaps > 40 ms: {r.gaps_over_40ms}"
        "  [arrival at the provider, steady window]",
        f"frames lost        {r.lost} of {r.expected} expected in {r.streams_lossy} streams, "
        f"by when sent: {r.lost_by_phase}  (sent {r.sent}; duplicates {r.duplicates}, "
        f"out of order {r.reordered})",
        f"echo round trip ms {percentile_text(r.echo_ms)}  [sent slot → back, steady window]",
        f"before the bridge  frames per stream: {percentile_text(r.before_bridge)}",
    ]
    lines += [f"  lost: {line}" for line in r.lost_examples]
    if r.sip_cpu_ms_per_call_s is not None or sip:
        sip_cpu = r.sip_cpu_ms_per_call_s
        lines += [
            f"SIP, same N        node CPU {'n/a' if sip_cpu is None else f'{sip_cpu:.2f}'} ms per "
            f"call-second ({sip.get('node_percent')} % of one core); calls OK "
            f"{sip.get('successful')} failed {sip.get('failed')}; RTP lost {sip.get('lost')} of "
            f"{sip.get('packets')}",
            f"                   pacing |error| ms {percentile_text(sip.get('pacing_ms'))} "
            f"[RTP grid, capture]; node log {sip.get('node_log')}; moto failed "
            f"{sip.get('moto_errors') or 0}",
            f"stream / SIP CPU   {_ratio_text(r)}",
        ]
    if r.foreign:
        lines.append(f"other messages     {r.foreign}")
    if r.errors:
        lines.append(f"load errors        {r.errors}")
    if r.close_reasons:
        lines.append(f"other closes       {r.close_reasons}")
    if r.violations:
        lines.append(f"provider saw       {r.violations}")
    if r.moto_errors:
        lines.append(
            f"moto failed        {r.moto_errors}  [requests answered 500; botocore retries them]"
        )
    log = r.node_log
    if log:
        lines.append(
            f"node log           WARNING {log.get('WARNING')}  ERROR {log.get('ERROR')}  "
            f"Traceback {log.get('Traceback')}"
        )
        lines += [f"  {line}" for line in log.get("examples", [])]
    lines += [f"note: {n}" for n in r.notes]
    lines += [f"note (SIP run): {n}" for n in sip.get("notes", [])]
    return "\n".join(lines)


def _cell(p: dict[str, float] | None) -> str:
    return "n/a" if p is None else f"{p['p50']:.2f} / {p['p99']:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(reports: Sequence[StreamReport]) -> str:
    """One column per run, one row per figure, and per N the medians over its runs."""
    rows = [
        ("streams OK / failed", lambda r: f"{r.ok} / {r.failed}", "all OK"),
        ("streams at the bot", lambda r: str(r.bot_sessions), "= streams"),
        ("node CPU ms / stream-s", lambda r: _num(r.cpu_ms_per_stream_s), ""),
        ("SIP node CPU ms / call-s", lambda r: _num(r.sip_cpu_ms_per_call_s), "same N, same box"),
        ("stream / SIP CPU", lambda r: _num(r.ratio), f"≤ {GOAL_RATIO:g}"),
        ("node CPU % of a core", lambda r: _share(r.cpu_percent, "node"), ""),
        ("connect→101 p50/p99", lambda r: _cell(r.upgrade_ms), "ms"),
        ("connect→media p50/p99", lambda r: _cell(r.setup_ms), "ms"),
        ("pacing |gap-20| p50/p99", lambda r: _cell(r.pacing_ms), "ms, at the provider"),
        ("echo round trip p50/p99", lambda r: _cell(r.echo_ms), "ms"),
        ("frames lost", lambda r: f"{r.lost} of {r.expected}", "0"),
        ("close codes", lambda r: ",".join(f"{k}x{v}" for k, v in r.close_codes.items()), "1000"),
        ("node WARNING / ERROR", lambda r: f"{r.node_log.get('WARNING')} / "
         f"{r.node_log.get('ERROR')}", "0 / 0"),
        ("node waiting for CPU", lambda r: _share(r.cpu_percent, "node.waiting", 1), "% of wall"),
        ("provider load CPU %", lambda r: _share(r.cpu_percent, "provider"), ""),
        ("bot CPU %", lambda r: _share(r.cpu_percent, "bot"), ""),
        ("others' CPU %", lambda r: _share(r.cpu_percent, "others"), "not ours"),
        ("box CPU % (of 200)", lambda r: _share(r.cpu_percent, "box"), ""),
    ]  # fmt: skip
    cells = [[fn(r) for r in reports] for _, fn, _ in rows]
    width = max(14, *(len(c) for line in cells for c in line)) + 2
    head = f"{'N concurrent streams':<26}" + "".join(f"{r.streams:>{width}}" for r in reports)
    lines = [head + "   goal", "-" * (len(head) + 20)]
    for (name, _, goal), line in zip(rows, cells, strict=True):
        lines.append(f"{name:<26}" + "".join(f"{c:>{width}}" for c in line) + f"   {goal}")
    by_n: dict[int, list[StreamReport]] = {}
    for r in reports:
        by_n.setdefault(r.streams, []).append(r)
    for n, runs in by_n.items():
        if len(runs) < 2:
            continue
        lines.append(
            f"median of {len(runs)} runs at {n}: node CPU ms / stream-s "
            f"{_median(r.cpu_ms_per_stream_s for r in runs)}, SIP ms / call-s "
            f"{_median(r.sip_cpu_ms_per_call_s for r in runs)}, ratio "
            f"{_median(r.ratio for r in runs)}, setup p99 "
            f"{_median(r.setup_ms['p99'] if r.setup_ms else None for r in runs)} ms, pacing p99 "
            f"{_median(r.pacing_ms['p99'] if r.pacing_ms else None for r in runs)} ms"
        )
    lines.append("CPU rows: % of one core over the steady window (every stream up)")
    return "\n".join(lines)


def _median(values: Iterable[float | None]) -> str:
    present = [v for v in values if v is not None]
    return "n/a" if not present else f"{statistics.median(present):.2f}"
