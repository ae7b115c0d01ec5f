"""Commands the control plane sends to edge nodes over SQS (versioned, discriminated by ``type``).

Every command carries an ``id``: SQS delivers at least once, so a node keeps the ids it has applied
and ignores a repeat. ``version`` lets a newer API talk to an older node during a rolling deploy: a
node refuses a version it does not know instead of guessing.

Two families share that envelope: the call commands (`Command`: originate, hangup, transfer,
redirect), each about one ``call_uuid``, and `Invalidate`, which is about no call: it tells a node
to forget cached routing items an API write changed (``edge_media/routing/cache.py``). A node
from before `Invalidate` existed fails to parse the new ``type`` (the discriminator names no such
member), and its consumer deletes the message as invalid; its cache TTL then bounds how stale it
gets, which is what happens to any lost invalidation.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from shared.clock import utc_now
from shared.validation import HttpUrl, MediaTargetStr, PhoneNumber, TransferDestination

COMMAND_VERSION = 1


# An Invalidate names at most this many items (one API write changes one item; bulk tools batch).
MAX_INVALIDATE_KEYS = 100
MAX_KEY_LENGTH = 128


class _Envelope(BaseModel):
    """What every node command has, in the order its JSON has always had it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: f"cmd_{uuid.uuid4().hex}")
    version: Literal[1] = COMMAND_VERSION


class _Command(_Envelope):
    """A command about one call (the fields, and their JSON order, are those of version 1)."""

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


InvalidateKind = Literal["account", "number", "extension", "agent"]
InvalidateKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH)]


class Invalidate(_Envelope):
    """Forget cached routing items of ``kind`` that an API write changed (sent to every live
    node's own queue by ``functions/api/node_notify.py``).

    ``keys``: E.164 numbers, extension names (of ``account_id``), or agent uuids; for ``account``
    the account is ``account_id`` itself and ``keys`` may be empty.
    """

    account_id: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    issued_at: datetime = Field(default_factory=utc_now)
    type: Literal["invalidate"] = "invalidate"
    kind: InvalidateKind
    keys: list[InvalidateKey] = Field(default_factory=list, max_length=MAX_INVALIDATE_KEYS)

    @model_validator(mode="after")
    def _keys_name_the_items(self) -> Invalidate:
        if self.kind != "account" and not self.keys:
            raise ValueError(f"keys: at least one {self.kind} is needed")
        return self


# The call commands (each has a call_uuid), and everything a node's queue may carry.
Command = Annotated[Originate | Hangup | Transfer | Redirect, Field(discriminator="type")]
NodeCommand = Annotated[
    Originate | Hangup | Transfer | Redirect | Invalidate, Field(discriminator="type")
]


@cache
def command_adapter() -> TypeAdapter[NodeCommand]:
    """One TypeAdapter for the union (building it costs more than using it)."""
    return TypeAdapter(NodeCommand)


def parse_command(body: str | bytes) -> NodeCommand:
    """Validate an SQS message body; raises pydantic.ValidationError naming the field."""
    return command_adapter().validate_json(body)
