"""Call events (edge → events queue) and the status-callback messages they turn into.

Two layers on purpose: an edge *event* is our internal record of what happened (versioned, with an
id for de-duplication, the node and media stats); a *callback* is what the customer's webhook gets,
field for field as the API guide shows (``event_type``, ``call_uuid``, ``timestamp``,
``call_status``, and for ``call.completed`` also ``duration``, ``hangup_cause`` and ``slo``). The events worker
turns the first into the second with ``callback_payload``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.clock import iso_z, utc_now
from shared.models import CallStatus, Direction
from shared.validation import HttpUrl

EVENT_VERSION = 1


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: f"evt_{uuid.uuid4().hex}")
    version: Literal[1] = EVENT_VERSION
    call_uuid: uuid.UUID
    account_id: str
    node_id: str
    occurred_at: datetime = Field(default_factory=utc_now)


class CallCreated(_Event):
    """A call the edge started on its own (inbound); carries what the record needs."""

    type: Literal["call.created"] = "call.created"
    direction: Direction
    from_number: str
    to_number: str
    webhook_url: HttpUrl | None = None


class CallRinging(_Event):
    type: Literal["call.ringing"] = "call.ringing"


class CallAnswered(_Event):
    type: Literal["call.answered"] = "call.answered"
    media_target: str | None = None


class CallCompleted(_Event):
    type: Literal["call.completed"] = "call.completed"
    status: CallStatus = CallStatus.COMPLETED
    answered_at: datetime | None = None
    duration: int = Field(0, ge=0, description="whole seconds from answer to end")
    hangup_cause: str = "NORMAL_CLEARING"
    sip_status: int | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    # Set when the control plane ended the call for a node that died (the reaper).
    ended_by: str | None = None
    end_detail: str | None = None


class CallFailed(_Event):
    type: Literal["call.failed"] = "call.failed"
    hangup_cause: str
    sip_status: int | None = None
    reason: str | None = None


class CallTransferred(_Event):
    type: Literal["call.transferred"] = "call.transferred"
    destination: str
    method: Literal["refer", "bridge", "provider"]


class CallRedirected(_Event):
    type: Literal["call.redirected"] = "call.redirected"
    media_server: str = Field(description="the new target, without user info or query")
    driver: str | None = Field(None, description="websocket, elevenlabs or vapi")


class CallBotReconnected(_Event):
    """The call's bot connection failed mid-call and the node connected a bot again: the same
    target (``fallback`` False) or, once its attempts ran out, the account default."""

    type: Literal["call.bot_reconnected"] = "call.bot_reconnected"
    media_server: str = Field(description="the target now serving, without user info or query")
    driver: str | None = Field(None, description="websocket, elevenlabs or vapi")
    resumed_from: str | None = Field(None, description="the failed connection's stream SID")
    gap_ms: int = Field(ge=0, description="how long the caller was without a bot")
    attempts: int = Field(ge=1, description="connections tried to get here (this one included)")
    fallback: bool = False
    reason: str = Field("", max_length=512, description="how the failed connection ended")


CallEvent = Annotated[
    CallCreated
    | CallRinging
    | CallAnswered
    | CallCompleted
    | CallFailed
    | CallTransferred
    | CallRedirected
    | CallBotReconnected,
    Field(discriminator="type"),
]


@cache
def event_adapter() -> TypeAdapter[CallEvent]:
    return TypeAdapter(CallEvent)


def parse_event(body: str | bytes) -> CallEvent:
    return event_adapter().validate_json(body)


# Status the customer sees with each event (the API guide's ``call_status``).
_CALLBACK_STATUS = {
    "call.ringing": "ringing",
    "call.answered": "in-progress",
    "call.transferred": "in-progress",
    "call.redirected": "in-progress",
    "call.bot_reconnected": "in-progress",
}


def callback_payload(event: CallEvent) -> dict[str, Any] | None:
    """The webhook body for an event, exactly as the API guide shows; None if none is sent."""
    if isinstance(event, CallCreated):
        return None
    payload: dict[str, Any] = {
        "event_type": event.type,
        "call_uuid": str(event.call_uuid),
        "timestamp": iso_z(event.occurred_at),
    }
    if isinstance(event, CallCompleted):
        payload["call_status"] = event.status.value
        payload["duration"] = event.duration
        payload["hangup_cause"] = event.hangup_cause
        # The call's media figures as the node measured them (PROTOCOL.md, "Call figures");
        # null for a call the node did not end (the reaper's) or that had none.
        payload["slo"] = event.stats.get("slo")
    elif isinstance(event, CallFailed):
        payload["call_status"] = "failed"
        payload["hangup_cause"] = event.hangup_cause
    else:
        payload["call_status"] = _CALLBACK_STATUS[event.type]
    if isinstance(event, CallTransferred):
        payload["destination"] = event.destination
    if isinstance(event, CallRedirected | CallBotReconnected):
        payload["media_server"] = event.media_server
        if event.driver is not None:
            payload["driver"] = event.driver
    if isinstance(event, CallBotReconnected):
        payload["resumed_from"] = event.resumed_from
        payload["gap_ms"] = event.gap_ms
        payload["fallback"] = event.fallback
    return payload


class CallbackMessage(BaseModel):
    """A status callback waiting for delivery (the callbacks queue's message body).

    ``id`` is derived from the event id, so a re-queued event yields the same callback id; the
    receiver can use it (header ``X-Callback-ID``) to drop a duplicate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    account_id: str
    call_uuid: uuid.UUID
    webhook_url: HttpUrl | None = None
    payload: dict[str, Any]


def parse_callback(body: str | bytes) -> CallbackMessage:
    return CallbackMessage.model_validate_json(body)
