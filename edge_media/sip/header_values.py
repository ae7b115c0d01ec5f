"""Parsers for the structured SIP header values the stack relies on (RFC 3261 §20, §25.1).

Name-addr (From, To, Contact, Route...), Via, CSeq, Call-ID, Max-Forwards, Content-Type, generic
parameters and comma-separated lists. Why apart from `headers`: these are grammar, not storage;
the message parser calls them only for the fields every layer needs, and each raises only
SipParseError with status 400 so the transport can answer a malformed request without guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.uri import Params, Uri, parse_uri, quote_string, unquote_string

__all__ = [
    "WILDCARD",
    "CSeq",
    "ContentType",
    "NameAddr",
    "Via",
    "check_contacts",
    "check_name_addr",
    "is_rfc1123_date",
    "parse_call_id",
    "parse_contacts",
    "parse_content_type",
    "parse_cseq",
    "parse_max_forwards",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_params",
    "parse_via",
    "split_list",
]

WILDCARD: Final = "*"


_LIST_ITEM_RE = re.compile(
    r'[ \t]*((?:"(?:[^"\\]++|\\[\s\S])*+"|<[^<>]*+>|[^,"<>]++)*+)[ \t]*(,|\Z)'
)


def split_list(value: str, *, strict: bool = True) -> list[str]:
    """Split a list header value at commas outside quoted strings and <> (§7.3.1).

    With ``strict`` an empty element or an unbalanced quote/bracket raises SipParseError;
    otherwise unbalanced text is returned as a single element.
    """
    if '"' not in value and "<" not in value and ">" not in value:
        items = [item.strip(" \t") for item in value.split(",")]
    else:
        items = []
        pos, end = 0, len(value)
        while True:
            match = _LIST_ITEM_RE.match(value, pos)
            if match is None:
                if strict:
                    raise SipParseError(400, "Unbalanced quote or angle bracket in header")
                return [value]
            items.append(match.group(1).rstrip(" \t"))
            pos = match.end()
            if not match.group(2):
                break
            if pos == end:
                items.append("")
                break
    if strict and not all(items):
        raise SipParseError(400, "Empty element in header list")
    return items


def parse_params(text: str, pos: int = 0, *, what: str = "header") -> Params:
    """Parse ``*( SEMI generic-param )`` from ``pos`` to the end of ``text`` (§25.1)."""
    if _abnf.GENERIC_PARAMS_RE.fullmatch(text, pos) is None:
        raise SipParseError(400, f"Malformed parameters in {what}")
    return _validated_params(text, pos)


def _validated_params(text: str, pos: int = 0) -> Params:
    # findall gives "" for a missing value; a present value is never empty (a quoted-string
    # keeps its quotes), so "" means a flag parameter such as lr or rport.
    found = _abnf.GENERIC_PARAM_RE.findall(text, pos)
    if not found:
        return _NO_PARAMS
    return Params(tuple([(name, value or None) for name, value in found]))


_NO_PARAMS = Params()


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Refer-To...

    ``display_name`` is unquoted (None when absent). Parameters after a bare addr-spec are
    header parameters, never URI parameters (§20.10, RFC 4475 §3.3.12).
    """

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=Params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        if _abnf.TOKEN_RE.fullmatch(tag) is None:
            raise ValueError(f"a tag must be a token: {tag!r}")
        return NameAddr(self.uri, self.display_name, self.params.with_param("tag", tag))

    def __str__(self) -> str:
        uri = f"<{self.uri}>"
        if self.display_name is not None:
            uri = f"{quote_string(self.display_name)} {uri}"
        return f"{uri}{self.params}"


_QUOTED_PAIR_ANY_RE = re.compile(r"\\.")
_TOKEN_WORDS_RE = re.compile(rf"{_abnf.TOKEN}(?:[ \t]+{_abnf.TOKEN})*")


