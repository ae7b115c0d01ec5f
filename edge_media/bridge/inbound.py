"""An inbound SIP call to a number or from an extension, bridged to its bot.

Each step is raced against the caller hanging up (a CANCEL during a slow webhook must end the
work, not leave it running): 180 Ringing at once (the node sends it before the route lookup), the
call record, then the routing decision (static or webhook) and the bot connection (with the
account default as fallback) while `call.ringing` is written, then 200 OK (which does not wait
for `call.ringing` to be queued; `call.answered` does). A route that cannot be served is answered
with a final SIP status and a reason, never left ringing.

The account's call slot (``services.slots``: concurrency and calls-per-second limits counted
across every node) is taken before anything else is written, in the same DynamoDB transaction as
the call's record when the recorder can give its write as one (one round trip for both). A call
over a limit gets 486 (too many live calls: the account is busy) or 503 with Retry-After (too
many calls this second: try again shortly), and leaves no record, no event and no `LiveCall`
behind, as if it never reached the account. A call that took a slot gives it back in `LiveCall.finish`.
"""

from __future__ import annotations

import asyncio
import time

from edge_media.bridge.live_call import LiveCall, until_ended
from edge_media.bridge.services import BridgeServices
from edge_media.drivers.base import CallInfo
from edge_media.routing.router import CallRoute, CallRouter, Refuse
from edge_media.sip.call import SipCall
from shared.call_slots import SlotRefused
from shared.models import Call, Direction

__all__ = ["inbound_app"]

RINGING_WAIT_SECONDS = 5.0


async def inbound_app(
    sip: SipCall, *, route: CallRoute, routing: CallRouter, services: BridgeServices
) -> None:
    """The call application for an inbound call whose route was looked up (``route``)."""
    account = route.account
    caller = sip.remote_user or "anonymous"
    dialed = sip.request_user or ""
    info = CallInfo(
        call_uuid=str(sip.call_uuid),
        account_id=account.account_id,
        direction=Direction.INBOUND.value,
        from_number=caller,
        to_number=dialed,
    )
    slots = services.slots
    began = time.monotonic()
    record = Call(
        call_uuid=sip.call_uuid,
        account_id=account.account_id,
        direction=Direction.INBOUND,
        from_number=caller[:256],
        to_number=dialed[:256],
        node_id=services.node_id,
        webhook_url=route.callback_url,
    )
    recorded = False  # the record went with the slot, in one transaction
    if slots is not None:
        item = services.recorder.create_item(record)
        if item is None:
            refused = await slots.acquire(account, sip.call_uuid)
        else:
            refused, recorded = await slots.acquire_with(account, sip.call_uuid, [item])
        if refused is not None:
            _refuse_over_limit(sip, refused)
            return
    live = LiveCall(services, sip, info, sip.call_uuid)
    live.setup.step("slot", began)
    live.holds_slot = slots is not None
    live.register()
    sip.log.info(
        "inbound to %s for account %s (call %s)", route.label, account.account_id, sip.call_uuid
    )
    ringing: asyncio.Future[None] | None = None
    try:
        sip.ring()
        if not recorded:
            await services.recorder.create(record)
        live.setup.step("record")
        # call.ringing is written while routing and the bot connection run (it must only come
        # before call.answered); the record itself exists before the webhook or the bot hear of it.
        ringing = asyncio.ensure_future(live.ringing())
        finished, decision = await until_ended(
            sip,
            routing.decide(
                route,
                call_uuid=str(sip.call_uuid),
                direction=Direction.INBOUND.value,
                caller_number=caller,
                destination_number=dialed,
            ),
        )
        if not finished:
            return
        live.setup.step("routing")
        if getattr(decision, "webhook_ms", None) is not None:
            services.metrics.routing_webhook_ms(decision.webhook_ms)
        if isinstance(decision, Refuse):
            live.log.info(
                "refused by routing: %s %s (%s)", decision.status, decision.reason, decision.detail
            )
            sip.reject(decision.status, decision.reason, cause=decision.cause)
            return
        live.max_seconds = decision.max_seconds
        finished, connected = await until_ended(
            sip, live.connect_bot(decision.target, decision.fallback)
        )
        if not finished:
            return
        if not connected:
            sip.reject(480, "Temporarily Unavailable", cause="NORMAL_TEMPORARY_FAILURE")
            return
        live.setup.step("bot")
        if not await sip.answer():
            return
        live.setup.step("200 OK")
        live.note_answered()
        live.attach_media()
        # call.ringing is queued before call.answered, but the caller does not wait for it: the
        # answer and the media go first (the events queue's round trip was the largest step of
        # a call's setup).
        await ringing
        await live.mark_answered()
        await live.run()
    except Exception:
        live.log.exception("inbound call failed")
        if not sip.is_ended:
            await sip.hangup("NORMAL_TEMPORARY_FAILURE")
    finally:
        if ringing is not None and not ringing.done():
            await asyncio.wait({ringing}, timeout=RINGING_WAIT_SECONDS)  # before call.completed
        await live.finish()


def _refuse_over_limit(sip: SipCall, refused: SlotRefused) -> None:
    """Answer a call over an account limit: 486 when the account is busy, 503 for a rate limit.

    The Warning header (RFC 3261 §20.43, code 399) says which limit, for whoever reads the trace.
    """
    sip.log.info("refused: %s (%s = %s)", refused.reason, refused.field, refused.shown_limit)
    warning = ("Warning", f'399 agera "{refused.reason}"')
    if refused.kind == "concurrency":
        sip.reject(486, "Busy Here", cause="USER_BUSY", extra=[warning])
        return
    retry = ("Retry-After", str(refused.retry_after))
    sip.reject(503, "Service Unavailable", cause="NORMAL_TEMPORARY_FAILURE", extra=[retry, warning])
