"""Domain entities (the items of the one DynamoDB table) as pydantic v2 models.

These are the stored shapes, shared by the control plane and the edge; API request/response bodies
live in ``functions/`` and convert to these. Validation messages are meant for people: a model that
fails names the field (pydantic's ``loc``) and says what a good value looks like.

Secrets stored here are the ones the gateway must be able to use (a trunk's digest password, an
account's webhook secret, provider API keys). Extension passwords and API keys are never stored:
extensions keep digest HA1 values, API keys a SHA-256 hash.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.clock import utc_now
from shared.validation import (
    E164Number,
    ExtensionName,
    HttpUrl,
    MediaTargetStr,
    PhoneNumber,
)


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR (e.g. 203.0.113.0/24)") from None


Cidr = Annotated[str, AfterValidator(_check_cidr)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class Entity(BaseModel):
    """Base of every stored entity: strict about unknown fields, timestamps in UTC."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)


def new_id(prefix: str) -> str:
    """Short, unguessable, prefixed ids (``acc_3f2a...``) that say what they name in logs."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# --------------------------------------------------------------------------- routes


class Route(BaseModel):
    """Where a call goes: exactly one of a media target, a routing webhook or an agent."""

    model_config = ConfigDict(extra="forbid")

    socket_url: MediaTargetStr | None = None
    webhook_url: HttpUrl | None = None
    agent_uuid: uuid.UUID | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Route:
        chosen = [n for n in ("socket_url", "webhook_url", "agent_uuid") if getattr(self, n)]
        if len(chosen) != 1:
            raise ValueError("set exactly one of socket_url, webhook_url or agent_uuid")
        return self


# --------------------------------------------------------------------------- account


class ElevenLabsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: str | None = Field(None, max_length=256)
    agent_id: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class VapiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: str | None = Field(None, max_length=256)
    assistant_id: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class AccountLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_concurrent_calls: int = Field(100, ge=1, le=100_000)
    calls_per_second: float = Field(10.0, gt=0, le=1000)


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Account(Entity):
    account_id: str = Field(default_factory=lambda: new_id("acc"))
    name: Name
    status: AccountStatus = AccountStatus.ACTIVE
    webhook_url: HttpUrl | None = None
    socket_url: MediaTargetStr | None = None
    webhook_secret: str = Field(min_length=16)
    elevenlabs: ElevenLabsSettings = Field(default_factory=ElevenLabsSettings)
    vapi: VapiSettings = Field(default_factory=VapiSettings)
    limits: AccountLimits = Field(default_factory=AccountLimits)


class ApiKeyRole(StrEnum):
    ADMIN = "admin"
    ACCOUNT = "account"


class ApiKey(Entity):
    """An API key's record. The key itself is shown once at creation and never stored."""

    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str
    account_id: str
    prefix: str
    name: Name
    role: ApiKeyRole = ApiKeyRole.ACCOUNT
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


# --------------------------------------------------------------------------- routing resources


class Number(Entity):
    """A DID owned by an account, routed to a bot, a webhook or an agent."""

    number: E164Number
    account_id: str
    route: Route
    description: str | None = Field(None, max_length=256)


class Extension(Entity):
    """A SIP user that registers with the gateway; its password is kept only as digest HA1."""

    account_id: str
    extension: ExtensionName
    sip_username: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")]
    realm: str
    ha1_md5: str = Field(pattern=r"^[0-9a-f]{32}$")
    ha1_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    route: Route | None = None
    description: str | None = Field(None, max_length=256)


class Registration(Entity):
    """One contact bound by an extension's REGISTER; expires_at drives DynamoDB TTL."""

    account_id: str
    extension: ExtensionName
    contact: str = Field(min_length=1, max_length=1024)
    source: str = Field(description="host:port the REGISTER came from (the NAT-mapped address)")
    transport: Literal["udp", "tcp"] = "udp"
    node_id: str
    expires_at: datetime
    user_agent: str | None = Field(None, max_length=256)


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"


class Trunk(Entity):
    """A carrier connection: where outbound calls go and which sources may send inbound calls."""

    trunk_id: str = Field(default_factory=lambda: new_id("trk"))
    account_id: str
    name: Name
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: int = Field(5060, ge=1, le=65535)
    transport: Transport = Transport.UDP
    username: str | None = Field(None, max_length=128)
    password: str | None = Field(None, max_length=256)
    needs_registration: bool = Field(False, description="REGISTER with the trunk to receive calls")
    inbound_sources: list[Cidr] = Field(default_factory=list, max_length=100)
    caller_id_number: PhoneNumber | None = None


class Agent(Entity):
    """A named route with a stable UUID; the agent-stream URL selects it."""

    agent_uuid: uuid.UUID = Field(default_factory=uuid.uuid4)
    account_id: str
    name: Name
    socket_url: MediaTargetStr
    telephony_config_id: str | None = None
    require_token: bool = Field(
        False, description="streams must carry a token (agera stream-token prints one)"
    )


class TelephonyProvider(StrEnum):
    CLOUDONIX = "cloudonix"
    TWILIO = "twilio"


