"""What a client sends to the call endpoints: the request bodies and the listing's query.

Bodies refuse unknown fields, so a misspelt field is a 422 naming it rather than a call placed or
controlled with a default the client did not mean. The models' docstrings and field descriptions
are published in the OpenAPI document (``functions/api/openapi.py``): they are written for API
users, and editing them changes ``GET /api/openapi.json``.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from functions.api.pagination import ListQuery
from shared.models import CallStatus, Direction
from shared.validation import HttpUrl, MediaTargetStr, PhoneNumber, TransferDestination

# The live commands a client can send to a call; also the ``command`` of the 202 it gets back.
Action = Literal["hangup", "transfer", "redirect"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateCallRequest(_Body):
    """The API guide's originate body. Without ``socket_url`` and ``webhook_url`` the account's
    defaults route the call; with both, ``socket_url`` carries the media and ``webhook_url``
    receives this call's status callbacks."""

    destination_number: PhoneNumber
    caller_id_number: PhoneNumber
    caller_id_name: str | None = Field(None, min_length=1, max_length=128)
    socket_url: MediaTargetStr | None = Field(
        None,
        description="wss:// URL of your bot, or 'elevenlabs', 'elevenlabs&<agent_id>', "
        "'vapi', 'vapi&<assistant_id>'",
    )
    webhook_url: HttpUrl | None = Field(
        None, description="routing webhook (when no socket_url) and status callbacks"
    )


class HangupRequest(_Body):
    call_uuid: uuid.UUID


class TransferRequest(_Body):
    call_uuid: uuid.UUID
    destination_number: TransferDestination = Field(
        description="a phone number, an extension or a sip: URI"
    )


class RedirectRequest(_Body):
    call_uuid: uuid.UUID
    media_server: MediaTargetStr = Field(
        description="'elevenlabs', 'vapi', their '&<id>' forms, or a ws:// / wss:// URL"
    )


class CallListQuery(ListQuery):
    status: CallStatus | None = Field(None, description="only calls in this status")
    direction: Direction | None = Field(None, description="only inbound or outbound calls")
    account_id: str | None = Field(None, description="admin keys only: another account's calls")
