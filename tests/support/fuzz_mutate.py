"""Byte- and line-level mutations shared by the fuzz generators (fuzz_sip, fuzz_media, fuzz_bot).

Why a module of its own: the SIP, RTP/RTCP and bot generators all need the same blind
mutations (bit flips, truncation, inserted junk) next to their protocol-aware ones, and a
mutation must depend only on the ``random.Random`` it is given, so an input is rebuilt exactly
from (seed, kind, index) when a node fails on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

__all__ = [
    "INTERESTING_INTS",
    "Mutation",
    "chunk_delete",
    "chunk_duplicate",
    "chunk_insert",
    "flip_bits",
    "input_rng",
    "interesting_int",
    "mutate_bytes",
    "random_bytes",
    "set_bytes",
    "truncate",
]

Mutation = Callable[[random.Random, bytes], bytes]

# Boundaries where parsers overflow, wrap or mis-sign: the integer values a mutation writes
# into a numeric field (as text in SIP/SDP, as bytes in RTP/RTCP).
INTERESTING_INTS: tuple[int, ...] = (
    -(2**63),
    -(2**31) - 1,
    -(2**31),
    -65536,
    -1,
    0,
    1,
    2,
    70,
    127,
    128,
    255,
    256,
    32767,
    32768,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**20,
    10**40,
)
# Bytes that mean something to a text protocol parser (separators, line ends, quoting, escapes)
# or that are invalid in UTF-8 on their own.
_SPECIAL_BYTES = b"\x00\x01\x7f\x80\xbf\xc0\xc1\xfe\xff\r\n\t :;,=<>\"'%\\/@[]{}?#&"
# Multi-byte sequences UTF-8 decoders must reject: overlong, surrogates, past U+10FFFF, lone
# continuation bytes, a truncated sequence.
BAD_UTF8: tuple[bytes, ...] = (
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x80\x80",
    b"\xe2\x82",
    b"\xff\xfe",
)

_STREAM_CODES = {"sip": 1, "rtp": 2, "rtcp": 3, "bot": 4, "sip_tcp": 5}


def input_rng(seed: int, kind: str, index: int, attempt: int = 0) -> random.Random:
    """The generator of input ``index`` of ``kind``: a pure function of its arguments.

    Seeding one ``Random`` per input (an integer seed, cheap) is what makes a single input
    reproducible without replaying the whole stream before it.
    """
    mixed = ((seed & 0xFFFFFFFF) << 40) | (_STREAM_CODES[kind] << 36) | (attempt << 32)
    return random.Random(mixed ^ index)


def interesting_int(rng: random.Random) -> int:
    """A boundary value most of the time, otherwise a random one of random width."""
    if rng.random() < 0.7:
        return rng.choice(INTERESTING_INTS)
    return rng.getrandbits(rng.choice((8, 16, 31, 32, 64, 100))) * rng.choice((1, -1))


def random_bytes(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high))


def flip_bits(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_bytes(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice(_SPECIAL_BYTES)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def chunk_insert(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    junk = rng.choice(
        (
            lambda: random_bytes(rng, 1, 64),
            lambda: rng.choice(BAD_UTF8),
            lambda: bytes([rng.choice(_SPECIAL_BYTES)]) * rng.randint(1, 300),
            lambda: str(interesting_int(rng)).encode(),
        )
    )()
    return data[:at] + junk + data[at:]


def chunk_delete(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 32) :]


def chunk_duplicate(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    at = rng.randrange(len(data))
    piece = data[at : at + rng.randint(1, 64)]
    return data[:at] + piece * rng.randint(2, 20) + data[at:]


_BLIND: Sequence[Mutation] = (
    flip_bits,
    set_bytes,
    truncate,
    chunk_insert,
    chunk_delete,
    chunk_duplicate,
)


def mutate_bytes(rng: random.Random, data: bytes, *, rounds: int = 3) -> bytes:
    """One to ``rounds`` blind mutations, chosen at random."""
    for _ in range(rng.randint(1, rounds)):
        data = rng.choice(_BLIND)(rng, data)
    return data
