"""``agera edge`` under a profiler, for bench/calls.py ``--profile``.

Two profilers, because neither alone tells the truth about a node under load:

* ``sample`` (default): a statistical profiler on ``ITIMER_PROF``, which ticks with the
  process's CPU time (user + system), so a sample is one millisecond of CPU and time spent
  preempted or idle is never counted. The handler records the Python stack; CPU spent in C
  (uvloop, system calls) lands on the Python frame that called it or, for uvloop's own reads,
  on the callback it runs next. Costs about 2 % at 1000 samples a second. Written as collapsed
  stacks (``frame;frame;frame count`` lines, flame-graph input).
* ``cprofile``: cProfile with ``time.thread_time``. Exact call counts; but each clock reading is
  a system call, which inflates cheap functions several times over: use it for counts, not
  proportions. (``python -m cProfile`` is worse under load: its wall clock charges a function
  for the time the node was preempted.)

Run: python bench/peers/profiled_node.py sample|cprofile OUT   (settings from AGERA_* as for
agera edge; the node stops on SIGTERM and the profile is written then)
"""

from __future__ import annotations

import collections
import cProfile
import runpy
import signal
import sys
import time
from pathlib import Path
from types import FrameType

SAMPLE_INTERVAL_S = 0.001  # of CPU time
MAX_DEPTH = 40


class Sampler:
    """Counts of Python stacks, one per ``SAMPLE_INTERVAL_S`` of this process's CPU."""

    def __init__(self) -> None:
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL_S, SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        names: list[str] = []
        while frame is not None and len(names) < MAX_DEPTH:
            code = frame.f_code
            names.append(f"{Path(code.co_filename).name}:{code.co_name}")
            frame = frame.f_back
        self.stacks[tuple(reversed(names))] += 1

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            for stack, count in self.stacks.most_common():
                out.write(f"{';'.join(stack)} {count}\n")


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("sample", "cprofile"):
        print("usage: profiled_node.py sample|cprofile OUT", file=sys.stderr)
        return 2
    mode, out = sys.argv[1], Path(sys.argv[2])
    sys.argv = ["agera", "edge"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    code = 0
    sampler = Sampler() if mode == "sample" else None
    profile = cProfile.Profile(time.thread_time) if mode == "cprofile" else None
    if sampler is not None:
        sampler.start()
    if profile is not None:
        profile.enable()
    try:
        runpy.run_module("infra.cli", run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if sampler is not None:
            sampler.stop()
            sampler.dump(out)
        if profile is not None:
            profile.disable()
            profile.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
