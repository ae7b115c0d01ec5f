"""Which driver serves a media target: the one place a ``socket_url`` becomes a bot connection.

Why the address is checked again here: the API checked the URL when it was stored, but a host
name may resolve elsewhere by the time a call connects (DNS rebinding), and a routing webhook
hands us URLs nobody has checked. The node refuses private and metadata addresses unless the
operator allows them (``AGERA_SSRF_ALLOW_LIST``), exactly like the API.

Native ElevenLabs and Vapi targets parse today but their drivers come next (DESIGN.md §1): such a
target is "unavailable", so a call falls back to the account default or gets 480, with a log
line that says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from edge_media.drivers.base import BotConnector, BotDriver, BotUnavailable, CallerLeg, CallInfo
from shared.settings import Settings
from shared.ssrf import UnsafeUrlError, check_public_url, resolve_host
from shared.validation import MediaKind, parse_media_target

__all__ = ["make_connector"]


def make_connector(
    settings: Settings, *, resolve: Callable[[str], Sequence[str]] = resolve_host
) -> BotConnector:
    """A `BotConnector` for this node's settings."""

    async def connect(target: str, info: CallInfo, leg: CallerLeg, seconds: float) -> BotDriver:
        try:
            parsed = parse_media_target(target)
        except ValueError as error:
            raise BotUnavailable(f"not a media target: {error}") from None
        if parsed.kind is not MediaKind.WEBSOCKET:
            raise BotUnavailable(
                f"the native {parsed.kind} driver is not available on this node yet"
            )
        url = parsed.url or ""
        try:
            await asyncio.to_thread(check_public_url, url, "socket_url", settings, resolve)
        except UnsafeUrlError as error:
            raise BotUnavailable(str(error)) from None
        from edge_media.drivers.twilio_driver import connect_twilio_stream

        return await connect_twilio_stream(url, info, leg, seconds)

    return connect
