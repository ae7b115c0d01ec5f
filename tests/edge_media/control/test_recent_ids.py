from __future__ import annotations

import pytest

from edge_media.control.recent_ids import RecentIds


def test_an_added_id_is_seen_until_its_ttl_ends() -> None:
    ids = RecentIds(capacity=10, ttl_seconds=60.0)
    ids.add("cmd_1", now=100.0)
    assert ids.seen("cmd_1", now=100.0)
    assert ids.seen("cmd_1", now=159.9)
    assert not ids.seen("cmd_1", now=160.0)
    assert len(ids) == 0
    assert not ids.seen("cmd_2", now=100.0)


def test_capacity_drops_the_oldest_first() -> None:
    ids = RecentIds(capacity=3, ttl_seconds=1000.0)
    for n in range(5):
        ids.add(f"cmd_{n}", now=float(n))
    assert [ids.seen(f"cmd_{n}", now=5.0) for n in range(5)] == [False, False, True, True, True]
    assert len(ids) == 3


def test_adding_again_refreshes_age_and_order() -> None:
    ids = RecentIds(capacity=2, ttl_seconds=10.0)
    ids.add("a", now=0.0)
    ids.add("b", now=1.0)
    ids.add("a", now=8.0)  # a is now the newest
    ids.add("c", now=9.0)  # evicts b, the oldest
    assert (ids.seen("a", now=9.0), ids.seen("b", now=9.0), ids.seen("c", now=9.0)) == (
        True,
        False,
        True,
    )
    assert ids.seen("a", now=17.9)  # 8.0 + 10 s


def test_discard_forgets_an_id() -> None:
    ids = RecentIds()
    ids.add("cmd_1", now=0.0)
    ids.discard("cmd_1")
    ids.discard("never-added")
    assert not ids.seen("cmd_1", now=0.0)


@pytest.mark.parametrize(("capacity", "ttl"), [(0, 1.0), (1, 0.0)])
def test_bounds_must_be_positive(capacity: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        RecentIds(capacity=capacity, ttl_seconds=ttl)
