"""Keeps this node registered with every trunk that wants REGISTER (``needs_registration``).

Why here and not in the SIP layer: which trunks exist is control-plane data (the trunk book
reloads it from DynamoDB), while `TrunkRegistration` only knows how to stay registered with one.
This module turns each new trunk set into starts and stops: a new or changed trunk gets a fresh
registration, a deleted one is unregistered (Expires: 0), and a node shutting down unregisters
from all of them so carriers stop sending it calls.

The address-of-record is the trunk's username at the trunk's host, and the Contact is this
node's advertised address with that username, which is what carriers that register DIDs expect.

`states` is what the node's heartbeat publishes (``EdgeNode.trunk_registrations``, shown on the
dashboard's trunks page): each registration's snapshot, and a ``failed`` entry for a trunk this
node cannot register with at all (no credentials, a host name), so the page says why instead of
"registering" forever.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime

from edge_media.sip.endpoint import SipEndpoint, new_branch, new_tag
from edge_media.sip.registration import RegistrationClient
from edge_media.sip.registration_runner import FAILED, TrunkRegistration
from shared.clock import utc_now
from shared.models import Trunk, TrunkRegistrationState

__all__ = ["TrunkRegistrations"]

logger = logging.getLogger("agera.edge.trunks")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TrunkRegistrations:
    """The node's registrations, one per registering trunk; `sync` with each new trunk set."""

    def __init__(self, endpoint: SipEndpoint, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.active: dict[str, tuple[Trunk, TrunkRegistration]] = {}
        # Trunks that want REGISTER but that this node cannot register with: (trunk, why, since).
        self.refused: dict[str, tuple[Trunk, str, datetime]] = {}

    def _refuse(self, trunk: Trunk, reason: str) -> None:
        known = self.refused.get(trunk.trunk_id)
        if known is None or known[0] != trunk:
            self.refused[trunk.trunk_id] = (trunk, reason, self.clock())

    def _start(self, trunk: Trunk) -> TrunkRegistration | None:
        if not (trunk.username and trunk.password):
            logger.warning(
                "trunk %s wants registration but has no username/password", trunk.trunk_id
            )
            self._refuse(trunk, "the trunk has no username and password")
            return None
        if ":" not in trunk.host and not trunk.host.replace(".", "").isdigit():
            logger.warning(
                "trunk %s: registration needs an IP address host (no DNS on the edge yet), got %s",
                trunk.trunk_id,
                trunk.host,
            )
            self._refuse(trunk, "registration needs an IP address host (no DNS on the edge yet)")
            return None
        host, port = self.endpoint.advertised
        registrar = f"{_host(trunk.host)}:{trunk.port}"
        client = RegistrationClient(
            registrar=f"sip:{registrar}",
            aor=f"sip:{trunk.username}@{registrar}",
            contact=f"<sip:{trunk.username}@{_host(host)}:{port}>",
            username=trunk.username,
            password=trunk.password,
            local_address=(host, port),
            new_branch=new_branch,
            new_tag=new_tag,
            new_call_id=self.endpoint.new_call_id,
            new_cnonce=lambda: secrets.token_hex(6),
            transport=trunk.transport.value.upper(),
        )
        registration = TrunkRegistration(
            self.endpoint, client, (trunk.host, trunk.port), trunk.transport.value, clock=self.clock
        )
        registration.start()
        logger.info("registering with trunk %s at %s", trunk.trunk_id, registrar)
        return registration

    async def sync(self, trunks: list[Trunk]) -> None:
        wanted = {t.trunk_id: t for t in trunks if t.needs_registration}
        self.refused = {k: v for k, v in self.refused.items() if wanted.get(k) == v[0]}
        for trunk_id, (old, registration) in list(self.active.items()):
            if wanted.get(trunk_id) != old:
                del self.active[trunk_id]
                await registration.stop()
        for trunk_id, trunk in wanted.items():
            if trunk_id not in self.active:
                registration = self._start(trunk)
                if registration is not None:
                    self.refused.pop(trunk_id, None)
                    self.active[trunk_id] = (trunk, registration)

    async def stop(self) -> None:
        await self.sync([])

    def states(self) -> dict[str, TrunkRegistrationState]:
        """Per trunk id, this node's registration as the heartbeat publishes it (no secrets:
        the snapshot carries states, status codes, reasons and times only)."""
        published: dict[str, TrunkRegistrationState] = {}
        for trunk_id, (trunk, reason, since) in self.refused.items():
            published[trunk_id] = TrunkRegistrationState(
                account_id=trunk.account_id, state=FAILED, reason=reason, since=since
            )
        for trunk_id, (trunk, registration) in self.active.items():
            snap = registration.snapshot()
            published[trunk_id] = TrunkRegistrationState(
                account_id=trunk.account_id,
                state=snap.state,
                status_code=snap.status_code,
                reason=snap.reason,
                expires_at=snap.expires_at,
                since=snap.since,
            )
        return published
