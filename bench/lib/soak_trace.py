"""tracemalloc snapshots of a soak's node (bench/peers/traced_node.py), asked for and compared.

Why three snapshots: idle (before any call), warm (N calls up after warm-up) and drained (every
call ended). drained - warm shows what grew while calls only came and went, with the live calls'
own memory as negative lines; drained - idle shows what the node still holds once it has no call
at all, caches and leaks alike. A line that grows in both, by an amount that scales with the
calls that ended, is the leak's allocation site.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

SNAPSHOT_TIMEOUT_S = 60.0
POLL_S = 0.2
TOP_LINES = 15
IGNORED = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<unknown>")


def request_snapshot(pid: int, directory: Path, number: int) -> Path | None:
    """SIGUSR2 to the traced node, then wait (bounded) for ``snap-<number>.done``."""
    try:
        os.kill(pid, signal.SIGUSR2)
    except ProcessLookupError:
        return None
    done = directory / f"snap-{number}.done"
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if done.exists():
            return directory / f"snap-{number}.pickle"
        time.sleep(POLL_S)
    return None


def _load(path: Path) -> tracemalloc.Snapshot:
    snapshot = tracemalloc.Snapshot.load(str(path))
    return snapshot.filter_traces([tracemalloc.Filter(False, name) for name in IGNORED])


def compare(newer: Path, older: Path, title: str, top: int = TOP_LINES) -> str:
    """The ``top`` allocation sites by growth from ``older`` to ``newer``."""
    stats = _load(newer).compare_to(_load(older), "lineno")
    lines = [f"tracemalloc {title} (top {top} by size growth):"]
    for stat in stats[:top]:
        frame = stat.traceback[0]
        lines.append(
            f"  {stat.size_diff / 1024:+10.1f} KB {stat.count_diff:+8d} blocks"
            f"  {frame.filename}:{frame.lineno}"
        )
    total = sum(s.size_diff for s in stats)
    lines.append(f"  total {total / 1024:+.1f} KB")
    return "\n".join(lines)
