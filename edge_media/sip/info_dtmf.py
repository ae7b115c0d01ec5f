"""DTMF carried in SIP INFO bodies: ``application/dtmf-relay`` and ``application/dtmf``.

Why: some carriers and PBXs never send RFC 4733 events and signal keys out of band in INFO
requests instead, in one of two legacy formats that no RFC defines (RFC 6086 §1 calls them
"legacy INFO usages"). ``application/dtmf-relay`` (Cisco's) is lines of ``Key=Value``::

    Signal=5
    Duration=160

``application/dtmf`` is the key alone, written as the character or as its RFC 4733 §3.2 event
code (``11`` for ``#``). Peers differ in line endings, case, spaces and which form they write,
so parsing is lenient on form and strict on meaning: a body that names no key, or names two,
is an error with the status the UA answers (400, or 415 for another body type).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from edge_media.sip.errors import SipParseError
from edge_media.sip.message import SipRequest

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "DEFAULT_DURATION_MS",
    "DTMF",
    "DTMF_RELAY",
    "KEYS",
    "MAX_DURATION_MS",
    "InfoDtmf",
    "InfoDtmfError",
    "build_dtmf",
    "build_dtmf_relay",
    "dtmf_of_info",
    "parse_dtmf",
    "parse_dtmf_relay",
    "parse_info_dtmf",
]

DTMF_RELAY: Final = "application/dtmf-relay"
DTMF: Final = "application/dtmf"
ACCEPTED_CONTENT_TYPES: Final = (DTMF_RELAY, DTMF)
# RFC 4733 §3.2 event codes 0-15, in order: the index of a key is its event code.
KEYS: Final = "0123456789*#ABCD"
# What we put in Duration when the caller does not say (one 20 ms-paced key press of 160 ms,
# the common phone default).
DEFAULT_DURATION_MS: Final = 160
# A longer Duration is clamped: it only informs the bot, and a minute of key press is absurd.
MAX_DURATION_MS: Final = 60_000
# Real bodies are under 40 octets; anything this large is not DTMF.
MAX_BODY_SIZE: Final = 512
_MAX_DURATION_DIGITS = len(str(MAX_DURATION_MS))

_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_DIGITS_RE = re.compile(r"[0-9]+")


class InfoDtmfError(SipParseError):
    """An INFO body we cannot read as DTMF; answer ``status`` with ``headers`` added."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.headers: tuple[tuple[str, str], ...] = (
            (("Accept", ", ".join(ACCEPTED_CONTENT_TYPES)),) if status == 415 else ()
        )


@dataclass(frozen=True, slots=True)
class InfoDtmf:
    """One key press: ``digit`` is one of `KEYS`; ``duration_ms`` is None when not given."""

    digit: str
    duration_ms: int | None = None


def _key(text: str, what: str) -> str:
    """A key written as the character (any case) or as its event code 0-15."""
    value = text.strip(" \t")
    if len(value) == 1 and value.upper() in KEYS:
        return value.upper()
    if _DIGITS_RE.fullmatch(value) and len(value) <= 2 and int(value) < len(KEYS):
        return KEYS[int(value)]
    shown = value if len(value) <= 16 else value[:16] + "..."
    raise InfoDtmfError(400, f"Unknown DTMF key {shown!r} in {what}")


def _text(body: bytes, what: str) -> str:
    if len(body) > MAX_BODY_SIZE:
        raise InfoDtmfError(400, f"{what} body too large")
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise InfoDtmfError(400, f"{what} body is not ASCII") from None


def parse_dtmf_relay(body: bytes) -> InfoDtmf:
    """Read ``Signal=`` and ``Duration=`` (milliseconds) from an application/dtmf-relay body.

    Keys are matched without case, spaces around either side of ``=`` and empty lines are
    ignored, lines may end in CRLF, LF or CR, and unknown keys are skipped. A Duration that is
    not a number is ignored (the key still counts); a missing Signal, a repeated one or a line
    without ``=`` is a 400.
    """
    signal: str | None = None
    duration: int | None = None
    for raw in _LINE_BREAK_RE.split(_text(body, "dtmf-relay")):
        line = raw.strip(" \t")
        if not line:
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise InfoDtmfError(400, "Malformed dtmf-relay line (no '=')")
        name = name.strip(" \t").lower()
        if name == "signal":
            if signal is not None:
                raise InfoDtmfError(400, "Several Signal lines in dtmf-relay body")
            signal = _key(value, "dtmf-relay Signal")
        elif name == "duration":
            digits = value.strip(" \t")
            if _DIGITS_RE.fullmatch(digits):
                digits = digits.lstrip("0") or "0"
                long = len(digits) > _MAX_DURATION_DIGITS
                duration = MAX_DURATION_MS if long else min(int(digits), MAX_DURATION_MS)
    if signal is None:
        raise InfoDtmfError(400, "No Signal line in dtmf-relay body")
    return InfoDtmf(signal, duration)


def parse_dtmf(body: bytes) -> InfoDtmf:
    """Read the single key of an application/dtmf body (surrounding white space ignored)."""
    text = _text(body, "dtmf").strip(" \t\r\n")
    if not text:
        raise InfoDtmfError(400, "Empty application/dtmf body")
    return InfoDtmf(_key(text, "application/dtmf body"))


def parse_info_dtmf(content_type: str | None, body: bytes) -> InfoDtmf:
    """Dispatch on the body's media type (lower case, no parameters, as `content_type` gives).

    Another type, or none, is a 415 whose `InfoDtmfError.headers` carry the Accept line.
    """
    if content_type == DTMF_RELAY:
        return parse_dtmf_relay(body)
    if content_type == DTMF:
        return parse_dtmf(body)
    raise InfoDtmfError(415, f"INFO body type {content_type or 'missing'} is not DTMF")


def dtmf_of_info(request: SipRequest) -> InfoDtmf | None:
    """The key pressed in an INFO request, or None for an INFO without a body.

    A bodiless INFO is what some peers send as a keep-alive; it deserves a 200, not an error.
    Raises InfoDtmfError only (a malformed Content-Type becomes a 400 too).
    """
    if not request.body:
        return None
    try:
        content_type = request.content_type
    except SipParseError as exc:
        raise InfoDtmfError(400, exc.reason) from None
    return parse_info_dtmf(content_type, request.body)


def _checked_key(digit: str) -> str:
    if len(digit) != 1 or digit.upper() not in KEYS:
        raise ValueError(f"not a DTMF key: {digit!r}")
    return digit.upper()


def build_dtmf_relay(digit: str, duration_ms: int = DEFAULT_DURATION_MS) -> bytes:
    """An application/dtmf-relay body: ``Signal=5\\r\\nDuration=160\\r\\n``."""
    key = _checked_key(digit)
    if not 0 < duration_ms <= MAX_DURATION_MS:
        raise ValueError(f"duration out of range: {duration_ms}")
    return f"Signal={key}\r\nDuration={duration_ms}\r\n".encode("ascii")


def build_dtmf(digit: str) -> bytes:
    """An application/dtmf body: the key as a character (``*``, not ``10``)."""
    return _checked_key(digit).encode("ascii")
