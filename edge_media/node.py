"""The edge media node: one process that terminates SIP and RTP and bridges calls to bots.

It assembles the layers from settings: the SIP endpoint (UDP+TCP), the user agent, the RTP port
range and the one `MediaClock` that paces every call's outbound audio; and, when the control
plane is configured (the originate and events queue URLs are set), the parts that make it a
gateway node: its registration and heartbeat in DynamoDB, its own command queue, the consumers
of that queue and of the shared originate queue, the call recorder, routing (numbers,
extensions, routing webhooks), the trunk book (inbound CIDRs, outbound trunks) and EMF metrics.
Without a control plane it is a standalone SIP node with the echo line (the interop tests and
a first trunk test use it that way).

Shutdown drains: the node is marked draining and stops taking originate commands, new INVITEs
get 503 with Retry-After, live calls may finish for ``drain_seconds``, the rest are hung up with
cause SYSTEM_SHUTDOWN, and the node waits (bounded) for their ``call.completed`` to be written
before it deregisters.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edge_media.agent_stream.ws_server import StreamListener
from edge_media.apps.echo import ECHO_USER, echo_app
from edge_media.bridge.live_call import LiveCall
from edge_media.bridge.services import BridgeServices
from edge_media.control.identity import resolve_identity
from edge_media.drivers.inbound_budget import BotLimits
from edge_media.node_capacity import NodeCapacity
from edge_media.rtp.ports import PortAllocator
from edge_media.rtp.transport import MediaClock, monotonic_clock_for
from edge_media.sip.acl import TrustMap
from edge_media.sip.call import SipCall
from edge_media.sip.digest_server import DigestServer
from edge_media.sip.endpoint import SipEndpoint, new_tag
from edge_media.sip.extensions import ExtensionDirectory, StaticDirectory
from edge_media.sip.negative_cache import UnknownUsers
from edge_media.sip.registrar import Registrar
from edge_media.sip.source_guard import SourceBans, SourceGuard
from edge_media.sip.transport import SipTransportConfig
from edge_media.sip.ua import CallApp, Reject, UserAgent
from edge_media.sip.worker_spread import WorkerSpread
from shared.settings import Settings

if TYPE_CHECKING:  # imported when the control plane is on (node_control's docstring: why)
    from edge_media.agent_stream.intake import StreamIntake
    from edge_media.node_control import ControlPlane
    from edge_media.routing.router import CallRouter

__all__ = ["EdgeNode"]

logger = logging.getLogger("agera.edge")

LOOKUP_SECONDS = 2.0  # a number/extension lookup slower than this gets 503, never a hang
SETTLE_SECONDS = 10.0  # after the shutdown hangups, time for the records to be written
METRICS_SECONDS = 60.0


def worker_spread(settings: Settings) -> WorkerSpread | None:
    """This worker's end of the SIP mesh between a node's media workers
    (edge_media/sip/worker_spread.py); None for a node of one process. The mesh is named by the
    SIP port and the supervisor's pid (the workers' common parent): two nodes on one machine
    never share one."""
    if settings.media_workers < 2 or settings.sip_port == 0:
        return None
    mesh = f"{settings.sip_port}-{os.getppid()}"
    return WorkerSpread(settings.worker_index, settings.media_workers, mesh)


class EdgeNode:
    """``await start()``, then ``await stop()`` (drains); `ua` places and tracks calls."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory: ExtensionDirectory | None = None,
        control: bool | None = None,
    ) -> None:
        self.settings = settings
        self.control_enabled = (
            bool(settings.originate_queue_url and settings.events_queue_url)
            if control is None
            else control
        )
        # Instance id, AGERA_NODE_ID or the state file (control/identity.py), plus a run id.
        self.identity = resolve_identity(settings, control=self.control_enabled)
        self.node_id = self.identity.node_id
        self._own_directory = directory
        self.directory: ExtensionDirectory = directory or StaticDirectory()
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
        # Who may call without digest, and which accounts' numbers each source may reach:
        # settings' CIDRs and loopback for any account, trunks' sources for their own account
        # (`set_trusted_sources`). The guard exempts all of them from bans and limits.
        self.trust = TrustMap(settings.sip_trusted_sources, trust_loopback=settings.trust_loopback)
        self.guard = SourceGuard(
            bans=(
                SourceBans(
                    settings.sip_ban_failures,
                    settings.sip_ban_window_seconds,
                    settings.sip_ban_seconds,
                )
                if settings.sip_ban_failures > 0
                else None
            ),
            scanner_agents=settings.sip_scanner_user_agents,
            trusted=lambda source: self.trust.allows(source),
        )
        self.unknown_users = UnknownUsers(settings.sip_unknown_user_cache_seconds)
        self.ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.endpoint = SipEndpoint(
            settings.sip_host,
            settings.sip_port,
            advertised_host=settings.advertised_address,
            transport_config=SipTransportConfig(
                reuse_port=settings.media_workers > 1,
                spread=worker_spread(settings),
                guard=self.guard,
                tcp_max_connections_per_source=settings.sip_tcp_max_connections_per_source or None,
            ),
        )
        self.clock: MediaClock | None = None
        self.ua: UserAgent | None = None
        self.live: dict[uuid.UUID, LiveCall] = {}
        self.services: BridgeServices | None = None
        self.routing: CallRouter | None = None
        self._control: ControlPlane | None = None
        self.intake: StreamIntake | None = None
        self.streams: StreamListener | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self.capacity = NodeCapacity(
            max_calls=settings.max_calls,
            max_loop_lag_ms=settings.max_loop_lag_ms,
            calls=self.calls_in_progress,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.clock = MediaClock.create(loop=loop, clock=monotonic_clock_for(loop))
        if self.control_enabled:
            from edge_media.node_control import ControlPlane

            self._control = ControlPlane(
                self.settings,
                node_id=self.node_id,
                run_id=self.identity.run_id,
                keep_queue=self.identity.stable,
                live=self.live,
                pacing_p99=self.pacing_p99,
                on_trusted_sources=self.set_trusted_sources,
            )
            links = await self._control.open(self._own_directory)
            self.routing, self.directory, self.services = (
                links.routing,
                links.directory,
                links.services,
            )
        self.ua = UserAgent(
            self.endpoint,
            ports=self.ports,
            pacer=self.clock.pacer,
            router=self.route,
            source_allowed=lambda source: self.trust.allows(source),
            media_host=self.settings.sip_host,
            advertised_media=self.settings.advertised_address,
            playout_seconds=self.settings.max_playout_seconds,
            registrar=self.registrar,
            directory=self.directory,
            rtp_timeout=self.settings.rtp_timeout_seconds,
            guard=self.guard,
            unknown_users=self.unknown_users,
            admission=self._admit_invite,
        )
        await self.endpoint.start()
        if self._control is not None:
            self.intake = self._control.stream_intake(self.clock.pacer)
        self.streams = StreamListener(
            self.settings.ws_host,
            self.settings.ws_port,
            handle=self.intake.handle if self.intake is not None else None,
            health=self.health,
            accepting=self.accepting,
            room=self.capacity.refuse,
            reuse_port=self.settings.media_workers > 1,
            limits=BotLimits.from_settings(self.settings),
        )
        await self.streams.start()
        self.clock.start()
        self.ua.start_media_sweep()
        self.capacity.start()
        if self._control is not None:
            await self._control.start(self.ua, self.endpoint, has_room=self.has_room)
        logger.info(
            "edge node %s up: SIP %s:%d, streams and health %s:%d, RTP %d-%d, echo %s, "
            "control plane %s",
            self.node_id,
            *self.endpoint.local_addr,
            *self.streams.local_addr,
            self.settings.rtp_port_min,
            self.settings.rtp_port_max,
            "on" if self.settings.echo_enabled else "off",
            "on" if self._control is not None else "off (standalone SIP node)",
        )

    def accepting(self) -> bool:
        """False once the node drains: new INVITEs get 503 and new streams HTTP 503."""
        return not self._stopped and (self.ua is None or self.ua.accepting)

    def calls_in_progress(self) -> int:
        """What the capacity counts: SIP calls from their INVITE, streams from their upgrade,
        and originates from their claim until their INVITE exists (then they are SIP calls)."""
        count = self.ua.active_calls if self.ua is not None else 0
        if self.intake is not None:
            count += self.intake.active
        if self._control is not None and self._control.originator is not None:
            count += self._control.originator.preparing
        return count

    def has_room(self) -> bool:
        """Whether one more call may start (for the originate consumer: no count, no log)."""
        return self.capacity.room() is None

    def _admit_invite(self) -> tuple[str, int] | None:
        full = self.capacity.refuse()
        return (full.reason, full.retry_after) if full is not None else None

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /health`` on the stream port: 200 while the node takes calls, 503 when it
        drains or is full (a load balancer then sends new streams to another node)."""
        accepting = self.accepting()
        full = self.capacity.room() if accepting else None
        body = {
            "status": "draining" if not accepting else ("full" if full else "ok"),
            "node_id": self.node_id,
            "sip_calls": self.ua.active_calls if self.ua is not None else 0,
            "streams": self.intake.active if self.intake is not None else 0,
            "max_calls": self.capacity.max_calls,
            "refused_for_capacity": self.capacity.refused,
            "control_plane": self._control is not None,
        }
        if full is not None:
            body["reason"] = full.reason
        return (200 if accepting and full is None else 503), body

    def pacing_p99(self) -> float | None:
        """The node clock's wake-up lateness p99 (ms): what every call's RTP departures share."""
        if self.clock is None:
            return None
        return float(self.clock.stats().late_p99_ms)

    def set_trusted_sources(self, trunk_sources: Iterable[tuple[str, str]]) -> None:
        """Settings' CIDRs (any account) plus the trunks' ``(cidr, account_id)`` sources.

        One new immutable map, swapped in whole: the UA's source check, the guard's exemptions
        and `route`'s account check read it per request, so a trunk change applies at once.
        """
        self.trust = TrustMap(
            self.settings.sip_trusted_sources,
            trunk_sources,
            trust_loopback=self.settings.trust_loopback,
        )

    def reachable_accounts(self, source: str) -> frozenset[str] | None:
        """The accounts whose numbers a trusted ``source`` may call; None: any account."""
        trust = self.trust.lookup(source)
        if trust is None:  # trusted when its INVITE came, not since: no account
            return frozenset()
        return None if trust.anywhere else trust.accounts

    async def route(self, call: SipCall) -> CallApp | Reject:
        """Pick the application for an inbound call: echo, else its number or extension's route."""
        user = call.request_user
        if self.settings.echo_enabled and user == ECHO_USER:
            return functools.partial(echo_app, ring_seconds=self.settings.echo_ring_seconds)
        routing, services = self.routing, self.services
        if self._control is None or routing is None or services is None:
            return Reject(404, "Not Found", "NO_ROUTE_DESTINATION")
        from edge_media.bridge.inbound import inbound_app
        from edge_media.routing.router import Refuse

        # 180 before the lookup, not after: the caller hears ringing while routing runs (the
        # lookup is one or two DynamoDB reads, the webhook up to 3 s), and INVITE -> 180 does not
        # depend on storage latency. An unknown number then gets 180 followed by 404.
        call.ring()
        ext = call.extension
        extension = (ext.account_id, ext.extension) if ext is not None else None
        # Not an extension: the source was trusted, and a trunk's source reaches only the
        # numbers of the accounts whose trunks list it (403 for another account's number).
        accounts = self.reachable_accounts(call.peer[0]) if ext is None else None
        started = time.monotonic()
        try:
            async with asyncio.timeout(LOOKUP_SECONDS):
                found = await routing.lookup_inbound(
                    user or "", extension, call_uuid=str(call.call_uuid), accounts=accounts
                )
        except Exception as error:
            call.log.warning("route lookup for %r failed: %r", user, error)
            return Reject(503, "Service Unavailable", "NORMAL_TEMPORARY_FAILURE")
        if isinstance(found, Refuse):
            call.log.info("no route for %r: %s", user, getattr(found, "detail", ""))
            warning = getattr(found, "warning", None)
            extra = (("Warning", f'399 {call.ua.agent_host} "{warning}"'),) if warning else ()
            return Reject(found.status, found.reason, found.cause, extra)
        call.log.debug("route lookup %.1f ms", (time.monotonic() - started) * 1000)
        return functools.partial(inbound_app, route=found, routing=routing, services=services)

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Drain, then close: no new calls, live ones get ``drain_seconds`` to finish.

        A second call does nothing (a SIGTERM handler and a context manager may both stop).
        """
        if self._stopped:
            return
        self._stopped = True
        ua = self.ua
        if self._control is not None:
            await self._control.drain()
        if ua is not None:
            ua.accepting = False
            limit = self.settings.drain_seconds if drain_seconds is None else drain_seconds
            streams = self.intake.active if self.intake is not None else 0
            if ua.active_calls or streams:
                logger.info(
                    "draining %d SIP calls and %d streams for up to %.0f s",
                    ua.active_calls,
                    streams,
                    limit,
                )
            deadline = time.monotonic() + limit
            await ua.wait_idle(limit)
            if self.intake is not None:
                await self.intake.wait_idle(deadline - time.monotonic())
            await ua.hangup_all("SYSTEM_SHUTDOWN")
            if self.intake is not None:
                await self.intake.hangup_all("SYSTEM_SHUTDOWN")
        await self._settle()
        if self.streams is not None:
            await self.streams.close()
        if self._control is not None:
            await self._control.close()
        if ua is not None:
            await ua.close()
        if self.clock is not None:
            self.clock.stop()
        await self.capacity.stop()
        await self.endpoint.close()
        logger.info("edge node %s stopped", self.node_id)

    async def _settle(self) -> None:
        """Wait (bounded) for every live call's ``call.completed`` to be written."""
        waits = [asyncio.ensure_future(call.done.wait()) for call in self.live.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=SETTLE_SECONDS)
            for task in pending:
                task.cancel()
        if self.live:
            logger.warning("%d calls did not finish their records before shutdown", len(self.live))
