"""Wrap-around arithmetic for RTP sequence numbers (16 bit) and timestamps (32 bit).

Why: both counters wrap (a 20 ms stream wraps its sequence every 22 minutes), so "later than"
must be serial-number arithmetic (RFC 1982 §3.2), never a plain `>`. The comparison picks the
shorter way round the circle; at exactly half the circle the answer is "not greater" both ways.
"""

from __future__ import annotations

SEQ_MODULO = 1 << 16
SEQ_MASK = SEQ_MODULO - 1
SEQ_HALF = SEQ_MODULO >> 1
TS_MODULO = 1 << 32
TS_MASK = TS_MODULO - 1
TS_HALF = TS_MODULO >> 1


def seq_add(a: int, b: int) -> int:
    """`a + b` modulo 2**16 (b may be negative)."""
    return (a + b) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance from `b` to `a` in -32768..32767: positive when `a` is later."""
    return ((a - b + SEQ_HALF) & SEQ_MASK) - SEQ_HALF


def seq_gt(a: int, b: int) -> bool:
    """True when sequence number `a` is later than `b`."""
    return 0 < ((a - b) & SEQ_MASK) < SEQ_HALF


def ts_add(a: int, b: int) -> int:
    """`a + b` modulo 2**32 (b may be negative)."""
    return (a + b) & TS_MASK


def ts_diff(a: int, b: int) -> int:
    """Signed distance from `b` to `a` in -2**31..2**31-1: positive when `a` is later."""
    return ((a - b + TS_HALF) & TS_MASK) - TS_HALF


def ts_gt(a: int, b: int) -> bool:
    """True when timestamp `a` is later than `b`."""
    return 0 < ((a - b) & TS_MASK) < TS_HALF
