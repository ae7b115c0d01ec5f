from __future__ import annotations

import base64
import json

import pytest

from edge_media.drivers.base import CallInfo
from edge_media.drivers.twilio_stream import (
    IGNORED_BAD_BASE64,
    IGNORED_BAD_JSON,
    IGNORED_BINARY,
    IGNORED_MISSING_FIELD,
    IGNORED_NOT_OBJECT,
    IGNORED_UNKNOWN_EVENT,
    IGNORED_WRONG_STREAM,
    Clear,
    Ignored,
    PlayMark,
    PlayMedia,
    TwilioStreamProtocol,
    TwilioStreamStateError,
)

SID = "MZ4f2c0000000000000000000000000001"
CALL = "d3b07384-d113-444c-9a3e-5c4b0e8d7f21"
ACCOUNT = "acc-7"
INFO = CallInfo(
    call_uuid=CALL,
    account_id=ACCOUNT,
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
)
FRAME = bytes(range(160))


def started(info: CallInfo = INFO) -> TwilioStreamProtocol:
    stream = TwilioStreamProtocol(SID, CALL, ACCOUNT, info)
    stream.connected()
    stream.start()
    return stream


# -- what we send: literal JSON --------------------------------------------------------------


def test_connected_is_the_literal_first_message() -> None:
    stream = TwilioStreamProtocol(SID, CALL, ACCOUNT, INFO)
    assert stream.connected() == '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def test_start_carries_sids_at_both_levels_and_the_call_parameters() -> None:
    stream = TwilioStreamProtocol(SID, CALL, ACCOUNT, INFO)
    stream.connected()
    assert stream.start() == (
        '{"event":"start","sequenceNumber":"1","streamSid":"MZ4f2c0000000000000000000000000001",'
        '"start":{"streamSid":"MZ4f2c0000000000000000000000000001","accountSid":"acc-7",'
        '"callSid":"d3b07384-d113-444c-9a3e-5c4b0e8d7f21","tracks":["inbound"],'
        '"customParameters":{"from_number":"+15005550006","to_number":"+15005550001",'
        '"call_uuid":"d3b07384-d113-444c-9a3e-5c4b0e8d7f21","direction":"inbound",'
        '"account_id":"acc-7"},'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}'
    )


def test_start_adds_extra_parameters_but_never_lets_them_override_ours() -> None:
    info = CallInfo(
        call_uuid=CALL,
        account_id=ACCOUNT,
        direction="outbound",
        from_number="+1",
        to_number="+2",
        extra={"campaign": "spring", "call_uuid": "forged"},
    )
    stream = TwilioStreamProtocol(SID, CALL, ACCOUNT, info)
    stream.connected()
    parameters = json.loads(stream.start())["start"]["customParameters"]
    assert parameters == {
        "from_number": "+1",
        "to_number": "+2",
        "call_uuid": CALL,
        "direction": "outbound",
        "account_id": ACCOUNT,
        "campaign": "spring",
    }


def test_media_literal_json() -> None:
    stream = started()
    payload = base64.b64encode(FRAME).decode()
    assert stream.media(FRAME) == (
        '{"event":"media","sequenceNumber":"2","streamSid":"MZ4f2c0000000000000000000000000001",'
        '"media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"' + payload + '"}}'
    )


def test_media_built_without_json_dumps_is_the_json_it_claims() -> None:
    stream = started()
    stream.media(FRAME)
    text = stream.media(b"\xff" * 320)
    assert json.loads(text) == {
        "event": "media",
        "sequenceNumber": "3",
        "streamSid": SID,
        "media": {
            "track": "inbound",
            "chunk": "2",
            "timestamp": "20",
            "payload": base64.b64encode(b"\xff" * 320).decode(),
        },
    }


def test_media_escapes_an_unusual_stream_sid() -> None:
    stream = TwilioStreamProtocol('MZ"quoted\\', CALL, ACCOUNT, INFO)
    stream.connected()
    stream.start()
    assert json.loads(stream.media(b"\x00"))["streamSid"] == 'MZ"quoted\\'


def test_dtmf_mark_and_stop_literal_json() -> None:
    stream = started()
    assert stream.dtmf("5") == (
        '{"event":"dtmf","sequenceNumber":"2","streamSid":"MZ4f2c0000000000000000000000000001",'
        '"dtmf":{"track":"inbound_track","digit":"5"}}'
    )
    assert stream.mark("reply-3", 1380) == (
        '{"event":"mark","sequenceNumber":"3","streamSid":"MZ4f2c0000000000000000000000000001",'
        '"mark":{"name":"reply-3","played_ms":1380}}'
    )
    assert stream.stop() == (
        '{"event":"stop","sequenceNumber":"4","streamSid":"MZ4f2c0000000000000000000000000001",'
        '"stop":{"accountSid":"acc-7","callSid":"d3b07384-d113-444c-9a3e-5c4b0e8d7f21"}}'
    )


