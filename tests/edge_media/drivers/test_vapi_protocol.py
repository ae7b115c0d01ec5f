"""VapiProtocol and the create-call helpers on literal JSON: no socket, no clock."""

from __future__ import annotations

import json

import pytest

from edge_media.drivers.base import CallInfo
from edge_media.drivers.vapi_protocol import (
    END_CALL,
    IGNORED_BAD_JSON,
    IGNORED_MISSING_TYPE,
    IGNORED_NOT_OBJECT,
    IGNORED_UNKNOWN_TYPE,
    IGNORED_UNUSED,
    MAX_TYPE_COUNTERS,
    BargeIn,
    CreatedCall,
    Ignored,
    VapiProtocol,
    VapiResponseError,
    create_call_body,
    error_message,
    parse_create_call_response,
)

INFO = CallInfo(
    call_uuid="0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
    account_id="acc-42",
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
)
CALL_ID = "7c1e9a52-3f0b-4d6e-8a21-0f4b5c6d7e8f"
SOCKET = f"wss://api.vapi.ai/{CALL_ID}/transport"


# -- the create-call body --------------------------------------------------------------------


def test_create_call_body_is_the_documented_shape() -> None:
    body = create_call_body("asst_01", INFO)
    assert json.dumps(body, separators=(",", ":")) == (
        '{"assistantId":"asst_01","assistantOverrides":{"variableValues":{'
        '"caller_number":"+15005550006","called_number":"+15005550001",'
        '"call_uuid":"0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b","direction":"inbound",'
        '"account_id":"acc-42"}},'
        '"transport":{"provider":"vapi.websocket",'
        '"audioFormat":{"format":"mulaw","container":"raw","sampleRate":8000}}}'
    )


def test_extra_variables_follow_but_never_replace_the_reserved_ones() -> None:
    info = CallInfo(
        call_uuid="u1",
        account_id="acc-1",
        direction="outbound",
        from_number="+15005550006",
        to_number="+15005550001",
        extra={"campaign": "spring", "caller_number": "+19995550000", "account_id": "evil"},
    )
    variables = create_call_body("a", info)["assistantOverrides"]["variableValues"]
    assert variables == {
        "caller_number": "+15005550006",
        "called_number": "+15005550001",
        "call_uuid": "u1",
        "direction": "outbound",
        "account_id": "acc-1",
        "campaign": "spring",
    }


def test_the_audio_format_is_not_shared_between_bodies() -> None:
    first = create_call_body("a", INFO)
    first["transport"]["audioFormat"]["sampleRate"] = 16000
    assert create_call_body("a", INFO)["transport"]["audioFormat"]["sampleRate"] == 8000


# -- the create-call response ----------------------------------------------------------------


def test_a_created_call_gives_its_id_and_socket() -> None:
    response = (
        '{"id":"' + CALL_ID + '","orgId":"org-1","type":"vapi.websocketCall","status":"queued",'
        '"transport":{"provider":"vapi.websocket","websocketCallUrl":"' + SOCKET + '"}}'
    )
    created = parse_create_call_response(response.encode(), secure=True)
    assert created == CreatedCall(CALL_ID, SOCKET)
    assert SOCKET not in repr(created)
    assert CALL_ID in repr(created)


def test_ws_is_fine_when_the_api_itself_is_clear_text() -> None:
    url = f"ws://127.0.0.1:8080/{CALL_ID}/transport"
    response = json.dumps({"id": CALL_ID, "transport": {"websocketCallUrl": url}})
    assert parse_create_call_response(response, secure=False).websocket_url == url


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ("<html>", "create-call response is not JSON (JSONDecodeError)"),
        ("[1, 2]", "create-call response is a JSON list"),
        ('{"transport": {}}', "create-call response has no valid 'id' (None)"),
        ('{"id": "a b", "transport": {}}', "create-call response has no valid 'id' ('a b')"),
        ('{"id": 7}', "create-call response has no valid 'id' (7)"),
        ('{"id": "c1"}', "create-call response for call c1 has no websocketCallUrl"),
        (
            '{"id": "c1", "transport": []}',
            "create-call response for call c1 has no websocketCallUrl",
        ),
        (
            '{"id": "c1", "transport": {"websocketCallUrl": ""}}',
            "create-call response for call c1 has no websocketCallUrl",
        ),
        (
            '{"id": "c1", "transport": {"websocketCallUrl": "https://api.vapi.ai/c1/transport"}}',
            "create-call response for call c1 has a websocketCallUrl that is not a ws:// or "
            "wss:// URL",
        ),
        (
            '{"id": "c1", "transport": {"websocketCallUrl": "wss:///c1/transport"}}',
            "create-call response for call c1 has a websocketCallUrl that is not a ws:// or "
            "wss:// URL",
        ),
        (
            '{"id": "c1", "transport": {"websocketCallUrl": "ws://api.vapi.ai/c1/transport"}}',
            "create-call response for call c1 has a clear-text ws:// websocketCallUrl from an "
            "https API",
        ),
    ],
)
def test_a_bad_response_is_a_clear_error_without_the_url(response: str, message: str) -> None:
    with pytest.raises(VapiResponseError) as caught:
        parse_create_call_response(response, secure=True)
    assert str(caught.value) == message
    assert "/transport" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"message": "Invalid Key.", "statusCode": 401}', "Invalid Key."),
        (
            '{"message": ["assistantId must be a UUID", "x"], "statusCode": 400}',
            "assistantId must be a UUID; x",
        ),
        ('{"message": "bad key sk-secret-1 given"}', "bad key <redacted> given"),
        ('{"message": 5}', ""),
        ("Internal Server Error", ""),
        ('{"message": "' + "x" * 300 + '"}', "x" * 157 + "..."),
        ('{"message": "line\\nbreak"}', "line break"),
    ],
)
def test_vapis_error_message_is_quoted_short_and_without_the_key(
    content: str, expected: str
) -> None:
    assert error_message(content.encode(), redact=("sk-secret-1",)) == expected


