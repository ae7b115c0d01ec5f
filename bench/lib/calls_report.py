"""How a bench/calls.py run is printed: a block per run, then one table of every run.

Why apart from the analysis: the figures are kept as plain numbers (so ``--json`` writes them
as measured) and judged against the budget (docs/performance.md) only here, where they become
text; the same judgement decides ``--find-max`` (`passes`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.calls_wire import AMBIGUOUS_S, BURST_GAP_S
from bench.lib.budget import (
    BUDGET_ANSWER_P99_MS,
    BUDGET_BOT_TO_WIRE_P99_MS,
    BUDGET_CLEAR_MS,
    BUDGET_CPU_MS,
    BUDGET_LATENCY_MS,
    BUDGET_MB_PER_CALL,
    BUDGET_PACING_P99_MS,
    BUDGET_RINGING_P99_MS,
)
from bench.lib.calls_analysis import BURST_HEAD, RunReport
from bench.lib.calls_drivers import driver_label, driver_notes, el_format, ratio_lines
from bench.lib.calls_slo import slo_lines
from bench.lib.naive_baseline import GOAL_RATIO, Baseline, ratio_line
from bench.lib.sipp_load import percentile_text


def _clear_text(r: RunReport) -> str:
    if not r.clear_ms:
        return f"n/a ({r.clear_calls} clear calls)"
    worst = max(r.clear_ms)
    verdict = "ok" if worst <= BUDGET_CLEAR_MS else f"OVER {BUDGET_CLEAR_MS:g}"
    values = ", ".join(f"{v:.1f}" for v in sorted(r.clear_ms))
    return (
        f"max {worst:.1f} ms over {len(r.clear_ms)} calls [{values}]; tone packets after the "
        f"clear: {sum(r.clear_stale_packets)}  {verdict}"
    )


def render(r: RunReport) -> str:
    cpu = r.cpu_percent or {}
    cpu_text = (
        "n/a"
        if r.cpu_ms_per_call_s is None
        else f"{r.cpu_ms_per_call_s:.2f} ms per call-second ({cpu.get('node', 0):.0f} % of one "
        f"core at {r.window_calls or 0:.0f} calls)  budget {BUDGET_CPU_MS}"
    )
    box = _shares_text(cpu)
    counts = r.latency_counts
    audio_format = el_format(r.driver)
    title = (
        "the echo bot"
        if audio_format is None
        else f"the ElevenLabs fake agent ({audio_format}, echoing)"
    )
    lines = [
        f"== {r.calls} calls bridged to {title}",
        f"sipp               rc {r.sipp_rc}  successful {r.successful}  failed {r.failed}  "
        f"retransmissions {r.retransmissions}",
        f"bot                sessions {r.bot_sessions}  with media {r.bot_sessions_with_media}  "
        f"all 5 digits {r.digits_ok}  close codes {r.bot_close_codes}",
    ]
    if r.agent:
        a = r.agent
        lines.append(
            f"agent              pongs {a.get('pongs')} of {a.get('pings')} pings (slowest "
            f"{a.get('pong_rtt_ms_max')} ms)  signed sockets {a.get('signed')}  conversations "
            f"{a.get('conversations')}  with caller_number {a.get('with_caller_number')}  "
            f"messages {a.get('events')}"
        )
    latency_note = "[steady window]"
    if audio_format == "ulaw_8000":
        latency_note = "[steady window; user_audio_chunk, not media]"
    elif audio_format is not None:
        latency_note = "[not measured: resampled chunks match no RTP payload]"
    lines += [
        f"node→caller RTP    streams {r.streams}  packets {r.packets}  lost {r.lost} "
        f"in {r.streams_lossy} streams",
        f"captures           out {r.capture_out}  in {r.capture_in}",
        f"steady window      {'n/a' if r.window_s is None else f'{r.window_s:.1f} s'}",
        f"node CPU           {cpu_text}",
        f"node memory        {_memory_text(r.memory)}",
        f"box CPU, % of one core: steady  {box or 'n/a'}",
        f"                        setup   {_shares_text(r.cpu_ramp_percent)}",
        f"                        idle    {_shares_text(r.cpu_idle_percent)}",
        f"pacing |error| ms  {percentile_text(r.pacing_ms, BUDGET_PACING_P99_MS)}",
        f"INVITE→180 ms      {percentile_text(r.ringing_ms, BUDGET_RINGING_P99_MS)}",
        f"INVITE→200 ms      {percentile_text(r.answer_ms, BUDGET_ANSWER_P99_MS)}",
        f"RTP in→bot media   {percentile_text(r.latency_ms, BUDGET_LATENCY_MS)}  {latency_note}",
        f"  head of bursts   {percentile_text(r.latency_head_ms, BUDGET_LATENCY_MS)}  "
        f"[first {BURST_HEAD} packets of each sipp burst; bursts "
        f"(gap > {BURST_GAP_S * 1000:g} ms): {percentile_text(r.burst_size)} packets]",
        f"  (whole run)      {percentile_text(r.latency_all_ms)}  "
        f"flows {counts.get('flows_matched')}/{counts.get('flows')}, "
        f"skipped {counts.get('ambiguous')} repeating payloads (< {AMBIGUOUS_S:g} s apart), "
        f"unmatched {counts.get('unmatched')}",
        f"clear→last stale   {_clear_text(r)}",
    ]
    if r.clear_mark_ms:
        lines.append(
            f"clear→mark echo    at the bot: median {statistics.median(r.clear_mark_ms):.1f} ms, "
            f"max {max(r.clear_mark_ms):.1f} ms"
        )
    log = r.node_log
    if log:
        lines.append(
            f"node log           WARNING {log.get('WARNING')}  ERROR {log.get('ERROR')}  "
            f"Traceback {log.get('Traceback')}"
        )
        lines += [f"  {line}" for line in log.get("examples", [])]
    if r.bot_violations:
        lines.append(f"bot saw           {r.bot_violations}")
    lines += slo_lines(r.record_slo)
    if r.baseline is not None:
        lines.append(ratio_line(r.cpu_ms_per_call_s, Baseline(**r.baseline)))
    if r.profile:
        lines.append(f"profile            {r.profile}")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def _memory_text(m: dict[str, float] | None) -> str:
    if not m:
        return "n/a"
    text = (
        f"RSS {m['rss_idle_mb']:.0f} MB idle, {m['rss_steady_mb']:.0f} MB steady: "
        f"{m['rss_mb_per_call']:.3f} MB per live call"
    )
    if "pss_mb_per_call" in m:
        text += f" ({m['pss_mb_per_call']:.3f} MB PSS)"
    return text + f"  budget {BUDGET_MB_PER_CALL:g}"


def _shares_text(shares: dict[str, float] | None) -> str:
    if not shares:
        return "n/a"
    captures = sum(v for k, v in shares.items() if k.startswith("capture"))
    named = {k: v for k, v in shares.items() if not k.startswith(("capture", "node."))}
    named["tshark"] = captures
    text = "  ".join(f"{k} {v:.0f}" for k, v in sorted(named.items()))
    if "node.user" in shares:
        text += (
            f"  [node: user {shares['node.user']:.0f} sys {shares['node.sys']:.0f}, "
            f"runnable but waiting for a CPU {shares['node.waiting']:.0f} % of the time]"
        )
    processes = [f"{k[8:]} {v:.0f}" for k, v in shares.items() if k.startswith("node.pid")]
    if processes:
        text += f"  [node processes (pid %): {', '.join(processes)}]"
    return text


def _cell(p: dict[str, float] | None) -> str:
    return "n/a" if p is None else f"{p['p50']:.2f} / {p['p99']:.2f}"


def _share(shares: dict[str, float] | None, name: str, digits: int = 0) -> str:
    value = (shares or {}).get(name)
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(reports: Sequence[RunReport]) -> str:
    """One column per N (and driver), one row per figure, with its budget (docs/performance.md);
    with ElevenLabs runs, their own rows, what their columns leave out, and the node CPU ratios."""

    def clear(r: RunReport) -> str:
        return "n/a" if not r.clear_ms else f"{max(r.clear_ms):.1f} (n={len(r.clear_ms)})"

    def cpu_ms(r: RunReport) -> str:
        return "n/a" if r.cpu_ms_per_call_s is None else f"{r.cpu_ms_per_call_s:.2f}"

    def naive(r: RunReport) -> str:
        base = None if r.baseline is None else r.baseline.get("cpu_ms_per_call_s")
        return "n/a" if base is None else f"{base:.2f}"

    def ratio(r: RunReport) -> str:
        base = None if r.baseline is None else r.baseline.get("cpu_ms_per_call_s")
        if base is None or r.cpu_ms_per_call_s is None or base <= 0:
            return "n/a"
        return f"{r.cpu_ms_per_call_s / base:.2f}x"

    def memory(r: RunReport) -> str:
        m = r.memory or {}
        if "rss_mb_per_call" not in m:
            return "n/a"
        pss = m.get("pss_mb_per_call")
        return f"{m['rss_mb_per_call']:.3f}" + ("" if pss is None else f" ({pss:.3f} PSS)")

    def bot_to_wire(r: RunReport) -> str:
        figure = (r.record_slo or {}).get("bot_to_wire_ms_p99")
        return "n/a" if figure is None else f"{figure['median']:.2f} / {figure['max']:.2f}"

    def tshark(r: RunReport) -> str:
        shares = r.cpu_percent or {}
        return f"{sum(v for k, v in shares.items() if k.startswith('capture')):.0f}"

    rows: list[tuple[str, Callable[[RunReport], str], str]] = [
        ("calls OK / failed", lambda r: f"{r.successful} / {r.failed}", "all OK"),
        ("calls at the bot", lambda r: str(r.bot_sessions), "= calls"),
        ("node CPU ms / call-s", cpu_ms, f"≤ {BUDGET_CPU_MS}"),
        ("naive bridge ms/call-s", naive, "same N, same box"),
        ("node / naive bridge", ratio, f"≤ {GOAL_RATIO:g}x"),
        ("node CPU % of a core", lambda r: _share(r.cpu_percent, "node"), ""),
        ("node MB / live call", memory, f"RSS ≤ {BUDGET_MB_PER_CALL:g}"),
        ("RTP lost node→caller", lambda r: f"{r.lost} of {r.packets}", "0"),
        ("pacing p50 / p99 ms", lambda r: _cell(r.pacing_ms), f"p99 ≤ {BUDGET_PACING_P99_MS:g}"),
        ("INVITE→180 p50/p99", lambda r: _cell(r.ringing_ms), f"p99 ≤ {BUDGET_RINGING_P99_MS:g}"),
        ("INVITE→200 p50/p99", lambda r: _cell(r.answer_ms), f"p99 ≤ {BUDGET_ANSWER_P99_MS:g}"),
        ("RTP in→media p50/p99", lambda r: _cell(r.latency_ms), f"p99 ≤ {BUDGET_LATENCY_MS:g}"),
        ("  head of sipp burst", lambda r: _cell(r.latency_head_ms), "(see note)"),
        ("  sipp burst size p50", lambda r: _share(r.burst_size, "p50"), "packets"),
        ("bot→wire p99, calls", bot_to_wire, f"median ≤ {BUDGET_BOT_TO_WIRE_P99_MS:g}"),
        ("clear→last stale ms", clear, f"≤ {BUDGET_CLEAR_MS:g}"),
        ("node CPU % idle", lambda r: _share(r.cpu_idle_percent, "node", 1), "no calls"),
        ("node user % / sys %", lambda r: _share(r.cpu_percent, "node.user") + " / "
         + _share(r.cpu_percent, "node.sys"), ""),
        ("node waiting for CPU", lambda r: _share(r.cpu_percent, "node.waiting", 1), "% of wall"),
        ("moto CPU % in setup", lambda r: _share(r.cpu_ramp_percent, "moto"), ""),
        ("bot CPU %", lambda r: _share(r.cpu_percent, "bot"), ""),
        ("sipp CPU %", lambda r: _share(r.cpu_percent, "sipp"), ""),
        ("tshark CPU %", tshark, ""),
        ("others' CPU %", lambda r: _share(r.cpu_percent, "others"), "not ours"),
        ("box CPU % (of 200)", lambda r: _share(r.cpu_percent, "box"), ""),
    ]  # fmt: skip
    drivers = list(dict.fromkeys(r.driver for r in reports))
    native = drivers != ["twilio"]
    if native:

        def pongs(r: RunReport) -> str:
            return "n/a" if not r.agent else f"{r.agent.get('pongs')} / {r.agent.get('pings')}"

        rows[2:2] = [("all 5 digits at bot", lambda r: str(r.digits_ok), "= calls")]
        rows.append(("agent pongs / pings", pongs, "all answered"))
    cells = [[fn(r) for r in reports] for _, fn, _ in rows]
    width = max(14, *(len(c) for line in cells for c in line)) + 2
    head = f"{'N concurrent calls':<24}" + "".join(f"{r.calls:>{width}}" for r in reports)
    lines = [head + "   budget (docs/performance.md)"]
    if native:
        lines.append(
            f"{'driver':<24}" + "".join(f"{driver_label(r.driver):>{width}}" for r in reports)
        )
    lines.append("-" * (len(head) + 22))
    for (name, _, budget), line in zip(rows, cells, strict=True):
        lines.append(f"{name:<24}" + "".join(f"{c:>{width}}" for c in line) + f"   {budget}")
    lines.append("CPU rows: % of one core over the steady window (every call up)")
    lines += driver_notes(drivers)
    ratios = ratio_lines(reports)
    if ratios:
        lines += ["", *ratios]
    return "\n".join(lines)


def passes(r: RunReport) -> bool:
    """--find-max: every call OK, no loss node → caller, pacing p99 within the budget."""
    pacing = r.pacing_ms
    return (
        r.failed == 0
        and r.successful == r.calls
        and r.lost == 0
        and pacing is not None
        and pacing["p99"] <= BUDGET_PACING_P99_MS
    )


def print_profile(path: str, lines: int = 25) -> None:
    """The top of a --profile file: cProfile's own table, or for the sampler's collapsed stacks
    the frames by self and by inclusive CPU (what a flame graph shows, as text)."""
    if not path.endswith(".txt"):
        import pstats

        try:
            stats = pstats.Stats(path)
        except (OSError, TypeError, EOFError) as error:
            print(f"profile {path}: {error}")
            return
        stats.sort_stats("tottime").print_stats(lines)
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    try:
        text = Path(path).read_text()
    except OSError as error:
        print(f"profile {path}: {error}")
        return
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
    if not total:
        print(f"profile {path}: no samples")
        return
    print(f"profile {path}: {total} samples of 1 ms of node CPU")
    for title, table_ in (("self", own), ("inclusive", inclusive)):
        print(f"  top {lines} by {title} CPU:")
        for name, count in sorted(table_.items(), key=lambda kv: -kv[1])[:lines]:
            print(f"    {100 * count / total:5.1f} %  {name}")
