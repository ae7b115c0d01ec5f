"""What a provider sends on an agent stream and what we send back: Twilio Media Streams framing,
read from the other side (we are the bot here), as plain functions over text.

Why sans-I/O: every rule of the handshake (``connected`` first, ``start`` second, which fields
each provider must give) and every message we build is tested on literal JSON, without a
socket; `ws_server.py` and `provider_wire.py` only move the text. A handshake that breaks a
rule raises `HandshakeError`, whose reason is the close frame's reason (close code 4400): it
names the rule, never a value the provider sent, so nothing from the wire is echoed back or
logged verbatim.

After the handshake, `parse_event` turns each message into a `ProviderMedia`, `ProviderDtmf`
or `ProviderStop`; anything else (our own ``mark`` echoed back, ``connected`` repeated, unknown
events) is None and ignored, as Twilio ignores what it does not know. A message that is not a
JSON object is `Malformed`: the wire logs it once and drops it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HANDSHAKE_ERROR",
    "HandshakeError",
    "Malformed",
    "ProviderDtmf",
    "ProviderMedia",
    "ProviderStop",
    "StreamStart",
    "clear_message",
    "media_message",
    "parse_connected",
    "parse_event",
    "parse_start",
]

HANDSHAKE_ERROR = 4400
# Ids we put back into JSON we build (streamSid) or into a provider's REST path (callSid,
# session) must be plain tokens: no quote, slash or control character can ride along.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+@=-]{0,127}$")
_DIGITS = frozenset("0123456789*#ABCD")
MAX_PARAMETERS = 32
MAX_PARAMETER_CHARS = 512


class HandshakeError(Exception):
    """The provider broke the handshake; ``reason`` goes into the 4400 close frame."""

    def __init__(self, reason: str, code: int = HANDSHAKE_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Malformed(Exception):
    """A message after the handshake that is not a JSON object with an ``event``."""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The ``start`` message, with what every provider gives and what some give.

    ``account_sid`` is Twilio's account SID, or Cloudonix's domain (Cloudonix puts its domain
    in that field); ``session`` is Cloudonix's session token. ``from_number``/``to_number``
    come from ``start.from``/``start.to`` (Cloudonix) or ``customParameters`` (Twilio's
    ``<Parameter>`` nouns: ``from``/``to`` or ``From``/``To``).
    """

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    session: str = ""
    from_number: str = ""
    to_number: str = ""
    context: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderMedia:
    payload: bytes  # μ-law 8 kHz, any length


@dataclass(frozen=True, slots=True)
class ProviderDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class ProviderStop:
    pass


STOP = ProviderStop()