class TelephonyConfig(Entity):
    """Provider credentials that agent streams are checked against and that hang calls up."""

    config_id: str = Field(default_factory=lambda: new_id("tel"))
    account_id: str
    provider: TelephonyProvider
    domain: str | None = Field(None, max_length=253, description="cloudonix domain")
    bearer_token: str | None = Field(None, max_length=512, description="cloudonix API token")
    account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$", description="twilio")
    auth_token: str | None = Field(None, max_length=256, description="twilio auth token")

    @model_validator(mode="after")
    def _provider_fields(self) -> TelephonyConfig:
        need = {
            TelephonyProvider.CLOUDONIX: ("domain", "bearer_token"),
            TelephonyProvider.TWILIO: ("account_sid", "auth_token"),
        }[self.provider]
        missing = [n for n in need if not getattr(self, n)]
        if missing:
            raise ValueError(f"provider {self.provider} needs {' and '.join(missing)}")
        return self


# --------------------------------------------------------------------------- calls


class CallStatus(StrEnum):
    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        """Order of the lifecycle; a record only ever moves to a higher rank."""
        return 3 if self.terminal else _RANK[self]


TERMINAL_STATUSES = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.FAILED,
        CallStatus.CANCELED,
    }
)
_RANK = {CallStatus.QUEUED: 0, CallStatus.RINGING: 1, CallStatus.IN_PROGRESS: 2}


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MediaLeg(BaseModel):
    """One bot connection in a call's life, or one attempt at it (a redirect appends one).

    ``target`` is shown without user info, query or fragment (tokens and signatures live
    there); ``provider_ids`` are what the far end named the connection (``stream_sid``,
    ElevenLabs ``conversation_id``, ``vapi_call_id``), so a user can find it in the provider's
    console; ``failed_step`` is set when the connection never came up (``rest``, ``dns``,
    ``tls``, ``timeout`` ...).
    """

    model_config = ConfigDict(extra="forbid")
    driver: str | None = Field(None, description="websocket, elevenlabs or vapi")
    target: str
    started_at: datetime
    ended_at: datetime | None = None
    provider_ids: dict[str, str] = Field(default_factory=dict)
    end_reason: str | None = Field(None, max_length=512)
    failed_step: str | None = None
    resumed_from: str | None = Field(
        None, description="set on a reconnection: the failed connection's stream SID"
    )


class Call(Entity):
    call_uuid: uuid.UUID = Field(default_factory=uuid.uuid4)
    account_id: str
    direction: Direction
    from_number: str = Field(max_length=256)
    to_number: str = Field(max_length=256)
    caller_id_name: str | None = Field(None, max_length=128)
    status: CallStatus = CallStatus.QUEUED
    node_id: str | None = None
    socket_url: MediaTargetStr | None = None
    webhook_url: HttpUrl | None = None
    trunk_id: str | None = None
    media: list[MediaLeg] = Field(default_factory=list)
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: int | None = Field(None, ge=0, description="whole seconds from answer to end")
    hangup_cause: str | None = None
    # Who wrote the end when it was not the call's own node: "reaper" for a call whose node died.
    ended_by: str | None = Field(None, max_length=32)
    end_detail: str | None = Field(None, max_length=256, description="what the cause means here")
    sip_status: int | None = None
    transferred_to: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    callback_attempts: list[dict[str, Any]] = Field(default_factory=list)
    # Set for calls a provider streamed in (agent streams); None for SIP calls.
    mode: str | None = Field(None, description="the streaming provider: cloudonix or twilio")
    run_name: str | None = Field(None, max_length=32, description="WR-AGS-XXXXXXXX")
    agent_uuid: uuid.UUID | None = None
    call_id: str | None = Field(None, max_length=256, description="the provider's call id")
    provider_id: str | None = Field(
        None, max_length=256, description="Cloudonix domain or Twilio account SID"
    )
    stream_sid: str | None = Field(None, max_length=128)
    call_sid: str | None = Field(None, max_length=128)


class NodeStatus(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"


class TrunkRegistrationState(BaseModel):
    """How one node's REGISTER with one trunk stands, as published in its heartbeat.

    Only what a person needs to see why calls do or do not arrive: never the password, the
    nonce or an Authorization header. ``state`` is ``registering``, ``registered`` or ``failed``
    (a plain string, and unknown fields ignored, so a newer node's item never fails to load in
    an older control plane: call control reads this item for the node's queue).
    ``status_code`` is the last final answer (None: no answer), ``expires_at`` when the binding
    lapses unless refreshed, ``since`` when this state began.
    """

    model_config = ConfigDict(extra="ignore")

    account_id: str
    state: str
    status_code: int | None = None
    reason: str = ""
    expires_at: datetime | None = None
    since: datetime


class EdgeNode(Entity):
    """A live edge media process; the heartbeat refreshes expires_at (DynamoDB TTL)."""

    node_id: str
    queue_url: str
    sip_address: str
    status: NodeStatus = NodeStatus.ACTIVE
    active_calls: int = Field(0, ge=0)
    heartbeat_at: datetime = Field(default_factory=utc_now)
    expires_at: datetime
    # One per process start: a node restarted under the same id (stable identity) gets a new one,
    # so the reaper can tell the calls of the run that died from the calls of the live run.
    run_id: str | None = Field(None, max_length=64)
    # Per trunk id, this node's registration with each trunk that wants REGISTER (the heartbeat
    # refreshes it); empty for a node that registers with none or predates the field.
    trunk_registrations: dict[str, TrunkRegistrationState] = Field(default_factory=dict)
