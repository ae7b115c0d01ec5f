"""The node's side of account call limits: take a slot when a call starts, give it back at its end.

The counting itself is ``shared.call_slots`` (one DynamoDB transaction per acquire or release,
shared with the API's originate). This class adds what a node needs around it: the account's
limits come with the account the router already read (cached for at most a few seconds, so a
limit change reaches new calls that late), and failures never break a call.

Why acquire fails open: a DynamoDB error here (throttling, a network blip, the table briefly
unreachable) says nothing about the account's usage, and refusing every inbound call while the
table is unwell would turn a bookkeeping outage into a full outage for every customer. The call
goes through uncounted and a warning is logged; the limit is a commercial guard, not a safety one.
Only a refusal the table decided (a full counter or rate window) refuses the call.

Release never raises: it runs at the end of a call, inside ``LiveCall.finish``, which must always
complete. A release that fails leaves the slot counted until the reaper
(functions/workers/reaper_slots.py) finds its ``SLOT#`` item; that is logged as an error naming
the call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared import call_slots
from shared.call_slots import SlotRefused
from shared.models import Account

__all__ = ["CallSlots"]

logger = logging.getLogger("agera.control.slots")

# What a network or service failure of an aioboto3 call raises (records.py has the same list).
AWS_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, OSError)


class CallSlots:
    """Account call slots over an entered aioboto3 ``dynamodb`` client (the bridge's CallLimits).

    ``clock`` gives epoch seconds for the rate window (tests pass a fixed one).
    """

    def __init__(
        self, dynamodb: Any, table_name: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.dynamodb = dynamodb
        self.table = table_name
        self.clock = clock

    async def acquire(self, account: Account, call_uuid: uuid.UUID | str) -> SlotRefused | None:
        """Take a slot for a new call of ``account``; None to go ahead, else why it is refused."""
        refused, _ = await self.acquire_with(account, call_uuid, [])
        return refused

    async def acquire_with(
        self, account: Account, call_uuid: uuid.UUID | str, also: list[dict[str, Any]]
    ) -> tuple[SlotRefused | None, bool]:
        """`acquire` with ``also`` (the call record's Put) in the same transaction; (refused,
        whether ``also`` was written). A DynamoDB error lets the call through uncounted (it fails
        open, see above), with ``also`` not written: the caller writes the record its own way."""
        try:
            refused, written = await call_slots.acquire_with_async(
                self.dynamodb,
                self.table,
                account.account_id,
                call_uuid,
                account.limits,
                also,
                now=self.clock(),
            )
        except AWS_ERRORS as exc:
            logger.warning(
                "call %s: account %s limits not checked (%s); letting the call through",
                call_uuid,
                account.account_id,
                exc,
                extra={"call_uuid": str(call_uuid), "account_id": account.account_id},
            )
            return None, False
        if refused is not None:
            logger.info(
                "call %s: refused, %s (%s = %s)",
                call_uuid,
                refused.reason,
                refused.field,
                refused.shown_limit,
                extra={"call_uuid": str(call_uuid), "account_id": account.account_id},
            )
        return refused, written

    async def release(self, account_id: str, call_uuid: uuid.UUID | str) -> None:
        """Give the call's slot back (nothing when it held none). Never raises."""
        try:
            await call_slots.release_async(self.dynamodb, self.table, account_id, call_uuid)
        except Exception as exc:
            logger.error(
                "call %s: slot of account %s not released (%s); it stays counted",
                call_uuid,
                account_id,
                exc,
                extra={"call_uuid": str(call_uuid), "account_id": account_id},
            )
