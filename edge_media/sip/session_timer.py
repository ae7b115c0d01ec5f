"""RFC 4028 session timers: header parsing, the UAS and UAC negotiations, and the timer itself.

Why: a carrier that loses a call without a BYE (a crashed SBC, a NAT binding gone) would leave
the gateway paying for a bot on a dead line forever. A session timer bounds that: somebody
re-INVITEs or UPDATEs every interval/2, and the other side hangs up when that stops.

Everything here is sans-I/O. The UA feeds a received INVITE/UPDATE to `negotiate_as_uas` and
puts the returned headers into its 2xx (or answers 422), or builds an offer with `uac_offer`
(or `SessionTimer.offer` for an in-dialog refresh), sends its `headers()` and gives the 2xx or
422 back to it. The resulting `SessionTimer` is a deadline: the UA arms one timer at
`next_deadline()` and calls `on_deadline(now)`, which says "refresh" or "expire" (send BYE).
A successful refresh produces a new `SessionTimer` through the same negotiation, so there is no
"reset" call: the UA replaces its timer (or drops it when the negotiation turned timers off).

``refresher=uac|uas`` names the roles in the transaction that carried the negotiation, not in
the dialog (§7.2: "If the parameter contains the value 'uac', the UAC will perform them"), so
the state keeps ``we_refresh`` and each new offer writes the role from its own point of view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import parse_params
from edge_media.sip.message import SipMessage, SipRequest, SipResponse

__all__ = [
    "DEFAULT_SESSION_INTERVAL",
    "MAX_422_RETRIES",
    "MAX_DELTA_SECONDS",
    "MIN_SESSION_INTERVAL",
    "TIMER_OPTION_TAG",
    "DeadlineAction",
    "Refresher",
    "SessionExpires",
    "SessionIntervalTooSmall",
    "SessionTimer",
    "SessionTimerAnswer",
    "SessionTimerOffer",
    "SessionTimerPolicy",
    "min_se_of",
    "negotiate_as_uas",
    "parse_min_se",
    "parse_session_expires",
    "requires_timer",
    "session_expires_of",
    "supports_timer",
    "uac_offer",
]

# §3 / §7.1: the option tag a UA lists in Supported (or Require) when it implements timers.
TIMER_OPTION_TAG: Final = "timer"
# §4 and §5: "MUST NOT be less than 90 seconds"; also the Min-SE assumed when it is absent.
MIN_SESSION_INTERVAL: Final = 90
# §4: "It is RECOMMENDED that this value be 1800 seconds".
DEFAULT_SESSION_INTERVAL: Final = 1800
# §10: the side not refreshing sends its BYE "slightly before the session expiration. The
# minimum of 32 seconds and one third of the session interval is RECOMMENDED."
BYE_MARGIN_CAP: Final = 32
BYE_MARGIN_FRACTION: Final = 3
# §7.4/§10: "It is RECOMMENDED that this refresh be sent once half the session interval has
# elapsed."
REFRESH_FRACTION: Final = 2
# How many 422 answers we follow with a larger interval before giving up on the request. Each
# retry is a whole INVITE round trip; two cover a proxy and the UAS raising the floor in turn.
MAX_422_RETRIES: Final = 2
# delta-seconds is bounded like Expires (RFC 3261 §20.19: "between 0 and (2**32)-1"); longer
# digit strings are clamped rather than converted (int() of a peer's 5000 digits would raise).
MAX_DELTA_SECONDS: Final = 2**32 - 1
_MAX_DELTA_DIGITS = len(str(MAX_DELTA_SECONDS))

Refresher: TypeAlias = Literal["uac", "uas"]
DeadlineAction: TypeAlias = Literal["refresh", "expire"]

# Session-Expires = ("Session-Expires" / "x") HCOLON delta-seconds *(SEMI se-params)
# se-params = refresher-param / generic-param ; refresher-param = "refresher" EQUAL ("uas"/"uac")
# Min-SE = "Min-SE" HCOLON delta-seconds *(SEMI generic-param)      (§4, §5)
_DELTA_SECONDS_RE = re.compile(r"[ \t]*([0-9]+)")


def _delta_seconds(value: str, what: str) -> tuple[int, int]:
    """The delta-seconds at the start of ``value`` and where the parameters begin."""
    match = _DELTA_SECONDS_RE.match(value)
    if match is None:
        raise SipParseError(400, f"Malformed {what} header")
    digits = match.group(1).lstrip("0") or "0"
    if len(digits) > _MAX_DELTA_DIGITS:
        return MAX_DELTA_SECONDS, match.end()
    return min(int(digits), MAX_DELTA_SECONDS), match.end()


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A Session-Expires value (§4). ``refresher`` is None when absent (or not uac/uas)."""

    interval: int
    refresher: Refresher | None = None

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher}"


