"""Reaper step 2: account call slots that outlived their call, and counters that drifted.

Why: a call holds a slot (shared/call_slots.py) from its start until its node gives it back. A node
that died gives nothing back (step 1 releases the slots of the calls it ends, but a node can die
between taking a slot and writing the record); a release that failed leaves its slot taken; and
when DynamoDB's TTL deletes a forgotten ``SLOT#`` item after two days, the account's ``SLOTS``
counter is not decremented. Each leak lowers the account's ``max_concurrent_calls`` for good. So,
per account:

1. Release (``call_slots.release``: the node's own idempotent transaction) every slot whose call
   has ended, or whose record does not exist and that is older than the grace period: inbound SIP
   calls take their slot a moment before their record is written, so a young slot without a
   record is a call starting, not a leak.
2. Recount: when ``SLOTS.active`` disagrees with the ``SLOT#`` items left, set it to their number
   in one transaction that also checks each counted slot still exists and that the counter still
   holds the value read. A call that starts or ends meanwhile changes one of them and cancels the
   repair; the next run tries again. One interleaving slips through (a slot released before the
   read and another taken after it leave the count unchanged): the repair is then one off, and
   the next run, finding the counter and the items disagree, repairs it again. Either way the
   count converges, and two reapers at once cannot both win the conditional write.

Cost per run: one consistent Query per account (``sk BETWEEN "SLOT#" AND "SLOTS"`` returns the
counter and its slots in one read, and nothing for an idle account beyond the counter), plus one
BatchGetItem of call statuses per account holding slots. Accounts are listed from ``gsi1``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.context import Context
from functions.observability import logger
from shared import call_slots
from shared.dynamo import mapping
from shared.models import Call, CallStatus

__all__ = ["SlotAudit", "audit_account", "audit_slots"]

AWS_ERRORS = (ClientError, BotoCoreError)
COUNTER_SK, SLOT_PREFIX = "SLOTS", "SLOT#"
MAX_CHECKED_SLOTS = 99  # TransactWriteItems takes 100 items: the counter plus 99 checks
BATCH_GET_KEYS = 100  # BatchGetItem's limit
BATCH_GET_ATTEMPTS = 3
_UNKNOWN = "unknown"  # a call whose status could not be read: its slot is kept


@dataclass
class SlotAudit:
    """What the slot step did."""

    released: int = 0
    repaired: int = 0
    errors: int = 0


@dataclass
class AccountSlots:
    """An account's counter (None: no counter item) and the slots it holds."""

    active: int | None
    slots: dict[str, datetime | None] = field(default_factory=dict)  # call_uuid -> acquired_at


def account_ids(ctx: Context) -> Iterator[str]:
    """Every account id, from gsi1's ``ACCOUNTS`` listing."""
    request: dict[str, Any] = {
        "TableName": ctx.settings.table_name,
        "IndexName": mapping.GSI_NAME,
        "KeyConditionExpression": "gsi1pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "ACCOUNTS"}},
        "ProjectionExpression": "account_id",
    }
    while True:
        page = ctx.dynamodb.query(**request)
        for item in page.get("Items", []):
            account_id = item.get("account_id", {}).get("S")
            if account_id:
                yield account_id
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


def read_slots(ctx: Context, account_id: str) -> AccountSlots:
    """The counter and the slots of one account, in one consistent Query."""
    request: dict[str, Any] = {
        "TableName": ctx.settings.table_name,
        "KeyConditionExpression": "pk = :p AND sk BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": {
            ":p": {"S": f"ACCOUNT#{account_id}"},
            ":lo": {"S": SLOT_PREFIX},
            ":hi": {"S": COUNTER_SK},
        },
        "ConsistentRead": True,
    }
    found = AccountSlots(active=None)
    while True:
        page = ctx.dynamodb.query(**request)
        for item in page.get("Items", []):
            sk = item["sk"]["S"]
            if sk == COUNTER_SK:
                found.active = int(item.get("active", {}).get("N", "0"))
            elif sk.startswith(SLOT_PREFIX):
                acquired = item.get("acquired_at", {}).get("S")
                found.slots[sk.removeprefix(SLOT_PREFIX)] = (
                    datetime.fromisoformat(acquired) if acquired else None
                )
        last = page.get("LastEvaluatedKey")
        if not last:
            return found
        request["ExclusiveStartKey"] = last


