"""Which sources may send us INVITEs: carrier trunks by address, loopback for the local stack.

Why by address: carriers do not authenticate with digest; they send from documented IP ranges,
and every SBC filters on them. A source outside the list gets 403 before any routing work is
done (issue 3, "Protection"). Extensions authenticate with digest instead (registrar).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["SourceAcl"]

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class SourceAcl:
    """A set of networks; `allows` answers for one source IP (v4, v6 or v4-mapped v6)."""

    def __init__(self, networks: Iterable[str] = (), *, trust_loopback: bool = False) -> None:
        nets = [ipaddress.ip_network(n, strict=False) for n in networks]
        if trust_loopback:
            nets.extend(_LOOPBACK)
        self._v4 = tuple(n for n in nets if n.version == 4)
        self._v6 = tuple(n for n in nets if n.version == 6)

    def allows(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        networks = self._v4 if address.version == 4 else self._v6
        return any(address in network for network in networks)
