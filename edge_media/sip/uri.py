"""SIP, SIPS and tel URIs, other schemes as opaque URIs, and the RFC 3261 §19.1.4 comparison.

Components are kept in their wire form (still %-escaped) so a URI we forward or echo is exactly
what the peer sent; the escapes only matter when comparing, which `uri_equal` does. A URI with a
scheme we do not know is not a parse error: RFC 4475 §3.3.2 wants such requests parsed and the
UA to answer 416, so unknown schemes become `AbsoluteUri` and the caller checks ``scheme``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import quote, unquote, unquote_to_bytes

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError

__all__ = [
    "AbsoluteUri",
    "Params",
    "SipUri",
    "TelUri",
    "Uri",
    "check_request_uri",
    "escape_user",
    "parse_uri",
    "quote_string",
    "unquote_string",
    "uri_equal",
    "uri_scheme",
]

# §19.1.4: "A URI omitting the user, ttl, method, maddr or transport parameter never matches a
# URI containing that parameter" (each side must carry the same value).
_SIGNIFICANT_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")
# user-unreserved + unreserved: what may stay unescaped in a user part (§25.1).
_USER_SAFE = "-_.!~*'()&=+$,;?/"
# param-unreserved + unreserved: what may stay unescaped in a URI parameter.
_PARAM_SAFE = "[]/:&+$-_.!~*'()"


def unquote_string(value: str) -> str:
    """Strip the quotes of a quoted-string and resolve its quoted-pairs (§25.1)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" in inner:
            return _abnf.QUOTED_PAIR_RE.sub(r"\1", inner)
        return inner
    return value


def quote_string(value: str) -> str:
    """Render ``value`` as a quoted-string, escaping backslash and DQUOTE (§25.1)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape_user(user: str) -> str:
    """%-escape a user part for a SIP URI (characters outside user-unreserved, §19.1.2)."""
    return quote(user, safe=_USER_SAFE)


def _unescape_key(name: str) -> str:
    return (unquote(name) if "%" in name else name).lower()


@dataclass(frozen=True, slots=True)
class Params:
    """Ordered ``;name[=value]`` parameters; names compare without case (§7.3.1, §19.1.4).

    Values are kept as sent (a header parameter may be a quoted-string); `get` returns the value
    unquoted, `raw` as sent. A parameter without a value has the value None, so use ``in`` to
    test presence (``rport``, ``lr``).
    """

    items: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def of(cls, params: Mapping[str, str | None] | Iterable[tuple[str, str | None]]) -> Params:
        """Build from a mapping or pairs (values None for flag parameters such as ``lr``)."""
        pairs = params.items() if isinstance(params, Mapping) else params
        return cls(tuple((str(name), value) for name, value in pairs))

    def _find(self, name: str) -> tuple[str, str | None] | None:
        key = name.lower()
        for item in self.items:
            item_name = item[0]
            if item_name == key or item_name.lower() == key:
                return item
            if "%" in item_name and _unescape_key(item_name) == key:
                return item
        return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name`` (quotes removed), None if it has none, ``default`` if absent."""
        item = self._find(name)
        if item is None:
            return default
        value = item[1]
        return unquote_string(value) if value is not None and value[:1] == '"' else value

    def raw(self, name: str) -> str | None:
        """The value of ``name`` exactly as sent (None if absent or valueless)."""
        item = self._find(name)
        return None if item is None else item[1]

    def with_param(self, name: str, value: str | None = None) -> Params:
        """A copy where ``name`` has ``value`` (replacing the first occurrence, else appended)."""
        key = name.lower()
        items = list(self.items)
        for index, (item_name, _) in enumerate(items):
            if item_name.lower() == key:
                items[index] = (item_name, value)
                return Params(tuple(items))
        items.append((name, value))
        return Params(tuple(items))

    def without(self, name: str) -> Params:
        """A copy without any parameter called ``name``."""
        key = name.lower()
        return Params(tuple(item for item in self.items if item[0].lower() != key))

    def names(self) -> list[str]:
        return [name for name, _ in self.items]

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __str__(self) -> str:
        return "".join(
            f";{name}" if value is None else f";{name}={value}" for name, value in self.items
        )


