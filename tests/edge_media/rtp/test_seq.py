from __future__ import annotations

import pytest

from edge_media.rtp.seq import seq_add, seq_diff, seq_gt, ts_add, ts_diff, ts_gt


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(65535, 1, 0), (65535, 2, 1), (0, -1, 65535), (100, 5, 105), (1, -3, 65534)],
)
def test_seq_add(a: int, b: int, expected: int) -> None:
    assert seq_add(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (0, 65535, 1),
        (65535, 0, -1),
        (5, 3, 2),
        (3, 5, -2),
        (7, 7, 0),
        (32767, 0, 32767),
        (32768, 0, -32768),  # half the circle: not "later" either way
        (0, 32768, -32768),
    ],
)
def test_seq_diff(a: int, b: int, expected: int) -> None:
    assert seq_diff(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (0, 65535, True),
        (65535, 0, False),
        (2, 1, True),
        (1, 1, False),
        (32767, 0, True),
        (32768, 0, False),
        (0, 32768, False),
    ],
)
def test_seq_gt(a: int, b: int, expected: bool) -> None:
    assert seq_gt(a, b) is expected


def test_timestamp_helpers_wrap_at_32_bits() -> None:
    assert ts_add(0xFFFFFF60, 160) == 0
    assert ts_add(0, -160) == 0xFFFFFF60
    assert ts_diff(80, 0xFFFFFFB0) == 160
    assert ts_diff(0xFFFFFFB0, 80) == -160
    assert ts_diff(0x80000000, 0) == -(1 << 31)
    assert ts_gt(80, 0xFFFFFFB0) is True
    assert ts_gt(0xFFFFFFB0, 80) is False
    assert ts_gt(0x7FFFFFFF, 0) is True
    assert ts_gt(0x80000000, 0) is False
