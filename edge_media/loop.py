"""The one event-loop policy of every edge entry point: uvloop when it can be imported.

Why it matters enough for a module: stock asyncio pays about 16 µs per datagram (one `recvfrom`
per readiness event) where uvloop pays 2-3 µs by reading every queued datagram per wake-up
(docs/performance.md, "Why uvloop and one worker per core"). At 50 packets per second per call
that is the difference between ~150 and ~230 calls per core, so the node, the benches and the
tests that exercise it must all build their loop the same way, through `new_loop` or `run`.

uvloop is optional at import time (a developer box without it still runs, only slower); the
`prefer_uvloop` flags exist so a caller can compare both loops, never to hide a missing wheel.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["install_uvloop", "loop_name", "new_loop", "run", "uvloop_available"]

_T = TypeVar("_T")


def uvloop_available() -> bool:
    """True when the uvloop package can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def new_loop(*, prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's when available and preferred, else the stock one."""
    if prefer_uvloop and uvloop_available():
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def install_uvloop() -> bool:
    """Make `asyncio.run` and `asyncio.new_event_loop` build uvloop loops in this process.

    Returns whether uvloop is now the policy. For code that does not control loop creation
    (uvicorn, third-party runners); our own entry points call `run` instead, which does not
    touch process-wide state.
    """
    if not uvloop_available():
        return False
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run(main: Coroutine[Any, Any, _T], *, prefer_uvloop: bool = True) -> _T:
    """Run ``main`` to completion on a loop from `new_loop` (what `asyncio.run` does otherwise)."""
    with asyncio.Runner(loop_factory=lambda: new_loop(prefer_uvloop=prefer_uvloop)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Which loop implementation runs, for log lines and bench reports."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
