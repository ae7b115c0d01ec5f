"""Timer values of RFC 3261 Table 4 and the deadline queue the transaction layer fires from."""

from __future__ import annotations

import pytest

from edge_media.sip.transaction_timers import DeadlineQueue, TimerConfig, is_reliable


def test_defaults_are_table_4() -> None:
    config = TimerConfig()
    assert (config.t1, config.t2, config.t4, config.d) == (0.5, 4.0, 5.0, 32.0)
    assert config.timeout == 32.0  # 64*T1: B, F, H, J, L, M


def test_unreliable_transport_timers() -> None:
    config = TimerConfig()
    assert config.retransmit(reliable=False) == 0.5  # A, E, G start at T1
    assert config.timer_d(reliable=False) == 32.0
    assert config.timer_i(reliable=False) == 5.0  # T4
    assert config.timer_j(reliable=False) == 32.0  # 64*T1
    assert config.timer_k(reliable=False) == 5.0  # T4


def test_reliable_transport_timers_are_off_or_zero() -> None:
    # §17.1.1.2 / §17.1.2.2 / §17.2.1 / §17.2.2: "zero seconds for reliable transports".
    config = TimerConfig()
    assert config.retransmit(reliable=True) is None
    assert config.timer_d(reliable=True) == 0.0
    assert config.timer_i(reliable=True) == 0.0
    assert config.timer_j(reliable=True) == 0.0
    assert config.timer_k(reliable=True) == 0.0
    assert config.timeout == 32.0  # B, F, H still run on TCP


def test_timeout_follows_t1() -> None:
    assert TimerConfig(t1=0.25, t2=4.0).timeout == 16.0


@pytest.mark.parametrize(
    ("t1", "t2", "t4", "d"),
    [(0.0, 4.0, 5.0, 32.0), (-1.0, 4.0, 5.0, 32.0), (1.0, 0.5, 5.0, 32.0), (0.5, 4.0, -1.0, 32.0),
     (0.5, 4.0, 5.0, -1.0), (float("nan"), 4.0, 5.0, 32.0)],
)  # fmt: skip
def test_invalid_config(t1: float, t2: float, t4: float, d: float) -> None:
    with pytest.raises(ValueError):
        TimerConfig(t1=t1, t2=t2, t4=t4, d=d)


@pytest.mark.parametrize(
    ("transport", "reliable"),
    [("UDP", False), ("udp", False), ("TCP", True), ("TLS", True), ("SCTP", True), ("WS", True),
     ("wss", True)],
)  # fmt: skip
def test_is_reliable(transport: str, reliable: bool) -> None:
    assert is_reliable(transport) is reliable


def test_queue_pops_in_deadline_order() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.set("b", 2.0)
    queue.set("a", 1.0)
    queue.set("c", 3.0)
    assert queue.next_deadline() == 1.0
    assert queue.pop_due(2.5) == "a"
    assert queue.pop_due(2.5) == "b"
    assert queue.pop_due(2.5) is None
    assert queue.next_deadline() == 3.0
    assert len(queue) == 1


def test_queue_equal_deadlines_pop_in_set_order() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    for key in ("x", "y", "z"):
        queue.set(key, 5.0)
    assert [queue.pop_due(5.0) for _ in range(4)] == ["x", "y", "z", None]


def test_queue_reset_replaces_deadline() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.set("a", 1.0)
    queue.set("a", 4.0)
    assert queue.get("a") == 4.0
    assert queue.next_deadline() == 4.0  # the stale 1.0 entry is skipped
    assert queue.pop_due(3.0) is None
    assert queue.pop_due(4.0) == "a"
    assert queue.next_deadline() is None


def test_queue_cancel() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.set("a", 1.0)
    queue.set("b", 2.0)
    queue.cancel("a")
    queue.cancel("never-set")
    assert "a" not in queue
    assert "b" in queue
    assert queue.get("a") is None
    assert queue.next_deadline() == 2.0
    assert queue.pop_due(10.0) == "b"
    assert len(queue) == 0
