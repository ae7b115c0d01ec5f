"""The local schedule that stands in for EventBridge in `agera dev` (infra/scheduler.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from infra.scheduler import PeriodicRunner, scheduled_event


def test_the_handler_runs_at_once_then_every_interval_and_survives_a_failure() -> None:
    calls: list[tuple[dict[str, Any], Any]] = []
    third = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> str:
        calls.append((event, context))
        if len(calls) == 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        return "ok"

    runner = PeriodicRunner(handler, "ReaperFunction", interval=0.01)
    runner.start()
    try:
        assert third.wait(10)
    finally:
        runner.stop()
    assert runner.failures == 1 and runner.runs >= 3
    event, context = calls[0]
    assert event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
    assert context.function_name == "ReaperFunction"
    count = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == count  # stopped means stopped


def test_scheduled_event_shape() -> None:
    event = scheduled_event("reaper")
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/reaper"]
    assert event["detail"] == {} and event["time"].endswith("Z")


def test_a_zero_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        PeriodicRunner(lambda event, context: None, "x", interval=0)
