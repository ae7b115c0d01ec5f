"""Two SIP legs joined back to back: the fallback of a blind transfer when REFER cannot be used.

Each leg's inbound frames go into the other leg's playout queue, so both directions ride the
node's one pacer at exactly 20 ms and a late packet is absorbed rather than forwarded late; a
digit is regenerated as RFC 4733 on the other leg. The relay ends when either leg ends, and then
hangs up the other with the same cause.
"""

from __future__ import annotations

import asyncio

from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.session import RtpSession
from edge_media.sip.call import SipCall

__all__ = ["RelaySink", "relay_until_either_ends"]


class RelaySink:
    """One direction of the relay: frames and digits of one leg, out of the other."""

    __slots__ = ("_out",)

    def __init__(self, out: RtpSession) -> None:
        self._out = out

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        push = self._out.playout.push_media
        for frame in frames:
            push(frame)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        for digit in digits:
            self._out.send_dtmf(digit.digit)


async def relay_until_either_ends(a: SipCall, b: SipCall) -> str:
    """Relay media between two answered legs; returns the cause of the leg that ended first."""
    assert a.media is not None and b.media is not None
    a.media.playout.clear()
    b.media.playout.clear()
    a.media.on_marks = b.media.on_marks = None
    a.media.sink = RelaySink(b.media)
    b.media.sink = RelaySink(a.media)
    a.on_digit = lambda digit, _ms: b.media.send_dtmf(digit) if b.media else None
    b.on_digit = lambda digit, _ms: a.media.send_dtmf(digit) if a.media else None
    ended_a = asyncio.ensure_future(a.ended())
    ended_b = asyncio.ensure_future(b.ended())
    try:
        done, _ = await asyncio.wait({ended_a, ended_b}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended_a.cancel()
        ended_b.cancel()
    first, other = (a, b) if ended_a in done else (b, a)
    cause = first.end.cause if first.end is not None else "NORMAL_CLEARING"
    if not other.is_ended:
        await other.hangup("NORMAL_CLEARING")
    return cause