def _split_uri_params(text: str) -> Params:
    # text is ";a=b;c" already validated by the URI regex (no quoting inside URIs).
    if not text:
        return _EMPTY_PARAMS
    items: list[tuple[str, str | None]] = []
    for chunk in text[1:].split(";"):
        name, eq, value = chunk.partition("=")
        items.append((name, value if eq else None))
    return Params(tuple(items))


_EMPTY_PARAMS = Params()


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (§19.1.1), components in wire (escaped) form.

    ``host`` keeps the brackets of an IPv6 reference; `host_address` drops them for sockets.
    ``port`` is None when absent, which §19.1.4 treats differently from an explicit 5060.
    """

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default=_EMPTY_PARAMS)
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP or SIPS URI; anything else raises SipParseError (400)."""
        match = _abnf.SIP_URI_RE.fullmatch(text)
        if match is None or ("%" in text and _abnf.BAD_ESCAPE_RE.search(text)):
            raise SipParseError(400, f"Malformed SIP URI {_excerpt(text)}")
        scheme, user, password, host, port, params, headers = match.groups()
        header_items: tuple[tuple[str, str], ...] = ()
        if headers:
            header_items = tuple(
                (name, value)
                for name, _, value in (chunk.partition("=") for chunk in headers[1:].split("&"))
            )
        return cls(
            host,
            user,
            password,
            None if port is None else int(port),
            _split_uri_params(params),
            header_items,
            scheme.lower(),
        )

    @classmethod
    def build(
        cls,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        params: Mapping[str, str | None] | Iterable[tuple[str, str | None]] = (),
        scheme: str = "sip",
    ) -> SipUri:
        """Build from plain values: %-escapes ``user`` and parameters, brackets a bare IPv6
        ``host``. Raises ValueError for values that cannot form a SIP URI."""
        if scheme not in ("sip", "sips"):
            raise ValueError(f"not a SIP scheme: {scheme!r}")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if _abnf.HOST_RE.fullmatch(host) is None:
            raise ValueError(f"invalid host: {host!r}")
        if port is not None and not 0 <= port <= _abnf.MAX_PORT:
            raise ValueError(f"invalid port: {port!r}")
        return cls(
            host,
            None if user is None else escape_user(user),
            None,
            port,
            Params.of(
                (
                    quote(name, safe=_PARAM_SAFE),
                    None if value is None else quote(value, _PARAM_SAFE),
                )
                for name, value in (params.items() if isinstance(params, Mapping) else params)
            ),
            (),
            scheme,
        )

    @property
    def host_address(self) -> str:
        """The host without IPv6 brackets, as socket functions want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def unescaped_user(self) -> str | None:
        """The user part with %-escapes decoded (§19.1.2); invalid UTF-8 becomes U+FFFD."""
        return None if self.user is None else unquote(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased (transport=UDP and udp are the same)."""
        value = self.param("transport")
        return None if value is None else value.lower()

    @property
    def is_secure(self) -> bool:
        return self.scheme == "sips"

    def param(self, name: str) -> str | None:
        """A URI parameter's value with %-escapes decoded (None if absent or valueless)."""
        value = self.params.get(name)
        return unquote(value) if value is not None and "%" in value else value

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        if self.params.items:
            parts.append(str(self.params))
        if self.headers:
            parts += ("?", "&".join(f"{name}={value}" for name, value in self.headers))
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966), the subscriber number kept as written."""

    number: str
    params: Params = field(default=_EMPTY_PARAMS)
    scheme: str = "tel"

    @classmethod
    def parse(cls, text: str) -> TelUri:
        match = _abnf.TEL_URI_RE.fullmatch(text)
        if match is None or ("%" in text and _abnf.BAD_ESCAPE_RE.search(text)):
            raise SipParseError(400, f"Malformed tel URI {_excerpt(text)}")
        return cls(match.group(1), _split_uri_params(match.group(2)))

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1), as compared in §4."""
        return "".join(ch for ch in self.number if ch not in "-.()")

    def __str__(self) -> str:
        return f"tel:{self.number}{self.params}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI whose scheme we do not interpret (``http:``, ``urn:``, ``soap.beep:``...)."""

    scheme: str
    opaque: str

    @classmethod
    def parse(cls, text: str) -> AbsoluteUri:
        match = _abnf.ABSOLUTE_URI_RE.fullmatch(text)
        if match is None or ("%" in text and _abnf.BAD_ESCAPE_RE.search(text)):
            raise SipParseError(400, f"Malformed URI {_excerpt(text)}")
        return cls(match.group(1).lower(), match.group(2))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri: TypeAlias = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse any URI: sip/sips and tel are interpreted, other schemes stay opaque.

    A malformed sip/sips/tel URI is an error (400) rather than falling back to opaque, because
    a broken SIP URI is never usable as one.
    """
    head = text[:5].lower()
    if head.startswith(("sip:", "sips:")):
        return SipUri.parse(text)
    if head.startswith("tel:"):
        return TelUri.parse(text)
    return AbsoluteUri.parse(text)


def uri_scheme(text: str) -> str:
    """The lower-case scheme of a URI's text, without parsing the rest."""
    return text.partition(":")[0].lower()


