"""N calls with churn for M minutes: is the node's memory flat, and does every call end?

Run: .venv/bin/python bench/soak.py [--calls 200] [--minutes 30] [--seed 1] [--warmup S]
         [--talk 20 60] [--rate R] [--clear-every 10] [--sample-every 5] [--workers N]
         [--tracemalloc [FRAMES]] [--wait-quiet S] [--keep DIR] [--json F]

What runs (bench/calls.py's building blocks, each peer a process of its own): moto (DynamoDB +
SQS from template.yaml) in a process of its own, the records of ended calls counted and deleted
as the soak goes so that moto does not slow down with its table (bench/lib/soak_stack.py), the node (``agera edge``), the Twilio-stream echo
bot (bench/peers/echo_bot_fast.py: echoes every ``media``; every ``--clear-every``-th call also
queues 5 s of tone with a mark behind it 3 s after its start and sends ``clear`` 2.5 s later, so
the playout queue, marks and clear are exercised all through the soak) and one sipp caller
(bench/sipp/uac_soak.xml: speech at 50 pps, one DTMF digit, BYE).

Churn: sipp runs with ``-l N`` (at most N calls up) and a call rate (``--rate``) above N / the
mean call length, so it is always at the limit and starts a call the moment one ends. Each call
talks for its own time, drawn uniformly from ``--talk LOW HIGH`` seconds by a generator seeded
with ``--seed`` and handed to sipp as an injection file (one line per call, in order), so a run
is repeatable and calls end and start all the time at about N / mean length a second: both the
setup path (INVITE, route, slot, record, bot connection) and the teardown path (BYE, bot close,
final record, slot release) run thousands of times. After ``--minutes``, sipp gets SIGUSR1: it
starts no call and exits once its live calls have ended.

Sampled every ``--sample-every`` s (bench/lib/soak_sampling.py): the node tree's RSS (and PSS),
open fds, threads, and its ``/health`` live calls. After the callers stop: the wait for the
node's live count to reach 0, then the account's call records (any not final is stuck), the
concurrency slot counter (``ACCOUNT#<id>`` / ``SLOTS``, shared/call_slots.py) and its ``SLOT#``
items, and the bot connections the node never closed. Figures and goals: bench/lib/soak_report.py
(RSS flat within ±5 % after warm-up, ≤ 1 KB kept per finished call, ≤ 0.2 MB per live call, no
stuck call, fds back to idle). Exit status 1 when a goal fails, 2 when the run itself failed.

``--tracemalloc`` runs the node under tracemalloc (bench/peers/traced_node.py) and compares
snapshots taken idle, after warm-up and after the drain (bench/lib/soak_trace.py): where a leak
RSS shows is allocated. It slows the node: diagnose with it, do not measure with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calls import LocalStack, provision_number, start_local_stack
from bench.lib.calls_drivers import BenchBot
from bench.lib.cpu_sampling import CLOCK_TICKS, wait_until_quiet
from bench.lib.sipp_load import SIPP_TIMEOUT_MARGIN_S, interrupt
from bench.lib.soak_report import NEAR_N, Records, SoakInputs, SoakReport, analyse, render
from bench.lib.soak_sampling import KB, NodeSampler, read_health
from bench.lib.soak_stack import Janitor, table_kinds
from bench.lib.soak_trace import compare, request_snapshot
from bench.streams import MotoErrors
from tests.interop.edge import EdgeNode
from tests.interop.media import make_media
from tests.interop.ports import HOST, release_all
from tests.interop.process import PeerError
from tests.interop.sipp import SippRun, call_timings, parse_stats

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO = REPO_ROOT / "bench" / "sipp" / "uac_soak.xml"
TRACED_NODE = REPO_ROOT / "bench" / "peers" / "traced_node.py"
DEFAULT_CALLS = 200
DEFAULT_MINUTES = 30.0
DEFAULT_TALK_S = (20.0, 60.0)
# New calls a second at most, by default RATE_HEADROOM x N / mean call length: enough to keep N
# up, and when calls fail (each is replaced at once) the failures come no faster than that.
RATE_HEADROOM = 1.25
MIN_RATE = 1.0
DEFAULT_CLEAR_EVERY = 10
DEFAULT_WARMUP_S = 120.0
WARMUP_SHARE = 0.25  # of the run, at most, when --warmup is not given (short runs)
DTMF_TAIL_S = 1.5  # uac_soak.xml: the DTMF digit and its pause before the BYE
TONE_AT_S = 3.0  # clear calls: tone this long after their start
CLEAR_AFTER_S = 2.5
IDLE_S = 10.0  # the node measured with no call before sipp starts
PROGRESS_S = 30.0
DRAIN_TIMEOUT_S = 60.0  # after sipp's exit, for the node's live count to reach 0
RECORDS_TIMEOUT_S = 30.0  # for the last final records and slot releases to land
POLL_S = 0.5
BUSY_BOX_PERCENT = 20.0
QUIET_POLL_S = 5.0
PAGE = 100  # the listing's largest page (shared/dynamo/mapping.py)
MAX_PAGES = 2000


# -- the control plane -------------------------------------------------------------------------


# -- the callers -------------------------------------------------------------------------------


def write_talk_times(path: Path, *, seed: int, count: int, low_s: float, high_s: float) -> None:
    """sipp's injection file: one talk time (ms) per call, in call order, from ``seed``."""
    rng = random.Random(seed)
    lines = ["SEQUENTIAL"] + [f"{round(rng.uniform(low_s, high_s) * 1000)};" for _ in range(count)]
    path.write_text("\n".join(lines) + "\n")


