"""Exceptions that cross from the call bridge to the node's control-plane adapters.

Why a module of their own: `bridge/` raises and catches them, `control/` defines when they
happen (a table that cannot be written, a command to retry), and neither package may import
the other. Both import this module, which imports nothing.
"""

from __future__ import annotations

__all__ = ["RecordUnavailable", "RetryLater"]


class RetryLater(Exception):
    """Raised by a command handler to leave its message on the queue for another try.

    ``delay_seconds`` sets how soon the message is visible again (0: at once, e.g. for another
    node to take an originate this node cannot); None keeps the queue's visibility timeout.
    """

    def __init__(self, reason: str = "", *, delay_seconds: int | None = None) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class RecordUnavailable(Exception):
    """The table could not be reached for a write whose outcome the caller must know."""
