"""Time parsing and serialising a typical INVITE with SDP (edge_media.sip.message).

Usage: python bench/sip_parse.py [iterations]

Prints median and p99 in microseconds, measured one call at a time with perf_counter_ns, for:
parse (what the transport pays per datagram: framing plus the checks of Via, CSeq, Call-ID,
From, To, Max-Forwards and Contact), parse plus building every header view a UA reads for a new
call, and serialise. For comparison, the sipmessage package took ~9.4 us to parse a 509-byte
INVITE+SDP on the reference box (docs/performance.md).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable

from edge_media.sip.message import SipRequest
from edge_media.sip.message_parse import parse_message

SDP = (
    b"v=0\r\n"
    b"o=- 3868 3868 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 16384 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=ptime:20\r\n"
)
INVITE = (
    b"INVITE sip:+15551230000@192.0.2.20:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:+15559870000@192.0.2.10:5060>\r\n"
    b"To: <sip:+15551230000@192.0.2.20>\r\n"
    b'From: "Caller" <sip:+15559870000@192.0.2.10>;tag=8a1f0c2e\r\n'
    b"Call-ID: 5f3c1d2e9a7b4c60@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP


def _measure(run: Callable[[], object], iterations: int) -> tuple[float, float]:
    for _ in range(min(iterations, 2000)):
        run()
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(iterations):
            start = clock()
            run()
            samples.append(clock() - start)
    finally:
        gc.enable()
    samples.sort()
    median = statistics.median(samples) / 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000
    return median, p99


def _parse_and_read() -> object:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    return (request.uri, request.from_, request.to, request.contacts, request.content_type)


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest) and request.serialize() == INVITE
    print(f"INVITE with SDP: {len(INVITE)} bytes, {iterations} iterations")
    for label, run in (
        ("parse", lambda: parse_message(INVITE)),
        ("parse + read all header views", _parse_and_read),
        ("serialise", request.serialize),
    ):
        median, p99 = _measure(run, iterations)
        print(f"{label:32} median {median:6.2f} us   p99 {p99:6.2f} us")


if __name__ == "__main__":
    main()