def sipp_counts(sipp: SippRun) -> tuple[int, int, int, int]:
    """(created, successful, failed, current) from sipp's latest -trace_stat row."""
    try:
        stats = parse_stats(sipp.stats_path.read_text(errors="replace"))
    except OSError:
        stats = None
    if stats is None:
        return 0, 0, 0, 0
    return stats.created, stats.successful, stats.failed, stats.current


# -- the control plane after the run -----------------------------------------------------------


def read_records(stack: LocalStack, account_id: str) -> Records:
    """The account's call records, and what its concurrency slots say."""
    from shared.call_slots import counter_key
    from shared.dynamo.mapping import account_partition
    from shared.models import Call

    records = Records()
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = stack.repo.list(
            account_partition(account_id, "CALLS"), Call, limit=PAGE, cursor=cursor
        )
        for call in page.items:
            records.total += 1
            status = str(call.status)
            records.by_status[status] = records.by_status.get(status, 0) + 1
            if not call.status.terminal:
                records.not_final.append(
                    {
                        "call_uuid": str(call.call_uuid),
                        "status": status,
                        "from": call.from_number,
                        "answered_at": call.answered_at and call.answered_at.isoformat(),
                        "media_legs": len(call.media),
                        "node_id": call.node_id,
                    }
                )
        cursor = page.next_cursor
        if cursor is None:
            break
    client, table = stack.repo.client, stack.repo.table
    item = client.get_item(TableName=table, Key=counter_key(account_id), ConsistentRead=True)
    active = item.get("Item", {}).get("active", {}).get("N")
    records.slot_counter = int(active) if active is not None else 0
    slots = client.query(
        TableName=table,
        KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
        ExpressionAttributeValues={":p": {"S": f"ACCOUNT#{account_id}"}, ":s": {"S": "SLOT#"}},
        Select="COUNT",
        ConsistentRead=True,
    )
    records.slot_items = int(slots.get("Count", 0))
    return records


def settled_records(stack: LocalStack, account_id: str) -> Records:
    """`read_records` until nothing is pending (bounded): the node writes a call's final record
    and releases its slot just after the BYE, so a read at once may catch the last few."""
    deadline = time.monotonic() + RECORDS_TIMEOUT_S
    while True:
        records = read_records(stack, account_id)
        settled = not records.not_final and not records.slot_counter and not records.slot_items
        if settled or time.monotonic() >= deadline:
            return records
        time.sleep(POLL_S * 4)


