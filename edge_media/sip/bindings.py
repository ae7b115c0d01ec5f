"""Registered contacts: the binding record, where calls to it go, and the in-memory store.

Why a module of its own: the registrar (`registrar.py`) decides what a REGISTER changes, while
the UA reads bindings to route calls to extensions and the I/O layer persists and reloads them;
all three share these types. Expiry is driven by the ``now`` callers pass in, never by a clock.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edge_media.sip.header_values import NameAddr
from edge_media.sip.uri import SipUri, uri_equal

__all__ = [
    "MAX_AORS",
    "MAX_BINDINGS_PER_AOR",
    "Aor",
    "Binding",
    "BindingStore",
    "Target",
]

MAX_BINDINGS_PER_AOR = 10  # contacts one extension may hold at once (several phones + reboots)
MAX_AORS = 100_000  # extensions with bindings held by one node
DEFAULT_SIP_PORT = 5060
SIPS_PORT = 5061
_Q_DEFAULT = 1.0  # ordering weight of a contact sent without q (RFC 3261 leaves it open)
_HEAP_SLACK = 64  # stale expiry entries tolerated beyond twice the live bindings


class Aor(NamedTuple):
    """An address-of-record, keyed the way extensions are stored (``EXT#account#ext``).

    Phones put whatever host they were configured with in To (an IP, a DNS name), so the AOR is
    the extension's identity, not the To URI.
    """

    account_id: str
    extension: str

    def __str__(self) -> str:
        return f"{self.account_id}/{self.extension}"


class Target(NamedTuple):
    """Where a request to a registered contact goes: Request-URI, next hop, transport."""

    uri: SipUri
    address: tuple[str, int]
    transport: str


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an AOR with where it registered from (source) and until when."""

    aor: Aor
    contact: NameAddr  # as the phone sent it, without the expires parameter
    source: tuple[str, int]  # where the REGISTER came from (the NAT's public side)
    transport: str  # "udp" or "tcp", lower case
    expires_at: float
    registered_at: float  # first REGISTER that created it
    updated_at: float  # last REGISTER that refreshed it
    call_id: str
    cseq: int
    q: float | None = None
    user_agent: str | None = None

    @property
    def uri(self) -> SipUri:
        uri = self.contact.uri
        if not isinstance(uri, SipUri):  # the registrar refuses other contacts
            raise TypeError(f"binding contact is not a SIP URI: {uri}")
        return uri

    @property
    def source_text(self) -> str:
        """``host:port`` of the source, IPv6 in brackets (shared.models.Registration.source)."""
        host, port = self.source
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def behind_nat(self) -> bool:
        """True when the Contact does not name the address the REGISTER came from."""
        uri = self.uri
        default = SIPS_PORT if uri.is_secure else DEFAULT_SIP_PORT
        return (uri.host_address.lower(), uri.port or default) != (
            self.source[0].lower(),
            self.source[1],
        )

    def remaining(self, now: float) -> int:
        """Whole seconds left, as listed in a 200 (at least 1 while the binding is alive)."""
        return max(1, math.floor(self.expires_at - now + 0.5))

    def target(self) -> Target:
        """Where to send a request for this contact.

        The Request-URI is the registered Contact URI (RFC 3261 §10.2: the proxy retargets to
        it); the next hop is the source address and transport of the REGISTER, because a phone
        behind NAT is only reachable through the mapping its REGISTER opened (over TCP, through
        the very connection it came on). A phone not behind NAT registers from its Contact
        address, so the two agree.
        """
        return Target(self.uri, self.source, self.transport)

    def listed(self, now: float) -> str:
        """The Contact value for a 200: as registered, with the remaining ``expires``."""
        params = self.contact.params.without("expires").with_param(
            "expires", str(self.remaining(now))
        )
        return str(NameAddr(self.contact.uri, self.contact.display_name, params))


def _order_key(binding: Binding) -> tuple[float, float, float]:
    # Highest q first, then the most recently refreshed, then the newest.
    q = _Q_DEFAULT if binding.q is None else binding.q
    return (-q, -binding.updated_at, -binding.registered_at)


class BindingStore:
    """Bindings per AOR in memory, bounded, with expiry driven by ``now``.

    Expiry uses a heap of (expires_at, AOR) entries, so `expire` costs only what expired;
    refreshes leave stale entries behind, dropped when popped and compacted when they pile up.
    """

    def __init__(
        self,
        *,
        max_aors: int = MAX_AORS,
        max_bindings_per_aor: int = MAX_BINDINGS_PER_AOR,
    ) -> None:
        if max_aors < 1 or max_bindings_per_aor < 1:
            raise ValueError("store limits must be positive")
        self.max_aors = max_aors
        self.max_bindings_per_aor = max_bindings_per_aor
        self._by_aor: dict[Aor, tuple[Binding, ...]] = {}
        self._heap: list[tuple[float, int, Aor]] = []
        self._pushes = 0
        self._count = 0

    def __len__(self) -> int:
        """Bindings held, expired ones not yet swept included."""
        return self._count

    def __contains__(self, aor: object) -> bool:
        return aor in self._by_aor

    def aors(self) -> Iterator[Aor]:
        return iter(list(self._by_aor))

    def bindings(self, aor: Aor) -> tuple[Binding, ...]:
        """Everything stored for ``aor``, expired or not, in storage order."""
        return self._by_aor.get(aor, ())

    def contacts_for(self, aor: Aor, now: float) -> list[Binding]:
        """Live bindings of ``aor``: highest q first, then the most recently refreshed."""
        return sorted((b for b in self._by_aor.get(aor, ()) if b.expires_at > now), key=_order_key)

    def has_room_for(self, aor: Aor) -> bool:
        return aor in self._by_aor or len(self._by_aor) < self.max_aors

    def replace(self, aor: Aor, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the whole set of ``aor`` (empty removes the AOR).

        Raises ValueError when a limit would be exceeded; the registrar checks them first.
        """
        if any(b.aor != aor for b in bindings):
            raise ValueError("every binding must belong to the AOR being replaced")
        if len(bindings) > self.max_bindings_per_aor:
            raise ValueError(f"more than {self.max_bindings_per_aor} bindings for {aor}")
        if bindings and not self.has_room_for(aor):
            raise ValueError(f"the store already holds {self.max_aors} AORs")
        old = self._by_aor.pop(aor, ())
        self._count -= len(old)
        if not bindings:
            return
        self._by_aor[aor] = tuple(bindings)
        self._count += len(bindings)
        # Times already in the heap for this AOR are still there: they are only popped once
        # due, when every binding at that time has expired.
        for expires_at in sorted({b.expires_at for b in bindings} - {b.expires_at for b in old}):
            self._push(expires_at, aor)
        if len(self._heap) > 2 * self._count + _HEAP_SLACK:
            self._compact()

    def restore(self, binding: Binding, now: float) -> bool:
        """Load a persisted binding (after a restart); False if expired or over a limit."""
        if binding.expires_at <= now:
            return False
        current = [b for b in self.bindings(binding.aor) if not uri_equal(b.uri, binding.uri)]
        if len(current) >= self.max_bindings_per_aor or not self.has_room_for(binding.aor):
            return False
        self.replace(binding.aor, [*current, binding])
        return True

    def remove_aor(self, aor: Aor) -> list[Binding]:
        """Drop every binding of ``aor`` (the extension was deleted); returns them."""
        removed = list(self._by_aor.get(aor, ()))
        self.replace(aor, ())
        return removed

    def next_expiry(self) -> float | None:
        """When `expire` next has work (possibly earlier, for a since-refreshed binding)."""
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> list[Binding]:
        """Remove bindings whose time has come; returns them, earliest first."""
        removed: list[Binding] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, aor = heapq.heappop(self._heap)
            current = self._by_aor.get(aor)
            if not current:
                continue
            gone = [b for b in current if b.expires_at <= now]
            if gone:
                self.replace(aor, [b for b in current if b.expires_at > now])
                removed.extend(gone)
        removed.sort(key=lambda b: b.expires_at)
        return removed

    def _push(self, expires_at: float, aor: Aor) -> None:
        self._pushes += 1
        heapq.heappush(self._heap, (expires_at, self._pushes, aor))

    def _compact(self) -> None:
        self._heap = []
        for aor, bindings in self._by_aor.items():
            for expires_at in sorted({b.expires_at for b in bindings}):
                self._pushes += 1
                self._heap.append((expires_at, self._pushes, aor))
        heapq.heapify(self._heap)
