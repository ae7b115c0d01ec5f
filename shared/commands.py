"""Commands the control plane sends to edge nodes over SQS (versioned, discriminated by ``type``).

Every command carries an ``id``: SQS delivers at least once, so a node keeps the ids it has applied
and ignores a repeat. ``version`` lets a newer API talk to an older node during a rolling deploy: a
node refuses a version it does not know instead of guessing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.clock import utc_now
from shared.validation import HttpUrl, MediaTargetStr, PhoneNumber, TransferDestination

COMMAND_VERSION = 1


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: f"cmd_{uuid.uuid4().hex}")
    version: Literal[1] = COMMAND_VERSION
    call_uuid: uuid.UUID
    account_id: str
    issued_at: datetime = Field(default_factory=utc_now)


class Originate(_Command):
    """Place an outbound call; taken by any live node from the shared originate queue."""

    type: Literal["originate"] = "originate"
    destination_number: PhoneNumber
    caller_id_number: PhoneNumber | None = None
    caller_id_name: str | None = Field(None, max_length=128)
    socket_url: MediaTargetStr | None = None
    webhook_url: HttpUrl | None = None
    trunk_id: str | None = None
    ring_timeout: int = Field(60, ge=5, le=300)


class Hangup(_Command):
    type: Literal["hangup"] = "hangup"
    cause: str = "NORMAL_CLEARING"


class Transfer(_Command):
    type: Literal["transfer"] = "transfer"
    destination: TransferDestination


class Redirect(_Command):
    type: Literal["redirect"] = "redirect"
    media_server: MediaTargetStr


Command = Annotated[Originate | Hangup | Transfer | Redirect, Field(discriminator="type")]


@cache
def command_adapter() -> TypeAdapter[Command]:
    """One TypeAdapter for the union (building it costs more than using it)."""
    return TypeAdapter(Command)


def parse_command(body: str | bytes) -> Command:
    """Validate an SQS message body; raises pydantic.ValidationError naming the field."""
    return command_adapter().validate_json(body)
