"""``agera edge`` under tracemalloc, for bench/soak.py ``--tracemalloc``.

Why: RSS says *that* the node keeps memory, not *what* keeps it. tracemalloc records where each
live Python allocation was made; a snapshot taken with N calls up after warm-up and another once
every call has ended and the node has drained, compared, name the lines whose allocations
outlived their calls (bench/lib/soak_trace.py prints the comparison). Memory outside Python's
allocator (C extensions' own malloc, uvloop's buffers) is not seen: a leak RSS shows and these
snapshots do not is there.

Each SIGUSR2 writes the next snapshot, ``OUT/snap-1.pickle``, ``snap-2.pickle``, ..., then
``snap-K.done`` once the file is complete. tracemalloc costs the node CPU and memory
(``--frames`` deep tracebacks cost more): use a traced run to find a leak, not to measure one.

Run: python bench/peers/traced_node.py OUT [FRAMES]   (settings from AGERA_* as for agera edge)
"""

from __future__ import annotations

import itertools
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

DEFAULT_FRAMES = 1


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: traced_node.py OUT [FRAMES]", file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    frames = int(sys.argv[2]) if len(sys.argv) == 3 else DEFAULT_FRAMES
    numbers = itertools.count(1)

    def snapshot(signum: int, frame: FrameType | None) -> None:
        number = next(numbers)
        path = out / f"snap-{number}.pickle"
        tracemalloc.take_snapshot().dump(str(path))
        (out / f"snap-{number}.done").touch()

    tracemalloc.start(frames)
    signal.signal(signal.SIGUSR2, snapshot)
    sys.argv = ["agera", "edge"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        runpy.run_module("infra.cli", run_name="__main__")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
