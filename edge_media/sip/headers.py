"""SIP header fields as an ordered, case-insensitive multi-map (RFC 3261 §7.3).

`Headers` keeps (original name, canonical key, value) like h11 and websockets do: lookups ignore
case and map compact forms (``v`` is ``Via``, §7.3.3), while serialising writes the names the
peer used. Why the values stay text here: most header fields are only ever copied, so they are
parsed on demand by `header_values` (name-addr, Via, CSeq, Content-Type, parameters), which needs
nothing from this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from edge_media.sip import _abnf
from edge_media.sip.errors import DuplicateHeaderError
from edge_media.sip.header_values import split_list

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "Headers",
    "canonical_name",
    "header_key",
]

# Canonical spelling of the header fields we know; the key of each is its lower-case form.
_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Answer-Mode", "Authentication-Info", "Authorization",
    "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Diversion",
    "Error-Info", "Event", "Expires", "Flow-Timer", "From", "History-Info", "Identity",
    "Identity-Info", "In-Reply-To", "Join", "Max-Forwards", "MIME-Version", "Min-Expires",
    "Min-SE", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority",
    "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Security-Client",
    "Security-Server", "Security-Verify", "Server", "Service-Route", "Session-Expires",
    "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip

# §7.3.3 and the IANA registry: compact form -> key of the long form.
COMPACT_FORMS: Final = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Header fields whose grammar is a comma-separated list, so several lines are equivalent to one
# line joined by commas (§7.3.1). Everything else (WWW-Authenticate, Authorization, Date, ...)
# has commas inside a single value and is never split.
LIST_HEADERS: Final = frozenset(
    {
        "accept", "accept-contact", "accept-encoding", "accept-language",
        "accept-resource-priority", "alert-info", "allow", "allow-events", "call-info",
        "contact", "content-encoding", "content-language", "diversion", "error-info",
        "history-info", "in-reply-to", "p-asserted-identity", "p-preferred-identity", "path",
        "proxy-require", "reason", "record-route", "reject-contact", "request-disposition",
        "require", "route", "security-client", "security-server", "security-verify",
        "service-route", "supported", "unsupported", "via", "warning",
    }
)  # fmt: skip

_DISPLAY: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
# Exact spellings seen on the wire -> key; unknown spellings go through header_key's slow path.
_KEY_OF: dict[str, str] = {}
for _name in _KNOWN_NAMES:
    _KEY_OF[_name] = _KEY_OF[_name.lower()] = _name.lower()
for _compact, _key in COMPACT_FORMS.items():
    _KEY_OF[_compact] = _KEY_OF[_compact.upper()] = _key
# Spellings common on the wire besides the canonical ones.
for _variant in ("Call-Id", "CSEQ", "Cseq", "Max-forwards", "Content-length", "Content-type"):
    _KEY_OF[_variant] = _variant.lower()

del _name, _compact, _key, _variant


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms mapped to long forms."""
    key = _KEY_OF.get(name)
    if key is not None:
        return key
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


def canonical_name(name: str) -> str:
    """The conventional spelling of a header name (``cseq`` -> ``CSeq``, ``i`` -> ``Call-ID``)."""
    key = header_key(name)
    display = _DISPLAY.get(key)
    if display is not None:
        return display
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def _check_field(name: str, value: str) -> None:
    if _abnf.TOKEN_RE.fullmatch(name) is None:
        raise ValueError(f"invalid header name: {name!r}")
    # CR or LF would let a value inject header lines. Other control characters are left to
    # the caller: a parsed value may legally hold them inside a quoted-pair (RFC 4475 §3.1.1.2).
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value contains CR or LF: {value!r}")


