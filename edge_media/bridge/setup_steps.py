"""The steps of an inbound call's setup, timed, for the line the node logs when it answers.

Why: INVITE -> 200 OK is one figure in the metrics (``CallSetupMs``); when it is slow, the
operator's next question is which step (the account's slot write, the record, the routing
webhook, the bot's connection, the ringing event) took the time, and only the node knows.
"""

from __future__ import annotations

import time

__all__ = ["SetupSteps"]


class SetupSteps:
    """Where a call's setup time went, step by step, for the line logged when it is answered:
    a slow INVITE -> 200 then names its cause (a slot write, the record, the webhook, the bot)."""

    def __init__(self, started: float) -> None:
        self.last = started
        self.steps: list[tuple[str, float]] = []

    def step(self, name: str, since: float | None = None) -> None:
        now = time.monotonic()
        self.steps.append((name, (now - (self.last if since is None else since)) * 1000))
        self.last = now

    def __str__(self) -> str:
        total = sum(ms for _, ms in self.steps)
        parts = ", ".join(f"{name} {ms:.0f}" for name, ms in self.steps)
        return f"{total:.0f} ms ({parts})"