# -- one run -----------------------------------------------------------------------------------


def warmup_for(args: argparse.Namespace) -> float:
    """--warmup, or DEFAULT_WARMUP_S capped at WARMUP_SHARE of a short run."""
    if args.warmup is not None:
        return float(args.warmup)
    return min(DEFAULT_WARMUP_S, args.minutes * 60 * WARMUP_SHARE)


def wait_drained(url: str, timeout: float) -> float | None:
    """Seconds until the node's /health says 0 live calls, None if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        health = read_health(url)
        if health is not None and int(health.get("sip_calls", -1)) == 0:
            return time.monotonic() - start
        time.sleep(POLL_S)
    return None


def progress(sampler: NodeSampler, sipp: SippRun, started: float) -> str:
    latest = sampler.latest()
    created, ok, failed, current = sipp_counts(sipp)
    if latest is None:
        return f"[soak +{time.time() - started:.0f} s] no sample yet"
    return (
        f"[soak +{time.time() - started:.0f} s] node live {latest.live} (sipp {current}), "
        f"RSS {latest.rss_kb / KB:.1f} MB, fds {latest.fds}, threads {latest.threads}; "
        f"calls created {created}, completed {ok}, failed {failed}"
    )


def run(args: argparse.Namespace, stack: LocalStack, root: Path) -> SoakReport:
    notes: list[str] = []
    low, high = args.talk
    mean_call_s = (low + high) / 2 + DTMF_TAIL_S
    needed = args.calls / mean_call_s
    if args.rate is None:
        args.rate = max(MIN_RATE, math.ceil(needed * RATE_HEADROOM * 2) / 2)
    elif args.rate <= needed:
        notes.append(
            f"--rate {args.rate:g}/s is not above N / mean call length ({needed:.1f}/s): "
            "sipp cannot hold N calls up"
        )
    warmup_s = warmup_for(args)
    run_s = args.minutes * 60
    load = wait_until_quiet(args.wait_quiet, BUSY_BOX_PERCENT, QUIET_POLL_S)
    if load > BUSY_BOX_PERCENT:
        notes.append(f"the box was {load:.0f} % busy (of one core) before the run started")
    media = make_media(root / "media")
    talk_file = root / "talk_times.csv"
    expected = math.ceil(args.calls + run_s * needed * 1.5) + 100
    write_talk_times(talk_file, seed=args.seed, count=expected, low_s=low, high_s=high)
    trace_dir = root / "tracemalloc" if args.tracemalloc else None
    command = None
    if trace_dir is not None:
        command = [sys.executable, str(TRACED_NODE), str(trace_dir), str(args.tracemalloc)]
    bot = BenchBot(
        root / "bot",
        clear_every=args.clear_every,
        tone_at=TONE_AT_S,
        clear_after=CLEAR_AFTER_S,
        tone_per_call=True,
    )
    node: EdgeNode | None = None
    sipp: SippRun | None = None
    sampler: NodeSampler | None = None
    janitor: Janitor | None = None
    snapshots: dict[str, Path | None] = {}
    node_rc: int | None = None
    records = Records()
    drained_s: float | None = None
    callers_done: float | None = None
    after_drain = None
    try:
        from shared.models import Number

        bot.start()
        number = provision_number(stack, bot.target)
        found = stack.repo.get(Number, number)
        if found is None:
            raise PeerError(f"number {number} was not written")
        account_id = found.account_id
        janitor = Janitor(stack, account_id)
        janitor.start()
        node = EdgeNode(
            root / "edge",
            max_calls=args.calls,
            env=stack.env,
            command=command,
            workers=args.workers,
        )
        node.start()
        health_url = f"http://{HOST}:{node.ws_port}/health"
        sampler = NodeSampler(node.pid, health_url, period=args.sample_every)
        sampler.start()
        time.sleep(IDLE_S)
        sampler.sample_now()
        if trace_dir is not None:
            snapshots["idle"] = request_snapshot(node.pid, trace_dir, 1)
        sipp = SippRun(
            SCENARIO,
            workdir=media.directory,
            artifacts=root / "sipp",
            remote=node.address,
            service=number,
            rate=args.rate,
            limit=args.calls,
            timeout_s=run_s + high + DTMF_TAIL_S + SIPP_TIMEOUT_MARGIN_S,
            trace_messages=False,
            stat_period_s=5,
            extra=["-inf", str(talk_file)],
        )
        print(
            f"[soak] {args.calls} calls for {args.minutes:g} min to {number} on {node.address}: "
            f"talk {low:g}-{high:g} s (seed {args.seed}), new calls up to {args.rate:g}/s, "
            f"warm-up {warmup_s:g} s after {NEAR_N:.0%} of N first live",
            flush=True,
        )
        callers_start = time.time()
        sipp.start()
        next_progress = time.monotonic() + PROGRESS_S
        first_n: float | None = None
        while time.time() < callers_start + run_s:
            time.sleep(min(1.0, max(0.0, callers_start + run_s - time.time())))
            if not sipp.process.running:
                notes.append(f"sipp exited early ({sipp.process.returncode})")
                break
            latest = sampler.latest()
            live = None if latest is None else latest.live
            if first_n is None and latest is not None and live is not None:
                first_n = latest.time if live >= NEAR_N * args.calls else None
            if (
                trace_dir is not None
                and first_n is not None
                and "warm" not in snapshots
                and time.time() >= first_n + warmup_s
            ):
                snapshots["warm"] = request_snapshot(node.pid, trace_dir, 2)
            if time.monotonic() >= next_progress:
                print(progress(sampler, sipp, callers_start), flush=True)
                next_progress += PROGRESS_S
        soft_stop = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(sipp.process.pid, signal.SIGUSR1)  # no new call; exit when the last ends
        print("[soak] callers stopping: no new call, waiting for the live ones", flush=True)
        try:
            sipp.wait(high + DTMF_TAIL_S + SIPP_TIMEOUT_MARGIN_S)
            callers_done = time.time()
        except PeerError as exc:
            notes.append(f"sipp did not finish its calls after the soft stop: {exc}")
        drained_s = wait_drained(health_url, DRAIN_TIMEOUT_S)  # counted from sipp's exit
        janitor.stop()
        records = settled_records(stack, account_id)
        for status, count in janitor.deleted.items():
            records.total += count
            records.by_status[status] = records.by_status.get(status, 0) + count
        if janitor.errors:
            notes.append(f"{janitor.errors} record sweeps failed (moto busy)")
        notes.append(f"table items left, by kind: {table_kinds(stack)}")
        after_drain = sampler.sample_now()
        if trace_dir is not None:
            snapshots["drained"] = request_snapshot(node.pid, trace_dir, 3)
    finally:
        if sampler is not None:
            sampler.stop()
        if janitor is not None:
            janitor.stop()
        if sipp is not None:
            sipp.stop()
        if node is not None:
            node_rc = node.stop()
        bot.stop()
    if sipp is None or sampler is None:
        raise PeerError("the run did not start")
    final = sipp.result()
    stats = final.stats
    timings = call_timings(final.messages)
    sessions = bot.sessions()
    report = analyse(
        SoakInputs(
            calls=args.calls,
            minutes=args.minutes,
            seed=args.seed,
            warmup_s=warmup_s,
            samples=sampler.samples,
            callers_start=callers_start,
            soft_stop=soft_stop,
            callers_done=callers_done,
            drained_s=drained_s,
            after_drain=after_drain,
            created=stats.created if stats else 0,
            successful=stats.successful if stats else 0,
            failed=stats.failed if stats else 0,
            ended_at=[t.bye_at for t in timings if t.bye_at is not None],
            records=records,
            bot_sessions=len(sessions),
            bot_open_at_exit=sum(1 for s in sessions if s.get("open_at_exit")),
            clear_calls=sum(1 for s in sessions if s.get("clear_call")),
            mark_echoes=sum(1 for s in sessions if s.get("mark_echo_at")),
            node_rc=node_rc,
            notes=notes,
        ),
        clock_ticks=CLOCK_TICKS,
    )
    if stats is not None and stats.created != report.records.total:
        report.notes.append(
            f"sipp created {stats.created} calls, the control plane holds "
            f"{report.records.total} records"
        )
    if trace_dir is not None:
        print_trace(snapshots)
    return report


def print_trace(snapshots: dict[str, Path | None]) -> None:
    idle, warm, drained = (snapshots.get(k) for k in ("idle", "warm", "drained"))
    if drained is None:
        print("tracemalloc: no snapshot after the drain (the node did not write one)")
        return
    if warm is not None:
        print(compare(drained, warm, "drained - warm (N calls up)"))
    if idle is not None:
        print(compare(drained, idle, "drained - idle (before any call)"))


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="N calls kept up (200)")
    parser.add_argument(
        "--minutes", type=float, default=DEFAULT_MINUTES, help="minutes of churn (30)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the talk times (1)")
    parser.add_argument(
        "--warmup",
        type=float,
        help=f"seconds after N first live before RSS is judged ({DEFAULT_WARMUP_S:g}, at most "
        f"{WARMUP_SHARE * 100:.0f}%% of the run when not given)",
    )
    parser.add_argument(
        "--talk",
        type=float,
        nargs=2,
        default=list(DEFAULT_TALK_S),
        metavar=("LOW", "HIGH"),
        help="each call talks a uniform random time in [LOW, HIGH] s (20 60)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help=f"new calls per second at most ({RATE_HEADROOM:g} x N / mean call length)",
    )
    parser.add_argument(
        "--clear-every",
        type=int,
        default=DEFAULT_CLEAR_EVERY,
        help="every K-th call plays tone + mark and gets a clear; 0: none (10)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=5.0, help="seconds between node samples (5)"
    )
    parser.add_argument("--workers", type=int, help="AGERA_MEDIA_WORKERS for the node")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        nargs="?",
        const=1,
        metavar="FRAMES",
        help="run the node under tracemalloc and compare snapshots (diagnosis only)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help=f"wait up to N s for an idle box (< {BUSY_BOX_PERCENT:g}%%) before the run",
    )
    parser.add_argument("--keep", type=Path, help="keep logs and traces in this directory")
    parser.add_argument("--json", type=Path, help="also write the report (and samples) here")
    args = parser.parse_args(argv)
    low, high = args.talk
    if args.calls < 1 or args.minutes <= 0 or (args.rate or 1) <= 0 or not 0 < low <= high:
        parser.error("--calls, --minutes, --rate must be positive and 0 < LOW <= HIGH")
    if args.sample_every <= 0 or args.clear_every < 0:
        parser.error("--sample-every must be positive and --clear-every >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    moto: Any = None
    report: SoakReport | None = None
    moto_errors = MotoErrors()  # counted, not printed: a 40-line traceback each
    logging.getLogger("werkzeug").addFilter(moto_errors)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        try:
            moto, stack = start_local_stack(child_process=True)  # moto off our GIL
            report = run(args, stack, root)
        except PeerError as exc:
            print(f"bench/soak.py: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                "bench/soak.py: interrupted; every process it started was stopped", file=sys.stderr
            )
            return 130
        finally:
            if moto is not None:
                moto.stop()
            release_all()
        failed = moto_errors.take()
        if failed:
            report.notes.append(
                f"moto answered 500 to {sum(failed.values())} requests (botocore retries them): "
                + "; ".join(f"{n} x {text}" for text, n in failed.items())
            )
        print()
        print(render(report))
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
        if args.keep:
            print(f"logs and traces kept in {root}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