def _name_addr_error(value: str, what: str) -> SipParseError:
    """Say precisely what is wrong with a name-addr that failed the grammar (RFC 4475 §3.1.2)."""
    display, bracket, rest = value.partition("<")
    inside = rest.partition(">")[0]
    if _QUOTED_PAIR_ANY_RE.sub("", value).count('"') % 2:
        reason = f"Unterminated quoted string in {what} header"
    elif bracket and inside and (inside[0] in " \t" or inside[-1] in " \t"):
        reason = f"Whitespace inside <> in {what} header"
    elif (
        bracket
        and display.strip(" \t")
        and '"' not in display
        and _TOKEN_WORDS_RE.fullmatch(display.strip(" \t")) is None
    ):
        reason = f"Display name with non-token characters must be quoted in {what} header"
    elif not bracket and "?" in value.partition(";")[0]:
        reason = f"URI with headers must be enclosed in <> in {what} header"
    else:
        reason = f"Malformed {what} header"
    return SipParseError(400, reason)


def _match_name_addr(value: str, what: str) -> re.Match[str]:
    match = _abnf.NAME_ADDR_RE.fullmatch(value)
    if match is None:
        raise _name_addr_error(value, what)
    uri_text = match.group(3) or match.group(4)
    if "%" in uri_text and _abnf.BAD_ESCAPE_RE.search(uri_text):
        raise SipParseError(400, f"Malformed URI in {what} header")
    return match


def _parse_name_addr_item(value: str, what: str) -> NameAddr:
    match = _match_name_addr(value, what)
    quoted, tokens, bracketed, bare, params = match.groups()
    display = unquote_string(quoted) if quoted is not None else tokens
    uri = parse_uri(bracketed or bare)
    return NameAddr(uri, display, _validated_params(params) if params else _NO_PARAMS)


def parse_name_addr(value: str, *, what: str = "header") -> NameAddr:
    """Parse a single ``( name-addr / addr-spec ) *( SEMI generic-param )`` (From, To...)."""
    return _parse_name_addr_item(value.strip(" \t"), what)


def check_name_addr(value: str, *, what: str = "header") -> None:
    """Validate a single name-addr without building it (the parser's fast path)."""
    _match_name_addr(value.strip(" \t"), what)


def parse_name_addr_list(value: str, *, what: str = "header") -> list[NameAddr]:
    """Parse a comma-separated list of name-addrs (Route, Record-Route, Contact, Path...)."""
    return [_parse_name_addr_item(item, what) for item in _split_for(value, what)]


def _split_for(value: str, what: str) -> list[str]:
    try:
        return split_list(value)
    except SipParseError as exc:
        raise SipParseError(400, f"{exc.reason} ({what})") from None


def parse_contacts(values: Iterable[str]) -> tuple[NameAddr, ...] | Literal["*"]:
    """Parse all Contact lines; ``*`` (§10.2.2, remove all bindings) must stand alone."""
    lines = list(values)
    if len(lines) == 1 and lines[0].strip(" \t") == WILDCARD:
        return WILDCARD
    contacts: list[NameAddr] = []
    for line in lines:
        if line.strip(" \t") == WILDCARD:
            raise SipParseError(400, "Contact * combined with other contacts")
        contacts.extend(parse_name_addr_list(line, what="Contact"))
    return tuple(contacts)


def check_contacts(values: Iterable[str]) -> None:
    """Validate Contact lines as `parse_contacts` would, without building them."""
    lines = list(values)
    if len(lines) == 1 and "," not in lines[0] and lines[0] != WILDCARD:
        _match_name_addr(lines[0], "Contact")
        return
    if len(lines) == 1 and lines[0].strip(" \t") == WILDCARD:
        return
    for line in lines:
        if line.strip(" \t") == WILDCARD:
            raise SipParseError(400, "Contact * combined with other contacts")
        for item in _split_for(line, "Contact"):
            _match_name_addr(item, "Contact")


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm (§20.42, RFC 3581 rport). ``transport`` is upper case (UDP, TCP, TLS...)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)
    protocol: str = "SIP"
    version: str = "2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return None if value is None else int(value)

    @property
    def has_rport(self) -> bool:
        """True when the client asked for symmetric response routing (RFC 3581 §3)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value a server filled in (RFC 3581 §4); None if absent or empty."""
        value = self.params.get("rport")
        return None if value is None else int(value)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_param(self, name: str, value: str | None = None) -> Via:
        return Via(
            self.transport,
            self.host,
            self.port,
            self.params.with_param(name, value),
            self.protocol,
            self.version,
        )

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.version}/{self.transport} {self.host}{port}{self.params}"


