"""SIP digest authentication (RFC 3261 §22 as updated by RFC 7616 and RFC 8760): the parts
both sides share, sans-I/O.

Why it looks like this: the gateway is both a client (trunks and registrars challenge our
INVITE/REGISTER; `digest_client`) and a server (we challenge carriers and registering phones;
`digest_server`). Both sides share the header grammar, the algorithms and the hash maths, which
live here; neither side touches a clock or a random source.

Only header VALUES go in and out (``Digest realm="..", ...``); the SIP message layer picks the
header name (WWW-/Proxy-Authenticate, Authorization/Proxy-Authorization).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "QOP_AUTH",
    "QOP_AUTH_INT",
    "Algorithm",
    "Challenge",
    "Credentials",
    "DigestError",
    "compute_ha1",
    "compute_response",
    "parse_challenge",
    "parse_credentials",
]

# Limits: a real challenge or credentials value is a few hundred bytes.
MAX_HEADER_VALUE_LENGTH = 8192
MAX_AUTH_PARAMS = 32

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
