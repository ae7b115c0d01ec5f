"""RTP port pairs for calls: even RTP port, RTCP on the odd port above it (RFC 3550 §11).

Why round-robin from a random start instead of "lowest free port": a port released at hang-up
may still receive the far end's last packets (or a late re-INVITE's media) for a while. Handing
it straight to the next call would feed that stray audio into a stranger's call, and with
latching (receiver.py) the stray source could even win the latch. Walking the whole range before
coming back makes reuse as late as possible; the random start keeps two restarts of the node
from reusing the same first ports. The random source is injected so tests can pin it.

Pure bookkeeping: no sockets here. A port another process holds is discovered when binding
fails; the I/O layer (`transport.open_rtp_socket`) then releases it and asks for the next one,
and the cursor has already moved past it.
"""

from __future__ import annotations

import random

__all__ = ["MAX_PORT", "MIN_PORT", "PortAllocator", "PortsExhaustedError"]

MIN_PORT = 1024  # below this binding needs privileges; no RTP range lives there
MAX_PORT = 65535


class PortsExhaustedError(Exception):
    """Every RTP port pair of the range is in use (or could not be bound)."""


class PortAllocator:
    """Hands out even RTP ports from ``[min_port, max_port]``; ``port + 1`` is reserved with it.

    ``allocate`` never returns a port that is allocated and not yet released. ``rng`` picks the
    first pair to try (``random.Random()`` seeded from the OS when omitted).
    """

    __slots__ = ("_count", "_cursor", "_first", "_in_use")

    def __init__(self, min_port: int, max_port: int, *, rng: random.Random | None = None) -> None:
        first = min_port + (min_port & 1)  # RFC 3550 §11: RTP SHOULD use an even port
        if first < MIN_PORT or max_port > MAX_PORT or first + 1 > max_port:
            raise ValueError(
                f"RTP port range {min_port}-{max_port} must hold at least one even/odd pair "
                f"within {MIN_PORT}-{MAX_PORT}"
            )
        self._first = first
        self._count = (max_port - first + 1) // 2
        self._in_use: set[int] = set()
        self._cursor = (rng or random.Random()).randrange(self._count)

    @property
    def capacity(self) -> int:
        """How many port pairs the range holds."""
        return self._count

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return self._count - len(self._in_use)

    def is_allocated(self, port: int) -> bool:
        return port in self._in_use

    def allocate(self) -> int:
        """The next free even port after the last one handed out; raises PortsExhaustedError."""
        count = self._count
        if len(self._in_use) >= count:
            raise PortsExhaustedError(f"all {count} RTP port pairs are in use")
        cursor = self._cursor
        in_use = self._in_use
        # Bounded: fewer than `count` pairs are in use, so a free one lies within `count` steps.
        for _ in range(count):
            port = self._first + 2 * cursor
            cursor = cursor + 1 if cursor + 1 < count else 0
            if port not in in_use:
                in_use.add(port)
                self._cursor = cursor
                return port
        raise PortsExhaustedError(f"all {count} RTP port pairs are in use")  # pragma: no cover

    def release(self, port: int) -> None:
        """Give a port back; releasing one that is not allocated is ignored (double hang-up)."""
        self._in_use.discard(port)
