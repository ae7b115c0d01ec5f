from __future__ import annotations

from edge_media.control.backoff import backoff_delay


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base=0.5, cap=3.0) for n in range(0, 7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert backoff_delay(10_000, base=1.0, cap=20.0) == 20.0
