"""The edge media node: one process that terminates SIP and RTP and runs call applications.

It assembles the layers from settings: the SIP endpoint (UDP+TCP), the user agent, the RTP
port range and the one `MediaClock` that paces every call's outbound audio. Routing is
deliberately small here (the echo line, else 404); numbers, extensions, webhooks and bots plug
into `route` (issue 5). Shutdown drains: new INVITEs get 503 with Retry-After, live calls may
finish for ``drain_seconds``, the rest are hung up with cause SYSTEM_SHUTDOWN.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets

from edge_media.apps.echo import ECHO_USER, echo_app
from edge_media.rtp.ports import PortAllocator
from edge_media.rtp.transport import MediaClock, monotonic_clock_for
from edge_media.sip.acl import SourceAcl
from edge_media.sip.call import SipCall
from edge_media.sip.digest import DigestServer
from edge_media.sip.endpoint import SipEndpoint, new_tag
from edge_media.sip.extensions import ExtensionDirectory, StaticDirectory
from edge_media.sip.registrar import Registrar
from edge_media.sip.transport import SipTransportConfig
from edge_media.sip.ua import CallApp, Reject, UserAgent
from shared.settings import Settings

__all__ = ["EdgeNode"]

logger = logging.getLogger("agera.edge")


class EdgeNode:
    """``await start()``, then ``await stop()`` (drains); `ua` places and tracks calls."""

    def __init__(self, settings: Settings, *, directory: ExtensionDirectory | None = None) -> None:
        self.settings = settings
        self.directory = directory or StaticDirectory()
        # Nonces are checked by the node that issued them (a phone's REGISTER and INVITE reach
        # the same worker: same 4-tuple), so a per-process secret is enough.
        self.registrar = Registrar(
            DigestServer(
                settings.sip_realm,
                secrets.token_bytes(32),
                algorithms=settings.sip_digest_algorithms,
                uri_match="host",
            ),
            new_tag=new_tag,
        )
        self.acl = SourceAcl(settings.sip_trusted_sources, trust_loopback=settings.trust_loopback)
        self.ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.endpoint = SipEndpoint(
            settings.sip_host,
            settings.sip_port,
            advertised_host=settings.advertised_address,
            transport_config=SipTransportConfig(reuse_port=settings.media_workers > 1),
        )
        self.clock: MediaClock | None = None
        self.ua: UserAgent | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.clock = MediaClock.create(loop=loop, clock=monotonic_clock_for(loop))
        self.ua = UserAgent(
            self.endpoint,
            ports=self.ports,
            pacer=self.clock.pacer,
            router=self.route,
            source_allowed=self.acl.allows,
            media_host=self.settings.sip_host,
            advertised_media=self.settings.advertised_address,
            playout_seconds=self.settings.max_playout_seconds,
            registrar=self.registrar,
            directory=self.directory,
            rtp_timeout=self.settings.rtp_timeout_seconds,
        )
        await self.endpoint.start()
        self.clock.start()
        self.ua.start_media_sweep()
        logger.info(
            "edge node up: SIP %s:%d, RTP %d-%d, echo %s",
            *self.endpoint.local_addr,
            self.settings.rtp_port_min,
            self.settings.rtp_port_max,
            "on" if self.settings.echo_enabled else "off",
        )

    async def route(self, call: SipCall) -> CallApp | Reject:
        """Pick the application for an inbound call from its Request-URI user."""
        user = call.request_user
        if self.settings.echo_enabled and user == ECHO_USER:
            return functools.partial(echo_app, ring_seconds=self.settings.echo_ring_seconds)
        return Reject(404, "Not Found", "NO_ROUTE_DESTINATION")

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Drain, then close: no new calls, live ones get ``drain_seconds`` to finish."""
        ua = self.ua
        if ua is not None:
            ua.accepting = False
            limit = self.settings.drain_seconds if drain_seconds is None else drain_seconds
            if ua.active_calls:
                logger.info("draining %d calls for up to %.0f s", ua.active_calls, limit)
            await ua.wait_idle(limit)
            await ua.hangup_all("SYSTEM_SHUTDOWN")
            await ua.close()
        if self.clock is not None:
            self.clock.stop()
        await self.endpoint.close()
        logger.info("edge node stopped")
