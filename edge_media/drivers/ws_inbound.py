"""The read side's policing of one WebSocket connection: its `InboundBudget` applied on the
read path, the pause that throttles a peer over budget, and the one-line warnings.

Why dropping is not enough: a message over budget is dropped before any decode or parse, but
its frame has been parsed already, and a peer writing at loopback speed keeps the loop busy
with nothing but frame parsing. Under uvloop it is worse: libuv reads a readable socket up to
32 times in a row before it runs anything else, so one flooding connection held every call's
20 ms media clock back by 100 ms and more (bench/bot_flood.py, ``audio-max``). So the first
drop also stops reading the socket for `PAUSE_SECONDS`; the kernel's buffer fills, TCP's window
closes and the peer's own writes stall. What was read but not yet parsed is held, unparsed, for
the end of the pause: a connection with a budget hands its reads to the websockets core in
`SLICE_BYTES` slices, so a pause cuts a read short at the next slice (a 256 KB read of 90-byte
marks is ~3,000 frames, ~10 ms of parsing; a slice is ~180). A peer over budget thus costs the
loop at most a slice per pause, whatever it sends; a peer within budget is never paused.

Closing does not end a pause: a peer still flooding when we close has its connection aborted
after the close timeout rather than have the loop read its flood at full speed to find its
close frame.

Why a class of its own: `WsConnection` moves bytes between the transport and the websockets
core; deciding what a peer may cost is a policy on top of it, kept here with its figures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from websockets.exceptions import PayloadTooBig

from edge_media.drivers.inbound_budget import InboundBudget

__all__ = ["NO_INBOUND_FIGURES", "PAUSE_SECONDS", "SLICE_BYTES", "InboundGate"]

logger = logging.getLogger("agera.drivers.ws")

PAUSE_SECONDS = 0.1  # not reading a peer over budget: at most one slice parsed per pause
SLICE_BYTES = 16 * 1024  # what a budgeted connection parses before it checks for a pause
NO_INBOUND_FIGURES = {
    "budget_dropped_messages": 0,
    "budget_dropped_bytes": 0,
    "messages_too_big": 0,
}


class InboundGate:
    """What a connection admits from its peer. ``budget`` None: every message is admitted."""

    __slots__ = (
        "_held",
        "_loop",
        "_name",
        "_receive",
        "_timer",
        "_transport",
        "budget",
        "messages_too_big",
        "pauses",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        budget: InboundBudget | None,
        name: Callable[[], str],
    ) -> None:
        self._loop = loop
        self.budget = budget
        self._name = name  # how warnings name the peer; never a capability URL
        self._timer: asyncio.TimerHandle | None = None  # set while paused
        self._transport: asyncio.Transport | None = None  # the one paused
        self._held = b""  # read, not yet parsed: fed when the pause ends
        self._receive: Callable[[bytes], None] | None = None
        self.messages_too_big = 0  # 1 once the peer sent a message over the size limit
        self.pauses = 0

    def feed(self, data: bytes, receive: Callable[[bytes], None]) -> None:
        """Hand what was read to ``receive`` (the core): at once without a budget; with one,
        in slices, holding the rest once a slice's messages paused reading."""
        if self.budget is None:
            receive(data)
            return
        self._receive = receive
        if self._timer is not None or self._held:  # read before the pause took effect
            self._held += data
            return
        self._feed(data)

    def admit(self, size: int, transport: asyncio.Transport | None) -> bool:
        """True when a message of ``size`` bytes may be handled; else it is dropped (counted
        by the budget) and reading pauses."""
        budget = self.budget
        if budget is None or budget.admit(size, self._loop.time()):
            return True
        if budget.take_drop_warning():
            logger.warning(
                "%s sends faster than its budget (%.0f bytes and %.0f messages a second on "
                "average): messages over it are dropped unread; later drops are only counted",
                self._name(),
                budget.bytes_per_second,
                budget.messages_per_second,
            )
        if self._timer is None and transport is not None and not transport.is_closing():
            self.pauses += 1
            self._transport = transport
            transport.pause_reading()
            self._timer = self._loop.call_later(PAUSE_SECONDS, self.resume)
        return False

    def resume(self) -> None:
        """End a pause now (its timer calls this): parse what was held, then read again,
        unless what was held paused reading once more."""
        timer, transport = self._timer, self._transport
        self._timer = None
        if timer is not None:
            timer.cancel()
        held, self._held = self._held, b""
        if held:
            self._feed(held)
        if self._timer is None:
            self._transport = None
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def lost(self) -> None:
        """The connection is gone: no pause to end, nothing held to parse."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._transport = None
        self._held = b""

    def _feed(self, data: bytes) -> None:
        receive = self._receive
        assert receive is not None
        for start in range(0, len(data), SLICE_BYTES):
            if self._timer is not None:
                self._held = data[start:]
                return
            receive(data[start : start + SLICE_BYTES])

    def too_big(self, error: PayloadTooBig) -> None:
        """The core refused a message over the size limit (and closes with 1009): log once."""
        if self.messages_too_big:
            return
        self.messages_too_big = 1
        logger.warning(
            "%s sent a message over the %s-byte limit: the connection is closed with 1009",
            self._name(),
            getattr(error, "max_size", "size"),
        )

    def figures(self) -> dict[str, int]:
        """For the call record: what the budget dropped, and whether a message was too big."""
        budget = self.budget
        return {
            "budget_dropped_messages": budget.dropped_messages if budget is not None else 0,
            "budget_dropped_bytes": budget.dropped_bytes if budget is not None else 0,
            "messages_too_big": self.messages_too_big,
        }
