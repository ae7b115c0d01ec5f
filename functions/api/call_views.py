"""How a call is shown: the response bodies of the call endpoints, and its fields on log lines.

The response models are what the OpenAPI document (``functions/api/openapi.py``) publishes, so
their docstrings and descriptions are written for API users.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from functions.api.call_bodies import Action
from functions.api.pagination import page_model
from shared.models import Call, CallStatus, Direction, MediaLeg

# Stored fields that are infrastructure, not the customer's business.
INTERNAL_CALL_FIELDS = frozenset({"node_id", "trunk_id"})


class CallView(BaseModel):
    """A call as the API shows it."""

    call_uuid: uuid.UUID
    account_id: str
    direction: Direction
    status: CallStatus
    from_number: str
    to_number: str
    caller_id_name: str | None = None
    socket_url: str | None = None
    webhook_url: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: int | None = None
    hangup_cause: str | None = None
    ended_by: str | None = Field(
        None, description='"reaper" when the call\'s edge node died and the gateway ended it'
    )
    end_detail: str | None = Field(None, description="what hangup_cause means for this call")
    sip_status: int | None = None
    transferred_to: str | None = None
    media: list[MediaLeg] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    callback_attempts: list[dict[str, Any]] = Field(default_factory=list)
    mode: str | None = Field(None, description="agent streams: the provider that streamed it")
    run_name: str | None = Field(None, description="agent streams: WR-AGS-XXXXXXXX")
    agent_uuid: uuid.UUID | None = Field(None, description="agent streams: the agent")
    call_id: str | None = Field(None, description="agent streams: the provider's call id")
    provider_id: str | None = Field(
        None, description="agent streams: Cloudonix domain or Twilio account SID"
    )
    stream_sid: str | None = Field(None, description="agent streams: the stream's streamSid")
    call_sid: str | None = Field(None, description="agent streams: the stream's callSid")
    created_at: datetime
    updated_at: datetime


CallPage = page_model(CallView, "CallPage")


class CommandAccepted(BaseModel):
    """A live command was handed to the call's node (or, for a queued call, applied in place)."""

    call_uuid: uuid.UUID
    command: Action
    command_id: str
    status: CallStatus = Field(description="the call's status when the command was accepted")


def call_view(call: Call) -> dict[str, Any]:
    """The JSON body of a call; validated through CallView so it matches what OpenAPI promises."""
    data = call.model_dump(exclude=set(INTERNAL_CALL_FIELDS))
    return CallView.model_validate(data).model_dump(mode="json")


def command_accepted(
    call: Call, action: Action, command_id: str, status: CallStatus
) -> dict[str, Any]:
    """The 202 body of a live command.

    ``command_id`` is the id the API's log lines carry for the command (for a queued call canceled
    in place, its ``call.completed`` event's id), so a client's report can be traced.
    """
    return CommandAccepted(
        call_uuid=call.call_uuid, command=action, command_id=command_id, status=status
    ).model_dump(mode="json")


def log_fields(call: Call, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log line about ``call``.

    Passed per line rather than with ``append_keys``: handlers run in worker threads, and appended
    keys live in state the threads share, so one request's call would be stamped on another's lines.
    """
    return {"call_uuid": str(call.call_uuid), "account_id": call.account_id, **more}
