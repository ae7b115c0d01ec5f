"""Blind transfer with REFER (RFC 3515), both ways, on top of the sans-I/O `refer` module.

Transferor (`send_refer`): the bot or the API wants the caller elsewhere; we REFER the peer and
follow its NOTIFY reports; on success the original call is ours to end with BYE. Transferee
(`follow_refer`): a phone or carrier REFERs us; we call the target ourselves, report progress
in NOTIFYs, and the application that ran the original call runs on the new one, so a caller
transferring the bot's line reaches the same bot from the new party.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from edge_media.sip.endpoint import TransactionFailed
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.refer import (
    ReferError,
    ReferNotifier,
    ReferNotify,
    parse_refer,
    refer_headers,
)
from edge_media.sip.refer_transferor import DEFAULT_TRANSFER_TIMEOUT, OutgoingRefer, TransferState
from edge_media.sip.transaction import TransactionId
from edge_media.sip.uri import SipUri

if TYPE_CHECKING:
    from edge_media.sip.call import SipCall

__all__ = ["follow_refer", "on_refer_notify", "send_refer"]

logger = logging.getLogger("agera.sip.transfer")


async def send_refer(
    call: SipCall, target: str, *, give_up_after: float = DEFAULT_TRANSFER_TIMEOUT
) -> TransferState:
    """REFER the peer of ``call`` to ``target`` (a SIP URI); returns how the transfer ended.

    The caller decides what success means for the original leg; RFC 3515 leaves it to the
    transferor, and the usual answer (ours in the bridge) is a BYE once the target answered.
    """
    dialog = call.dialog
    if dialog is None or call.is_ended:
        return TransferState.REJECTED
    uri = SipUri.parse(target)
    now = call.endpoint.now()
    request = dialog.create_request(
        "REFER",
        via=call.endpoint.via(call.kind),
        contact=call.endpoint.contact(None, call.kind),
        extra_headers=refer_headers(uri, referred_by=dialog.local.uri),
    )
    refer = call.outgoing_refer = OutgoingRefer(request.cseq.number, now, timeout=give_up_after)
    call.refer_done.clear()
    addr, kind = call.next_hop()
    client = call.endpoint.send_request(request, addr, kind)
    final = await client.final()
    if isinstance(final, TransactionFailed):
        refer.on_refer_timeout()
    else:
        refer.on_response(final)
    call.log.info("REFER to %s: %s", target, refer.state)
    if not refer.done:
        try:
            async with asyncio.timeout(max(0.0, refer.deadline - call.endpoint.now())):
                await call.refer_done.wait()
        except TimeoutError:
            refer.on_deadline(call.endpoint.now())
    call.log.info(
        "transfer to %s ended %s (%s %s)", target, refer.state, refer.status, refer.reason
    )
    return refer.state


def on_refer_notify(call: SipCall, txn: TransactionId, request: SipRequest) -> None:
    """A NOTIFY in a dialog where we sent REFER: answer it and wake `send_refer`."""
    refer = call.outgoing_refer
    if refer is None:
        call.reply(txn, request, 481, "Subscription Does Not Exist")
        return
    answer = refer.on_notify(request, call.endpoint.now())
    call.reply(txn, request, answer.status, answer.reason, extra=answer.headers)
    if refer.done:
        call.refer_done.set()


async def follow_refer(call: SipCall, txn: TransactionId, request: SipRequest) -> None:
    """We are the transferee: accept, call the target, NOTIFY its progress, hand over the app."""
    try:
        refer = parse_refer(request)
    except ReferError as error:
        call.reply(txn, request, error.status, error.reason)
        return
    ua = call.ua
    notifier = ReferNotifier(
        refer, first_in_dialog=call.refers_received == 0, now=call.endpoint.now()
    )
    call.refers_received += 1
    call.reply(txn, request, 202, "Accepted", extra=notifier.accept_headers())
    await _notify(call, notifier.accepted(call.endpoint.now()))
    target = refer.target.uri
    addr, kind = ua.resolve(target, call.peer, call.kind)
    extra = [("Referred-By", refer.referred_by_value)] if refer.referred_by_value else []
    user = getattr(
        call.invite.to.uri if call.direction == "inbound" else call.invite.from_.uri, "user", None
    )
    new_call = ua.invite(
        str(target), addr=addr, kind=kind, from_user=user or "agera", extra_headers=extra
    )
    call.log.info("REFER: calling %s for the transfer (call %s)", target, new_call.call_id)
    if await new_call.wait_ringing() and not new_call.is_ended:
        await _notify(call, notifier.on_target_response(180, call.endpoint.now(), "Ringing"))
    answered = await new_call.wait_answered()
    end = new_call.end
    status = 200 if answered else (end.status if end and end.status else 487)
    await _notify(call, notifier.on_target_response(status, call.endpoint.now()))
    if answered and call.app is not None:
        ua.run_app(new_call, call.app)


async def _notify(call: SipCall, notify: ReferNotify | None) -> None:
    if notify is None or call.is_ended or call.dialog is None:
        return
    final = await call.request(
        "NOTIFY", body=notify.body, content_type=notify.content_type, extra=notify.extra_headers
    )
    if isinstance(final, SipResponse) and final.status >= 300:
        call.log.info("NOTIFY answered %d %s", final.status, final.reason)
