"""The server side of SIP digest authentication: challenging peers and checking their credentials.

Why nonces are stateless: a nonce is a timestamp plus an HMAC, so any gateway node holding the
same secret can check it, and ``now`` is passed in, so nothing here reads a clock. The digest uri
check compares URIs as RFC 3261 §19.1.4 does, which is why that comparison lives here too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from edge_media.sip.digest import (
    QOP_AUTH,
    Algorithm,
    Challenge,
    Credentials,
    DigestError,
    compute_response,
    parse_credentials,
)

__all__ = [
    "DEFAULT_NONCE_TTL",
    "AuthBad",
    "AuthOk",
    "AuthOutcome",
    "AuthStale",
    "DigestServer",
    "HA1Lookup",
    "sip_uris_equivalent",
]

# Nonces whose last nonce-count is remembered for replay checks (LRU; RFC 7616 §5).
MAX_TRACKED_NONCES = 4096
DEFAULT_NONCE_TTL = 300.0  # seconds a nonce is fresh; older ones get stale=TRUE
NONCE_CLOCK_SKEW = 30.0  # seconds a nonce may be "from the future" (nodes' clocks differ)
NONCE_TIMESTAMP_BYTES = 8  # microseconds, big-endian
NONCE_MAC_BYTES = 32  # HMAC-SHA-256
MAX_NONCE_SALT_BYTES = 32
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class AuthOk:
    """The credentials are valid: the request is from ``username``."""

    username: str
    algorithm: Algorithm


@dataclass(frozen=True, slots=True)
class AuthStale:
    """Right password, old nonce: re-challenge with ``stale=True`` (RFC 7616 §3.3)."""

    username: str
    reason: str = "nonce expired"


@dataclass(frozen=True, slots=True)
class AuthBad:
    """Reject (401 with a fresh challenge, or 403). ``reason`` is for logs, not the peer."""

    reason: str


AuthOutcome = AuthOk | AuthStale | AuthBad
HA1Lookup = Callable[[str, str, str], str | None]


class DigestServer:
    """Issues challenges and checks credentials for one realm.

    Nonce = base64(timestamp || salt || HMAC-SHA-256(secret, realm || timestamp || salt)):
    self-validating, so nothing is stored per challenge and any node with the secret can
    verify it; the timestamp gives expiry. The only state is a bounded LRU of the last
    nonce-count seen per (nonce, username), a minimal replay defence (RFC 7616 §5). A nonce
    evicted from it loses that defence until it expires, which ``nonce_ttl`` bounds.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = DEFAULT_NONCE_TTL,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = MAX_TRACKED_NONCES,
        uri_match: str = "exact",
    ) -> None:
        if uri_match not in ("exact", "host"):
            raise ValueError(f"uri_match must be 'exact' or 'host', not {uri_match!r}")
        self.uri_match = uri_match
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = self._check_algorithms(algorithms)
        self._secret = secret
        self._max_tracked = max_tracked_nonces
        self._last_nc: OrderedDict[tuple[str, str], int] = OrderedDict()

    @staticmethod
    def _check_algorithms(algorithms: Sequence[str]) -> tuple[Algorithm, ...]:
        parsed = [Algorithm.parse(a) for a in algorithms]
        if not parsed or any(a is None for a in parsed):
            raise ValueError(f"unsupported algorithm in {algorithms!r}")
        return tuple(a for a in parsed if a is not None)

    def new_nonce(self, now: float, salt: bytes = b"") -> str:
        """A fresh nonce. ``salt`` (random bytes from the caller) keeps two nonces issued in
        the same microsecond apart; without it the timestamp alone distinguishes them."""
        if now < 0:
            raise ValueError("now must be a non-negative wall-clock time")
        if len(salt) > MAX_NONCE_SALT_BYTES:
            raise ValueError(f"salt longer than {MAX_NONCE_SALT_BYTES} bytes")
        stamp = int(now * 1_000_000).to_bytes(NONCE_TIMESTAMP_BYTES, "big")
        return base64.b64encode(stamp + salt + self._mac(stamp + salt)).decode("ascii")

    def challenge(
        self,
        now: float,
        stale: bool = False,
        algorithms: Sequence[str] | None = None,
        *,
        salt: bytes = b"",
    ) -> list[str]:
        """One challenge value per algorithm, most preferred first (RFC 8760 §2.3).

        ``now`` must be wall-clock seconds shared by every node that verifies (not a
        monotonic clock), because the nonce carries it.
        """
        chosen = self.algorithms if algorithms is None else self._check_algorithms(algorithms)
        if any(a not in self.algorithms for a in chosen):
            raise ValueError("challenge algorithms must be a subset of the server's")
        nonce = self.new_nonce(now, salt)
        return [
            str(Challenge(self.realm, nonce, algorithm.value, (QOP_AUTH,), stale=stale))
            for algorithm in chosen
        ]

    def verify(
        self,
        credentials: str | Credentials,
        method: str,
        request_uri: str,
        now: float,
        lookup_ha1: HA1Lookup,
    ) -> AuthOutcome:
        """Check credentials sent with a request.

        ``lookup_ha1(username, realm, algorithm)`` returns the stored HA1 hex for the base
        algorithm ("MD5" or "SHA-256") or None for an unknown user. Only qop=auth is accepted,
        since that is all we offer and nonce-count replay checks need it.
        """
        try:
            creds = parse_credentials(credentials) if isinstance(credentials, str) else credentials
        except DigestError as exc:
            return AuthBad(f"malformed credentials: {exc}")
        if creds.realm != self.realm:
            return AuthBad(f"realm {creds.realm!r} is not ours")
        algorithm = Algorithm.parse(creds.algorithm)
        if algorithm is None or algorithm not in self.algorithms:
            return AuthBad(f"algorithm {creds.algorithm!r} was not offered")
        if creds.qop != QOP_AUTH or creds.nc is None or creds.cnonce is None:
            return AuthBad(f"qop {creds.qop!r} was not offered (need qop=auth)")
        if creds.nc == 0:
            return AuthBad("nonce count must start at 00000001")
        if creds.userhash:
            return AuthBad("userhash was not offered")
        if not self._uri_matches(creds.uri, request_uri):
            return AuthBad(f"digest uri {creds.uri!r} does not match the Request-URI")
        issued = self._nonce_time(creds.nonce)
        if issued is None:
            return AuthBad("nonce was not issued by this realm")
        if issued > now + NONCE_CLOCK_SKEW:
            return AuthBad("nonce is from the future")
        ha1 = lookup_ha1(creds.username, creds.realm, algorithm.base.value)
        if ha1 is None:
            return AuthBad(f"unknown user {creds.username!r}")
        expected = compute_response(
            ha1=ha1.lower(),
            algorithm=algorithm,
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,  # hashed as the client sent it, not as we would spell it
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        if not hmac.compare_digest(expected, creds.response.lower()):
            return AuthBad("wrong response (bad password or tampered request)")
        # RFC 7616 §3.3: stale only when the digest is right but the nonce is too old.
        if now - issued > self.nonce_ttl:
            return AuthStale(creds.username)
        key = (creds.nonce, creds.username)
        last = self._last_nc.get(key)
        if last is not None and creds.nc <= last:
            return AuthBad(f"nonce count {creds.nc:08x} replayed (last {last:08x})")
        self._last_nc[key] = creds.nc
        self._last_nc.move_to_end(key)
        while len(self._last_nc) > self._max_tracked:
            self._last_nc.popitem(last=False)
        return AuthOk(creds.username, algorithm)

    def _uri_matches(self, digest_uri: str, request_uri: str) -> bool:
        """§22.4 wants the digest uri to be the Request-URI; "host" mode accepts a uri naming
        the same host and port without the user part, which sipp and some carrier equipment
        send (``sip:gw:5060`` for ``sip:echo@gw:5060``). The nonce-count replay check still
        binds the credentials to one request."""
        if sip_uris_equivalent(digest_uri, request_uri):
            return True
        if self.uri_match != "host":
            return False
        ours, theirs = _split_sip_uri(request_uri), _split_sip_uri(digest_uri)
        return (
            ours is not None
            and theirs is not None
            and theirs.userinfo is None
            and (ours.scheme, ours.host, ours.port) == (theirs.scheme, theirs.host, theirs.port)
        )

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, self.realm.encode() + b"\x00" + data, "sha256").digest()

    def _nonce_time(self, nonce: str) -> float | None:
        """Issue time of a nonce we made, or None if it is not ours (bad MAC, bad shape)."""
        try:
            raw = base64.b64decode(nonce.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return None
        fixed = NONCE_TIMESTAMP_BYTES + NONCE_MAC_BYTES
        if not fixed <= len(raw) <= fixed + MAX_NONCE_SALT_BYTES:
            return None
        signed, mac = raw[:-NONCE_MAC_BYTES], raw[-NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(signed)):
            return None
        return int.from_bytes(signed[:NONCE_TIMESTAMP_BYTES], "big") / 1_000_000


# --------------------------------------------------------------------------------------------
# Request-URI comparison (RFC 3261 §19.1.4)
# --------------------------------------------------------------------------------------------

# Parameters that make two URIs differ when only one carries them. RFC 3261 §19.1.4 lists
# user, ttl, method and maddr; its own examples treat transport the same way.
_MUST_MATCH_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})