# -- the socket ------------------------------------------------------------------------------


def test_end_call_is_the_hang_up_message() -> None:
    protocol = VapiProtocol()
    assert not protocol.ended
    assert protocol.end_call() == '{"type":"end-call"}' == END_CALL
    assert protocol.ended


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ('{"type":"user-interrupted","turnId":"t-3"}', "user-interrupted"),
        ('{"type":"user-interrupted"}', "user-interrupted"),
        ('{"type":"speech-update","status":"started","role":"user","turn":2}', "speech-update"),
    ],
)
def test_barge_in_messages(text: str, cause: str) -> None:
    assert VapiProtocol().receive_text(text) == BargeIn(cause)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"speech-update","status":"started","role":"assistant","turn":2}',
        '{"type":"speech-update","status":"stopped","role":"user","turn":2}',
        '{"type":"speech-update","status":"stopped","role":"assistant"}',
        '{"type":"speech-update"}',
        '{"type":"transcript","role":"user","transcriptType":"partial","transcript":"hel"}',
        '{"type":"status-update","status":"in-progress"}',
        '{"type":"conversation-update","conversation":[]}',
        '{"type":"model-output","output":"Hi"}',
        '{"type":"voice-input","input":"Hi"}',
        '{"type":"hang"}',
        '{"type":"tool-calls","toolCallList":[]}',
        '{"type":"workflow.node.started"}',
        '{"type":"assistant.started"}',
    ],
)
def test_known_messages_without_use_are_ignored_quietly(text: str) -> None:
    event = VapiProtocol().receive_text(text)
    assert type(event) is Ignored
    assert event.kind == IGNORED_UNUSED
    assert not event.malformed


def test_unknown_types_are_flagged_first_once_per_type_and_counted() -> None:
    protocol = VapiProtocol()
    events = [
        protocol.receive_text('{"type":"brand-new","x":1}'),
        protocol.receive_text('{"type":"brand-new"}'),
        protocol.receive_text('{"type":"other-new"}'),
        protocol.receive_text('{"type":"transcript"}'),
        protocol.receive_text('{"type":"transcript"}'),
    ]
    assert events == [
        Ignored(IGNORED_UNKNOWN_TYPE, "type 'brand-new'", True),
        Ignored(IGNORED_UNKNOWN_TYPE, "type 'brand-new'", False),
        Ignored(IGNORED_UNKNOWN_TYPE, "type 'other-new'", True),
        Ignored(IGNORED_UNUSED, "transcript", True),
        Ignored(IGNORED_UNUSED, "transcript", False),
    ]
    assert protocol.counts == {"brand-new": 2, "other-new": 1, "transcript": 2}


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("not json", IGNORED_BAD_JSON, "invalid JSON (JSONDecodeError)"),
        ("", IGNORED_BAD_JSON, "invalid JSON (JSONDecodeError)"),
        ("[" * 100_000, IGNORED_BAD_JSON, "invalid JSON (RecursionError)"),
        ('["user-interrupted"]', IGNORED_NOT_OBJECT, "JSON list"),
        ('"user-interrupted"', IGNORED_NOT_OBJECT, "JSON str"),
        ("null", IGNORED_NOT_OBJECT, "JSON NoneType"),
        ('{"event":"user-interrupted"}', IGNORED_MISSING_TYPE, "no string 'type'"),
        ('{"type":7}', IGNORED_MISSING_TYPE, "no string 'type'"),
    ],
)
def test_malformed_frames_never_raise(text: str, kind: str, detail: str) -> None:
    protocol = VapiProtocol()
    first = protocol.receive_text(text)
    again = protocol.receive_text(text)
    assert first == Ignored(kind, detail, True)
    assert again == Ignored(kind, detail, False)
    assert first.malformed
    assert protocol.counts == {}


def test_type_counters_and_first_flags_are_bounded() -> None:
    protocol = VapiProtocol()
    firsts = 0
    for index in range(MAX_TYPE_COUNTERS * 3):
        event = protocol.receive_text(json.dumps({"type": f"t{index}"}))
        assert type(event) is Ignored
        firsts += event.first
    assert len(protocol.counts) == MAX_TYPE_COUNTERS + 1
    assert protocol.counts["other"] == MAX_TYPE_COUNTERS * 2
    assert firsts == MAX_TYPE_COUNTERS
    # A malformed frame after the flood is still not flagged: the log stays bounded.
    assert protocol.receive_text("{").first is False


def test_a_long_type_is_quoted_short() -> None:
    event = VapiProtocol().receive_text(json.dumps({"type": "x" * 500}))
    assert type(event) is Ignored
    assert event.detail == "type '" + "x" * 56 + "..."