class Headers:
    """Ordered header fields with case-insensitive, compact-form-aware lookup.

    Immutable: the ``with_*``/``without`` methods return new instances, so a parsed message
    can be shared between the transaction and the UA layer without copies.
    """

    __slots__ = ("_entries", "_index")

    _entries: tuple[tuple[str, str, str], ...]
    _index: dict[str, list[str]]

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        entries: list[tuple[str, str, str]] = []
        index: dict[str, list[str]] = {}
        for name, value in items:
            _check_field(name, value)
            key = header_key(name)
            entries.append((name, key, value))
            if key in index:
                index[key].append(value)
            else:
                index[key] = [value]
        self._entries = tuple(entries)
        self._index = index

    @classmethod
    def _trusted(
        cls, entries: tuple[tuple[str, str, str], ...], index: dict[str, list[str]]
    ) -> Headers:
        """Wrap entries the parser already validated (skips the per-field checks)."""
        headers = object.__new__(cls)
        headers._entries = entries
        headers._index = index
        return headers

    @classmethod
    def _from_entries(cls, entries: Iterable[tuple[str, str, str]]) -> Headers:
        entries = tuple(entries)
        index: dict[str, list[str]] = {}
        for _, key, value in entries:
            if key in index:
                index[key].append(value)
            else:
                index[key] = [value]
        return cls._trusted(entries, index)

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The single value of ``name``, or ``default`` if absent.

        Several lines of a list header (Via, Supported...) are joined with ", " as §7.3.1
        allows; several lines of any other header raise DuplicateHeaderError (400), because
        picking one of two Call-IDs would be a guess (RFC 4475 §3.3.8).
        """
        key = _KEY_OF.get(name) or header_key(name)
        values = self._index.get(key)
        if not values:
            return default
        if len(values) == 1:
            return values[0]
        if key in LIST_HEADERS:
            return ", ".join(values)
        raise DuplicateHeaderError(canonical_name(key))

    def get_lines(self, name: str) -> list[str]:
        """Each line's value of ``name`` as received, in order (no comma splitting)."""
        return list(self._index.get(_KEY_OF.get(name) or header_key(name), ()))

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``; list headers are split at commas outside quotes and <>."""
        key = _KEY_OF.get(name) or header_key(name)
        values = self._index.get(key)
        if not values:
            return []
        if key not in LIST_HEADERS:
            return list(values)
        result: list[str] = []
        for value in values:
            result.extend(item for item in split_list(value, strict=False) if item)
        return result

    def count(self, name: str) -> int:
        """How many lines carry ``name``."""
        return len(self._index.get(_KEY_OF.get(name) or header_key(name), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (_KEY_OF.get(name) or header_key(name)) in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name as written, value) pairs in wire order."""
        return ((name, value) for name, _, value in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> tuple[tuple[str, str, str], ...]:
        """(original name, canonical key, value) triples in wire order."""
        return self._entries

    # -- copies with changes -----------------------------------------------------------------
    def with_added(self, name: str, value: str) -> Headers:
        """A copy with one more line at the end."""
        _check_field(name, value)
        return Headers._from_entries((*self._entries, (name, header_key(name), value)))

    def with_prepended(self, name: str, value: str) -> Headers:
        """A copy with one more line first among lines of that name (a new top Via, §18.1.1)."""
        _check_field(name, value)
        key = header_key(name)
        entries = list(self._entries)
        position = next((i for i, entry in enumerate(entries) if entry[1] == key), len(entries))
        entries.insert(position, (name, key, value))
        return Headers._from_entries(entries)

    def with_replaced(self, name: str, value: str) -> Headers:
        """A copy where ``name`` has one line holding ``value`` (in place of the first one)."""
        _check_field(name, value)
        key = header_key(name)
        entries: list[tuple[str, str, str]] = []
        placed = False
        for entry in self._entries:
            if entry[1] != key:
                entries.append(entry)
            elif not placed:
                entries.append((entry[0], key, value))
                placed = True
        if not placed:
            entries.append((name, key, value))
        return Headers._from_entries(entries)

    def without(self, name: str) -> Headers:
        """A copy without any line of ``name``."""
        key = header_key(name)
        return Headers._from_entries(entry for entry in self._entries if entry[1] != key)

    # -- wire form ---------------------------------------------------------------------------
    def serialize(self) -> str:
        """``Name: value CRLF`` per line, with the names as written (§7.3)."""
        return "".join([f"{name}: {value}\r\n" for name, _, value in self._entries])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [entry[1:] for entry in self._entries] == [entry[1:] for entry in other._entries]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({[(name, value) for name, _, value in self._entries]!r})"
