"""A fuzz run against a live ``agera edge`` process, with a real call going on throughout.

Shared by tests/interop/test_fuzz.py (about 100k inputs, under a minute) and bench/fuzz.py
(millions, minutes); both judge the `FuzzReport` this returns.

The set-up: one account with two numbers at moto, one routed to a well-behaved echo bot and
one to a fuzzing bot. sipp call A talks to the echo bot (caller audio both ways, a mark every
250 ms); sipp call B's bot sends the bot fuzz stream. Meanwhile a separate process
(tests/support/fuzz_udp.py) sends SIP to the node's SIP port and RTP/RTCP to the calls' media
ports and to unused ports of the node's RTP range. Afterwards: does the node answer (SIP
OPTIONS, ``/health``), did call A's media and marks flow, does A end with the node's BYE and
get its record, does a new call C work, does the node exit 0, and did it log any failure.

How the node is configured, and why (`FUZZ_NODE_ENV`): a fuzzer on loopback would otherwise be
banned after ten malformed requests and rate limited to 50 requests a second, after which its
datagrams are dropped unparsed and the fuzz tests nothing. So 127.0.0.1 is a trusted source
(``AGERA_SIP_TRUSTED_SOURCES``, like a carrier trunk: never banned or rate limited, and its
INVITEs are routed), the loopback-wide trust is off so that a share of the SIP fuzz, sent from
127.0.0.2 and up, takes the untrusted path (rate limiter, digest challenge), and banning is off
(``AGERA_SIP_BAN_FAILURES=0``) so those sources stay parsed too. The bot limits are raised so
that the fuzzing bot's messages are parsed rather than dropped unread by its inbound budget.
Echo is off: a fuzzed INVITE can then never be answered, so the node never sends media to an
address a mutated SDP named.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from shared.models import Account, Call, Route
from tests.interop.capture import StreamStats, read_rtp, split_streams, stream_stats
from tests.interop.edge import EdgeNode as EdgeProcess
from tests.interop.fuzz_checks import (
    LogProblem,
    health_status,
    options_status,
    rss_kib,
    scan_log,
)
from tests.interop.gateway import add_number, started, wait_record
from tests.interop.peers import Peers
from tests.interop.ports import HOST, bound_udp_ports
from tests.interop.sipp import MEDIA_PORT_SPAN, SippResult, SippRun
from tests.support.fuzz_bot import bot_message
from tests.support.twilio_bot import BotSession, StrictTwilioBot

__all__ = ["FUZZ_NODE_ENV", "CallCheck", "FuzzPlan", "FuzzReport", "run_fuzz"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "tests" / "interop" / "scenarios" / "uac_talk_until_bye_long.xml"
FUZZER_NICE = 5  # the fuzzer yields the CPU to the node: a stall is then the node's own
MARK_EVERY_S = 0.25
SETTLE_S = 1.0  # caller audio flowing before the fuzz starts
WAIT_S = 15.0
HEALTH_RECOVERY_S = 15.0  # /health back to 200 after the fuzz, at most
FUZZ_NODE_ENV = {
    "AGERA_TRUST_LOOPBACK": "false",
    "AGERA_SIP_TRUSTED_SOURCES": f"{HOST}/32",
    "AGERA_SIP_BAN_FAILURES": "0",
    "AGERA_BOT_INBOUND_MESSAGES_PER_SECOND": "100000",
    "AGERA_BOT_INBOUND_REALTIME_FACTOR": "100",
    "AGERA_BOT_INBOUND_BURST_SECONDS": "300",
    "AGERA_ORIGINATE_POLL_SECONDS": "1",
}


@dataclass
class FuzzPlan:
    """Counts are upper bounds, ``seconds`` bounds the fuzz phase; ``rate`` is UDP datagrams
    a second and ``bot_rate`` bot messages a second."""

    seed: int
    sip: int
    rtp: int
    rtcp: int
    bot: int
    seconds: float
    rate: float = 4000.0
    bot_rate: float = 800.0
    untrusted_sources: int = 4
    untrusted_share: float = 0.1
    keep_send_log: bool = False

    @property
    def udp_counts(self) -> dict[str, int]:
        return {"sip": self.sip, "rtp": self.rtp, "rtcp": self.rtcp}


@dataclass
class CallCheck:
    """How one real call fared: its sipp result, record, and what the node sent it."""

    sipp: SippResult | None = None
    record: Call | None = None
    from_node: StreamStats | None = None
    max_gap_ms: float | None = None  # longest silence between the node's packets to the caller
    marks_sent: int = 0
    marks_echoed: int = 0
    audio_to_bot_ms: int = 0
    bot_max_gap_ms: float | None = None  # longest pause between media messages at the bot
    violations: list[str] = field(default_factory=list)


@dataclass
class FuzzReport:
    plan: FuzzPlan
    sent: dict[str, int] = field(default_factory=dict)
    udp_send_errors: int = 0
    answers: int = 0
    fuzz_seconds: float = 0.0
    bot_stopped_early: bool = False
    alive_after_fuzz: bool = False
    options_after: int | None = None
    health_after: int | None = None
    health_recovery_s: float = 0.0  # how long /health took to say 200 again
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    call_a: CallCheck = field(default_factory=CallCheck)
    call_b: CallCheck = field(default_factory=CallCheck)
    call_c: CallCheck = field(default_factory=CallCheck)
    node_returncode: int | None = None
    problems: list[LogProblem] = field(default_factory=list)
    node_log: Path | None = None
    send_log: Path | None = None
    phases: dict[str, float] = field(default_factory=dict)
    udp_plan: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def unknown_problems(self) -> list[LogProblem]:
        return [p for p in self.problems if p.known is None]

    @property
    def known_problems(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for problem in self.problems:
            if problem.known is not None:
                counts[problem.known] = counts.get(problem.known, 0) + 1
        return counts


def _caller(peers: Peers, node: EdgeProcess, number: str, seconds: float) -> SippRun:
    return peers.sipp(
        str(SCENARIO), remote=node.address, service=number, calls=1, timeout_s=seconds
    )


def _protected(*callers: SippRun) -> list[int]:
    """UDP ports of the real peers: no SIP fuzz datagram may name them (fuzz_sip.SipAim)."""
    ports: list[int] = []
    for run in callers:
        ports += [run.local_port, run.control_port]
        ports += range(run.media_port, run.media_port + MEDIA_PORT_SPAN)
    return ports


async def _send_marks(session: BotSession, stop: asyncio.Event) -> None:
    index = 0
    while not stop.is_set() and not session.done.is_set():
        await session.send_mark(f"a{index}")
        index += 1
        with anyio.move_on_after(MARK_EVERY_S):
            await stop.wait()


async def _fuzz_bot(session: BotSession, plan: FuzzPlan, deadline: float) -> tuple[int, bool]:
    """Send the bot fuzz stream on ``session``; (messages sent, whether the call ended first)."""
    assert session.stream_sid is not None
    loop = asyncio.get_running_loop()
    due = loop.time()
    sent = 0
    for index in range(plan.bot):
        if session.done.is_set():
            return sent, True
        if loop.time() > deadline:
            break
        try:
            await session.send_raw(bot_message(plan.seed, index, session.stream_sid))
        except Exception:  # the connection closed under us: the call ended
            return sent, True
        sent += 1
        due += 1 / plan.bot_rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif index % 64 == 0:
            await asyncio.sleep(0)  # let the bots' readers run
    return sent, False


async def _run_udp(plan: dict[str, Any], seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "nice",
        "-n",
        str(FUZZER_NICE),
        sys.executable,
        "-m",
        "tests.support.fuzz_udp",
        json.dumps(plan),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    try:
        async with asyncio.timeout(seconds):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the UDP fuzzer ran past {seconds:g} s") from None
    if proc.returncode != 0:
        raise AssertionError(f"the UDP fuzzer failed: {err.decode(errors='replace')[-2000:]}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def _media_check(check: CallCheck, capture_path: Path, caller: SippRun) -> None:
    packets = read_rtp(capture_path, rtp_ports=[caller.media_port], payload=False)
    to_caller = [p for p in packets if p.dst[1] == caller.media_port]
    streams = split_streams(to_caller)
    if streams:
        key, stream = max(streams.items(), key=lambda item: len(item[1]))
        check.from_node = stream_stats(key, stream)
        times = [p.time for p in stream]
        check.max_gap_ms = max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


def _bot_check(check: CallCheck, session: BotSession) -> None:
    check.marks_sent = len(session.marks_sent)
    check.marks_echoed = len(session.mark_echoes)
    check.audio_to_bot_ms = len(session.audio) // 8
    media_at = [r.at for r in session.received if r.message and r.message.get("event") == "media"]
    check.bot_max_gap_ms = max((b - a for a, b in itertools.pairwise(media_at)), default=0.0) * 1000
    check.violations = list(session.violations)


async def _end_call(
    session: BotSession, caller: SippRun, check: CallCheck, repo: Any, call_uuid: str
) -> None:
    """The bot hangs up (close 1000): the node sends the caller a BYE and writes the record."""
    if not session.done.is_set():
        await session.close(1000, "fuzz run over")
    check.sipp = await anyio.to_thread.run_sync(caller.wait, WAIT_S)
    check.record = await wait_record(repo, call_uuid, seconds=WAIT_S)


def _uuid(session: BotSession) -> str:
    assert session.start is not None
    return str(session.start["start"]["customParameters"]["call_uuid"])


async def run_fuzz(
    plan: FuzzPlan,
    *,
    peers: Peers,
    repo: Any,
    workdir: Path,
    env: dict[str, str] | None = None,
) -> FuzzReport:
    """One fuzz run (see the module docstring); raises only when the harness itself fails."""
    report = FuzzReport(plan)
    clock = time.monotonic
    t0 = clock()
    tag = uuid.uuid4().hex[:10]
    call_seconds = plan.seconds + 120
    async with StrictTwilioBot(echo=True) as good, StrictTwilioBot() as fuzzing:
        account = Account(name="fuzz run", webhook_secret=uuid.uuid4().hex)
        repo.put(account)
        good_number = add_number(repo, account, Route(socket_url=good.url))
        fuzz_number = add_number(repo, account, Route(socket_url=fuzzing.url))
        node = EdgeProcess(
            workdir / "edge",
            echo=False,
            trust_loopback=False,
            env={**(env or {}), **FUZZ_NODE_ENV, "AGERA_NODE_ID": f"fuzz-{tag}"},
        )
        report.node_log = node.process.log_path
        try:
            await anyio.to_thread.run_sync(node.start)
            report.phases["node_start"] = clock() - t0
            caller_a = _caller(peers, node, good_number, call_seconds)
            caller_b = _caller(peers, node, fuzz_number, call_seconds)
            capture = peers.capture("fuzz-call-a", ports=[caller_a.media_port])
            await anyio.to_thread.run_sync(capture.start)
            await anyio.to_thread.run_sync(caller_a.start)
            session_a = await started(good)
            await anyio.to_thread.run_sync(caller_b.start)
            session_b = await started(fuzzing)
            await session_a.wait_for(
                lambda: len(session_a.audio) >= 8000 * SETTLE_S, "caller audio", WAIT_S
            )
            low, high = node.rtp_ports
            live = sorted(p for p in bound_udp_ports() if low <= p <= high)
            report.rss_before_kib = rss_kib(node.pid)
            report.phases["calls_up"] = clock() - t0

            udp_plan: dict[str, Any] = {
                "seed": plan.seed,
                "host": HOST,
                "sip_port": node.sip_port,
                "rtp_range": [low, high],
                "live_ports": live,
                "protected_ports": _protected(caller_a, caller_b),
                "counts": plan.udp_counts,
                "seconds": plan.seconds,
                "rate": plan.rate,
                "untrusted_sources": [f"127.0.0.{2 + i}" for i in range(plan.untrusted_sources)],
                "untrusted_share": plan.untrusted_share,
                "log_path": str(workdir / "sent.pickle") if plan.keep_send_log else None,
            }
            report.udp_plan = udp_plan
            stop_marks = asyncio.Event()
            marks = asyncio.ensure_future(_send_marks(session_a, stop_marks))
            fuzz_started = clock()
            loop = asyncio.get_running_loop()
            udp, (bot_sent, report.bot_stopped_early) = await asyncio.gather(
                _run_udp(udp_plan, plan.seconds + 30),
                _fuzz_bot(session_b, plan, loop.time() + plan.seconds),
            )
            report.fuzz_seconds = clock() - fuzz_started
            report.sent = {**udp["sent"], "bot": bot_sent}
            report.udp_send_errors = int(udp["send_errors"])
            report.answers = int(udp["answers"])
            if plan.keep_send_log:
                report.send_log = workdir / "sent.pickle"
            report.phases["fuzz_done"] = clock() - t0

            report.alive_after_fuzz = node.process.running
            report.options_after = await anyio.to_thread.run_sync(
                options_status, HOST, node.sip_port
            )
            # The node sheds load while its loop lags (node_capacity: /health 503 "full", with
            # hysteresis), so right after a hard fuzz it may still say full: wait for it.
            recovering = clock()
            while True:
                report.health_after = await anyio.to_thread.run_sync(
                    health_status, HOST, node.ws_port
                )
                if report.health_after == 200 or clock() - recovering > HEALTH_RECOVERY_S:
                    break
                await anyio.sleep(0.5)
            report.health_recovery_s = clock() - recovering
            report.rss_after_kib = rss_kib(node.pid)
            stop_marks.set()
            await marks
            with anyio.move_on_after(5):
                await session_a.wait_for(
                    lambda: len(session_a.mark_echoes) >= len(session_a.marks_sent),
                    "mark echoes",
                    5,
                )
            _bot_check(report.call_a, session_a)
            _bot_check(report.call_b, session_b)
            await _end_call(session_a, caller_a, report.call_a, repo, _uuid(session_a))
            await _end_call(session_b, caller_b, report.call_b, repo, _uuid(session_b))
            await anyio.to_thread.run_sync(capture.stop)
            _media_check(report.call_a, capture.path, caller_a)
            report.phases["calls_ended"] = clock() - t0

            caller_c = _caller(peers, node, good_number, 60)
            await anyio.to_thread.run_sync(caller_c.start)
            session_c = await started(good)
            await session_c.wait_for(lambda: len(session_c.audio) >= 8000, "call C audio", WAIT_S)
            await session_c.send_mark("c0")
            with anyio.move_on_after(5):
                await session_c.wait_for(lambda: bool(session_c.mark_echoes), "mark echo", 5)
            _bot_check(report.call_c, session_c)
            await _end_call(session_c, caller_c, report.call_c, repo, _uuid(session_c))
            report.phases["call_c"] = clock() - t0
        finally:
            report.node_returncode = await anyio.to_thread.run_sync(node.stop)
            report.phases["node_stopped"] = clock() - t0
    report.problems = scan_log(node.process.log_path.read_text(errors="replace"))
    return report
