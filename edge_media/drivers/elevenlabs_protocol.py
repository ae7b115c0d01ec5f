"""The ElevenLabs Agents conversation WebSocket, spoken as its client: the pure protocol.

Why sans-I/O: the driver and the tests share one object that decides every byte, with no socket
or clock in between (as `twilio_stream`). Outgoing messages come back as JSON text for the I/O
layer to send; incoming text becomes typed events. Peer input never raises: malformed JSON,
missing fields, bad base64 and types we do not know come back as `Ignored`, flagged ``first``
once per kind so the driver logs each kind once.

What the client sends: `initiation` first (the call's facts as ``dynamic_variables``, which an
agent's prompt can use as ``{{caller_number}}``), then bare ``{"user_audio_chunk": ...}`` messages
(no ``type`` field, in the agent's input format), a ``pong`` for every ``ping`` with the ping's
``event_id``, and ``contextual_update`` texts.

Why DTMF is a ``contextual_update``: the conversation protocol has no key-press input message,
and a contextual update is the documented way to tell the agent something without starting a
user turn, so a digit informs the agent without cutting it off mid-sentence (a ``user_message``
would interrupt it and be answered as if spoken).

Interruptions: the agent's ``interruption`` event carries the id of the reply that was cut off;
audio of that reply (or an older one) may still be in flight, so every later ``audio`` whose
``event_id`` is not above the last interruption's is stale. The core keeps that id and turns
stale audio into `StaleAudio`, which the driver counts and never plays.

`user_audio` is the hot path (50 per second per call), so it is built by string formatting
instead of ``json.dumps``.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any

from edge_media.drivers.base import CallInfo

__all__ = [
    "DYNAMIC_VARIABLES",
    "IGNORED_AUDIO_BEFORE_METADATA",
    "IGNORED_BAD_BASE64",
    "IGNORED_BAD_JSON",
    "IGNORED_BAD_METADATA",
    "IGNORED_BINARY",
    "IGNORED_MISSING_FIELD",
    "IGNORED_NOT_OBJECT",
    "IGNORED_UNKNOWN_TYPE",
    "IGNORED_UNUSED",
    "AgentAudio",
    "AgentEvent",
    "ElevenLabsProtocol",
    "Ignored",
    "Interruption",
    "Metadata",
    "Ping",
    "StaleAudio",
    "ToolCall",
    "dtmf_text",
]

DETAIL_CHARS = 60  # a peer value quoted in an Ignored detail is cut to this many characters

# The call's facts every agent gets as dynamic variables; CallInfo.extra cannot override them.
DYNAMIC_VARIABLES = ("caller_number", "called_number", "call_uuid", "direction", "account_id")

# `Ignored.kind` values. The first six are protocol errors (the driver warns once per kind);
# IGNORED_UNUSED is a documented message the gateway has no use for (transcripts, VAD scores ...).
IGNORED_BAD_JSON = "bad_json"
IGNORED_NOT_OBJECT = "not_object"
IGNORED_MISSING_FIELD = "missing_field"
IGNORED_BAD_BASE64 = "bad_base64"
IGNORED_UNKNOWN_TYPE = "unknown_type"
IGNORED_BINARY = "binary"
IGNORED_BAD_METADATA = "bad_metadata"  # the conversation cannot start without its formats
IGNORED_AUDIO_BEFORE_METADATA = "audio_before_metadata"
IGNORED_UNUSED = "unused"

# Server message types documented for the conversation socket that the gateway does not act on.
UNUSED_TYPES = frozenset(
    {
        "agent_response",
        "agent_response_correction",
        "agent_chat_response_part",
        "agent_response_metadata",
        "agent_response_complete",
        "user_transcript",
        "tentative_user_transcript",
        "internal_tentative_agent_response",
        "internal_turn_probability",
        "asr_initiation_metadata",
        "vad_score",
        "mcp_tool_call",
        "mcp_connection_status",
        "agent_tool_request",
        "agent_tool_response",
        "agent_tool_response_full_payload",
        "client_error",
        "guardrail_triggered",
        "dtmf_request",
        "context_usage",
    }
)

TOOL_UNSUPPORTED = "client tools are not available on a phone call through this gateway"


@dataclass(frozen=True, slots=True)
class Metadata:
    """``conversation_initiation_metadata``: the conversation exists, in these formats."""

    conversation_id: str
    agent_output_audio_format: str
    user_input_audio_format: str


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent speech (in ``agent_output_audio_format``), decoded from base64."""

    audio: bytes
    event_id: int


