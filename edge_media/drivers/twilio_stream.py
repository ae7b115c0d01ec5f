"""Twilio Media Streams, spoken as Twilio towards a bring-your-own-bot server: the pure protocol.

Why we play Twilio: bots written for Twilio (pipecat, the OpenAI demos, Dograh) then run behind a
SIP call unchanged, so every field, type and ordering rule of Twilio's stream is binding, down
to counters being strings and ``mediaFormat`` numbers being ints. PROTOCOL.md's "Twilio-stream
bots" part states them as this gateway speaks them; "§N" below names its section N.

Why sans-I/O: the same object is driven by the asyncio driver and by tests that assert literal
JSON, with no socket or clock in between (docs/architecture.md, "Sans-I/O cores"). Outgoing
messages are returned as JSON text for the I/O layer to send; incoming text becomes `BotEvent`
values. Peer input never raises: what Twilio would ignore with warning 31950 or 31951 comes back
as `Ignored`, flagged ``first`` once per kind per stream so the driver logs it once, as Twilio
warns once per stream.

`media` is the hot path (50 per second per call, hundreds of calls per process), so it is built
by string formatting around a precomputed prefix instead of ``json.dumps``; the `mark` echo is
built the same way (a bot may send a mark after every media message).

The `mark` echo carries ``played_ms`` beside ``name``: ours, not Twilio's. It tells an interrupted
bot how much of its reply the caller heard; bots that read only ``name`` never notice it.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any

from edge_media.drivers.base import CallInfo

__all__ = [
    "BYTES_PER_MS",
    "IGNORED_BAD_BASE64",
    "IGNORED_BAD_JSON",
    "IGNORED_BINARY",
    "IGNORED_MISSING_FIELD",
    "IGNORED_NOT_OBJECT",
    "IGNORED_UNKNOWN_EVENT",
    "IGNORED_WRONG_STREAM",
    "BotEvent",
    "Clear",
    "Ignored",
    "PlayMark",
    "PlayMedia",
    "TwilioStreamProtocol",
    "TwilioStreamStateError",
]

# §2: what `connected` and `start` announce. The bot is told exactly this; nothing else is sent.
PROTOCOL_NAME = "Call"
PROTOCOL_VERSION = "1.0.0"
MEDIA_ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
CHANNELS = 1
MEDIA_TRACK = "inbound"  # bidirectional streams carry only the caller's audio (§2)
DTMF_TRACK = "inbound_track"  # §2: always this value for dtmf
BYTES_PER_MS = SAMPLE_RATE // 1000  # 8 μ-law bytes are 1 ms: 160 bytes advance timestamp by 20
DETAIL_CHARS = 60  # a peer value quoted in an Ignored detail is cut to this many characters

# `Ignored.kind` values (§3: 31950 is the binary frame, 31951 covers all the others).
IGNORED_BINARY = "binary"
IGNORED_BAD_JSON = "bad_json"
IGNORED_NOT_OBJECT = "not_object"
IGNORED_MISSING_FIELD = "missing_field"
IGNORED_UNKNOWN_EVENT = "unknown_event"
IGNORED_BAD_BASE64 = "bad_base64"
IGNORED_WRONG_STREAM = "wrong_stream"

# Reserved customParameters: the bot must be able to trust these, so CallInfo.extra cannot
# override them.
_RESERVED_PARAMETERS = (
    "from_number",
    "to_number",
    "call_uuid",
    "direction",
    "account_id",
    "resumed_from",
    "resume_gap_ms",
)

_NEW, _CONNECTED, _STREAMING, _STOPPED = range(4)
_STAGE_NAMES = ("new", "connected", "streaming", "stopped")


class TwilioStreamStateError(AssertionError):
    """Our own code asked for a message out of order (`media` before `start`, anything after
    `stop`). A caller bug, never the peer's doing: it shares no type with peer input, which is
    never raised."""


@dataclass(frozen=True, slots=True)
class PlayMedia:
    """Bot audio for the caller: μ-law 8 kHz, any length, decoded from base64."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PlayMark:
    """A mark the bot queued behind the audio it sent so far (§5); echo it when played."""

    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """The bot barged in: drop unplayed audio, echo every pending mark (§5)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A bot message Twilio would ignore with a warning (§3); the stream goes on.

    ``kind`` is one of the ``IGNORED_*`` constants, ``detail`` a short human reason, ``first``
    True the first time this kind is seen on this stream (log only then).
    """

    kind: str
    detail: str
    first: bool


