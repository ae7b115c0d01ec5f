"""Tests for sdp_model, sdp_parse and sdp_offer_answer: peers' SDP, offer/answer, o= versions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edge_media.sip.sdp_model import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    SdpError,
    SessionDescription,
)
from edge_media.sip.sdp_offer_answer import (
    Answer,
    LocalMedia,
    NegotiatedMedia,
    NegotiationFailure,
    SdpSession,
    build_offer,
    negotiate_answer,
    process_answer,
)
from edge_media.sip.sdp_parse import parse_sdp

FIXTURES = Path(__file__).parent / "fixtures"
LOCAL = LocalMedia(address="127.0.0.1", rtp_port=40000, session_id=1234567890)
LOCAL6 = LocalMedia(address="::1", rtp_port=40000, session_id=1234567890)


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def fixture(name: str) -> SessionDescription:
    return parse_sdp(crlf(fixture_text(name)).encode())


def answer_ok(offer: SessionDescription, local: LocalMedia = LOCAL) -> Answer:
    result = negotiate_answer(offer, local)
    assert isinstance(result, Answer), result
    return result


def failure(result: object) -> NegotiationFailure:
    assert isinstance(result, NegotiationFailure), result
    return result


def sdp_text(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.sdp"))
ACCEPTED_OFFERS = [n for n in ALL_FIXTURES if n.endswith("_offer.sdp") and "g729" not in n]


# --------------------------------------------------------------------------------------------
# Parsing and serialisation
# --------------------------------------------------------------------------------------------


class TestRoundTrip:
    @pytest.mark.parametrize("name", ALL_FIXTURES)
    def test_serialize_gives_back_the_crlf_text(self, name: str) -> None:
        text = fixture_text(name)
        assert parse_sdp(text).serialize() == crlf(text)

    @pytest.mark.parametrize("name", ALL_FIXTURES)
    def test_lf_crlf_str_and_bytes_parse_alike(self, name: str) -> None:
        text = fixture_text(name)
        parsed = parse_sdp(text)
        assert parse_sdp(crlf(text)) == parsed
        assert parse_sdp(crlf(text).encode()) == parsed
        assert bytes(parsed) == crlf(text).encode()

    @pytest.mark.parametrize("name", ALL_FIXTURES)
    def test_every_truncation_parses_or_raises_sdp_error(self, name: str) -> None:
        data = crlf(fixture_text(name)).encode()
        outcomes = [parse_outcome(data[:end]) for end in range(len(data))]
        assert outcomes[:4] == ["SdpError"] * 4  # nothing up to "v=0\r"... is a description
        assert set(outcomes) == {"ok", "SdpError"}

    @pytest.mark.parametrize("name", ALL_FIXTURES)
    def test_single_byte_corruption_raises_only_sdp_error(self, name: str) -> None:
        data = crlf(fixture_text(name)).encode()
        outcomes = {
            parse_outcome(data[:position] + byte + data[position + 1 :])
            for position in range(len(data))
            for byte in (b"\x00", b"=", b":", b" ", b"\n", b"\xff", b"/", b"9")
        }
        assert outcomes == {"ok", "SdpError"}


def parse_outcome(data: bytes) -> str:
    """'ok' or 'SdpError'; any other exception escapes and fails the test."""
    try:
        parse_sdp(data)
    except SdpError:
        return "SdpError"
    return "ok"


class TestParsePeers:
    def test_sipp_uac_offer_fields(self) -> None:
        sdp = fixture("sipp_uac_audio_dtmf_offer.sdp")
        assert sdp.origin.username == "carrier"
        assert sdp.origin.session_id == "53655765"
        assert sdp.origin.session_version == 2353687637
        assert sdp.session_name == "sipp-uac"
        assert sdp.connection == Connection("IN", "IP4", "127.0.0.1")
        (audio,) = sdp.media
        assert (audio.media, audio.port, audio.proto) == ("audio", 27100, "RTP/AVP")
        assert audio.payload_types == (0, 96)
        assert audio.rtpmaps == {0: PCMU, 96: TELEPHONE_EVENT}
        assert audio.fmtps == {"96": "0-15"}
        assert audio.ptime == 20.0
        assert audio.direction is Direction.SENDRECV

    def test_baresip_offer_keeps_unknown_attributes_and_codecs(self) -> None:
        sdp = fixture("baresip_offer.sdp")
        assert sdp.attributes == (Attribute("tool", "baresip 1.0.0"),)
        (audio,) = sdp.media
        assert audio.formats == ("96", "9", "0", "8", "101")
        assert audio.codec_for(96) == Codec("opus", 48000, 2)
        assert audio.codec_for(9) == Codec("G722", 8000)
        assert audio.codec_for(101) is TELEPHONE_EVENT
        assert audio.rtcp_mux is True
        assert audio.bandwidths[0].bwtype == "AS"
        assert audio.bandwidths[0].bandwidth == 118
        assert Attribute("ssrc", "1538393812 cname:alice@127.0.0.1") in audio.attributes
        assert Attribute("label", "1") in audio.attributes

    def test_pjsua2_ipv6_media_level_connections(self) -> None:
        sdp = fixture("pjsua2_video_audio_offer.sdp")
        assert sdp.connection is None
        video, audio = sdp.media
        assert video.media == "video"
        assert video.codec_for(97) == Codec("H264", 90000)
        assert sdp.effective_connection(audio) == Connection("IN", "IP6", "::1")
        assert audio.rtcp == (4001, Connection("IN", "IP6", "::1"))
        assert audio.codec_for(96) == Codec("telephone-event", 16000)
        assert audio.codec_for(120) is TELEPHONE_EVENT

    def test_static_payload_types_need_no_rtpmap(self) -> None:
        sdp = parse_sdp(
            sdp_text(
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                "m=audio 5004 RTP/AVP 8 0 18 97",
            )
        )
        audio = sdp.media[0]
        assert [audio.codec_for(pt) for pt in audio.payload_types] == [
            PCMA,
            PCMU,
            Codec("G729", 8000),
            None,  # dynamic without rtpmap: unknown
        ]

    def test_rtpmap_name_is_case_insensitive(self) -> None:
        sdp = parse_sdp(
            sdp_text(
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                "m=audio 5004 RTP/AVP 0 101",
                "a=rtpmap:0 pcmu/8000/1",
                "a=rtpmap:101 Telephone-Event/8000",
            )
        )
        assert sdp.media[0].codec_for(0) is PCMU
        assert sdp.media[0].codec_for(101) is TELEPHONE_EVENT

    def test_lenient_layout(self) -> None:
        # Blank lines, trailing whitespace-only lines, a=/c= before t=, session-level ptime.
        text = (
            "v=0\n\no=- 7 8 IN IP4 127.0.0.1\ns= \na=ptime:30\nc=IN IP4 127.0.0.1\nt=0 0\n"
            "a=recvonly\nm=audio 5004 RTP/AVP 0\n   \n"
        )
        sdp = parse_sdp(text)
        audio = sdp.media[0]
        assert sdp.session_name == " "
        assert sdp.effective_ptime(audio) == 30.0
        assert audio.direction is None
        assert sdp.effective_direction(audio) is Direction.RECVONLY
        # Output is in RFC 8866 §5 order whatever the input order was.
        assert sdp.serialize() == sdp_text(
            "v=0",
            "o=- 7 8 IN IP4 127.0.0.1",
            "s= ",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "a=ptime:30",
            "a=recvonly",
            "m=audio 5004 RTP/AVP 0",
        )

    def test_rejected_stream_may_lack_connection_and_formats(self) -> None:
        sdp = parse_sdp(
            sdp_text(
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=-",
                "t=0 0",
                "m=video 0 RTP/AVP",
                "m=audio 5004 RTP/AVP 0",
                "c=IN IP4 127.0.0.1",
            )
        )
        assert sdp.media[0].port == 0
        assert sdp.media[0].formats == ()

    def test_non_rtp_formats_are_not_payload_types(self) -> None:
        sdp = parse_sdp(
            sdp_text(
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                "m=image 5008 udptl t38",
            )
        )
        assert sdp.media[0].formats == ("t38",)
        assert sdp.media[0].payload_types == ()

    def test_all_session_line_types_round_trip(self) -> None:
        text = sdp_text(
            "v=0",
            "o=jdoe 2890844526 2890842807 IN IP4 127.0.0.1",
            "s=SDP Seminar",
            "i=A Seminar on the session description protocol",
            "u=http://www.example.com/seminars/sdp.pdf",
            "e=j.doe@example.com (Jane Doe)",
            "p=+1 617 555-6011",
            "c=IN IP4 127.0.0.1",
            "b=CT:128",
            "t=2873397496 2873404696",
            "r=604800 3600 0 90000",
            "z=2882844526 -1h 2898848070 0",
            "k=prompt",
            "a=recvonly",
            "m=audio 49170 RTP/AVP 0",
            "i=main audio",
            "c=IN IP4 127.0.0.1",
            "b=AS:64",
            "k=prompt",
            "a=ptime:20",
        )
        sdp = parse_sdp(text)
        assert sdp.timings[0].repeats == ("604800 3600 0 90000",)
        assert sdp.media[0].information == "main audio"
        assert sdp.serialize() == text


MINIMAL = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]


class TestParseErrors:
    @pytest.mark.parametrize(
        ("lines", "message"),
        [
            ([], "empty SDP body"),
            (["o=- 1 1 IN IP4 127.0.0.1"], "line 1: SDP must start with v=0"),
            (["v=1", *MINIMAL[1:]], "line 1: SDP must start with v=0"),
            ([*MINIMAL, "v=0"], "line 6: v= appears more than once"),
            (["v=0", "s=-", "t=0 0"], "missing o= line"),
            (["v=0", "o=- 1 1 IN IP4 127.0.0.1", "t=0 0"], "missing s= line"),
            (["v=0", "o=- 1 IN IP4 127.0.0.1", "s=-"], "line 2: o=- 1 IN IP4 127.0.0.1 needs 6"),
            (["v=0", "o=- 1 x IN IP4 127.0.0.1", "s=-"], "o= session version 'x' is not"),
            ([*MINIMAL, "o=- 1 1 IN IP4 127.0.0.1"], "line 6: more than one o= line"),
            ([*MINIMAL, "x"], "line 6: 'x' is not '<type>=<value>'"),
            ([*MINIMAL, "y=foo"], "line 6: unknown line type 'y'"),
            ([*MINIMAL, "m=audio 5004 RTP/AVP 0", "t=0 0"], "t= is not allowed inside a media"),
            ([*MINIMAL, "m=audio 70000 RTP/AVP 0"], "m= port 70000 out of range 0-65535"),
            ([*MINIMAL, "m=audio 5004 RTP/AVP"], "lists no media formats"),
            ([*MINIMAL, "m=audio 5004"], "needs '<media> <port> <proto> <fmt> ...'"),
            ([*MINIMAL, "m=audio 5004 RTP/AVP 0 abc"], "m= payload type 'abc' is not"),
            ([*MINIMAL, "m=audio 5004 RTP/AVP 128"], "m= payload type 128 out of range"),
            ([*MINIMAL, "m=audio 5004/x RTP/AVP 0"], "m= port count 'x'"),
            (["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "m=audio 5004 RTP/AVP 0"], "no c= line"),
            ([*MINIMAL, "c=IN IP4 127.0.0.1"], "line 6: more than one c= line"),
            (["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4"], "c=IN IP4 needs"),
            ([*MINIMAL, "b=AS"], "b=AS needs '<bwtype>:<bandwidth>'"),
            ([*MINIMAL, "b=AS:x"], "b= bandwidth 'x' is not"),
            (["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0"], "t=0 needs '<start> <stop>'"),
            (["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "r=7d 1h"], "r= line before any t="),
            ([*MINIMAL, "a="], "a= has no attribute name"),
            ([*MINIMAL, "a=rtpmap:96"], "a=rtpmap:96 needs '<pt> <encoding>/<clock rate>'"),
            ([*MINIMAL, "a=rtpmap:96 opus"], "needs '<encoding>/<clock rate>[/<channels>]'"),
            ([*MINIMAL, "a=rtpmap:96 opus/0"], "a=rtpmap clock rate 0 out of range"),
            ([*MINIMAL, "a=rtpmap:300 opus/48000"], "a=rtpmap payload type 300 out of range"),
            ([*MINIMAL, "a=rtpmap:96 opus/48000/two"], "a=rtpmap channels 'two'"),
            ([*MINIMAL, "a=fmtp:"], "a=fmtp needs '<format> <parameters>'"),
            ([*MINIMAL, "a=ptime:abc"], "a=ptime:abc is not a number of milliseconds"),
            ([*MINIMAL, "a=ptime:0"], "a=ptime:0 must be positive"),
            ([*MINIMAL, "a=maxptime:-5"], "a=maxptime:-5 is not a number"),
            ([*MINIMAL, "a=rtcp:1 IN IP4"], "a=rtcp:1 IN IP4 needs '<port>"),
            ([*MINIMAL, "a=rtcp:99999"], "a=rtcp port 99999 out of range"),
            ([*MINIMAL, "a=sendonly", "a=recvonly"], "conflicting direction attributes"),
        ],
    )
    def test_malformed(self, lines: list[str], message: str) -> None:
        with pytest.raises(SdpError) as info:
            parse_sdp(sdp_text(*lines) if lines else "")
        assert message in str(info.value)

    def test_not_utf8(self) -> None:
        with pytest.raises(SdpError, match="not UTF-8"):
            parse_sdp(b"v=0\r\ns=\xff\xfe\r\n")

    def test_size_limit(self) -> None:
        with pytest.raises(SdpError, match="exceeds"):
            parse_sdp(sdp_text(*MINIMAL) + "a=x:" + "y" * 40000 + "\r\n")

    def test_line_limit(self) -> None:
        with pytest.raises(SdpError, match="more than 1024 lines"):
            parse_sdp(sdp_text(*MINIMAL, *["a=x"] * 1100))

    def test_media_limit(self) -> None:
        with pytest.raises(SdpError, match="more than 32 m= lines"):
            parse_sdp(sdp_text(*MINIMAL, *["m=audio 0 RTP/AVP 0"] * 33))

    def test_repeated_identical_direction_is_fine(self) -> None:
        sdp = parse_sdp(sdp_text(*MINIMAL, "a=sendonly", "a=sendonly"))
        assert sdp.direction is Direction.SENDONLY


# --------------------------------------------------------------------------------------------
# Answering offers (UAS)
# --------------------------------------------------------------------------------------------


class TestAnswerPeers:
    def test_sipp_uac_offer_literal_answer(self) -> None:
        result = answer_ok(fixture("sipp_uac_audio_dtmf_offer.sdp"))
        assert result.sdp.serialize() == sdp_text(
            "v=0",
            "o=- 1234567890 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 96",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:96 telephone-event/8000",  # sipp sends DTMF on 96: answer keeps 96
            "a=fmtp:96 0-15",
            "a=ptime:20",
            "a=sendrecv",
        )
        assert result.media == NegotiatedMedia(
            media_index=0,
            remote_address="127.0.0.1",
            remote_port=27100,
            remote_rtcp_address="127.0.0.1",
            remote_rtcp_port=27101,
            rtcp_mux=False,
            payload_type=0,
            codec=PCMU,
            dtmf_payload_type=96,
            dtmf_receive_payload_type=96,
            remote_ptime=20,
            direction=Direction.SENDRECV,
            peer_on_hold=False,
        )
        assert result.media.codec_name == "PCMU"
        assert result.body == result.sdp.serialize().encode()

    @pytest.mark.parametrize("name", ACCEPTED_OFFERS)
    def test_answers_reparse_to_the_same_description(self, name: str) -> None:
        offer = fixture(name)
        result = answer_ok(offer, LOCAL6 if offer.origin.addrtype == "IP6" else LOCAL)
        assert parse_sdp(result.body) == result.sdp
        assert len(result.sdp.media) == len(offer.media)

    def test_sipp_hold_is_answered_recvonly(self) -> None:
        # uac_hold.xml checks the answer with the regexp a=(recvonly|inactive).
        result = answer_ok(fixture("sipp_uac_hold_sendonly_offer.sdp"))
        assert result.media.direction is Direction.RECVONLY
        assert result.media.direction.sends is False
        assert result.media.peer_on_hold is True
        assert result.sdp.media[0].attributes[-1] == Attribute("recvonly")

    def test_sipp_resume_is_answered_sendrecv(self) -> None:
        result = answer_ok(fixture("sipp_uac_hold_resume_offer.sdp"))
        assert result.media.direction is Direction.SENDRECV
        assert result.media.peer_on_hold is False

    def test_baresip_offer_order_wins(self) -> None:
        # opus and G722 come first but are not ours; PCMU is the first codec we support.
        result = answer_ok(fixture("baresip_offer.sdp"))
        assert (result.media.payload_type, result.media.codec) == (0, PCMU)
        assert result.media.dtmf_payload_type == 101
        assert result.sdp.media[0].formats == ("0", "101")
        # rtcp-mux only when both sides want it
        assert result.media.rtcp_mux is False
        assert result.media.remote_rtcp_port == 10001
        assert not result.sdp.media[0].has_attribute("rtcp-mux")

    def test_baresip_rtcp_mux_when_we_support_it(self) -> None:
        local = replace(LOCAL, rtcp_mux=True)
        result = answer_ok(fixture("baresip_offer.sdp"), local)
        assert result.media.rtcp_mux is True
        assert (result.media.remote_rtcp_address, result.media.remote_rtcp_port) == (
            "127.0.0.1",
            10000,
        )
        assert result.sdp.media[0].has_attribute("rtcp-mux")

    def test_offerer_preference_beats_ours(self) -> None:
        # We prefer PCMU, the offer lists PCMA first: RFC 3264 §6.1 says keep the offer's.
        offer = replace_formats(fixture("baresip_offer.sdp"), ("8", "0", "101"))
        result = answer_ok(offer)
        assert (result.media.payload_type, result.media.codec) == (8, PCMA)

    def test_local_codec_set_limits_the_choice(self) -> None:
        offer = replace_formats(fixture("baresip_offer.sdp"), ("0", "8", "101"))
        result = answer_ok(offer, replace(LOCAL, codecs=(PCMA,)))
        assert (result.media.payload_type, result.media.codec) == (8, PCMA)

    def test_carrier_pcma(self) -> None:
        result = answer_ok(fixture("carrier_pcma_offer.sdp"))
        assert (result.media.payload_type, result.media.codec_name) == (8, "PCMA")
        assert result.media.dtmf_payload_type == 101
        assert result.media.remote_rtcp_port == 36001  # RFC 3605 a=rtcp
        assert result.sdp.media[0].formats == ("8", "101")

    def test_carrier_legacy_hold(self) -> None:
        result = answer_ok(fixture("carrier_pcma_legacy_hold_offer.sdp"))
        assert result.media.peer_on_hold is True
        assert result.media.remote_address == "0.0.0.0"
        assert result.media.direction is Direction.RECVONLY  # never send to 0.0.0.0
        # The answer still carries our real address (RFC 3264 §8.4 discourages 0.0.0.0).
        assert result.sdp.connection == Connection("IN", "IP4", "127.0.0.1")

    def test_pjsua2_video_rejected_audio_accepted(self) -> None:
        result = answer_ok(fixture("pjsua2_video_audio_offer.sdp"), LOCAL6)
        video, audio = result.sdp.media
        assert (video.media, video.port, video.proto, video.formats) == (
            "video",
            0,
            "RTP/AVP",
            ("97", "98"),
        )
        assert audio.port == 40000
        assert result.media.media_index == 1
        assert (result.media.payload_type, result.media.codec) == (8, PCMA)
        # telephone-event/16000 on 96 is skipped; the 8000 one on 120 is used.
        assert result.media.dtmf_payload_type == 120
        assert result.media.remote_address == "::1"
        assert (result.media.remote_rtcp_address, result.media.remote_rtcp_port) == ("::1", 4001)
        assert result.sdp.serialize() == sdp_text(
            "v=0",
            "o=- 1234567890 1 IN IP6 ::1",
            "s=-",
            "c=IN IP6 ::1",
            "t=0 0",
            "m=video 0 RTP/AVP 97 98",
            "m=audio 40000 RTP/AVP 8 120",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:120 telephone-event/8000",
            "a=fmtp:120 0-16",
            "a=ptime:20",
            "a=sendrecv",
        )

    def test_g729_only_is_488_305(self) -> None:
        result = failure(negotiate_answer(fixture("carrier_g729_only_offer.sdp"), LOCAL))
        assert result.status == 488
        assert result.warn_code == 305
        assert result.detail == "no common codec: offer has G729/8000, telephone-event/8000"
        assert result.warning("gw.example") == '305 gw.example "Incompatible media format"'


def replace_formats(sdp: SessionDescription, formats: tuple[str, ...]) -> SessionDescription:
    audio = replace(sdp.media[0], formats=formats)
    return replace(sdp, media=(audio, *sdp.media[1:]))


def offer_with(*media_lines: str, session: tuple[str, ...] = ()) -> SessionDescription:
    return parse_sdp(sdp_text(*MINIMAL, *session, *media_lines))


class TestAnswerRules:
    @pytest.mark.parametrize(
        ("offered", "answered", "peer_on_hold"),
        [
            ("sendrecv", Direction.SENDRECV, False),
            ("sendonly", Direction.RECVONLY, True),
            ("recvonly", Direction.SENDONLY, False),
            ("inactive", Direction.INACTIVE, True),
        ],
    )
    def test_direction_mirrors_rfc3264(
        self, offered: str, answered: Direction, peer_on_hold: bool
    ) -> None:
        result = answer_ok(offer_with("m=audio 5004 RTP/AVP 0", f"a={offered}"))
        assert result.media.direction is answered
        assert result.media.peer_on_hold is peer_on_hold
        assert result.sdp.media[0].attributes[-1] == Attribute(answered.value)

    def test_session_level_direction_applies(self) -> None:
        result = answer_ok(offer_with("m=audio 5004 RTP/AVP 0", session=("a=sendonly",)))
        assert result.media.direction is Direction.RECVONLY

    def test_media_level_direction_overrides_session(self) -> None:
        offer = offer_with("m=audio 5004 RTP/AVP 0", "a=sendrecv", session=("a=inactive",))
        assert answer_ok(offer).media.direction is Direction.SENDRECV

    def test_legacy_hold_with_recvonly_is_inactive(self) -> None:
        offer = parse_sdp(
            sdp_text(
                "v=0",
                "o=- 1 2 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 0.0.0.0",
                "t=0 0",
                "m=audio 5004 RTP/AVP 0",
                "a=recvonly",
            )
        )
        result = answer_ok(offer)
        assert result.media.direction is Direction.INACTIVE
        assert result.media.peer_on_hold is True

    @pytest.mark.parametrize(("ptime", "reported"), [("10", 10), ("30", 30), ("60", 60)])
    def test_peer_ptime_reported(self, ptime: str, reported: int) -> None:
        result = answer_ok(offer_with("m=audio 5004 RTP/AVP 0", f"a=ptime:{ptime}"))
        assert result.media.remote_ptime == reported
        assert Attribute("ptime", "20") in result.sdp.media[0].attributes

    def test_missing_ptime_defaults_to_20(self) -> None:
        assert answer_ok(offer_with("m=audio 5004 RTP/AVP 0")).media.remote_ptime == 20

    @pytest.mark.parametrize(
        ("attribute", "detail"),
        [
            ("a=ptime:5", "ptime 5 ms outside 10-60 ms"),
            ("a=ptime:90", "ptime 90 ms outside 10-60 ms"),
            ("a=maxptime:10", "maxptime 10 ms is below the 20 ms we send"),
        ],
    )
    def test_unusable_packetisation_is_305(self, attribute: str, detail: str) -> None:
        result = failure(negotiate_answer(offer_with("m=audio 5004 RTP/AVP 0", attribute), LOCAL))
        assert (result.warn_code, result.detail) == (305, detail)

    def test_video_only_offer_is_304(self) -> None:
        offer = offer_with("m=video 5006 RTP/AVP 96", "a=rtpmap:96 VP8/90000")
        result = failure(negotiate_answer(offer, LOCAL))
        assert (result.status, result.warn_code) == (488, 304)
        assert result.warning("gw") == '304 gw "Media type not available"'

    def test_all_audio_rejected_by_port_zero_is_304(self) -> None:
        result = failure(negotiate_answer(offer_with("m=audio 0 RTP/AVP 0"), LOCAL))
        assert result.warn_code == 304

    def test_srtp_only_is_302(self) -> None:
        offer = offer_with("m=audio 5004 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 x")
        result = failure(negotiate_answer(offer, LOCAL))
        assert (result.warn_code, result.detail) == (302, "transport RTP/SAVP not supported")

    @pytest.mark.parametrize(
        ("connection", "detail"),
        [
            ("c=IN IP6 ::1", "peer media is IP6, ours is IP4"),
            ("c=IN IP4 media.example.com", "'media.example.com' is not a unicast IP literal"),
            ("c=IN IP4 ::1", "connection address ::1 does not match IP4"),
            ("c=IN IP4 224.2.1.1/127", "is not a unicast IP literal"),
            ("c=IN IP4 224.2.1.1", "multicast 224.2.1.1 not supported"),
            ("c=ATM NSAP 47.0091", "network type ATM NSAP not supported"),
        ],
    )
    def test_unusable_address_is_301(self, connection: str, detail: str) -> None:
        offer = parse_sdp(
            sdp_text("v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", connection, "t=0 0")
            + "m=audio 5004 RTP/AVP 0\r\n"
        )
        result = failure(negotiate_answer(offer, LOCAL))
        assert result.warn_code == 301
        assert detail in result.detail

    def test_second_audio_stream_is_rejected_first_failure_skipped(self) -> None:
        offer = offer_with(
            "m=audio 5004 RTP/AVP 18",
            "m=audio 5006 RTP/AVP 8",
            "m=audio 5008 RTP/AVP 0",
        )
        result = answer_ok(offer)
        assert [m.port for m in result.sdp.media] == [0, 40000, 0]
        assert result.media.media_index == 1
        assert result.media.remote_port == 5006

    def test_failure_reports_first_audio_problem(self) -> None:
        offer = offer_with("m=audio 5004 RTP/SAVP 0", "m=audio 5006 RTP/AVP 18")
        assert failure(negotiate_answer(offer, LOCAL)).warn_code == 302

    @pytest.mark.parametrize(
        ("fmtp", "answered"),
        [
            (None, "0-15"),  # RFC 4733: no list means 0-15
            ("0-16", "0-16"),
            ("0-11,16,32-40", "0-11,16"),
            ("events", "0-15"),  # unreadable: treated as missing
            ("15-0", "0-15"),
            ("0-300", "0-15"),
        ],
    )
    def test_dtmf_event_lists(self, fmtp: str | None, answered: str) -> None:
        lines = ["m=audio 5004 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"]
        if fmtp is not None:
            lines.append(f"a=fmtp:101 {fmtp}")
        result = answer_ok(offer_with(*lines))
        assert Attribute("fmtp", f"101 {answered}") in result.sdp.media[0].attributes

    def test_dynamic_payload_type_without_rtpmap_is_skipped(self) -> None:
        result = answer_ok(offer_with("m=audio 5004 RTP/AVP 97 8"))
        assert (result.media.payload_type, result.media.codec) == (8, PCMA)

    def test_constructed_description_without_connection_is_301(self) -> None:
        offer = replace(fixture("sipp_uac_audio_dtmf_offer.sdp"), connection=None)
        result = failure(negotiate_answer(offer, LOCAL))
        assert (result.warn_code, result.detail) == (301, "stream has no c= line")

    def test_dtmf_without_common_events_is_dropped(self) -> None:
        offer = offer_with(
            "m=audio 5004 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 32-40",
        )
        result = answer_ok(offer)
        assert result.media.dtmf_payload_type is None
        assert result.sdp.media[0].formats == ("0",)

    def test_dtmf_disabled_locally(self) -> None:
        result = answer_ok(
            fixture("sipp_uac_audio_dtmf_offer.sdp"), replace(LOCAL, dtmf_payload_type=None)
        )
        assert result.media.dtmf_payload_type is None
        assert result.sdp.media[0].formats == ("0",)


# --------------------------------------------------------------------------------------------
# Our offers and their answers (UAC)
# --------------------------------------------------------------------------------------------


class TestOffer:
    def test_build_offer_literal(self) -> None:
        assert build_offer(LOCAL).serialize() == sdp_text(
            "v=0",
            "o=- 1234567890 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
        )

    def test_hold_offer_is_sendonly(self) -> None:
        offer = build_offer(LOCAL, Direction.SENDONLY)
        assert offer.media[0].direction is Direction.SENDONLY

    def test_sipp_uas_answer(self) -> None:
        result = process_answer(build_offer(LOCAL), fixture("sipp_uas_answer.sdp"))
        assert result == NegotiatedMedia(
            media_index=0,
            remote_address="127.0.0.1",
            remote_port=27000,
            remote_rtcp_address="127.0.0.1",
            remote_rtcp_port=27001,
            rtcp_mux=False,
            payload_type=0,
            codec=PCMU,
            dtmf_payload_type=101,
            dtmf_receive_payload_type=101,
            remote_ptime=20,
            direction=Direction.SENDRECV,
            peer_on_hold=False,
        )

    def test_baresip_answer_order_picks_pcma(self) -> None:
        result = process_answer(build_offer(LOCAL), fixture("baresip_answer.sdp"))
        assert isinstance(result, NegotiatedMedia)
        assert (result.payload_type, result.codec, result.remote_port) == (8, PCMA, 10002)

    def test_answer_with_only_unoffered_codec_fails(self) -> None:
        answer = replace_formats(fixture("sipp_uas_answer.sdp"), ("18",))
        result = failure(process_answer(build_offer(LOCAL), answer))
        assert (result.warn_code, result.detail) == (
            305,
            "answer has no codec we offered: G729/8000",
        )

    def test_answer_may_list_extra_formats(self) -> None:
        answer = replace_formats(fixture("sipp_uas_answer.sdp"), ("18", "0", "101"))
        result = process_answer(build_offer(LOCAL), answer)
        assert isinstance(result, NegotiatedMedia)
        assert result.payload_type == 0

    def test_answer_remapping_an_offered_pt_fails(self) -> None:
        answer = parse_sdp(
            fixture_text("sipp_uas_answer.sdp").replace("rtpmap:0 PCMU", "rtpmap:0 PCMA")
        )
        result = failure(process_answer(build_offer(LOCAL), answer))
        assert result.detail == "answer maps PT 0 to PCMA/8000, we offered PCMU/8000"

    def test_answer_with_other_dtmf_pt(self) -> None:
        # RFC 3264 §6.1 only says SHOULD keep the PT: we send on theirs, receive on ours.
        text = fixture_text("sipp_uas_answer.sdp").replace(" 101", " 110").replace(":101", ":110")
        result = process_answer(build_offer(LOCAL), parse_sdp(text))
        assert isinstance(result, NegotiatedMedia)
        assert (result.dtmf_payload_type, result.dtmf_receive_payload_type) == (110, 101)

    def test_answer_rejecting_audio_fails(self) -> None:
        answer = parse_sdp(fixture_text("sipp_uas_answer.sdp").replace("27000", "0"))
        result = failure(process_answer(build_offer(LOCAL), answer))
        assert result.detail == "peer rejected the audio stream"

    def test_answer_with_wrong_line_count_fails(self) -> None:
        answer = fixture("sipp_uas_answer.sdp")
        answer = replace(answer, media=(*answer.media, replace(answer.media[0], port=0)))
        result = failure(process_answer(build_offer(LOCAL), answer))
        assert result.detail == "answer has 2 m= lines, offer had 1"

    def test_recvonly_answer_to_our_hold(self) -> None:
        answer = parse_sdp(fixture_text("sipp_uas_answer.sdp").replace("sendrecv", "recvonly"))
        result = process_answer(build_offer(LOCAL, Direction.SENDONLY), answer)
        assert isinstance(result, NegotiatedMedia)
        assert result.direction is Direction.SENDONLY
        assert result.peer_on_hold is False

    @pytest.mark.parametrize(
        ("old", "new", "warn_code", "detail"),
        [
            ("RTP/AVP", "RTP/SAVP", 302, "answer changed transport to RTP/SAVP"),
            ("c=IN IP4 127.0.0.1", "c=IN IP6 ::1", 301, "peer media is IP6, ours is IP4"),
            ("a=ptime:20", "a=ptime:100", 305, "ptime 100 ms outside 10-60 ms"),
        ],
    )
    def test_unusable_answers(self, old: str, new: str, warn_code: int, detail: str) -> None:
        answer = parse_sdp(fixture_text("sipp_uas_answer.sdp").replace(old, new))
        result = failure(process_answer(build_offer(LOCAL), answer))
        assert (result.warn_code, result.detail) == (warn_code, detail)

    def test_answer_with_unknown_dynamic_format_is_tolerated(self) -> None:
        answer = replace_formats(fixture("sipp_uas_answer.sdp"), ("99", "0", "101"))
        result = process_answer(build_offer(LOCAL), answer)
        assert isinstance(result, NegotiatedMedia)
        assert result.payload_type == 0

    def test_legacy_hold_answer(self) -> None:
        text = fixture_text("sipp_uas_answer.sdp").replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
        result = process_answer(build_offer(LOCAL), parse_sdp(text))
        assert isinstance(result, NegotiatedMedia)
        assert (result.direction, result.peer_on_hold) == (Direction.RECVONLY, True)

    def test_offer_without_audio_is_a_caller_bug(self) -> None:
        offer = replace(build_offer(LOCAL), media=())
        with pytest.raises(ValueError, match="no active audio stream"):
            process_answer(offer, replace(fixture("sipp_uas_answer.sdp"), media=()))

    def test_inactive_answer_stops_both_ways(self) -> None:
        answer = parse_sdp(fixture_text("sipp_uas_answer.sdp").replace("sendrecv", "inactive"))
        result = process_answer(build_offer(LOCAL), answer)
        assert isinstance(result, NegotiatedMedia)
        assert result.direction is Direction.INACTIVE
        assert result.peer_on_hold is True


# --------------------------------------------------------------------------------------------
# o= versioning across a dialog (RFC 3264 §8)
# --------------------------------------------------------------------------------------------


class TestSdpSession:
    def test_sipp_hold_resume_versions(self) -> None:
        session = SdpSession(LOCAL)
        first = session.answer(fixture("sipp_uac_audio_dtmf_offer.sdp"))
        refresh = session.answer(fixture("sipp_uac_audio_dtmf_offer.sdp"))
        hold = session.answer(fixture("sipp_uac_hold_sendonly_offer.sdp"))
        resume = session.answer(fixture("sipp_uac_hold_resume_offer.sdp"))
        assert isinstance(first, Answer)
        assert isinstance(refresh, Answer)
        assert isinstance(hold, Answer)
        assert isinstance(resume, Answer)
        versions = [a.sdp.origin.session_version for a in (first, refresh, hold, resume)]
        assert versions == [1, 1, 2, 3]
        assert refresh.sdp == first.sdp  # unchanged SDP, unchanged version
        assert hold.media.direction is Direction.RECVONLY
        assert resume.media.direction is Direction.SENDRECV
        assert {a.sdp.origin.session_id for a in (first, hold, resume)} == {"1234567890"}
        assert session.version == 3

    def test_failed_negotiation_does_not_bump_version(self) -> None:
        session = SdpSession(LOCAL)
        session.answer(fixture("carrier_pcma_offer.sdp"))
        assert isinstance(
            session.answer(fixture("carrier_g729_only_offer.sdp")), NegotiationFailure
        )
        again = session.answer(fixture("carrier_pcma_offer.sdp"))
        assert isinstance(again, Answer)
        assert again.sdp.origin.session_version == 1

    def test_our_hold_and_resume_reoffers(self) -> None:
        session = SdpSession(replace(LOCAL, session_version=7))
        assert session.version is None
        initial = session.offer()
        assert initial.origin.session_version == 7
        answered = session.process_answer(fixture("sipp_uas_answer.sdp"))
        assert isinstance(answered, NegotiatedMedia)
        hold = session.offer(Direction.SENDONLY)
        assert (hold.origin.session_version, hold.media[0].direction) == (8, Direction.SENDONLY)
        held = session.process_answer(
            parse_sdp(fixture_text("sipp_uas_answer.sdp").replace("sendrecv", "recvonly"))
        )
        assert isinstance(held, NegotiatedMedia)
        assert held.direction is Direction.SENDONLY
        resume = session.offer()
        assert resume.origin.session_version == 9
        assert resume.media == initial.media

    def test_reoffer_keeps_rejected_lines(self) -> None:
        # RFC 3264 §8: m= lines are never removed; the rejected video stays with port 0.
        session = SdpSession(LOCAL6)
        session.answer(fixture("pjsua2_video_audio_offer.sdp"))
        reoffer = session.offer(Direction.SENDONLY)
        assert [(m.media, m.port) for m in reoffer.media] == [("video", 0), ("audio", 40000)]
        assert reoffer.origin.session_version == 2
        assert reoffer.media[1].formats == ("0", "8", "101")

    def test_origin_is_pinned_when_local_media_moves(self) -> None:
        session = SdpSession(LOCAL)
        first = session.answer(fixture("carrier_pcma_offer.sdp"))
        session.local = replace(LOCAL, rtp_port=40002, session_id=99, username="other")
        moved = session.answer(fixture("carrier_pcma_offer.sdp"))
        assert isinstance(first, Answer)
        assert isinstance(moved, Answer)
        assert str(moved.sdp.origin) == "- 1234567890 2 IN IP4 127.0.0.1"
        assert moved.sdp.media[0].port == 40002

    def test_process_answer_without_offer_is_a_caller_bug(self) -> None:
        with pytest.raises(RuntimeError, match="without an outstanding offer"):
            SdpSession(LOCAL).process_answer(fixture("sipp_uas_answer.sdp"))


class TestModel:
    @pytest.mark.parametrize(
        ("direction", "reverse"),
        [
            (Direction.SENDRECV, Direction.SENDRECV),
            (Direction.SENDONLY, Direction.RECVONLY),
            (Direction.RECVONLY, Direction.SENDONLY),
            (Direction.INACTIVE, Direction.INACTIVE),
        ],
    )
    def test_direction_reversed(self, direction: Direction, reverse: Direction) -> None:
        assert direction.reversed() is reverse

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"address": "gw.example"},
            {"rtp_port": 0},
            {"codecs": ()},
            {"codecs": (Codec("G722", 8000),)},
            {"dtmf_payload_type": 8},
            {"dtmf_events": "x"},
        ],
    )
    def test_local_media_rejects_bad_configuration(self, kwargs: dict[str, object]) -> None:
        base: dict[str, object] = {"address": "127.0.0.1", "rtp_port": 4000, "session_id": 1}
        with pytest.raises(ValueError, match="LocalMedia"):
            LocalMedia(**{**base, **kwargs})  # type: ignore[arg-type]

    def test_codec_str(self) -> None:
        assert str(Codec("opus", 48000, 2)) == "opus/48000/2"
        assert str(PCMU) == "PCMU/8000"
