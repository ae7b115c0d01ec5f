"""One agent stream from upgrade to close: checks, handshake, record, the agent, the end.

The order is the seed's lifecycle with the provider's handshake in the middle:

1. the URL: a provider we speak (1008 unknown, 1011 known but not supported), an agent that
   exists (1008) in an active account (1008);
2. the handshake: ``connected`` then ``start``, each within ``stream_handshake_seconds``
   (4408), well formed (4400); the provider account the stream names, the agent's token when
   it wants one, the account's stored configuration for that provider account, and the
   provider's own check (session or signature), each a 4400 with its reason;
3. the account's limits: a call slot across the fleet (`BridgeServices.slots`), 1008 when
   the account is at its concurrency or call-rate limit. Taken after the handshake, so a
   stream that never proves itself costs no slot and no rate;
4. the call record (``WR-AGS-…`` run name, provider ids), the agent's driver (1011 "Agent
   unavailable" when neither the agent's target nor the account default connects), then the
   call runs as a SIP call does (`LiveCall.run`) until the provider stops or closes, the
   bot ends it (hung up at the provider), or an API command ends or moves it.

A stream refused before step 4 leaves no record: nothing was promised to anyone. Every close
reason names the problem and never repeats what the provider sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge_media.agent_stream.provider_checks import (
    ProviderApis,
    UpgradeFacts,
    identify,
    matching_config,
)
from edge_media.agent_stream.provider_leg import ProviderCall
from edge_media.agent_stream.provider_protocol import (
    HandshakeError,
    StreamStart,
    parse_connected,
    parse_start,
)
from edge_media.agent_stream.stream_path import KNOWN_UNSUPPORTED, StreamRoute, SupportedProvider
from edge_media.agent_stream.ws_server import ConnectionGone, StreamConnection
from edge_media.bridge.live_call import LiveCall
from edge_media.bridge.services import BridgeServices
from edge_media.drivers.base import CallInfo
from edge_media.rtp.pacer import Pacer
from shared.models import Account, AccountStatus, Agent, Call, Direction, TelephonyConfig
from shared.stream_tokens import stream_token_problem

__all__ = ["StreamDirectory", "StreamIntake", "StreamRefused"]

logger = logging.getLogger("agera.agent_stream")

POLICY = 1008  # routing failure
SERVER = 1011  # server failure, or a provider we do not speak
HANDSHAKE_TIMEOUT = 4408
RESERVED_PARAMETERS = frozenset({"token"})
_SAFE_NAME = re.compile(r"[^a-z0-9_.-]")
_RUN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class StreamRefused(Exception):
    """Why a stream is closed before its call exists: the close code and its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class StreamDirectory:
    """The lookups a stream needs (DynamoDB at the node, cached where the router caches)."""

    agent: Callable[[uuid.UUID], Awaitable[Agent | None]]
    account: Callable[[str], Awaitable[Account | None]]
    configs: Callable[[str], Awaitable[list[TelephonyConfig]]]


def run_name() -> str:
    """``WR-AGS-`` and eight characters no one misreads (no 0/O, 1/I)."""
    return "WR-AGS-" + "".join(secrets.choice(_RUN_ALPHABET) for _ in range(8))


def _shown_provider(name: str) -> str:
    return _SAFE_NAME.sub("", name)[:32] or "(none)"


