"""The node's memory, file descriptors, threads and live calls, sampled by a thread for
bench/soak.py.

Why from /proc and over the node's process tree: with ``AGERA_MEDIA_WORKERS`` > 1 the node is
several processes, and a leak in a worker is a leak of the node. RSS is summed over the tree (the
figure the issue states its goal in, and what a container's memory limit counts, near enough);
PSS (``/proc/<pid>/smaps_rollup``) is kept beside it, because forked workers share pages that a
plain RSS sum counts once per process. psutil is not in the venv, and these few files are all a
sample needs.

Why the node's own ``GET /health`` for live calls: ``sip_calls`` is the UA's count of calls it
holds, the figure that must return to 0 after the callers stop; sipp's count is the callers' view,
and a call the node never tore down shows only in the node's.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.cpu_sampling import process_table, tree

DEFAULT_PERIOD_S = 5.0
HEALTH_TIMEOUT_S = 2.0
KB = 1024


@dataclass
class NodeSample:
    """One reading of the node's tree. ``live`` / ``streams``: its /health counts (None when the
    health request failed: a node too busy to answer in HEALTH_TIMEOUT_S is itself a finding)."""

    time: float  # epoch
    rss_kb: int
    pss_kb: int | None
    fds: int
    threads: int
    processes: int
    cpu_ticks: int  # utime + stime of the tree, for the CPU share beside the memory
    live: int | None
    streams: int | None


def _status_fields(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as name → value text ({} when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        out[name] = value.strip()
    return out


def _kb(text: str | None) -> int:
    """``"12345 kB"`` → 12345; 0 when missing."""
    if not text:
        return 0
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return 0


def _pss_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return _kb(line.partition(":")[2])
    return None


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def read_health(url: str, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any] | None:
    """The node's /health body; it answers 503 (with the same body) while draining."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        try:
            return dict(json.loads(error.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def sample_node(root: int, health_url: str | None) -> NodeSample:
    """One reading of ``root`` and its descendants, and of its /health."""
    parents, ticks = process_table()
    pids = tree(root, parents) if root in parents else []
    rss = fds = threads = 0
    pss: int | None = 0
    for pid in pids:
        status = _status_fields(pid)
        rss += _kb(status.get("VmRSS"))
        threads += int(status.get("Threads", "0") or 0)
        fds += _fd_count(pid)
        one = _pss_kb(pid)
        pss = None if one is None or pss is None else pss + one
    health = read_health(health_url) if health_url else None
    return NodeSample(
        time=time.time(),
        rss_kb=rss,
        pss_kb=pss if pids else None,
        fds=fds,
        threads=threads,
        processes=len(pids),
        cpu_ticks=sum(ticks.get(pid, 0) for pid in pids),
        live=None if health is None else int(health.get("sip_calls", 0)),
        streams=None if health is None else int(health.get("streams", 0)),
    )


@dataclass
class NodeSampler:
    """`sample_node` every ``period`` seconds on a thread; `sample_now` for a reading at a moment
    the bench chooses (idle, after the drain)."""

    root: int
    health_url: str | None
    period: float = DEFAULT_PERIOD_S
    samples: list[NodeSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_now()
            if self._stop.wait(self.period):
                return

    def sample_now(self) -> NodeSample:
        sample = sample_node(self.root, self.health_url)
        with self._lock:
            self.samples.append(sample)
        return sample

    def latest(self) -> NodeSample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.period + HEALTH_TIMEOUT_S * 2)

    def between(self, start: float, end: float) -> list[NodeSample]:
        with self._lock:
            return [s for s in self.samples if start <= s.time <= end]
