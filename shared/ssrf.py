"""SSRF guard for the URLs customers give us (``socket_url``, ``webhook_url``, ``media_server``).

Why: the gateway makes outbound requests to these URLs from inside our network (the callbacks
worker POSTs to ``webhook_url``, edge nodes open WebSockets to ``socket_url``). Without a check, a
customer could point them at the cloud metadata service (``169.254.169.254``), at loopback services
of a node, or at anything private in the VPC, and read or poke it through our machines.

The rule: only ``http``/``https``/``ws``/``wss`` URLs whose host is, and resolves only to, public
unicast addresses. An operator can open private ranges with ``AGERA_SSRF_ALLOW_LIST`` (CIDRs); the
local stack allows loopback that way (``infra/dev.py``).

What this does not do, and where it belongs: a hostname can resolve differently later (DNS
rebinding), so whoever connects must check the address it actually connects to again. This check at
the API is the early, clear 422 for the user; it is not the last line.

Resolution is injectable (``resolve``): tests pass a fake, never the real DNS. Host spellings that
C resolvers accept as IPv4 (``127.1``, ``0x7f.0.0.1``, ``2130706433``) are parsed here as literals,
so they cannot slip past a fake resolver or a resolver that would treat them as names.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from functools import lru_cache
from urllib.parse import urlsplit

from shared.settings import Settings

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
    networks = _networks(settings.ssrf_allow_list)
    literal = parse_ip_literal(host)
    if literal is not None:
        addresses = [literal]
    elif _is_localhost_name(host):
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    else:
        try:
            resolved = resolve(host)
        except (OSError, UnicodeError):
            resolved = []
        if not resolved:
            raise UnsafeUrlError(field, f"host {host} does not resolve")
        if len(resolved) > MAX_RESOLVED_ADDRESSES:
            raise UnsafeUrlError(field, f"host {host} resolves to too many addresses")
        addresses = []
        for text in resolved:
            address = parse_ip_literal(text.split("%", 1)[0])
            if address is None:
                raise UnsafeUrlError(field, f"host {host} resolved to an unusable address")
            addresses.append(address)
    for address in addresses:
        category = address_category(address)
        if category is None or _allowed(address, networks):
            continue
        shown = host if literal is not None else f"{host} ({address})"
        raise UnsafeUrlError(
            field,
            f"{shown} is a {category} address; the gateway only calls public addresses "
            f"(an operator can allow a range with {ALLOW_LIST_VARIABLE})",
        )
