"""DTMF in SIP INFO: application/dtmf-relay and application/dtmf, both ways."""

from __future__ import annotations

import pytest

from edge_media.sip.errors import SipParseError
from edge_media.sip.info_dtmf import (
    DTMF,
    DTMF_RELAY,
    KEYS,
    MAX_DURATION_MS,
    InfoDtmf,
    InfoDtmfError,
    build_dtmf,
    build_dtmf_relay,
    dtmf_of_info,
    parse_dtmf,
    parse_dtmf_relay,
    parse_info_dtmf,
)
from edge_media.sip.message import SipRequest
from edge_media.sip.message_parse import parse_message

INFO_HEAD = (
    b"INFO sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-info1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:carrier@127.0.0.1>;tag=caller-tag\r\n"
    b"To: <sip:bot@127.0.0.1>;tag=gw-tag\r\n"
    b"Call-ID: info-1@127.0.0.1\r\n"
    b"CSeq: 2 INFO\r\n"
)


def info(content_type: bytes | None, body: bytes) -> SipRequest:
    head = INFO_HEAD
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    message = parse_message(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert isinstance(message, SipRequest)
    return message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"Signal=5\r\nDuration=160\r\n", InfoDtmf("5", 160)),
        (b"Signal=5\r\nDuration=160", InfoDtmf("5", 160)),
        (b"signal = #\nDURATION= 250\n", InfoDtmf("#", 250)),
        (b"Signal=*\rDuration=100\r", InfoDtmf("*", 100)),
        (b"\r\n  Signal=1  \r\n\r\nVolume=10\r\nDuration=0160\r\n", InfoDtmf("1", 160)),
        (b"Signal=10\r\nDuration=100\r\n", InfoDtmf("*", 100)),
        (b"Signal=11\r\nDuration=100\r\n", InfoDtmf("#", 100)),
        (b"Signal=12\r\n", InfoDtmf("A")),
        (b"Signal=d\r\n", InfoDtmf("D")),
        (b"Signal=0\r\nDuration=soon\r\n", InfoDtmf("0")),
        (b"Signal=9\r\nDuration=99999999999999999999\r\n", InfoDtmf("9", MAX_DURATION_MS)),
        (b"Signal=9\r\nDuration=60001\r\n", InfoDtmf("9", MAX_DURATION_MS)),
    ],
)
def test_dtmf_relay_bodies(body: bytes, expected: InfoDtmf) -> None:
    assert parse_dtmf_relay(body) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "400 No Signal line in dtmf-relay body"),
        (b"Duration=160\r\n", "400 No Signal line in dtmf-relay body"),
        (b"Signal=5\r\nSignal=6\r\n", "400 Several Signal lines in dtmf-relay body"),
        (b"Signal=E\r\n", "400 Unknown DTMF key 'E' in dtmf-relay Signal"),
        (b"Signal=16\r\n", "400 Unknown DTMF key '16' in dtmf-relay Signal"),
        (b"Signal=\r\n", "400 Unknown DTMF key '' in dtmf-relay Signal"),
        (b"Signal=5\r\nhello\r\n", "400 Malformed dtmf-relay line (no '=')"),
        ("Signal=5\r\nNote=é\r\n".encode(), "400 dtmf-relay body is not ASCII"),
        (b"Signal=5\r\n" + b"X=1\r\n" * 200, "400 dtmf-relay body too large"),
    ],
)
def test_bad_dtmf_relay_bodies_are_400(body: bytes, reason: str) -> None:
    with pytest.raises(InfoDtmfError) as info_error:
        parse_dtmf_relay(body)
    assert str(info_error.value) == reason
    assert info_error.value.status == 400 and info_error.value.headers == ()


