"""Registering with a trunk (RFC 3261 §10.2), sans-I/O: one client per trunk registration.

Why it looks like this: carriers that send calls only to registered gateways drop us silently
when a refresh is late or when a failure turns into a tight retry loop, and they lock accounts
that hammer them with a wrong password. So the client refreshes well before expiry, answers one
digest challenge per request (a stale nonce is not a failure), follows 423 once per interval,
and backs off exponentially with jitter after a failure (RFC 5626 §4.5).

The client never sends: each method returns the REGISTER to send (or None), which the UA hands
to `TransactionLayer.send_request`; the transaction's final response comes back through
`on_response` and its timeout through `on_timeout`. Time (`now`) and everything random (branch,
tag, Call-ID, cnonce, the jitter factor) are passed in. The UA's loop::

    request = client.start(now)                 # then on_response / on_timeout
    deadline = client.next_deadline()           # sleep until then, then:
    request = client.on_deadline(now)           # a refresh or a retry, or None
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edge_media.sip import _abnf
from edge_media.sip.digest import Challenge, DigestError
from edge_media.sip.digest_client import DigestClient
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import NameAddr, Via, parse_name_addr
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.uri import Params, SipUri, parse_uri, uri_equal

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "DEFAULT_EXPIRES",
    "RegistrationClient",
    "RegistrationError",
    "RegistrationState",
    "backoff_delay",
    "refresh_delay",
]

DEFAULT_EXPIRES = 3600
# RFC 5626 §4.5: base-time is 30 s when every flow failed (we have one flow), max-time 1800 s.
BACKOFF_BASE = 30.0
BACKOFF_MAX = 1800.0
MAX_BACKOFF_EXPONENT = 16  # 30 * 2**16 is far above the cap; bounds the integer maths
# Refresh timing (3GPP TS 24.229 §5.1.1.4.1, common practice for RFC 5626 §4.4.1's "before
# expiry"): 600 s before expiry when more than 1200 s were granted, at half-time otherwise.
REFRESH_LONG_INTERVAL = 1200
REFRESH_MARGIN = 600
# Retries inside one attempt (challenge answered, stale nonce, 423): a server that keeps asking
# beyond this is broken, and the attempt fails rather than loops.
MAX_RETRIES_PER_ATTEMPT = 4
BRANCH_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
MAX_FORWARDS = 70

# Challenge header -> credentials header (RFC 3261 §22.2 for 401, §22.3 for 407).
_CHALLENGES: Mapping[int, tuple[str, str]] = {
    401: ("www-authenticate", "Authorization"),
    407: ("proxy-authenticate", "Proxy-Authorization"),
}


class RegistrationState(StrEnum):
    """Where the registration stands, for logs and health.

    ``failed`` and ``backing_off`` both wait for a retry at `RegistrationClient.next_deadline`;
    ``failed`` means the registrar refused us (credentials, 403, 404, other 4xx/6xx, an
    unusable challenge): an operator should look. ``backing_off`` means no answer or a
    temporary one (timeout, 408, 480, 5xx): it usually heals by itself. A refresh in flight
    keeps ``registered``.
    """

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RegistrationError:
    """The last thing that went wrong; ``status`` is None when no response came (timeout)."""

    status: int | None
    reason: str
    at: float


def refresh_delay(granted: int) -> float:
    """Seconds after a 200 to send the refresh for a binding granted ``granted`` seconds."""
    if granted > REFRESH_LONG_INTERVAL:
        return float(granted - REFRESH_MARGIN)
    return granted / 2


def backoff_delay(
    failures: int,
    rand_factor: float,
    *,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_MAX,
) -> float:
    """RFC 5626 §4.5: ``rand_factor * min(max-time, base-time * 2**consecutive-failures)``.

    ``rand_factor`` is the caller's random draw; the RFC wants it uniform in [0.5, 1] so that
    gateways restarted together do not retry in step.
    """
    if failures < 1:
        raise ValueError("backoff starts after the first failure")
    if not 0.0 < rand_factor <= 1.0:
        raise ValueError(f"rand_factor must be in (0, 1]: {rand_factor}")
    exponent = min(failures, MAX_BACKOFF_EXPONENT)
    return rand_factor * min(cap, base * 2**exponent)


def _full_wait() -> float:
    return 1.0


def _digits(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip(" \t")
    if _abnf.DIGITS_RE.fullmatch(value) is None or len(value.lstrip("0")) > 10:
        return None
    return int(value)


def _header_int(response: SipResponse, name: str) -> int | None:
    # Retry-After may carry a comment and parameters after the delta-seconds (§20.33).
    try:
        value = response.headers.get(name)
    except SipParseError:
        return None
    if value is None:
        return None
    return _digits(value.split(";", 1)[0].split("(", 1)[0])


def _is_transient(status: int | None) -> bool:
    return status is None or status in (408, 480) or 500 <= status < 600


@dataclass(slots=True)
class _Pending:
    """The REGISTER in flight (§10.2: never more than one) and its attempt's history."""

    cseq: int
    expires: int  # 0 for an un-REGISTER
    challenges: dict[str, Challenge] = field(default_factory=dict)  # credentials header -> it
    retries: int = 0

    @property
    def unregister(self) -> bool:
        return self.expires == 0


