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

Reported per N, and where each figure comes from (the budgets are docs/performance.md's):
* calls OK / failed: sipp's counters; calls that reached the bot: the bot's sessions.
* node CPU per call-second: utime+stime of the node's process tree (/proc) over the steady
  window (every call up), divided by the call-seconds in it. Budget: ≤ 1.5 ms.
* RTP loss node → caller: sequence gaps (RFC 3550 §A.3) in the node → caller capture.
* pacing: each node → caller packet's departure against the 20 ms grid of its RTP timestamp, in
  the steady window. Budget: p99 ≤ 2 ms at 200 calls.
* INVITE → 180 / 200: sipp's -trace_shortmsg. Budget: p99 ≤ 10 ms / ≤ 50 ms.
* RTP in → bot `media`: the capture of traffic into the node also holds the node's WebSocket
  writes; each `media` message is matched to the RTP packet it carries (bench/calls_wire.py),
  steady window. Budget: p99 ≤ 1 ms at 200 calls. sipp sends every call's packet of a tick
  back to back (bursts of up to N packets within a millisecond), so a packet waits for the
  ones ahead of it; the figure for the first BURST_HEAD packets of each burst is shown too.
* clear → last stale RTP packet: on the clear calls, the last tone packet the node sent after the
  bot's `clear` (bot clock = capture clock). Budget: ≤ 20 ms. Negative: none after the clear.
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
only. bench/lib/calls_drivers.py says why.

``--find-max`` runs N = first --calls, then + --step, ... and stops at the first N with a failed
call, RTP loss node → caller or pacing p99 over 2 ms (with any of the --drivers); the N before
it is the figure.
``--profile DIR`` runs the node under a profiler (bench/peers/profiled_node.py): by default a
sampler on the node's CPU time (collapsed stacks; the top frames are printed), or cProfile with
``--profiler cprofile``. Both cost CPU: use a profiled run for where the time goes, not how much.

This module is the command: it starts the peers of one run and stops them. The rest is in
bench/lib: the bots (calls_drivers.py), what a run measured (calls_analysis.py), how it is
printed (calls_report.py), and what bench/rtp.py measures the same way (cpu_sampling.py,
sipp_load.py, budget.py).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lib.calls_analysis import RunReport, analyse
from bench.lib.calls_drivers import (
    DEFAULT_DRIVERS,
    DRIVERS,
    BenchBot,
    BenchPeer,
    ElevenLabsFake,
    el_format,
)
from bench.lib.calls_report import passes, print_profile, render, table
from bench.lib.calls_slo import call_slos, summarise
from bench.lib.cpu_sampling import CpuSampler, box_busy
from bench.lib.naive_baseline import run_baseline
from bench.lib.sipp_load import SCENARIO, SETTLE_S, SIPP_TIMEOUT_MARGIN_S, Plan, interrupt
from bench.lib.soak_sampling import NodeSampler
from tests.interop.capture import LOAD_SNAPLEN, Capture, CaptureSummary
from tests.interop.edge import EdgeNode
from tests.interop.media import MediaFiles, make_media
from tests.interop.ports import HOST, release_all
from tests.interop.process import PeerError
from tests.interop.sipp import SippResult, SippRun

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILED_NODE = REPO_ROOT / "bench" / "peers" / "profiled_node.py"
DEFAULT_CALLS = (50, 100, 200)
# New calls per second. Lower than bench/rtp.py's 20: each bridged call makes about nine
# DynamoDB/SQS requests, and moto serves about 200 a second from one (GIL-bound) process.
DEFAULT_RATE = 10.0
DEFAULT_CLEAR_CALLS = 5
DEFAULT_STEP = 50
DEFAULT_MAX_CALLS = 800
HANGUP_SETTLE_S = 2.0  # after sipp's last BYE, for the node to close the bot connections
TONE_LEAD_S = 1.0  # tone starts this long into the steady window
CLEAR_AFTER_S = 2.5  # seconds of tone played before the clear (2.5 s are still queued)
IDLE_S = 5.0  # the node measured with no call before sipp starts
BUSY_BOX_PERCENT = 20.0  # machine load (% of one core) before a run worth a note
QUIET_POLL_S = 5.0
MEMORY_PERIOD_S = 1.0  # node RSS/PSS samples (bench/lib/soak_sampling.py)


# -- the node's control plane ------------------------------------------------------------------


@dataclass
class LocalStack:
    endpoint: str
    env: dict[str, str]  # what the node needs to reach the table and queues at moto
    repo: Any  # shared.dynamo.repository.Repository


def start_local_stack(*, child_process: bool = False) -> tuple[Any, LocalStack]:
    """moto with the template's table and queues (infra/local_aws.py): in this process, or
    (``child_process``) in its own, where its transactions' table copies cannot hold this
    process's GIL (infra/moto_process.py: what a long, busy run needs)."""
    import boto3

    from infra.local_aws import MotoServer, apply_env, aws_env, provision, sealing_repository
    from infra.moto_process import MotoProcess
    from shared.settings import Settings

    moto = MotoProcess(HOST, 0) if child_process else MotoServer(HOST, 0)
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
        # Accounts' secrets are stored sealed with the stack's KMS key (docs/secrets.md).
        repo = sealing_repository(Settings.load(env), boto3.session.Session())
    except BaseException:
        moto.stop()
        raise
    return moto, LocalStack(endpoint, env, repo)


def provision_number(
    stack: LocalStack, target: str, account_settings: dict[str, Any] | None = None
) -> str:
    """A fresh account and number whose calls go to the media ``target`` (what the API would
    write); ``account_settings`` are the account's fields for a native driver (credentials)."""
    return provision_account(stack, target, account_settings)[0]


def provision_account(
    stack: LocalStack, target: str, account_settings: dict[str, Any] | None = None
) -> tuple[str, str]:
    """`provision_number`, and the account's id: (number, account id)."""
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
    return number, account.account_id


# -- one run -----------------------------------------------------------------------------------


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
    sampler = CpuSampler()
    memory: NodeSampler | None = None
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
        number, account_id = provision_account(stack, bot.target, bot.account_settings())
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
        memory = NodeSampler(node.pid, None, period=MEMORY_PERIOD_S)
        memory.start()
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
        if memory is not None:
            memory.stop()
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
    report = analyse(
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
        memory=memory,
    )
    try:
        report.record_slo = summarise(call_slos(stack.repo, account_id)) or None
    except Exception as exc:  # the figures are extra: a failed read must not lose the run
        report.notes.append(f"the call records could not be read: {exc!r}")
    return report


# -- command line ------------------------------------------------------------------------------


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
    parser.add_argument(
        "--baseline",
        choices=("asyncio", "uvloop", "none"),
        default="asyncio",
        help="run the naive bridge (bench/peers/naive_bridge.py) at each N on this loop, for "
        "the node / naive CPU ratio (asyncio)",
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    reports: list[RunReport] = []
    moto = None
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as scratch:
        root = args.keep or Path(scratch)
        try:
            moto, stack = start_local_stack(child_process=True)  # moto off this GIL
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
                    if driver == "twilio" and args.baseline != "none":
                        print(f"[{calls} calls, naive bridge] {args.duration:g} s", flush=True)
                        baseline = run_baseline(
                            calls,
                            args.duration,
                            root / f"naive-{calls}",
                            uvloop=args.baseline == "uvloop",
                        )
                        report.baseline = asdict(baseline)
                        release_all()
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
