from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from shared.validation import (
    MediaKind,
    MediaTarget,
    MediaTargetStr,
    PhoneNumber,
    normalize_number,
    parse_media_target,
    parse_transfer_destination,
)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("5511999999999", "+5511999999999"),
        ("+5511999999999", "+5511999999999"),
        ("+55 (11) 99999-9999", "+5511999999999"),
        ("100", "+100"),
    ],
)
def test_numbers_normalise(raw: str, e164: str) -> None:
    assert normalize_number(raw) == e164


@pytest.mark.parametrize("raw", ["", "+", "0123", "12", "1234567890123456", "55a11", "++55"])
def test_bad_numbers(raw: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        normalize_number(raw)


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        (
            "wss://bot.example.com/media",
            MediaTarget(MediaKind.WEBSOCKET, url="wss://bot.example.com/media"),
        ),
        ("ws://127.0.0.1:9000/ws", MediaTarget(MediaKind.WEBSOCKET, url="ws://127.0.0.1:9000/ws")),
        ("elevenlabs", MediaTarget(MediaKind.ELEVENLABS)),
        ("elevenlabs&tVvN_12-x", MediaTarget(MediaKind.ELEVENLABS, agent_id="tVvN_12-x")),
        ("vapi", MediaTarget(MediaKind.VAPI)),
        ("vapi&abc-123", MediaTarget(MediaKind.VAPI, agent_id="abc-123")),
    ],
)
def test_media_targets(raw: str, target: MediaTarget) -> None:
    parsed = parse_media_target(raw)
    assert parsed == target
    assert str(parsed) == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("https://bot.example.com", "must start with ws:// or wss://"),
        ("wss://", "must include a host"),
        ("wss://host:99999/x", "not a valid URL"),
        ("elevenlabs&", "the id after 'elevenlabs&'"),
        ("vapi&bad id", "the id after 'vapi&'"),
        ("openai", "must be a ws:// or wss:// URL"),
        ("", "must be a ws:// or wss:// URL"),
    ],
)
def test_bad_media_targets(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_media_target(raw)


def test_annotated_types_name_the_field() -> None:
    class Body(BaseModel):
        socket_url: MediaTargetStr
        number: PhoneNumber

    with pytest.raises(ValidationError) as info:
        Body(socket_url="ftp://x", number="5511999999999")
    assert info.value.errors()[0]["loc"] == ("socket_url",)
    assert Body(socket_url=" vapi ", number="+1 555 0100 123").number == "+15550100123"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("5511999999999", ("number", "+5511999999999")),
        ("+44 20 7946 0000", ("number", "+442079460000")),
        ("101", ("extension", "101")),
        ("alice", ("extension", "alice")),
        ("sip:bob@127.0.0.1:5070", ("sip", "sip:bob@127.0.0.1:5070")),
    ],
)
def test_transfer_destinations(raw: str, kind: tuple[str, str]) -> None:
    assert parse_transfer_destination(raw) == kind


@pytest.mark.parametrize("raw", ["sip:", "sip:bob@", "not valid!", "+12"])
def test_bad_transfer_destinations(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_transfer_destination(raw)
