"""What a bench/calls.py run measured, worked out after the run from what it left behind.

Why after the run and apart from it: while calls are up, the bench's own process must cost the
box as little as possible (it shares 2 cores with the node it measures), so the run only starts
and stops peers; the figures come afterwards from the two captures, sipp's trace, the bot's
session lines, the CPU samples and the node's log. Each figure's source is listed in
bench/calls.py's docstring.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.calls_wire import burst_positions, match_latency, read_capture_in
from bench.lib.calls_drivers import (
    BOT_SCRIPT,
    BenchPeer,
    agent_summary,
    el_format,
    read_capture_in_elevenlabs,
)
from bench.lib.cpu_sampling import CpuSampler
from bench.lib.sipp_load import (
    Plan,
    call_seconds,
    pacing_in_window,
    percentile_dict,
    steady_window,
)
from bench.lib.soak_sampling import NodeSampler
from tests.interop.capture import (
    AUDIO_PAYLOAD_TYPES,
    CaptureSummary,
    RtpSeen,
    percentiles,
    read_rtp,
    split_streams,
    stream_stats,
)
from tests.interop.edge import EdgeNode
from tests.interop.sipp import SippResult, SippRun, call_timings

BURST_HEAD = 10  # packets at the head of a sipp burst: not queued behind the rest
MIN_TONE_BYTES = 16  # a cut payload shorter than this is not compared with the tone
LOG_EXAMPLES = 5  # distinct warning/error lines of the node's log shown per run
MAX_LOG_BYTES = 50 * 1024 * 1024


@dataclass
class RunReport:
    calls: int
    sipp_rc: int | None
    successful: int
    failed: int
    retransmissions: int
    bot_sessions: int
    bot_sessions_with_media: int
    bot_violations: list[str]
    bot_close_codes: dict[str, int]
    digits_ok: int  # sessions that received all five digits of uac_load.xml
    streams: int
    packets: int
    lost: int
    streams_lossy: int
    capture_out: dict[str, int | None]
    capture_in: dict[str, int | None]
    window_s: float | None
    window_calls: float | None
    cpu_ms_per_call_s: float | None
    cpu_percent: dict[str, float] | None  # % of one core per process tree, steady window
    cpu_idle_percent: dict[str, float] | None  # before the first call
    cpu_ramp_percent: dict[str, float] | None  # first INVITE to the last answer
    pacing_ms: dict[str, float] | None
    ringing_ms: dict[str, float] | None
    answer_ms: dict[str, float] | None
    latency_ms: dict[str, float] | None  # steady window
    latency_all_ms: dict[str, float] | None
    latency_head_ms: dict[str, float] | None  # the first BURST_HEAD packets of each sipp burst
    burst_size: dict[str, float] | None  # packets per sipp burst (caller → node)
    latency_counts: dict[str, int]
    clear_ms: list[float]  # per clear call: last tone packet after the clear (negative: none)
    clear_stale_packets: list[int]
    clear_mark_ms: list[float]  # clear → the dropped mark's echo at the bot
    clear_calls: int
    node_rc: int | None
    node_log: dict[str, Any]
    notes: list[str]
    profile: str | None = None
    driver: str = "twilio"  # bench/calls_drivers.py DRIVERS
    agent: dict[str, Any] = field(default_factory=dict)  # the ElevenLabs fake's own counts
    baseline: dict[str, Any] | None = None  # bench/lib/naive_baseline.py's Baseline, same N
    memory: dict[str, float] | None = None  # node RSS/PSS idle and steady, MB per live call
    record_slo: dict[str, dict[str, float]] | None = None  # calls_slo.summarise of the records


def memory_per_call(
    memory: NodeSampler,
    idle: tuple[float, float],
    window: tuple[float, float],
    calls: float,
) -> dict[str, float] | None:
    """The node tree's RSS (and PSS) with no call and over the steady window (medians of the
    samples in each), and what each live call adds: (steady - idle) / calls. PSS counts the
    pages media workers share once; RSS counts them in every worker (the conservative figure the
    budget is stated in, docs/performance.md)."""
    before = memory.between(*idle)
    during = memory.between(*window)
    if not before or not during or calls <= 0:
        return None
    idle_rss = statistics.median(s.rss_kb for s in before) / 1024
    steady_rss = statistics.median(s.rss_kb for s in during) / 1024
    out = {
        "rss_idle_mb": round(idle_rss, 1),
        "rss_steady_mb": round(steady_rss, 1),
        "rss_mb_per_call": round((steady_rss - idle_rss) / calls, 3),
    }
    pss_before = [s.pss_kb for s in before if s.pss_kb is not None]
    pss_during = [s.pss_kb for s in during if s.pss_kb is not None]
    if pss_before and pss_during:
        pss = (statistics.median(pss_during) - statistics.median(pss_before)) / 1024
        out["pss_mb_per_call"] = round(pss / calls, 3)
    return out


def analyse(
    plan: Plan,
    *,
    result: SippResult,
    summaries: list[CaptureSummary],
    captures: list[Path],
    sipp: SippRun,
    node: EdgeNode,
    bot: BenchPeer,
    sampler: CpuSampler,
    node_rc: int | None,
    notes: list[str],
    profile: str | None,
    idle: tuple[float, float] | None,
    driver: str = "twilio",
    memory: NodeSampler | None = None,
) -> RunReport:
    out_path, in_path = captures
    print(
        f"[{plan.calls} calls] reading {out_path.stat().st_size / 1e6:.0f} + "
        f"{in_path.stat().st_size / 1e6:.0f} MB of capture",
        flush=True,
    )
    timings = call_timings(result.messages)
    window = steady_window(timings)
    if window is None:
        notes.append("no steady window (calls failed, or --duration too short): whole run used")

    # Node → caller: loss and pacing.
    out_packets = read_rtp(out_path, payload=True)
    by_stream = {
        key: pkts
        for key, pkts in split_streams(out_packets).items()
        if key.dst[1] == sipp.media_port
        and any(p.payload_type in AUDIO_PAYLOAD_TYPES for p in pkts)
    }
    stats = [stream_stats(k, v) for k, v in by_stream.items()]
    errors, _ = pacing_in_window(by_stream, window)

    # CPU.
    cpu_ms = window_calls = None
    shares = None if window is None else sampler.shares(*window)
    if shares is not None:
        t0, t1, cpu_percent = shares
        load = call_seconds(timings, t0, t1)
        if load > 0 and "node" in cpu_percent:
            cpu_ms = cpu_percent["node"] / 100 * (t1 - t0) * 1000 / load
            window_calls = load / (t1 - t0)

    memory_figures = None
    if memory is not None and idle is not None and window is not None:
        memory_figures = memory_per_call(memory, idle, window, window_calls or plan.calls)

    # The node idle, and while calls were being set up (INVITEs to the last answer).
    idle_shares = None if idle is None else sampler.shares(*idle)
    answered = [t.invite_at + t.answered_ms / 1000 for t in timings if t.answered_ms is not None]
    ramp_shares = None
    if timings and answered:
        ramp_shares = sampler.shares(min(t.invite_at for t in timings), max(answered))

    # Into the node: RTP in → bot media.
    audio_format = el_format(driver)
    if audio_format is None:
        wire = read_capture_in(
            in_path,
            caller_media_port=sipp.media_port,
            node_sip_port=node.sip_port,
            bot_port=bot.port,
        )
    else:
        wire = read_capture_in_elevenlabs(
            in_path,
            caller_media_port=sipp.media_port,
            node_sip_port=node.sip_port,
            bot_port=bot.port,
            match_audio=audio_format == "ulaw_8000",
        )
    match = match_latency(wire)
    in_window = [s for s in match.samples if window is None or window[0] <= s.sent <= window[1]]
    positions = burst_positions(wire)
    head = [s.ms for s in in_window if positions.get(s.rtp_at, 0) < BURST_HEAD]
    if match.broken_flows:
        notes.append(
            f"{match.broken_flows} WebSocket flows had a capture gap: their later media are "
            "not matched"
        )

    # The bot's view, and clear → last stale packet.
    sessions = bot.sessions()
    clear_ms, stale, mark_ms = clear_figures(sessions, wire.answers, by_stream)
    clear_sessions = [s for s in sessions if s.get("clear_call")]
    if clear_sessions and len(clear_ms) < len(clear_sessions):
        notes.append(
            f"{len(clear_sessions) - len(clear_ms)} of {len(clear_sessions)} clear calls could "
            "not be measured (no clear sent, or no tone seen on the wire)"
        )
    violations = sorted({v for s in sessions for v in s.get("violations", [])})
    codes: dict[str, int] = {}
    for s in sessions:
        code = str(s.get("close_code"))
        codes[code] = codes.get(code, 0) + 1
    row = result.stats
    return RunReport(
        calls=plan.calls,
        sipp_rc=result.returncode,
        successful=row.successful if row else 0,
        failed=row.failed if row else 0,
        retransmissions=row.retransmissions if row else 0,
        bot_sessions=sum(1 for s in sessions if s.get("start_at")),
        bot_sessions_with_media=sum(1 for s in sessions if s.get("media_in")),
        bot_violations=violations[:LOG_EXAMPLES],
        bot_close_codes=codes,
        digits_ok=sum(1 for s in sessions if s.get("digits") == "1234#"),
        streams=len(stats),
        packets=sum(s.packets for s in stats),
        lost=sum(s.lost for s in stats),
        streams_lossy=sum(1 for s in stats if s.lost),
        capture_out=_summary(summaries[0]),
        capture_in=_summary(summaries[1]),
        window_s=None if window is None else window[1] - window[0],
        window_calls=window_calls,
        cpu_ms_per_call_s=cpu_ms,
        cpu_percent=_rounded(shares),
        cpu_idle_percent=_rounded(idle_shares),
        cpu_ramp_percent=_rounded(ramp_shares),
        pacing_ms=percentile_dict(percentiles(errors)),
        ringing_ms=percentile_dict(
            percentiles(t.ringing_ms for t in timings if t.ringing_ms is not None)
        ),
        answer_ms=percentile_dict(
            percentiles(t.answered_ms for t in timings if t.answered_ms is not None)
        ),
        latency_ms=percentile_dict(percentiles(s.ms for s in in_window)),
        latency_head_ms=percentile_dict(percentiles(head)),
        burst_size=_burst_sizes(positions, window),
        latency_all_ms=percentile_dict(percentiles(s.ms for s in match.samples)),
        latency_counts={
            "flows": match.flows,
            "flows_matched": match.matched_flows,
            "media_matched": len(match.samples),
            "ambiguous": match.ambiguous,
            "unmatched": match.unmatched,
        },
        clear_ms=clear_ms,
        clear_stale_packets=stale,
        clear_mark_ms=mark_ms,
        clear_calls=len(clear_sessions),
        node_rc=node_rc,
        memory=memory_figures,
        node_log=node_log_summary(node.process.log_path),
        notes=notes,
        profile=profile,
        driver=driver,
        agent={} if audio_format is None else agent_summary(sessions),
    )


def _burst_sizes(
    positions: dict[float, int], window: tuple[float, float] | None
) -> dict[str, float] | None:
    """Sizes of the caller → node bursts that started inside the window."""
    sizes: list[float] = []
    for t, position in sorted(positions.items()):
        if window is not None and not window[0] <= t <= window[1]:
            continue
        if position == 0:
            sizes.append(1.0)
        elif sizes:
            sizes[-1] += 1
    return percentile_dict(percentiles(sizes))


def _rounded(shares: tuple[float, float, dict[str, float]] | None) -> dict[str, float] | None:
    return None if shares is None else {k: round(v, 1) for k, v in shares[2].items()}


def _summary(summary: CaptureSummary) -> dict[str, int | None]:
    return {"captured": summary.captured, "dropped": summary.dropped}


def tone_prefix() -> bytes:
    """The bot's tone frame (the bot module is a script; its encoder is imported by path)."""
    sys.path.insert(0, str(BOT_SCRIPT.parent))
    try:
        from echo_bot_fast import tone_frame  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BOT_SCRIPT.parent))
    return bytes(tone_frame())


