"""SIP digest authentication: RFC 3261 §22 as updated by RFC 7616 and RFC 8760 (sans-I/O).

Why it looks like this: the gateway is both a client (trunks and registrars challenge our
INVITE/REGISTER) and a server (we challenge carriers and registering phones). Both sides share
the header grammar and the hash maths, so they live together; neither side touches a clock or a
random source. ``now`` and ``cnonce`` are passed in, and server nonces are stateless (a
timestamp plus an HMAC), so any gateway node holding the same secret can check them.

Only header VALUES go in and out (``Digest realm="..", ...``); the SIP message layer picks the
header name (WWW-/Proxy-Authenticate, Authorization/Proxy-Authorization).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

__all__ = [
    "DEFAULT_NONCE_TTL",
    "Algorithm",
    "AuthBad",
    "AuthOk",
    "AuthOutcome",
    "AuthStale",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestError",
    "DigestServer",
    "compute_ha1",
    "compute_response",
    "parse_challenge",
    "parse_credentials",
    "sip_uris_equivalent",
]

# Limits: a real challenge or credentials value is a few hundred bytes.
MAX_HEADER_VALUE_LENGTH = 8192
MAX_AUTH_PARAMS = 32
# Client: how many nonces' nonce-counts to remember (one per trunk/registrar in practice).
MAX_CLIENT_NONCES = 16
# Server: nonces whose last nonce-count is remembered for replay checks (LRU; RFC 7616 §5).
MAX_TRACKED_NONCES = 4096
DEFAULT_NONCE_TTL = 300.0  # seconds a nonce is fresh; older ones get stale=TRUE
NONCE_CLOCK_SKEW = 30.0  # seconds a nonce may be "from the future" (nodes' clocks differ)
NONCE_TIMESTAMP_BYTES = 8  # microseconds, big-endian
NONCE_MAC_BYTES = 32  # HMAC-SHA-256
MAX_NONCE_SALT_BYTES = 32
MIN_SECRET_BYTES = 16
MAX_NONCE_COUNT = 0xFFFFFFFF  # nc is 8 hex digits (RFC 7616 §3.4)

SCHEME = "Digest"
QOP_AUTH = "auth"
QOP_AUTH_INT = "auth-int"


class DigestError(Exception):
    """A malformed or unusable challenge/credentials value; the only error parsing raises."""


class Algorithm(StrEnum):
    """Digest algorithms we implement (RFC 7616 §3.3, RFC 8760 §2.1).

    SHA-512-256 is left out: its hashlib support depends on the OpenSSL build.
    """

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"

    @classmethod
    def parse(cls, text: str | None) -> Algorithm | None:
        """Case-insensitive lookup (RFC 7616 §3.3); absent means MD5 (RFC 2617 §3.2.1)."""
        if text is None:
            return cls.MD5
        return _ALGORITHMS.get(text.lower())

    @property
    def session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def base(self) -> Algorithm:
        """The algorithm HA1 is stored under; -sess variants derive theirs per nonce."""
        return Algorithm.SHA_256 if self.value.startswith("SHA-256") else Algorithm.MD5

    @property
    def strength(self) -> int:
        return 2 if self.base is Algorithm.SHA_256 else 1

    def hexdigest(self, data: bytes) -> str:
        if self.base is Algorithm.SHA_256:
            return hashlib.sha256(data).hexdigest()
        # RFC 3261 §22 still requires MD5 for interop; it is not our choice of hash.
        return hashlib.md5(data, usedforsecurity=False).hexdigest()


_ALGORITHMS = {a.value.lower(): a for a in Algorithm}


# --------------------------------------------------------------------------------------------
# Header grammar: challenge / credentials = "Digest" LWS auth-param *(COMMA auth-param)
# --------------------------------------------------------------------------------------------

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WHITESPACE = " \t\r\n"
# Unquoted values: peers send base64 nonces and the like unquoted, so accept more than token.
_UNQUOTED_STOP = frozenset(_WHITESPACE + ',"')


@dataclass(frozen=True, slots=True)
class _Param:
    name: str  # lower-case
    value: str
    quoted: bool


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    return text[start:pos], pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE; quoted-pair = "\\" CHAR."""
    out: list[str] = []
    pos += 1  # opening quote
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            pos += 1
            if pos >= len(text):
                break
            char = text[pos]
        if char in "\r\n" or (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            raise DigestError(f"control character in quoted string at position {pos}")
        out.append(char)
        pos += 1
    raise DigestError("unterminated quoted string")


def _parse_params(value: str) -> list[_Param]:
    """Split ``Digest a=b, c="d"`` into params; names are case-insensitive (RFC 7616 §3.3)."""
    if len(value) > MAX_HEADER_VALUE_LENGTH:
        raise DigestError(f"header value longer than {MAX_HEADER_VALUE_LENGTH} characters")
    pos = _skip_ws(value, 0)
    scheme, pos = _read_token(value, pos)
    if not scheme:
        raise DigestError("missing authentication scheme")
    if scheme.lower() != SCHEME.lower():
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    if pos < len(value) and value[pos] not in _WHITESPACE:
        raise DigestError(f"expected whitespace after {scheme!r}")
    params: list[_Param] = []
    seen: set[str] = set()
    while True:
        # RFC 7230 §7 #rule: empty list elements ("a=1,,b=2") are tolerated.
        pos = _skip_ws(value, pos)
        while pos < len(value) and value[pos] == ",":
            pos = _skip_ws(value, pos + 1)
        if pos >= len(value):
            break
        name, pos = _read_token(value, pos)
        if not name:
            raise DigestError(f"expected a parameter name at position {pos}")
        pos = _skip_ws(value, pos)
        if pos >= len(value) or value[pos] != "=":
            raise DigestError(f"expected '=' after {name!r}")
        pos = _skip_ws(value, pos + 1)
        if pos < len(value) and value[pos] == '"':
            param_value, pos = _read_quoted(value, pos)
            quoted = True
        else:
            start = pos
            while pos < len(value) and value[pos] not in _UNQUOTED_STOP:
                pos += 1
            param_value, quoted = value[start:pos], False
            if not param_value:
                raise DigestError(f"empty value for {name!r}")
        lowered = name.lower()
        if lowered in seen:
            raise DigestError(f"duplicate parameter {name!r}")
        seen.add(lowered)
        params.append(_Param(lowered, param_value, quoted))
        if len(params) > MAX_AUTH_PARAMS:
            raise DigestError(f"more than {MAX_AUTH_PARAMS} parameters")
        pos = _skip_ws(value, pos)
        if pos < len(value) and value[pos] != ",":
            raise DigestError(f"expected ',' after {name!r} at position {pos}")
    if not params:
        raise DigestError("no digest parameters")
    return params


def _quote(value: str) -> str:
    if any(c in "\r\n" for c in value):
        raise DigestError("CR or LF cannot be sent in a quoted string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(value: str, name: str) -> str:
    if not value or any(c not in _TOKEN_CHARS for c in value):
        raise DigestError(f"{name} {value!r} is not a token")
    return value


def _bool(value: str, name: str) -> bool:
    lowered = value.lower()  # RFC 7616 §3.3: stale is case-insensitive "true"/"false"
    if lowered not in ("true", "false"):
        raise DigestError(f"{name}={value!r} is neither true nor false")
    return lowered == "true"


def _extras(params: Sequence[_Param], known: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return tuple((p.name, p.value) for p in params if p.name not in known)


def _format_extras(extras: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{name}={_quote(value)}" for name, value in extras]


_CHALLENGE_PARAMS = frozenset(
    {"realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain", "userhash"}
)
_CREDENTIAL_PARAMS = frozenset(
    {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop",
     "nc", "userhash"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` value (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str | None = None  # as sent; None means MD5
    qop: tuple[str, ...] = ()  # lower-case tokens; empty means RFC 2069 mode
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False
    extras: tuple[tuple[str, str], ...] = ()

    @property
    def supported_algorithm(self) -> Algorithm | None:
        return Algorithm.parse(self.algorithm)

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        if self.algorithm is not None:
            parts.append(f"algorithm={_token(self.algorithm, 'algorithm')}")
        if self.qop:
            # RFC 7616 §3.3: qop in a challenge is a quoted, comma-separated list.
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.userhash:
            parts.append("userhash=true")
        parts.extend(_format_extras(self.extras))
        return f"{SCHEME} " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parse one Digest challenge value. Raises ``DigestError`` only."""
    params = {p.name: p for p in _parse_params(value)}
    for required in ("realm", "nonce"):
        if required not in params:
            raise DigestError(f"challenge has no {required}")
    qop: tuple[str, ...] = ()
    if "qop" in params:
        qop = tuple(q.strip().lower() for q in params["qop"].value.split(",") if q.strip())
    return Challenge(
        realm=params["realm"].value,
        nonce=params["nonce"].value,
        algorithm=params["algorithm"].value if "algorithm" in params else None,
        qop=qop,
        opaque=params["opaque"].value if "opaque" in params else None,
        stale=_bool(params["stale"].value, "stale") if "stale" in params else False,
        domain=params["domain"].value if "domain" in params else None,
        userhash=_bool(params["userhash"].value, "userhash") if "userhash" in params else False,
        extras=_extras(list(params.values()), _CHALLENGE_PARAMS),
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ``Authorization``/``Proxy-Authorization`` value (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: int | None = None
    userhash: bool = False
    extras: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",  # RFC 3261 §22.4 item 2: the uri value is quoted
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={_token(self.algorithm, 'algorithm')}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={_token(self.qop, 'qop')}")  # unquoted in credentials
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        if self.userhash:
            parts.append("userhash=true")
        parts.extend(_format_extras(self.extras))
        return f"{SCHEME} " + ", ".join(parts)


def _parse_nc(text: str) -> int:
    # RFC 7616 §3.4: nc-value = 8LHEX
    if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise DigestError(f"nc {text!r} is not 8 hex digits")
    return int(text, 16)


def parse_credentials(value: str) -> Credentials:
    """Parse one Digest credentials value. Raises ``DigestError`` only."""
    params = {p.name: p for p in _parse_params(value)}
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise DigestError(f"credentials have no {required}")
    qop = params["qop"].value.lower() if "qop" in params else None
    cnonce = params["cnonce"].value if "cnonce" in params else None
    nc = _parse_nc(params["nc"].value) if "nc" in params else None
    # RFC 7616 §3.4: cnonce and nc MUST be sent when qop is, and MUST NOT be otherwise.
    if qop is not None and (cnonce is None or nc is None):
        raise DigestError("credentials with qop need both cnonce and nc")
    if qop is None and nc is not None:
        raise DigestError("credentials carry nc without qop")
    return Credentials(
        username=params["username"].value,
        realm=params["realm"].value,
        nonce=params["nonce"].value,
        uri=params["uri"].value,
        response=params["response"].value,
        algorithm=params["algorithm"].value if "algorithm" in params else None,
        cnonce=cnonce,
        opaque=params["opaque"].value if "opaque" in params else None,
        qop=qop,
        nc=nc,
        userhash=_bool(params["userhash"].value, "userhash") if "userhash" in params else False,
        extras=_extras(list(params.values()), _CREDENTIAL_PARAMS),
    )


# --------------------------------------------------------------------------------------------
# Hash maths (RFC 7616 §3.4.1-3.4.3)
# --------------------------------------------------------------------------------------------


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username ":" realm ":" password), the form to store at rest.

    For the -sess algorithms this is the per-user part; ``compute_response`` mixes in nonce
    and cnonce. Store one HA1 per base algorithm (MD5 and SHA-256 differ).
    """
    parsed = Algorithm.parse(algorithm)
    if parsed is None:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    return parsed.base.hexdigest(f"{username}:{realm}:{password}".encode())


def compute_response(
    *,
    ha1: str,
    algorithm: Algorithm,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: int | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """The ``response`` value for a stored (non-session) HA1."""
    h = algorithm.hexdigest
    if algorithm.session:
        if cnonce is None:
            raise DigestError(f"{algorithm} needs a cnonce")
        # RFC 7616 §3.4.2: A1 = H(user:realm:pass) ":" nonce ":" cnonce for -sess.
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    # RFC 7616 §3.4.3: A2 = method ":" uri, plus ":" H(body) for auth-int.
    a2 = f"{method}:{uri}"
    if qop == QOP_AUTH_INT:
        a2 += ":" + h(body)
    elif qop not in (None, QOP_AUTH):
        raise DigestError(f"unsupported qop {qop!r}")
    ha2 = h(a2.encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())  # RFC 2069 compatibility (RFC 2617 §3.2.2.1)
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}".encode())


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def _usable(challenge: Challenge) -> tuple[Algorithm, str | None] | None:
    algorithm = challenge.supported_algorithm
    if algorithm is None:
        return None
    if not challenge.qop:
        return None if algorithm.session else (algorithm, None)
    # Prefer qop=auth: it needs no body and every server that offers auth-int offers auth too.
    if QOP_AUTH in challenge.qop:
        return algorithm, QOP_AUTH
    if QOP_AUTH_INT in challenge.qop:
        return algorithm, QOP_AUTH_INT
    return None


class DigestClient:
    """Answers challenges for one set of credentials and counts nonce uses.

    One instance per trunk or registration: the nonce-count (RFC 7616 §3.4) must rise with
    each request made under the same nonce, so the object remembers the last few nonces.
    """

    def __init__(self, max_nonces: int = MAX_CLIENT_NONCES) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._max_nonces = max_nonces

    @staticmethod
    def choose(challenges: Sequence[str | Challenge]) -> tuple[Challenge, Algorithm, str | None]:
        """Pick the challenge to answer: strongest supported algorithm, topmost on a tie.

        RFC 8760 §2.4 has the UAC use the topmost challenge it supports unless local policy
        says otherwise; our policy is "strongest hash first", so a server (or a meddler)
        listing MD5 above SHA-256 cannot talk us down to MD5.
        """
        best: tuple[Challenge, Algorithm, str | None] | None = None
        problems: list[str] = []
        for item in challenges:
            try:
                challenge = parse_challenge(item) if isinstance(item, str) else item
            except DigestError as exc:
                problems.append(str(exc))  # RFC 8760 §2.4: ignore challenges we cannot use
                continue
            usable = _usable(challenge)
            if usable is None:
                problems.append(f"unsupported algorithm/qop in {challenge}")
                continue
            if best is None or usable[0].strength > best[1].strength:
                best = (challenge, *usable)
        if best is None:
            reasons = "; ".join(problems) or "no challenges"
            raise DigestError(f"no usable digest challenge: {reasons}")
        return best

    def respond(
        self,
        challenge: str | Challenge | Sequence[str | Challenge],
        method: str,
        uri: str,
        username: str,
        password: str,
        body: bytes = b"",
        *,
        cnonce: str,
    ) -> str:
        """Build the credentials value for the chosen challenge.

        ``uri`` is the Request-URI of the request being sent (RFC 3261 §22.4 item 3),
        ``cnonce`` a fresh random string from the caller, used whenever a qop applies.
        """
        candidates = [challenge] if isinstance(challenge, str | Challenge) else list(challenge)
        chosen, algorithm, qop = self.choose(candidates)
        # -sess challenges always come with a qop (``_usable``), so qop decides both.
        if qop is not None and not cnonce:
            raise DigestError("a cnonce is required for this challenge")
        nc = self._next_count(chosen.nonce) if qop is not None else None
        sent_cnonce = cnonce if qop is not None else None
        realm = chosen.realm
        ha1 = compute_ha1(username, realm, password, algorithm.base.value)
        response = compute_response(
            ha1=ha1,
            algorithm=algorithm,
            nonce=chosen.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=sent_cnonce,
            body=body,
        )
        # RFC 7616 §3.4.4: with userhash the username travels as H(username ":" realm).
        sent_username = (
            algorithm.hexdigest(f"{username}:{realm}".encode()) if chosen.userhash else username
        )
        credentials = Credentials(
            username=sent_username,
            realm=realm,
            nonce=chosen.nonce,
            uri=uri,
            response=response,
            algorithm=chosen.algorithm,
            cnonce=sent_cnonce,
            opaque=chosen.opaque,
            qop=qop,
            nc=nc,
            userhash=chosen.userhash,
        )
        return str(credentials)

    def _next_count(self, nonce: str) -> int:
        count = self._counts.pop(nonce, 0) + 1
        if count > MAX_NONCE_COUNT:
            raise DigestError("nonce count exhausted; wait for a new challenge")
        self._counts[nonce] = count
        while len(self._counts) > self._max_nonces:
            self._counts.popitem(last=False)
        return count


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


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
