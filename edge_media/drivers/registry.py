"""Which driver serves a media target: the one place a target string becomes a bot connection.

Why a table: a target's kind (`shared.validation.MediaKind`: a ws(s) URL, ``elevenlabs[&id]``,
``vapi[&id]``) picks its connector, and every connector has the `BotConnector` signature, so
whatever a route names (a number, an extension, an agent, a routing webhook's
``connect.socket_url``, ``POST /api/calls``, the account default or a redirect's
``media_server``) reaches its driver the same way, and a redirect can move a call between any
two kinds. A new kind is a new row.

Each kind's connector is built once per node from the `DriverContext` (settings, account
lookup, HTTP client); see the driver modules for what each does with a target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edge_media.drivers.base import (
    BotConnector,
    BotDriver,
    BotUnavailable,
    CallerLeg,
    CallInfo,
    ConnectStep,
)
from edge_media.drivers.context import DriverContext
from edge_media.drivers.elevenlabs_driver import elevenlabs_connector
from edge_media.drivers.twilio_driver import twilio_stream_connector
from edge_media.drivers.vapi_driver import vapi_connector
from edge_media.drivers.ws_client import display_url
from shared.validation import MediaKind, parse_media_target

__all__ = ["DRIVERS", "driver_kind", "driver_name", "make_connector", "public_target"]

DRIVERS: Mapping[MediaKind, Callable[[DriverContext], BotConnector]] = {
    MediaKind.WEBSOCKET: twilio_stream_connector,
    MediaKind.ELEVENLABS: elevenlabs_connector,
    MediaKind.VAPI: vapi_connector,
}


def driver_kind(target: str) -> MediaKind:
    """The kind of a media target; `BotUnavailable` (step ``target``) when it is not one."""
    try:
        return parse_media_target(target).kind
    except ValueError as error:
        raise BotUnavailable(f"not a media target: {error}", step=ConnectStep.TARGET) from None


def driver_name(target: str) -> str | None:
    """The kind of a target as records and events name it; None when it is not a target."""
    try:
        return str(driver_kind(target))
    except BotUnavailable:
        return None


def public_target(target: str) -> str:
    """A target fit for logs, records and callbacks: a URL loses its user info, query and
    fragment (bot tokens live there); native targets (``elevenlabs&<agent id>``) hold no secret
    and stay as they are."""
    if "://" in target:
        return display_url(target)
    return target


def make_connector(context: DriverContext) -> BotConnector:
    """The node's `BotConnector`: dispatch on the target's kind to that kind's connector."""
    connectors = {kind: build(context) for kind, build in DRIVERS.items()}

    async def connect(target: str, info: CallInfo, leg: CallerLeg, seconds: float) -> BotDriver:
        return await connectors[driver_kind(target)](target, info, leg, seconds)

    return connect
