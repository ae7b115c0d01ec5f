"""Seeded RTP and RTCP fuzz datagrams: valid packets broken where parsers trust a length.

Why these mutations: RTP and RTCP headers are mostly counts and lengths that say how far to
read (CSRC count, extension length in 32-bit words, padding length in the last octet, RTCP
length and report count, SDES item lengths), so every mutation here makes one of them lie,
or changes version and payload type, or cuts the packet short. Telephone events (RFC 4733)
get their own payload damage. A share are pure random bytes. Each input is a pure function of
(seed, kind, index), like the SIP stream (fuzz_sip).
"""

from __future__ import annotations

import random
import struct

from tests.support.fuzz_mutate import input_rng, interesting_int, mutate_bytes

__all__ = ["rtcp_datagram", "rtp_datagram"]

_PAYLOAD_TYPES = (0, 0, 0, 8, 101, 96, 13, 18, 34, 72, 127, 200 & 0x7F)


def _rtp(
    rng: random.Random,
    *,
    payload_type: int,
    payload: bytes,
    csrcs: int = 0,
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | csrcs
    second = payload_type | (0x80 if rng.random() < 0.1 else 0)
    head = struct.pack(
        "!BBHII", first, second, rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32)
    )
    head += b"".join(struct.pack("!I", rng.getrandbits(32)) for _ in range(csrcs))
    if extension is not None:
        head += extension
    tail = b""
    if padding:
        tail = bytes(padding - 1) + bytes([padding])
    return head + payload + tail


def _telephone_event(rng: random.Random) -> bytes:
    event = rng.choice((0, 5, 11, 15, 16, 99, 255))
    flags = rng.choice((0x00, 0x80, 0x40, 0xFF, 0x0A))
    duration = rng.choice((0, 1, 160, 800, 65535))
    body = struct.pack("!BBH", event, flags, duration)
    return body[: rng.choice((4, 4, 4, 3, 2, 0))] + (b"\x00" * rng.choice((0, 0, 4, 12)))


def _rtp_candidate(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randint(0, 400))
    payload_type = rng.choice(_PAYLOAD_TYPES)
    payload = (
        _telephone_event(rng)
        if payload_type == 101
        else rng.randbytes(rng.choice((160, 160, 80, 0, 1, 1200)))
    )
    op = rng.randrange(9)
    if op == 0:  # CSRC count with the list, or lying about it
        csrcs = rng.randint(1, 15)
        packet = _rtp(rng, payload_type=payload_type, payload=payload, csrcs=csrcs)
        if rng.random() < 0.5:
            packet = packet[: 12 + rng.randrange(4 * csrcs)]
    elif op == 1:  # extension: profile, length in words, data; the length may lie
        words = rng.randint(0, 4)
        claimed = words if rng.random() < 0.4 else rng.choice((words + 1, 0xFFFF, 255, 1000))
        ext = struct.pack("!HH", rng.choice((0xBEDE, 0x1000, 0)), claimed) + rng.randbytes(
            4 * words
        )
        packet = _rtp(rng, payload_type=payload_type, payload=payload, extension=ext)
    elif op == 2:  # padding: the last octet says how much, and may claim more than exists
        padding = rng.randint(1, 40)
        packet = _rtp(rng, payload_type=payload_type, payload=payload, padding=padding)
        claimed = rng.choice((0, 255, len(packet), len(packet) - 11, padding))
        packet = packet[:-1] + bytes([claimed & 0xFF])
    elif op == 3:  # version 0, 1 or 3
        packet = bytearray(_rtp(rng, payload_type=payload_type, payload=payload))
        packet[0] = (packet[0] & 0x3F) | (rng.choice((0, 1, 3)) << 6)
        packet = bytes(packet)
    elif op == 4:  # cut short, inside or just past the fixed header
        packet = _rtp(rng, payload_type=payload_type, payload=payload)
        packet = packet[: rng.choice((0, 1, 2, 11, 12, 13, rng.randrange(len(packet) + 1)))]
    elif op == 5:  # every flag at once, with lengths that disagree
        ext = struct.pack("!HH", 0xBEDE, rng.choice((1, 0xFFFF))) + b"\x10\x00\x00\x00"
        packet = _rtp(
            rng,
            payload_type=payload_type,
            payload=payload,
            csrcs=15,
            extension=ext,
            padding=rng.randint(1, 255),
        )
    elif op == 6:  # a second byte in the RTCP range: an RTP/RTCP mux receiver sees RTCP
        packet = bytearray(_rtp(rng, payload_type=payload_type, payload=payload))
        packet[1] = rng.randint(192, 223)
        packet = bytes(packet)
    else:
        packet = _rtp(rng, payload_type=payload_type, payload=payload)
    if rng.random() < 0.3:
        packet = mutate_bytes(rng, packet, rounds=2)
    return packet


