"""SSRF guard for the URLs customers give us (``socket_url``, ``webhook_url``, ``media_server``).

Why: the gateway makes outbound requests to these URLs from inside our network (the callbacks
worker POSTs to ``webhook_url``, edge nodes open WebSockets to ``socket_url``). Without a check, a
customer could point them at the cloud metadata service (``169.254.169.254``), at loopback services
of a node, or at anything private in the VPC, and read or poke it through our machines.

The rule: only ``http``/``https``/``ws``/``wss`` URLs whose host is, and resolves only to, public
unicast addresses. An operator can open private ranges with ``AGERA_SSRF_ALLOW_LIST`` (CIDRs); the
local stack allows loopback that way (``infra/dev.py``).

DNS rebinding: a host name can resolve differently later, so the check at the API (the early,
clear 422 for the user) is not the last line. Whoever connects resolves once with
`checked_addresses` (or an `AddressPolicy`), checks every address, and connects to one of *those*
addresses, never asking the resolver again: the bot WebSocket (``edge_media/drivers/ws_client``),
the HTTP clients of the node and the callbacks worker (``shared/pinned_http``) and the node's SIP
transfer dial. A name that answers public first and private second is then connected to at the
public address it answered first, or refused.

SIP transfer targets (``sip:user@host``) get the same rule (`check_sip_uri`): the node may dial them.

Resolution is injectable (``resolve``): tests pass a fake, never the real DNS. Host spellings that
C resolvers accept as IPv4 (``127.1``, ``0x7f.0.0.1``, ``2130706433``) are parsed here as literals,
so they cannot slip past a fake resolver or a resolver that would treat them as names.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from shared.settings import Settings
from shared.validation import sip_uri_host

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]
"""host name → its addresses as strings; raises OSError when the name does not resolve."""

ALLOWED_SCHEMES = ("http", "https", "ws", "wss")
# A name with more addresses than this is refused rather than checked address by address forever.
MAX_RESOLVED_ADDRESSES = 64
ALLOW_LIST_VARIABLE = "AGERA_SSRF_ALLOW_LIST"

# Host text that may be a legacy IPv4 form (inet_aton: dotted parts in decimal, octal or hex).
_LEGACY_IPV4_RE = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
# IPv6 prefixes that carry an IPv4 address a gateway would forward to (RFC 6052 §2.1 NAT64).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = {ipaddress.IPv4Address("169.254.169.254"), ipaddress.IPv6Address("fd00:ec2::254")}


class UnsafeUrlError(ValueError):
    """A URL the gateway must not call. A ValueError, so pydantic validators may raise it too.

    ``field`` names the request field; ``reason`` is written for the API user; ``str()`` is
    ``"<field>: <reason>"``, the shape of every other 422 message.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class HostUnresolvable(UnsafeUrlError):
    """The host name has no address: a connection failure rather than a policy refusal, which
    callers that tell the two apart (the callbacks worker, the node's connects) report so."""


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to, via the system resolver (getaddrinfo)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_ip_literal(host: str) -> IpAddress | None:
    """``host`` as an IP address if it is one in any spelling a resolver accepts, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4_RE.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_category(address: IpAddress) -> str | None:
    """Why an address is refused ("loopback", "private", ...), or None for a public address."""
    inner = _embedded_ipv4(address)
    if inner is not None:
        return address_category(inner)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address in _METADATA:
        return "link-local (cloud metadata service)"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved (not publicly routable)"
    return None


@lru_cache(maxsize=16)
def _networks(allow_list: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in allow_list)


def _allowed(address: IpAddress, networks: tuple[IpNetwork, ...]) -> bool:
    inner = _embedded_ipv4(address)
    candidates = (address, inner) if inner is not None else (address,)
    return any(candidate in network for candidate in candidates for network in networks)


def _is_localhost_name(host: str) -> bool:
    # RFC 6761 §6.3: "localhost." and names under it are loopback, whatever DNS says.
    name = host.rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _resolved(host: str, field: str, resolve: Resolver) -> tuple[list[IpAddress], bool]:
    """The addresses of ``host`` (resolved at most once) and whether it was an IP literal."""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal], True
    if _is_localhost_name(host):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")], False
    try:
        resolved = resolve(host)
    except (OSError, UnicodeError):
        resolved = []
    if not resolved:
        raise HostUnresolvable(field, f"host {host} does not resolve")
    if len(resolved) > MAX_RESOLVED_ADDRESSES:
        raise UnsafeUrlError(field, f"host {host} resolves to too many addresses")
    addresses = []
    for text in resolved:
        address = parse_ip_literal(text.split("%", 1)[0])
        if address is None:
            raise UnsafeUrlError(field, f"host {host} resolved to an unusable address")
        addresses.append(address)
    return addresses, False


def checked_addresses(
    host: str, field: str, allow_list: tuple[str, ...], resolve: Resolver = resolve_host
) -> list[IpAddress]:
    """Resolve ``host`` once and refuse it unless every address is public or allowed.

    The list returned is what a caller must connect to: asking the resolver again would let a
    rebinding name answer differently the second time. Raises `UnsafeUrlError` naming ``field``
    (`HostUnresolvable` when the name has no address).
    """
    networks = _networks(allow_list)
    addresses, literal = _resolved(host, field, resolve)
    for address in addresses:
        category = address_category(address)
        if category is None or _allowed(address, networks):
            continue
        shown = host if literal else f"{host} ({address})"
        raise UnsafeUrlError(
            field,
            f"{shown} is a {category} address; the gateway only calls public addresses "
            f"(an operator can allow a range with {ALLOW_LIST_VARIABLE})",
        )
    return addresses


def check_public_url(
    url: str, field: str, settings: Settings, resolve: Resolver = resolve_host
) -> None:
    """Refuse ``url`` unless its scheme is http(s)/ws(s) and every address of its host is public.

    Addresses inside ``settings.ssrf_allow_list`` pass although private. Raises UnsafeUrlError
    naming ``field``. ``resolve`` is called only for host names, never for IP literals.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise UnsafeUrlError(field, "is not a valid URL") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsafeUrlError(field, "must use http://, https://, ws:// or wss://")
    if not host:
        raise UnsafeUrlError(field, "must include a host")
    checked_addresses(host, field, settings.ssrf_allow_list, resolve)


