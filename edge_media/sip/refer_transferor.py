"""The transferor's side of REFER (RFC 3515): what the REFER's response and the NOTIFYs after it
say about the transfer, read from Event (RFC 6665 §8.2.1), Subscription-State (§8.2.3) and the
message/sipfrag body (RFC 3420).

Why apart from `refer`: the two roles share only the Refer-To syntax and a few constants. A
transferee checks the REFER it received and builds NOTIFYs (`refer`); a transferor (the bridge's
transfer command, through `transfer.send_refer`) only needs to follow a REFER it sent, here.

Nothing here does I/O or reads a clock; ``now`` is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import parse_params
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.refer import REFER_EVENT, SIPFRAG_MIME

__all__ = [
    "DEFAULT_TRANSFER_TIMEOUT",
    "MAX_TRANSFER_WAIT",
    "EventHeader",
    "NotifyAnswer",
    "OutgoingRefer",
    "Sipfrag",
    "SubscriptionState",
    "TransferState",
    "event_of",
    "parse_event",
    "parse_sipfrag",
    "parse_subscription_state",
    "subscription_state_of",
]

# How long a transferor waits for a final report after sending REFER, unless the notifier
# announces a longer subscription (capped by MAX_TRANSFER_WAIT).
DEFAULT_TRANSFER_TIMEOUT: Final = 60.0
MAX_TRANSFER_WAIT: Final = 600.0
MAX_SIPFRAG_SIZE: Final = 4096

_STATUS_LINE_RE = re.compile(r"SIP/2\.0[ \t]+([1-6][0-9][0-9])(?:[ \t]+([^\r\n]*))?", re.I)
_LINE_END_RE = re.compile(r"\r\n|\n|\r")
_TOKEN_RE = _abnf.TOKEN_RE


# ---------------------------------------------------------------------------------------------
# Reading a NOTIFY: Event, Subscription-State, sipfrag
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sipfrag:
    """The status line a NOTIFY's sipfrag body starts with."""

    status: int
    reason: str = ""


def parse_sipfrag(body: bytes) -> Sipfrag:
    """Read the status line of a message/sipfrag body; further header lines are ignored.

    Tolerates a missing final CRLF, LF-only line ends and leading blank lines. Raises
    SipParseError 400 for anything that does not start with ``SIP/2.0 NNN``.
    """
    if len(body) > MAX_SIPFRAG_SIZE:
        raise SipParseError(400, "sipfrag body too large")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise SipParseError(400, "sipfrag body is not UTF-8") from None
    first = _LINE_END_RE.split(text.lstrip("\r\n"), maxsplit=1)[0].strip(" \t")
    match = _STATUS_LINE_RE.fullmatch(first)
    if match is None:
        raise SipParseError(400, "sipfrag body does not start with a SIP status line")
    return Sipfrag(int(match.group(1)), (match.group(2) or "").strip(" \t"))


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """``Subscription-State: active;expires=60`` (RFC 6665 §8.2.3); ``state`` lower case."""

    state: str
    expires: int | None = None
    reason: str | None = None

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


def parse_subscription_state(value: str) -> SubscriptionState:
    stripped = value.strip(" \t")
    match = _TOKEN_RE.match(stripped)
    if match is None:
        raise SipParseError(400, "Malformed Subscription-State header")
    params = parse_params(stripped, match.end(), what="Subscription-State header")
    expires_text = params.get("expires")
    expires = None
    if expires_text is not None and _abnf.DIGITS_RE.fullmatch(expires_text):
        expires = int(expires_text) if len(expires_text) <= 10 else None
    reason = params.get("reason")
    return SubscriptionState(match.group().lower(), expires, reason.lower() if reason else None)


def subscription_state_of(message: SipRequest) -> SubscriptionState | None:
    value = message.headers.get("subscription-state")
    return None if value is None else parse_subscription_state(value)


@dataclass(frozen=True, slots=True)
class EventHeader:
    """``Event: refer;id=93809824`` (RFC 6665 §8.2.1, compact ``o``); package lower case."""

    package: str
    id: str | None = None


def parse_event(value: str) -> EventHeader:
    stripped = value.strip(" \t")
    match = _TOKEN_RE.match(stripped)
    if match is None:
        raise SipParseError(400, "Malformed Event header")
    params = parse_params(stripped, match.end(), what="Event header")
    return EventHeader(match.group().lower(), params.get("id"))


def event_of(message: SipRequest) -> EventHeader | None:
    value = message.headers.get("event")
    return None if value is None else parse_event(value)


# ---------------------------------------------------------------------------------------------
# Transferor: a REFER we sent
# ---------------------------------------------------------------------------------------------
class TransferState(StrEnum):
    """Where a REFER we sent stands. The last four are final."""

    PENDING = "pending"  # REFER sent, no final response yet
    ACCEPTED = "accepted"  # 2xx to the REFER (or a first NOTIFY), no final report yet
    SUCCEEDED = "succeeded"  # a sipfrag 2xx: the target answered, we should BYE
    FAILED = "failed"  # a sipfrag >= 300, or the subscription ended without a final status
    REJECTED = "rejected"  # the REFER itself got >= 300 or timed out
    UNREPORTED = "unreported"  # accepted with Refer-Sub: false: no NOTIFY will tell
    TIMED_OUT = "timed-out"  # no final report before the deadline