def test_counters_across_a_mixed_sequence() -> None:
    """One sequenceNumber for every kind; chunk counts media only; timestamp is the duration
    of the audio sent before the chunk (20 ms per 160 bytes, whatever the chunk sizes)."""
    stream = started()
    texts = [
        stream.media(FRAME),
        stream.media(FRAME),
        stream.dtmf("#"),
        stream.media(b"\x01" * 80),  # 10 ms
        stream.mark("a", 0),
        stream.media(b"\x02" * 400),  # 50 ms
        stream.media(FRAME),
        stream.stop(),
    ]
    messages = [json.loads(text) for text in texts]
    assert [m["sequenceNumber"] for m in messages] == ["2", "3", "4", "5", "6", "7", "8", "9"]
    media = [m["media"] for m in messages if m["event"] == "media"]
    assert [(m["chunk"], m["timestamp"]) for m in media] == [
        ("1", "0"),
        ("2", "20"),
        ("3", "40"),
        ("4", "50"),
        ("5", "100"),
    ]


def test_a_mark_name_with_a_lone_surrogate_still_encodes_to_utf8() -> None:
    """A bot's mark name comes back in our echo; JSON may carry a lone surrogate that UTF-8
    cannot, so the echo must escape it rather than fail on encode."""
    stream = started()
    (event,) = stream.receive_text('{"event":"mark","mark":{"name":"\\ud800x"}}')
    assert event == PlayMark("\ud800x")
    text = stream.mark("\ud800x", 20)
    assert text.encode() == (
        b'{"event":"mark","sequenceNumber":"2","streamSid":"MZ4f2c0000000000000000000000000001",'
        b'"mark":{"name":"\\ud800x","played_ms":20}}'
    )


@pytest.mark.parametrize("name", ["", 'say "hi"\\', "réponse-1", "a\nb\u2028", "{}"])
def test_mark_built_without_json_dumps_is_the_json_it_claims(name: str) -> None:
    """The echo is formatted by hand like media: any name the bot may send must come back
    exactly, next to an integer played_ms (never a string: it is ours, not a Twilio counter)."""
    stream = TwilioStreamProtocol('MZ"odd\\', CALL, ACCOUNT, INFO)
    stream.connected()
    stream.start()
    assert json.loads(stream.mark(name, 60)) == {
        "event": "mark",
        "sequenceNumber": "2",
        "streamSid": 'MZ"odd\\',
        "mark": {"name": name, "played_ms": 60},
    }


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.start(),
        lambda s: s.media(FRAME),
        lambda s: s.dtmf("1"),
        lambda s: s.mark("m", 0),
        lambda s: s.stop(),
    ],
)
def test_nothing_but_connected_comes_first(call: object) -> None:
    stream = TwilioStreamProtocol(SID, CALL, ACCOUNT, INFO)
    with pytest.raises(TwilioStreamStateError):
        call(stream)  # type: ignore[operator]


def test_nothing_follows_stop_and_start_is_sent_once() -> None:
    stream = started()
    with pytest.raises(TwilioStreamStateError, match="'start' on a stream that is streaming"):
        stream.start()
    stream.stop()
    assert stream.stopped
    for call in (lambda: stream.media(FRAME), lambda: stream.mark("m", 0), stream.stop):
        with pytest.raises(TwilioStreamStateError, match="stopped"):
            call()


# -- what the bot sends ----------------------------------------------------------------------


def test_media_from_the_bot_with_and_without_stream_sid() -> None:
    stream = started()
    payload = base64.b64encode(b"\x7e" * 333).decode()
    assert stream.receive_text(
        json.dumps({"event": "media", "streamSid": SID, "media": {"payload": payload}})
    ) == [PlayMedia(b"\x7e" * 333)]
    # pipecat sends no track/chunk/timestamp; some bots omit streamSid or send null.
    assert stream.receive_text(json.dumps({"event": "media", "media": {"payload": "fn5+"}})) == [
        PlayMedia(b"~~~")
    ]
    assert stream.receive_text(
        '{"event":"media","streamSid":null,"media":{"payload":"AA==","extra":1},"x":true}'
    ) == [PlayMedia(b"\x00")]


