"""CPU of process trees and of the whole box, read from /proc once a second by a thread.

Why from /proc and per tree: the node, the bot, sipp and tshark each run as a process of their
own, so utime + stime of a process and its descendants is one peer's CPU, whatever the others
do. One sampler serves bench/rtp.py and bench/calls.py, so that their node CPU figures are
taken the same way and can be set side by side.

Why the whole box as well: everything shares 2 cores, so a latency or pacing tail means little
without how busy the machine was. `CpuSampler.shares` gives each tree's share of one core, this
process's own (moto's threads in bench/calls.py), the box's, and what none of ours used; for the
tree named ``node``, also user against system time and how long its threads were runnable but
waiting for a CPU.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_PERIOD_S = 1.0
MAX_TREE_DEPTH = 64
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NODE = "node"  # the tree whose detail (user, system, run-queue wait, processes) is kept


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def process_table() -> tuple[dict[int, int], dict[int, int]]:
    """(parent of each pid, its utime + stime in clock ticks) for every process."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 13:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime (14, 15)
    return parents, ticks


def tree(root: int, parents: dict[int, int]) -> list[int]:
    """``root`` and its live descendants."""
    members = []
    for pid in parents:
        walk, hops = pid, 0
        while walk not in (0, 1) and walk != root and hops < MAX_TREE_DEPTH:
            walk, hops = parents.get(walk, 0), hops + 1
        if walk == root:
            members.append(pid)
    return members


def _own_ticks() -> int:
    fields = _stat_fields("self")
    assert fields is not None  # a process can always read its own stat
    return int(fields[11]) + int(fields[12])


def _box_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def _node_detail(pids: Iterable[int]) -> tuple[int, int, int] | None:
    """The node processes' user and system ticks, and how long their threads waited for a CPU
    while runnable (/proc/<pid>/task/*/schedstat, 2nd field): the share of latency that is the
    box's doing, not the node's."""
    user = system = waited = 0
    try:
        for pid in pids:
            fields = _stat_fields(pid)
            if fields is None:
                return None
            user, system = user + int(fields[11]), system + int(fields[12])
            for task in Path(f"/proc/{pid}/task").iterdir():
                waited += int((task / "schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return user, system, waited


def box_busy(seconds: float = 2.0) -> float:
    """How busy the machine is right now, in % of one core (other users share these cores)."""
    busy0, total0 = _box_ticks()
    time.sleep(seconds)
    busy1, total1 = _box_ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * 100 * (os.cpu_count() or 1)


@dataclass
class Sample:
    time: float  # epoch, like sipp's trace timestamps and tshark's packet times
    ticks: dict[str, int]  # utime + stime per watched tree
    sizes: dict[str, int]  # processes per watched tree
    own: int  # this process alone: in bench/calls.py, moto's threads and the sampler
    busy: int
    total: int
    node: tuple[int, int, int] | None = None  # utime, stime (ticks), run-queue wait (ns)
    node_processes: dict[int, int] = field(default_factory=dict)  # pid -> ticks, node's tree


@dataclass
class CpuSampler:
    """CPU ticks of some process trees (root and descendants), of this process and of the whole
    box, every SAMPLE_PERIOD_S. ``pids`` may grow while it runs (peers started later)."""

    pids: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            parents, ticks = process_table()
            members = {name: tree(root, parents) for name, root in list(self.pids.items())}
            busy, total = _box_ticks()
            node = members.get(NODE)
            self.samples.append(
                Sample(
                    time=time.time(),
                    ticks={n: sum(ticks.get(pid, 0) for pid in m) for n, m in members.items()},
                    sizes={n: len(m) for n, m in members.items()},
                    own=_own_ticks(),
                    busy=busy,
                    total=total,
                    node=None if node is None else _node_detail(node),
                    node_processes={pid: ticks.get(pid, 0) for pid in node or []},
                )
            )
            if self._stop.wait(SAMPLE_PERIOD_S):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SAMPLE_PERIOD_S * 5)

    def cpu_between(self, name: str, start: float, end: float) -> tuple[float, float, float] | None:
        """(CPU seconds, from, to) of ``name`` between its first and last sample in [start, end]."""
        inside = [
            (x.time, x.ticks[name])
            for x in self.samples
            if start <= x.time <= end and name in x.ticks
        ]
        if len(inside) < 2:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / CLOCK_TICKS, t0, t1

    def shares(self, start: float, end: float) -> tuple[float, float, dict[str, float]] | None:
        """(from, to, CPU % of one core per name) between the first and last sample inside
        [start, end]; ``box`` is the whole machine, ``others`` what none of ours used."""
        inside = [s for s in self.samples if start <= s.time <= end]
        if len(inside) < 2:
            return None
        a, b = inside[0], inside[-1]
        seconds = b.time - a.time
        if seconds <= 0:
            return None

        def pct(ticks: float) -> float:
            return ticks / CLOCK_TICKS / seconds * 100

        out = {name: pct(b.ticks[name] - a.ticks[name]) for name in b.ticks if name in a.ticks}
        out["moto"] = pct(b.own - a.own)
        cores = os.cpu_count() or 1
        out["box"] = (b.busy - a.busy) / max(1, b.total - a.total) * 100 * cores
        out["others"] = max(0.0, out["box"] - sum(v for k, v in out.items() if k != "box"))
        if a.node is not None and b.node is not None:
            out["node.user"] = pct(b.node[0] - a.node[0])
            out["node.sys"] = pct(b.node[1] - a.node[1])
            out["node.waiting"] = (b.node[2] - a.node[2]) / 1e9 / seconds * 100
        if len(b.node_processes) > 1:  # media workers: how the load is spread
            for pid, ticks in b.node_processes.items():
                out[f"node.pid{pid}"] = pct(ticks - a.node_processes.get(pid, ticks))
        return a.time, b.time, out


def wait_until_quiet(wait_s: float, busy_percent: float, poll_s: float) -> float:
    """Wait (up to ``wait_s``) for the box to be below ``busy_percent`` of one core; the last
    reading. Other sessions share this machine: a run started beside them measures them too."""
    load = box_busy()
    deadline = time.monotonic() + wait_s
    while load > busy_percent and time.monotonic() < deadline:
        load = box_busy(poll_s)
    return load