BotEvent = PlayMedia | PlayMark | Clear | Ignored

_CLEAR = Clear()


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


class TwilioStreamProtocol:
    """One Twilio media stream towards one bot: builds what we send, reads what it sends.

    Call `connected`, then `start`, then any mix of `media`, `dtmf` and `mark`, then `stop`
    (§4); each returns the JSON text to send. Feed every frame from the bot to `receive_text`
    or `receive_bytes`.
    """

    __slots__ = (
        "_bytes_sent",
        "_chunk",
        "_ignored_seen",
        "_media_head",
        "_sequence",
        "_stage",
        "_tail_head",
        "account_sid",
        "call_sid",
        "info",
        "stream_sid",
    )

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str, info: CallInfo) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.info = info
        self._stage = _NEW
        self._sequence = 0  # §2: "1" on start, +1 for every later message, all kinds shared
        self._chunk = 0  # §2: counts media messages from "1"
        self._bytes_sent = 0  # caller audio sent so far; its duration is the next timestamp
        self._ignored_seen: set[str] = set()
        # The constant parts of every media message, built once.
        self._media_head = '{"event":"media","sequenceNumber":"'
        self._tail_head = f'","streamSid":{json.dumps(stream_sid)},'

    # -- what we send ------------------------------------------------------------------------

    def connected(self) -> str:
        """§2: always the first message; no streamSid, no sequenceNumber."""
        self._advance(_NEW, _CONNECTED, "connected")
        return json.dumps(
            {"event": "connected", "protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION},
            separators=(",", ":"),
        )

    def start(self) -> str:
        """§2: sent once, right after `connected`; streamSid at top level *and* in ``start``
        (pipecat, the OpenAI demos and Dograh read the nested copies)."""
        self._advance(_CONNECTED, _STREAMING, "start")
        info = self.info
        parameters = {
            "from_number": info.from_number,
            "to_number": info.to_number,
            "call_uuid": info.call_uuid,
            "direction": info.direction,
            "account_id": info.account_id,
        }
        if info.resumed_from is not None:  # a reconnection after the last connection failed
            parameters["resumed_from"] = info.resumed_from
            parameters["resume_gap_ms"] = str(info.resume_gap_ms or 0)
        for name, value in info.extra.items():
            if name not in _RESERVED_PARAMETERS:
                parameters[name] = value
        return self._message(
            "start",
            {
                "streamSid": self.stream_sid,
                "accountSid": self.account_sid,
                "callSid": self.call_sid,
                "tracks": [MEDIA_TRACK],
                "customParameters": parameters,
                "mediaFormat": {
                    "encoding": MEDIA_ENCODING,
                    "sampleRate": SAMPLE_RATE,
                    "channels": CHANNELS,
                },
            },
        )

    def media(self, ulaw: bytes) -> str:
        """Caller audio. §2: ``chunk`` counts media from "1"; ``timestamp`` is the audio's
        presentation time in ms from stream start, i.e. the duration of all audio sent before
        this chunk, so it advances 20 per 160-byte frame."""
        if self._stage != _STREAMING:
            self._misuse("media")
        self._sequence += 1
        self._chunk += 1
        timestamp = self._bytes_sent // BYTES_PER_MS
        self._bytes_sent += len(ulaw)
        payload = binascii.b2a_base64(ulaw, newline=False).decode("ascii")
        return (
            f"{self._media_head}{self._sequence}{self._tail_head}"
            f'"media":{{"track":"{MEDIA_TRACK}","chunk":"{self._chunk}",'
            f'"timestamp":"{timestamp}","payload":"{payload}"}}}}'
        )

    def dtmf(self, digit: str) -> str:
        """One caller key press (§2); the track is always "inbound_track"."""
        self._require_streaming("dtmf")
        return self._message("dtmf", {"track": DTMF_TRACK, "digit": digit})

    def mark(self, name: str, played_ms: int) -> str:
        """Echo of a bot mark, sent when playout reached it or a clear dropped it (§5), with
        ``played_ms``, the bot audio played since the previous mark. The name goes through
        ``json.dumps`` (ASCII escapes: a lone surrogate the bot sent must come back without
        failing to encode as UTF-8)."""
        self._require_streaming("mark")
        self._sequence += 1
        return (
            f'{{"event":"mark","sequenceNumber":"{self._sequence}{self._tail_head}'
            f'"mark":{{"name":{json.dumps(name)},"played_ms":{played_ms:d}}}}}'
        )

    def stop(self) -> str:
        """§2: the last message of the stream; nothing may follow it."""
        self._advance(_STREAMING, _STOPPED, "stop")
        return self._message("stop", {"accountSid": self.account_sid, "callSid": self.call_sid})

    @property
    def stopped(self) -> bool:
        """True once `stop` was built: the stream is over from our side."""
        return self._stage == _STOPPED

    # -- what the bot sends ------------------------------------------------------------------

    def receive_bytes(self, data: bytes) -> list[BotEvent]:
        """§3, warning 31950: a binary frame is ignored."""
        return [self._ignored(IGNORED_BINARY, f"binary frame of {len(data)} bytes")]

    def receive_text(self, text: str) -> list[BotEvent]:
        """One text frame from the bot. §3: only media, mark and clear are accepted, each
        with ``event`` and ``streamSid``; unknown fields are tolerated, and a
        missing ``streamSid`` is accepted (pipecat omits it when it failed to detect one)."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            return [self._ignored(IGNORED_BAD_JSON, f"invalid JSON ({type(exc).__name__})")]
        if not isinstance(message, dict):
            return [self._ignored(IGNORED_NOT_OBJECT, f"JSON {type(message).__name__}")]
        event = message.get("event")
        if not isinstance(event, str):
            return [self._ignored(IGNORED_MISSING_FIELD, "no string 'event'")]
        stream_sid = message.get("streamSid")
        if stream_sid is not None and stream_sid != self.stream_sid:
            return [self._ignored(IGNORED_WRONG_STREAM, f"streamSid {_quote(stream_sid)}")]
        if event == "media":
            return [self._media_event(message)]
        if event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return [self._ignored(IGNORED_MISSING_FIELD, "mark without a string mark.name")]
            return [PlayMark(name)]
        if event == "clear":
            return [_CLEAR]
        return [self._ignored(IGNORED_UNKNOWN_EVENT, f"event {_quote(event)}")]

    # -- internals ---------------------------------------------------------------------------

    def _media_event(self, message: dict[str, Any]) -> BotEvent:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return self._ignored(IGNORED_MISSING_FIELD, "media without a string media.payload")
        try:
            # Strict: any character outside the alphabet or wrong padding is an error, where the
            # lenient decoder would silently skip it and play noise.
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII str
            return self._ignored(IGNORED_BAD_BASE64, f"payload of {len(payload)} characters")
        return PlayMedia(audio)

    def _ignored(self, kind: str, detail: str) -> Ignored:
        first = kind not in self._ignored_seen
        if first:
            self._ignored_seen.add(kind)
        return Ignored(kind, detail, first)

    def _message(self, event: str, body: dict[str, Any]) -> str:
        self._sequence += 1
        # ASCII escapes (json's default) on purpose: a mark name the bot sent may hold a lone
        # surrogate, which the echo must carry back without failing to encode as UTF-8.
        return json.dumps(
            {
                "event": event,
                "sequenceNumber": str(self._sequence),
                "streamSid": self.stream_sid,
                event: body,
            },
            separators=(",", ":"),
        )

    def _advance(self, expected: int, stage: int, what: str) -> None:
        if self._stage != expected:
            self._misuse(what)
        self._stage = stage

    def _require_streaming(self, what: str) -> None:
        if self._stage != _STREAMING:
            self._misuse(what)

    def _misuse(self, what: str) -> None:
        raise TwilioStreamStateError(
            f"cannot send {what!r} on a stream that is {_STAGE_NAMES[self._stage]}"
        )