def _check_via_params(params: Params) -> None:
    for name, value in params.items:
        lowered = name.lower()
        if lowered not in _VIA_PARAM_CHECKS:
            continue
        if lowered == "branch":
            if value is None or value[:1] == '"':
                raise SipParseError(400, "Via branch must be a token")
        elif lowered == "ttl":
            if value is None or _abnf.DIGITS_RE.fullmatch(value) is None or len(value) > 3:
                raise SipParseError(400, "Malformed Via ttl")
            if int(value) > _abnf.MAX_TTL:
                raise SipParseError(400, "Via ttl out of range")
        elif lowered == "rport":
            if value is not None and (
                _abnf.DIGITS_RE.fullmatch(value) is None
                or len(value) > 5
                or int(value) > _abnf.MAX_PORT
            ):
                raise SipParseError(400, "Malformed Via rport")
        elif lowered in ("received", "maddr") and (
            value is None
            or (
                _abnf.HOST_RE.fullmatch(value) is None
                and _abnf.IPV6_ADDRESS_RE.fullmatch(value) is None
            )
        ):
            raise SipParseError(400, f"Malformed Via {lowered}")


_VIA_PARAM_CHECKS = frozenset({"branch", "ttl", "rport", "received", "maddr"})


def parse_via(value: str) -> list[Via]:
    """Parse one Via line, which may hold several comma-separated via-parms (§20.42)."""
    items = [value] if "," not in value else _split_for(value, "Via")
    vias: list[Via] = []
    for item in items:
        match = _abnf.VIA_PARM_RE.fullmatch(item)
        if match is None:
            raise SipParseError(400, "Malformed Via header")
        protocol, version, transport, host, port, param_text = match.groups()
        params = _NO_PARAMS
        if param_text:
            params = _validated_params(param_text)
            _check_via_params(params)
        vias.append(
            Via(
                transport.upper(),
                host,
                None if port is None else int(port),
                params,
                protocol.upper(),
                version,
            )
        )
    return vias


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: number method`` (§20.16); the number is below 2**31 (§8.1.1.5)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    match = _abnf.CSEQ_RE.fullmatch(value)
    if match is None:
        raise SipParseError(400, "Malformed CSeq header")
    digits, method = match.groups()
    if len(digits) > 10 or int(digits) > _abnf.MAX_CSEQ:
        raise SipParseError(400, "CSeq number out of range")
    return CSeq(int(digits), method)


def parse_call_id(value: str) -> str:
    """Validate ``callid = word [ "@" word ]`` (§25.1) and return it unchanged."""
    if _abnf.CALL_ID_RE.fullmatch(value) is None:
        raise SipParseError(400, "Malformed Call-ID header")
    return value


def parse_max_forwards(value: str) -> int:
    """``Max-Forwards: 1*DIGIT`` in 0-255 (§20.22); leading zeros are fine (RFC 4475 wsinv)."""
    if _abnf.DIGITS_RE.fullmatch(value) is None:
        raise SipParseError(400, "Malformed Max-Forwards header")
    stripped = value.lstrip("0")
    if len(stripped) > 3 or int(value) > _abnf.MAX_MAX_FORWARDS:
        raise SipParseError(400, "Max-Forwards out of range")
    return int(value)


def is_rfc1123_date(value: str) -> bool:
    """True when a Date value is an rfc1123-date in GMT (§20.17, RFC 4475 §3.1.2.12)."""
    return _abnf.RFC1123_DATE_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ContentType:
    """A media type (§20.15); ``type``/``subtype`` are lower case, parameters as sent."""

    type: str
    subtype: str
    params: Params = field(default_factory=Params)

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{self.params}"


def parse_content_type(value: str) -> ContentType:
    match = _abnf.MEDIA_TYPE_RE.match(value)
    if match is None:
        raise SipParseError(400, "Malformed Content-Type header")
    params = parse_params(value, match.end(), what="Content-Type header")
    return ContentType(match.group(1).lower(), match.group(2).lower(), params)
