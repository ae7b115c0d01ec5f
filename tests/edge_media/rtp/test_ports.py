"""PortAllocator: even RTP ports, never one in use, round-robin from a seeded random start."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_media.rtp.ports import PortAllocator, PortsExhaustedError


def drain(allocator: PortAllocator) -> list[int]:
    return [allocator.allocate() for _ in range(allocator.capacity)]


def test_hands_out_every_even_port_of_the_range_once() -> None:
    allocator = PortAllocator(20000, 20009, rng=random.Random(3))
    ports = drain(allocator)
    assert sorted(ports) == [20000, 20002, 20004, 20006, 20008]
    assert allocator.capacity == 5 and allocator.in_use == 5 and allocator.available == 0


def test_odd_lower_bound_rounds_up_and_the_pair_must_fit() -> None:
    allocator = PortAllocator(20001, 20006, rng=random.Random(0))
    assert sorted(drain(allocator)) == [20002, 20004]  # 20006 has no 20007 for RTCP
    with pytest.raises(ValueError, match="at least one even/odd pair"):
        PortAllocator(20001, 20002)
    with pytest.raises(ValueError, match="at least one even/odd pair"):
        PortAllocator(80, 90)
    with pytest.raises(ValueError, match="at least one even/odd pair"):
        PortAllocator(65534, 65536)


def test_exhausts_then_recovers_after_a_release() -> None:
    allocator = PortAllocator(30000, 30005, rng=random.Random(1))
    ports = drain(allocator)
    with pytest.raises(PortsExhaustedError, match="all 3 RTP port pairs are in use"):
        allocator.allocate()
    allocator.release(ports[1])
    assert allocator.allocate() == ports[1]
    with pytest.raises(PortsExhaustedError):
        allocator.allocate()


def test_never_hands_out_a_port_in_use() -> None:
    allocator = PortAllocator(40000, 40019, rng=random.Random(7))
    held: set[int] = set()
    rng = random.Random(11)
    for _ in range(500):
        if held and (len(held) == allocator.capacity or rng.random() < 0.4):
            port = rng.choice(sorted(held))
            allocator.release(port)
            held.remove(port)
        else:
            port = allocator.allocate()
            assert port not in held
            assert port % 2 == 0 and 40000 <= port <= 40018
            held.add(port)
        assert allocator.in_use == len(held)
        assert all(allocator.is_allocated(p) for p in held)


def test_a_released_port_comes_back_only_after_the_others() -> None:
    allocator = PortAllocator(50000, 50007, rng=random.Random(5))
    first = allocator.allocate()
    allocator.release(first)
    later = [allocator.allocate() for _ in range(3)]
    assert first not in later
    assert sorted([*later, first]) == [50000, 50002, 50004, 50006]
    for port in later:
        allocator.release(port)
    assert allocator.allocate() == first  # the cursor wrapped round to it


def test_the_start_comes_from_the_injected_random_source() -> None:
    sequences = {
        tuple(drain(PortAllocator(20000, 29999, rng=random.Random(seed)))[:3])
        for seed in (1, 1, 2, 3)
    }
    assert len(sequences) == 3  # same seed, same ports; other seeds start elsewhere
    for sequence in sequences:
        assert [b - a for a, b in itertools.pairwise(sequence)] == [2, 2]


def test_releasing_an_unknown_port_is_ignored() -> None:
    allocator = PortAllocator(20000, 20003, rng=random.Random(0))
    allocator.release(20000)
    allocator.release(12345)
    assert allocator.in_use == 0
    assert sorted(drain(allocator)) == [20000, 20002]