_FINAL_STATES = frozenset(
    {
        TransferState.SUCCEEDED,
        TransferState.FAILED,
        TransferState.REJECTED,
        TransferState.UNREPORTED,
        TransferState.TIMED_OUT,
    }
)


@dataclass(frozen=True, slots=True)
class NotifyAnswer:
    """How to answer a NOTIFY (status and extra header lines) and the transfer's state after."""

    status: int
    reason: str | None
    state: TransferState
    headers: tuple[tuple[str, str], ...] = ()


class OutgoingRefer:
    """The transferor side of one REFER: its response, then the NOTIFY reports.

    RFC 3515 §2.4.4: the REFER sender "MUST be prepared to receive a NOTIFY before the REFER
    transaction completes", so a NOTIFY is accepted in PENDING too. The UA handles 401/407 on
    the REFER itself and feeds only the last attempt's final response (a new REFER CSeq means
    a new OutgoingRefer). ``status``/``reason`` hold the latest reported status.
    """

    __slots__ = ("_subscription_ended", "cseq", "deadline", "reason", "state", "status")

    def __init__(self, cseq: int, now: float, *, timeout: float = DEFAULT_TRANSFER_TIMEOUT) -> None:
        self.cseq = cseq
        self.state = TransferState.PENDING
        self.status: int | None = None
        self.reason = ""
        self.deadline = now + timeout
        self._subscription_ended = False

    @property
    def done(self) -> bool:
        return self.state in _FINAL_STATES

    @property
    def succeeded(self) -> bool:
        """True once the target answered: time to BYE the original call."""
        return self.state is TransferState.SUCCEEDED

    def _finish(self, state: TransferState, status: int | None, reason: str) -> None:
        if not self.done:
            self.state, self.status, self.reason = state, status, reason

    def on_response(self, response: SipResponse) -> TransferState:
        """The REFER's response: 2xx accepts (RFC 4488: ``Refer-Sub: false`` means no report
        follows), >= 300 rejects; provisional responses change nothing."""
        status = response.status
        if status < 200:
            return self.state
        if status >= 300:
            self._finish(TransferState.REJECTED, status, response.reason)
        elif (response.headers.get("refer-sub") or "").strip(" \t").lower().startswith("false"):
            self._finish(TransferState.UNREPORTED, status, response.reason)
        elif self.state is TransferState.PENDING:
            self.state, self.status, self.reason = TransferState.ACCEPTED, status, response.reason
        return self.state

    def on_refer_timeout(self) -> TransferState:
        """The REFER transaction timed out (Timer F): the same as a 408."""
        self._finish(TransferState.REJECTED, 408, "Request Timeout")
        return self.state

    def on_notify(self, request: SipRequest, now: float) -> NotifyAnswer:
        """Read a NOTIFY of the refer subscription and say how to answer it.

        489 (Bad Event, RFC 6665) for another event package; 481 for an ``id`` that is not our
        REFER's CSeq (RFC 3515 §2.4.6) or a subscription already terminated; 415 (with Accept)
        for a body that is not message/sipfrag; 400 for a malformed one. A missing
        Subscription-State is read as active. A terminating NOTIFY without a final status (or
        without a body) ends the transfer as FAILED. After a final state (TIMED_OUT included)
        NOTIFYs are still answered 200 but change nothing.
        """
        try:
            event = event_of(request)
            sub_state = subscription_state_of(request)
            mime = request.content_type
        except SipParseError as exc:
            return NotifyAnswer(400, exc.reason, self.state)
        if event is None or event.package != REFER_EVENT:
            return NotifyAnswer(489, "Bad Event", self.state, (("Allow-Events", REFER_EVENT),))
        if (event.id is not None and event.id != str(self.cseq)) or self._subscription_ended:
            return NotifyAnswer(481, "Subscription Does Not Exist", self.state)
        terminated = sub_state is not None and sub_state.terminated
        frag: Sipfrag | None = None
        if request.body:
            if mime != SIPFRAG_MIME:
                return NotifyAnswer(
                    415, "Unsupported Media Type", self.state, (("Accept", SIPFRAG_MIME),)
                )
            try:
                frag = parse_sipfrag(request.body)
            except SipParseError as exc:
                return NotifyAnswer(400, exc.reason, self.state)
        if self.state is TransferState.PENDING:
            self.state = TransferState.ACCEPTED
        if frag is not None and not self.done:
            self.status, self.reason = frag.status, frag.reason
            if frag.status >= 300:
                self._finish(TransferState.FAILED, frag.status, frag.reason)
            elif frag.status >= 200:
                self._finish(TransferState.SUCCEEDED, frag.status, frag.reason)
        if terminated:
            self._subscription_ended = True
            reason = (sub_state.reason if sub_state else None) or "subscription terminated"
            self._finish(TransferState.FAILED, self.status, reason)
        elif sub_state is not None and sub_state.expires is not None and not self.done:
            # Wait as long as the notifier keeps the subscription, within our own limit.
            self.deadline = max(self.deadline, now + min(sub_state.expires, MAX_TRANSFER_WAIT))
        return NotifyAnswer(200, None, self.state)

    def next_deadline(self) -> float | None:
        return None if self.done else self.deadline

    def on_deadline(self, now: float) -> bool:
        """True when the transfer just timed out (reported once)."""
        if self.done or now < self.deadline:
            return False
        self._finish(TransferState.TIMED_OUT, self.status, "no final NOTIFY")
        return True