def parse_session_expires(value: str) -> SessionExpires:
    """Parse ``1800;refresher=uac``. Raises SipParseError (400) on a malformed value.

    A refresher other than uac/uas is still a valid generic-param by the grammar, so it is read
    as "no preference" rather than refused.
    """
    interval, pos = _delta_seconds(value, "Session-Expires")
    params = parse_params(value, pos, what="Session-Expires header")
    refresher = (params.get("refresher") or "").lower()
    if refresher == "uac":
        return SessionExpires(interval, "uac")
    if refresher == "uas":
        return SessionExpires(interval, "uas")
    return SessionExpires(interval)


def parse_min_se(value: str) -> int:
    """Parse a Min-SE value (§5); its generic parameters carry nothing we use."""
    interval, pos = _delta_seconds(value, "Min-SE")
    parse_params(value, pos, what="Min-SE header")
    return interval


def session_expires_of(message: SipMessage) -> SessionExpires | None:
    """The message's Session-Expires (long or compact ``x``), None when absent.

    Two Session-Expires lines raise SipParseError (400): the header is not a list.
    """
    value = message.headers.get("session-expires")
    return None if value is None else parse_session_expires(value.strip(" \t"))


def min_se_of(message: SipMessage) -> int | None:
    value = message.headers.get("min-se")
    return None if value is None else parse_min_se(value.strip(" \t"))


def _lists_timer(message: SipMessage, header: str) -> bool:
    return any(tag.lower() == TIMER_OPTION_TAG for tag in message.headers.get_all(header))


def supports_timer(message: SipMessage) -> bool:
    """True when the sender implements RFC 4028: ``timer`` in Supported (``k``) or Require."""
    return _lists_timer(message, "supported") or _lists_timer(message, "require")


def requires_timer(message: SipMessage) -> bool:
    return _lists_timer(message, "require")


# ---------------------------------------------------------------------------------------------
# Policy and state
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionTimerPolicy:
    """What this node wants from session timers.

    ``interval`` is what we ask for and the most we grant; ``min_se`` is the shortest interval
    we accept (below it a peer that supports timers gets 422). ``refresher`` decides who
    refreshes when the peer leaves it to us (§9 Table 2, second row): "local" keeps the work
    and the failure detection on our side. ``unasked`` says whether we start a timer on a
    request that carries no Session-Expires: "if_supported" when the peer lists ``timer``,
    "always" also for peers without support (Table 2, first row: we are then the refresher and
    re-INVITE a peer that knows nothing of timers), "never" only honours requests that ask.
    """

    enabled: bool = True
    interval: int = DEFAULT_SESSION_INTERVAL
    min_se: int = MIN_SESSION_INTERVAL
    refresher: Literal["local", "remote"] = "local"
    unasked: Literal["never", "if_supported", "always"] = "if_supported"

    def __post_init__(self) -> None:
        if self.min_se < MIN_SESSION_INTERVAL:
            raise ValueError(f"min_se must be at least {MIN_SESSION_INTERVAL}: {self.min_se}")
        if not self.min_se <= self.interval <= MAX_DELTA_SECONDS:
            raise ValueError(f"interval must be between min_se and 2**32-1: {self.interval}")


