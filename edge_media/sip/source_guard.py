"""Bans and silent drops at the SIP edge: brute force, floods of garbage and known scanners.

Why: a node on a public address is probed all day. A source that keeps failing digest (a
password guesser) or keeps sending requests we cannot parse (a fuzzer) is banned for a while
and answered by silence, so it learns nothing and costs no parsing, no transaction state and no
DynamoDB read. Requests whose User-Agent names a known scanner (sipvicious's
``friendly-scanner`` and friends) are dropped without an answer: an answer is what such tools
collect. Sources we trust (operator CIDRs, loopback when trusted, trunks' inbound sources) are
never banned, rate limited or dropped here: a carrier's retries must never lock out its calls.

Why sans-I/O: like `rate_limit`, this is arithmetic on ``now`` and header text; `SipTransport`
asks it before parsing (ban) and after (scanner), the UA reports digest failures, and both pass
the loop's time in. A UDP source address can be forged, so a ban can be earned for someone
else; that is why bans expire, and why trusted sources are exempt.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias

from edge_media.sip.message import SipRequest

__all__ = [
    "DEFAULT_SCANNER_AGENTS",
    "SourceBans",
    "SourceGuard",
    "Strike",
]

logger = logging.getLogger("agera.sip.guard")

Strike: TypeAlias = Literal["auth", "malformed"]
DEFAULT_SCANNER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "sundayddr",
    "iWar",
)
MAX_TRACKED_SOURCES = 10_000  # strike counters and bans kept; bounds memory under floods
_KINDS: tuple[Strike, ...] = ("auth", "malformed")
_STRIKE_NAMES = {"auth": "failed digest attempts", "malformed": "malformed requests"}


class SourceBans:
    """``threshold`` strikes of one kind within ``window`` seconds ban a source for ``duration``.

    Pure (``now`` passed in). Each (source, kind) keeps the times of its last ``threshold``
    strikes, so the window slides; a ban clears the source's strikes. Memory is bounded by
    ``max_sources`` for counters and for bans: stale entries go first, then the oldest.
    """

    __slots__ = ("_bans", "_max_sources", "_strikes", "duration", "threshold", "window")

    def __init__(
        self,
        threshold: int,
        window: float,
        duration: float,
        *,
        max_sources: int = MAX_TRACKED_SOURCES,
    ) -> None:
        if threshold < 1 or window <= 0 or duration <= 0 or max_sources < 1:
            raise ValueError("threshold and max_sources at least 1, window and duration positive")
        self.threshold = threshold
        self.window = window
        self.duration = duration
        self._max_sources = max_sources
        self._strikes: dict[tuple[str, Strike], deque[float]] = {}
        self._bans: dict[str, float] = {}  # source -> banned until

    def __len__(self) -> int:
        """Sources banned now or not yet swept."""
        return len(self._bans)

    def banned(self, source: str, now: float) -> bool:
        """Whether ``source`` is banned at ``now`` (an expired ban is forgotten here)."""
        until = self._bans.get(source)
        if until is None:
            return False
        if now >= until:
            del self._bans[source]
            return False
        return True

    def strike(self, source: str, kind: Strike, now: float) -> bool:
        """Count one strike; True when it starts a ban (the caller logs it, once)."""
        if self.banned(source, now):
            return False
        key = (source, kind)
        times = self._strikes.get(key)
        if times is None:
            if len(self._strikes) >= self._max_sources:
                self._sweep_strikes(now)
            times = self._strikes[key] = deque(maxlen=self.threshold)
        times.append(now)
        if len(times) < self.threshold or now - times[0] >= self.window:
            return False
        for other in _KINDS:
            self._strikes.pop((source, other), None)
        if len(self._bans) >= self._max_sources:
            self._sweep_bans(now)
        self._bans[source] = now + self.duration
        return True

    def _sweep_strikes(self, now: float) -> None:
        window = self.window
        stale = [key for key, times in self._strikes.items() if now - times[-1] >= window]
        for key in stale:
            del self._strikes[key]
        if len(self._strikes) >= self._max_sources:
            del self._strikes[next(iter(self._strikes))]  # insertion order: the oldest

    def _sweep_bans(self, now: float) -> None:
        for source in [s for s, until in self._bans.items() if now >= until]:
            del self._bans[source]
        if len(self._bans) >= self._max_sources:
            del self._bans[next(iter(self._bans))]


class SourceGuard:
    """What `SipTransport` and the UA ask about a source; one per node, pure.

    ``trusted`` says whether a source is trusted (the node's live trust map): such a source is
    `exempt` from the rate limit, the per-source TCP cap, bans and the scanner filter.
    ``bans`` None turns banning off; an empty ``scanner_agents`` turns the filter off.
    """

    __slots__ = ("_scanners", "bans", "trusted")

    def __init__(
        self,
        *,
        bans: SourceBans | None = None,
        scanner_agents: Iterable[str] = DEFAULT_SCANNER_AGENTS,
        trusted: Callable[[str], bool] = lambda source: False,
    ) -> None:
        self.bans = bans
        self.trusted = trusted
        self._scanners = tuple(agent.lower() for agent in scanner_agents if agent)

    def exempt(self, source: str) -> bool:
        """Trusted: never rate limited, capped, banned or filtered."""
        return self.trusted(source)

    def banned(self, source: str, now: float) -> bool:
        """Whether requests from ``source`` are to be dropped unanswered."""
        bans = self.bans
        return bans is not None and bans.banned(source, now) and not self.exempt(source)

    def strike(self, source: str, kind: Strike, now: float) -> bool:
        """Count a failed digest attempt or a malformed request; True when a ban starts.

        The ban is logged here, once, with the source and the count: never a username, a
        header or anything else the peer sent.
        """
        bans = self.bans
        if bans is None or self.exempt(source) or not bans.strike(source, kind, now):
            return False
        logger.warning(
            "SIP source %s banned for %.0f s: %d %s within %.0f s",
            source,
            bans.duration,
            bans.threshold,
            _STRIKE_NAMES[kind],
            bans.window,
        )
        return True

    def scanner(self, request: SipRequest, source: str) -> str | None:
        """The scanner pattern ``request``'s User-Agent matches (drop it silently), or None."""
        scanners = self._scanners
        if not scanners:
            return None
        agent = request.headers.get("user-agent")
        if not agent:
            return None
        agent = agent.lower()
        for pattern in scanners:
            if pattern in agent:
                return None if self.exempt(source) else pattern
        return None