@pytest.mark.parametrize(
    ("body", "digit"),
    [(b"5", "5"), (b"#\r\n", "#"), (b" 11 ", "#"), (b"10", "*"), (b"a", "A"), (b"15", "D")],
)
def test_dtmf_bodies(body: bytes, digit: str) -> None:
    assert parse_dtmf(body) == InfoDtmf(digit)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "400 Empty application/dtmf body"),
        (b"\r\n", "400 Empty application/dtmf body"),
        (b"16", "400 Unknown DTMF key '16' in application/dtmf body"),
        (b"55", "400 Unknown DTMF key '55' in application/dtmf body"),
        (b"Signal=5", "400 Unknown DTMF key 'Signal=5' in application/dtmf body"),
        (b"x" * 40, "400 Unknown DTMF key 'xxxxxxxxxxxxxxxx...' in application/dtmf body"),
    ],
)
def test_bad_dtmf_bodies_are_400(body: bytes, reason: str) -> None:
    with pytest.raises(InfoDtmfError) as info_error:
        parse_dtmf(body)
    assert str(info_error.value) == reason


def test_other_body_types_are_415_with_accept() -> None:
    for content_type in (None, "text/plain", "application/dtmf-relay-x"):
        with pytest.raises(InfoDtmfError) as info_error:
            parse_info_dtmf(content_type, b"Signal=5")
        assert info_error.value.status == 415
        assert info_error.value.headers == (("Accept", "application/dtmf-relay, application/dtmf"),)


def test_info_requests_from_the_wire() -> None:
    relay = info(b"application/dtmf-relay", b"Signal=7\r\nDuration=200\r\n")
    assert dtmf_of_info(relay) == InfoDtmf("7", 200)
    with_params = info(b"Application/DTMF; charset=us-ascii", b"#")
    assert dtmf_of_info(with_params) == InfoDtmf("#")
    assert dtmf_of_info(info(None, b"")) is None  # a keep-alive INFO gets a 200
    with pytest.raises(InfoDtmfError) as info_error:
        dtmf_of_info(info(b"application/sdp", b"v=0\r\n"))
    assert info_error.value.status == 415
    # A malformed Content-Type never reaches dtmf_of_info: the parser answers it 400.
    with pytest.raises(SipParseError) as parse_error:
        info(b"dtmf", b"5")
    assert (parse_error.value.status, parse_error.value.reason) == (
        400,
        "Malformed Content-Type header",
    )


def test_building_bodies() -> None:
    assert build_dtmf_relay("5") == b"Signal=5\r\nDuration=160\r\n"
    assert build_dtmf_relay("*", 250) == b"Signal=*\r\nDuration=250\r\n"
    assert build_dtmf_relay("b", 80) == b"Signal=B\r\nDuration=80\r\n"
    assert build_dtmf("#") == b"#"
    assert build_dtmf("c") == b"C"
    for bad in ("E", "", "55", "10"):
        with pytest.raises(ValueError, match="not a DTMF key"):
            build_dtmf(bad)
    with pytest.raises(ValueError, match="duration out of range"):
        build_dtmf_relay("1", 0)
    with pytest.raises(ValueError, match="duration out of range"):
        build_dtmf_relay("1", MAX_DURATION_MS + 1)


def test_every_key_round_trips_through_an_info_request() -> None:
    for key in KEYS:
        for content_type, body in (
            (DTMF_RELAY, build_dtmf_relay(key, 120)),
            (DTMF, build_dtmf(key)),
        ):
            request = SipRequest.build(
                "INFO",
                "sip:carrier@127.0.0.1:5080",
                from_="<sip:bot@127.0.0.1>;tag=gw-tag",
                to="<sip:carrier@127.0.0.1>;tag=caller-tag",
                call_id="info-rt@127.0.0.1",
                cseq=3,
                via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-rt",
                body=body,
                content_type=content_type,
            )
            parsed = parse_message(bytes(request))
            assert isinstance(parsed, SipRequest)
            expected = InfoDtmf(key, 120 if content_type == DTMF_RELAY else None)
            assert dtmf_of_info(parsed) == expected