class SessionTimer:
    """A running session timer: who refreshes, the interval, and the two deadlines.

    If we refresh, ``refresh_at`` is interval/2 after the negotiation (§7.4, §10) and
    ``expire_at`` is the session expiration itself, a backstop for a refresh that never
    completed. If the peer refreshes, there is no ``refresh_at`` and ``expire_at`` is the
    expiration minus min(32 s, interval/3) (§10). Mutable only through `on_deadline`, which
    reports each deadline once.
    """

    __slots__ = ("_expired", "_refresh_due", "interval", "min_se", "started_at", "we_refresh")

    def __init__(
        self, interval: int, *, we_refresh: bool, now: float, min_se: int = MIN_SESSION_INTERVAL
    ) -> None:
        if interval < 1:
            raise ValueError(f"a session interval must be positive: {interval}")
        self.interval = interval
        self.we_refresh = we_refresh
        self.started_at = now
        # The largest Min-SE this negotiation saw; our next refresh offer repeats it (§7.4).
        self.min_se = min_se
        self._refresh_due = we_refresh
        self._expired = False

    @property
    def session_expires_at(self) -> float:
        return self.started_at + self.interval

    @property
    def refresh_at(self) -> float | None:
        if not self.we_refresh:
            return None
        return self.started_at + self.interval / REFRESH_FRACTION

    @property
    def expire_at(self) -> float:
        """When we give up on the session and send BYE (§10)."""
        if self.we_refresh:
            return self.session_expires_at
        margin = min(BYE_MARGIN_CAP, self.interval / BYE_MARGIN_FRACTION)
        return self.session_expires_at - margin

    @property
    def expired(self) -> bool:
        return self._expired

    def next_deadline(self) -> float | None:
        """The next time `on_deadline` has something to say; None once expired."""
        if self._expired:
            return None
        refresh_at = self.refresh_at
        if self._refresh_due and refresh_at is not None:
            return refresh_at
        return self.expire_at

    def on_deadline(self, now: float) -> DeadlineAction | None:
        """Say "refresh" (send a re-INVITE/UPDATE with `offer`), "expire" (send BYE) or None.

        Each action is reported once. Expiry wins when both are due: a refresh that late would
        reach a peer that already ended the session.
        """
        if self._expired:
            return None
        if now >= self.expire_at:
            self._expired = True
            return "expire"
        refresh_at = self.refresh_at
        if self._refresh_due and refresh_at is not None and now >= refresh_at:
            self._refresh_due = False
            return "refresh"
        return None

    def offer(self) -> SessionTimerOffer:
        """The offer for our next in-dialog re-INVITE/UPDATE, refresh or not.

        It keeps the interval and the refresher (§7.4): ``uac`` when we refresh (we are the
        UAC of this request), ``uas`` when the peer does.
        """
        return SessionTimerOffer(
            session_expires=self.interval,
            min_se=self.min_se,
            refresher="uac" if self.we_refresh else "uas",
        )

    def __repr__(self) -> str:
        who = "we refresh" if self.we_refresh else "peer refreshes"
        return f"<SessionTimer {self.interval}s, {who}, started {self.started_at}>"


# ---------------------------------------------------------------------------------------------
# UAS side (§9): we received an INVITE or UPDATE
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionIntervalTooSmall:
    """Answer 422 with `headers` (§6: "The 422 response MUST contain a Min-SE header field")."""

    min_se: int
    status: int = 422

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("Min-SE", str(self.min_se)),)


@dataclass(frozen=True, slots=True)
class SessionTimerAnswer:
    """Headers for our 2xx and the timer they start (None: no session timer)."""

    headers: tuple[tuple[str, str], ...] = ()
    timer: SessionTimer | None = None


def negotiate_as_uas(
    request: SipRequest, policy: SessionTimerPolicy, now: float
) -> SessionTimerAnswer | SessionIntervalTooSmall:
    """Decide the session timer for our 2xx to ``request`` (an INVITE, re-INVITE or UPDATE).

    Raises SipParseError (400) for a malformed Session-Expires or Min-SE. ``now`` should be
    when the 2xx goes out: the interval runs from there.
    """
    if not policy.enabled:
        return SessionTimerAnswer()
    peer_supports = supports_timer(request)
    asked = session_expires_of(request)
    peer_min_se = min_se_of(request)
    floor = max(policy.min_se, peer_min_se or MIN_SESSION_INTERVAL)
    if asked is None:
        if policy.unasked == "never" or (policy.unasked == "if_supported" and not peer_supports):
            return SessionTimerAnswer()
        # §9: a UAS may ask for a timer in its 2xx; "The value MUST NOT be set to a duration
        # lower than the value in the Min-SE header field in the request".
        interval = max(policy.interval, floor)
    elif asked.interval < policy.min_se:
        if peer_supports:
            # §9: "the UAS MAY reject the INVITE request with a 422 ... if the session interval
            # in the Session-Expires header field is smaller than the minimum interval defined
            # by the UAS' local policy."
            return SessionIntervalTooSmall(policy.min_se)
        # A UAC without timer support cannot read a 422 (its Session-Expires came from a
        # proxy), so, as §8.1 tells a proxy, raise the interval instead of failing the call.
        interval = floor
    else:
        # §9: the UAS MAY reduce the interval, never below the request's Min-SE (or 90).
        interval = max(min(asked.interval, policy.interval), floor)
    # §9 Table 2: a UAC without support never refreshes; an explicit choice is honoured;
    # otherwise the choice is ours.
    if not peer_supports:
        refresher: Refresher = "uas"
    elif asked is not None and asked.refresher is not None:
        refresher = asked.refresher
    else:
        refresher = "uas" if policy.refresher == "local" else "uac"
    headers: list[tuple[str, str]] = [("Session-Expires", f"{interval};refresher={refresher}")]
    if peer_supports:
        # §9: "If the refresher parameter in the Session-Expires header field in the 2xx
        # response has a value of 'uac', the UAS MUST place a Require header field into the
        # response with the value 'timer'" (and SHOULD for 'uas' when the UAC supports it).
        headers.append(("Require", TIMER_OPTION_TAG))
    timer = SessionTimer(interval, we_refresh=refresher == "uas", now=now, min_se=floor)
    return SessionTimerAnswer(tuple(headers), timer)