def _rtcp_header(count: int, packet_type: int, length_words: int, padding: bool = False) -> bytes:
    return struct.pack(
        "!BBH", 0x80 | (0x20 if padding else 0) | (count & 0x1F), packet_type, length_words & 0xFFFF
    )


def _report_blocks(rng: random.Random, count: int) -> bytes:
    return b"".join(
        struct.pack(
            "!IB3sIIII",
            rng.getrandbits(32),
            rng.getrandbits(8),
            rng.randbytes(3),
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.getrandbits(32),
        )
        for _ in range(count)
    )


def _pad4(body: bytes) -> bytes:
    return body + bytes(-len(body) % 4)


def _rtcp_packet(rng: random.Random) -> bytes:
    kind = rng.choice(("sr", "rr", "sdes", "bye", "app", "fb", "xr", "unknown"))
    count = rng.randint(0, 3)
    if kind == "sr":
        body = struct.pack(
            "!IQII",
            rng.getrandbits(32),
            rng.getrandbits(64),
            rng.getrandbits(32),
            rng.getrandbits(32),
        )
        body = body[:4] + body[4:] + struct.pack("!I", rng.getrandbits(32))
        body += _report_blocks(rng, count)
        packet_type = 200
    elif kind == "rr":
        body = struct.pack("!I", rng.getrandbits(32)) + _report_blocks(rng, count)
        packet_type = 201
    elif kind == "sdes":
        chunks = b""
        for _ in range(count):
            items = b""
            for _ in range(rng.randint(0, 3)):
                text = rng.randbytes(rng.randint(0, 40))
                claimed = len(text) if rng.random() < 0.7 else rng.choice((0, 255, len(text) + 9))
                items += bytes([rng.randint(0, 9), claimed & 0xFF]) + text
            terminator = b"\x00" if rng.random() < 0.8 else b""
            chunks += _pad4(struct.pack("!I", rng.getrandbits(32)) + items + terminator)
        body, packet_type = chunks, 202
    elif kind == "bye":
        body = b"".join(struct.pack("!I", rng.getrandbits(32)) for _ in range(count))
        if rng.random() < 0.5:
            reason = rng.randbytes(rng.randint(0, 30))
            claimed = len(reason) if rng.random() < 0.6 else 255
            body += _pad4(bytes([claimed]) + reason)
        packet_type = 203
    elif kind == "app":
        body = struct.pack("!I4s", rng.getrandbits(32), b"FUZZ") + rng.randbytes(4 * count)
        packet_type = 204
    elif kind == "fb":
        body = rng.randbytes(8 + 4 * count)
        packet_type = rng.choice((205, 206))
    elif kind == "xr":
        body = struct.pack("!I", rng.getrandbits(32)) + rng.randbytes(4 * count)
        packet_type = 207
    else:
        body = rng.randbytes(4 * count)
        packet_type = rng.choice((0, 192, 199, 208, 223, 255))
    length = len(body) // 4
    if rng.random() < 0.3:  # the length field lies
        length = rng.choice((0, length + 1, max(0, length - 1), 0xFFFF, 1000))
    if rng.random() < 0.2:  # so does the report/source count
        count = rng.choice((31, count + 1, 0, 17))
    padding = rng.random() < 0.1
    if padding:
        body += bytes([0, 0, 0, rng.choice((0, 4, 8, 255))])
    return _rtcp_header(count, packet_type, length, padding) + body


def _rtcp_candidate(rng: random.Random) -> bytes:
    if rng.random() < 0.05:
        return rng.randbytes(rng.randint(0, 300))
    # RFC 3550 §6.1: a compound packet starts with SR or RR; fuzz keeps that shape mostly.
    data = b"".join(_rtcp_packet(rng) for _ in range(rng.choice((1, 2, 2, 3, 5, 30))))
    op = rng.randrange(5)
    if op == 0:
        data = data[: rng.randrange(len(data) + 1)]
    elif op == 1:
        data = (
            data[:1] + bytes([(data[1] & 0xC0) | rng.randrange(64)]) + data[2:]
            if len(data) > 2
            else data
        )
    elif op == 2:
        data = bytes([data[0] & 0x3F | (rng.choice((0, 1, 3)) << 6)]) + data[1:] if data else data
    elif op == 3:
        data = mutate_bytes(rng, data, rounds=2)
    if rng.random() < 0.05:
        data += struct.pack("!q", interesting_int(rng) & 0x7FFFFFFFFFFFFFFF)
    return data


def rtp_datagram(seed: int, index: int) -> bytes:
    """Input ``index`` of the RTP stream for ``seed``."""
    return _rtp_candidate(input_rng(seed, "rtp", index))


def rtcp_datagram(seed: int, index: int) -> bytes:
    """Input ``index`` of the RTCP stream for ``seed``."""
    return _rtcp_candidate(input_rng(seed, "rtcp", index))
