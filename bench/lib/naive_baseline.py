"""The naive bridge's CPU per call-second, measured beside the node in one bench/calls.py run.

The node's CPU budget is a ratio: node CPU per bridged call-second over that of
bench/peers/naive_bridge.py (an afternoon's RTP <-> Twilio-stream bridge), both at N calls with
the same echo bot, on the same box, minutes apart. The ratio holds from machine to machine where
an absolute figure does not (docs/performance.md).

The baseline gets the same load the node gets: N streams of 50 packets a second
(bench/peers/rtp_callers.py, since the bridge has no SIP), each echoed by
bench/peers/echo_bot_fast.py. Its CPU is read from /proc by the same sampler over the steady
window: from SETTLE_S after the first packet to SETTLE_S before the last.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.lib.calls_drivers import BenchBot
from bench.lib.cpu_sampling import CpuSampler
from tests.interop.process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
BRIDGE = REPO_ROOT / "bench" / "peers" / "naive_bridge.py"
CALLERS = REPO_ROOT / "bench" / "peers" / "rtp_callers.py"
SETTLE_S = 2.0  # excluded at each end of the sending window
CONNECT_TIMEOUT_S = 60.0  # N bot connections opened one after another
GOAL_RATIO = 0.5  # node CPU per call-second over the naive bridge's, at most


@dataclass
class Baseline:
    calls: int
    loop: str  # "asyncio" or "uvloop"
    cpu_ms_per_call_s: float | None
    cpu_percent: float | None  # of one core, steady window
    sent: int
    returned: int  # packets echoed back to the callers (bridge -> bot -> bridge -> caller)
    window_s: float | None


def run_baseline(calls: int, duration_s: float, workdir: Path, *, uvloop: bool = False) -> Baseline:
    """N calls through the naive bridge for ``duration_s``; its CPU per call-second."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports_file = workdir / "ports.txt"
    summary_file = workdir / "callers.json"
    bot = BenchBot(workdir / "bot", clear_every=0, tone_at=0.0, clear_after=0.0)
    argv = [sys.executable, str(BRIDGE), "--calls", str(calls), "--ports-file", str(ports_file)]
    bridge = ManagedProcess(
        "naive-bridge",
        [*argv, "--bot", bot.url, *(["--uvloop"] if uvloop else [])],
        log_path=workdir / "bridge.log",
        cwd=REPO_ROOT,
    )
    load = ["--ports-file", str(ports_file), "--duration", f"{duration_s:g}"]
    callers = ManagedProcess(
        "rtp-callers",
        [sys.executable, str(CALLERS), *load, "--out", str(summary_file)],
        log_path=workdir / "callers.log",
        cwd=REPO_ROOT,
    )
    sampler = CpuSampler()
    try:
        bot.start()
        bridge.start()
        bridge.wait_until(
            ports_file.exists, timeout=CONNECT_TIMEOUT_S, what=f"{calls} bot connections"
        )
        sampler.pids.update({"naive": bridge.pid, "bot": bot.process.pid})
        sampler.start()
        callers.start()
        sampler.pids["callers"] = callers.pid
        if callers.wait(duration_s + 30) != 0:
            raise callers.failure("the RTP callers failed")
    finally:
        sampler.stop()
        callers.stop()
        bridge.stop()
        bot.stop()
    summary = json.loads(summary_file.read_text())
    start, end = summary["first"] + SETTLE_S, summary["last"] - SETTLE_S
    cpu = sampler.cpu_between("naive", start, end)
    cpu_ms = percent = window = None
    if cpu is not None:
        seconds, t0, t1 = cpu
        window = t1 - t0
        if window > 0:
            cpu_ms = seconds * 1000 / (calls * window)
            percent = seconds / window * 100
    return Baseline(
        calls=calls,
        loop="uvloop" if uvloop else "asyncio",
        cpu_ms_per_call_s=cpu_ms,
        cpu_percent=percent,
        sent=int(summary["sent"]),
        returned=int(summary["returned"]),
        window_s=window,
    )


def ratio_line(node_cpu_ms: float | None, baseline: Baseline) -> str:
    """One line for the report: both figures, the ratio and the goal."""
    base = baseline.cpu_ms_per_call_s
    if node_cpu_ms is None or base is None or base <= 0:
        return f"naive bridge ({baseline.loop}) at {baseline.calls} calls: not measured"
    ratio = node_cpu_ms / base
    verdict = "within" if ratio <= GOAL_RATIO else "over"
    returned = baseline.returned / baseline.sent * 100 if baseline.sent else 0.0
    return (
        f"node / naive bridge ({baseline.loop}) CPU per call-second at {baseline.calls} calls: "
        f"{node_cpu_ms:.2f} / {base:.2f} ms = {ratio:.2f}x ({verdict} the {GOAL_RATIO:g}x goal;"
        f" the bridge echoed {returned:.1f} % of {baseline.sent} packets)"
    )
