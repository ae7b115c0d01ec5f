"""The seam between a call's caller side and its bot: what the bridge and a driver may ask of each other.

Why a seam this small: the caller side is a SIP leg today and an agent-stream WebSocket next
(docs/architecture.md), and the bot side a Twilio-stream bot, ElevenLabs or Vapi. Each
driver sees only `CallerLeg` (where bot audio, marks and clears go) and each caller leg sees only
`BotDriver` (where caller audio and digits go). Everything on both sides is synchronous and never
blocks, because it runs on the RTP read path and on the pacer tick; the only awaits are connecting,
waiting for the bot to go away, and stopping it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from edge_media.rtp.playout import PlayedMark

__all__ = [
    "BotConnector",
    "BotDriver",
    "BotEnd",
    "BotUnavailable",
    "CallInfo",
    "CallerLeg",
    "ConnectStep",
]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a bot is told about the call it serves (Twilio-stream ``start.customParameters``)."""

    call_uuid: str
    account_id: str
    direction: str  # "inbound" | "outbound"
    from_number: str
    to_number: str
    extra: dict[str, str] = field(default_factory=dict)
    # Set on a reconnection after the previous bot connection failed (bridge/bot_failover.py):
    # the failed connection's stream SID and how long the caller went without a bot.
    resumed_from: str | None = None
    resume_gap_ms: int | None = None


FAILURE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


@dataclass(frozen=True, slots=True)
class BotEnd:
    """How a bot connection ended.

    ``by_bot`` is True when the bot side closed or failed (the call should be hung up), False when
    we stopped it (caller gone, redirect). ``code`` is the WebSocket close code when there was one.
    """

    by_bot: bool
    reason: str
    code: int | None = None

    @property
    def failed(self) -> bool:
        """The bot's side broke rather than hung up: the connection dropped without a closing
        handshake (1006: reset, EOF, keepalive timeout) or closed with a server-side code
        (1001 going away, 1011 internal error, 1012 restart, 1013 try again later, 1014 bad
        gateway). The call survives these (bridge/bot_failover.py); a bot that closes with
        1000 (or any other code) meant to end the call."""
        return self.by_bot and self.code in FAILURE_CLOSE_CODES


class ConnectStep(StrEnum):
    """Which step of connecting a bot failed: logged and kept in the call record's ``media``."""

    TARGET = "target"  # not a media target, or an address the node refuses (SSRF)
    CREDENTIALS = "credentials"  # a native target whose account setting is missing
    REST = "rest"  # the provider's REST call (signed URL, create call) failed or refused
    DNS = "dns"  # the host name does not resolve
    TLS = "tls"  # TLS handshake or certificate verification failed
    CONNECT = "connect"  # TCP refused, reset or unreachable
    HANDSHAKE = "handshake"  # the WebSocket upgrade was refused or broken
    TIMEOUT = "timeout"  # not done within the bot connect timeout


class BotUnavailable(Exception):
    """The bot could not be reached or refused the connection (the bridge falls back or rejects).

    ``step`` says which step failed; the message says why, without any key, token or signed URL.
    """

    def __init__(self, reason: str, *, step: ConnectStep = ConnectStep.CONNECT) -> None:
        super().__init__(reason)
        self.step = step


class CallerLeg(Protocol):
    """The caller side as a driver sees it. Implemented by the bridge over an `RtpSession`."""

    def play(self, ulaw: bytes) -> None:
        """Append bot audio (8 kHz μ-law, any length) to the playout queue."""

    def mark(self, name: str) -> None:
        """Queue a mark behind the audio played so far; `BotDriver.marks_played` reports it."""

    def clear(self) -> list[PlayedMark]:
        """Drop all unplayed audio now; returns the pending marks in order (the driver echoes them)."""


class BotDriver(Protocol):
    """One live bot connection. Sync methods never block; they run on the media path."""

    def send_audio(self, ulaw: bytes) -> None:
        """One frame of caller audio (normally 20 ms, 160 bytes of μ-law)."""

    def send_dtmf(self, digit: str) -> None:
        """One caller key press (RFC 4733 or SIP INFO), once per key."""

    def marks_played(self, marks: list[PlayedMark]) -> None:
        """Playout reached these marks (in order)."""

    async def wait_closed(self) -> BotEnd:
        """Return when the connection is over, whoever ended it."""

    async def stop(self, reason: str) -> None:
        """End the stream from our side (protocol goodbye, then close); bounded in time."""

    def stats(self) -> dict[str, Any]:
        """Figures for the call record (messages in/out, dropped, round trip)."""

    def provider_ids(self) -> dict[str, str]:
        """Ids the far end gave this connection (stream SID, ElevenLabs conversation_id, Vapi
        call id), for the call record's ``media`` entry. Never a key, token or signed URL."""


BotConnector = Callable[[str, CallInfo, CallerLeg, float], Awaitable[BotDriver]]
"""``connect(target, info, leg, timeout)``: a connected, started driver, or `BotUnavailable`.

Every driver kind connects through this one signature (drivers/registry.py picks the kind from
the target); what a kind needs beyond it (settings, the account's credentials, an HTTP client)
it takes from a `DriverContext` when its connector is built."""