def _load(text: str, expected: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise HandshakeError(f"Malformed {expected} event: not JSON") from None
    if not isinstance(message, dict):
        raise HandshakeError(f"Malformed {expected} event: not a JSON object")
    if message.get("event") != expected:
        raise HandshakeError(f"Expected {expected} event")
    return message


def parse_connected(text: str) -> None:
    """The first message must be ``connected`` (only ``event`` is checked, as Twilio's peers do)."""
    _load(text, "connected")


def _text(value: Any, limit: int = 256) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def _parameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HandshakeError("Malformed start event: customParameters is not an object")
    out: dict[str, str] = {}
    for name, value in list(raw.items())[:MAX_PARAMETERS]:
        if isinstance(name, str) and isinstance(value, str | int | float):
            out[name[:64]] = str(value)[:MAX_PARAMETER_CHARS]
    return out


def _media_format(raw: Any) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise HandshakeError("Malformed start event: mediaFormat is not an object")
    encoding = raw.get("encoding", "audio/x-mulaw")
    rate = raw.get("sampleRate", 8000)
    channels = raw.get("channels", 1)
    if encoding != "audio/x-mulaw" or rate not in (8000, "8000") or channels not in (1, "1"):
        raise HandshakeError("Unsupported media format: audio/x-mulaw, 8000 Hz, mono only")


def parse_start(text: str) -> StreamStart:
    """The second message must be ``start`` with ``streamSid`` and ``callSid`` inside it.

    Which further ids a provider must give (Cloudonix's session and domain, Twilio's account)
    is checked by the caller, which knows the provider and the URL form.
    """
    message = _load(text, "start")
    start = message.get("start")
    if not isinstance(start, dict):
        raise HandshakeError("Missing start metadata")
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not isinstance(call_sid, str):
        raise HandshakeError("Missing stream identifiers")
    if not _ID.match(stream_sid) or not _ID.match(call_sid):
        raise HandshakeError("Malformed stream identifiers")
    session = _text(start.get("session"), 512)
    if session and not _ID.match(session):
        raise HandshakeError("Malformed session identifier")
    _media_format(start.get("mediaFormat"))
    params = _parameters(start.get("customParameters"))
    return StreamStart(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=_text(start.get("accountSid")),
        session=session,
        from_number=_text(start.get("from")) or params.get("from") or params.get("From", ""),
        to_number=_text(start.get("to")) or params.get("to") or params.get("To", ""),
        context=_text(start.get("context"), 64),
        custom_parameters=params,
    )


_MEDIA_HEAD = '{"event":"media"'
_PAYLOAD_KEY = '"payload":"'


def _compact_media(text: str) -> ProviderMedia | None:
    """The common case without a JSON parse: a compact Twilio ``media`` message (as Twilio and
    Cloudonix send it: ``event`` first, no spaces, ``payload`` the last member of ``media``).

    Why: at 50 messages a second per stream, ``json.loads`` of the whole message was a quarter
    of a stream's CPU (bench/streams.py). Anything unusual (another track, spaces, escapes,
    a second payload key) returns None and takes the full parse, so this only ever agrees with
    it. The payload is base64: it holds no quote or backslash.
    """
    if not text.startswith(_MEDIA_HEAD) or "\\" in text or text.count(_PAYLOAD_KEY) != 1:
        return None
    if '"track":"' in text and '"track":"inbound' not in text:
        return None
    start = text.index(_PAYLOAD_KEY) + len(_PAYLOAD_KEY)
    media = text.find('"media":{')
    end = text.find('"', start)
    # the payload is the media object's last member: its closing quote is followed by "}"
    if media < 0 or media > start or end < 0 or text[end + 1 : end + 2] != "}":
        return None
    try:
        return ProviderMedia(base64.b64decode(text[start:end], validate=True))
    except (binascii.Error, ValueError):
        return None


def parse_event(text: str) -> ProviderMedia | ProviderDtmf | ProviderStop | None:
    """One message after the handshake; None for what we ignore; `Malformed` for non-JSON."""
    fast = _compact_media(text)
    if fast is not None:
        return fast
    try:
        message = json.loads(text)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(message, dict):
        raise Malformed("not a JSON object")
    event = message.get("event")
    if event == "media":
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise Malformed("media without media.payload")
        track = media.get("track")
        if track is not None and track not in ("inbound", "inbound_track"):
            return None  # a provider that also streams our own audio back: not the caller
        try:
            return ProviderMedia(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            raise Malformed("media payload is not base64") from None
    if event == "dtmf":
        dtmf = message.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or digit.upper() not in _DIGITS:
            raise Malformed("dtmf without a digit")
        return ProviderDtmf(digit.upper())
    if event == "stop":
        return STOP
    if not isinstance(event, str):
        raise Malformed("no event")
    return None


def media_message(stream_sid: str, ulaw: bytes) -> str:
    """Agent audio toward the provider: one Twilio ``media`` message (no track or counters;
    Twilio's bots send none and providers need none). Built by concatenation, not json.dumps:
    it runs 50 times a second per stream, and ``stream_sid`` was checked to be a plain token."""
    payload = base64.b64encode(ulaw).decode("ascii")
    return (
        '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"' + payload + '"}}'
    )


def clear_message(stream_sid: str) -> str:
    """Barge-in: the provider drops whatever of our audio it still holds."""
    return '{"event":"clear","streamSid":"' + stream_sid + '"}'
