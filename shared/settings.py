"""Every setting of the gateway, read from the environment in one place.

Why one module: operators configure the gateway only through environment variables (Lambda, systemd
units, `agera dev`), and a typo must fail at start with one line that names the variable, not deep
inside a call. Each field below is documented with its variable name and default; `agera settings`
prints the table. An explicit keyword argument to `Settings.load()` beats the environment (tests and the
local stack pass overrides), and the environment is read once, at the edge of the program.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "AGERA_"


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming the variable."""


class Settings(BaseModel):
    """The gateway's settings; the env variable of a field is ``AGERA_`` + its upper-cased name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- storage and queues (both planes) ---
    table_name: str = Field("agera", description="DynamoDB table holding every entity.")
    originate_queue_url: str = Field("", description="SQS queue of originate commands.")
    events_queue_url: str = Field("", description="SQS queue of call events from edge nodes.")
    callbacks_queue_url: str = Field("", description="SQS queue of status callbacks to deliver.")
    node_queue_prefix: str = Field("agera-node-", description="Name prefix of per-node queues.")

    # --- stored secrets (docs/secrets.md) ---
    kms_key_id: str = Field(
        "",
        max_length=2048,
        description="KMS key (id, ARN or alias) that seals stored secrets (trunk passwords, "
        "provider tokens, webhook secrets). Empty: secrets are still read, but none is written "
        "unless AGERA_SECRETS_PLAINTEXT is set.",
    )
    secrets_plaintext: bool = Field(
        False,
        description="Local stacks only: with no AGERA_KMS_KEY_ID, store secrets unsealed instead "
        "of refusing to. Ignored when a key is set.",
    )
    secret_key_cache_seconds: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="How long one KMS data key seals new secrets, and an unwrapped one is kept "
        "for reading (also how long a warm process still works after the key is disabled).",
    )

    # --- control plane ---
    api_key_cache_seconds: float = Field(
        5.0, ge=0, le=60, description="How long a resolved API key is cached (revocation delay)."
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest accepted API request body.")
    ssrf_allow_list: tuple[str, ...] = Field(
        (),
        description="Comma-separated CIDRs that socket/webhook URLs may point into although private.",
    )
    callback_timeout_seconds: float = Field(
        5.0, gt=0, le=30, description="Status callback timeout."
    )
    callback_max_attempts: int = Field(5, ge=1, le=20, description="Deliveries before the DLQ.")
    callback_backoff_seconds: int = Field(
        10, ge=0, le=900, description="First retry delay of a failed callback; doubles each time."
    )
    routing_webhook_timeout_seconds: float = Field(
        3.0, gt=0, le=10, description="Routing webhook timeout (the API guide says 3 s, strict)."
    )
    tracing: bool = Field(False, description="Create the X-Ray tracer (adds ~110 ms cold start).")
    reaper_grace_seconds: float = Field(
        90.0,
        ge=0,
        description="Reaper: a node whose heartbeat is older than this is dead, and its calls are "
        "ended (well above the node's 15 s heartbeat, so one late beat never ends a live call).",
    )
    reaper_queue_retention_seconds: float = Field(
        86400.0,
        ge=0,
        description="Reaper: how long a dead node's command queue and its DLQ are kept (a node "
        "restarted with the same id within this time keeps them).",
    )
    reaper_interval_seconds: float = Field(
        60.0, gt=0, description="Local stack only: how often `agera dev` runs the reaper."
    )

    # --- edge media node ---
    node_id: str = Field(
        "",
        description="Edge node identity; when empty (and not from IMDS) a generated id kept in "
        "the state directory, so a restarted node keeps its queue.",
    )
    node_id_from_imds: bool = Field(
        False,
        description="Use the EC2 instance id (IMDSv2) as the node id. Off by default, so a "
        "local run never asks 169.254.169.254.",
    )
    imds_base_url: str = Field(
        "http://169.254.169.254",
        pattern=r"^http://[^/?#\s]+/?$",
        description="Instance metadata service origin (tests point it at a fake).",
    )
    state_dir: str = Field(
        "",
        description="Where the node keeps its generated id; empty: $XDG_STATE_HOME/agera, "
        "else ~/.local/state/agera.",
    )
    sip_host: str = Field("127.0.0.1", description="Address the SIP UDP/TCP listener binds.")
    sip_port: int = Field(
        5060, ge=0, le=65535, description="SIP port, UDP and TCP (0: any free port, for tests)."
    )
    public_address: str = Field(
        "", description="Address put in Contact/SDP for peers (NAT); defaults to sip_host."
    )
    public_address_from_imds: bool = Field(
        False,
        description="On EC2: read public_address from IMDSv2 (public-ipv4) at start, unless "
        "AGERA_PUBLIC_ADDRESS is set. A node that cannot learn it does not start.",
    )
    autoscaling_group_name: str = Field(
        "",
        max_length=255,
        description="On EC2 in an Auto Scaling group: its name. With lifecycle_hook_name the "
        "node drains when the group scales it in and then completes the lifecycle action.",
    )
    lifecycle_hook_name: str = Field(
        "", max_length=255, description="The group's EC2_INSTANCE_TERMINATING lifecycle hook."
    )
    lifecycle_poll_seconds: float = Field(
        5.0, gt=0, le=60, description="How often the node reads its target lifecycle state."
    )
    lifecycle_heartbeat_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="While draining for a scale-in, how often the lifecycle action is extended.",
    )
    ws_host: str = Field("127.0.0.1", description="Address of the agent-stream/health listener.")
    ws_port: int = Field(
        8080, ge=0, le=65535, description="Agent-stream/health port (0: any free port, for tests)."
    )
    stream_public_url: str = Field(
        "",
        pattern=r"^(wss?://[^/?#\s]+/?)?$",
        description="Public base URL providers stream to (wss://streams.example.com), for "
        "Twilio's signature; empty: rebuilt from the request's Host and X-Forwarded-Proto.",
    )
    stream_handshake_seconds: float = Field(
        10.0, gt=0, le=60, description="Agent streams: time for each of connected and start."
    )
    cloudonix_api_base: str = Field(
        "https://api.cloudonix.io",
        pattern=r"^https?://[^/?#\s]+/?$",
        description="Cloudonix API origin (agent-stream session checks, hangup, transfer).",
    )
    twilio_api_base: str = Field(
        "https://api.twilio.com",
        pattern=r"^https?://[^/?#\s]+/?$",
        description="Twilio API origin (agent-stream call checks, hangup, transfer).",
    )
    rtp_port_min: int = Field(20000, ge=1024, le=65534, description="First RTP port (even).")
    rtp_port_max: int = Field(29999, ge=1025, le=65535, description="Last RTP port.")
    echo_enabled: bool = Field(True, description="Answer sip:echo@node with the echo test app.")
    trust_loopback: bool = Field(
        False, description="Accept INVITEs from 127.0.0.0/8 and ::1 without a trunk (local stack)."
    )
    drain_seconds: float = Field(
        300.0, ge=0, description="On SIGTERM, how long live calls may continue before hangup."
    )
    max_playout_seconds: float = Field(
        60.0, gt=0, description="Cap on bot audio buffered for one call."
    )
    sip_realm: str = Field("agera", description="Digest realm for extensions.")
    sip_digest_algorithms: tuple[str, ...] = Field(
        ("MD5",),
        description="Digest challenges offered, in order (RFC 8760), e.g. SHA-256,MD5. Only MD5 "
        "by default: baresip 1.0 gives up when any challenge is not MD5, sipp 3.6 answers only "
        "the first one.",
    )
    sip_trusted_sources: tuple[str, ...] = Field(
        (),
        description="Comma-separated CIDRs whose INVITEs are accepted (carrier trunks' sources).",
    )
    media_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Edge worker processes sharing the SIP port (SO_REUSEPORT); the RTP range "
        "is split between them. One per core.",
    )
    worker_index: int = Field(
        0,
        ge=0,
        le=63,
        description="This process's index among the media workers (set by `agera edge` for "
        "each worker it starts; not for users).",
    )
    max_calls: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Calls this node takes at once (0: no limit but the RTP range); above it new "
        "INVITEs get 503 + Retry-After, streams HTTP 503, and originates stay queued for another "
        "node. Split evenly between media workers.",
    )
    max_loop_lag_ms: float = Field(
        50.0,
        ge=0,
        description="Event-loop lag (90th percentile over 1 s) above which a worker takes no new "
        "call until it is below half of it again (0: off).",
    )
    rtp_timeout_seconds: float = Field(
        60.0, ge=0, description="Hang up an answered call after this long without RTP (0: never)."
    )
    bot_reconnect_attempts: int = Field(
        3,
        ge=0,
        le=20,
        description="When a bot connection fails mid-call (no closing handshake, or close 1001/"
        "1011-1014), connections tried to the same target within the window before the account "
        "default takes over (0: the call ends, as when the bot hangs up).",
    )
    bot_reconnect_window_seconds: float = Field(
        60.0, gt=0, description="The sliding window bot_reconnect_attempts is counted in."
    )
    bot_hold_tone: bool = Field(
        False,
        description="While a failed bot reconnects the caller hears a soft beep every 2 s "
        "instead of silence.",
    )
    bot_connect_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=30,
        description="How long a bot may take to connect (REST call, WebSocket handshake and, for "
        "ElevenLabs, its metadata) before fallback.",
    )
    elevenlabs_api_base: str = Field(
        "https://api.elevenlabs.io",
        pattern=r"^https?://[^/?#\s]+/?$",
        description="ElevenLabs API origin; the conversation WebSocket is the same host over "
        "ws(s)://. Point it at a regional host (api.eu.residency.elevenlabs.io) or a test fake.",
    )
    vapi_api_base: str = Field(
        "https://api.vapi.ai",
        pattern=r"^https?://[^/?#\s]+/?$",
        description="Vapi API origin (POST /call creates each call's WebSocket).",
    )
    originate_poll_seconds: int = Field(
        20,
        ge=1,
        le=20,
        description="Long-poll wait on the shared originate queue; a stopping node lets its poll "
        "finish (at most this long) and hands back what it brings.",
    )
    echo_ring_seconds: float = Field(
        0.0, ge=0, le=60, description="How long the echo app rings before answering."
    )
    sip_ban_failures: int = Field(
        10,
        ge=0,
        le=1000,
        description="Failed digest attempts (or malformed requests) from one source within "
        "AGERA_SIP_BAN_WINDOW_SECONDS that ban it (0: never ban). Trusted and trunk sources are "
        "never banned.",
    )
    sip_ban_window_seconds: float = Field(
        60.0, gt=0, le=86400, description="The window in which AGERA_SIP_BAN_FAILURES count."
    )
    sip_ban_seconds: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="How long a banned SIP source is answered by silence.",
    )
    sip_unknown_user_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=300,
        description="How long a SIP username the directory did not know is answered without a "
        "lookup (a new extension works after at most this long; 0: no cache).",
    )
    # Route cache (edge_media/routing/cache.py): the API invalidates it on every routing write,
    # so these only bound staleness when an invalidation is lost.
    route_cache_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long a node keeps a number, extension or agent it read (unknown ones "
        "too); API writes invalidate them at once, this bounds a lost invalidation (0: no cache).",
    )
    account_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How long a node keeps an account it read; changes (a suspension) invalidate "
        "it at once, this bounds a lost invalidation (0: no cache).",
    )
    route_cache_size: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="Most accounts, numbers, extensions and agents (each kind) a node keeps; the "
        "least recently used go first.",
    )
    sip_scanner_user_agents: tuple[str, ...] = Field(
        ("friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "sundayddr", "iWar"),
        description="Comma-separated User-Agent fragments (case-insensitive) whose requests are "
        "dropped unanswered; empty: none.",
    )
    sip_tcp_max_connections_per_source: int = Field(
        32,
        ge=0,
        le=65535,
        description="SIP TCP connections one source IP may open to a node (trusted and trunk "
        "sources, and our own dials, are not capped; 0: no cap).",
    )
    # One bot must not degrade every call's audio: all calls share one loop (PROTOCOL.md §6).
    bot_max_message_bytes: int = Field(
        262144,
        ge=4096,
        le=1048576,
        description="Largest message a bot connection may send (fragments joined); a larger one "
        "closes the connection with 1009 and ends the call. ~24 s of Twilio-stream audio.",
    )
    bot_inbound_realtime_factor: float = Field(
        4.0,
        ge=1,
        le=100,
        description="A bot may send this many times real time (in wire bytes) on average; "
        "messages beyond that budget are dropped unread and counted.",
    )
    bot_inbound_burst_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Burst allowance of the inbound budget: this much real-time audio (and one "
        "message per 20 ms of it) may arrive at once, e.g. a greeting sent ahead.",
    )
    bot_inbound_messages_per_second: float = Field(
        200.0,
        ge=50,
        le=100000,
        description="Messages a second a bot connection may send on average; beyond it "
        "messages are dropped unread and counted.",
    )
    bot_max_pending_marks: int = Field(
        1000,
        ge=1,
        le=1000000,
        description="Twilio-stream marks queued and not yet echoed, per connection; a mark "
        "beyond it is dropped, never echoed, and counted.",
    )
    bot_max_mark_name_chars: int = Field(
        256,
        ge=1,
        le=65536,
        description="Longest Twilio-stream mark name; a longer mark is dropped, never echoed, "
        "and counted.",
    )

    # --- dashboard (functions/dashboard, docs/dashboard.md) ---
    dashboard_session_secret: str = Field(
        "",
        description="Key that signs dashboard session cookies (32+ characters). Empty: a random "
        "key per process, so sessions end on restart and do not span processes; set it wherever "
        "more than one process serves the dashboard (Lambda).",
    )
    dashboard_session_seconds: int = Field(
        28800, ge=300, le=604800, description="How long a dashboard sign-in lasts."
    )
    dashboard_sign_in_attempts: int = Field(
        10,
        ge=1,
        le=1000,
        description="Failed dashboard sign-ins one client address may make per window before "
        "further attempts are refused (429).",
    )
    dashboard_sign_in_window_seconds: float = Field(
        300.0, gt=0, le=86400, description="Window of AGERA_DASHBOARD_SIGN_IN_ATTEMPTS."
    )
    dashboard_browser: str = Field(
        "/usr/bin/chromium",
        description="Chromium binary the dashboard's browser tests drive through Playwright.",
    )

    @field_validator("sip_digest_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        allowed = {"SHA-256", "MD5"}
        for name in value:
            if name not in allowed:
                raise ValueError(f"{name!r} is not a digest algorithm we offer (SHA-256, MD5)")
        if not value:
            raise ValueError("at least one digest algorithm is needed")
        return tuple(value)

    @field_validator("ssrf_allow_list", "sip_trusted_sources", mode="before")
    @classmethod
    def _split_cidrs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (e.g. 10.0.0.0/8)") from None
        return tuple(value)

    @field_validator("sip_scanner_user_agents", mode="before")
    @classmethod
    def _split_agents(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(value)

    @model_validator(mode="after")
    def _check_rtp_range(self) -> Settings:
        if self.rtp_port_max <= self.rtp_port_min:
            raise ValueError("rtp_port_max must be greater than rtp_port_min")
        return self

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win.

        Raises SettingsError with one line naming the variable at fault.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env:
                values[name] = env[key]
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            where = ENV_PREFIX + field.upper() if field else "settings"
            got = values.get(field, "")
            message = str(err["msg"]).removeprefix("Value error, ")
            raise SettingsError(f"{where}: {message} (got {got!r})") from None

    @property
    def advertised_address(self) -> str:
        """The address peers should send SIP and RTP to."""
        return self.public_address or self.sip_host


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows for docs and `agera settings`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append((ENV_PREFIX + name.upper(), str(default), field.description or ""))
    return rows
