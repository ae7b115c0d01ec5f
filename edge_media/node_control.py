"""The node's link to the control plane: AWS clients, registration, queues, records, routing.

Kept apart from `node.py` so a standalone SIP node (no queues configured) imports none of
aioboto3, httpx or powertools. Order matters at both ends:

- open: clients, routing, recorder, trunk book (the ACL needs the trunks' CIDRs before the
  first INVITE), then the UA is built by the node, then `start`: registration (the node's queue
  exists before the API can send to it), then the consumers.
- drain: deregister as a target for new work first (status draining, originate consumer
  stopped), so calls keep arriving only for the live calls' commands.
- close: command consumer, heartbeat and queue, metrics flush, clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aioboto3
import httpx

from edge_media.bridge.commands import CommandHandler
from edge_media.bridge.live_call import BridgeServices
from edge_media.bridge.outbound import Originator
from edge_media.bridge.routing import CallRouter
from edge_media.bridge.routing_webhook import RoutingWebhook
from edge_media.bridge.stores import DynamoDirectory, TrunkBook
from edge_media.control.consumer import CommandConsumer
from edge_media.control.metrics import NodeMetrics
from edge_media.control.records import CallRecorder
from edge_media.control.registry import NodeRegistry
from edge_media.drivers.context import DriverContext
from edge_media.drivers.registry import make_connector
from edge_media.trunk_registrations import TrunkRegistrations
from shared.dynamo.repository import AsyncRepository

if TYPE_CHECKING:
    from edge_media.node import EdgeNode

__all__ = ["ControlPlane"]

logger = logging.getLogger("agera.edge")

METRICS_SECONDS = 60.0


class ControlPlane:
    """Everything a node needs from DynamoDB and SQS, with one lifecycle."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self._stack = AsyncExitStack()
        self.consumers: list[CommandConsumer] = []
        self.registry: NodeRegistry | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._originate_stopped: asyncio.Future[None] | None = None
        self.registrations: TrunkRegistrations | None = None

    async def open(self) -> None:
        node, settings = self.node, self.node.settings
        session = aioboto3.Session()
        self.dynamodb = await self._stack.enter_async_context(session.client("dynamodb"))
        self.sqs = await self._stack.enter_async_context(session.client("sqs"))
        self.http = await self._stack.enter_async_context(
            httpx.AsyncClient(follow_redirects=False, trust_env=False)
        )
        repo = AsyncRepository(self.dynamodb, settings.table_name)
        node.routing = self.routing = CallRouter(repo, RoutingWebhook(self.http, settings))
        self.recorder = CallRecorder(self.dynamodb, self.sqs, settings, node_id=node.node_id)
        self.metrics = NodeMetrics("AgeraVoiceGateway", node_id=node.node_id)
        self.trunks = TrunkBook(repo, on_change=self._trunks_changed)
        await self.trunks.load()
        if not node._directory_given:
            node.directory = DynamoDirectory(repo)
        node.services = self.services = BridgeServices(
            node_id=node.node_id,
            recorder=self.recorder,
            metrics=self.metrics,
            connect=make_connector(
                DriverContext(settings, accounts=self.routing.account, http=self.http)
            ),
            bot_connect_timeout=settings.bot_connect_timeout_seconds,
            playout_seconds=settings.max_playout_seconds,
            pacing_p99=node.pacing_p99,
            live=node.live,
        )

    def _trunks_changed(self, trunks: list[Any]) -> None:
        cidrs = self.trunks.inbound_cidrs()
        self.node.set_trusted_sources(cidrs)
        logger.info("trunks: %d, inbound sources: %s", len(trunks), ", ".join(cidrs) or "none")
        if self.registrations is not None:  # the SIP endpoint is up: follow the new set
            self._tasks.append(asyncio.ensure_future(self.registrations.sync(trunks)))

    async def start(self) -> None:
        node, settings = self.node, self.node.settings
        ua = node.ua
        assert ua is not None
        self.originator = Originator(
            ua,
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
        )
        host, port = node.endpoint.advertised
        self.registry = NodeRegistry(
            self.dynamodb,
            self.sqs,
            settings,
            node_id=node.node_id,
            sip_address=f"{host}:{port}",
            active_calls=lambda: len(node.live),
        )
        queue_url = await self.registry.start()
        self.consumers = [
            CommandConsumer(
                self.sqs,
                settings.originate_queue_url,
                self.originator.handle,
                name="originate",
                accepting=lambda: ua.accepting,
                wait_seconds=settings.originate_poll_seconds,
                shared=True,
            ),
            CommandConsumer(self.sqs, queue_url, self.commands.handle, name="commands"),
        ]
        for consumer in self.consumers:
            consumer.start()
        self.registrations = TrunkRegistrations(node.endpoint)
        await self.registrations.sync(self.trunks.trunks)
        self.trunks.start()
        self.metrics.start()
        self._tasks.append(asyncio.ensure_future(self._report()))
        logger.info("node %s registered; command queue %s", node.node_id, queue_url)

    async def _report(self) -> None:
        """ActiveCalls and PacingErrorMs once a minute (the per-call figures go at call end)."""
        while True:
            await asyncio.sleep(METRICS_SECONDS)
            self.metrics.active_calls(len(self.node.live))
            pacing = self.node.pacing_p99()
            if pacing is not None:
                self.metrics.pacing_error_ms(pacing)

    async def drain(self) -> None:
        """Stop taking new work: draining in the registry, originate consumer stopped."""
        if self.registry is not None:
            try:
                await self.registry.set_draining()
            except Exception as error:
                logger.warning("could not mark the node draining: %s", error)
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
                await self.registry.stop()
            except Exception as error:
                logger.warning("could not deregister the node: %s", error)
        await self.metrics.stop()
        await self._stack.aclose()
