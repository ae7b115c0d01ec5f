"""N concurrent agent streams (a provider's WebSocket ↔ the agent's echo bot) through the edge
node, measured from outside; and the same N as bridged SIP calls, for the CPU ratio.

Run: .venv/bin/python bench/streams.py [--streams 100] [--duration 20] [--runs 1] [--rate 10]
         [--no-compare-sip] [--wait-quiet S] [--workers N] [--keep DIR] [--json F]

What runs, each a process of its own so /proc gives each one's CPU: moto (DynamoDB + SQS, a
fresh one for every run, stream or SIP: `fresh_stack`) and a FakeCloudonix
(tests/support/fake_cloudonix.py, one domain and bearer token, one live session per stream),
both in this process; the node (``agera edge``, bench/calls.py's local stack, with
``AGERA_CLOUDONIX_API_BASE`` at the fake); the echo bot (bench/peers/echo_bot_fast.py, as in
bench/calls.py); and the provider load (bench/peers/provider_load.py): N `ProviderStream`
clients, started at ``--rate`` a second, each dialling
``/api/v1/agent-stream/cloudonix/{agent_uuid}`` on the node's stream port and playing numbered
20 ms frames on an absolute grid until every stream has been bridged and up together for
SETTLE_S + ``--duration`` seconds, then ``stop`` and close (stops as spread as starts). Per
run, one account (limits far above N), one Agent whose ``socket_url`` is the bot, and one
Cloudonix TelephonyConfig are created. So every stream pays what a real one pays: the session
check at Cloudonix, the call slot, the record, the bot.

Reported per N, and where each figure comes from:
* streams OK / failed: the load's record per stream (upgrade, audio echoed, close 1000 from
  the node after our ``stop``); streams the bot saw: the bot's sessions; the call records the
  node wrote (status, and its own counters summed: frames in and out, dropped sends).
* node CPU per stream-second: utime+stime of the node's process tree (/proc) over the steady
  window (SETTLE_S after the last stream's first audio back, to the first stream's last frame),
  divided by the stream-seconds in it (``start`` sent to the last frame). The comparison is
  ``--compare-sip``: the same N as bridged SIP calls in this invocation (bench/calls.py's run,
  its echo bot, no clear calls), and the ratio stream / SIP CPU per call-second. Goal: ≤ 1.0,
  a stream costs no more than a bridged SIP call (docs/performance.md). Both figures are from
  this box and this invocation: compare them, not either with another machine.
* setup: connect → 101, and connect → the first ``media`` back (upgrade, handshake, Cloudonix
  session check, slot, record, bot connection, one echo, the next 20 ms tick); see
  bench/peers/provider_load.py. The control plane is moto: at a few hundred streams its
  transactions (the call slot) slow down with the table, so setup tails are the local stack's
  as much as the node's.
* pacing toward the provider: |gap - 20 ms| between successive ``media`` messages of a stream
  as they arrive at the provider, steady window. An arrival time is the load process's reading
  of the message, so its own scheduling adds to the figure: it is an upper bound of the node's.
  Not the same measure as bench/calls.py's pacing (departure against the RTP timestamp grid,
  from a capture), hence no budget verdict.
* echo round trip: a frame's arrival back against the 20 ms slot it was sent in (node, bot,
  the node's playout queue and pacer, and both ends' lateness), steady window. An echo bot
  sends each frame as it gets it, so what the node queues toward the provider after a stall is
  never caught up: this figure shows how much of it there is.
* loss: frames sent after the first one echoed that did not come back before our ``stop``
  (each frame is numbered; the load waits 1 s after its last frame); those sent before the
  bridge was up are discarded by design and shown apart.
* CPU of the rest of the box (provider load, bot, moto and the fake, others): everything shares
  2 cores, so compare runs on the same machine only. ``--wait-quiet S`` waits (up to S s) for
  other work to stop before each run.

``--compare-sip`` is on by default: at 200 it adds about a minute and a half (sipp, captures,
their analysis); ``--no-compare-sip`` leaves it out. ``--runs R`` repeats every run R times and
prints the medians over the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calls import DEFAULT_RATE, LocalStack, run_once, start_local_stack
from bench.lib.calls_analysis import RunReport, node_log_summary
from bench.lib.calls_drivers import BenchBot
from bench.lib.cpu_sampling import CpuSampler, wait_until_quiet
from bench.lib.sipp_load import SETTLE_S, Plan, interrupt
from bench.lib.streams_report import StreamReport, analyse_streams, render, sip_summary, table
from tests.interop.edge import EdgeNode
from tests.interop.media import MediaFiles, make_media
from tests.interop.ports import HOST, release_all
from tests.interop.process import ManagedProcess, PeerError
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix

REPO_ROOT = Path(__file__).resolve().parent.parent
LOAD_SCRIPT = REPO_ROOT / "bench" / "peers" / "provider_load.py"
DEFAULT_STREAMS = (100,)
IDLE_S = 5.0  # the node measured with no stream before the load starts
STARTUP_TAIL_S = 2.0  # after the ready line the node still warms up (~0.1 s of CPU): not idle
HANGUP_SETTLE_S = 2.0  # after the load's last stop, for the node to end the calls
LOAD_MARGIN_S = 60.0  # beyond the plan, before the load process is killed
BUSY_BOX_PERCENT = 20.0
QUIET_POLL_S = 5.0
LOAD_DRAIN_S = 1.0  # provider_load.DRAIN_S: echoes in flight after the last frame
SETUP_LIMIT_S = 30.0  # after the last connect, the load stops waiting for unbridged streams


class MotoErrors(logging.Filter):
    """Counts the requests moto failed instead of printing each traceback.

    In-process moto served from threads, and under load its DynamoDB transactions raced
    (``dictionary changed size during iteration`` in TransactWriteItems): the request was
    answered 500 and werkzeug logged a 40-line traceback per failure to our output. moto now runs
    in a child process that serialises DynamoDB writes (infra/moto_process.py), where that race
    does not happen and whose own log is not this process's: the count stays as a guard, 0 when
    all is well.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith("Error on request"):
            return True
        self.counts[text.strip().splitlines()[-1][:120]] += 1
        return False

    def take(self) -> dict[str, int]:
        """The counts since the last call."""
        out = dict(self.counts)
        self.counts.clear()
        return out


