"""Keeps this node registered with every trunk that wants REGISTER (``needs_registration``).

Why here and not in the SIP layer: which trunks exist is control-plane data (the trunk book
reloads it from DynamoDB), while `TrunkRegistration` only knows how to stay registered with one.
This module turns each new trunk set into starts and stops: a new or changed trunk gets a fresh
registration, a deleted one is unregistered (Expires: 0), and a node shutting down unregisters
from all of them so carriers stop sending it calls.

The address-of-record is the trunk's username at the trunk's host, and the Contact is this
node's advertised address with that username, which is what carriers that register DIDs expect.
"""

from __future__ import annotations

import logging
import secrets

from edge_media.sip.endpoint import SipEndpoint, new_branch, new_tag
from edge_media.sip.registration import RegistrationClient
from edge_media.sip.registration_runner import TrunkRegistration
from shared.models import Trunk

__all__ = ["TrunkRegistrations"]

logger = logging.getLogger("agera.edge.trunks")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TrunkRegistrations:
    """The node's registrations, one per registering trunk; `sync` with each new trunk set."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.active: dict[str, tuple[Trunk, TrunkRegistration]] = {}

    def _start(self, trunk: Trunk) -> TrunkRegistration | None:
        if not (trunk.username and trunk.password):
            logger.warning(
                "trunk %s wants registration but has no username/password", trunk.trunk_id
            )
            return None
        if ":" not in trunk.host and not trunk.host.replace(".", "").isdigit():
            logger.warning(
                "trunk %s: registration needs an IP address host (no DNS on the edge yet), got %s",
                trunk.trunk_id,
                trunk.host,
            )
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
            new_call_id=lambda: secrets.token_hex(12),
            new_cnonce=lambda: secrets.token_hex(6),
            transport=trunk.transport.value.upper(),
        )
        registration = TrunkRegistration(
            self.endpoint, client, (trunk.host, trunk.port), trunk.transport.value
        )
        registration.start()
        logger.info("registering with trunk %s at %s", trunk.trunk_id, registrar)
        return registration

    async def sync(self, trunks: list[Trunk]) -> None:
        wanted = {t.trunk_id: t for t in trunks if t.needs_registration}
        for trunk_id, (old, registration) in list(self.active.items()):
            if wanted.get(trunk_id) != old:
                del self.active[trunk_id]
                await registration.stop()
        for trunk_id, trunk in wanted.items():
            if trunk_id not in self.active:
                registration = self._start(trunk)
                if registration is not None:
                    self.active[trunk_id] = (trunk, registration)

    async def stop(self) -> None:
        await self.sync([])
