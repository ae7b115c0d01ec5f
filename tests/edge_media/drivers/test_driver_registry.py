"""The driver table: a target's kind picks its connector, and what a record may show of it."""

from __future__ import annotations

import pytest

from edge_media.drivers.base import BotUnavailable, CallInfo, ConnectStep
from edge_media.drivers.context import DriverContext
from edge_media.drivers.registry import DRIVERS, driver_kind, make_connector, public_target
from shared.settings import Settings
from shared.validation import MediaKind
from tests.edge_media.drivers.recording_leg import RecordingLeg

pytestmark = pytest.mark.anyio

INFO = CallInfo(
    call_uuid="d3b07384-d113-444c-9b1d-1234567890ab",
    account_id="acc_1",
    direction="inbound",
    from_number="+15550001111",
    to_number="+15550002222",
)


def test_every_media_kind_has_a_driver() -> None:
    assert set(DRIVERS) == set(MediaKind)


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("wss://bot.example.com/media?token=x", MediaKind.WEBSOCKET),
        ("elevenlabs", MediaKind.ELEVENLABS),
        ("elevenlabs&agent_01", MediaKind.ELEVENLABS),
        ("vapi", MediaKind.VAPI),
        ("vapi&asst-9", MediaKind.VAPI),
    ],
)
def test_the_kind_of_each_target_form(target: str, kind: MediaKind) -> None:
    assert driver_kind(target) is kind


@pytest.mark.parametrize("target", ["", "http://bot.example.com/", "elevenlabs&bad id", "sip:x"])
def test_a_non_target_is_unavailable_at_the_target_step(target: str) -> None:
    with pytest.raises(BotUnavailable) as raised:
        driver_kind(target)
    assert raised.value.step is ConnectStep.TARGET


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (
            "wss://user:pw@bot.example.com:8443/media?token=s3cret#x",
            "wss://bot.example.com:8443/media",
        ),
        ("ws://127.0.0.1:9000/ws", "ws://127.0.0.1:9000/ws"),
        ("elevenlabs&agent_01", "elevenlabs&agent_01"),
        ("vapi", "vapi"),
    ],
)
def test_public_target_drops_what_may_be_secret(target: str, shown: str) -> None:
    assert public_target(target) == shown


async def test_a_websocket_bot_on_a_private_address_is_refused_before_connecting() -> None:
    """The node checks the address again (DNS may have changed since the API checked it)."""
    connect = make_connector(
        DriverContext(Settings.load(environ={}), resolve=lambda host: ["10.0.0.7"])
    )
    with pytest.raises(BotUnavailable) as raised:
        await connect("wss://bot.example.com/media", INFO, RecordingLeg(), 1.0)
    assert raised.value.step is ConnectStep.TARGET
    assert "bot.example.com" in str(raised.value) or "10.0.0.7" in str(raised.value)