# ---------------------------------------------------------------------------------------------
# UAC side (§7): we send an INVITE or UPDATE
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionTimerOffer:
    """What our INVITE/UPDATE asks for, and how its 2xx or 422 is read.

    ``refresher`` is None in an initial offer: §7.1 recommends leaving the choice to the
    negotiation. ``retries`` counts the 422s already followed.
    """

    session_expires: int
    min_se: int = MIN_SESSION_INTERVAL
    refresher: Refresher | None = None
    retries: int = 0

    def headers(self, *, supported: bool = True) -> list[tuple[str, str]]:
        """Supported, Session-Expires and Min-SE lines for the request (§7.1).

        Pass ``supported=False`` when the UA writes its own Supported line listing ``timer``.
        """
        lines: list[tuple[str, str]] = []
        if supported:
            lines.append(("Supported", TIMER_OPTION_TAG))
        lines.append(("Session-Expires", str(SessionExpires(self.session_expires, self.refresher))))
        lines.append(("Min-SE", str(self.min_se)))
        return lines

    def after_422(self, response: SipResponse) -> SessionTimerOffer | None:
        """The offer to retry with after a 422, or None to give up (§7.1, §6).

        The retry carries the largest Min-SE seen and a Session-Expires at least that large.
        We give up after MAX_422_RETRIES, when the 422 has no usable Min-SE, or when it does
        not ask for more than we already offered (a retry would be the same request).
        """
        if self.retries >= MAX_422_RETRIES:
            return None
        try:
            wanted = min_se_of(response)
        except SipParseError:
            return None
        if wanted is None or wanted <= self.session_expires:
            return None
        return SessionTimerOffer(
            session_expires=wanted,
            min_se=max(self.min_se, wanted),
            refresher=self.refresher,
            retries=self.retries + 1,
        )

    def on_2xx(self, response: SipResponse, now: float) -> SessionTimer | None:
        """The timer the 2xx starts, or None when it turned timers off (§7.2).

        §7.2: "If the 2xx response did not contain a Session-Expires header field, there is no
        session expiration." One exception: when we refresh a session with a peer that has no
        timer support (Table 2, first row), its 2xx can never carry Session-Expires, so we
        keep refreshing at the same interval. A 2xx without a refresher (the UAS MUST set one)
        makes us the refresher, since a needless refresh costs less than a dropped call. An
        interval below 90 s is read as 90 so a broken peer cannot make us refresh in a loop.
        Raises SipParseError (400) for a malformed Session-Expires.
        """
        granted = session_expires_of(response)
        if granted is None:
            if self.refresher == "uac" and not supports_timer(response):
                return SessionTimer(
                    self.session_expires, we_refresh=True, now=now, min_se=self.min_se
                )
            return None
        interval = max(granted.interval, MIN_SESSION_INTERVAL)
        we_refresh = granted.refresher != "uas"
        return SessionTimer(interval, we_refresh=we_refresh, now=now, min_se=self.min_se)


def uac_offer(policy: SessionTimerPolicy) -> SessionTimerOffer | None:
    """The offer for a new INVITE we send; None when the policy disables timers."""
    if not policy.enabled:
        return None
    return SessionTimerOffer(session_expires=policy.interval, min_se=policy.min_se)