class StreamIntake:
    """Handles each accepted agent-stream upgrade (`ws_server.StreamListener`'s handler)."""

    def __init__(
        self,
        services: BridgeServices,
        directory: StreamDirectory,
        apis: ProviderApis,
        pacer: Pacer,
        *,
        handshake_seconds: float,
    ) -> None:
        self.services = services
        self.directory = directory
        self.apis = apis
        self.pacer = pacer
        self.handshake_seconds = handshake_seconds
        self.calls: dict[uuid.UUID, ProviderCall] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        return len(self.calls)

    async def handle(self, conn: StreamConnection, route: StreamRoute) -> None:
        started = time.monotonic()
        try:
            provider, agent, account = await self._route(route)
            start = await self._handshake(conn)
            prepared = await self._prove(conn, route, provider, agent, account, start)
        except StreamRefused as refused:
            logger.info("agent stream from %s refused: %s %s", conn.peer, refused.code, refused)
            await conn.close(refused.code, refused.reason)
            return
        except HandshakeError as error:
            logger.info("agent stream from %s: handshake failed: %s", conn.peer, error.reason)
            await conn.close(error.code, error.reason)
            return
        except ConnectionGone:
            logger.info("agent stream from %s closed during the handshake", conn.peer)
            return
        await self._serve(conn, route, prepared, started)

    # -- before the handshake ---------------------------------------------------------------

    async def _route(self, route: StreamRoute) -> tuple[SupportedProvider, Agent, Account]:
        provider = route.supported
        if provider is None:
            if not route.provider:
                raise StreamRefused(POLICY, "Missing provider")
            if route.provider in KNOWN_UNSUPPORTED:
                name = _shown_provider(route.provider)
                raise StreamRefused(SERVER, f"Agent stream not supported for provider {name}")
            raise StreamRefused(POLICY, f"Unknown provider: {_shown_provider(route.provider)}")
        if route.agent_uuid is None:
            raise StreamRefused(POLICY, "Agent not found")
        agent = await self.directory.agent(route.agent_uuid)
        if agent is None:
            raise StreamRefused(POLICY, "Agent not found")
        account = await self.directory.account(agent.account_id)
        if account is None:
            raise StreamRefused(POLICY, "Agent not found")
        if account.status is not AccountStatus.ACTIVE:
            raise StreamRefused(POLICY, "Account suspended")
        cloudonix_v1 = route.version == 1 and provider is SupportedProvider.CLOUDONIX
        if cloudonix_v1 and not route.param("Domain"):
            raise HandshakeError("Missing Domain query param")
        return provider, agent, account

    async def _receive(self, conn: StreamConnection, expected: str) -> str:
        try:
            message = await conn.receive_text(self.handshake_seconds)
        except TimeoutError:
            raise StreamRefused(HANDSHAKE_TIMEOUT, "Handshake timeout") from None
        if not isinstance(message, str):
            raise HandshakeError(f"Expected {expected} event")
        return message

    async def _handshake(self, conn: StreamConnection) -> StreamStart:
        parse_connected(await self._receive(conn, "connected"))
        return parse_start(await self._receive(conn, "start"))

    # -- the provider's proof ------------------------------------------------------------------

    async def _prove(
        self,
        conn: StreamConnection,
        route: StreamRoute,
        provider: SupportedProvider,
        agent: Agent,
        account: Account,
        start: StreamStart,
    ) -> _Prepared:
        identity = identify(provider, route.version, route.param("Domain"), start)
        if agent.require_token:
            token = route.query.get("token") or start.custom_parameters.get("token", "")
            problem = stream_token_problem(
                account.webhook_secret, agent.agent_uuid, token, time.time()
            )
            if problem is not None:
                raise HandshakeError(problem)
        config = matching_config(await self.directory.configs(account.account_id), identity)
        if config is None:
            raise HandshakeError("No matching telephony configuration")
        request = conn.request
        headers = request.headers if request is not None else None
        upgrade = UpgradeFacts(
            target=request.path if request is not None else "",
            host=headers.get("Host") if headers is not None else None,
            forwarded_proto=headers.get("X-Forwarded-Proto") if headers is not None else None,
            signature=headers.get("X-Twilio-Signature") if headers is not None else None,
        )
        control = await self.apis.verify(identity, config, start, upgrade)
        call_uuid = uuid.uuid4()
        slots = self.services.slots
        if slots is not None:
            refused = await slots.acquire(account, call_uuid)
            if refused is not None:
                reason = (
                    "Concurrent call limit reached"
                    if refused.kind == "concurrency"
                    else "Call rate limit reached"
                )
                raise StreamRefused(POLICY, reason)
        return _Prepared(call_uuid, provider, agent, account, start, identity.provider_id, control)

    # -- the call --------------------------------------------------------------------------

    def _record(self, prepared: _Prepared, route_query: dict[str, str]) -> tuple[Call, CallInfo]:
        start = prepared.start
        from_number = route_query.get("from") or start.from_number or "anonymous"
        to_number = route_query.get("to") or start.to_number
        direction = Direction.OUTBOUND if start.context == "outbound-api" else Direction.INBOUND
        call_id = (
            route_query.get("callId")
            or route_query.get("CallSid")
            or start.session
            or start.call_sid
        )
        call = Call(
            call_uuid=prepared.call_uuid,
            account_id=prepared.account.account_id,
            direction=direction,
            from_number=from_number[:256],
            to_number=to_number[:256],
            node_id=self.services.node_id,
            webhook_url=prepared.account.webhook_url,
            mode=prepared.provider.value,
            run_name=run_name(),
            agent_uuid=prepared.agent.agent_uuid,
            call_id=call_id[:256],
            provider_id=prepared.provider_id[:256],
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
        )
        extra = {
            name: value
            for name, value in start.custom_parameters.items()
            if name not in RESERVED_PARAMETERS
        }
        info = CallInfo(
            call_uuid=str(prepared.call_uuid),
            account_id=prepared.account.account_id,
            direction=direction.value,
            from_number=from_number,
            to_number=to_number,
            extra=extra,
        )
        return call, info

    async def _serve(
        self, conn: StreamConnection, route: StreamRoute, prepared: _Prepared, started: float
    ) -> None:
        call, info = self._record(prepared, route.query)
        services = self.services
        live = LiveCall(services, None, info, call.call_uuid)
        leg = ProviderCall(conn, self.pacer, prepared.start.stream_sid, live.log, prepared.control)
        live.leg = leg
        live.holds_slot = services.slots is not None
        live.remote_transfer = leg.transfer
        live.started = started
        live.register()
        self.calls[call.call_uuid] = leg
        self._idle.clear()
        live.log.info(
            "agent stream %s (%s) for account %s", call.run_name, call.mode, call.account_id
        )
        cause: str | None = None
        try:
            await services.recorder.create(call)
            agent, account = prepared.agent, prepared.account
            if not await live.connect_bot(agent.socket_url, account.socket_url):
                cause = "NORMAL_TEMPORARY_FAILURE"
                await conn.close(SERVER, "Agent unavailable")
                return
            if leg.is_ended:
                return
            live.attach_media()
            await live.mark_answered()
            await live.run()
        except Exception:
            live.log.exception("agent stream failed")
            cause = "NORMAL_TEMPORARY_FAILURE"
            if conn.is_open:
                await conn.close(SERVER, "Internal server error")
        finally:
            if leg.provider_result is not None:
                live.add_stats(provider_api=leg.provider_result)
            await live.finish(cause=cause)
            leg.close()
            self.calls.pop(call.call_uuid, None)
            if not self.calls:
                self._idle.set()

    async def wait_idle(self, seconds: float) -> None:
        """Until no stream is live, at most ``seconds`` (a drain)."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._idle.wait()

    async def hangup_all(self, cause: str) -> None:
        """Node shutdown: end every stream still live (at the provider, then the socket)."""
        calls = list(self.calls.values())
        if calls:
            await asyncio.gather(*(call.hangup(cause) for call in calls), return_exceptions=True)


@dataclass(frozen=True)
class _Prepared:
    call_uuid: uuid.UUID
    provider: SupportedProvider
    agent: Agent
    account: Account
    start: StreamStart
    provider_id: str
    control: Any
