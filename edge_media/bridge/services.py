"""What every call of a node shares (`BridgeServices`), and the seams a call is driven through:
the caller's SIP call, the call records, the metrics and the account's call limits, as Protocols
so the bridge can be driven by fakes in tests and by DynamoDB, SQS and EMF on a node.

Why apart from live_call.py: these are the bridge's contract with the rest of the node; the call
itself is `LiveCall`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edge_media.bridge.bot_failover import ReconnectPolicy
from edge_media.bridge.call_slo import SloMetrics
from edge_media.bridge.caller_media import CallerWire
from edge_media.drivers.base import BotConnector
from edge_media.sip.call_state import CallEnd
from shared.call_slots import SlotRefused
from shared.events import CallEvent
from shared.models import Account, Call

if TYPE_CHECKING:
    from edge_media.bridge.live_call import LiveCall

__all__ = [
    "BridgeServices",
    "CallLimits",
    "CallMetrics",
    "CallRecords",
    "CallerCall",
    "CallerMediaWire",
]


class CallerMediaWire(CallerWire, Protocol):
    """A caller wire with figures for the call record (an `RtpSession`, a provider stream)."""

    def stats(self) -> dict[str, Any]: ...


class CallerCall(Protocol):
    """The caller side of a call as `LiveCall` drives it: a `SipCall`, or a provider's stream
    (agent_stream/provider_leg.py). Its media is bound once it exists; it ends once."""

    @property
    def media(self) -> CallerMediaWire | None: ...

    @property
    def end(self) -> CallEnd | None: ...

    @property
    def is_ended(self) -> bool: ...

    async def ended(self) -> CallEnd: ...

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None: ...


class CallRecords(Protocol):
    """The call records a bridge writes (the node's DynamoDB recorder, `control/records.py`)."""

    async def create(self, call: Call) -> bool: ...

    def create_item(self, call: Call) -> dict[str, Any] | None:
        """`create`'s write as a DynamoDB transaction item (the slot acquire carries it), or
        None when the records are not in that table."""
        ...

    async def claim(self, call_uuid: uuid.UUID | str) -> Call | None: ...

    async def record(self, event: CallEvent) -> bool: ...

    async def update(
        self, call_uuid: uuid.UUID | str, fields: Mapping[str, Any]
    ) -> Call | None: ...


class CallMetrics(SloMetrics, Protocol):
    """The per-call figures a bridge reports (EMF metrics, `control/metrics.py`)."""

    def call_setup_ms(self, value: float) -> None: ...

    def routing_webhook_ms(self, value: float) -> None: ...

    def bot_connect_ms(self, value: float) -> None: ...


class CallLimits(Protocol):
    """The account call slots a bridge takes and gives back (`control/slots.py`, over
    ``shared.call_slots``): a call holds one from its start until its ``call.completed``."""

    async def acquire(self, account: Account, call_uuid: uuid.UUID) -> SlotRefused | None: ...

    async def acquire_with(
        self, account: Account, call_uuid: uuid.UUID, also: list[dict[str, Any]]
    ) -> tuple[SlotRefused | None, bool]:
        """`acquire` writing ``also`` in the same step; (refused, whether ``also`` was written)."""
        ...

    async def release(self, account_id: str, call_uuid: uuid.UUID) -> None: ...


@dataclass
class BridgeServices:
    """What every call of a node shares: the node hands one of these to each call application."""

    node_id: str
    recorder: CallRecords
    metrics: CallMetrics
    connect: BotConnector
    bot_connect_timeout: float
    playout_seconds: float
    pacing_p99: Callable[[], float | None]
    live: dict[uuid.UUID, LiveCall]
    slots: CallLimits | None = None  # account call limits; None: not enforced (no control plane)
    # What a call does when its bot connection fails mid-call (bridge/bot_failover.py).
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
