"""A `CallerLeg` for driver tests: records what a driver asks of the caller side, in order.

One for all drivers: `clear` empties what is queued and hands back the marks not yet played, the
first with ``heard_ms`` of its audio played and the others 0, as the playout queue does (native
agents never queue marks, so theirs come back empty).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge_media.rtp.playout import PlayedMark


class RecordingLeg:
    def __init__(self, heard_ms: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.audio = bytearray()  # everything the driver asked to play
        self.queued = bytearray()  # not yet cleared
        self.cleared = bytearray()  # dropped by clears
        self.pending: list[str] = []  # marks not yet cleared
        self.heard_ms = heard_ms
        self.changed = asyncio.Event()

    def play(self, ulaw: bytes) -> None:
        self.calls.append(("play", ulaw))
        self.audio += ulaw
        self.queued += ulaw
        self.changed.set()

    def mark(self, name: str) -> None:
        self.calls.append(("mark", name))
        self.pending.append(name)
        self.changed.set()

    def clear(self) -> list[PlayedMark]:
        self.calls.append(("clear", None))
        self.cleared += self.queued
        self.queued.clear()
        pending, self.pending = self.pending, []
        self.changed.set()
        return [
            PlayedMark(name, self.heard_ms if index == 0 else 0)
            for index, name in enumerate(pending)
        ]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
