"""The pure pieces of functions.dashboard.security."""

from __future__ import annotations

import pytest

from functions.dashboard.security import (
    DashboardConfigError,
    SignInLimiter,
    is_loopback,
    session_secret,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_refuses_after_the_limit_until_the_window_moves_on() -> None:
    clock = Clock()
    limiter = SignInLimiter(3, 60, clock)
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") == 61
    assert limiter.retry_after("b") is None  # per client
    clock.now += 30
    assert limiter.retry_after("a") == 31
    clock.now += 31
    assert limiter.retry_after("a") is None


def test_a_success_clears_the_count() -> None:
    limiter = SignInLimiter(2, 60, Clock())
    limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    assert limiter.retry_after("a") is None


def test_the_limiter_forgets_the_oldest_client_past_its_bound(monkeypatch) -> None:
    monkeypatch.setattr(SignInLimiter, "MAX_TRACKED", 2)
    limiter = SignInLimiter(1, 60, Clock())
    for client in ("a", "b", "c"):
        limiter.failed(client)
    assert limiter.retry_after("a") is None
    assert limiter.retry_after("c") is not None


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("dash.example.com", False),
        ("localhost.example.com", False),
        ("127.0.0.2", False),
    ],
)
def test_loopback_hosts(host, loopback) -> None:
    assert is_loopback(host) is loopback


def test_session_secret() -> None:
    assert len(session_secret("")) >= 32
    assert session_secret("") != session_secret("")
    assert session_secret("k" * 32) == "k" * 32
    with pytest.raises(DashboardConfigError) as info:
        session_secret("too-short-secret")
    assert "too-short-secret" not in str(info.value)
