"""TCP framing: split messages, several per chunk, keep-alives, limits and error recovery."""

from __future__ import annotations

import random

from edge_media.sip.errors import SipParseError
from edge_media.sip.message import SipRequest, SipResponse, answer_parse_error
from edge_media.sip.message_parse import parse_message
from edge_media.sip.stream import (
    PONG,
    InvalidMessage,
    KeepAlivePing,
    KeepAlivePong,
    SipStreamReader,
    StreamEvent,
)

BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def _request(cseq: int, body: bytes = BODY, length: bytes | None = None) -> bytes:
    size = str(len(body)).encode() if length is None else length
    return (
        b"INVITE sip:bob@127.0.0.1:5060;transport=tcp SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1:5061;branch=z9hG4bK%d\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=a\r\n"
        b"To: <sip:bob@127.0.0.1>\r\n"
        b"Call-ID: stream-1\r\n"
        b"CSeq: %d INVITE\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: " % (cseq, cseq) + size + b"\r\n\r\n" + body
    )


RESPONSE = (
    b"SIP/2.0 100 Trying\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5061;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a\r\n"
    b"To: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: stream-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _cseqs(events: list[StreamEvent]) -> list[object]:
    out: list[object] = []
    for event in events:
        if isinstance(event, SipRequest | SipResponse):
            out.append(event.cseq.number)
        elif isinstance(event, InvalidMessage):
            out.append((event.error.status, event.fatal))
        else:
            out.append(type(event).__name__)
    return out


def test_byte_by_byte_gives_nothing_until_complete() -> None:
    data = _request(1)
    reader = SipStreamReader()
    for index in range(len(data) - 1):
        assert reader.feed(data[index : index + 1]) == []
    (message,) = reader.feed(data[-1:])
    assert message == parse_message(data)
    assert reader.buffered == 0


def test_several_messages_in_one_chunk_and_a_partial_tail() -> None:
    data = _request(1) + RESPONSE + _request(2, b"") + _request(3)
    reader = SipStreamReader()
    events = reader.feed(data[:-5])
    assert _cseqs(events) == [1, 1, 2]
    assert isinstance(events[1], SipResponse) and events[1].status == 100
    assert reader.buffered == len(_request(3)) - 5
    assert _cseqs(reader.feed(data[-5:])) == [3]


def test_random_chunking_gives_the_same_messages() -> None:
    stream = b"".join(_request(n, BODY * (n % 3)) for n in range(1, 30))
    expected = list(range(1, 30))
    rng = random.Random(5626)
    for _ in range(20):
        reader = SipStreamReader()
        events: list[StreamEvent] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 700)
            events += reader.feed(stream[pos : pos + step])
            pos += step
        assert _cseqs(events) == expected


def test_ping_is_answered_and_crlf_before_messages_is_skipped() -> None:
    reader = SipStreamReader()
    events = reader.feed(b"\r\n\r\n" + _request(1) + b"\r\n\r\n\r\n\r\n" + RESPONSE)
    assert _cseqs(events) == ["KeepAlivePing", 1, "KeepAlivePing", "KeepAlivePing", 1]
    assert PONG == b"\r\n"
    assert KeepAlivePing() == KeepAlivePing()


def test_ping_split_across_chunks_stays_a_ping() -> None:
    reader = SipStreamReader()
    assert reader.feed(b"\r") == []
    assert reader.feed(b"\n") == []
    assert reader.feed(b"\r") == []
    assert reader.feed(b"\n") == [KeepAlivePing()]


def test_lone_crlf_is_a_pong() -> None:
    server = SipStreamReader()
    assert server.feed(b"\r\n") == []  # could still become a ping
    assert _cseqs(server.feed(RESPONSE)) == ["KeepAlivePong", 1]
    client = SipStreamReader(expects_pongs=True)
    assert client.feed(b"\r\n") == [KeepAlivePong()]
    assert client.feed(b"\n") == []  # a stray LF is ignored like a leading CRLF
    assert _cseqs(client.feed(RESPONSE)) == [1]


def test_missing_content_length_is_fatal_on_a_stream() -> None:
    data = _request(1).replace(b"Content-Length: %d\r\n" % len(BODY), b"")
    reader = SipStreamReader()
    (event,) = reader.feed(data)
    assert isinstance(event, InvalidMessage) and event.fatal
    assert (event.error.status, event.error.reason) == (400, "Missing Content-Length on a stream")
    response = answer_parse_error(event.error, to_tag="s1")
    assert response is not None and response.status == 400
    assert reader.failed is event.error
    assert reader.feed(_request(2)) == []  # framing is lost: everything else is ignored


def test_bad_message_with_good_framing_is_not_fatal() -> None:
    bad = _request(1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    reader = SipStreamReader()
    events = reader.feed(bad + _request(2))
    assert _cseqs(events) == [(400, False), 2]
    invalid = events[0]
    assert isinstance(invalid, InvalidMessage)
    assert invalid.error.reason == "CSeq method BYE does not match request method INVITE"


def test_oversize_is_413_and_fatal() -> None:
    reader = SipStreamReader(max_message_size=1000)
    (event,) = reader.feed(_request(1, b"x" * 1000))
    assert isinstance(event, InvalidMessage) and event.fatal and event.error.status == 413
    endless = SipStreamReader(max_message_size=1000)
    assert endless.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"y" * 900) == []
    (event,) = endless.feed(b"y" * 200)
    assert isinstance(event, InvalidMessage)
    assert (event.error.status, event.error.reason) == (413, "Header section too large")
    assert endless.buffered == 0


def test_garbage_header_section_is_fatal() -> None:
    reader = SipStreamReader()
    (event,) = reader.feed(b"\x00\xff garbage\r\n\r\n")
    assert isinstance(event, InvalidMessage) and event.fatal
    assert isinstance(event.error, SipParseError) and event.error.status == 400


def test_negative_content_length_is_fatal() -> None:
    reader = SipStreamReader()
    (event,) = reader.feed(_request(1, length=b"-5"))
    assert isinstance(event, InvalidMessage) and event.fatal
    assert event.error.reason == "Malformed Content-Length '-5'"


def test_bad_response_with_good_framing_is_not_fatal() -> None:
    reader = SipStreamReader()
    broken = RESPONSE.replace(b"SIP/2.0 100 Trying", b"SIP/2.0 1000 Trying")
    events = reader.feed(broken + RESPONSE)
    assert _cseqs(events) == [(400, False), 1]
    invalid = events[0]
    assert isinstance(invalid, InvalidMessage)
    assert invalid.error.reason == "Malformed status code '1000'"
    assert invalid.error.request_headers is None
