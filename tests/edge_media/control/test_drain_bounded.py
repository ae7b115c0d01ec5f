"""A drain never waits on a table that does not answer: marking the node draining is bounded
(edge_media/node_control.py), so live calls still get their drain time and a stopping node exits
(a soak against a stalled local table saw a node SIGKILLed at stop). Deleting the node's item at
close is bounded the same way (DEREGISTER_SECONDS); that path needs opened clients and is not
exercised here."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from edge_media import node_control
from edge_media.control.registry import NodeRegistry
from edge_media.node_control import ControlPlane
from shared.settings import Settings

pytestmark = pytest.mark.anyio


class StalledTable:
    """A DynamoDB client whose every call hangs (a table throttled or unreachable)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def hang(**_: Any) -> None:
            self.calls.append(name)
            await asyncio.Event().wait()

        return hang


async def test_a_drain_gives_up_marking_the_node_on_a_stalled_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_control, "DRAIN_MARK_SECONDS", 0.2)
    settings = Settings.load({}, table_name="t")
    table = StalledTable()
    plane = ControlPlane(
        settings, node_id="n1", live={}, pacing_p99=lambda: None, on_trusted_sources=lambda _: None
    )
    plane.registry = NodeRegistry(
        table, StalledTable(), settings, node_id="n1", sip_address="127.0.0.1:5060",
        active_calls=lambda: 0,
    )  # fmt: skip
    started = time.monotonic()
    await asyncio.wait_for(plane.drain(), 5)
    drained = time.monotonic() - started
    assert table.calls == ["update_item"] and drained < 1.0