def test_mark_and_clear_from_the_bot() -> None:
    stream = started()
    assert stream.receive_text(
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "reply-3"}})
    ) == [PlayMark("reply-3")]
    assert stream.receive_text(json.dumps({"event": "clear", "streamSid": SID})) == [Clear()]


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("{not json", IGNORED_BAD_JSON, "invalid JSON (JSONDecodeError)"),
        ("[" * 100_000 + "]" * 100_000, IGNORED_BAD_JSON, "invalid JSON (RecursionError)"),
        ("[1, 2]", IGNORED_NOT_OBJECT, "JSON list"),
        ('"media"', IGNORED_NOT_OBJECT, "JSON str"),
        ('{"streamSid": "' + SID + '"}', IGNORED_MISSING_FIELD, "no string 'event'"),
        ('{"event": 5}', IGNORED_MISSING_FIELD, "no string 'event'"),
        ('{"event": "media"}', IGNORED_MISSING_FIELD, "media without a string media.payload"),
        (
            '{"event": "media", "media": "AAAA"}',
            IGNORED_MISSING_FIELD,
            "media without a string media.payload",
        ),
        (
            '{"event": "media", "media": {"payload": 12}}',
            IGNORED_MISSING_FIELD,
            "media without a string media.payload",
        ),
        ('{"event": "mark", "mark": {}}', IGNORED_MISSING_FIELD, "mark without a string mark.name"),
        ('{"event": "mark"}', IGNORED_MISSING_FIELD, "mark without a string mark.name"),
        ('{"event": "start"}', IGNORED_UNKNOWN_EVENT, "event 'start'"),
        ('{"event": "speak"}', IGNORED_UNKNOWN_EVENT, "event 'speak'"),
        (
            '{"event": "' + "x" * 100 + '"}',
            IGNORED_UNKNOWN_EVENT,
            "event '" + "x" * 56 + "...",  # the quoted value is cut to 60 characters
        ),
        (
            '{"event": "media", "media": {"payload": "AA=A"}}',
            IGNORED_BAD_BASE64,
            "payload of 4 characters",
        ),
        (
            '{"event": "media", "media": {"payload": "AAA"}}',
            IGNORED_BAD_BASE64,
            "payload of 3 characters",
        ),
        (
            '{"event": "media", "media": {"payload": "AA AA"}}',
            IGNORED_BAD_BASE64,
            "payload of 5 characters",
        ),
        (
            '{"event": "media", "media": {"payload": "AAé="}}',
            IGNORED_BAD_BASE64,
            "payload of 4 characters",
        ),
        (
            '{"event": "media", "streamSid": "MZother", "media": {"payload": "AAAA"}}',
            IGNORED_WRONG_STREAM,
            "streamSid 'MZother'",
        ),
        ('{"event": "clear", "streamSid": 7}', IGNORED_WRONG_STREAM, "streamSid 7"),
    ],
)
def test_every_ignored_kind(text: str, kind: str, detail: str) -> None:
    stream = started()
    assert stream.receive_text(text) == [Ignored(kind, detail, first=True)]


def test_binary_frames_are_ignored() -> None:
    stream = started()
    assert stream.receive_bytes(b"\x00\x01\x02") == [
        Ignored(IGNORED_BINARY, "binary frame of 3 bytes", first=True)
    ]


def test_first_is_set_once_per_kind_per_stream() -> None:
    stream = started()
    results = [
        stream.receive_bytes(b"a"),
        stream.receive_text("nope"),
        stream.receive_bytes(b"bb"),
        stream.receive_text("{"),
        stream.receive_text('{"event":"x"}'),
    ]
    assert results == [
        [Ignored(IGNORED_BINARY, "binary frame of 1 bytes", first=True)],
        [Ignored(IGNORED_BAD_JSON, "invalid JSON (JSONDecodeError)", first=True)],
        [Ignored(IGNORED_BINARY, "binary frame of 2 bytes", first=False)],
        [Ignored(IGNORED_BAD_JSON, "invalid JSON (JSONDecodeError)", first=False)],
        [Ignored(IGNORED_UNKNOWN_EVENT, "event 'x'", first=True)],
    ]
    # Another stream has its own memory of what it has seen.
    assert started().receive_bytes(b"a")[0].first is True


def test_bot_input_is_read_in_any_stage() -> None:
    """Reading never raises, not even before start or after stop (a late message)."""
    stream = TwilioStreamProtocol(SID, CALL, ACCOUNT, INFO)
    assert stream.receive_text('{"event":"clear"}') == [Clear()]
    stream.connected()
    stream.start()
    stream.stop()
    assert stream.receive_text('{"event":"media","media":{"payload":"AA=="}}') == [
        PlayMedia(b"\x00")
    ]
