"""Vapi's WebSocket transport, spoken as the client: the pure protocol.

How a Vapi call runs: a REST ``POST /call`` with ``transport.provider = "vapi.websocket"`` asks
Vapi to create a call and answers with the call's ``id`` and a ``transport.websocketCallUrl``;
the gateway opens that URL at once. On the socket, audio goes both ways as *binary* frames of raw
samples in the format the create call chose (here μ-law, 8 kHz, no container), with no base64 and
no JSON envelope, so RTP payloads pass through untouched. *Text* frames carry JSON control
messages: we send ``{"type": "end-call"}`` to end the call; Vapi sends its "client messages"
(``speech-update``, ``transcript``, ``status-update`` ...).

Why sans-I/O: like the Twilio-stream core, this module decides every byte and is tested on
literal JSON, with no socket or clock in between; the driver moves bytes. Peer input never
raises: whatever cannot be used comes back as `Ignored`, flagged ``first`` once per kind so the
driver logs it once.

Assumptions (Vapi's published docs do not settle these; each needs a live trial):

- The assistant's client messages (``speech-update``, ``user-interrupted`` ...) arrive on the
  transport socket, not only on web-SDK channels.
- Barge-in: Vapi documents no "clear" instruction for this transport. We treat
  ``user-interrupted``, and ``speech-update`` with ``role: "user", status: "started"``, as the
  caller talking over the assistant, and the driver drops the assistant audio still queued for
  playout.
- ``end-call`` is the current name of the client's hang-up message (an older revision of the
  docs called it ``hangup``); we send only ``end-call``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge_media.drivers.base import CallInfo

__all__ = [
    "AUDIO_FORMAT",
    "END_CALL",
    "IGNORED_BAD_JSON",
    "IGNORED_MISSING_TYPE",
    "IGNORED_NOT_OBJECT",
    "IGNORED_UNKNOWN_TYPE",
    "IGNORED_UNUSED",
    "KNOWN_UNUSED_TYPES",
    "TRANSPORT_PROVIDER",
    "BargeIn",
    "CreatedCall",
    "Ignored",
    "VapiEvent",
    "VapiProtocol",
    "VapiResponseError",
    "create_call_body",
    "error_message",
    "parse_create_call_response",
]

TRANSPORT_PROVIDER = "vapi.websocket"
# μ-law at 8 kHz in both directions: exactly what the SIP leg carries, so no transcoding.
AUDIO_FORMAT: dict[str, Any] = {"format": "mulaw", "container": "raw", "sampleRate": 8000}
END_CALL = '{"type":"end-call"}'

# Variables every assistant prompt can use ({{caller_number}} ...); CallInfo.extra cannot
# override them, so a prompt can trust what they say.
_RESERVED_VARIABLES = ("caller_number", "called_number", "call_uuid", "direction", "account_id")

# Client messages Vapi may send that the gateway has no use for: counted, never logged.
KNOWN_UNUSED_TYPES = frozenset(
    {
        "assistant.started",
        "conversation-update",
        "function-call",
        "hang",
        "language-change-detected",
        "model-output",
        "speech-update",  # only the user-started form is a barge-in; the rest is unused
        "status-update",
        "tool-calls",
        "transcript",
        "transfer-update",
        "voice-input",
        "workflow.node.started",
    }
)

# `Ignored.kind` values.
IGNORED_UNUSED = "unused"  # a known type we do not act on (normal traffic)
IGNORED_UNKNOWN_TYPE = "unknown_type"  # a type Vapi did not document when this was written
IGNORED_BAD_JSON = "bad_json"
IGNORED_NOT_OBJECT = "not_object"
IGNORED_MISSING_TYPE = "missing_type"
MALFORMED_KINDS = frozenset({IGNORED_BAD_JSON, IGNORED_NOT_OBJECT, IGNORED_MISSING_TYPE})

DETAIL_CHARS = 60  # a peer value quoted in a detail is cut to this many characters
MAX_TYPE_COUNTERS = 32  # distinct message types counted by name; the rest share "other"
OTHER_TYPE = "other"
_CALL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_ERROR_CHARS = 160  # Vapi's error message quoted in a REST failure is cut to this


class VapiResponseError(ValueError):
    """The create-call response is not what Vapi documents. The message never holds the
    ``websocketCallUrl`` (a capability: whoever has it can join the call)."""


@dataclass(frozen=True, slots=True)
class CreatedCall:
    """What ``POST /call`` gave us. ``websocket_url`` is a secret: never log or store it."""

    call_id: str
    websocket_url: str

    def __repr__(self) -> str:  # a stray repr in a log must not leak the capability
        return f"CreatedCall(call_id={self.call_id!r}, websocket_url=<redacted>)"


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller started talking over the assistant: drop its queued audio now.

    ``cause`` is the message type that said so (``user-interrupted`` or ``speech-update``).
    """

    cause: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A control message the gateway does not act on; the call goes on.

    ``kind`` is one of the ``IGNORED_*`` constants, ``detail`` a short reason, ``first`` True the
    first time this kind is seen on this call (log only then).
    """

    kind: str
    detail: str
    first: bool

    @property
    def malformed(self) -> bool:
        """True when the frame was not a JSON object with a string ``type``."""
        return self.kind in MALFORMED_KINDS


VapiEvent = BargeIn | Ignored


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


# -- the REST step ---------------------------------------------------------------------------


def create_call_body(assistant_id: str, info: CallInfo) -> dict[str, Any]:
    """The JSON body of ``POST /call`` for one SIP call.

    ``assistantId`` is top level (the current API; an older doc revision nested it). The call's
    facts go in ``assistantOverrides.variableValues`` so a prompt can say ``{{caller_number}}``;
    ``CallInfo.extra`` follows, never replacing the reserved names. No ``phoneNumber`` or
    ``phoneNumberId``: Vapi refuses them with this transport.
    """
    variables: dict[str, str] = {
        "caller_number": info.from_number,
        "called_number": info.to_number,
        "call_uuid": info.call_uuid,
        "direction": info.direction,
        "account_id": info.account_id,
    }
    for name, value in info.extra.items():
        if name not in _RESERVED_VARIABLES:
            variables[name] = value
    return {
        "assistantId": assistant_id,
        "assistantOverrides": {"variableValues": variables},
        "transport": {"provider": TRANSPORT_PROVIDER, "audioFormat": dict(AUDIO_FORMAT)},
    }


def parse_create_call_response(content: bytes | str, *, secure: bool) -> CreatedCall:
    """The call id and socket URL from a successful ``POST /call`` response body.

    ``secure`` (the API was reached over https) requires a ``wss://`` socket: a response must
    not downgrade the media to clear text. Raises `VapiResponseError`, naming what is wrong but
    never quoting the URL.
    """
    try:
        data = json.loads(content)
    except (ValueError, RecursionError) as exc:
        raise VapiResponseError(
            f"create-call response is not JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise VapiResponseError(f"create-call response is a JSON {type(data).__name__}")
    call_id = data.get("id")
    if not isinstance(call_id, str) or not _CALL_ID_RE.match(call_id):
        raise VapiResponseError(f"create-call response has no valid 'id' ({_quote(call_id)})")
    transport = data.get("transport")
    url = transport.get("websocketCallUrl") if isinstance(transport, dict) else None
    if not isinstance(url, str) or not url:
        raise VapiResponseError(f"create-call response for call {call_id} has no websocketCallUrl")
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:
        scheme, host = "", None
    if scheme not in ("ws", "wss") or not host:
        raise VapiResponseError(
            f"create-call response for call {call_id} has a websocketCallUrl that is not a "
            "ws:// or wss:// URL"
        )
    if secure and scheme != "wss":
        raise VapiResponseError(
            f"create-call response for call {call_id} has a clear-text ws:// websocketCallUrl "
            "from an https API"
        )
    return CreatedCall(call_id, url)


def error_message(content: bytes | str, *, redact: tuple[str, ...] = ()) -> str:
    """Vapi's own words on a refused ``POST /call`` (its JSON ``message``, a string or a list of
    strings), cut short, with every string of ``redact`` (the API key) removed; "" if none."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, list):
        message = "; ".join(item for item in message if isinstance(item, str))
    if not isinstance(message, str):
        return ""
    for secret in redact:
        if secret:
            message = message.replace(secret, "<redacted>")
    message = " ".join(message.split())
    return message if len(message) <= _ERROR_CHARS else message[: _ERROR_CHARS - 3] + "..."