@dataclass(frozen=True, slots=True)
class _SipUri:
    scheme: str
    userinfo: str | None
    host: str
    port: str | None
    params: dict[str, str | None]
    headers: dict[str, str]


def _split_sip_uri(uri: str) -> _SipUri | None:
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    # '@' cannot appear unescaped in hostport, params or headers, so the last '@' before the
    # headers ends the userinfo (user parts may contain ';' as in tel-style users).
    head = rest.split("?", 1)[0]
    userinfo: str | None = None
    if "@" in head:
        at = head.rindex("@")
        userinfo, rest = rest[:at], rest[at + 1 :]
    rest, _, header_text = rest.partition("?")
    hostport, *param_items = rest.split(";")
    if hostport.startswith("["):
        host, _, port_text = hostport.partition("]")
        host += "]"
        port = port_text[1:] if port_text.startswith(":") else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
    params: dict[str, str | None] = {}
    for item in param_items:
        name, equals, value = item.partition("=")
        params[unquote(name).lower()] = unquote(value).lower() if equals else None
    headers: dict[str, str] = {}
    for item in filter(None, header_text.split("&")):
        name, _, value = item.partition("=")
        headers[unquote(name).lower()] = unquote(value).lower()
    return _SipUri(
        scheme.lower(),
        unquote(userinfo) if userinfo is not None else None,  # case-sensitive
        unquote(host).lower(),
        port,
        params,
        headers,
    )


def sip_uris_equivalent(a: str, b: str) -> bool:
    """RFC 3261 §19.1.4 URI equality, as used to match the digest uri to the Request-URI.

    Escapes are decoded; userinfo is case-sensitive, everything else is not; a parameter in
    both must match, one of ``_MUST_MATCH_PARAMS`` in only one never matches, other
    one-sided parameters are ignored; header components must all be present in both and
    match. Non-SIP URIs must be identical.
    """
    if a == b:
        return True
    left, right = _split_sip_uri(a), _split_sip_uri(b)
    if left is None or right is None:
        return False
    if (left.scheme, left.userinfo, left.host, left.port) != (
        right.scheme,
        right.userinfo,
        right.host,
        right.port,
    ):
        return False
    for name in left.params.keys() | right.params.keys():
        if name in left.params and name in right.params:
            if left.params[name] != right.params[name]:
                return False
        elif name in _MUST_MATCH_PARAMS:
            return False
    return left.headers == right.headers