def clear_figures(
    sessions: Iterable[dict[str, Any]],
    answers: dict[str, int],
    streams: dict[Any, list[RtpSeen]],
) -> tuple[list[float], list[int], list[float]]:
    """Per clear call: ms from the clear to the last tone packet, tone packets sent after the
    clear, and ms from the clear to the echo of the mark it dropped (at the bot)."""
    tone = tone_prefix()
    by_port: dict[int, list[RtpSeen]] = {}
    for key, packets in streams.items():
        by_port.setdefault(key.src[1], []).extend(packets)
    last_ms: list[float] = []
    stale: list[int] = []
    mark_ms: list[float] = []
    for session in sessions:
        clear_at = session.get("clear_at")
        if not session.get("clear_call") or clear_at is None:
            continue
        port = answers.get(str(session.get("from_number", "")))
        packets = by_port.get(port, []) if port is not None else []
        tones = [
            p.time
            for p in packets
            if len(p.payload) >= MIN_TONE_BYTES and tone.startswith(p.payload)
        ]
        if not tones:
            continue
        last_ms.append((max(tones) - clear_at) * 1000)
        stale.append(sum(1 for t in tones if t > clear_at))
        if session.get("mark_echo_at") is not None:
            mark_ms.append((session["mark_echo_at"] - clear_at) * 1000)
    return last_ms, stale, mark_ms


def node_log_summary(path: Path) -> dict[str, Any]:
    """Counts of WARNING/ERROR lines in the node's log and a few distinct examples."""
    try:
        with path.open("rb") as file:
            text = file.read(MAX_LOG_BYTES).decode(errors="replace")
    except OSError:
        return {}
    counts = {"WARNING": 0, "ERROR": 0, "Traceback": 0}
    examples: dict[str, str] = {}
    for line in text.splitlines():
        for level in counts:
            if f" {level} " in line or line.startswith(level):
                counts[level] += 1
                # The same message for another call differs only in ids: keep one per logger+start.
                parts = line.split(" ", 4)
                shape = " ".join(parts[2:4]) + " " + (parts[4][:40] if len(parts) > 4 else "")
                if len(examples) < LOG_EXAMPLES and shape not in examples:
                    examples[shape] = line[:300]
    return {**counts, "examples": list(examples.values())}