MOTO_ERRORS = MotoErrors()


@contextlib.contextmanager
def fresh_stack() -> Iterator[LocalStack]:
    """bench/calls.py's local stack (moto in a child process, the template's table and queues),
    new for each run and stopped after it. A run's leftovers (call records, slots, unread
    events) make moto slower for the next one: after 200 streams, the route lookups of 107 of
    200 SIP calls timed out on a shared stack. Fresh ones give both runs the same start."""
    moto, stack = start_local_stack(child_process=True)  # moto off this GIL, thread-safe
    try:
        yield stack
    finally:
        moto.stop()


# -- provisioning ------------------------------------------------------------------------------


def provision_agent(stack: LocalStack, bot_url: str, streams: int) -> tuple[str, uuid.UUID]:
    """A fresh account (limits far above the load), its Agent routed to the bot, and its
    Cloudonix configuration (the fake's domain and token): (account id, agent UUID)."""
    from shared.models import Account, AccountLimits, Agent, TelephonyConfig, TelephonyProvider

    account = Account(
        name="bench streams",
        webhook_secret=secrets.token_hex(16),
        limits=AccountLimits(max_concurrent_calls=max(1000, 4 * streams), calls_per_second=1000),
    )
    stack.repo.put(account)
    agent = Agent(account_id=account.account_id, name="bench echo", socket_url=bot_url)
    stack.repo.put(agent)
    stack.repo.put(
        TelephonyConfig(
            account_id=account.account_id,
            provider=TelephonyProvider.CLOUDONIX,
            domain=DOMAIN,
            bearer_token=TOKEN,
        )
    )
    return account.account_id, agent.agent_uuid


