"""sipp as a test peer: one scenario run (a caller) or a background callee, with parsed traces.

A run returns what a test asserts on: sipp's exit code, the last ``-trace_stat`` row
(SuccessfulCall, FailedCall, Retransmissions), the ``-trace_shortmsg`` lines (one per SIP message
sent or received, for ladders and setup times) and the ``<log>`` action output. Every run is
bounded twice: sipp's own ``-timeout`` (with ``-timeout_error`` so an overrun is a failure) and a
wall-clock wait that kills it a little later.

sipp resolves ``rtp_stream`` files (caller.ulaw, callee.ulaw) against its working directory, so
it runs in the media directory; its trace files are written to the test's artifacts instead.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.interop.ports import HOST, bound_udp_ports, free_port
from tests.interop.process import ManagedProcess, PeerError, tail

SIPP_BINARY = "sipp"
DEFAULT_TIMEOUT_S = 60.0  # sipp -timeout for one run unless the caller says otherwise
EXIT_GRACE_S = 15.0  # past sipp's own -timeout, before we kill it
READY_TIMEOUT_S = 10.0
STAT_PERIOD_S = 1  # -fd: how often a -trace_stat row is written
MEDIA_PORT_SPAN = 4  # -mp and -mp+2 (video echo) are bound; keep RTCP neighbours free too
DEFAULT_SERVICE = "echo"

# sipp's exit codes (sipp(1), "EXIT STATUS")
EXIT_ALL_CALLS_OK = 0
EXIT_SOME_CALLS_FAILED = 1
EXIT_INTERNAL_COMMAND = 97
EXIT_NO_CALLS = 99

_labels = itertools.count(1)


@dataclass(frozen=True)
class SippStats:
    """Cumulative counters of the last ``-trace_stat`` row (the ``(C)`` columns)."""

    successful: int
    failed: int
    retransmissions: int
    created: int
    current: int
    row: Mapping[str, str] = field(repr=False)

    def counter(self, name: str) -> int:
        """Any cumulative counter by its sipp name without ``(C)``, e.g. ``FailedMaxUDPRetrans``."""
        return _int(self.row.get(f"{name}(C)", ""))


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def parse_stats(text: str) -> SippStats | None:
    """The last data row of a ``-trace_stat`` CSV (``;``-separated, header first), or None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    header = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    row = dict(zip(header, values, strict=False))
    return SippStats(
        successful=_int(row.get("SuccessfulCall(C)", "")),
        failed=_int(row.get("FailedCall(C)", "")),
        retransmissions=_int(row.get("Retransmissions(C)", "")),
        created=_int(row.get("TotalCallCreated", "")),
        current=_int(row.get("CurrentCall", "")),
        row=row,
    )


