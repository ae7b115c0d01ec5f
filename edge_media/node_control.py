"""The node's link to the control plane: AWS clients, registration, queues, records, routing.

Kept apart from `node.py` so a standalone SIP node (no queues configured) imports none of
aioboto3, httpx or powertools. Order matters at both ends:

- open: clients, routing (with its route cache), recorder, trunk book (the ACL needs the
  trunks' CIDRs before the first INVITE), then the UA is built by the node, then `start`:
  registration (the node's queue exists before the API can send to it), then the consumers.
- drain: deregister as a target for new work first (status draining, originate consumer
  stopped), so calls keep arriving only for the live calls' commands.
- close: command consumer, heartbeat and queue, metrics flush, clients.

The node's own queue carries the live calls' commands and the API's ``invalidate`` commands,
which go to the route cache (`_node_command`). A node that registers after a write was announced
missed that invalidation, but its cache starts empty, so it holds nothing from before the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aioboto3
import httpx

from edge_media.agent_stream.intake import StreamDirectory, StreamIntake
from edge_media.agent_stream.provider_checks import ProviderApis
from edge_media.bridge.bot_failover import ReconnectPolicy
from edge_media.bridge.commands import CommandHandler
from edge_media.bridge.live_call import LiveCall
from edge_media.bridge.outbound import Originator
from edge_media.bridge.services import BridgeServices
from edge_media.control.consumer import CommandConsumer
from edge_media.control.metrics import NodeMetrics
from edge_media.control.records import CallRecorder
from edge_media.control.registry import NodeRegistry
from edge_media.control.slots import CallSlots
from edge_media.drivers.context import DriverContext
from edge_media.drivers.registry import make_connector
from edge_media.routing.router import CallRouter
from edge_media.routing.stores import DynamoDirectory, TrunkBook
from edge_media.routing.webhook import RoutingWebhook
from edge_media.rtp.pacer import Pacer
from edge_media.sip.endpoint import SipEndpoint
from edge_media.sip.extensions import ExtensionDirectory
from edge_media.sip.ua import UserAgent
from edge_media.trunk_registrations import TrunkRegistrations
from shared.commands import Invalidate, NodeCommand
from shared.dynamo import mapping
from shared.dynamo.repository import AsyncRepository
from shared.models import TelephonyConfig
from shared.pinned_http import PinnedAsyncTransport, operator_origins
from shared.secret_box import AsyncSecretBox
from shared.settings import Settings
from shared.ssrf import AddressPolicy

__all__ = ["ControlLinks", "ControlPlane"]

DRAIN_MARK_SECONDS = 3.0  # how long a drain waits to record "draining" in the table
DEREGISTER_SECONDS = 10.0  # how long a stopping node tries to delete its item and queues

logger = logging.getLogger("agera.edge")

METRICS_SECONDS = 60.0


@dataclass(frozen=True)
class ControlLinks:
    """What `ControlPlane.open` gives the node for its calls: the node keeps them, the control
    plane never reaches back into the node."""

    routing: CallRouter
    directory: ExtensionDirectory
    services: BridgeServices


class ControlPlane:
    """Everything a node needs from DynamoDB and SQS, with one lifecycle.

    It is given the node's facts (id, live calls, pacing figure) and one callback for the
    trunks' inbound sources (``(cidr, account_id)`` pairs), never the node itself: the node depends on the control plane,
    not the other way round.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        node_id: str,
        live: dict[uuid.UUID, LiveCall],
        pacing_p99: Callable[[], float | None],
        on_trusted_sources: Callable[[list[tuple[str, str]]], None],
        run_id: str | None = None,
        keep_queue: bool = False,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.run_id = run_id  # stamped on the node's item and its calls (the reaper's view)
        self.keep_queue = keep_queue  # a stable node id keeps its queue across restarts
        self.live = live
        self.pacing_p99 = pacing_p99
        self._on_trusted_sources = on_trusted_sources
        self._stack = AsyncExitStack()
        self.consumers: list[CommandConsumer] = []
        self.registry: NodeRegistry | None = None
        self.originator: Originator | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._originate_stopped: asyncio.Future[None] | None = None
        self.registrations: TrunkRegistrations | None = None

    async def open(self, directory: ExtensionDirectory | None = None) -> ControlLinks:
        """Clients, routing, recorder and trunk book; ``directory`` (extensions) is the node's
        own when given, else the account's extensions in DynamoDB."""
        settings = self.settings
        session = aioboto3.Session()
        self.dynamodb = await self._stack.enter_async_context(session.client("dynamodb"))
        self.sqs = await self._stack.enter_async_context(session.client("sqs"))
        # Trunk passwords, provider tokens and webhook secrets are stored sealed (docs/secrets.md).
        self.kms = await self._stack.enter_async_context(session.client("kms"))
        self.http = await self._stack.enter_async_context(
            httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                # Every connect pinned to checked addresses (SSRF, DNS rebinding); the
                # operator's provider API origins are pinned but not checked.
                transport=PinnedAsyncTransport(
                    AddressPolicy.from_settings(settings), trusted=operator_origins(settings)
                ),
            )
        )
        repo = self.repo = AsyncRepository(
            self.dynamodb,
            settings.table_name,
            secrets=AsyncSecretBox.from_settings(settings, self.kms),
        )
        self.routing = CallRouter(
            repo,
            RoutingWebhook(self.http, settings),
            route_cache_seconds=settings.route_cache_seconds,
            account_cache_seconds=settings.account_cache_seconds,
            cache_size=settings.route_cache_size,
        )
        self.recorder = CallRecorder(
            self.dynamodb, self.sqs, settings, node_id=self.node_id, run_id=self.run_id
        )
        self.metrics = NodeMetrics("AgeraVoiceGateway", node_id=self.node_id)
        self.trunks = TrunkBook(repo, on_change=self._trunks_changed)
        await self.trunks.load()
        self.services = BridgeServices(
            node_id=self.node_id,
            recorder=self.recorder,
            metrics=self.metrics,
            connect=make_connector(
                DriverContext(settings, accounts=self.routing.account, http=self.http)
            ),
            bot_connect_timeout=settings.bot_connect_timeout_seconds,
            playout_seconds=settings.max_playout_seconds,
            pacing_p99=self.pacing_p99,
            live=self.live,
            slots=CallSlots(self.dynamodb, settings.table_name),
            reconnect=ReconnectPolicy(
                attempts=settings.bot_reconnect_attempts,
                window_seconds=settings.bot_reconnect_window_seconds,
                hold_tone=settings.bot_hold_tone,
            ),
        )
        return ControlLinks(self.routing, directory or DynamoDirectory(repo), self.services)

    def stream_intake(self, pacer: Pacer) -> StreamIntake:
        """The agent-stream handler: streams become calls of this node like SIP calls."""
        settings = self.settings
        directory = StreamDirectory(
            agent=self.routing.agent, account=self.routing.account, configs=self._telephony_configs
        )
        apis = ProviderApis(
            self.http,
            cloudonix_base=settings.cloudonix_api_base,
            twilio_base=settings.twilio_api_base,
            public_url=settings.stream_public_url,
        )
        return StreamIntake(
            self.services,
            directory,
            apis,
            pacer,
            handshake_seconds=settings.stream_handshake_seconds,
        )

    async def _telephony_configs(self, account_id: str) -> list[TelephonyConfig]:
        partition = mapping.account_partition(account_id, mapping.COLLECTIONS[TelephonyConfig])
        page = await self.repo.list(partition, TelephonyConfig, limit=100)
        return list(page.items)

    def _trunks_changed(self, trunks: list[Any]) -> None:
        # Each source with its trunk's account: the node lets it reach only that account.
        sources = self.trunks.inbound_sources()
        self._on_trusted_sources(sources)
        logger.info(
            "trunks: %d, inbound sources: %s",
            len(trunks),
            ", ".join(f"{cidr} ({account})" for cidr, account in sources) or "none",
        )
        if self.registrations is not None:  # the SIP endpoint is up: follow the new set
            self._tasks.append(asyncio.ensure_future(self.registrations.sync(trunks)))

    async def start(
        self, ua: UserAgent, endpoint: SipEndpoint, *, has_room: Callable[[], bool] = lambda: True
    ) -> None:
        """Once the SIP endpoint is up: registration, consumers, trunk registrations, metrics.

        ``has_room`` is the node's capacity (edge_media/node_capacity.py): while it is False the
        originate consumer does not receive, so queued calls wait for a node with room."""
        settings = self.settings
        self.originator = Originator(
            ua,
            has_room=has_room,
            services=self.services,
            routing=self.routing,
            accounts=self.routing.account,
            trunk_for=self.trunks.trunk_for,
        )
        self.commands = CommandHandler(
            ua,
            services=self.services,
            accounts=self.routing.account,
            trunk_for=self.trunks.trunk_for,
            policy=AddressPolicy.from_settings(settings),  # SIP transfer targets (SSRF)
        )
        host, port = endpoint.advertised
        self.registry = NodeRegistry(
            self.dynamodb,
            self.sqs,
            settings,
            node_id=self.node_id,
            sip_address=f"{host}:{port}",
            active_calls=lambda: len(self.live),
            # Read at each beat: the registrations are created after the registry starts.
            trunk_registrations=lambda: self.registrations.states() if self.registrations else {},
            run_id=self.run_id,
            keep_queue=self.keep_queue,
        )
        queue_url = await self.registry.start()
        self.consumers = [
            CommandConsumer(
                self.sqs,
                settings.originate_queue_url,
                self.originator.handle,
                name="originate",
                accepting=lambda: ua.accepting and has_room(),
                wait_seconds=settings.originate_poll_seconds,
                shared=True,
            ),
            CommandConsumer(self.sqs, queue_url, self._node_command, name="commands"),
        ]
        for consumer in self.consumers:
            consumer.start()
        self.registrations = TrunkRegistrations(endpoint)
        await self.registrations.sync(self.trunks.trunks)
        self.trunks.start()
        self.recorder.spool.start()
        self.metrics.start()
        self._tasks.append(asyncio.ensure_future(self._report()))
        logger.info("node %s registered; command queue %s", self.node_id, queue_url)

    async def _node_command(self, command: NodeCommand) -> None:
        """The node's own queue: an invalidation goes to the route cache, call commands to the
        live calls."""
        if isinstance(command, Invalidate):
            self.routing.invalidate(
                command.kind, command.account_id, command.keys, command_id=command.id
            )
            return
        await self.commands.handle(command)

    async def _report(self) -> None:
        """ActiveCalls and PacingErrorMs once a minute (the per-call figures go at call end)."""
        while True:
            await asyncio.sleep(METRICS_SECONDS)
            self.metrics.active_calls(len(self.live))
            self.metrics.events_unsent(self.recorder.spool.pending)
            pacing = self.pacing_p99()
            if pacing is not None:
                self.metrics.pacing_error_ms(pacing)

    async def drain(self) -> None:
        """Stop taking new work: draining in the registry, originate consumer stopped."""
        if self.registry is not None:
            try:
                # Bounded: a slow or unreachable table must not hold up the drain itself (the
                # next heartbeat carries the status; live calls are what matters now).
                async with asyncio.timeout(DRAIN_MARK_SECONDS):
                    await self.registry.set_draining()
            except Exception as error:
                logger.warning("could not mark the node draining: %r", error)
        # The originate poll in flight may take its full wait to end (see CommandConsumer): it
        # ends while live calls drain, and close() waits for what is left of it.
        for consumer in self.consumers[:1]:
            self._originate_stopped = asyncio.ensure_future(consumer.stop())

    async def close(self) -> None:
        if self._originate_stopped is not None:
            await self._originate_stopped
        for consumer in self.consumers:
            await consumer.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.trunks.stop()
        if self.registrations is not None:
            await self.registrations.stop()  # carriers stop sending this node calls
        pending = [*self.originator.tasks, *self.commands.tasks] if self.registry else []
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        if self.registry is not None:
            try:
                async with asyncio.timeout(DEREGISTER_SECONDS):  # the item's TTL is the backstop
                    await self.registry.stop()
            except Exception as error:
                logger.warning("could not deregister the node: %r", error)
        await self.recorder.spool.close()  # events still waiting get one more try
        await self.metrics.stop()
        await self._stack.aclose()
