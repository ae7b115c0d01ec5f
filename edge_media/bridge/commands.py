"""Live commands from the node's own queue: hangup, transfer, redirect.

A command names a call by uuid; one for a call this node does not own (ended already, or never
here) is logged and dropped: the API sends to the owning node's queue, so that only happens
after the call ended or when a command was delivered late. Duplicate deliveries never reach
here (the consumer drops a repeated command id), and each action is harmless if repeated
anyway: a hangup of an ended call does nothing, a redirect to the current target reconnects.

Transfer: REFER when the destination is a SIP URI the far end can reach and the far end allows
REFER; otherwise (numbers, extensions, peers without REFER, a refused REFER) the node dials the
target itself and relays RTP between the legs. Either way the bot gets ``stop`` first.

A SIP URI's host is checked before anything changes (SSRF, ``shared.ssrf``): resolved once, every
address public or inside ``AGERA_SSRF_ALLOW_LIST``, and the node dials the checked address, never
a second lookup. A refused target is logged and the transfer does not happen: the bot stays on,
so the caller is not cut off by a destination we will not call. The API refused it already (422);
this check is the node's own, against DNS that changed since.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edge_media.bridge.live_call import LiveCall
from edge_media.bridge.outbound import dial_trunk
from edge_media.bridge.relay import relay_until_either_ends
from edge_media.bridge.services import BridgeServices
from edge_media.drivers.registry import driver_name, public_target
from edge_media.sip.call import SipCall
from edge_media.sip.errors import SipParseError
from edge_media.sip.refer_transferor import TransferState
from edge_media.sip.transfer import send_refer
from edge_media.sip.ua import UserAgent
from edge_media.sip.uri import SipUri
from shared.commands import Command, Hangup, Redirect, Transfer
from shared.events import CallRedirected, CallTransferred
from shared.models import Account, Trunk
from shared.ssrf import AddressPolicy, UnsafeUrlError
from shared.validation import parse_transfer_destination

__all__ = ["CommandHandler"]

logger = logging.getLogger("agera.bridge")

TRANSFER_RING_SECONDS = 60


class CommandHandler:
    """Applies node-queue commands to the calls in ``services.live``."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        services: BridgeServices,
        accounts: Callable[[str], Awaitable[Account | None]],
        trunk_for: Callable[[Account, str | None], Awaitable[Trunk | None]],
        policy: AddressPolicy | None = None,
    ) -> None:
        self.ua = ua
        self.services = services
        self.accounts = accounts
        self.trunk_for = trunk_for
        # The SSRF rule for SIP transfer targets; the default allows no private range.
        self.policy = policy or AddressPolicy()
        self.tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, command: Command) -> None:
        live = self.services.live.get(command.call_uuid)
        if live is None:
            logger.info(
                "[call %s] %s command %s dropped: the call is not live on this node",
                command.call_uuid,
                command.type,
                command.id,
            )
            return
        if isinstance(command, Hangup):
            await self.hangup(live, command.cause)
        elif isinstance(command, Redirect):
            self._spawn(self.redirect(live, command.media_server))
        elif isinstance(command, Transfer):
            self._spawn(self.transfer(live, command.destination))
        else:
            live.log.warning(
                "command %s of type %s is not for a live call", command.id, command.type
            )

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def hangup(self, live: LiveCall, cause: str) -> None:
        leg = live.leg
        if leg is None:  # still routing an originate: it stops before dialing
            live.ended_cause = "ORIGINATOR_CANCEL"
            live.log.info("hangup requested before dialing")
            return
        if not live.answered and cause == "NORMAL_CLEARING":
            cause = "ORIGINATOR_CANCEL"  # stopping a call before it connects is a cancel
        live.log.info("hangup requested (%s)", cause)
        await leg.hangup(cause)

    async def redirect(self, live: LiveCall, target: str) -> None:
        """Swap the bot; before the first bot connects (routing, ringing), set where it goes."""
        shown = public_target(target)
        if live.leg is not None and live.leg.is_ended:
            live.log.info("redirect ignored: the call has ended")
            return
        if live.driver is None and not live.answered:
            live.log.info("redirect to %s before the bot connected: it connects there", shown)
            # No call.redirected here: it would move a ringing record to in-progress; the
            # answer's call.answered (media_target) and the record's socket_url name the bot.
            live.pending_target = target
            return
        if live.transferring or live.driver is None:
            live.log.info("redirect ignored: the call was transferred away from its bot")
            return
        live.log.info("redirect to %s", shown)
        if not await live.connect_bot(target):
            live.log.warning("redirect failed: the new bot is unreachable; the old one stays")
            await live.save_media()  # the failed attempt and its step, on the record
            return
        await live.save_media()
        await live.event(
            CallRedirected(**live._base(), media_server=shown, driver=driver_name(target))
        )

    async def transfer(self, live: LiveCall, destination: str) -> None:
        if live.remote_transfer is not None:
            await self._transfer_at_provider(live, live.remote_transfer, destination)
            return
        sip = live.sip
        if sip is None or not live.answered or sip.is_ended:
            live.log.info("transfer ignored: the call is not connected")
            return
        kind, value = parse_transfer_destination(destination)
        address = await self._sip_address(live, value) if kind == "sip" else None
        if kind == "sip" and address is None:
            return  # refused: logged, and the call keeps its bot
        live.transferring = True
        await live.stop_bot("transferred")
        if kind == "sip" and "REFER" in sip.peer_allow and _reachable_by_peer(value, sip.peer[0]):
            state = await send_refer(sip, value)
            if state in (TransferState.SUCCEEDED, TransferState.UNREPORTED):
                await live.event(
                    CallTransferred(**live._base(), destination=destination, method="refer")
                )
                if state is TransferState.SUCCEEDED and not sip.is_ended:
                    await sip.hangup("NORMAL_CLEARING")  # RFC 5589: the transferor leaves
                return
            live.log.info("REFER %s; dialing the target ourselves", state)
        if sip.is_ended:
            return
        other = await self._dial(live, kind, value, address)
        if other is None:
            live.log.warning("transfer to %s failed; the caller is hung up", destination)
            await sip.hangup("NORMAL_TEMPORARY_FAILURE")
            return
        relay = asyncio.ensure_future(relay_until_either_ends(sip, other))  # join first: the
        await asyncio.sleep(0)  # target's first words must not wait for the record write
        await live.event(CallTransferred(**live._base(), destination=destination, method="bridge"))
        cause = await relay
        live.add_stats(transfer_leg=other.media.stats() if other.media else {})
        live.log.info("transfer relay ended (%s)", cause)

    async def _transfer_at_provider(
        self, live: LiveCall, move: Callable[[str], Awaitable[bool]], destination: str
    ) -> None:
        """A provider's stream: the provider's REST API moves the call, then the socket closes.
        The bot stays on when the provider cannot (no API, refused): the caller keeps a bot."""
        leg = live.leg
        if leg is None or not live.answered or leg.is_ended:
            live.log.info("transfer ignored: the call is not connected")
            return
        kind, _value = parse_transfer_destination(destination)
        if kind == "extension":
            live.log.warning("transfer to an extension is not possible on a provider's stream")
            return
        if not await move(destination):
            live.log.warning("the provider did not transfer the call; the bot stays on")
            return
        live.transferring = True
        await live.stop_bot("transferred")
        await live.event(
            CallTransferred(**live._base(), destination=destination, method="provider")
        )
        await leg.hangup("NORMAL_CLEARING")  # the provider has the call: our stream closes

    async def _sip_address(self, live: LiveCall, uri: str) -> str | None:
        """The address a SIP target is dialed at: its host resolved once and checked against
        ``self.policy``. None, logged, when the URI or its host is refused."""
        try:
            host = SipUri.parse(uri).host_address
        except SipParseError:
            live.log.warning("transfer refused: the destination is not a valid SIP URI")
            return None
        try:
            if self.policy.needs_dns(host):  # getaddrinfo blocks: off the loop
                addresses = await asyncio.to_thread(self.policy.addresses, host, "destination")
            else:
                addresses = self.policy.addresses(host, "destination")
        except UnsafeUrlError as error:
            live.log.warning("transfer refused by the SSRF policy: %s", error.reason)
            return None
        return addresses[0]

    async def _dial(
        self, live: LiveCall, kind: str, value: str, address: str | None = None
    ) -> SipCall | None:
        """The second leg of a relayed transfer, answered; None when it did not answer.
        ``address``: a SIP target's checked address (`_sip_address`), the only one dialed."""
        from_user = live.info.from_number or "anonymous"
        if kind == "extension":
            bindings = self.ua.contacts_for(live.info.account_id, value)
            if not bindings:
                live.log.info("extension %s is not registered", value)
                return None
            other = self.ua.call_binding(bindings[0], from_user=from_user)
        elif kind == "number":
            account = await self.accounts(live.info.account_id)
            trunk = await self.trunk_for(account, None) if account is not None else None
            if trunk is None:
                live.log.info("no trunk to dial %s", value)
                return None
            other = await dial_trunk(self.ua, trunk, value, from_user=from_user)
        else:
            if address is None:
                return None  # unreachable: transfer() checks the target first
            uri = SipUri.parse(value)
            transport = uri.transport or "udp"
            addr = (address, uri.port or 5060)
            other = self.ua.invite(value, addr=addr, kind=transport, from_user=from_user)
        try:
            async with asyncio.timeout(TRANSFER_RING_SECONDS):
                answered = await other.wait_answered()
        except TimeoutError:
            answered = False
        if not answered or live.sip is None or live.sip.is_ended:
            await other.hangup("NO_ANSWER" if not answered else "NORMAL_CLEARING")
            return None
        return other


_LOOPBACK = ("127.", "::1", "localhost")


def _reachable_by_peer(uri: str, peer_host: str) -> bool:
    """Whether the far end can dial ``uri`` itself: a loopback target only from loopback."""
    try:
        host = SipUri.parse(uri).host_address
    except Exception:
        return False
    return not host.startswith(_LOOPBACK) or peer_host.startswith(_LOOPBACK)
