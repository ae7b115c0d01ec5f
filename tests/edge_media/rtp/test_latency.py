"""The fixed log-spaced histogram behind a call's ``stats.slo`` percentiles (rtp/latency.py).

Known inputs give known percentiles, within one bucket (a factor 10^(1/20), about 12 %) above
the true value and never above the largest sample; nothing is ever lost to the edges.
"""

from __future__ import annotations

import math
import random

import pytest

from edge_media.rtp.latency import BINS, BINS_PER_DECADE, LatencyHistogram, upper_edge_ms

BUCKET = 10 ** (1 / BINS_PER_DECADE)  # the ratio of one bucket's upper edge to its lower


def histogram(samples_ms: list[float]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for value in samples_ms:
        hist.record(value / 1000)
    return hist


def assert_within_a_bucket(read: float | None, true: float) -> None:
    assert read is not None
    assert true <= read <= true * BUCKET * (1 + 1e-9), (read, true)


def test_an_empty_histogram_has_no_percentiles() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert hist.percentile_ms(0.5) is None and hist.percentile_ms(0.99) is None
    assert hist.max_ms is None


def test_one_to_a_hundred_ms_gives_p50_and_p99_within_a_bucket() -> None:
    samples = [float(ms) for ms in range(1, 101)]
    random.Random(7).shuffle(samples)  # order does not matter
    hist = histogram(samples)
    assert hist.count == 100
    assert_within_a_bucket(hist.percentile_ms(0.50), 50.0)
    assert_within_a_bucket(hist.percentile_ms(0.99), 99.0)
    assert hist.percentile_ms(1.0) == pytest.approx(100.0)  # capped at the largest sample
    assert hist.max_ms == pytest.approx(100.0)


def test_a_rare_slow_sample_moves_p99_only_when_it_is_over_one_percent() -> None:
    fast = [0.2] * 990
    hist = histogram([*fast, *[40.0] * 10])  # 1 %: p99 still among the fast ones
    assert_within_a_bucket(hist.percentile_ms(0.99), 0.2)
    hist = histogram([*fast, *[40.0] * 11])  # just over 1 %: p99 is the slow one
    assert hist.percentile_ms(0.99) == pytest.approx(40.0)
    assert_within_a_bucket(hist.percentile_ms(0.50), 0.2)


@pytest.mark.parametrize("true_ms", [0.013, 0.1, 0.77, 1.0, 3.3, 20.0, 123.4, 999.0, 9000.0])
def test_every_decade_reads_back_within_a_bucket(true_ms: float) -> None:
    # A single sample reads back as itself (the cap); a spread around it reads within a bucket.
    assert histogram([true_ms]).percentile_ms(0.5) == pytest.approx(true_ms)
    spread = histogram([true_ms * 0.5, true_ms, true_ms * 2])
    assert_within_a_bucket(spread.percentile_ms(0.5), true_ms)


def test_the_edges_keep_every_sample() -> None:
    hist = histogram([-3.0, 0.0, 0.001, 20_000.0])  # a clock read early, zero, 1 µs, 20 s
    assert hist.count == 4
    assert hist.bins[0] == 3 and hist.bins[BINS - 1] == 1
    assert hist.percentile_ms(0.5) == pytest.approx(0.01)  # the floor bucket's upper edge
    assert hist.percentile_ms(0.99) == pytest.approx(20_000.0)  # overflow: the largest sample
    assert upper_edge_ms(BINS - 1) == math.inf


def test_a_window_adds_only_what_was_recorded_after_the_snapshot() -> None:
    node = histogram([5.0] * 1000)  # before the call: the node was slow
    snapshot = node.snapshot()
    for _ in range(100):
        node.record(0.0003)  # during the call: 0.3 ms
    node.record(0.002)
    call = LatencyHistogram()
    call.add_since(node, snapshot)
    assert call.count == 101
    assert_within_a_bucket(call.percentile_ms(0.50), 0.3)
    assert_within_a_bucket(call.percentile_ms(1.0), 2.0)
    again = LatencyHistogram()
    again.add_since(node, node.snapshot())
    assert again.count == 0 and again.percentile_ms(0.99) is None


def test_recording_allocates_nothing_that_grows_with_the_call() -> None:
    hist = LatencyHistogram()
    bins = hist.bins
    for index in range(50_000):
        hist.record((index % 997) / 1e6)
    assert hist.bins is bins and len(bins) == BINS
