"""The SSRF guard as the API applies it: which fields, which targets, which error."""

from __future__ import annotations

import uuid

import pytest

from functions.api.errors import ApiError
from functions.api.url_guard import check_urls, route_urls
from functions.context import Context
from shared.models import Route
from shared.settings import Settings

RESOLVED: list[str] = []


def resolver(host: str) -> list[str]:
    RESOLVED.append(host)
    return {"bot.example.com": ["93.184.216.36"], "inside.example.com": ["10.9.8.7"]}[host]


@pytest.fixture
def ctx() -> Context:
    context = Context(Settings.load({}, ssrf_allow_list="192.0.2.0/24"))
    context.resolve_host = resolver  # type: ignore[attr-defined]
    RESOLVED.clear()
    return context


def test_public_urls_and_native_drivers_pass(ctx) -> None:
    check_urls(
        ctx,
        {
            "webhook_url": "https://bot.example.com/hook",
            "socket_url": "elevenlabs&agent_1",
            "other": "vapi",
            "empty": None,
        },
    )
    assert RESOLVED == ["bot.example.com"]  # drivers and empty fields resolve nothing


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("wss://inside.example.com/bot", "private"),
        ("ws://127.0.0.1/bot", "loopback"),
        ("http://169.254.169.254/", "metadata"),
    ],
)
def test_refusals_are_422_naming_the_field(ctx, url, reason) -> None:
    with pytest.raises(ApiError) as caught:
        check_urls(ctx, {"route.socket_url": url})
    error = caught.value
    assert (error.status, error.code, error.field) == (422, "unsafe_url", "route.socket_url")
    assert error.message.startswith("route.socket_url: ")
    assert reason in error.message


def test_the_operator_allow_list_opens_a_range(ctx) -> None:
    check_urls(ctx, {"webhook_url": "http://192.0.2.10/hook"})


def test_route_urls_names_nested_fields() -> None:
    agent = uuid.uuid4()
    assert route_urls(Route(agent_uuid=agent)) == {
        "route.socket_url": None,
        "route.webhook_url": None,
    }
    assert route_urls(Route(webhook_url="https://x.example/h"), "default") == {
        "default.socket_url": None,
        "default.webhook_url": "https://x.example/h",
    }
    assert route_urls(None) == {}