def call_statuses(ctx: Context, call_uuids: list[str]) -> dict[str, str | None]:
    """Each call's status; None when it has no record, ``_UNKNOWN`` when it could not be read."""
    table = ctx.settings.table_name
    statuses: dict[str, str | None] = dict.fromkeys(call_uuids, _UNKNOWN)
    for start in range(0, len(call_uuids), BATCH_GET_KEYS):
        chunk = call_uuids[start : start + BATCH_GET_KEYS]
        keys: list[dict[str, Any]] = [mapping.key(Call, uuid) for uuid in chunk]
        seen: set[str] = set()
        for attempt in range(BATCH_GET_ATTEMPTS):
            reply = ctx.dynamodb.batch_get_item(
                RequestItems={
                    table: {
                        "Keys": keys,
                        "ProjectionExpression": "pk, #st",
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ConsistentRead": True,
                    }
                }
            )
            for item in reply.get("Responses", {}).get(table, []):
                uuid = item["pk"]["S"].removeprefix("CALL#")
                statuses[uuid] = item.get("status", {}).get("S")
                seen.add(uuid)
            keys = reply.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            if not keys:
                break
            time.sleep(0.05 * 2**attempt)  # throttled: BatchGetItem hands back what it skipped
        if not keys:  # every key answered: the ones not returned have no record
            for uuid in chunk:
                if uuid not in seen:
                    statuses[uuid] = None
    return statuses


def is_leaked(
    status: str | None, acquired: datetime | None, now: datetime, grace: timedelta
) -> bool:
    """Whether a slot no longer belongs to a live call."""
    if status == _UNKNOWN:
        return False
    if status is None:
        return acquired is None or now - acquired > grace
    return CallStatus(status).terminal


def repair_request(table: str, account_id: str, held: AccountSlots) -> dict[str, Any]:
    """TransactWriteItems setting the counter to the number of slots held, only if nothing
    changed since the read (module docstring)."""
    counter: dict[str, Any] = {
        "TableName": table,
        "Key": call_slots.counter_key(account_id),
        "UpdateExpression": "SET #active = :n, #kind = :kind",
        "ExpressionAttributeNames": {"#active": "active", "#kind": mapping.ENTITY_ATTRIBUTE},
        "ExpressionAttributeValues": {
            ":n": {"N": str(len(held.slots))},
            ":kind": {"S": "slots"},
        },
    }
    if held.active is None:
        counter["ConditionExpression"] = "attribute_not_exists(#active)"
    else:
        counter["ConditionExpression"] = "#active = :seen"
        counter["ExpressionAttributeValues"][":seen"] = {"N": str(held.active)}
    items: list[dict[str, Any]] = [{"Update": counter}]
    if len(held.slots) <= MAX_CHECKED_SLOTS:
        items.extend(
            {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": call_slots.slot_key(account_id, uuid),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
            for uuid in held.slots
        )
    return {"TransactItems": items}


def audit_account(
    ctx: Context, account_id: str, now: datetime, grace: timedelta, audit: SlotAudit
) -> None:
    """Release the account's leaked slots, then repair its counter if it disagrees."""
    table = ctx.settings.table_name
    held = read_slots(ctx, account_id)
    if held.slots:
        statuses = call_statuses(ctx, list(held.slots))
        leaked = [
            uuid
            for uuid, acquired in held.slots.items()
            if is_leaked(statuses[uuid], acquired, now, grace)
        ]
        for uuid in leaked:
            if call_slots.release(ctx.dynamodb, table, account_id, uuid):
                audit.released += 1
            logger.info(
                "leaked call slot released",
                extra={"account_id": account_id, "call_uuid": uuid, "status": statuses[uuid]},
            )
        if leaked:
            held = read_slots(ctx, account_id)
    if (held.active or 0) == len(held.slots):
        return
    try:
        ctx.dynamodb.transact_write_items(**repair_request(table, account_id, held))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        logger.info(
            "slot counter changed during the audit; next run", extra={"account_id": account_id}
        )
        return
    audit.repaired += 1
    logger.warning(
        "call slot counter repaired",
        extra={"account_id": account_id, "was": held.active, "now": len(held.slots)},
    )


def audit_slots(ctx: Context, now: datetime) -> SlotAudit:
    """Step 2 for every account; an account that fails is counted and the next one goes on."""
    grace = timedelta(seconds=ctx.settings.reaper_grace_seconds)
    audit = SlotAudit()
    for account_id in account_ids(ctx):
        try:
            audit_account(ctx, account_id, now, grace, audit)
        except AWS_ERRORS as exc:
            audit.errors += 1
            logger.warning(
                "call slots of an account not audited",
                extra={"account_id": account_id, "reason": type(exc).__name__},
            )
    return audit