@dataclass(frozen=True)
class ShortMessage:
    """One ``-trace_shortmsg`` line: a SIP message sipp sent (S) or received (R)."""

    time: float  # epoch seconds
    sent: bool
    call_id: str
    cseq_number: int
    cseq_method: str
    first_line: str

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        """The status code of a response, None for a request."""
        if not self.is_response:
            return None
        parts = self.first_line.split(maxsplit=2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    @property
    def method(self) -> str:
        """The request method, or for a response the method of its CSeq."""
        return self.cseq_method if self.is_response else self.first_line.split(" ", 1)[0]


def parse_short_messages(text: str) -> list[ShortMessage]:
    """Lines are tab-separated: date, time, epoch, S|R, Call-ID, ``CSeq:N METHOD``, first line.

    Lines that do not have that shape (a truncated last line while sipp still writes) are
    skipped.
    """
    messages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 7 or fields[3] not in ("S", "R"):
            continue
        number, _, method = fields[5].removeprefix("CSeq:").strip().partition(" ")
        try:
            when, cseq_number = float(fields[2]), int(number)
        except ValueError:
            continue
        messages.append(
            ShortMessage(when, fields[3] == "S", fields[4], cseq_number, method.strip(), fields[6])
        )
    return messages


@dataclass(frozen=True)
class CallTiming:
    """Setup and teardown of one call, from the side that ran the scenario."""

    call_id: str
    invite_at: float  # epoch of the first INVITE sent or received
    ringing_ms: float | None  # first INVITE -> first 180/183
    answered_ms: float | None  # first INVITE -> first final response
    final_status: int | None
    acked_at: float | None  # ACK of a 2xx
    bye_at: float | None
    bye_by_us: bool | None


def call_timings(messages: Iterable[ShortMessage]) -> list[CallTiming]:
    """Per Call-ID timings, in order of first INVITE (401/407 challenges are not final here)."""
    calls: dict[str, dict[str, float | int | bool | None]] = {}
    for msg in messages:
        call = calls.get(msg.call_id)
        if call is None:
            if msg.method != "INVITE" or msg.is_response:
                continue
            call = calls[msg.call_id] = {
                "invite": msg.time,
                "ringing": None,
                "final": None,
                "status": None,
                "ack": None,
                "bye": None,
                "bye_by_us": None,
            }
        status = msg.status
        if msg.is_response and msg.cseq_method == "INVITE" and status is not None:
            if status in (180, 183) and call["ringing"] is None:
                call["ringing"] = msg.time
            elif status >= 200 and status not in (401, 407) and call["final"] is None:
                call["final"], call["status"] = msg.time, status
        elif msg.method == "ACK" and call["status"] == 200 and call["ack"] is None:
            call["ack"] = msg.time
        elif msg.method == "BYE" and not msg.is_response and call["bye"] is None:
            call["bye"], call["bye_by_us"] = msg.time, msg.sent
    timings = []
    for call_id, c in calls.items():
        invite = float(c["invite"] or 0.0)
        ringing, final = c["ringing"], c["final"]
        timings.append(
            CallTiming(
                call_id=call_id,
                invite_at=invite,
                ringing_ms=None if ringing is None else (float(ringing) - invite) * 1000,
                answered_ms=None if final is None else (float(final) - invite) * 1000,
                final_status=None if c["status"] is None else int(c["status"]),
                acked_at=None if c["ack"] is None else float(c["ack"]),
                bye_at=None if c["bye"] is None else float(c["bye"]),
                bye_by_us=None if c["bye_by_us"] is None else bool(c["bye_by_us"]),
            )
        )
    return timings


@dataclass(frozen=True)
class SippResult:
    """What one sipp process left behind."""

    returncode: int | None
    stats: SippStats | None
    messages: tuple[ShortMessage, ...]
    log_lines: tuple[str, ...]
    errors: str  # -trace_err: unexpected messages, as sipp logged them
    output_tail: str  # the end of sipp's screen output
    artifacts: Path

    @property
    def ok(self) -> bool:
        return self.returncode == EXIT_ALL_CALLS_OK

    def describe(self) -> str:
        """A paragraph for an assertion message."""
        stats = self.stats
        counts = (
            "no stats row"
            if stats is None
            else f"successful={stats.successful} failed={stats.failed} "
            f"retransmissions={stats.retransmissions}"
        )
        ladder = "\n".join(
            f"  {'->' if m.sent else '<-'} {m.first_line}  [{m.call_id}]"
            for m in self.messages[-30:]
        )
        return (
            f"sipp rc={self.returncode} {counts}\nmessages:\n{ladder}\n"
            f"errors:\n{self.errors[-3000:]}\nscreen:\n{self.output_tail}\n"
            f"(artifacts in {self.artifacts})"
        )


def default_peers_dir() -> Path:
    """``AGERA_SIP_PEERS_DIR``, else tests/interop/peers (sipp/ and kamailio/)."""
    configured = os.environ.get("AGERA_SIP_PEERS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent / "peers"


class SippRun:
    """One sipp process running one scenario: a caller (``remote`` given) or a callee.

    Caller: ``SippRun(...).run()`` blocks until sipp exits and returns a SippResult.
    Callee: ``start()`` returns once its SIP (and echo) ports are bound; ``stop()`` ends it
    and returns the SippResult. Also usable as a context manager that starts and stops.
    sipp exits at once on SIGTERM, calls in progress or not, and still writes its traces
    (SIGUSR1 would wait for every call to end).
    """

    def __init__(
        self,
        scenario: str | Path,
        *,
        workdir: Path,
        artifacts: Path,
        peers_dir: Path | None = None,
        remote: str | None = None,
        service: str = DEFAULT_SERVICE,
        duration_ms: int | None = None,
        calls: int | None = None,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        limit: int | None = None,
        keys: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        local_port: int | None = None,
        media_port: int | None = None,
        rtp_echo: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        trace_messages: bool = True,
        stat_period_s: int = STAT_PERIOD_S,
        extra: Sequence[str] = (),
    ) -> None:
        path = Path(scenario)
        if not path.is_absolute():
            path = (peers_dir or default_peers_dir()) / "sipp" / path
        if not path.is_file():
            raise PeerError(f"sipp scenario {path} not found (set AGERA_SIP_PEERS_DIR)")
        self.scenario = path
        self.workdir = workdir
        self.remote = remote
        self.local_port = local_port if local_port is not None else free_port()
        self.media_port = (
            media_port if media_port is not None else free_port(span=MEDIA_PORT_SPAN, even=True)
        )
        self.control_port = free_port(tcp=False)  # -cp; the default 8888 may be taken
        self.rtp_echo = rtp_echo
        self.timeout_s = timeout_s
        label = f"sipp-{next(_labels):02d}-{path.stem}"
        artifacts.mkdir(parents=True, exist_ok=True)
        self.artifacts = artifacts
        self.stats_path = artifacts / f"{label}.stats.csv"
        self.short_path = artifacts / f"{label}.short.log"
        self.errors_path = artifacts / f"{label}.errors.log"
        self.logs_path = artifacts / f"{label}.logs.log"
        self.messages_path = artifacts / f"{label}.messages.log"
        argv = [SIPP_BINARY]
        if remote is not None:
            argv.append(remote)
        argv += ["-sf", str(path), "-i", HOST, "-p", str(self.local_port)]
        argv += ["-mi", HOST, "-mp", str(self.media_port), "-cp", str(self.control_port)]
        argv += ["-s", service, "-nostdin", "-timeout", f"{timeout_s:g}s", "-timeout_error"]
        argv += ["-trace_stat", "-stf", str(self.stats_path), "-fd", str(stat_period_s)]
        argv += ["-trace_shortmsg", "-shortmessage_file", str(self.short_path)]
        argv += ["-trace_err", "-error_file", str(self.errors_path)]
        argv += ["-trace_logs", "-log_file", str(self.logs_path)]
        if trace_messages:
            argv += ["-trace_msg", "-message_file", str(self.messages_path)]
        for flag, value in (
            ("-d", duration_ms),
            ("-m", calls),
            ("-r", rate),
            ("-rp", rate_period_ms),
            ("-l", limit),
        ):
            if value is not None:
                argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        for key, value in (keys or {}).items():
            argv += ["-key", key, value]
        if auth is not None:
            argv += ["-au", auth[0], "-ap", auth[1]]
        if rtp_echo:
            argv.append("-rtp_echo")
        argv += list(extra)
        self.process = ManagedProcess(
            label,
            argv,
            log_path=artifacts / f"{label}.out.log",
            cwd=workdir,
        )

    @property
    def address(self) -> str:
        """``host:port`` where this sipp receives SIP (give it to the caller)."""
        return f"{HOST}:{self.local_port}"

    @property
    def command(self) -> list[str]:
        return list(self.process.argv)

    def run(self) -> SippResult:
        """Run to completion (bounded by -timeout plus a grace period) and parse the traces."""
        self.process.start()
        self.process.wait(self.timeout_s + EXIT_GRACE_S)
        return self.result()

    def start(self, *, ready_timeout: float = READY_TIMEOUT_S) -> SippRun:
        """Start in the background; return once sipp has bound its SIP (and echo) port."""
        self.process.start()
        wanted = {self.local_port} | ({self.media_port} if self.rtp_echo else set())
        self.process.wait_until(
            lambda: wanted <= bound_udp_ports(),
            timeout=ready_timeout,
            what=f"listening on UDP {sorted(wanted)}",
        )
        return self

    def wait(self, timeout: float) -> SippResult:
        """Wait for a background sipp that ends by itself (``calls`` reached)."""
        self.process.wait(timeout)
        return self.result()

    def stop(self) -> SippResult:
        self.process.stop()
        return self.result()

    def result(self) -> SippResult:
        return SippResult(
            returncode=self.process.returncode,
            stats=parse_stats(_read(self.stats_path)),
            messages=tuple(parse_short_messages(_read(self.short_path))),
            log_lines=tuple(_read(self.logs_path).splitlines()),
            errors=_read(self.errors_path),
            output_tail=tail(self.process.log_path, 30),
            artifacts=self.artifacts,
        )

    def __enter__(self) -> SippRun:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
