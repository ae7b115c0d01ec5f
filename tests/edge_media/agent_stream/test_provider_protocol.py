"""The agent-stream handshake, messages and URL forms, on literal text (no socket)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from edge_media.agent_stream.provider_protocol import (
    HandshakeError,
    Malformed,
    ProviderDtmf,
    ProviderMedia,
    ProviderStop,
    _compact_media,
    clear_message,
    media_message,
    parse_connected,
    parse_event,
    parse_start,
)
from edge_media.agent_stream.stream_path import SupportedProvider, parse_stream_path
from shared.stream_tokens import make_stream_token, stream_token_problem

AGENT = uuid.UUID("3d0c6a52-0000-4000-8000-00000000b002")

CLOUDONIX_START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ9a10000000000000000000000000000c",
    "start": {
        "streamSid": "MZ9a10000000000000000000000000000c",
        "callSid": "CA9a10000000000000000000000000000d",
        "accountSid": "acme.cloudonix.net",
        "session": "sess-token-1",
        "from": "+15005550006",
        "to": "+15005550001",
        "context": "inbound",
        "tracks": ["inbound"],
        "customParameters": {"campaign": "spring"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def test_connected_must_come_first() -> None:
    parse_connected('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    with pytest.raises(HandshakeError, match=r"^Expected connected event$"):
        parse_connected(json.dumps(CLOUDONIX_START))
    with pytest.raises(HandshakeError, match="not JSON"):
        parse_connected("{oops")
    with pytest.raises(HandshakeError, match="not a JSON object"):
        parse_connected("[1]")


def test_a_cloudonix_start_gives_every_id() -> None:
    start = parse_start(json.dumps(CLOUDONIX_START))
    assert start.stream_sid == "MZ9a10000000000000000000000000000c"
    assert start.call_sid == "CA9a10000000000000000000000000000d"
    assert (start.account_sid, start.session) == ("acme.cloudonix.net", "sess-token-1")
    assert (start.from_number, start.to_number, start.context) == (
        "+15005550006",
        "+15005550001",
        "inbound",
    )
    assert start.custom_parameters == {"campaign": "spring"}


def test_a_twilio_start_takes_caller_and_callee_from_custom_parameters() -> None:
    body = {
        "event": "start",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "accountSid": "AC" + "1" * 32,
            "customParameters": {"From": "+1555", "To": "+1666"},
        },
    }
    start = parse_start(json.dumps(body))
    assert (start.from_number, start.to_number) == ("+1555", "+1666")
    assert start.session == ""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event": "media"}, "Expected start event"),
        ({"start": "x"}, "Missing start metadata"),
        ({"start": {"streamSid": "MZ1"}}, "Missing stream identifiers"),
        ({"start": {"streamSid": 'MZ"1', "callSid": "CA1"}}, "Malformed stream identifiers"),
        ({"start": {"streamSid": "MZ1", "callSid": "CA/../x"}}, "Malformed stream identifiers"),
        (
            {"start": {"streamSid": "MZ1", "callSid": "CA1", "session": "a/b"}},
            "Malformed session identifier",
        ),
        (
            {"start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"sampleRate": 16000}}},
            "Unsupported media format",
        ),
        (
            {"start": {"streamSid": "MZ1", "callSid": "CA1", "customParameters": []}},
            "Malformed start event: customParameters is not an object",
        ),
    ],
)
def test_a_bad_start_is_refused_with_a_reason_that_echoes_nothing(
    change: dict[str, object], reason: str
) -> None:
    body = {**CLOUDONIX_START, **change}
    with pytest.raises(HandshakeError) as error:
        parse_start(json.dumps(body))
    assert error.value.reason.startswith(reason)
    assert error.value.code == 4400
    assert '"' not in error.value.reason and "../" not in error.value.reason


def test_events_after_the_handshake() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = {"event": "media", "media": {"track": "inbound", "payload": payload}}
    assert parse_event(json.dumps(media)) == ProviderMedia(b"\xff" * 160)
    outbound = {"event": "media", "media": {"track": "outbound", "payload": payload}}
    assert parse_event(json.dumps(outbound)) is None  # our own audio reflected: not the caller
    assert parse_event('{"event":"dtmf","dtmf":{"digit":"a"}}') == ProviderDtmf("A")
    assert parse_event('{"event":"stop","stop":{}}') == ProviderStop()
    assert parse_event('{"event":"mark","mark":{"name":"x"}}') is None
    assert parse_event('{"event":"something-new"}') is None
    for bad in (
        "nope",
        "[]",
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"***"}}',
        '{"event":"dtmf","dtmf":{"digit":"X"}}',
        '{"no":"event"}',
    ):
        with pytest.raises(Malformed):
            parse_event(bad)


def test_messages_we_send_are_twilio_json() -> None:
    message = json.loads(media_message("MZ1", b"\x7f" * 160))
    assert message == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\x7f" * 160).decode()},
    }
    assert json.loads(clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


def test_both_url_forms() -> None:
    v1 = parse_stream_path(
        f"/api/v1/agent-stream/{AGENT}?provider=Cloudonix&Domain=acme&callId=c1&from=%2B1555"
    )
    assert v1 is not None
    assert (v1.version, v1.supported, v1.agent_uuid) == (1, SupportedProvider.CLOUDONIX, AGENT)
    assert (v1.param("Domain"), v1.param("callId", "CallSid"), v1.param("from")) == (
        "acme",
        "c1",
        "+1555",
    )
    v2 = parse_stream_path(f"/api/v1/agent-stream/twilio/{AGENT}")
    assert v2 is not None and (v2.version, v2.supported) == (2, SupportedProvider.TWILIO)
    telnyx = parse_stream_path(f"/api/v1/agent-stream/telnyx/{AGENT}")
    assert telnyx is not None and telnyx.supported is None
    assert parse_stream_path("/api/v1/agent-stream/x/not-a-uuid").agent_uuid is None  # type: ignore[union-attr]
    for other in ("/health", "/api/v1/agent-stream/", "/api/v1/agent-stream/a/b/c", "/x"):
        assert parse_stream_path(other) is None


def test_stream_tokens() -> None:
    secret = "s" * 32
    token = make_stream_token(secret, AGENT, 2_000)
    assert stream_token_problem(secret, AGENT, token, 1_000) is None
    assert stream_token_problem(secret, AGENT, token, 2_001) == "Token expired"
    assert stream_token_problem("t" * 32, AGENT, token, 1_000) == "Invalid token"
    assert stream_token_problem(secret, uuid.uuid4(), token, 1_000) == "Invalid token"
    forged = "9999999999." + token.split(".", 1)[1]
    assert stream_token_problem(secret, AGENT, forged, 1_000) == "Invalid token"
    assert stream_token_problem(secret, AGENT, "", 1_000) == "Token required"
    assert stream_token_problem(secret, AGENT, "x.y", 1_000) == "Malformed token"


@pytest.mark.parametrize(
    ("text", "shortcut"),
    [
        # Twilio's documented order: streamSid after media
        (
            '{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1",'
            '"timestamp":"5","payload":"PAYLOAD"},"streamSid":"MZ1"}',
            True,
        ),
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"PAYLOAD"}}', True),
        # not compact (spaces, payload not last, an escape): the full parse answers the same
        ('{"event": "media", "media": {"payload": "PAYLOAD"}}', False),
        ('{"event":"media","media":{"payload":"PAYLOAD","track":"inbound"}}', False),
        ('{"event":"media","note":"a\\\\b","media":{"payload":"PAYLOAD"}}', False),
    ],
)
def test_the_compact_media_shortcut_agrees_with_the_full_parse(text: str, shortcut: bool) -> None:
    audio = bytes(range(160))
    encoded = base64.b64encode(audio).decode()
    message = text.replace("PAYLOAD", encoded)
    assert json.loads(message)["media"]["payload"] == encoded
    assert parse_event(message) == ProviderMedia(audio)
    assert (_compact_media(message) is not None) is shortcut


def test_the_shortcut_leaves_other_tracks_and_bad_payloads_to_the_full_parse() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    outbound = '{"event":"media","media":{"track":"outbound","payload":"' + payload + '"}}'
    assert parse_event(outbound) is None
    with pytest.raises(Malformed):
        parse_event('{"event":"media","media":{"payload":"***"}}')
