"""The ``originate`` command: claim the queued call, route it, dial the trunk, bridge on answer.

Why the claim comes first: every live node long-polls the shared originate queue, and the API
may cancel a queued call at the same moment. One conditional write (``queued`` and no
``node_id``) decides who owns the call; a node that loses drops the command without a word to
the record (the winner writes it).

The routing webhook runs before the INVITE (the API guide consults it "when a call starts",
inbound or outbound), so a ``hangup`` answer costs the callee nothing. The bot is connected when
the callee answers, as a Twilio ``<Connect><Stream>`` starts after the answer.

The account's call slot was taken by the API when it queued the call (``POST /api/calls``); the
node that wins the claim owns it from then on and gives it back when the call completes, whatever
the outcome. A node that loses the claim touches nothing: the winner, or the API's cancel, does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from edge_media.bridge.live_call import LiveCall, until_ended
from edge_media.bridge.services import BridgeServices
from edge_media.drivers.base import CallInfo
from edge_media.errors import RecordUnavailable, RetryLater
from edge_media.routing.router import CallRoute, CallRouter, Connect, Refuse
from edge_media.sip.call import SipCall
from edge_media.sip.ua import UserAgent
from shared.commands import Originate
from shared.models import Account, Call, Direction, Trunk

__all__ = ["Originator", "dial_trunk", "resolve_address", "trunk_target"]

logger = logging.getLogger("agera.bridge")

TrunkLookup = Callable[[Account, str | None], Awaitable[Trunk | None]]


def trunk_target(trunk: Trunk, number: str) -> str:
    """The Request-URI for ``number`` at the trunk (``sip:+15551230000@carrier:5060``)."""
    host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
    return f"sip:{number}@{host}:{trunk.port}"


async def resolve_address(host: str, port: int) -> tuple[str, int]:
    """The trunk's address; a name is resolved once per call (no RFC 3263 SRV/NAPTR)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host, port
    except OSError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"{host} does not resolve")
    return str(infos[0][4][0]), port


async def dial_trunk(
    ua: UserAgent, trunk: Trunk, number: str, *, from_user: str, from_display: str | None = None
) -> SipCall:
    """INVITE ``number`` through ``trunk`` (digest when it has credentials); returns at once."""
    addr = await resolve_address(trunk.host, trunk.port)
    credentials = (trunk.username, trunk.password) if trunk.username and trunk.password else None
    return ua.invite(
        trunk_target(trunk, number),
        addr=addr,
        kind=trunk.transport.value,
        from_user=from_user,
        from_display=from_display,
        credentials=credentials,
    )


