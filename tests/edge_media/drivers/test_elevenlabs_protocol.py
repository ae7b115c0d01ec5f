"""ElevenLabsProtocol on literal JSON: what we send, byte for byte, and how every kind of server
message (good, stale, malformed) is read."""

from __future__ import annotations

import base64
import json

import pytest

from edge_media.drivers.base import CallInfo
from edge_media.drivers.elevenlabs_protocol import (
    IGNORED_AUDIO_BEFORE_METADATA,
    IGNORED_BAD_BASE64,
    IGNORED_BAD_JSON,
    IGNORED_BAD_METADATA,
    IGNORED_BINARY,
    IGNORED_MISSING_FIELD,
    IGNORED_NOT_OBJECT,
    IGNORED_UNKNOWN_TYPE,
    IGNORED_UNUSED,
    AgentAudio,
    ElevenLabsProtocol,
    Ignored,
    Interruption,
    Metadata,
    Ping,
    StaleAudio,
    ToolCall,
    dtmf_text,
)

INFO = CallInfo(
    call_uuid="0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
    account_id="acc-42",
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
    extra={"campaign": "spring", "caller_number": "+19999999999"},
)
METADATA = json.dumps(
    {
        "type": "conversation_initiation_metadata",
        "conversation_initiation_metadata_event": {
            "conversation_id": "conv_01hx",
            "agent_output_audio_format": "pcm_16000",
            "user_input_audio_format": "ulaw_8000",
        },
    }
)


def audio(event_id: int, data: bytes = b"\x01\x02\x03") -> str:
    payload = base64.b64encode(data).decode()
    return json.dumps(
        {"type": "audio", "audio_event": {"audio_base_64": payload, "event_id": event_id}}
    )


@pytest.fixture
def protocol() -> ElevenLabsProtocol:
    core = ElevenLabsProtocol(INFO)
    assert core.receive_text(METADATA) == [Metadata("conv_01hx", "pcm_16000", "ulaw_8000")]
    return core


# -- what we send --------------------------------------------------------------------------


def test_initiation_carries_the_call_as_dynamic_variables_and_extra_cannot_override() -> None:
    text = ElevenLabsProtocol(INFO).initiation()
    assert json.loads(text) == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {},
        "dynamic_variables": {
            "caller_number": "+15005550006",
            "called_number": "+15005550001",
            "call_uuid": "0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
            "direction": "inbound",
            "account_id": "acc-42",
            "campaign": "spring",
        },
    }


def test_user_audio_is_a_bare_base64_chunk_without_type() -> None:
    assert ElevenLabsProtocol.user_audio(b"\xff\x00\x7f") == '{"user_audio_chunk":"/wB/"}'
    assert json.loads(ElevenLabsProtocol.user_audio(bytes(160))) == {
        "user_audio_chunk": base64.b64encode(bytes(160)).decode()
    }


def test_pong_echoes_the_event_id() -> None:
    assert ElevenLabsProtocol.pong(12) == '{"type":"pong","event_id":12}'


def test_dtmf_goes_as_a_contextual_update() -> None:
    assert ElevenLabsProtocol.contextual_update(dtmf_text("5")) == (
        '{"type":"contextual_update","text":"caller pressed 5"}'
    )
    assert json.loads(ElevenLabsProtocol.contextual_update(dtmf_text("#"))) == {
        "type": "contextual_update",
        "text": "caller pressed #",
    }


def test_a_tool_call_is_answered_with_an_error_result() -> None:
    core = ElevenLabsProtocol(INFO)
    event = core.receive_text(
        '{"type":"client_tool_call","client_tool_call":{"tool_name":"lookup",'
        '"tool_call_id":"t1","parameters":{}}}'
    )
    assert event == [ToolCall("t1", "lookup")]
    answer = json.loads(core.tool_unsupported("t1"))
    assert answer["type"] == "client_tool_result"
    assert (answer["tool_call_id"], answer["is_error"]) == ("t1", True)


# -- what the server sends -----------------------------------------------------------------


def test_audio_is_decoded_with_its_event_id(protocol: ElevenLabsProtocol) -> None:
    assert protocol.receive_text(audio(4, b"\x10" * 5)) == [AgentAudio(b"\x10" * 5, 4)]


def test_ping_asks_for_a_pong(protocol: ElevenLabsProtocol) -> None:
    text = '{"type":"ping","ping_event":{"event_id":12,"ping_ms":80}}'
    assert protocol.receive_text(text) == [Ping(12, 80)]
    assert protocol.receive_text('{"type":"ping","ping_event":{"event_id":13,"ping_ms":null}}') == [
        Ping(13, None)
    ]