def check_sip_uri(
    uri: str, field: str, settings: Settings, resolve: Resolver = resolve_host
) -> list[IpAddress]:
    """Refuse a ``sip:``/``sips:`` transfer target whose host is not public (or allowed).

    Why: the node dials a SIP URI itself when the far end cannot take a REFER, so the URI's host
    is an address our network connects to, exactly like a webhook URL. Returns the checked
    addresses (the node dials the first one, never a second lookup).
    """
    try:
        host = sip_uri_host(uri)
    except ValueError as error:
        raise UnsafeUrlError(field, str(error)) from None
    return checked_addresses(host, field, settings.ssrf_allow_list, resolve)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The SSRF rule bound to one allow list and one resolver, for whoever opens connections.

    A connector asks `addresses` once per connection and connects only to what it returns, so
    the address checked is the address used (no DNS rebinding between check and connect).
    ``resolve`` is injectable: tests pass a fake and the real DNS is never asked.
    """

    allow_list: tuple[str, ...] = ()
    resolve: Resolver = resolve_host

    @classmethod
    def from_settings(cls, settings: Settings, resolve: Resolver = resolve_host) -> AddressPolicy:
        return cls(settings.ssrf_allow_list, resolve)

    def addresses(self, host: str, field: str) -> list[str]:
        """The checked addresses of ``host``, as strings to connect to; `UnsafeUrlError` if any
        address is refused (`HostUnresolvable` when there is none)."""
        return [str(a) for a in checked_addresses(host, field, self.allow_list, self.resolve)]

    def lookup(self, host: str) -> list[str]:
        """The addresses of ``host`` without the check, for the operator's own configured hosts
        (provider API origins): resolved once all the same, so the connection uses them."""
        return [str(a) for a in _resolved(host, "host", self.resolve)[0]]

    def needs_dns(self, host: str) -> bool:
        """False when ``host`` is an IP literal or a localhost name: no lookup, no thread."""
        return parse_ip_literal(host) is None and not _is_localhost_name(host)