class Originator:
    """Runs originate commands on this node (one task per call)."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        services: BridgeServices,
        routing: CallRouter,
        accounts: Callable[[str], Awaitable[Account | None]],
        trunk_for: TrunkLookup,
        has_room: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ua = ua
        self.services = services
        self.routing = routing
        self.accounts = accounts
        self.trunk_for = trunk_for
        self.has_room = has_room
        self.tasks: set[asyncio.Task[None]] = set()
        # Originates this node took (from the claim) whose INVITE does not exist yet: the node's
        # capacity counts them, or a batch of ten could pass a check made before any had dialed.
        self.preparing = 0

    async def handle(self, command: Originate) -> None:
        """Claim the call; on success its work runs in the background and this returns."""
        if not self.ua.accepting:
            raise RetryLater("node draining", delay_seconds=0)  # another node takes it at once
        if not self.has_room():  # the batch came while there was room; the rest waits
            raise RetryLater("node full", delay_seconds=0)
        self.preparing += 1
        handed_on = False
        try:
            try:
                claimed = await self.services.recorder.claim(command.call_uuid)
            except RecordUnavailable as error:
                raise RetryLater(f"claim failed: {error}") from None
            if claimed is None:
                logger.info(
                    "[call %s] originate dropped: canceled, or another node claimed it",
                    command.call_uuid,
                )
                return
            task = asyncio.ensure_future(self._run(command, claimed))
            handed_on = True  # _run counts it down once its INVITE exists (or it ends)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        finally:
            if not handed_on:
                self.preparing -= 1

    async def _run(self, command: Originate, record: Call) -> None:
        caller = command.caller_id_number or "anonymous"
        info = CallInfo(
            call_uuid=str(command.call_uuid),
            account_id=command.account_id,
            direction=Direction.OUTBOUND.value,
            from_number=command.caller_id_number or "",
            to_number=command.destination_number,
        )
        live = LiveCall(self.services, None, info, command.call_uuid)
        live.holds_slot = True  # the API took the call's slot; this node, its owner, gives it back
        live.register()
        cause: str | None = None
        preparing = True
        try:
            account = await self.accounts(command.account_id)
            if account is None:
                live.log.warning("originate for unknown account %s", command.account_id)
                cause = "CALL_REJECTED"
                return
            trunk = await self.trunk_for(account, command.trunk_id)
            if trunk is None:
                live.log.warning(
                    "account %s has no trunk to dial %s through; add one with POST /api/trunks",
                    account.account_id,
                    command.destination_number,
                )
                cause = "NO_ROUTE_DESTINATION"
                return
            route = CallRoute.for_originate(account, command.socket_url, command.webhook_url)
            decision = await self.routing.decide(
                route,
                call_uuid=str(command.call_uuid),
                direction=Direction.OUTBOUND.value,
                caller_number=caller,
                destination_number=command.destination_number,
            )
            if getattr(decision, "webhook_ms", None) is not None:
                self.services.metrics.routing_webhook_ms(decision.webhook_ms)
            if isinstance(decision, Refuse):
                live.log.info("refused by routing: %s (%s)", decision.cause, decision.detail)
                cause = decision.cause
                return
            if live.services.live.get(command.call_uuid) is not live or live.ended_cause:
                cause = live.ended_cause or "ORIGINATOR_CANCEL"
                return
            live.max_seconds = decision.max_seconds
            from_user = command.caller_id_number or trunk.caller_id_number or "anonymous"
            sip = await dial_trunk(
                self.ua,
                trunk,
                command.destination_number,
                from_user=from_user,
                from_display=command.caller_id_name,
            )
            sip.call_uuid = command.call_uuid
            live.sip = sip
            self.preparing -= 1  # a SIP call of the UA from now on
            preparing = False
            await self._dial(live, sip, command, decision)
        except Exception:
            live.log.exception("originate failed")
            cause = "NORMAL_TEMPORARY_FAILURE"
            if live.sip is not None and not live.sip.is_ended:
                await live.sip.hangup(cause)
        finally:
            if preparing:
                self.preparing -= 1
            await live.finish(cause=cause if live.sip is None else None)

    async def _dial(
        self, live: LiveCall, sip: SipCall, command: Originate, decision: Connect
    ) -> None:
        """Ring (up to ring_timeout), then bridge; a hangup command while ringing CANCELs."""
        ringing = asyncio.ensure_future(self._report_ringing(live, sip))
        try:
            try:
                async with asyncio.timeout(command.ring_timeout):
                    answered = await sip.wait_answered()
            except TimeoutError:
                live.log.info("no answer in %d s; canceling", command.ring_timeout)
                await sip.hangup("NO_ANSWER")
                return
        finally:
            if sip.ringing_seen:  # call.ringing goes out before call.answered, never after
                await asyncio.wait({ringing}, timeout=2.0)
            ringing.cancel()
        if not answered:
            return
        finished, connected = await until_ended(
            sip, live.connect_bot(decision.target, decision.fallback)
        )
        if not finished:
            return
        if not connected:
            await sip.hangup("NORMAL_TEMPORARY_FAILURE")
            return
        live.attach_media()
        await live.mark_answered()
        await live.run()

    @staticmethod
    async def _report_ringing(live: LiveCall, sip: SipCall) -> None:
        if await sip.wait_ringing():
            # Shielded: an answer right after the 180 must not cut the record write in half.
            await asyncio.shield(live.ringing())
