"""The interop harness reads peers' output correctly: a misread trace would pass a broken call.

Inputs are literal samples of what sipp 3.6.1, tshark 4.0, baresip 1.0.0 and kamcmd 5.6 wrote
on this kind of machine; no peer process runs here (sox does, for the correlation).
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import pytest

from tests.interop.audio import correlate, find_segments
from tests.interop.baresip import ControlError, netstring, parse_netstrings
from tests.interop.capture import (
    RtpSeen,
    StreamKey,
    dtmf_digits,
    dtmf_events,
    grid_errors_ms,
    heard_pcm,
    inter_departure_ms,
    parse_rtp_fields,
    percentiles,
    stream_stats,
)
from tests.interop.kamailio import Kamailio, parse_ul_dump
from tests.interop.ports import free_port
from tests.interop.process import PeerError
from tests.interop.sipp import call_timings, parse_short_messages, parse_stats

A = ("127.0.0.1", 20000)
B = ("127.0.0.1", 20002)

# -- sipp -------------------------------------------------------------------------------------

STATS_CSV = (
    "StartTime;CurrentTime;TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);"
    "FailedCall(P);FailedCall(C);FailedMaxUDPRetrans(P);FailedMaxUDPRetrans(C);"
    "Retransmissions(P);Retransmissions(C);\n"
    "2026-11-21\t09:42:35.348878\t1795254155.348878;2026-11-21\t09:42:35.349737\t1795254155.349737;"
    "0;0;0;0;0;0;0;0;0;0;\n"
    "2026-11-21\t09:42:35.348878\t1795254155.348878;2026-11-21\t09:42:46.321322\t1795254166.321322;"
    "10;1;0;7;0;2;0;1;0;3;\n"
)


def test_stats_come_from_the_last_row_cumulative_columns() -> None:
    stats = parse_stats(STATS_CSV)
    assert stats is not None
    assert (stats.successful, stats.failed, stats.retransmissions) == (7, 2, 3)
    assert (stats.created, stats.current) == (10, 1)
    assert stats.counter("FailedMaxUDPRetrans") == 1


def test_stats_without_a_data_row_are_none() -> None:
    assert parse_stats(STATS_CSV.splitlines()[0]) is None
    assert parse_stats("") is None


SHORT_LOG = """\
2026-11-21\t09:51:53.078533\t1795254713.078533\tS\t1-14131@127.0.0.1\tCSeq:1 INVITE\tINVITE sip:echo@127.0.0.1:22609 SIP/2.0
2026-11-21\t09:51:53.079241\t1795254713.079241\tR\t1-14131@127.0.0.1\tCSeq:1 INVITE\tSIP/2.0 100 Trying
2026-11-21\t09:51:53.080335\t1795254713.080335\tR\t1-14131@127.0.0.1\tCSeq:1 INVITE\tSIP/2.0 180 Ringing
2026-11-21\t09:51:53.386541\t1795254713.386541\tR\t1-14131@127.0.0.1\tCSeq:1 INVITE\tSIP/2.0 200 OK
2026-11-21\t09:51:53.386610\t1795254713.386610\tS\t1-14131@127.0.0.1\tCSeq:1 ACK\tACK sip:callee@127.0.0.1:22609;transport=UDP SIP/2.0
2026-11-21\t09:51:53.500000\t1795254713.500000\tS\t2-14131@127.0.0.1\tCSeq:1 INVITE\tINVITE sip:echo@127.0.0.1:22609 SIP/2.0
2026-11-21\t09:51:53.502000\t1795254713.502000\tR\t2-14131@127.0.0.1\tCSeq:1 INVITE\tSIP/2.0 401 Unauthorized
2026-11-21\t09:51:53.502100\t1795254713.502100\tS\t2-14131@127.0.0.1\tCSeq:1 ACK\tACK sip:echo@127.0.0.1:22609 SIP/2.0
2026-11-21\t09:51:53.503000\t1795254713.503000\tS\t2-14131@127.0.0.1\tCSeq:2 INVITE\tINVITE sip:echo@127.0.0.1:22609 SIP/2.0
2026-11-21\t09:51:53.520000\t1795254713.520000\tR\t2-14131@127.0.0.1\tCSeq:2 INVITE\tSIP/2.0 486 Busy Here
2026-11-21\t09:52:03.894716\t1795254723.894716\tR\t1-14131@127.0.0.1\tCSeq:1 BYE\tBYE sip:carrier@127.0.0.1:27070 SIP/2.0
2026-11-21\t09:52:03.894800\t1795254723.894800\tS\t1-14131@127.0.0.1\tCSeq:1 BYE\tSIP/2.0 200 OK
2026-11-21\t09:52:03.9
"""


def test_short_messages_keep_direction_cseq_and_first_line() -> None:
    messages = parse_short_messages(SHORT_LOG)
    assert len(messages) == 12  # the cut last line is dropped
    invite, trying = messages[0], messages[1]
    assert (invite.sent, invite.method, invite.status, invite.cseq_number) == (
        True,
        "INVITE",
        None,
        1,
    )
    assert (trying.sent, trying.method, trying.status, trying.is_response) == (
        False,
        "INVITE",
        100,
        True,
    )
    assert messages[9].first_line == "SIP/2.0 486 Busy Here"


def test_call_timings_measure_from_the_first_invite() -> None:
    first, second = call_timings(parse_short_messages(SHORT_LOG))
    assert first.call_id == "1-14131@127.0.0.1"
    assert first.ringing_ms == pytest.approx(1.802, abs=1e-3)
    assert first.answered_ms == pytest.approx(308.008, abs=1e-3)
    assert first.final_status == 200
    assert first.acked_at == pytest.approx(1795254713.386610)
    assert first.bye_at == pytest.approx(1795254723.894716)
    assert first.bye_by_us is False
    # a 401 is a challenge, not the answer: the final status is the 486 after it
    assert (second.final_status, second.ringing_ms, second.acked_at) == (486, None, None)
    assert second.answered_ms == pytest.approx(20.0, abs=1e-3)


# -- tshark fields and RTP analysis ------------------------------------------------------------

TSHARK_FIELDS = """\
1795254155.771808378\t127.0.0.1\t41100\t127.0.0.1\t41000\t0xca110000\t0\t0\t3296\t0\tffff7f
1795254155.791988674\t127.0.0.1\t41100\t127.0.0.1\t41000\t0xca110000\t0\t1\t3456\tTrue\t
1795254162.787185958\t127.0.0.1\t41000\t127.0.0.1\t41100\t0x01020305\t97\t1204\t24040\tFalse\t00:00:00:00
1795254162.8\t127.0.0.1\t41000\t127.0.0.1\t41100\t\t97\t1205\t24060\t0
"""


def test_tshark_fields_become_packets() -> None:
    packets = parse_rtp_fields(TSHARK_FIELDS)
    assert packets == [
        RtpSeen(1795254155.771808378, ("127.0.0.1", 41100), ("127.0.0.1", 41000), 0xCA110000, 0, 0,
                3296, False, b"\xff\xff\x7f"),
        RtpSeen(1795254155.791988674, ("127.0.0.1", 41100), ("127.0.0.1", 41000), 0xCA110000, 0, 1,
                3456, True, b""),
        RtpSeen(1795254162.787185958, ("127.0.0.1", 41000), ("127.0.0.1", 41100), 0x01020305, 97,
                1204, 24040, False, b"\x00\x00\x00\x00"),
    ]  # fmt: skip


def _packet(seq: int, ts: int, at: float, *, pt: int = 0, payload: bytes = b"") -> RtpSeen:
    return RtpSeen(at, A, B, 0x1234, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, False, payload)


def test_loss_counts_across_sequence_wrap_with_duplicates_and_reordering() -> None:
    seqs = [65533, 65534, 65535, 1, 0, 1, 3, 4]  # 0 late, 1 duplicated, 2 lost
    packets = [_packet(s, 160 * i, 0.02 * i) for i, s in enumerate(seqs)]
    stats = stream_stats(StreamKey(A, B, 0x1234), packets)
    assert (stats.expected, stats.packets, stats.lost) == (8, 7, 1)
    assert (stats.duplicates, stats.reordered) == (1, 1)
    assert stats.loss_times == (0.02 * 3, 0.02 * 6)  # 65535 -> 1 skips 0; 1 -> 3 skips 2


def test_timestamp_gaps_count_frames_a_sender_skipped() -> None:
    stamps = [0, 160, 320, 960, 1120]  # three frames missing between 320 and 960, seq unbroken
    packets = [_packet(i, ts, 0.02 * i) for i, ts in enumerate(stamps)]
    stats = stream_stats(StreamKey(A, B, 0x1234), packets)
    assert (stats.lost, stats.timestamp_gaps) == (0, 3)


def test_grid_error_is_departure_against_the_timestamp_slot() -> None:
    times = [1.000, 1.020, 1.043, 1.060, 1.100]  # third 3 ms late; the fifth skips a frame
    stamps = [0, 160, 320, 480, 800]
    packets = [_packet(i, ts, t) for i, (ts, t) in enumerate(zip(stamps, times, strict=True))]
    assert grid_errors_ms(packets) == pytest.approx([0.0, 0.0, 3.0, 0.0, 0.0], abs=1e-9)
    assert inter_departure_ms(packets) == pytest.approx([20.0, 23.0, 17.0, 40.0], abs=1e-9)


def test_grid_error_grows_for_a_sender_that_drifts() -> None:
    packets = [_packet(i, 160 * i, 0.0201 * i) for i in range(101)]  # sleeps 20.1 ms each time
    errors = grid_errors_ms(packets)
    assert errors[0] == pytest.approx(-5.0, abs=1e-9)  # phase = the median packet
    assert errors[-1] == pytest.approx(5.0, abs=1e-9)


def test_percentiles_are_nearest_rank() -> None:
    p = percentiles(float(v) for v in range(1, 101))
    assert p is not None
    assert (p.count, p.p50, p.p99, p.max) == (100, 50.0, 99.0, 100.0)
    assert percentiles([]) is None


def _event(seq: int, ts: int, at: float, event: int, end: bool, duration: int) -> RtpSeen:
    payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
    return _packet(seq, ts, at, pt=101, payload=payload)


def test_dtmf_events_group_by_timestamp_and_need_an_end() -> None:
    packets = [
        _event(10, 8000, 1.00, 5, False, 160),
        _event(11, 8000, 1.05, 5, False, 800),
        _event(12, 8000, 1.10, 5, True, 1600),
        _event(13, 8000, 1.11, 5, True, 1600),
        _event(14, 8000, 1.12, 5, True, 1600),
        _packet(15, 9600, 1.2, pt=97, payload=b"\x00\x00\x00\x00"),  # sipp no-op: other PT
        _event(16, 11200, 1.40, 11, False, 160),
        _event(17, 11200, 1.45, 11, True, 480),
        _event(18, 12800, 1.60, 1, False, 160),  # never ended
    ]
    events = dtmf_events(packets)
    assert [(e.digit, e.duration, e.ended, e.end_packets) for e in events] == [
        ("5", 1600, True, 3),
        ("#", 480, True, 1),
        ("1", 160, False, 0),
    ]
    assert dtmf_digits(events) == "5#"


def test_heard_pcm_places_frames_by_timestamp_and_leaves_silence_for_loss() -> None:
    ulaw_zero, ulaw_most_negative = b"\xff", b"\x00"  # G.711 μ-law: 0 and -32124
    packets = [
        _packet(0, 1000, 0.00, payload=ulaw_most_negative * 160),
        _packet(2, 1320, 0.04, payload=ulaw_zero * 159 + ulaw_most_negative),
        _packet(3, 1480, 0.06, pt=101, payload=b"\x05\x0a\x00\xa0"),  # not audio
    ]
    pcm = heard_pcm(packets, dst_port=B[1])
    samples = struct.unpack(f"={len(pcm) // 2}h", pcm)
    assert len(samples) == 480
    assert samples[:160] == (-32124,) * 160
    assert samples[160:320] == (0,) * 160  # the lost frame
    assert samples[320:] == (0,) * 159 + (-32124,)
    assert heard_pcm(packets, dst_port=A[1]) == b""


# -- audio correlation (sox) --------------------------------------------------------------------


def _noise(seed: int, samples: int, gain: float = 1.0) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.uniform(-12000, 12000) * gain) for _ in range(samples)]


def _pcm(samples: list[int]) -> bytes:
    return struct.pack(f"={len(samples)}h", *samples)


def test_correlation_finds_the_reference_behind_leading_silence() -> None:
    reference = _noise(1, 4000)
    recording = [0] * 2000 + [s // 2 for s in reference] + [0] * 3000  # half gain, 0.25 s late
    found = correlate(_pcm(reference), _pcm(recording))
    assert found.lag_s == 0.25
    assert found.peak > 0.99
    unrelated = correlate(_pcm(_noise(2, 4000)), _pcm(recording))
    assert unrelated.peak < 0.2


def test_correlation_of_a_partial_recording_is_its_share_of_the_reference() -> None:
    reference = _noise(3, 8000)
    found = correlate(_pcm(reference), _pcm(reference[:4000]))
    assert found.lag_s == 0.0
    assert found.peak == pytest.approx(0.5**0.5, abs=0.05)


def test_segments_survive_a_gap() -> None:
    reference = _noise(4, 16000)  # 2 s: four segments
    recording = reference[:8000] + [0] * 4000 + reference[12000:]  # third segment lost
    match = find_segments(_pcm(reference), _pcm(recording))
    assert (match.voiced, match.found, match.median_offset_s) == (4, 3, 0.0)


# -- baresip ctrl_tcp ---------------------------------------------------------------------------


def test_netstrings_split_complete_messages_and_keep_the_rest() -> None:
    event = b'{"event":true,"type":"CALL_ESTABLISHED","id":"f1f3","param":"sip:a@b"}'
    response = b'{"response":true,"ok":true,"data":"","token":"1"}'
    stream = b'%d:%s,%d:%s,12:{"eve' % (len(event), event, len(response), response)
    messages, rest = parse_netstrings(stream)
    assert messages == [
        {"event": True, "type": "CALL_ESTABLISHED", "id": "f1f3", "param": "sip:a@b"},
        {"response": True, "ok": True, "data": "", "token": "1"},
    ]
    assert rest == b'12:{"eve'
    assert parse_netstrings(netstring({"command": "dial"})) == ([{"command": "dial"}], b"")


@pytest.mark.parametrize("broken", [b"x1:{},", b"2:{}}", b"2:{],", b"99999999999"])
def test_a_broken_netstring_stream_is_an_error(broken: bytes) -> None:
    with pytest.raises(ControlError):
        parse_netstrings(broken)


# -- kamailio -------------------------------------------------------------------------------------

UL_DUMP = """\
{
\tDomains: {
\t\tDomain: {
\t\t\tDomain: location
\t\t\tSize: 1024
\t\t\tAoRs: {
\t\t\t\tInfo: {
\t\t\t\t\tAoR: bob
\t\t\t\t\tHashID: 7222211
\t\t\t\t\tContacts: {
\t\t\t\t\t\tContact: {
\t\t\t\t\t\t\tAddress: sip:bob-0x5644122e6b70@127.0.0.1:29219
\t\t\t\t\t\t\tExpires: 60
\t\t\t\t\t\t\tQ: -1
\t\t\t\t\t\t\tCall-ID: a5215272356f822e
\t\t\t\t\t\t\tUser-Agent: baresip v1.0.0 (x86_64/linux)
\t\t\t\t\t\t}
\t\t\t\t\t}
\t\t\t\t}
\t\t\t}
\t\t\tStats: {
\t\t\t\tRecords: 1
\t\t\t\tMax-Slots: 1
\t\t\t}
\t\t}
\t}
}
"""


def test_ul_dump_lists_each_contact_of_each_aor() -> None:
    (registration,) = parse_ul_dump(UL_DUMP)
    assert registration.aor == "bob"
    assert registration.contact == "sip:bob-0x5644122e6b70@127.0.0.1:29219"
    assert registration.expires == 60


def test_kamailio_config_copy_moves_port_and_control_socket(tmp_path: Path) -> None:
    peers = tmp_path / "peers"
    (peers / "kamailio").mkdir(parents=True)
    (peers / "kamailio" / "kamailio-registrar.cfg").write_text(
        '#!define CHALLENGE_INVITE 0\nlisten=udp:127.0.0.1:25060\nalias="127.0.0.1:25060"\n'
        'modparam("ctl", "binrpc", "unix:kamailio_test_ctl")\n'
    )
    proxy = Kamailio(tmp_path / "run", peers_dir=peers, port=23456, challenge_invite=True)
    assert proxy.config.read_text() == (
        '#!define CHALLENGE_INVITE 1\nlisten=udp:127.0.0.1:23456\nalias="127.0.0.1:23456"\n'
        f'modparam("ctl", "binrpc", "unix:{tmp_path / "run" / "kamailio.ctl"}")\n'
    )


def test_kamailio_refuses_a_config_it_cannot_move(tmp_path: Path) -> None:
    (tmp_path / "kamailio").mkdir()
    (tmp_path / "kamailio" / "kamailio-registrar.cfg").write_text("listen=udp:127.0.0.1:5060\n")
    with pytest.raises(PeerError, match="25060"):
        Kamailio(tmp_path / "run", peers_dir=tmp_path)


# -- ports ----------------------------------------------------------------------------------------


def test_free_ports_are_unbound_even_and_never_handed_out_twice() -> None:
    first = free_port(span=4, even=True)
    second = free_port(span=4, even=True)
    assert first % 2 == 0 and second % 2 == 0
    assert not set(range(first, first + 4)) & set(range(second, second + 4))
    for port in (first, first + 3):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))
