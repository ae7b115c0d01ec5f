"""N concurrent calls bridged to an echo bot (Twilio stream or ElevenLabs), measured from outside.

Run: .venv/bin/python bench/calls.py [--calls 50 100 200] [--duration 30] [--rate 10]
         [--drivers twilio elevenlabs-ulaw elevenlabs-pcm16]
         [--find-max [--step 50] [--max-calls 800]] [--clear-calls 5] [--wait-quiet S]
         [--workers N] [--profile DIR [--profiler sample|cprofile]] [--node-command CMD]
         [--keep DIR] [--json F]

What runs, each a process of its own so /proc gives each one's CPU: moto (DynamoDB + SQS, in this
process, provisioned from template.yaml), the node (``agera edge`` with the control plane at that
moto), the bench bot (bench/peers/echo_bot_fast.py: echoes every `media`, and on a few calls plays
5 s of tone and then sends `clear`), sipp ``uac_load.xml`` (N callers, speech at 50 pps, DTMF at
the end, from one local port) and two tshark captures on ``lo``. Per N, an account and a number
routed to the bot are created; sipp dials that number.

Reported per N, and where each figure comes from:
* calls OK / failed: sipp's counters; calls that reached the bot: the bot's sessions.
* node CPU per call-second: utime+stime of the node's process tree (/proc) over the steady
  window (every call up), divided by the call-seconds in it. DESIGN §6: ≤ 1.5 ms.
* RTP loss node → caller: sequence gaps (RFC 3550 §A.3) in the node → caller capture.
* pacing: each node → caller packet's departure against the 20 ms grid of its RTP timestamp, in
  the steady window. DESIGN §6: p99 ≤ 2 ms at 200 calls.
* INVITE → 180 / 200: sipp's -trace_shortmsg. DESIGN §6: p99 ≤ 10 ms / ≤ 50 ms.
* RTP in → bot `media`: the capture of traffic into the node also holds the node's WebSocket
  writes; each `media` message is matched to the RTP packet it carries (bench/calls_wire.py),
  steady window. DESIGN §6: p99 ≤ 1 ms at 200 calls. sipp sends every call's packet of a tick
  back to back (bursts of up to N packets within a millisecond), so a packet waits for the
  ones ahead of it; the figure for the first BURST_HEAD packets of each burst is shown too.
* clear → last stale RTP packet: on the clear calls, the last tone packet the node sent after the
  bot's `clear` (bot clock = capture clock). DESIGN §6: ≤ 20 ms. Negative: none after the clear.
* CPU of the rest of the box (bot, sipp, captures, moto, other users of the machine), because
  everything shares 2 cores: compare runs on the same machine only. "waiting for CPU" is the
  time the node was runnable but not running (/proc/<pid>/task/*/schedstat): latency and pacing
  tails with a high figure there are the box's doing. ``--wait-quiet S`` waits (up to S seconds)
  for other work on the machine to stop before each run.

``--drivers`` (default ``twilio`` alone, the figure this bench has always given, in a third of
the time of all three) runs the same load, per N, against each bot named: ``twilio`` the echo
bot above; ``elevenlabs-ulaw`` / ``elevenlabs-pcm16`` bench/peers/elevenlabs_fast.py, an
ElevenLabs fake agent in ``ulaw_8000`` (passthrough) or ``pcm_16000`` (the node resamples both
ways) reached through the ``elevenlabs`` target, a signed URL and ``AGERA_ELEVENLABS_API_BASE``.
The table gets a column per (N, driver) and, with both ElevenLabs formats, the node CPU ratio
pcm_16000 / ulaw_8000 per N (goal ≤ 1.3). "RTP in → bot" is matched on ``user_audio_chunk`` for
ulaw_8000 and not measured for pcm_16000 (no payload survives resampling); "clear" is Twilio
only. bench/calls_drivers.py says why.

``--find-max`` runs N = first --calls, then + --step, ... and stops at the first N with a failed
call, RTP loss node → caller or pacing p99 over 2 ms (with any of the --drivers); the N before
it is the figure.
``--profile DIR`` runs the node under a profiler (bench/peers/profiled_node.py): by default a
sampler on the node's CPU time (collapsed stacks; the top frames are printed), or cProfile with
``--profiler cprofile``. Both cost CPU: use a profiled run for where the time goes, not how much.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calls_drivers import (
    DEFAULT_DRIVERS,
    DRIVERS,
    BenchPeer,
    ElevenLabsFake,
    agent_summary,
    driver_label,
    driver_notes,
    el_format,
    ratio_lines,
    read_capture_in_elevenlabs,
)
from bench.calls_wire import (
    AMBIGUOUS_S,
    BURST_GAP_S,
    burst_positions,
    match_latency,
    read_capture_in,
)
from bench.rtp import (
    CLOCK_TICKS,
    SAMPLE_PERIOD_S,
    SETTLE_S,
    Plan,
    call_seconds,
    pacing_in_window,
    process_table,
    steady_window,
    tree,
)
from tests.interop.capture import (
    AUDIO_PAYLOAD_TYPES,
    LOAD_SNAPLEN,
    Capture,
    CaptureSummary,
    Percentiles,
    RtpSeen,
    percentiles,
    read_rtp,
    split_streams,
    stream_stats,
)
from tests.interop.edge import EdgeNode
from tests.interop.media import MediaFiles, make_media
from tests.interop.ports import HOST, free_port, release_all
from tests.interop.process import PeerError
from tests.interop.sipp import SippResult, SippRun, call_timings

REPO_ROOT = Path(__file__).resolve().parent.parent
BOT_SCRIPT = REPO_ROOT / "bench" / "peers" / "echo_bot_fast.py"
PROFILED_NODE = REPO_ROOT / "bench" / "peers" / "profiled_node.py"
SCENARIO = "uac_load.xml"
DEFAULT_CALLS = (50, 100, 200)
# New calls per second. Lower than bench/rtp.py's 20: each bridged call makes about nine
# DynamoDB/SQS requests, and moto serves about 200 a second from one (GIL-bound) process.
DEFAULT_RATE = 10.0
DEFAULT_CLEAR_CALLS = 5
DEFAULT_STEP = 50
DEFAULT_MAX_CALLS = 800
SIPP_TIMEOUT_MARGIN_S = 60.0
HANGUP_SETTLE_S = 2.0  # after sipp's last BYE, for the node to close the bot connections
TONE_LEAD_S = 1.0  # tone starts this long into the steady window
CLEAR_AFTER_S = 2.5  # seconds of tone played before the clear (2.5 s are still queued)
TONE_STAGGER_S = 0.137  # between clear calls, so clears land on different pacer phases
BURST_HEAD = 10  # packets at the head of a sipp burst: not queued behind the rest
MIN_TONE_BYTES = 16  # a cut payload shorter than this is not compared with the tone
BUDGET_CPU_MS = 1.5  # DESIGN §6
BUDGET_PACING_P99_MS = 2.0
BUDGET_RINGING_P99_MS = 10.0
BUDGET_ANSWER_P99_MS = 50.0
BUDGET_LATENCY_MS = 1.0  # p99
BUDGET_CLEAR_MS = 20.0
IDLE_S = 5.0  # the node measured with no call before sipp starts
BUSY_BOX_PERCENT = 20.0  # machine load (% of one core) before a run worth a note
QUIET_POLL_S = 5.0
LOG_EXAMPLES = 5  # distinct warning/error lines of the node's log shown per run
MAX_LOG_BYTES = 50 * 1024 * 1024


# -- CPU of the box ----------------------------------------------------------------------------


def _own_ticks() -> int:
    text = Path("/proc/self/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _box_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class BoxSample:
    time: float
    trees: dict[str, int]  # ticks per watched process tree
    own: int  # this process alone: moto's threads and the sampler
    busy: int
    total: int
    node: tuple[int, int, int] | None = None  # utime, stime (ticks), run-queue wait (ns)
    node_processes: dict[int, int] = field(default_factory=dict)  # pid -> ticks, node's tree


def _node_detail(pids: Iterable[int]) -> tuple[int, int, int] | None:
    """The node processes' user and system ticks, and how long their threads waited for a CPU
    while runnable (/proc/<pid>/task/*/schedstat, 2nd field): the share of latency that is the
    box's doing, not the node's."""
    user = system = waited = 0
    try:
        for pid in pids:
            text = Path(f"/proc/{pid}/stat").read_text()
            fields = text[text.rfind(")") + 2 :].split()
            user, system = user + int(fields[11]), system + int(fields[12])
            for task in Path(f"/proc/{pid}/task").iterdir():
                waited += int((task / "schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return user, system, waited


@dataclass
class BoxSampler:
    """CPU ticks of some process trees, of this process and of the whole box, every second."""

    pids: dict[str, int] = field(default_factory=dict)
    samples: list[BoxSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="box-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            parents, ticks = process_table()
            trees = {}
            members: dict[str, list[int]] = {}
            for name, root in list(self.pids.items()):
                members[name] = tree(root, parents)
                trees[name] = sum(ticks.get(pid, 0) for pid in members[name])
            busy, total = _box_ticks()
            node = _node_detail(members["node"]) if "node" in members else None
            processes = {pid: ticks.get(pid, 0) for pid in members.get("node", [])}
            self.samples.append(
                BoxSample(time.time(), trees, _own_ticks(), busy, total, node, processes)
            )
            if self._stop.wait(SAMPLE_PERIOD_S):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SAMPLE_PERIOD_S * 5)

    def shares(self, start: float, end: float) -> tuple[float, float, dict[str, float]] | None:
        """(from, to, CPU % of one core per name) between the first and last sample inside
        [start, end]; ``box`` is the whole machine, ``others`` what none of ours used."""
        inside = [s for s in self.samples if start <= s.time <= end]
        if len(inside) < 2:
            return None
        a, b = inside[0], inside[-1]
        seconds = b.time - a.time
        if seconds <= 0:
            return None

        def pct(ticks: float) -> float:
            return ticks / CLOCK_TICKS / seconds * 100

        out = {name: pct(b.trees[name] - a.trees[name]) for name in b.trees if name in a.trees}
        out["moto"] = pct(b.own - a.own)
        cores = os.cpu_count() or 1
        out["box"] = (b.busy - a.busy) / max(1, b.total - a.total) * 100 * cores
        out["others"] = max(0.0, out["box"] - sum(v for k, v in out.items() if k != "box"))
        if a.node is not None and b.node is not None:
            out["node.user"] = pct(b.node[0] - a.node[0])
            out["node.sys"] = pct(b.node[1] - a.node[1])
            out["node.waiting"] = (b.node[2] - a.node[2]) / 1e9 / seconds * 100
        if len(b.node_processes) > 1:  # media workers: how the load is spread
            for pid, ticks in b.node_processes.items():
                out[f"node.pid{pid}"] = pct(ticks - a.node_processes.get(pid, ticks))
        return a.time, b.time, out


# -- the node's control plane ------------------------------------------------------------------


@dataclass
class LocalStack:
    endpoint: str
    env: dict[str, str]  # what the node needs to reach the table and queues at moto
    repo: Any  # shared.dynamo.repository.Repository


def box_busy(seconds: float = 2.0) -> float:
    """How busy the machine is right now, in % of one core (other users share these cores)."""
    busy0, total0 = _box_ticks()
    time.sleep(seconds)
    busy1, total1 = _box_ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * 100 * (os.cpu_count() or 1)


def start_local_stack() -> tuple[Any, LocalStack]:
    """moto in this process with the template's table and queues (infra/local_aws.py)."""
    import boto3

    from infra.local_aws import MotoServer, apply_env, aws_env, provision
    from shared.dynamo.repository import Repository

    moto = MotoServer(HOST, 0)
    endpoint = moto.start()
    try:
        env = aws_env(endpoint)
        apply_env(env)  # for the boto3 client below
        resources = provision(endpoint, stack_name=f"agera-bench-{secrets.token_hex(3)}")
        env.update(resources.settings_env())
        env.update(
            {
                "AGERA_SSRF_ALLOW_LIST": "127.0.0.0/8",  # the bot is on loopback
                "POWERTOOLS_SERVICE_NAME": "agera-bench",
                "POWERTOOLS_TRACE_DISABLED": "1",
            }
        )
        repo = Repository(boto3.session.Session().client("dynamodb"), resources.table_name)
    except BaseException:
        moto.stop()
        raise
    return moto, LocalStack(endpoint, env, repo)


def provision_number(
    stack: LocalStack, target: str, account_settings: dict[str, Any] | None = None
) -> str:
    """A fresh account and number whose calls go to the media ``target`` (what the API would
    write); ``account_settings`` are the account's fields for a native driver (credentials)."""
    from shared.models import Account, AccountLimits, Number, Route

    account = Account(
        name="bench calls",
        webhook_secret=secrets.token_hex(16),
        limits=AccountLimits(max_concurrent_calls=100_000, calls_per_second=1000),
        **(account_settings or {}),
    )
    stack.repo.put(account)
    number = "+1555" + "".join(secrets.choice("0123456789") for _ in range(7))
    stack.repo.put(
        Number(number=number, account_id=account.account_id, route=Route(socket_url=target))
    )
    return number


# -- the bench bot -----------------------------------------------------------------------------


class BenchBot(BenchPeer):
    """bench/peers/echo_bot_fast.py as a process; its sessions are read back from JSON lines."""

    def __init__(
        self, workdir: Path, *, clear_every: int, tone_at: float, clear_after: float
    ) -> None:
        argv = [sys.executable, str(BOT_SCRIPT), "--clear-every", str(clear_every)]
        argv += ["--tone-at", f"{tone_at:.3f}", "--clear-after", f"{clear_after:g}"]
        argv += ["--tone-stagger", f"{TONE_STAGGER_S:g}"]
        super().__init__("bot", workdir, argv, port=free_port(tcp=True))

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    @property
    def target(self) -> str:
        return self.url


# -- one run -----------------------------------------------------------------------------------


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


def _pct(p: Percentiles | None) -> dict[str, float] | None:
    return None if p is None else {"p50": p.p50, "p99": p.p99, "max": p.max, "n": p.count}


def run_once(
    plan: Plan,
    *,
    stack: LocalStack,
    workdir: Path,
    media: MediaFiles,
    clear_calls: int,
    node_command: Sequence[str] | None,
    profile_dir: Path | None,
    profiler: str = "sample",
    wait_quiet: float = 0.0,
    workers: int | None = None,
    driver: str = "twilio",
) -> RunReport:
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    audio_format = el_format(driver)
    bot: BenchPeer
    if audio_format is None:
        clear_every = max(1, plan.calls // clear_calls) if clear_calls > 0 else 0
        bot = BenchBot(
            workdir / "bot",
            clear_every=clear_every,
            tone_at=plan.ramp_s + SETTLE_S + TONE_LEAD_S,
            clear_after=CLEAR_AFTER_S,
        )
    else:
        bot = ElevenLabsFake(workdir / "agent", audio_format=audio_format)
    profile = None
    command = list(node_command) if node_command else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        suffix = "stacks.txt" if profiler == "sample" else "prof"
        name = f"node-{plan.calls}" + ("" if driver == "twilio" else f"-{driver}")
        profile = str(profile_dir.resolve() / f"{name}.{suffix}")
        command = [sys.executable, str(PROFILED_NODE), profiler, profile]
    node: EdgeNode | None = None
    sipp: SippRun | None = None
    captures: list[Capture] = []
    sampler = BoxSampler()
    node_rc: int | None = None
    result: SippResult | None = None
    summaries: list[CaptureSummary] = []
    idle: tuple[float, float] | None = None
    idle_load = box_busy()
    deadline = time.monotonic() + wait_quiet
    while idle_load > BUSY_BOX_PERCENT and time.monotonic() < deadline:
        idle_load = box_busy(QUIET_POLL_S)
    if idle_load > BUSY_BOX_PERCENT:
        notes.append(
            f"the box was {idle_load:.0f} % busy (of one core) before this run started: "
            "other work competes with the node"
        )
    try:
        bot.start()
        number = provision_number(stack, bot.target, bot.account_settings())
        node = EdgeNode(
            workdir / "edge",
            max_calls=plan.calls,
            env={**stack.env, **bot.node_env()},
            command=command,
            workers=workers,
        )
        node.start()
        sipp = SippRun(
            SCENARIO,
            workdir=media.directory,
            artifacts=workdir / "sipp",
            remote=node.address,
            service=number,
            duration_ms=plan.call_ms,
            calls=plan.calls,
            rate=plan.rate,
            limit=plan.calls,
            timeout_s=plan.total_s + SIPP_TIMEOUT_MARGIN_S,
            trace_messages=False,
            stat_period_s=5,
        )
        low, high = node.rtp_ports
        captures = [
            Capture(
                workdir / "node_to_caller.pcap",
                capture_filter=f"udp and dst host {HOST} and dst port {sipp.media_port}",
                snaplen=LOAD_SNAPLEN,
                pcap_format=True,
            ),
            Capture(
                workdir / "into_node.pcap",
                capture_filter=(
                    f"(udp and src port {sipp.media_port} and dst portrange {low}-{high})"
                    f" or (udp and port {node.sip_port})"
                    f" or (tcp and dst port {bot.port} and greater 67)"
                ),
                pcap_format=True,
            ),
        ]
        for capture in captures:
            capture.start()
        sampler.pids.update({"node": node.pid, "bot": bot.process.pid})
        sampler.pids.update({f"capture{i}": c.process.pid for i, c in enumerate(captures)})
        sampler.start()
        idle_from = time.time()
        time.sleep(IDLE_S)  # the node with no call: its fixed cost (heartbeat, queue polls)
        idle = (idle_from, time.time())
        print(
            f"[{plan.calls} calls, {driver}] at {plan.rate:g}/s to {number} on {node.address}, "
            f"each {plan.call_ms / 1000:.0f} s + DTMF; about {plan.total_s:.0f} s",
            flush=True,
        )
        sipp.start()
        sampler.pids["sipp"] = sipp.process.pid
        result = sipp.wait(plan.total_s + SIPP_TIMEOUT_MARGIN_S + 15)
        time.sleep(HANGUP_SETTLE_S)
    finally:
        sampler.stop()
        if sipp is not None:
            sipp.stop()
        if node is not None:
            node_rc = node.stop()
        bot.stop()
        summaries = [c.stop() for c in captures]
    if result is None or sipp is None or node is None:
        raise PeerError("the run did not complete")
    if node_rc not in (None, 0):
        notes.append(f"the node exited with {node_rc} on SIGTERM (0 expected)")
    return analyse(
        plan,
        result=result,
        summaries=summaries,
        captures=[c.path for c in captures],
        sipp=sipp,
        node=node,
        bot=bot,
        sampler=sampler,
        node_rc=node_rc,
        notes=notes,
        profile=profile,
        idle=idle,
        driver=driver,
    )


# -- analysis ----------------------------------------------------------------------------------


def analyse(
    plan: Plan,
    *,
    result: SippResult,
    summaries: list[CaptureSummary],
    captures: list[Path],
    sipp: SippRun,
    node: EdgeNode,
    bot: BenchPeer,
    sampler: BoxSampler,
    node_rc: int | None,
    notes: list[str],
    profile: str | None,
    idle: tuple[float, float] | None,
    driver: str = "twilio",
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
        pacing_ms=_pct(percentiles(errors)),
        ringing_ms=_pct(percentiles(t.ringing_ms for t in timings if t.ringing_ms is not None)),
        answer_ms=_pct(percentiles(t.answered_ms for t in timings if t.answered_ms is not None)),
        latency_ms=_pct(percentiles(s.ms for s in in_window)),
        latency_head_ms=_pct(percentiles(head)),
        burst_size=_burst_sizes(positions, window),
        latency_all_ms=_pct(percentiles(s.ms for s in match.samples)),
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
    return _pct(percentiles(sizes))


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


# -- output ------------------------------------------------------------------------------------


def _fmt(p: dict[str, float] | None, budget: float | None = None) -> str:
    if p is None:
        return "n/a"
    verdict = "" if budget is None else ("  ok" if p["p99"] <= budget else f"  OVER {budget:g}")
    return f"p50 {p['p50']:.2f}  p99 {p['p99']:.2f}  max {p['max']:.2f}  (n={p['n']:.0f}){verdict}"


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
        f"box CPU, % of one core: steady  {box or 'n/a'}",
        f"                        setup   {_shares_text(r.cpu_ramp_percent)}",
        f"                        idle    {_shares_text(r.cpu_idle_percent)}",
        f"pacing |error| ms  {_fmt(r.pacing_ms, BUDGET_PACING_P99_MS)}",
        f"INVITE→180 ms      {_fmt(r.ringing_ms, BUDGET_RINGING_P99_MS)}",
        f"INVITE→200 ms      {_fmt(r.answer_ms, BUDGET_ANSWER_P99_MS)}",
        f"RTP in→bot media   {_fmt(r.latency_ms, BUDGET_LATENCY_MS)}  {latency_note}",
        f"  head of bursts   {_fmt(r.latency_head_ms, BUDGET_LATENCY_MS)}  [first {BURST_HEAD} "
        f"packets of each sipp burst; bursts (gap > {BURST_GAP_S * 1000:g} ms): "
        f"{_fmt(r.burst_size)} packets]",
        f"  (whole run)      {_fmt(r.latency_all_ms)}  flows {counts.get('flows_matched')}/"
        f"{counts.get('flows')}, skipped {counts.get('ambiguous')} repeating payloads "
        f"(< {AMBIGUOUS_S:g} s apart), unmatched {counts.get('unmatched')}",
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
    if r.profile:
        lines.append(f"profile            {r.profile}")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


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
    """One column per N (and driver), one row per figure, with the DESIGN §6 budget; with
    ElevenLabs runs, their own rows, what their columns leave out, and the node CPU ratios."""

    def clear(r: RunReport) -> str:
        return "n/a" if not r.clear_ms else f"{max(r.clear_ms):.1f} (n={len(r.clear_ms)})"

    def cpu_ms(r: RunReport) -> str:
        return "n/a" if r.cpu_ms_per_call_s is None else f"{r.cpu_ms_per_call_s:.2f}"

    def tshark(r: RunReport) -> str:
        shares = r.cpu_percent or {}
        return f"{sum(v for k, v in shares.items() if k.startswith('capture')):.0f}"

    rows: list[tuple[str, Callable[[RunReport], str], str]] = [
        ("calls OK / failed", lambda r: f"{r.successful} / {r.failed}", "all OK"),
        ("calls at the bot", lambda r: str(r.bot_sessions), "= calls"),
        ("node CPU ms / call-s", cpu_ms, f"≤ {BUDGET_CPU_MS}"),
        ("node CPU % of a core", lambda r: _share(r.cpu_percent, "node"), ""),
        ("RTP lost node→caller", lambda r: f"{r.lost} of {r.packets}", "0"),
        ("pacing p50 / p99 ms", lambda r: _cell(r.pacing_ms), f"p99 ≤ {BUDGET_PACING_P99_MS:g}"),
        ("INVITE→180 p50/p99", lambda r: _cell(r.ringing_ms), f"p99 ≤ {BUDGET_RINGING_P99_MS:g}"),
        ("INVITE→200 p50/p99", lambda r: _cell(r.answer_ms), f"p99 ≤ {BUDGET_ANSWER_P99_MS:g}"),
        ("RTP in→media p50/p99", lambda r: _cell(r.latency_ms), f"p99 ≤ {BUDGET_LATENCY_MS:g}"),
        ("  head of sipp burst", lambda r: _cell(r.latency_head_ms), "(see note)"),
        ("  sipp burst size p50", lambda r: _share(r.burst_size, "p50"), "packets"),
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
    lines = [head + "   budget (DESIGN §6)"]
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


# -- command line ------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Unwind through the ``finally`` blocks, which stop every process (bounded); later
    signals are ignored so that cleanup is not itself interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--calls", type=int, nargs="+", default=list(DEFAULT_CALLS), help="N per run (50 100 200)"
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds all calls are up together (30)"
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="new calls per second")
    parser.add_argument(
        "--clear-calls", type=int, default=DEFAULT_CLEAR_CALLS, help="calls that test clear (5)"
    )
    parser.add_argument(
        "--drivers",
        nargs="+",
        choices=DRIVERS,
        default=list(DEFAULT_DRIVERS),
        metavar="DRIVER",
        help=f"bots to run each N against, in order: {', '.join(DRIVERS)} (twilio)",
    )
    parser.add_argument("--find-max", action="store_true", help="raise N until a budget fails")
    parser.add_argument("--step", type=int, default=DEFAULT_STEP, help="--find-max step (50)")
    parser.add_argument(
        "--max-calls", type=int, default=DEFAULT_MAX_CALLS, help="--find-max ceiling (800)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help=f"before each run, wait up to N s for an idle box (< {BUSY_BOX_PERCENT:g}%%)",
    )
    parser.add_argument(
        "--workers", type=int, help="AGERA_MEDIA_WORKERS for the node (default: its setting, 1)"
    )
    parser.add_argument("--profile", type=Path, help="profile the node, write the profile here")
    parser.add_argument(
        "--profiler", choices=("sample", "cprofile"), default="sample", help="(sample)"
    )
    parser.add_argument(
        "--node-command", help="run the node with this command line instead of `agera edge`"
    )
    parser.add_argument("--keep", type=Path, help="keep captures and logs in this directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.calls) < 1 or args.duration <= 0 or args.rate <= 0 or args.step < 1:
        parser.error("--calls, --rate and --step must be >= 1 and --duration > 0")
    return args


def print_profile(path: str, lines: int = 25) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    reports: list[RunReport] = []
    moto = None
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as scratch:
        root = args.keep or Path(scratch)
        try:
            moto, stack = start_local_stack()
            media = make_media(root / "media")
            sizes = list(args.calls)
            drivers = list(dict.fromkeys(args.drivers))
            while sizes:
                calls = sizes.pop(0)
                plan = Plan(calls=calls, rate=args.rate, duration_s=args.duration, find_max=False)
                all_pass = True
                for driver in drivers:
                    suffix = "" if driver == "twilio" else f"-{driver}"
                    report = run_once(
                        plan,
                        stack=stack,
                        workdir=root / f"calls-{calls}{suffix}",
                        media=media,
                        clear_calls=args.clear_calls,
                        node_command=shlex.split(args.node_command) if args.node_command else None,
                        profile_dir=args.profile,
                        profiler=args.profiler,
                        wait_quiet=args.wait_quiet,
                        workers=args.workers,
                        driver=driver,
                    )
                    release_all()  # the run's peers are gone: their ports may be handed out again
                    print(render(report), flush=True)
                    if report.profile:
                        print_profile(report.profile)
                    reports.append(report)
                    all_pass = all_pass and passes(report)
                if args.find_max:
                    if not all_pass:
                        break
                    if not sizes and calls + args.step <= args.max_calls:
                        sizes.append(calls + args.step)
        except PeerError as exc:
            print(f"bench/calls.py: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                "bench/calls.py: interrupted; every process it started was stopped",
                file=sys.stderr,
            )
            return 130
        finally:
            if moto is not None:
                moto.stop()
        if reports:
            print()
            print(table(reports))
        if args.find_max and reports:
            bad = sorted({r.calls for r in reports if not passes(r)})
            good = [r.calls for r in reports if passes(r) and r.calls not in bad]
            print(
                f"find-max: most calls within budget {max(good) if good else 'none'}"
                + (f"; first over: {bad[0]}" if bad else f" (ceiling {args.max_calls})")
            )
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2))
        if args.keep:
            print(f"captures and logs kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
