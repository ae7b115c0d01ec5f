"""The sans-I/O parts of the SIP edge's protection: per-trunk trust, bans, scanners, misses.

Time is passed in everywhere, so every window and expiry is checked to the edge.
"""

from __future__ import annotations

import logging

import pytest

from edge_media.sip.acl import ANYWHERE, SourceTrust, TrustMap
from edge_media.sip.message import SipRequest
from edge_media.sip.negative_cache import UnknownUsers
from edge_media.sip.source_guard import SourceBans, SourceGuard

# -- TrustMap: which source may call which account's numbers -------------------------------------


def test_a_trunk_source_is_trusted_for_its_own_account_only() -> None:
    trust = TrustMap(trunk_sources=[("203.0.113.0/24", "acc_a"), ("198.51.100.7", "acc_b")])
    assert trust.lookup("203.0.113.9") == SourceTrust(frozenset({"acc_a"}))
    assert trust.lookup("198.51.100.7") == SourceTrust(frozenset({"acc_b"}))
    assert trust.lookup("198.51.100.8") is None
    assert trust.lookup("203.0.114.1") is None
    found = trust.lookup("203.0.113.9")
    assert found is not None and found.may_reach("acc_a") and not found.may_reach("acc_b")


def test_a_source_in_several_accounts_trunks_may_reach_all_of_them() -> None:
    trust = TrustMap(
        trunk_sources=[
            ("203.0.113.0/24", "acc_a"),
            ("203.0.113.7/32", "acc_b"),
            ("203.0.0.0/16", "acc_c"),
            ("203.0.113.0/24", "acc_d"),  # the same network in two accounts' trunks
        ]
    )
    assert trust.lookup("203.0.113.7") == SourceTrust(
        frozenset({"acc_a", "acc_b", "acc_c", "acc_d"})
    )
    assert trust.lookup("203.0.113.8") == SourceTrust(frozenset({"acc_a", "acc_c", "acc_d"}))
    assert trust.lookup("203.0.9.9") == SourceTrust(frozenset({"acc_c"}))


def test_operator_sources_and_loopback_reach_any_account() -> None:
    trust = TrustMap(
        ["192.0.2.0/24"], [("192.0.2.0/25", "acc_a"), ("::1/128", "acc_b")], trust_loopback=True
    )
    for source in ("192.0.2.5", "192.0.2.200", "127.0.0.1", "127.9.9.9", "::1"):
        found = trust.lookup(source)
        assert found == ANYWHERE, source
        assert found.may_reach("any account")
    assert TrustMap(["192.0.2.0/24"]).lookup("127.0.0.1") is None


def test_ipv6_mapped_and_scoped_sources() -> None:
    trust = TrustMap(
        trunk_sources=[("2001:db8:1::/48", "acc_a"), ("::ffff:198.51.100.0/120", "acc_b")]
    )
    assert trust.lookup("2001:db8:1:ffff::1") == SourceTrust(frozenset({"acc_a"}))
    assert trust.lookup("2001:db8:2::1") is None
    assert trust.lookup("fe80::1%eth0") is None
    # An IPv4 source seen as v4-mapped IPv6, and a mapped CIDR matching plain IPv4: one network.
    assert trust.lookup("198.51.100.9") == SourceTrust(frozenset({"acc_b"}))
    assert trust.lookup("::ffff:198.51.100.9") == SourceTrust(frozenset({"acc_b"}))
    v4 = TrustMap(trunk_sources=[("198.51.100.0/24", "acc_c")])
    assert v4.lookup("::ffff:198.51.100.1") == SourceTrust(frozenset({"acc_c"}))


def test_garbage_sources_are_untrusted_and_an_empty_map_is_false() -> None:
    trust = TrustMap(trunk_sources=[("0.0.0.0/0", "acc_a")])
    assert trust.lookup("not an ip") is None
    assert trust.allows("8.8.8.8")
    assert not TrustMap()
    assert TrustMap(trust_loopback=True)


def test_lookups_are_memoised_within_bounds() -> None:
    trust = TrustMap(trunk_sources=[("10.0.0.0/8", "acc_a")])
    for index in range(5000):
        trust.lookup(f"10.0.{index // 256}.{index % 256}")
    assert len(trust._memo) <= 4096
    assert trust.lookup("10.1.2.3") == SourceTrust(frozenset({"acc_a"}))


# -- SourceBans: N strikes in a window ------------------------------------------------------------


def test_threshold_strikes_within_the_window_ban_until_the_duration_passes() -> None:
    bans = SourceBans(threshold=3, window=10.0, duration=60.0)
    assert [bans.strike("1.2.3.4", "auth", t) for t in (0.0, 1.0, 2.0)] == [False, False, True]
    assert bans.banned("1.2.3.4", 2.0)
    assert bans.banned("1.2.3.4", 61.9)
    assert not bans.strike("1.2.3.4", "auth", 30.0)  # no new ban while banned
    assert not bans.banned("1.2.3.4", 62.0)
    assert len(bans) == 0  # forgotten once expired
    assert not bans.banned("5.6.7.8", 2.0)  # other sources are not affected
    # After the ban the count starts again from zero.
    assert [bans.strike("1.2.3.4", "auth", t) for t in (63.0, 64.0)] == [False, False]