def check_request_uri(text: str) -> None:
    """Validate a Request-URI without building it (the request parses it when asked).

    Raises SipParseError 400 for a malformed URI and for a SIP URI with headers, which
    §19.1.1 does not allow in a Request-URI (RFC 4475 §3.1.2.11).
    """
    head = text[:5].lower()
    if head.startswith(("sip:", "sips:")):
        match = _abnf.SIP_URI_RE.fullmatch(text)
        if match is not None and match.group(7):
            raise SipParseError(400, "Request-URI must not contain URI headers")
    elif head.startswith("tel:"):
        match = _abnf.TEL_URI_RE.fullmatch(text)
    else:
        match = _abnf.ABSOLUTE_URI_RE.fullmatch(text)
    if match is None or ("%" in text and _abnf.BAD_ESCAPE_RE.search(text)):
        raise SipParseError(400, f"Malformed URI {_excerpt(text)}")


def _excerpt(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


def _unescape_lower(value: str | None) -> str | None:
    if value is None:
        return None
    return (unquote(value) if "%" in value else value).lower()


def _param_map(params: Params) -> dict[str, str | None]:
    mapped: dict[str, str | None] = {}
    for name, value in params.items:
        mapped.setdefault(_unescape_key(name), _unescape_lower(value))
    return mapped


def _host_key(host: str) -> str:
    """Hosts compare without case; IPv6 references compare as addresses (§19.1.4)."""
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            return host.lower()
    return host.lower()


def _sip_uri_equal(a: SipUri, b: SipUri) -> bool:
    # §19.1.4, rule by rule: schemes must match, userinfo is compared case-sensitively after
    # resolving escapes, host without case, an omitted port never equals an explicit one.
    if a.scheme != b.scheme or a.port != b.port:
        return False
    for left, right in ((a.user, b.user), (a.password, b.password)):
        if (left is None) != (right is None):
            return False
        if (
            left is not None
            and right is not None
            and left != right
            and unquote_to_bytes(left) != unquote_to_bytes(right)
        ):
            return False
    if _host_key(a.host) != _host_key(b.host):
        return False
    pa, pb = _param_map(a.params), _param_map(b.params)
    for name in _SIGNIFICANT_URI_PARAMS:
        if (name in pa or name in pb) and pa.get(name, "\0") != pb.get(name, "\1"):
            return False
    for name in pa.keys() & pb.keys():
        if pa[name] != pb[name]:
            return False
    # "URI header components are never ignored": same set on both sides, values equal.
    ha = {_unescape_key(n): unquote_to_bytes(v) for n, v in a.headers}
    hb = {_unescape_key(n): unquote_to_bytes(v) for n, v in b.headers}
    return ha == hb


def uri_equal(a: Uri, b: Uri) -> bool:
    """Compare two URIs as RFC 3261 §19.1.4 (sip/sips) and RFC 3966 §4 (tel) describe."""
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return _sip_uri_equal(a, b)
    if isinstance(a, TelUri) and isinstance(b, TelUri):
        return a.digits.lower() == b.digits.lower() and _param_map(a.params) == _param_map(b.params)
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.scheme == b.scheme and a.opaque == b.opaque
    return False