@dataclass(frozen=True, slots=True)
class StaleAudio:
    """Agent audio of a reply that was interrupted: dropped, reported for the counters."""

    event_id: int
    size: int


@dataclass(frozen=True, slots=True)
class Interruption:
    """The caller barged in: stop playing the agent's audio now."""

    event_id: int


@dataclass(frozen=True, slots=True)
class Ping:
    """The server checks we are alive: answer with ``pong(event_id)`` at once."""

    event_id: int
    ping_ms: int | None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The agent asks the client to run a tool; we have none (answer `tool_unsupported`)."""

    tool_call_id: str
    tool_name: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message the gateway does not act on. ``kind`` is one of the ``IGNORED_*`` constants,
    ``detail`` a short reason (never the payload), ``first`` True once per kind."""

    kind: str
    detail: str
    first: bool


AgentEvent = Metadata | AgentAudio | StaleAudio | Interruption | Ping | ToolCall | Ignored


def dtmf_text(digit: str) -> str:
    """What the agent is told when the caller presses a key."""
    return f"caller pressed {digit}"


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


def _event_id(value: Any) -> int | None:
    # bool is an int subclass; `true` is not an event id.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class ElevenLabsProtocol:
    """One conversation with one ElevenLabs agent: builds what we send, reads what it sends.

    Send `initiation` first, then any mix of `user_audio`, `pong`, `contextual_update` and
    `tool_unsupported`. Feed every frame from the server to `receive_text` / `receive_bytes`.
    """

    __slots__ = (
        "_ignored_seen",
        "info",
        "interrupted_id",
        "metadata",
        "stale_dropped",
        "unknown_types",
    )

    def __init__(self, info: CallInfo) -> None:
        self.info = info
        self.metadata: Metadata | None = None
        self.interrupted_id: int | None = None  # event_id of the last interruption
        self.stale_dropped = 0  # audio events dropped as older than an interruption
        self.unknown_types = 0
        self._ignored_seen: set[str] = set()

    # -- what we send ------------------------------------------------------------------------

    def initiation(self) -> str:
        """``conversation_initiation_client_data``: must be the first message on the socket."""
        info = self.info
        variables: dict[str, str] = {
            "caller_number": info.from_number,
            "called_number": info.to_number,
            "call_uuid": info.call_uuid,
            "direction": info.direction,
            "account_id": info.account_id,
        }
        for name, value in info.extra.items():
            if name not in DYNAMIC_VARIABLES:
                variables[name] = value
        return _dumps(
            {
                "type": "conversation_initiation_client_data",
                "conversation_config_override": {},
                "dynamic_variables": variables,
            }
        )

    @staticmethod
    def user_audio(audio: bytes) -> str:
        """One chunk of caller audio, already in the agent's ``user_input_audio_format``."""
        payload = binascii.b2a_base64(audio, newline=False).decode("ascii")
        return f'{{"user_audio_chunk":"{payload}"}}'

    @staticmethod
    def pong(event_id: int) -> str:
        return f'{{"type":"pong","event_id":{int(event_id)}}}'

    @staticmethod
    def contextual_update(text: str) -> str:
        return _dumps({"type": "contextual_update", "text": text})

    @staticmethod
    def tool_unsupported(tool_call_id: str) -> str:
        """The answer to a client tool call: an error, so the agent does not wait for it."""
        return _dumps(
            {
                "type": "client_tool_result",
                "tool_call_id": tool_call_id,
                "result": TOOL_UNSUPPORTED,
                "is_error": True,
            }
        )

    # -- what the server sends ---------------------------------------------------------------

    def receive_bytes(self, data: bytes) -> list[AgentEvent]:
        """The protocol is JSON text only; a binary frame is ignored."""
        return [self._ignored(IGNORED_BINARY, f"binary frame of {len(data)} bytes")]

    def receive_text(self, text: str) -> list[AgentEvent]:
        """One text frame from the server. Unknown fields are tolerated everywhere."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            return [self._ignored(IGNORED_BAD_JSON, f"invalid JSON ({type(exc).__name__})")]
        if not isinstance(message, dict):
            return [self._ignored(IGNORED_NOT_OBJECT, f"JSON {type(message).__name__}")]
        kind = message.get("type")
        if kind == "audio":
            return [self._audio(message.get("audio_event"))]
        if kind == "ping":
            return [self._ping(message.get("ping_event"))]
        if kind == "interruption":
            return [self._interruption(message.get("interruption_event"))]
        if kind == "conversation_initiation_metadata":
            return [self._metadata(message.get("conversation_initiation_metadata_event"))]
        if kind == "client_tool_call":
            return [self._tool_call(message.get("client_tool_call"))]
        if not isinstance(kind, str):
            return [self._ignored(IGNORED_MISSING_FIELD, "no string 'type'")]
        if kind in UNUSED_TYPES:
            return [self._ignored(IGNORED_UNUSED, kind)]
        self.unknown_types += 1
        return [self._ignored(IGNORED_UNKNOWN_TYPE, f"type {_quote(kind)}")]

    # -- internals ---------------------------------------------------------------------------

    def _audio(self, event: Any) -> AgentEvent:
        if not isinstance(event, dict):
            return self._ignored(IGNORED_MISSING_FIELD, "audio without an audio_event object")
        payload = event.get("audio_base_64")
        event_id = _event_id(event.get("event_id"))
        if not isinstance(payload, str) or event_id is None:
            return self._ignored(
                IGNORED_MISSING_FIELD, "audio without a string audio_base_64 and an int event_id"
            )
        if self.metadata is None:
            return self._ignored(IGNORED_AUDIO_BEFORE_METADATA, f"audio event {event_id}")
        if self.interrupted_id is not None and event_id <= self.interrupted_id:
            self.stale_dropped += 1
            # Base64 length says the size without decoding audio nobody will hear.
            padding = len(payload) - len(payload.rstrip("="))
            return StaleAudio(event_id, max(len(payload) * 3 // 4 - padding, 0))
        try:
            # Strict: a character outside the alphabet is an error, not silently skipped noise.
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII str
            return self._ignored(IGNORED_BAD_BASE64, f"audio_base_64 of {len(payload)} characters")
        return AgentAudio(audio, event_id)

    def _ping(self, event: Any) -> AgentEvent:
        event_id = _event_id(event.get("event_id")) if isinstance(event, dict) else None
        if event_id is None:
            return self._ignored(IGNORED_MISSING_FIELD, "ping without an int ping_event.event_id")
        ping_ms = _event_id(event.get("ping_ms"))
        return Ping(event_id, ping_ms)

    def _interruption(self, event: Any) -> AgentEvent:
        event_id = _event_id(event.get("event_id")) if isinstance(event, dict) else None
        if event_id is None:
            return self._ignored(
                IGNORED_MISSING_FIELD, "interruption without an int interruption_event.event_id"
            )
        if self.interrupted_id is None or event_id > self.interrupted_id:
            self.interrupted_id = event_id
        return Interruption(event_id)

    def _metadata(self, event: Any) -> AgentEvent:
        if not isinstance(event, dict):
            return self._ignored(IGNORED_BAD_METADATA, "metadata without its event object")
        fields = (
            event.get("conversation_id"),
            event.get("agent_output_audio_format"),
            event.get("user_input_audio_format"),
        )
        if not all(isinstance(value, str) and value for value in fields):
            return self._ignored(
                IGNORED_BAD_METADATA,
                "metadata without conversation_id, agent_output_audio_format and "
                "user_input_audio_format strings",
            )
        if self.metadata is not None:
            return self._ignored(IGNORED_BAD_METADATA, "a second conversation metadata")
        self.metadata = Metadata(*fields)
        return self.metadata

    def _tool_call(self, event: Any) -> AgentEvent:
        call_id = event.get("tool_call_id") if isinstance(event, dict) else None
        if not isinstance(call_id, str):
            return self._ignored(IGNORED_MISSING_FIELD, "client_tool_call without tool_call_id")
        name = event.get("tool_name")
        return ToolCall(call_id, name if isinstance(name, str) else "")

    def _ignored(self, kind: str, detail: str) -> Ignored:
        first = kind not in self._ignored_seen
        if first:
            self._ignored_seen.add(kind)
        return Ignored(kind, detail, first)
