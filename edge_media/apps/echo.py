"""The echo test line: a call to the user part ``echo`` hears its own audio and DTMF back.

Users keep it as a trunk test (issue 3): it proves signalling, both RTP directions, NAT
latching and DTMF in one call, without a bot. Audio goes straight from the receive path into
the leg's playout queue, so the echo rides the same pacer grid as bot audio does.
"""

from __future__ import annotations

import asyncio

from edge_media.bridge.relay import RelaySink
from edge_media.sip.call import SipCall

__all__ = ["ECHO_USER", "echo_app"]

ECHO_USER = "echo"


async def echo_app(call: SipCall, *, ring_seconds: float = 0.0) -> None:
    """Ring (for ``ring_seconds``), answer, echo until the caller hangs up."""
    call.ring()
    if ring_seconds > 0:
        try:
            async with asyncio.timeout(ring_seconds):
                await call.ended()  # a CANCEL during the ring ends it here
            return
        except TimeoutError:
            pass
    if not await call.answer():
        return
    media = call.media
    assert media is not None
    media.connect(media.playout, RelaySink(media))  # a relay from the leg to itself
    call.on_digit = lambda digit, duration_ms: media.send_dtmf(digit)
    await call.ended()
