"""Which sources may send us INVITEs without digest, and which accounts' numbers they may reach.

Why by address: carriers do not authenticate with digest; they send from documented IP ranges,
and every SBC filters on them. Extensions authenticate with digest instead (registrar).

Why per trunk: a trunk's ``inbound_sources`` are its own account's carrier, not the gateway's.
Trusting the union of every account's sources for every number would let one tenant's carrier
(or anyone who obtained a range a tenant typed in) call every other tenant's numbers without
credentials. So a trunk source's `SourceTrust` names the accounts whose trunks list it, and the
router refuses numbers of other accounts. Operator sources (``AGERA_SIP_TRUSTED_SOURCES``) and
loopback (``AGERA_TRUST_LOOPBACK``) stay trusted for any account, as before.

Why a table per prefix length: `TrustMap.lookup` runs for every request the transport admits
(rate-limit and ban exemption) and every INVITE. Masking the address once per distinct prefix
length and probing a dict costs at most 33 (IPv4) or 129 (IPv6) probes whatever the number of
trunks, usually two or three, and repeated sources hit a bounded memo first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ANYWHERE", "SourceTrust", "TrustMap", "parse_source"]

_LOOPBACK = ("127.0.0.0/8", "::1/128")
MEMO_SIZE = 4096  # sources remembered per map; cleared when full (spoofed floods stay bounded)

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class SourceTrust:
    """Why a source is trusted: ``anywhere`` (operator setting, loopback) or by the trunks of
    ``accounts``, whose numbers are then the only ones it may call."""

    accounts: frozenset[str] = frozenset()
    anywhere: bool = False

    def may_reach(self, account_id: str) -> bool:
        return self.anywhere or account_id in self.accounts

    def merged(self, other: SourceTrust) -> SourceTrust:
        if self.anywhere or other.anywhere:
            return ANYWHERE
        return SourceTrust(self.accounts | other.accounts)


ANYWHERE = SourceTrust(anywhere=True)


def parse_source(source: str) -> _Address | None:
    """An IP from a socket address string: scope id dropped, v4-mapped v6 as v4; None if not IP."""
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustMap:
    """Immutable source → `SourceTrust` map; build a new one when the trunks change.

    ``networks`` are trusted for any account; ``trunk_sources`` are ``(cidr, account_id)``
    pairs. A source inside several networks gets the union (any one ``anywhere`` wins): one
    carrier serving two tenants may call both tenants' numbers.
    """

    __slots__ = ("_memo", "_tables")

    def __init__(
        self,
        networks: Iterable[str] = (),
        trunk_sources: Iterable[tuple[str, str]] = (),
        *,
        trust_loopback: bool = False,
    ) -> None:
        merged: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, SourceTrust] = {}

        def add(cidr: str, trust: SourceTrust) -> None:
            network = ipaddress.ip_network(cidr, strict=False)
            if isinstance(network, ipaddress.IPv6Network):
                mapped = network.network_address.ipv4_mapped
                if mapped is not None and network.prefixlen >= 96:  # ::ffff:a.b.c.d/n
                    network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            old = merged.get(network)
            merged[network] = trust if old is None else old.merged(trust)

        for cidr in [*networks, *(_LOOPBACK if trust_loopback else ())]:
            add(cidr, ANYWHERE)
        for cidr, account_id in trunk_sources:
            add(cidr, SourceTrust(frozenset((account_id,))))
        tables: dict[int, dict[int, dict[int, SourceTrust]]] = {4: {}, 6: {}}
        for network, trust in merged.items():
            bits = network.max_prefixlen - network.prefixlen
            by_prefix = tables[network.version].setdefault(network.prefixlen, {})
            by_prefix[int(network.network_address) >> bits] = trust
        self._tables = {
            version: tuple(
                ((128 if version == 6 else 32) - length, table)
                for length, table in sorted(by_length.items(), reverse=True)
            )
            for version, by_length in tables.items()
        }
        self._memo: dict[str, SourceTrust | None] = {}

    def __bool__(self) -> bool:
        return any(self._tables.values())

    def lookup(self, source: str) -> SourceTrust | None:
        """The trust of ``source`` (an IP string), None when it is not trusted at all."""
        memo = self._memo
        if source in memo:
            return memo[source]
        address = parse_source(source)
        found: SourceTrust | None = None
        if address is not None:
            value = int(address)
            for shift, table in self._tables[address.version]:
                trust = table.get(value >> shift)
                if trust is not None:
                    found = trust if found is None else found.merged(trust)
                    if found.anywhere:
                        break
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[source] = found
        return found

    def allows(self, source: str) -> bool:
        """Whether ``source`` is trusted for at least one account (skips digest)."""
        return self.lookup(source) is not None
