"""What a fuzz run checks on the node afterwards: it answers, its memory, and what it logged.

Why a log scan on top of "the process is alive": the node is built to survive a bad input (the
SIP transport logs and counts a handler exception, asyncio logs a task that died), so a bug
that fuzz triggers usually shows up as a traceback in the log while the process runs on. Every
ERROR or CRITICAL line, every traceback and every "--- Logging error ---" block (a log call
that failed to format) is a problem unless it matches `EXPECTED`, the refusals the node logs
at ERROR on purpose (none so far: its refusals are WARNING or below), or `KNOWN_BUGS`.

`KNOWN_BUGS` are failures this fuzz found outside the parsers, reported and not yet fixed:
each entry says what the bug is, and a run counts its hits apart (`LogProblem.known`) so they
stay visible without failing every run. Delete an entry once its bug is fixed: the fuzz then
guards the fix.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "EXPECTED",
    "KNOWN_BUGS",
    "LogProblem",
    "health_status",
    "options_status",
    "rss_kib",
    "scan_log",
]

# ERROR-level lines that are the node refusing something as designed, not a failure.
EXPECTED: tuple[re.Pattern[str], ...] = ()
KNOWN_BUGS: dict[str, re.Pattern[str]] = {}  # none open: the fuzz guards every fix
_LINE_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) ")
_LOGGING_ERROR = "--- Logging error ---"
_BAD_LEVELS = frozenset({"ERROR", "CRITICAL"})
_SUSPECT = re.compile(r"Traceback \(most recent call last\)|Task exception was never retrieved")


@dataclass(frozen=True)
class LogProblem:
    """One logged failure: its first line's time (wall clock, None if unparsed) and text."""

    at: float | None
    text: str
    known: str | None = None  # the KNOWN_BUGS entry it matches

    @property
    def last_line(self) -> str:
        """The exception line of a traceback (what tells one bug from another)."""
        lines = [line for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""


def _wall(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def scan_log(text: str) -> list[LogProblem]:
    """ERROR/CRITICAL records and tracebacks, each with the lines that follow it up to the
    next record (its traceback), minus the `EXPECTED` ones."""
    records: list[tuple[str | None, str | None, list[str]]] = []
    stamp: str | None = None
    for line in text.splitlines():
        match = _LINE_START.match(line)
        if match:
            stamp = match.group(1)
            records.append((stamp, match.group(2), [line]))
        elif line.startswith(_LOGGING_ERROR) or not records:
            records.append((stamp, "ERROR" if line.startswith(_LOGGING_ERROR) else None, [line]))
        else:
            records[-1][2].append(line)
    problems = []
    for at, level, lines in records:
        body = "\n".join(lines)
        if level not in _BAD_LEVELS and not _SUSPECT.search(body):
            continue
        if any(pattern.search(body) for pattern in EXPECTED):
            continue
        known = next((name for name, bug in KNOWN_BUGS.items() if bug.search(body)), None)
        problems.append(LogProblem(_wall(at) if at else None, body, known))
    return problems


def options_status(host: str, port: int, *, timeout: float = 3.0) -> int | None:
    """Send one OPTIONS from a fresh 127.0.0.1 socket; the final status, None if no answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(0.5)
        own = sock.getsockname()[1]
        call_id = secrets.token_hex(8)
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{own};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # UDP: resend until answered (Timer E-like)
            sock.sendto(request, (host, port))
            try:
                while True:
                    data = sock.recv(65535)
                    if call_id.encode() in data and data.startswith(b"SIP/2.0 "):
                        status = int(data[8:11])
                        if status >= 200:
                            return status
            except (TimeoutError, ValueError):
                continue
    return None


def health_status(host: str, port: int, *, timeout: float = 3.0) -> int | None:
    """``GET /health`` on the stream port; the HTTP status, None if no answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = sock.recv(4096)
    except OSError:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(match.group(1)) if match else None


def rss_kib(pid: int) -> int | None:
    """The process's resident set (VmRSS) in KiB, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None
