"""The local stack the browser tests drive, on 127.0.0.1 only.

The API's app is served by ``tests/support/api_server.py`` (uvicorn on a free loopback port, a
real HTTP server like ``agera dev``'s). For a call, the pieces that
turn it into a record are wired as ``agera dev`` wires them (infra/dev.py): an edge node (``agera
edge`` in a child process, ``tests.interop.edge.EdgeNode``), the events and callbacks workers
behind local SQS pollers (``workers``), and ``examples/echo_bot.py`` as the bot (``EchoBot``).
``agera call`` (``python -m infra.cli call``) is the phone.
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from functions.context import Context
from infra.sqs_poller import SqsPoller

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
ECHO_BOT = REPO / "examples" / "echo_bot.py"
START_SECONDS = 15.0


class EchoBot:
    """``examples/echo_bot.py`` as a user runs it, on a free loopback port; its log is kept."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ECHO_BOT), "--host", HOST, "--port", "0"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="echo-bot-log", daemon=True)
        self._reader.start()
        self.url = self.wait_for(r"listening on (ws://127\.0\.0\.1:\d+/)").group(1)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._queue.put(line.rstrip())
        self._queue.put(None)

    def wait_for(self, pattern: str, seconds: float = START_SECONDS) -> re.Match[str]:
        """The first log line (kept or new) matching ``pattern``."""
        deadline = time.monotonic() + seconds
        while True:
            for line in self.lines:
                if found := re.search(pattern, line):
                    return found
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"echo bot: no line matching {pattern!r}: {self.lines}"
                ) from None
            if line is None:
                raise AssertionError(f"echo bot exited; its log: {self.lines}")
            self.lines.append(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)  # the pipe's end was read once the bot exited
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextlib.contextmanager
def workers(ctx: Context) -> Iterator[list[SqsPoller]]:
    """The events and callbacks workers behind local pollers, as ``agera dev`` runs them."""
    from functions.workers import callbacks, events

    sqs = ctx.sqs
    pollers = [
        SqsPoller(sqs, ctx.settings.events_queue_url, events.handler, "EventsFunction"),
        SqsPoller(sqs, ctx.settings.callbacks_queue_url, callbacks.handler, "CallbacksFunction"),
    ]
    for poller in pollers:
        poller.start()
    try:
        yield pollers
    finally:
        for poller in pollers:
            poller.stop()


def agera_call(uri: str, *args: str, rtp_ports: tuple[int, int]) -> subprocess.Popen[str]:
    """``agera call URI ...`` in a child process, as a user types it."""
    low, high = rtp_ports
    command = [sys.executable, "-m", "infra.cli", "call", uri, *args]
    command += ["--local-host", HOST, "--rtp-ports", f"{low}-{high}"]
    return subprocess.Popen(
        command,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(check: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    """``check()``'s first truthy value, polled every 50 ms for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)
