"""The route of a number or extension as a mode picker, to and from the API's ``Route`` shape.

People think "this number goes to ElevenLabs", not "socket_url is elevenlabs&abc": the form asks
for a mode and shows only that mode's field (CSS ``:has()``, no script). The mode and its field
become exactly the ``route`` body the REST API takes, and that body goes through the same
validation and domain functions, so the form cannot store a route the API would refuse.

=============  =================================  ==========================================
mode           form field                         route
=============  =================================  ==========================================
bot            ``route_socket_url`` (ws/wss URL)  ``{"socket_url": url}``
webhook        ``route_webhook_url``              ``{"webhook_url": url}``
elevenlabs     ``route_elevenlabs_agent`` or ""   ``{"socket_url": "elevenlabs[&agent]"}``
vapi           ``route_vapi_assistant`` or ""     ``{"socket_url": "vapi[&assistant]"}``
agent          ``route_agent_uuid`` (a select)    ``{"agent_uuid": uuid}``
none           (extensions only)                  no route
=============  =================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from functions.api.errors import ApiError

MODES = {
    "bot": "Your bot (WebSocket URL)",
    "webhook": "Routing webhook",
    "elevenlabs": "ElevenLabs",
    "vapi": "Vapi",
    "agent": "An agent",
}
NONE_MODE = "none"
FIELDS = (
    "route_socket_url",
    "route_webhook_url",
    "route_elevenlabs_agent",
    "route_vapi_assistant",
    "route_agent_uuid",
)
_SOCKET_FIELD = {
    "bot": "route_socket_url",
    "elevenlabs": "route_elevenlabs_agent",
    "vapi": "route_vapi_assistant",
}


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def route_from_form(form: Mapping[str, Any], *, optional: bool = False) -> dict[str, Any] | None:
    """The API ``route`` body for the submitted mode; None for "no route" (``optional`` only).

    Raises a 422 ApiError on ``route_mode`` for a mode the form does not offer, and on
    ``route_socket_url`` when the bot mode is given something other than a WebSocket URL (the
    API's ``socket_url`` also takes the driver names, which have their own modes here).
    """
    mode = _text(form, "route_mode")
    if optional and mode == NONE_MODE:
        return None
    if mode == "bot":
        url = _text(form, "route_socket_url")
        if "://" not in url:
            raise ApiError(
                422,
                "validation_error",
                "route_socket_url: must be a ws:// or wss:// URL",
                "route_socket_url",
            )
        return {"socket_url": url}
    if mode == "webhook":
        return {"webhook_url": _text(form, "route_webhook_url")}
    if mode in ("elevenlabs", "vapi"):
        agent = _text(form, _SOCKET_FIELD[mode])
        return {"socket_url": f"{mode}&{agent}" if agent else mode}
    if mode == "agent":
        return {"agent_uuid": _text(form, "route_agent_uuid")}
    raise ApiError(422, "validation_error", "route_mode: choose where calls go", "route_mode")


def form_from_route(route: Mapping[str, Any] | None) -> dict[str, str]:
    """The picker's values for a stored route (what an edit form starts from)."""
    values = dict.fromkeys(FIELDS, "")
    if not route:
        return {**values, "route_mode": NONE_MODE}
    if route.get("webhook_url"):
        return {**values, "route_mode": "webhook", "route_webhook_url": route["webhook_url"]}
    if route.get("agent_uuid"):
        return {**values, "route_mode": "agent", "route_agent_uuid": str(route["agent_uuid"])}
    target = str(route.get("socket_url") or "")
    name, _, agent = target.partition("&")
    if name in ("elevenlabs", "vapi"):
        return {**values, "route_mode": name, _SOCKET_FIELD[name]: agent}
    return {**values, "route_mode": "bot", "route_socket_url": target}


def error_field(api_field: str | None, mode: str) -> str:
    """The form field to show an API error on (``route.socket_url`` → the mode's own field)."""
    if not api_field:
        return ""
    if api_field == "route.socket_url":
        return _SOCKET_FIELD.get(mode, "route_mode")
    if api_field in ("route.webhook_url", "route.agent_uuid"):
        return "route_" + api_field.removeprefix("route.")
    if api_field == "route":
        return "route_mode"
    return api_field


def describe(route: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(mode label, target)`` for listings: ("ElevenLabs", "account agent")."""
    values = form_from_route(route)
    mode = values["route_mode"]
    if mode == NONE_MODE:
        return ("No route", "")
    if mode in ("elevenlabs", "vapi"):
        default = "account agent" if mode == "elevenlabs" else "account assistant"
        return (MODES[mode], values[_SOCKET_FIELD[mode]] or default)
    field = {"bot": "route_socket_url", "webhook": "route_webhook_url"}.get(
        mode, "route_agent_uuid"
    )
    return (MODES[mode], values[field])
