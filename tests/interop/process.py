"""A peer process (sipp, baresip, kamailio, tshark, the edge node) that cannot outlive its test.

Each peer starts in a session of its own, so stopping it reaches the children it forked
(kamailio's workers, the node's media workers) by process group, never by name. Its stdout and
stderr go to one log file kept with the test's artifacts; every wait is bounded and a failure
message carries the tail of that log, since a peer that died at start explains itself there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

POLL_INTERVAL_S = 0.02
STOP_TIMEOUT_S = 10.0  # after the polite signal, before SIGKILL
KILL_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 40
LOG_TAIL_MAX_CHARS = 6000


class PeerError(RuntimeError):
    """A peer did not start, did not become ready, or did not stop in time."""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-LOG_TAIL_MAX_CHARS:]


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes whose process group is ``pgid`` (from /proc/<pid>/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm (field 2) may hold spaces and parentheses: split after its closing one
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class ManagedProcess:
    """One child process with a log file, bounded waits and a stop that always ends it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise PeerError(f"{self.name} was not started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def start(self) -> None:
        if self._popen is not None:
            raise PeerError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise PeerError(f"{self.name}: cannot run {self.argv[0]!r}: {exc}") from None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def failure(self, what: str) -> PeerError:
        """An error naming the peer, its exit status and the end of its log."""
        status = "running" if self.running else f"exited with {self.returncode}"
        return PeerError(
            f"{self.name} ({status}): {what}\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``ready`` until true; fail early if the process exits, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if not self.running:
                raise self.failure(f"exited before {what}")
            if time.monotonic() >= deadline:
                raise self.failure(f"not {what} after {timeout:.1f} s")
            time.sleep(POLL_INTERVAL_S)

    def wait(self, timeout: float) -> int:
        """Wait for a process expected to exit by itself; kill it and fail if it overruns."""
        if self._popen is None:
            raise PeerError(f"{self.name} was not started")
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self.failure(f"did not exit within {timeout:.1f} s (killed)") from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Send the stop signal, wait up to ``timeout``, then SIGKILL the whole group."""
        if self._popen is None:
            return None
        try:
            if self._popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._popen.send_signal(self.stop_signal)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout)
        finally:  # even when interrupted while waiting: nothing may outlive us
            self.kill()
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the process group we created (it also holds the peer's own children).

        Once our child is reaped its group id stays reserved only while members remain, so the
        group is signalled only when the child is alive or a member is found.
        """
        if self._popen is None:
            return
        pgid = self._popen.pid
        if self._popen.poll() is None or group_members(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(KILL_TIMEOUT_S)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