def test_audio_up_to_the_last_interruption_is_stale(protocol: ElevenLabsProtocol) -> None:
    assert protocol.receive_text(audio(3)) == [AgentAudio(b"\x01\x02\x03", 3)]
    assert protocol.receive_text('{"type":"interruption","interruption_event":{"event_id":4}}') == [
        Interruption(4)
    ]
    assert protocol.receive_text(audio(3)) == [StaleAudio(3, 3)]
    assert protocol.receive_text(audio(4)) == [StaleAudio(4, 3)]
    assert protocol.receive_text(audio(5)) == [AgentAudio(b"\x01\x02\x03", 5)]
    # An older interruption arriving late does not lower the bar.
    assert protocol.receive_text('{"type":"interruption","interruption_event":{"event_id":2}}') == [
        Interruption(2)
    ]
    assert protocol.receive_text(audio(4)) == [StaleAudio(4, 3)]
    assert protocol.stale_dropped == 3
    assert protocol.interrupted_id == 4


def test_audio_before_the_metadata_is_ignored() -> None:
    core = ElevenLabsProtocol(INFO)
    [event] = core.receive_text(audio(1))
    assert isinstance(event, Ignored) and event.kind == IGNORED_AUDIO_BEFORE_METADATA


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("not json", IGNORED_BAD_JSON),
        ("[" * 100000, IGNORED_BAD_JSON),
        ("[1, 2]", IGNORED_NOT_OBJECT),
        ('{"no_type": 1}', IGNORED_MISSING_FIELD),
        ('{"type": 7}', IGNORED_MISSING_FIELD),
        ('{"type": "audio"}', IGNORED_MISSING_FIELD),
        ('{"type": "audio", "audio_event": {"audio_base_64": "AAAA"}}', IGNORED_MISSING_FIELD),
        (
            '{"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": true}}',
            IGNORED_MISSING_FIELD,
        ),
        (
            '{"type": "audio", "audio_event": {"audio_base_64": "A!A=", "event_id": 9}}',
            IGNORED_BAD_BASE64,
        ),
        (
            '{"type": "audio", "audio_event": {"audio_base_64": "é", "event_id": 9}}',
            IGNORED_BAD_BASE64,
        ),
        ('{"type": "ping"}', IGNORED_MISSING_FIELD),
        ('{"type": "ping", "ping_event": {"event_id": "12"}}', IGNORED_MISSING_FIELD),
        ('{"type": "interruption", "interruption_event": {}}', IGNORED_MISSING_FIELD),
        ('{"type": "client_tool_call", "client_tool_call": {}}', IGNORED_MISSING_FIELD),
        ('{"type": "brand_new_thing"}', IGNORED_UNKNOWN_TYPE),
        ('{"type": "user_transcript", "user_transcription_event": {}}', IGNORED_UNUSED),
        ('{"type": "conversation_initiation_metadata"}', IGNORED_BAD_METADATA),
    ],
)
def test_malformed_messages_are_ignored_never_raised(
    protocol: ElevenLabsProtocol, text: str, kind: str
) -> None:
    [event] = protocol.receive_text(text)
    assert isinstance(event, Ignored)
    assert event.kind == kind
    assert event.first
    # The same kind again is still ignored, but no longer flagged first.
    [again] = protocol.receive_text(text)
    assert again == Ignored(kind, event.detail, first=False)


def test_binary_frames_are_ignored(protocol: ElevenLabsProtocol) -> None:
    assert protocol.receive_bytes(b"\x00" * 4) == [
        Ignored(IGNORED_BINARY, "binary frame of 4 bytes", first=True)
    ]


def test_unknown_types_are_counted(protocol: ElevenLabsProtocol) -> None:
    protocol.receive_text('{"type": "x1"}')
    protocol.receive_text('{"type": "x2"}')
    protocol.receive_text('{"type": "vad_score", "vad_score_event": {"vad_score": 0.5}}')
    assert protocol.unknown_types == 2


@pytest.mark.parametrize(
    "event",
    [
        {"conversation_id": "c", "agent_output_audio_format": "pcm_16000"},
        {"conversation_id": 5, "agent_output_audio_format": "x", "user_input_audio_format": "y"},
        {"conversation_id": "", "agent_output_audio_format": "x", "user_input_audio_format": "y"},
    ],
)
def test_metadata_without_its_fields_is_bad_metadata(event: dict[str, object]) -> None:
    core = ElevenLabsProtocol(INFO)
    text = json.dumps(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": event,
        }
    )
    [ignored] = core.receive_text(text)
    assert isinstance(ignored, Ignored) and ignored.kind == IGNORED_BAD_METADATA
    assert core.metadata is None


def test_a_second_metadata_is_ignored(protocol: ElevenLabsProtocol) -> None:
    [event] = protocol.receive_text(METADATA)
    assert isinstance(event, Ignored) and event.kind == IGNORED_BAD_METADATA
    assert protocol.metadata == Metadata("conv_01hx", "pcm_16000", "ulaw_8000")


def test_unknown_fields_are_tolerated(protocol: ElevenLabsProtocol) -> None:
    text = json.dumps(
        {
            "type": "audio",
            "extra": 1,
            "audio_event": {
                "audio_base_64": "AQID",
                "event_id": 7,
                "alignment": {"chars": ["a"], "char_start_times_ms": [0]},
            },
        }
    )
    assert protocol.receive_text(text) == [AgentAudio(b"\x01\x02\x03", 7)]