# -- the socket ------------------------------------------------------------------------------


class VapiProtocol:
    """The control side of one Vapi transport socket: reads Vapi's JSON, builds ours.

    Audio needs no protocol object (binary frames are raw μ-law both ways); this object keeps
    what the driver needs to know about the text frames: which are barge-ins, what was ignored
    and how often (``counts``: messages by type, bounded).
    """

    __slots__ = ("_ignored_seen", "counts", "ended")

    def __init__(self) -> None:
        self._ignored_seen: set[str] = set()
        self.counts: dict[str, int] = {}
        self.ended = False

    def end_call(self) -> str:
        """The client's hang-up message; nothing is meant to follow it but the close."""
        self.ended = True
        return END_CALL

    def receive_text(self, text: str) -> VapiEvent:
        """One text frame from Vapi. Unknown fields are tolerated; unknown types are counted."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            return self._ignored(IGNORED_BAD_JSON, f"invalid JSON ({type(exc).__name__})")
        if not isinstance(message, dict):
            return self._ignored(IGNORED_NOT_OBJECT, f"JSON {type(message).__name__}")
        kind = message.get("type")
        if not isinstance(kind, str):
            return self._ignored(IGNORED_MISSING_TYPE, "no string 'type'")
        self._count(kind)
        if kind == "user-interrupted":
            return BargeIn(kind)
        if kind == "speech-update":
            if message.get("role") == "user" and message.get("status") == "started":
                return BargeIn(kind)
            return self._ignored(IGNORED_UNUSED, kind)
        if kind in KNOWN_UNUSED_TYPES:
            return self._ignored(IGNORED_UNUSED, kind)
        # Per kind *and* type: each new unknown type is worth one log line.
        return self._ignored(IGNORED_UNKNOWN_TYPE, f"type {_quote(kind)}", key=f"type:{kind}")

    def _count(self, kind: str) -> None:
        counts = self.counts
        if kind in counts:
            counts[kind] += 1
        elif len(counts) < MAX_TYPE_COUNTERS:
            counts[kind] = 1
        else:
            counts[OTHER_TYPE] = counts.get(OTHER_TYPE, 0) + 1

    def _ignored(self, kind: str, detail: str, *, key: str | None = None) -> Ignored:
        seen = self._ignored_seen
        key = key if key is not None else kind
        first = key not in seen and len(seen) < MAX_TYPE_COUNTERS  # bounded: no log flood
        if first:
            seen.add(key)
        return Ignored(kind, detail, first)