class RegistrationClient:
    """Keeps one binding (``contact`` for ``aor``) alive at one registrar.

    The Call-ID and From tag stay the same for the client's life and CSeq rises by one for
    every REGISTER, as §10.2 asks, so the registrar can order our requests.
    """

    def __init__(
        self,
        *,
        registrar: SipUri | str,
        aor: SipUri | str,
        contact: NameAddr | SipUri | str,
        username: str,
        password: str,
        local_address: tuple[str, int],
        new_branch: Callable[[], str],
        new_tag: Callable[[], str],
        new_call_id: Callable[[], str],
        new_cnonce: Callable[[], str],
        transport: str = "UDP",
        expires: int = DEFAULT_EXPIRES,
        rand_factor: Callable[[], float] = _full_wait,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        user_agent: str | None = None,
    ) -> None:
        registrar_uri = parse_uri(registrar) if isinstance(registrar, str) else registrar
        if not isinstance(registrar_uri, SipUri) or registrar_uri.user is not None:
            # §10.2: "The 'userinfo' and '@' components of the SIP URI MUST NOT be present."
            raise ValueError(f"the registrar must be a SIP URI without a user: {registrar}")
        aor_uri = parse_uri(aor) if isinstance(aor, str) else aor
        if not isinstance(aor_uri, SipUri):
            # §10.2: the address-of-record "MUST be a SIP URI or SIPS URI".
            raise ValueError(f"the address-of-record must be a SIP URI: {aor}")
        if expires < 1:
            raise ValueError("expires must be positive (stop() unregisters)")
        if isinstance(contact, str):
            contact = parse_name_addr(contact, what="Contact")
        elif isinstance(contact, SipUri):
            contact = NameAddr(contact)
        self.registrar = registrar_uri
        self.aor = aor_uri
        self.contact = NameAddr(
            contact.uri, contact.display_name, contact.params.without("expires")
        )
        self.expires = expires
        self.call_id = new_call_id()
        self._from = NameAddr(aor_uri).with_tag(new_tag())
        self._to = NameAddr(aor_uri)
        self._username = username
        self._password = password
        host, port = local_address
        self._via_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._via_port = port
        self._transport = transport.upper()
        self._new_branch = new_branch
        self._new_cnonce = new_cnonce
        self._rand_factor = rand_factor
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._user_agent = user_agent
        self._digest = DigestClient()
        self._cseq = 0
        self._pending: _Pending | None = None
        self._state = RegistrationState.IDLE
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self.failures = 0  # consecutive failed attempts (resets on a 200)
        self.last_error: RegistrationError | None = None
        self.registered_until: float | None = None  # our binding's expiry, as last granted
        self.granted_expires: int | None = None
        self.public_address: tuple[str, int] | None = None  # Via received/rport (RFC 3581)

    # -- observation -------------------------------------------------------------------------
    @property
    def state(self) -> RegistrationState:
        return self._state

    @property
    def pending(self) -> bool:
        """True while a REGISTER awaits its final response or timeout."""
        return self._pending is not None

    def is_registered(self, now: float) -> bool:
        """True while the last granted binding has not run out (refresh failures included)."""
        return self.registered_until is not None and now < self.registered_until

    def next_deadline(self) -> float | None:
        """When to call `on_deadline`: the refresh time, or the retry time after a failure."""
        if self._pending is not None:
            return None  # the transaction layer reports a response or a timeout first
        if self._state is RegistrationState.REGISTERED:
            return self._refresh_at
        if self._state in (RegistrationState.FAILED, RegistrationState.BACKING_OFF):
            return self._retry_at
        return None

    # -- inputs ------------------------------------------------------------------------------
    def start(self, now: float) -> SipRequest:
        """The first REGISTER (also after `stop`, reusing Call-ID and the CSeq sequence)."""
        if self._state not in (RegistrationState.IDLE, RegistrationState.STOPPED):
            raise RuntimeError(f"already started (state {self._state})")
        if self._pending is not None:
            raise RuntimeError("the un-REGISTER is still in flight; start again after it ends")
        self._state = RegistrationState.REGISTERING
        return self._send(_Pending(0, self.expires))

    def on_deadline(self, now: float) -> SipRequest | None:
        """The refresh or retry due at `next_deadline`, or None if nothing is due yet."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return None
        if self._state is not RegistrationState.REGISTERED:
            self._state = RegistrationState.REGISTERING
        return self._send(_Pending(0, self.expires))

    def on_response(self, response: SipResponse, now: float) -> SipRequest | None:
        """Feed a response to our REGISTER; returns the next REGISTER to send, if any."""
        pending = self._pending
        if pending is None or not self._answers(response, pending):
            return None  # stray, or for a request we gave up on
        status = response.status
        if status < 200:
            return None
        self._pending = None
        if self._state is RegistrationState.STOPPED and not pending.unregister:
            # stop() came while this REGISTER was in flight; now remove what it may have bound.
            if 200 <= status < 300:
                granted = self._granted(response, pending.expires)
                if granted > 0:
                    self.registered_until = now + granted
            return self._unregister_if_bound(now)
        if status in _CHALLENGES:
            return self._on_challenge(response, pending, now)
        if pending.unregister:
            if 200 <= status < 300:
                self.registered_until = None
            else:
                self.last_error = RegistrationError(status, response.reason, now)
            return None
        if 200 <= status < 300:
            self._on_success(response, pending, now)
            return None
        if status == 423:
            return self._on_interval_too_brief(response, pending, now)
        self._fail(now, status, response.reason, _header_int(response, "retry-after"))
        return None

    def on_timeout(self, now: float) -> SipRequest | None:
        """The transaction of our REGISTER timed out (Timer F) or its transport failed."""
        pending = self._pending
        if pending is None:
            return None
        self._pending = None
        if self._state is RegistrationState.STOPPED:
            if pending.unregister:
                self.last_error = RegistrationError(None, "un-REGISTER timed out", now)
                return None
            return self._unregister_if_bound(now)
        self._fail(now, None, "REGISTER timed out", None)
        return None

    def stop(self, now: float) -> SipRequest | None:
        """Stop refreshing and remove our binding (Expires: 0 on our Contact only, never
        ``*``, which would remove other devices' bindings of the same AOR).

        Returns None when nothing is bound, or when a REGISTER is in flight: §10.2 allows one
        at a time, so the un-REGISTER follows from `on_response`/`on_timeout`.
        """
        if self._state is RegistrationState.STOPPED:
            return None
        self._state = RegistrationState.STOPPED
        self._refresh_at = self._retry_at = None
        if self._pending is not None:
            return None
        return self._unregister_if_bound(now)

    # -- steps -------------------------------------------------------------------------------
    def _answers(self, response: SipResponse, pending: _Pending) -> bool:
        try:
            cseq = response.cseq
            return (
                response.call_id == self.call_id
                and cseq.method == "REGISTER"
                and cseq.number == pending.cseq
            )
        except SipParseError:
            return False

    def _on_success(self, response: SipResponse, pending: _Pending, now: float) -> None:
        granted = self._granted(response, pending.expires)
        self._note_public_address(response)
        if granted <= 0:
            self._fail(now, response.status, "registrar granted no time", None)
            return
        self.failures = 0
        self.granted_expires = granted
        self.registered_until = now + granted
        self._refresh_at = now + refresh_delay(granted)
        self._retry_at = None
        self._state = RegistrationState.REGISTERED

    def _granted(self, response: SipResponse, requested: int) -> int:
        """§10.2.4: our Contact's expires parameter in the 200, else its Expires header, else
        what we asked for (malformed values fall through to the next source)."""
        try:
            contacts = response.contacts
        except SipParseError:
            contacts = ()
        if contacts != "*":
            for contact in contacts:
                if uri_equal(contact.uri, self.contact.uri):
                    value = _digits(contact.params.get("expires"))
                    if value is not None:
                        return value
                    break
        header = _header_int(response, "expires")
        return requested if header is None else header

    def _note_public_address(self, response: SipResponse) -> None:
        try:
            via = response.top_via
            rport = via.rport
        except (SipParseError, ValueError):
            return
        if via.received is not None or rport is not None:
            port = rport if rport is not None else via.port or self._via_port
            self.public_address = (via.received or via.host, port)

    def _on_challenge(
        self, response: SipResponse, pending: _Pending, now: float
    ) -> SipRequest | None:
        challenge_header, credentials_header = _CHALLENGES[response.status]
        try:
            challenge, _, _ = DigestClient.choose(response.headers.get_lines(challenge_header))
        except DigestError as exc:
            return self._attempt_failed(pending, now, response.status, f"unusable challenge: {exc}")
        previous = pending.challenges.get(credentials_header)
        if previous is not None and not (challenge.stale and challenge.nonce != previous.nonce):
            # §22.2: the credentials we just sent were rejected; sending them again would not
            # help (and carriers lock accounts that keep trying). Only a stale nonce retries.
            return self._attempt_failed(pending, now, response.status, "credentials rejected")
        if pending.retries >= MAX_RETRIES_PER_ATTEMPT:
            return self._attempt_failed(pending, now, response.status, "too many challenges")
        challenges = {**pending.challenges, credentials_header: challenge}
        return self._send(_Pending(0, pending.expires, challenges, pending.retries + 1))

    def _on_interval_too_brief(
        self, response: SipResponse, pending: _Pending, now: float
    ) -> SipRequest | None:
        # §10.2.8: retry with an interval at least Min-Expires, and keep using it.
        minimum = _header_int(response, "min-expires")
        if minimum is None or minimum <= pending.expires:
            return self._attempt_failed(pending, now, 423, "423 without a usable Min-Expires")
        if pending.retries >= MAX_RETRIES_PER_ATTEMPT:
            return self._attempt_failed(pending, now, 423, "too many retries")
        self.expires = minimum
        return self._send(_Pending(0, minimum, dict(pending.challenges), pending.retries + 1))

    def _attempt_failed(
        self, pending: _Pending, now: float, status: int, reason: str
    ) -> SipRequest | None:
        if pending.unregister:
            self.last_error = RegistrationError(status, reason, now)
            return None
        self._fail(now, status, reason, None)
        return None

    def _fail(self, now: float, status: int | None, reason: str, retry_after: int | None) -> None:
        self.failures += 1
        self.last_error = RegistrationError(status, reason, now)
        delay = backoff_delay(
            self.failures, self._rand_factor(), base=self._backoff_base, cap=self._backoff_max
        )
        if retry_after is not None:
            # RFC 5626 §4.4.1: with Retry-After the UA "is expected to wait the indicated
            # amount of time and retry"; capped so a typo on the carrier's side cannot park us.
            delay = min(float(retry_after), self._backoff_max)
        self._retry_at = now + delay
        self._refresh_at = None
        self._state = (
            RegistrationState.BACKING_OFF if _is_transient(status) else RegistrationState.FAILED
        )

    def _unregister_if_bound(self, now: float) -> SipRequest | None:
        if not self.is_registered(now):
            self.registered_until = None
            return None
        return self._send(_Pending(0, 0))

    def _send(self, pending: _Pending) -> SipRequest:
        """Build the REGISTER for ``pending`` (fresh branch, next CSeq) and make it current."""
        self._cseq += 1
        pending.cseq = self._cseq
        branch = self._new_branch()
        if not branch.startswith(BRANCH_COOKIE):
            branch = BRANCH_COOKIE + branch
        via = Via(
            self._transport,
            self._via_host,
            self._via_port,
            Params((("rport", None), ("branch", branch))),  # rport: RFC 3581 §3
        )
        extra: list[tuple[str, str]] = [("Expires", str(pending.expires))]
        request_uri = str(self.registrar)
        for header, challenge in pending.challenges.items():
            # §22.4: the digest uri is the Request-URI; nc rises per nonce in DigestClient.
            credentials = self._digest.respond(
                challenge,
                "REGISTER",
                request_uri,
                self._username,
                self._password,
                cnonce=self._new_cnonce(),
            )
            extra.append((header, credentials))
        if self._user_agent is not None:
            extra.append(("User-Agent", self._user_agent))
        self._pending = pending
        return SipRequest.build(
            "REGISTER",
            self.registrar,
            from_=self._from,
            to=self._to,
            call_id=self.call_id,
            cseq=self._cseq,
            via=via,
            max_forwards=MAX_FORWARDS,
            contact=self.contact,
            extra_headers=extra,
        )
