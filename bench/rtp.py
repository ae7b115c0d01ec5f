"""N concurrent calls with RTP through the edge node's echo application, measured from outside.

Run: .venv/bin/python bench/rtp.py [--calls 200] [--duration 30] [--workers 1 [2]] [--rate 20]
         [--find-max] [--inbound] [--target HOST:PORT [--target-pid PID]] [--keep DIR] [--json F]

The node (``agera edge``, echo on, loopback trusted) runs as a subprocess; ``--target`` points
the load at any other SIP echo instead (sipp ``uas_echo.xml -rtp_echo`` was used to validate
this script). sipp ``uac_load.xml`` places the calls: each streams looped speech at 50 pps from
one local port, plays RFC 4733 digits at the end and hangs up. tshark captures only the
node → caller direction, headers only (``-s 96 -F pcap``), so it keeps up.

Reported, and why each is measured where it is (the budgets are docs/performance.md's):
* max streams with zero loss: every node → caller stream is checked for sequence gaps
  (RFC 3550 §A.3); if one was lost, the figure is how many streams flowed before the first
  loss. ``--find-max`` ramps calls up slowly and holds them, so that moment is the knee.
* pacing error: each outbound packet's departure against the 20 ms grid given by its RTP
  timestamp (capture time on lo = departure time), p50/p99/max over the steady window, and the
  inter-departure deltas. Budget: p99 <= 2 ms at 200 calls.
* edge CPU per call-second: utime+stime of the node and all its descendants
  (/proc/<pid>/stat) over the steady window (every call up), divided by the call-seconds in it.
  Budget: <= 1.5 ms per *bridged* call-second; the echo path does less than a bridge.
* call setup: INVITE → 180 and INVITE → 200 p50/p99 from sipp's -trace_shortmsg.
  Budget: INVITE → 180 p99 <= 10 ms, → 200 p99 <= 50 ms.
* sipp's own counters (successful, failed, retransmissions) and tshark's dropped count (a
  capture drop is not a node loss).
* ``--inbound`` also captures caller → node (twice the packets): gaps in what sipp sent, and
  per call how many packets the node did not send back (the echo's shortfall).

Reference floor on this 2-core box: the per-packet costs of an RTP <-> WebSocket bridge
add up to about 1.2 ms CPU per call-second with uvloop (1.8 ms stock asyncio); a whole
bridge measured about 3 ms (0.3 % of a core per call). sipp's own sender is not on the
grid: against sipp's ``-rtp_echo`` this script measures a pacing p99 of about 18 ms, which
is sipp (it sends at 20.1 ms and catches up with a 16 ms step). sipp, tshark and the node
share the cores: compare runs on the same machine only. play_dtmf uses a raw socket: run
as root (or with CAP_NET_RAW), as CI does.

The CPU sampler, the run's plan and steady window, the pacing and the budget are shared with
bench/calls.py (bench/lib: cpu_sampling.py, sipp_load.py, budget.py), so that the two benches
measure the node the same way.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib.budget import (
    BUDGET_ANSWER_P99_MS,
    BUDGET_CPU_MS,
    BUDGET_PACING_P99_MS,
    BUDGET_RINGING_P99_MS,
    BUDGET_STREAMS,
)
from bench.lib.cpu_sampling import CLOCK_TICKS, SAMPLE_PERIOD_S, CpuSampler
from bench.lib.sipp_load import (
    DTMF_TAIL_S,
    SCENARIO,
    SIPP_TIMEOUT_MARGIN_S,
    Plan,
    active_calls,
    call_seconds,
    interrupt,
    pacing_in_window,
    percentile_dict,
    percentile_text,
    steady_window,
)
from tests.interop.capture import (
    AUDIO_PAYLOAD_TYPES,
    LOAD_SNAPLEN,
    Capture,
    CaptureSummary,
    RtpSeen,
    StreamKey,
    StreamStats,
    first_loss_time,
    max_concurrent_before,
    percentiles,
    read_rtp,
    split_streams,
    stream_stats,
)
from tests.interop.edge import WORKERS_ENV, EdgeNode
from tests.interop.media import MediaFiles, make_media
from tests.interop.ports import HOST
from tests.interop.process import PeerError
from tests.interop.sipp import CallTiming, SippResult, SippRun, call_timings

SERVICE = "echo"
FIND_MAX_BUCKET_S = 5.0
DEFAULT_RATE = 20.0  # calls per second while ramping up
FIND_MAX_RATE = 5.0
ECHO_TAIL_PACKETS = 10  # in flight when the caller hangs up: not echoed, not lost


# -- one run ------------------------------------------------------------------------------------


@dataclass
class RunReport:
    label: str
    calls: int
    sipp_rc: int | None
    successful: int
    failed: int
    retransmissions: int
    streams: int
    streams_lossy: int
    packets: int
    lost: int
    timestamp_gaps: int
    max_zero_loss_streams: int
    first_loss_at_s: float | None
    capture: dict[str, int | None]
    window_s: float | None
    window_calls: float | None
    cpu_ms_per_call_s: float | None
    cpu_percent: float | None
    pacing_ms: dict[str, float] | None
    delta_ms: dict[str, float] | None
    ringing_ms: dict[str, float] | None
    answer_ms: dict[str, float] | None
    node_rc: int | None
    curve: list[tuple[float, float]]  # (active calls, CPU % of one core) per bucket
    notes: list[str]
    node_processes: int | None = None  # most processes seen in the node's tree
    inbound_packets: int | None = None  # --inbound: audio packets the caller sent
    inbound_lost: int | None = None  # sequence gaps at the sender (sipp skipped, not the node)
    echo_missing: dict[str, float] | None = None  # per call: audio packets in - audio packets out
    echo_short_calls: int | None = None  # calls short by more than ECHO_TAIL_PACKETS


def cpu_curve(
    sampler: CpuSampler, timings: Sequence[CallTiming], name: str
) -> list[tuple[float, float]]:
    """(calls up at the bucket's middle, CPU % of one core) per FIND_MAX_BUCKET_S bucket."""
    curve = []
    samples = [(x.time, x.ticks[name]) for x in sampler.samples if name in x.ticks]
    step = max(1, round(FIND_MAX_BUCKET_S / SAMPLE_PERIOD_S))
    for (t0, c0), (t1, c1) in zip(samples[::step], samples[step::step], strict=False):
        if t1 > t0:
            cpu = (c1 - c0) / CLOCK_TICKS / (t1 - t0) * 100
            curve.append((float(active_calls(timings, (t0 + t1) / 2)), round(cpu, 1)))
    return curve


def run_once(
    plan: Plan,
    *,
    workdir: Path,
    media: MediaFiles,
    workers: int | None,
    target: str | None,
    target_pid: int | None,
    inbound: bool = False,
    node_command: Sequence[str] | None = None,
) -> RunReport:
    label = f"workers={workers}" if target is None else f"target={target}"
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    node: EdgeNode | None = None
    sipp: SippRun | None = None
    capture: Capture | None = None
    sampler: CpuSampler | None = None
    node_rc: int | None = None
    try:
        if target is None:
            node = EdgeNode(
                workdir / "edge", max_calls=plan.calls, workers=workers, command=node_command
            )
            node.start()
            target, target_pid = node.address, node.pid
        sipp = SippRun(
            SCENARIO,
            workdir=media.directory,
            artifacts=workdir / "sipp",
            remote=target,
            service=SERVICE,
            duration_ms=plan.call_ms,
            calls=plan.calls,
            rate=plan.rate,
            limit=plan.calls,
            timeout_s=plan.total_s + SIPP_TIMEOUT_MARGIN_S,
            trace_messages=False,
            stat_period_s=5,
        )
        direction = "" if inbound else "dst "
        capture = Capture(
            workdir / "node_to_caller.pcap",
            capture_filter=f"udp and {direction}host {HOST} and {direction}port {sipp.media_port}",
            snaplen=LOAD_SNAPLEN,
            pcap_format=True,
        )
        capture.start()
        pids = {} if target_pid is None else {"node": target_pid}
        sampler = CpuSampler(pids)
        sampler.start()
        print(
            f"[{label}] {plan.calls} calls at {plan.rate:g}/s to {target}, each "
            f"{plan.call_ms / 1000:.0f} s + {DTMF_TAIL_S} s DTMF; about {plan.total_s:.0f} s",
            flush=True,
        )
        sipp.start()
        pids["sipp"] = sipp.process.pid
        pids["tshark"] = capture.process.pid
        result: SippResult = sipp.wait(plan.total_s + SIPP_TIMEOUT_MARGIN_S + 15)
    finally:
        if sampler is not None:
            sampler.stop()
        if sipp is not None:
            sipp.stop()
        summary = capture.stop() if capture is not None else CaptureSummary(None, None)
        if node is not None:
            node_rc = node.stop()
    if node_rc not in (None, 0):
        notes.append(f"the node exited with {node_rc} on SIGTERM (0 expected)")
    report = analyse(
        plan, label, result, summary, capture.path, sipp.media_port, sampler, node_rc, notes
    )
    if workers is not None and (report.node_processes or 0) < workers:
        report.notes.append(
            f"{workers} workers asked ({WORKERS_ENV}) but the node ran "
            f"{report.node_processes} process(es): the setting is not honoured"
        )
    return report


def analyse(
    plan: Plan,
    label: str,
    result: SippResult,
    summary: CaptureSummary,
    capture_path: Path,
    caller_port: int,
    sampler: CpuSampler,
    node_rc: int | None,
    notes: list[str],
) -> RunReport:
    print(f"[{label}] reading {capture_path.stat().st_size / 1e6:.0f} MB of capture", flush=True)
    timings = call_timings(result.messages)
    audio_streams = {
        key: pkts
        for key, pkts in split_streams(read_rtp(capture_path, payload=False)).items()
        if any(p.payload_type in AUDIO_PAYLOAD_TYPES for p in pkts)
    }
    streams = {k: v for k, v in audio_streams.items() if k.dst[1] == caller_port}
    sent = {k: v for k, v in audio_streams.items() if k.src[1] == caller_port}
    stats: list[StreamStats] = [stream_stats(k, v) for k, v in streams.items()]
    loss_at = first_loss_time(stats)
    zero_loss = max_concurrent_before(stats, loss_at if loss_at is not None else float("inf"))
    window = steady_window(timings)
    if window is None:
        notes.append("no steady window (calls failed, or --duration too short): whole run used")
    errors, deltas = pacing_in_window(streams, window)
    cpu_ms = cpu_percent = window_calls = None
    measured = None if window is None else sampler.cpu_between("node", *window)
    if measured is not None:
        cpu_s, t0, t1 = measured
        load = call_seconds(timings, t0, t1)
        if load > 0:
            cpu_ms = cpu_s * 1000 / load
            cpu_percent = cpu_s / (t1 - t0) * 100
            window_calls = load / (t1 - t0)
    if "node" not in sampler.pids:
        notes.append("no node pid (--target without --target-pid): CPU not measured")
    start = min((t.invite_at for t in timings), default=0.0)
    stats_row = result.stats
    shortfall = echo_shortfall(sent, streams) if sent else None
    return RunReport(
        label=label,
        calls=plan.calls,
        sipp_rc=result.returncode,
        successful=stats_row.successful if stats_row else 0,
        failed=stats_row.failed if stats_row else 0,
        retransmissions=stats_row.retransmissions if stats_row else 0,
        streams=len(stats),
        streams_lossy=sum(1 for s in stats if s.lost),
        packets=sum(s.packets for s in stats),
        lost=sum(s.lost for s in stats),
        timestamp_gaps=sum(s.timestamp_gaps for s in stats),
        max_zero_loss_streams=zero_loss,
        first_loss_at_s=None if loss_at is None else loss_at - start,
        capture={"captured": summary.captured, "dropped": summary.dropped},
        window_s=None if window is None else window[1] - window[0],
        window_calls=window_calls,
        cpu_ms_per_call_s=cpu_ms,
        cpu_percent=cpu_percent,
        pacing_ms=percentile_dict(percentiles(errors)),
        delta_ms=percentile_dict(percentiles(deltas)),
        ringing_ms=percentile_dict(
            percentiles(t.ringing_ms for t in timings if t.ringing_ms is not None)
        ),
        answer_ms=percentile_dict(
            percentiles(t.answered_ms for t in timings if t.answered_ms is not None)
        ),
        node_rc=node_rc,
        curve=cpu_curve(sampler, timings, "node")
        if plan.find_max and "node" in sampler.pids
        else [],
        notes=notes,
        node_processes=max((x.sizes.get("node", 0) for x in sampler.samples), default=None),
        inbound_packets=sum(_audio_count(v) for v in sent.values()) if sent else None,
        inbound_lost=sum(stream_stats(k, v).lost for k, v in sent.items()) if sent else None,
        echo_missing=percentile_dict(percentiles(shortfall)) if shortfall else None,
        echo_short_calls=sum(1 for m in shortfall if m > ECHO_TAIL_PACKETS) if shortfall else None,
    )


def _audio_count(packets: Iterable[RtpSeen]) -> int:
    return sum(1 for p in packets if p.payload_type in AUDIO_PAYLOAD_TYPES)


def echo_shortfall(
    sent: dict[StreamKey, list[RtpSeen]], echoed: dict[StreamKey, list[RtpSeen]]
) -> list[float]:
    """Per caller stream: audio packets sent to the node minus packets it sent back.

    A caller's stream pairs with the node's stream from the port it sent to (symmetric RTP,
    one port per call); when one port serves several calls (sipp's echo), SSRCs pair them.
    Every packet sent back counts, RFC 4733 events included: the node echoes DTMF as events
    sent in place of the audio packets of that time. A few packets still in flight at hangup
    are expected (ECHO_TAIL_PACKETS).
    """
    by_port: dict[int, list[StreamKey]] = {}
    for key in echoed:
        by_port.setdefault(key.src[1], []).append(key)
    missing = []
    for key, packets in sent.items():
        candidates = by_port.get(key.dst[1], [])
        if len(candidates) > 1:
            candidates = [k for k in candidates if k.ssrc == key.ssrc]
        back = len(echoed[candidates[0]]) if len(candidates) == 1 else 0
        missing.append(float(_audio_count(packets) - back))
    return missing


# -- output -------------------------------------------------------------------------------------


def render(report: RunReport) -> str:
    r = report
    cpu = (
        "n/a"
        if r.cpu_ms_per_call_s is None
        else f"{r.cpu_ms_per_call_s:.2f} ms per call-second ({r.cpu_percent:.0f} % of one core "
        f"at {r.window_calls:.0f} calls)  budget {BUDGET_CPU_MS} per bridged call-second"
    )
    zero = (
        f"{r.max_zero_loss_streams} (no loss)"
        if r.first_loss_at_s is None
        else f"{r.max_zero_loss_streams} (first loss {r.first_loss_at_s:.1f} s into the run)"
    )
    lines = [
        f"== {r.label}: {r.calls} calls",
        f"sipp               rc {r.sipp_rc}  successful {r.successful}  failed {r.failed}  "
        f"retransmissions {r.retransmissions}",
        f"streams node→caller {r.streams}  packets {r.packets}  lost {r.lost} "
        f"in {r.streams_lossy} streams  timestamp gaps {r.timestamp_gaps} frames",
        f"capture            captured {r.capture['captured']}  dropped {r.capture['dropped']}",
        f"max zero-loss      {zero}  (budget ≥ {BUDGET_STREAMS} on this box)",
        f"steady window      {'n/a' if r.window_s is None else f'{r.window_s:.1f} s'}",
        f"pacing |error| ms  {percentile_text(r.pacing_ms, BUDGET_PACING_P99_MS)}",
        f"inter-departure ms {percentile_text(r.delta_ms)}",
        f"edge CPU           {cpu}  [{r.node_processes} process(es) in the node's tree]",
        f"INVITE→180 ms      {percentile_text(r.ringing_ms, BUDGET_RINGING_P99_MS)}",
        f"INVITE→200 ms      {percentile_text(r.answer_ms, BUDGET_ANSWER_P99_MS)}",
    ]
    if r.curve:
        lines.append(
            "calls up → CPU % of one core: " + ", ".join(f"{c:.0f}→{p}" for c, p in r.curve)
        )
    if r.inbound_packets is not None:
        lines.append(
            f"caller→node        packets {r.inbound_packets}  skipped by sipp {r.inbound_lost}  "
            f"echo shortfall per call {percentile_text(r.echo_missing)}  "
            f"calls short by > {ECHO_TAIL_PACKETS}: {r.echo_short_calls}"
        )
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="concurrent calls (default 200)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds all calls are up together (30)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="media workers; several run in turn"
    )
    parser.add_argument("--rate", type=float, help=f"new calls per second ({DEFAULT_RATE:g})")
    parser.add_argument(
        "--find-max",
        action="store_true",
        help=f"ramp slowly ({FIND_MAX_RATE:g}/s unless --rate) to --calls; report the knee",
    )
    parser.add_argument(
        "--node-command",
        help="run the node with this command line instead of `python -m infra.cli edge`",
    )
    parser.add_argument("--target", help="HOST:PORT of a running SIP echo instead of the node")
    parser.add_argument("--target-pid", type=int, help="its pid, to measure its CPU")
    parser.add_argument(
        "--inbound",
        action="store_true",
        help="also capture caller→node, to tell sender gaps from node loss (twice the packets)",
    )
    parser.add_argument("--keep", type=Path, help="keep captures and logs in this directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.duration <= 0:
        parser.error("--calls must be >= 1 and --duration > 0")
    if args.target is not None and not args.target.startswith(("127.", "[::1]")):
        parser.error("--target must be a loopback address (127.0.0.1:PORT)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    rate = args.rate or (FIND_MAX_RATE if args.find_max else DEFAULT_RATE)
    plan = Plan(calls=args.calls, rate=rate, duration_s=args.duration, find_max=args.find_max)
    workers: list[int | None] = [None] if args.target else list(args.workers)
    with tempfile.TemporaryDirectory(prefix="bench-rtp-") as scratch:
        root = args.keep or Path(scratch)
        media = make_media(root / "media")
        reports = []
        try:
            for count in workers:
                run_dir = root / (f"workers-{count}" if count is not None else "target")
                report = run_once(
                    plan,
                    workdir=run_dir,
                    media=media,
                    workers=count,
                    target=args.target,
                    target_pid=args.target_pid,
                    inbound=args.inbound,
                    node_command=shlex.split(args.node_command) if args.node_command else None,
                )
                print(render(report), flush=True)
                reports.append(report)
        except PeerError as exc:
            print(f"bench/rtp.py: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                "bench/rtp.py: interrupted; every process it started was stopped", file=sys.stderr
            )
            return 130
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2))
        if args.keep:
            print(f"captures and logs kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