def call_records(stack: LocalStack, account_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """This account's call records: count per status, and the node's counters summed."""
    from shared.models import Call

    statuses: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    pages = stack.repo.client.get_paginator("scan").paginate(
        TableName=stack.repo.table,
        FilterExpression="account_id = :a AND sk = :s",
        ExpressionAttributeValues={":a": {"S": account_id}, ":s": {"S": "CALL"}},
    )
    for page in pages:
        for item in page.get("Items", []):
            call = stack.repo.get(Call, item["call_uuid"]["S"])
            if call is None:
                continue
            statuses[f"{call.status.value} {call.hangup_cause or ''}".strip()] += 1
            for name in ("packets_in", "packets_out", "provider_dropped_out", "provider_malformed"):
                value = call.stats.get(name)
                if isinstance(value, int):
                    sums[name] += value
    return dict(statuses), dict(sums)


# -- one stream run ----------------------------------------------------------------------------


def run_streams(
    plan: Plan,
    *,
    stack: LocalStack,
    cloudonix: FakeCloudonix,
    workdir: Path,
    run: int,
    wait_quiet: float,
    workers: int | None,
) -> StreamReport:
    """One load of ``plan.calls`` streams: bot, account, node, idle sample, the provider load,
    then every peer stopped (in ``finally``, so an error or Ctrl-C leaves nothing running)
    before the figures are read back."""
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    load = wait_until_quiet(wait_quiet, BUSY_BOX_PERCENT, QUIET_POLL_S)
    if load > BUSY_BOX_PERCENT:
        notes.append(
            f"the box was {load:.0f} % busy (of one core) before this run started: "
            "other work competes with the node"
        )
    prefix = f"bench-{secrets.token_hex(3)}-"
    for i in range(plan.calls):
        cloudonix.add_session(f"{prefix}{i}", DOMAIN)
    bot = BenchBot(workdir / "bot", clear_every=0, tone_at=0.0, clear_after=0.0)
    node: EdgeNode | None = None
    provider: ManagedProcess | None = None
    sampler = CpuSampler()
    out = workdir / "provider_load.json"
    idle: tuple[float, float] | None = None
    node_rc: int | None = None
    hold = SETTLE_S + plan.duration_s  # all bridged → first stop: the window plus its settle
    longest = 2 * plan.ramp_s + SETUP_LIMIT_S + hold + LOAD_DRAIN_S
    try:
        bot.start()
        account_id, agent_uuid = provision_agent(stack, bot.url, plan.calls)
        node = EdgeNode(
            workdir / "edge",
            max_calls=plan.calls,
            env={**stack.env, "AGERA_CLOUDONIX_API_BASE": cloudonix.base_url},
            workers=workers,
        )
        node.start()
        sampler.pids.update({"node": node.pid, "bot": bot.process.pid})
        sampler.start()
        time.sleep(STARTUP_TAIL_S)
        idle_from = time.time()
        time.sleep(IDLE_S)
        idle = (idle_from, time.time())
        url = f"ws://{HOST}:{node.ws_port}/api/v1/agent-stream/cloudonix/{agent_uuid}"
        argv = [sys.executable, str(LOAD_SCRIPT), "--url", url, "--streams", str(plan.calls)]
        argv += ["--rate", f"{plan.rate:g}", "--hold", f"{hold:g}"]
        argv += ["--setup-limit", f"{SETUP_LIMIT_S:g}"]
        argv += ["--session-prefix", prefix, "--out", str(out)]
        provider = ManagedProcess(
            "provider-load", argv, log_path=workdir / "load.log", cwd=REPO_ROOT
        )
        print(
            f"[{plan.calls} streams, run {run}] at {plan.rate:g}/s into {HOST}:{node.ws_port}, "
            f"all up together {hold:g} s; about {2 * plan.ramp_s + hold + 2:.0f} s",
            flush=True,
        )
        provider.start()
        sampler.pids["provider"] = provider.pid
        provider.wait(longest + LOAD_MARGIN_S)
        time.sleep(HANGUP_SETTLE_S)
    finally:
        sampler.stop()
        if provider is not None:
            provider.stop()
        if node is not None:
            node_rc = node.stop()
        bot.stop()
    if node is None or not out.exists():
        raise PeerError(f"the provider load wrote no result ({workdir / 'load.log'})")
    if node_rc not in (None, 0):
        notes.append(f"the node exited with {node_rc} on SIGTERM (0 expected)")
    result = json.loads(out.read_text())
    if result.get("interrupted"):
        notes.append("the provider load did not finish in time: its streams were cut")
    if result.get("setup_limit_hit"):
        notes.append(
            f"some streams were not bridged {SETUP_LIMIT_S:g} s after the last connect: "
            "the others went on without them"
        )
    records, sums = call_records(stack, account_id)
    report = analyse_streams(
        plan.calls,
        run=run,
        result=result,
        sampler=sampler,
        idle=idle,
        sessions=bot.sessions(),
        node_log=node_log_summary(node.process.log_path),
        node_rc=node_rc,
        records=records,
        record_stats=sums,
        notes=notes,
    )
    report.moto_errors = MOTO_ERRORS.take()
    return report


# -- the SIP comparison ------------------------------------------------------------------------


def run_sip(
    plan: Plan,
    *,
    stack: LocalStack,
    media: MediaFiles,
    workdir: Path,
    wait_quiet: float,
    workers: int | None,
) -> RunReport:
    """bench/calls.py's run for the same N with its echo bot and no clear calls, so that the
    bot does for a SIP call what it does for a stream: echo, nothing else."""
    return run_once(
        plan,
        stack=stack,
        workdir=workdir,
        media=media,
        clear_calls=0,
        node_command=None,
        profile_dir=None,
        wait_quiet=wait_quiet,
        workers=workers,
        driver="twilio",
    )


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--streams", type=int, nargs="+", default=list(DEFAULT_STREAMS), help="N per run (100)"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds all streams are up together (20)"
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat each N this many times (1)")
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"new streams per second ({DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--compare-sip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run N bridged SIP calls (bench/calls.py) for the CPU ratio (on)",
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
    parser.add_argument("--keep", type=Path, help="keep logs and results in this directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.streams) < 1 or args.duration <= 0 or args.rate <= 0 or args.runs < 1:
        parser.error("--streams, --runs and --rate must be >= 1 and --duration > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    logging.getLogger("werkzeug").addFilter(MOTO_ERRORS)
    reports: list[StreamReport] = []
    cloudonix = FakeCloudonix()
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as scratch:
        root = args.keep or Path(scratch)
        try:
            cloudonix.start()
            cloudonix.add_domain(DOMAIN, TOKEN)
            media = make_media(root / "media") if args.compare_sip else None
            for n in args.streams:
                plan = Plan(calls=n, rate=args.rate, duration_s=args.duration, find_max=False)
                for run in range(1, args.runs + 1):
                    with fresh_stack() as stack:
                        report = run_streams(
                            plan,
                            stack=stack,
                            cloudonix=cloudonix,
                            workdir=root / f"streams-{n}-run{run}",
                            run=run,
                            wait_quiet=args.wait_quiet,
                            workers=args.workers,
                        )
                    release_all()
                    if media is not None:
                        with fresh_stack() as stack:
                            sip = run_sip(
                                plan,
                                stack=stack,
                                media=media,
                                workdir=root / f"sip-{n}-run{run}",
                                wait_quiet=args.wait_quiet,
                                workers=args.workers,
                            )
                        release_all()
                        report.sip_cpu_ms_per_call_s = sip.cpu_ms_per_call_s
                        report.sip = {**sip_summary(sip), "moto_errors": MOTO_ERRORS.take()}
                    print(render(report), flush=True)
                    reports.append(report)
        except PeerError as exc:
            print(f"bench/streams.py: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                "bench/streams.py: interrupted; every process it started was stopped",
                file=sys.stderr,
            )
            return 130
        finally:
            cloudonix.stop()
        if reports:
            print()
            print(table(reports))
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2))
        if args.keep:
            print(f"logs and results kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