def test_the_window_slides() -> None:
    bans = SourceBans(threshold=3, window=10.0, duration=60.0)
    # Three strikes, but never three within 10 s of each other.
    for now in (0.0, 6.0, 12.0, 18.0, 24.0):
        assert not bans.strike("a", "auth", now)
    assert bans.strike("a", "auth", 25.0)  # 18, 24, 25


def test_kinds_count_apart() -> None:
    bans = SourceBans(threshold=2, window=10.0, duration=5.0)
    assert not bans.strike("a", "auth", 0.0)
    assert not bans.strike("a", "malformed", 0.5)
    assert bans.strike("a", "malformed", 1.0)
    assert not bans.strike("a", "auth", 7.0)  # the ban cleared the auth strike too


def test_ban_memory_is_bounded() -> None:
    bans = SourceBans(threshold=1, window=10.0, duration=100.0, max_sources=3)
    for index in range(10):
        assert bans.strike(f"10.0.0.{index}", "malformed", float(index))
        assert len(bans) <= 3
    counters = SourceBans(threshold=5, window=10.0, duration=100.0, max_sources=3)
    for index in range(10):
        counters.strike(f"10.0.0.{index}", "auth", 0.0)
        assert len(counters._strikes) <= 3


@pytest.mark.parametrize(
    ("threshold", "window", "duration"), [(0, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, 0.0)]
)
def test_ban_settings_must_make_sense(threshold: int, window: float, duration: float) -> None:
    with pytest.raises(ValueError):
        SourceBans(threshold, window, duration)


# -- SourceGuard: exemptions, the ban log, scanners ---------------------------------------------


def options(user_agent: str | None) -> SipRequest:
    return SipRequest.build(
        "OPTIONS",
        "sip:127.0.0.1",
        from_="<sip:probe@127.0.0.1>;tag=1",
        to="<sip:127.0.0.1>",
        call_id="c1",
        cseq=1,
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
        extra_headers=[("User-Agent", user_agent)] if user_agent else [],
    )


def test_trusted_sources_are_never_banned(caplog: pytest.LogCaptureFixture) -> None:
    guard = SourceGuard(
        bans=SourceBans(2, 10.0, 60.0), trusted=lambda source: source == "198.51.100.7"
    )
    caplog.set_level(logging.WARNING, "agera.sip.guard")
    for now in (0.0, 1.0, 2.0):
        assert not guard.strike("198.51.100.7", "auth", now)
    assert not guard.banned("198.51.100.7", 3.0)
    assert not guard.strike("203.0.113.9", "auth", 0.0)
    assert guard.strike("203.0.113.9", "auth", 1.0)
    assert not guard.strike("203.0.113.9", "auth", 2.0)
    assert guard.banned("203.0.113.9", 3.0)
    bans = [r.getMessage() for r in caplog.records]
    assert bans == ["SIP source 203.0.113.9 banned for 60 s: 2 failed digest attempts within 10 s"]
    # A source trusted later (a trunk added) is let through even while its ban runs.
    guard.trusted = lambda source: True
    assert not guard.banned("203.0.113.9", 4.0)


def test_without_bans_nothing_is_banned() -> None:
    guard = SourceGuard(bans=None)
    for now in range(20):
        assert not guard.strike("a", "malformed", float(now))
    assert not guard.banned("a", 20.0)


@pytest.mark.parametrize(
    "agent",
    [
        "friendly-scanner",
        "sipvicious/0.3.4",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "sundayddr",
        "IWAR",
    ],
)
def test_known_scanners_are_named(agent: str) -> None:
    guard = SourceGuard()
    assert guard.scanner(options(agent), "203.0.113.9") is not None
    assert SourceGuard(trusted=lambda source: True).scanner(options(agent), "a") is None
    assert SourceGuard(scanner_agents=()).scanner(options(agent), "203.0.113.9") is None


@pytest.mark.parametrize("agent", [None, "Linphone/5.2", "Asterisk PBX 20.1", "baresip v3"])
def test_ordinary_user_agents_pass(agent: str | None) -> None:
    assert SourceGuard().scanner(options(agent), "203.0.113.9") is None


# -- UnknownUsers: the negative cache --------------------------------------------------------------


def test_a_miss_is_remembered_for_the_ttl() -> None:
    cache = UnknownUsers(ttl=10.0)
    assert not cache.known_missing("100", 0.0)
    cache.missed("100", 0.0)
    assert cache.known_missing("100", 0.0)
    assert cache.known_missing("100", 9.99)
    assert not cache.known_missing("100", 10.0)
    assert len(cache) == 0
    cache.missed("101", 20.0)
    cache.forget("101")
    assert not cache.known_missing("101", 20.0)


def test_the_cache_is_bounded_and_sheds_expired_entries() -> None:
    cache = UnknownUsers(ttl=10.0, max_users=3)
    for index in range(10):
        cache.missed(f"u{index}", 0.0)
        assert len(cache) <= 3
    assert cache.known_missing("u9", 1.0) and not cache.known_missing("u0", 1.0)
    cache.missed("late", 50.0)  # everything older has expired: swept on the way
    assert len(cache) == 1


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = UnknownUsers(ttl=0.0)
    cache.missed("100", 0.0)
    assert not cache.known_missing("100", 0.0)
    with pytest.raises(ValueError):
        UnknownUsers(ttl=-1.0)
