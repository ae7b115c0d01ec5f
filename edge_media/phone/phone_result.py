"""How an ``agera call`` went: the result `run_phone` returns and the lines it prints about it.

Why apart from the call itself: the hang-up cause is worked out from SIP text (the far end's
``Reason`` header, RFC 3326, in its final response or BYE) by pure functions, and `infra/phone.py`
turns a `PhoneResult` into an exit code; neither needs the SIP stack the call runs on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_media.sip.causes import CAUSE_CODES, NORMAL_CLEARING, reason_header
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import parse_params

__all__ = [
    "PhoneResult",
    "ReceivedDigit",
    "cause_line",
    "code_of_cause",
    "q850_of_reason",
    "stats_line",
]

MAX_CAUSE_DIGITS = 3  # Q.850 causes are 1-127
_CAUSE_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")
_REASON_CAUSE_RE = re.compile(r";cause=([0-9]+)")
_CAUSES_BY_CODE = {code: name for name, code in CAUSE_CODES.items()}
_WHO = {"local": "by us", "remote": "by the far end", "error": "(no answer from the network)"}


@dataclass(frozen=True, slots=True)
class ReceivedDigit:
    """A key the far end pressed: how it came ("RFC 4733" or "SIP INFO"), seconds after answer."""

    digit: str
    via: str
    at: float


@dataclass(frozen=True, slots=True)
class PhoneResult:
    """How the call went. ``by`` is "local", "remote" or "error" (a timeout, a transport error)."""

    answered: bool
    cause: str  # Q.850 cause name: the far end's Reason when it gave one, else ours
    cause_code: int | None
    status: int | None  # the SIP status that ended an unanswered call
    reason: str  # its reason phrase, or what ended the call
    by: str
    seconds_connected: float
    codec: str | None
    digits_sent: tuple[str, ...]
    digits_received: tuple[ReceivedDigit, ...]
    bytes_heard: int  # μ-law bytes recorded (8000 a second)
    rtp_stats: dict[str, Any] = field(default_factory=dict)  # RtpSession.stats() at the end

    @property
    def ok(self) -> bool:
        """Answered and ended normally: what exit code 0 means."""
        return self.answered and self.cause == NORMAL_CLEARING


def q850_of_reason(values: Iterable[str]) -> tuple[str, int] | None:
    """The first Q.850 cause of ``Reason`` header values as (name, code), or None.

    RFC 3326 §2: ``Reason: Q.850 ;cause=16 ;text="Terminated"``. The name comes from the code;
    a ``text`` that is itself a cause name with that code (``SYSTEM_SHUTDOWN``, sent as 41) is
    kept, since it says more.
    """
    for value in values:
        protocol, semicolon, _ = value.partition(";")
        if protocol.strip().upper() != "Q.850" or not semicolon:
            continue
        try:
            params = parse_params(value, len(protocol), what="Reason")
        except SipParseError:
            continue
        cause = params.get("cause") or ""
        if not (cause.isascii() and cause.isdigit() and len(cause) <= MAX_CAUSE_DIGITS):
            continue
        code = int(cause)
        text = params.get("text") or ""
        if _CAUSE_NAME_RE.fullmatch(text) and code_of_cause(text) == code:
            return text, code
        return _CAUSES_BY_CODE.get(code, f"Q850_CAUSE_{code}"), code
    return None


def code_of_cause(cause: str) -> int:
    """The Q.850 value we send for ``cause`` (aliases such as ORIGINATOR_CANCEL included)."""
    match = _REASON_CAUSE_RE.search(reason_header(cause)[1])
    assert match is not None  # reason_header always writes ;cause=N
    return int(match.group(1))


def cause_line(result: PhoneResult) -> str:
    """The line printed when the call ends: the cause, who ended it, and how long it was up."""
    code = f" (Q.850 {result.cause_code})" if result.cause_code is not None else ""
    if result.answered:
        return (
            f"ended: {result.cause}{code} {_WHO.get(result.by, result.by)} "
            f"after {result.seconds_connected:.2f} s connected"
        )
    status = f", SIP {result.status} {result.reason}" if result.status else ""
    return f"not answered: {result.cause}{code} {_WHO.get(result.by, result.by)}{status}"


def stats_line(stats: dict[str, Any]) -> str:
    """The call's RTP statistics in one line, with a 0 for a figure the session never had."""
    return (
        f"stats: {stats.get('packets_out', 0)} packets sent, {stats.get('packets_in', 0)} "
        f"received, {stats.get('lost', 0)} lost, {stats.get('late', 0)} late, jitter "
        f"{stats.get('jitter_ms', 0)} ms, max gap {stats.get('max_gap_ms', 0)} ms"
    )
