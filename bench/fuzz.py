"""The long fuzz run: millions of SIP, RTP, RTCP and bot inputs at a live node, a call going on.

Run: .venv/bin/python bench/fuzz.py [--datagrams 2_000_000] [--bot 200_000] [--seconds 600]
         [--seed N] [--rate 4000] [--bot-rate 600] [--keep DIR] [--no-replay]
     .venv/bin/python bench/fuzz.py --show KIND:INDEX [--seed N]   (the input's bytes, in hex)

The same run as tests/interop/test_fuzz.py (tests/interop/fuzz_run.py says what runs and how
the node is configured so the fuzz is parsed, not banned), longer: moto in this process, a
real ``agera edge`` process, sipp call A to an echo bot and call B to a fuzzing bot, and the
UDP fuzzer process. ``--datagrams`` is split SIP 40 %, RTP 44 %, RTCP 16 %.

Printed: inputs sent per kind and the rate achieved; the node's RSS before and after the fuzz
(steady growth over a long run is a leak; the first minute's growth is transaction state and
caches filling); whether the node stayed up and answered; call A's media (sequence loss, the
longest gap in the node's RTP, marks echoed); and every failure the node logged, grouped by
exception, known bugs (tests/interop/fuzz_checks.py, KNOWN_BUGS) apart. For each new failure the
UDP inputs sent in the second before it are replayed one at a time against a fresh node
until one reproduces it; its (seed, kind, index) and hex are printed. Bot inputs are not
replayed (they need a call), only listed. Exit status: 0 when the node survived with no new
failure and call A was undisturbed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calls import start_local_stack
from shared.dynamo.repository import Repository
from shared.secret_box import SecretBox
from tests.interop.edge import EdgeNode as EdgeProcess
from tests.interop.fuzz_checks import LogProblem, scan_log
from tests.interop.fuzz_run import FUZZ_NODE_ENV, FuzzPlan, FuzzReport, run_fuzz
from tests.interop.media import make_media
from tests.interop.peers import Peers
from tests.interop.ports import HOST
from tests.interop.sipp import default_peers_dir
from tests.support.fuzz_bot import bot_message
from tests.support.fuzz_udp import SendLog, UdpPlan, UdpSender

WINDOW_S = 1.0  # inputs sent this long before a failure's log line are suspects
MAX_SUSPECTS = 5000
REPLAY_GAP_S = 0.02
MAX_NODE_GAP_MS = 500.0  # as the test: a longer silence towards call A is a disturbance


def _plan(args: argparse.Namespace) -> FuzzPlan:
    total = args.datagrams
    return FuzzPlan(
        seed=args.seed,
        sip=total * 40 // 100,
        rtp=total * 44 // 100,
        rtcp=total - total * 40 // 100 - total * 44 // 100,
        bot=args.bot,
        seconds=args.seconds,
        rate=args.rate,
        bot_rate=args.bot_rate,
        keep_send_log=True,
    )


def _show(spec: str, seed: int) -> None:
    kind, _, index = spec.partition(":")
    if kind == "bot":
        message = bot_message(seed, int(index), "MZ" + "0" * 32)
        data = message if isinstance(message, bytes) else message.encode("utf-8")
    else:
        plan = UdpPlan(seed=seed, host=HOST, sip_port=5060, rtp_range=(20000, 20001))
        sender = UdpSender(plan)
        try:
            data = sender.datagram(kind, int(index), 0)[0]
        finally:
            sender.close()
    note = (
        " (its Via names port 5060 and the fuzzer's port as replayed here)" if kind == "sip" else ""
    )
    print(f"seed {seed} {kind}:{index}, {len(data)} bytes{note}")
    print(data.hex())


def _groups(problems: list[LogProblem]) -> dict[str, list[LogProblem]]:
    groups: dict[str, list[LogProblem]] = defaultdict(list)
    for problem in problems:
        groups[problem.known or problem.last_line[:160]].append(problem)
    return groups


def _replay(report: FuzzReport, problem: LogProblem, workdir: Path, env: dict[str, str]) -> str:
    """Find the UDP input that reproduces ``problem`` on a fresh node (see module doc)."""
    if problem.at is None or report.send_log is None:
        return "no time on the log line: cannot pick suspects"
    log = SendLog.load(report.send_log)
    # Log times have millisecond resolution and are written after the input was handled.
    suspects = log.between(problem.at - WINDOW_S, problem.at + 0.002)
    udp = [s for s in suspects if s[0] != "bot"][-MAX_SUSPECTS:]
    if not udp:
        return "no UDP input in the window: a bot input, or state built up over time"
    node = EdgeProcess(workdir, echo=False, trust_loopback=False, env={**env, **FUZZ_NODE_ENV})
    node.start()
    try:
        raw = dict(report.udp_plan)
        raw.update(sip_port=node.sip_port, rtp_range=tuple(node.rtp_ports), log_path=None)
        raw["live_ports"], raw["protected_ports"] = [], []
        sender = UdpSender(UdpPlan(**raw))
        seen = 0
        try:
            for kind, index, sock in reversed(udp):  # the latest suspects first
                sender.replay([(kind, index, sock)], REPLAY_GAP_S)
                found = scan_log(node.process.log_path.read_text(errors="replace"))
                if len(found) > seen and any(
                    f.last_line == problem.last_line for f in found[seen:]
                ):
                    data = sender.datagram(kind, index, sock if kind == "sip" else None)[0]
                    return f"reproduced by seed {report.plan.seed} {kind}:{index}: {data.hex()}"
                seen = len(found)
        finally:
            sender.close()
    finally:
        node.stop()
    return f"none of {len(udp)} UDP suspects reproduced it alone (state, or a bot input)"


def _print(report: FuzzReport, elapsed: float) -> bool:
    plan = report.plan
    rate = report.total / report.fuzz_seconds if report.fuzz_seconds else 0.0
    print(f"seed {plan.seed}: {report.total} inputs in {report.fuzz_seconds:.1f} s ({rate:.0f}/s)")
    for kind, count in report.sent.items():
        print(f"  {kind:5} {count:>10}")
    print(f"  SIP answers {report.answers}, send errors {report.udp_send_errors}")
    print(f"node RSS {report.rss_before_kib} KiB before, {report.rss_after_kib} KiB after")
    print(
        f"node after the fuzz: alive {report.alive_after_fuzz}, OPTIONS "
        f"{report.options_after}, /health {report.health_after} (after "
        f"{report.health_recovery_s:.1f} s), exit {report.node_returncode}"
    )
    a = report.call_a
    record = a.record
    print(
        f"call A: sipp ok {a.sipp is not None and a.sipp.ok}, record "
        f"{record.status.value if record else None}/{record.hangup_cause if record else None}, "
        f"loss {a.from_node.lost if a.from_node else None}, longest node gap "
        f"{a.max_gap_ms or 0:.0f} ms, timestamp gaps "
        f"{a.from_node.timestamp_gaps if a.from_node else None}, marks "
        f"{a.marks_echoed}/{a.marks_sent}"
    )
    print(
        f"call C after the fuzz: sipp ok {report.call_c.sipp is not None and report.call_c.sipp.ok}"
    )
    print(f"whole run {elapsed:.0f} s; node log {report.node_log}")
    for name, problems in _groups(report.problems).items():
        label = "known bug" if problems[0].known else "NEW"
        print(f"{label}: {len(problems)} x {name}")
    undisturbed = (
        a.sipp is not None
        and a.sipp.ok
        and a.from_node is not None
        and a.from_node.lost == 0
        and (a.max_gap_ms or 0) < MAX_NODE_GAP_MS
        and a.marks_echoed == a.marks_sent
    )
    return bool(
        report.alive_after_fuzz
        and report.options_after == 200
        and report.health_after == 200
        and report.node_returncode == 0
        and not report.unknown_problems
        and undisturbed
        and report.call_c.sipp is not None
        and report.call_c.sipp.ok
    )


def _repo(stack: Any) -> Repository:
    """The stack's table, writing the account's webhook secret unsealed (a table from before
    sealing, which nodes still read; docs/secrets.md): the run needs no KMS key."""
    import boto3

    session = boto3.session.Session()
    table = stack.repo.table
    legacy = SecretBox(
        lambda: session.client("kms"), key_id=None, table=table, allow_plaintext=True
    )
    return Repository(session.client("dynamodb"), table, secrets=legacy)


async def _run(args: argparse.Namespace, workdir: Path) -> int:
    moto, stack = start_local_stack()
    started = time.monotonic()
    try:
        peers = Peers(workdir / "peers", make_media(workdir / "media"), default_peers_dir())
        try:
            report = await run_fuzz(
                _plan(args), peers=peers, repo=_repo(stack), workdir=workdir, env=stack.env
            )
        finally:
            peers.close()
        ok = _print(report, time.monotonic() - started)
        if not args.no_replay:
            for name, problems in _groups(report.unknown_problems).items():
                where = _replay(
                    report, problems[0], workdir / f"replay-{secrets.token_hex(3)}", stack.env
                )
                print(f"{name}\n  {where}\n  first of them:\n{problems[0].text[-3000:]}")
        return 0 if ok else 1
    finally:
        moto.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datagrams", type=int, default=2_000_000)
    parser.add_argument("--bot", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=4000.0)
    parser.add_argument("--bot-rate", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, default=None, help="keep logs here")
    parser.add_argument("--no-replay", action="store_true")
    parser.add_argument("--show", metavar="KIND:INDEX", default=None)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbits(32)
    if args.show:
        _show(args.show, args.seed)
        return 0
    print(f"fuzz seed {args.seed} (rerun with --seed {args.seed})", flush=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(args, args.keep))
    with tempfile.TemporaryDirectory(prefix="agera-fuzz-") as tmp:
        return asyncio.run(_run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
