"""Where a call stands (`CallState`), how it ended (`CallEnd`), and the body type and Allow list
every call reads from its peer's messages.

Why a module of its own: `call` (the dialog usage), `call_inbound` and `call_outbound` (its two
openings) and the UA all need these names, and the openings must not import `call` back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge_media.sip.message import SipRequest, SipResponse

__all__ = ["SDP", "CallEnd", "CallState", "allow_of"]

SDP = "application/sdp"


def allow_of(message: SipRequest | SipResponse) -> frozenset[str]:
    """The methods a peer said it allows (§20.5); empty when it did not say."""
    return frozenset(m.strip().upper() for m in message.headers.get_all("allow"))


class CallState(StrEnum):
    INCOMING = "incoming"  # INVITE received, nothing but 100 sent
    RINGING = "ringing"  # UAS: 18x sent; UAC: 18x received
    CALLING = "calling"  # UAC: INVITE sent
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How the call ended: a Q.850 cause name, the SIP status when one decided it, who ended it."""

    cause: str
    status: int | None
    by: str  # "local", "remote" or "error"
    detail: str = ""
