"""Two SIP legs joined back to back: the fallback of a blind transfer when REFER cannot be used.

Each leg's inbound frames go into the other leg's playout queue, so both directions ride the
node's one pacer at exactly 20 ms and a late packet is absorbed rather than forwarded late; a
digit is regenerated as RFC 4733 on the other leg. The relay ends when either leg ends, and then
hangs up the other with the same cause.

Why a one-frame jitter buffer: the far end's packets and our pacer ticks both come every 20 ms,
in some phase to each other. When the phases are close, network jitter alone decides whether a
packet is there before its tick, and each time it is not the pacer sends a silence frame in the
middle of speech (a click, and everything after it one frame late). So a talkspurt starts one
silence frame late: the queue then holds a frame in hand and absorbs up to 20 ms of jitter. The
other way, a sender whose clock runs fast fills the queue slowly; past `MAX_RELAY_MS` a frame
is dropped so the added delay stays bounded. The echo application is this relay to itself.
"""

from __future__ import annotations

import asyncio

from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.playout import FRAME_BYTES, ULAW_SILENCE, PlayedMark, PlayoutQueue
from edge_media.rtp.session import RtpSession
from edge_media.sip.call import SipCall

__all__ = ["MAX_RELAY_MS", "RelaySink", "relay_until_either_ends"]

MAX_RELAY_MS = 80.0  # queued beyond this, a relayed frame is dropped (clock drift, bursts)
_SILENCE_FRAME = bytes((ULAW_SILENCE,)) * FRAME_BYTES


class RelaySink:
    """One direction of the relay: frames and digits of one leg, out of the other."""

    __slots__ = ("_out", "dropped")

    def __init__(self, out: RtpSession) -> None:
        self._out = out
        self.dropped = 0  # frames dropped because the queue was past MAX_RELAY_MS

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        playout = self._out.playout
        if playout.starved and not playout.buffered_ms:
            playout.push_media(_SILENCE_FRAME)  # a new talkspurt: one frame in hand
        for frame in frames:
            if playout.buffered_ms >= MAX_RELAY_MS:
                self.dropped += 1
                continue
            playout.push_media(frame)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        for digit in digits:
            self._out.send_dtmf(digit.digit)

    def on_marks(self, marks: list[PlayedMark]) -> None:
        pass  # a relayed leg's queue holds no marks


async def relay_until_either_ends(a: SipCall, b: SipCall) -> str:
    """Relay media between two answered legs; returns the cause of the leg that ended first."""
    assert a.media is not None and b.media is not None
    # Fresh queues: whatever either leg was playing (a bot's unplayed audio) is not heard.
    a.media.connect(PlayoutQueue(), RelaySink(b.media))
    b.media.connect(PlayoutQueue(), RelaySink(a.media))
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
