"""Account call limits as DynamoDB items: a call holds a *slot* while it lives.

Why in the table: an account's calls start on any node (inbound SIP) or in any Lambda (originate)
and end on whichever node ran them, so "how many calls are live" and "how many started this
second" must be one count every writer agrees on. A count kept per node would let an account run
``max_concurrent_calls`` on *each* node. One ``TransactWriteItems`` makes the check and the count
one atomic step, so two calls racing for the last slot cannot both win.

Items (partition ``ACCOUNT#<id>``, next to the account; none has a ``gsi1`` key, so no listing
sees them):

- ``SLOTS``: the counter, ``active`` = calls holding a slot. It never expires.
- ``SLOT#<call_uuid>``: one per held slot (``call_uuid``, ``acquired_at``, ``expires_at``). Its
  create-only Put makes an acquire of the same call idempotent (the second one finds the item and
  counts nothing), its conditional Delete makes a release idempotent (only the release that
  deletes it decrements), and it lets a reaper find slots whose node died. Its TTL (2 days) is a
  safety net for the table, not for the count: when DynamoDB expires the item, ``active`` is not
  decremented, so the reaper (``functions/workers/reaper_slots.py``) recounts ``SLOT#`` items.
- ``CPS#<window start>``: calls started in one fixed window, ``n``; it expires a minute after the
  window ends.

The calls-per-second check is a fixed window, not a token bucket: one conditional ``ADD`` on an
item named by the window needs no read and no clock agreement beyond the second, and old windows
clean themselves up through TTL. The window is 1 s for a rate of 1/s or more, else ``ceil(1/cps)``
seconds (0.5/s: a 2 s window), and its cap is ``max(1, floor(cps * window))`` calls, so the
average never exceeds the configured rate (a fractional part is rounded down: 2.5/s allows 2 per
second). The price of a fixed window is the burst at a boundary: up to one cap at the end of a
window and another at the start of the next, i.e. 2 * cap calls within a moment. A refused acquire
writes nothing (the transaction is all or nothing), so refusals consume neither count.

Request builders here are pure (literal dicts in tests); the thin callers take a boto3 client
(Lambda, sync) or an aioboto3 client (edge, async) and share them. A cancelled transaction's
reasons say which condition failed, in ``TransactItems`` order (`acquire_outcome`). Concurrent
transactions on the same counter may be cancelled with ``TransactionConflict``; the callers retry
those a few times with a short pause before giving up with the SDK's error.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from shared.clock import iso_z
from shared.dynamo.mapping import ENTITY_ATTRIBUTE, TTL_ATTRIBUTE, Item, key_item
from shared.dynamo.repository import TransactionConflict, translate
from shared.models import AccountLimits

__all__ = [
    "CONCURRENCY_RETRY_AFTER",
    "SLOT_TTL_SECONDS",
    "RateWindow",
    "SlotRefused",
    "acquire",
    "acquire_async",
    "acquire_outcome",
    "acquire_request",
    "acquire_with_async",
    "counter_key",
    "rate_key",
    "rate_window",
    "release",
    "release_async",
    "release_request",
    "slot_key",
]

SLOT_TTL_SECONDS = 2 * 24 * 3600  # far beyond any call: only a leaked slot lives this long
RATE_TTL_SECONDS = 60  # a window's item outlives the window by this much
# A refused call is told to retry after this long: a concurrency slot frees when some call ends,
# which nobody can predict; a few seconds keeps retrying clients from hammering the table.
CONCURRENCY_RETRY_AFTER = 5
CONFLICT_ATTEMPTS = 3
CONFLICT_PAUSE_SECONDS = 0.02  # first pause, then doubled, each with jitter

# Positions in the acquire transaction; CancellationReasons come back in this order.
SLOT_ITEM, COUNTER_ITEM, RATE_ITEM = 0, 1, 2
CONDITION_FAILED = "ConditionalCheckFailed"
HELD: Literal["held"] = "held"
_EPSILON = 1e-9  # 1 / (1/3) is 3.0000000000000004: rounding must not add a second


@dataclass(frozen=True, slots=True)
class SlotRefused:
    """Why a call may not start: which limit, its value, and seconds until a retry can succeed."""

    kind: Literal["concurrency", "rate"]
    limit: float
    retry_after: int

    @property
    def field(self) -> str:
        """The account field that set the limit, as the API names it."""
        if self.kind == "concurrency":
            return "limits.max_concurrent_calls"
        return "limits.calls_per_second"

    @property
    def reason(self) -> str:
        """A short phrase for people (SIP Warning text, log lines)."""
        if self.kind == "concurrency":
            return "account concurrency limit reached"
        return "account call rate limit reached"

    @property
    def shown_limit(self) -> str:
        """The limit as written in a message: ``5``, ``0.5``."""
        return f"{self.limit:g}"


@dataclass(frozen=True, slots=True)
class RateWindow:
    """The fixed window a calls-per-second limit is counted in: its length and its cap."""

    seconds: int
    cap: int

    def start(self, now: float) -> int:
        """The epoch second the window holding ``now`` starts at (windows align to the epoch)."""
        return int(now // self.seconds) * self.seconds

    def retry_after(self, now: float) -> int:
        """Whole seconds until the next window opens (at least 1)."""
        return max(1, math.ceil(self.start(now) + self.seconds - now))


def rate_window(calls_per_second: float) -> RateWindow:
    """The window for a rate: 1 s at 1/s or more, else ``ceil(1/cps)`` s; cap ``floor(cps*s)``."""
    if calls_per_second <= 0:
        raise ValueError(f"calls_per_second must be positive, not {calls_per_second}")
    seconds = 1 if calls_per_second >= 1 else math.ceil(1 / calls_per_second - _EPSILON)
    cap = max(1, math.floor(calls_per_second * seconds + _EPSILON))
    return RateWindow(seconds, cap)


# --------------------------------------------------------------------------- keys


def _partition(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def counter_key(account_id: str) -> Item:
    return key_item(_partition(account_id), "SLOTS")


def slot_key(account_id: str, call_uuid: uuid.UUID | str) -> Item:
    return key_item(_partition(account_id), f"SLOT#{call_uuid}")


def rate_key(account_id: str, window_start: int) -> Item:
    return key_item(_partition(account_id), f"CPS#{window_start}")


# --------------------------------------------------------------------------- requests


def acquire_request(
    table: str,
    account_id: str,
    call_uuid: uuid.UUID | str,
    limits: AccountLimits,
    now: float,
    also: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """TransactWriteItems taking a slot for ``call_uuid``: the per-call item, the counter, the window.

    The per-call Put comes first so that a repeat acquire is recognised as such (its condition
    fails) whatever the other two say. ``also`` are more transaction items written with the slot
    or not at all (the call's record: `acquire_with_async`).
    """
    window = rate_window(limits.calls_per_second)
    start = window.start(now)
    acquired = iso_z(datetime.fromtimestamp(now, UTC), millis=True)
    slot: Item = {
        **slot_key(account_id, call_uuid),
        ENTITY_ATTRIBUTE: {"S": "slot"},
        "account_id": {"S": account_id},
        "call_uuid": {"S": str(call_uuid)},
        "acquired_at": {"S": acquired},
        TTL_ATTRIBUTE: {"N": str(int(now) + SLOT_TTL_SECONDS)},
    }
    return {
        "TransactItems": [
            {
                "Put": {
                    "TableName": table,
                    "Item": slot,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": counter_key(account_id),
                    "UpdateExpression": "SET #kind = :kind ADD #active :one",
                    "ConditionExpression": "attribute_not_exists(#active) OR #active < :max",
                    "ExpressionAttributeNames": {"#kind": ENTITY_ATTRIBUTE, "#active": "active"},
                    "ExpressionAttributeValues": {
                        ":kind": {"S": "slots"},
                        ":one": {"N": "1"},
                        ":max": {"N": str(limits.max_concurrent_calls)},
                    },
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": rate_key(account_id, start),
                    "UpdateExpression": "SET #kind = :kind, #exp = :exp ADD #n :one",
                    "ConditionExpression": "attribute_not_exists(#n) OR #n < :cap",
                    "ExpressionAttributeNames": {
                        "#kind": ENTITY_ATTRIBUTE,
                        "#exp": TTL_ATTRIBUTE,
                        "#n": "n",
                    },
                    "ExpressionAttributeValues": {
                        ":kind": {"S": "cps"},
                        ":exp": {"N": str(start + window.seconds + RATE_TTL_SECONDS)},
                        ":one": {"N": "1"},
                        ":cap": {"N": str(window.cap)},
                    },
                }
            },
            *also,
        ]
    }


def release_request(table: str, account_id: str, call_uuid: uuid.UUID | str) -> dict[str, Any]:
    """TransactWriteItems giving a slot back: delete the per-call item, decrement the counter.

    Both conditional: only a held slot is released (the Delete), and the counter never goes
    below zero (the Update).
    """
    return {
        "TransactItems": [
            {
                "Delete": {
                    "TableName": table,
                    "Key": slot_key(account_id, call_uuid),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": counter_key(account_id),
                    "UpdateExpression": "ADD #active :minus",
                    "ConditionExpression": "#active > :zero",
                    "ExpressionAttributeNames": {"#active": "active"},
                    "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":zero": {"N": "0"}},
                }
            },
        ]
    }


def _failed(reasons: Sequence[str | None], index: int) -> bool:
    return index < len(reasons) and reasons[index] == CONDITION_FAILED


def acquire_outcome(
    reasons: Sequence[str | None], limits: AccountLimits, now: float
) -> SlotRefused | Literal["held"] | None:
    """What a cancelled acquire means, from its cancellation reasons (one code per item).

    ``"held"``: the call holds its slot already (success, nothing counted twice). A SlotRefused
    for a full counter (concurrency wins when both limits are hit: its retry is the longer) or a
    full window. None: no condition failed (a conflict or a throttle), the caller decides.
    """
    if _failed(reasons, SLOT_ITEM):
        return HELD
    if _failed(reasons, COUNTER_ITEM):
        return SlotRefused("concurrency", limits.max_concurrent_calls, CONCURRENCY_RETRY_AFTER)
    if _failed(reasons, RATE_ITEM):
        window = rate_window(limits.calls_per_second)
        return SlotRefused("rate", limits.calls_per_second, window.retry_after(now))
    return None


def _reasons(exc: ClientError) -> list[str | None]:
    """The per-item codes of a transaction cancelled by a condition (repository's view), or []."""
    error = translate(exc)
    return error.reasons if isinstance(error, TransactionConflict) else []


def _conflicted(exc: ClientError) -> bool:
    """Cancelled only because another transaction touched the same items: worth a retry."""
    reasons = exc.response.get("CancellationReasons") or []
    return any(reason.get("Code") == "TransactionConflict" for reason in reasons)


def _pause(attempt: int) -> float:
    base = CONFLICT_PAUSE_SECONDS * 2**attempt
    return base * (0.5 + random.random())  # jitter: racing writers must not retry in step


def _unheld_slot_cleanup(table: str, exc: ClientError, request: dict[str, Any]) -> Any:
    """The Delete of a release whose slot item exists but whose counter is already 0 (the count
    was reset by hand, or drifted): the item goes, the count stays at 0. None otherwise."""
    reasons = _reasons(exc)
    if reasons[:2] == [None, CONDITION_FAILED]:
        delete = request["TransactItems"][0]["Delete"]
        return {"TableName": table, "Key": delete["Key"]}
    return None


# --------------------------------------------------------------------------- sync (boto3)


def acquire(
    client: Any,
    table: str,
    account_id: str,
    call_uuid: uuid.UUID | str,
    limits: AccountLimits,
    *,
    now: float | None = None,
) -> SlotRefused | None:
    """Take a slot for the call; None when it holds one (now or already), else why not.

    Raises the SDK's error when DynamoDB fails (conflicts are retried first).
    """
    for attempt in range(CONFLICT_ATTEMPTS):
        moment = time.time() if now is None else now
        try:
            client.transact_write_items(
                **acquire_request(table, account_id, call_uuid, limits, moment)
            )
            return None
        except ClientError as exc:
            outcome = acquire_outcome(_reasons(exc), limits, moment)
            if outcome == HELD:
                return None
            if isinstance(outcome, SlotRefused):
                return outcome
            if not _conflicted(exc) or attempt + 1 == CONFLICT_ATTEMPTS:
                raise
        time.sleep(_pause(attempt))
    raise AssertionError("not reached")  # pragma: no cover


def release(client: Any, table: str, account_id: str, call_uuid: uuid.UUID | str) -> bool:
    """Give the call's slot back; False (and no change) when it held none. Idempotent.

    Never raises for a refused condition; raises the SDK's error when DynamoDB fails.
    """
    request = release_request(table, account_id, call_uuid)
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            client.transact_write_items(**request)
            return True
        except ClientError as exc:
            if _reasons(exc):
                cleanup = _unheld_slot_cleanup(table, exc, request)
                if cleanup is not None:
                    client.delete_item(**cleanup)
                return False
            if not _conflicted(exc) or attempt + 1 == CONFLICT_ATTEMPTS:
                raise
        time.sleep(_pause(attempt))
    raise AssertionError("not reached")  # pragma: no cover


# --------------------------------------------------------------------------- async (aioboto3)


async def acquire_async(
    client: Any,
    table: str,
    account_id: str,
    call_uuid: uuid.UUID | str,
    limits: AccountLimits,
    *,
    now: float | None = None,
) -> SlotRefused | None:
    """`acquire` for an aioboto3 client."""
    for attempt in range(CONFLICT_ATTEMPTS):
        moment = time.time() if now is None else now
        try:
            await client.transact_write_items(
                **acquire_request(table, account_id, call_uuid, limits, moment)
            )
            return None
        except ClientError as exc:
            outcome = acquire_outcome(_reasons(exc), limits, moment)
            if outcome == HELD:
                return None
            if isinstance(outcome, SlotRefused):
                return outcome
            if not _conflicted(exc) or attempt + 1 == CONFLICT_ATTEMPTS:
                raise
        await asyncio.sleep(_pause(attempt))
    raise AssertionError("not reached")  # pragma: no cover


async def acquire_with_async(
    client: Any,
    table: str,
    account_id: str,
    call_uuid: uuid.UUID | str,
    limits: AccountLimits,
    also: Sequence[dict[str, Any]],
    *,
    now: float | None = None,
) -> tuple[SlotRefused | None, bool]:
    """`acquire_async` with ``also`` (e.g. the call record's create-only Put) in the same
    transaction: one round trip instead of two, and a refused call still writes nothing.

    Returns (refused, whether ``also`` was written). ``also`` is not written when the call held
    its slot already, when the slot is refused, or when one of its own conditions failed (the
    record exists): then the slot is taken alone, and the caller writes ``also`` its own way.
    """
    for attempt in range(CONFLICT_ATTEMPTS):
        moment = time.time() if now is None else now
        try:
            await client.transact_write_items(
                **acquire_request(table, account_id, call_uuid, limits, moment, also)
            )
            return None, True
        except ClientError as exc:
            reasons = _reasons(exc)
            outcome = acquire_outcome(reasons, limits, moment)
            if outcome == HELD:
                return None, False
            if isinstance(outcome, SlotRefused):
                return outcome, False
            if any(_failed(reasons, RATE_ITEM + 1 + i) for i in range(len(also))):
                refused = await acquire_async(client, table, account_id, call_uuid, limits, now=now)
                return refused, False
            if not _conflicted(exc) or attempt + 1 == CONFLICT_ATTEMPTS:
                raise
        await asyncio.sleep(_pause(attempt))
    raise AssertionError("not reached")  # pragma: no cover


async def release_async(
    client: Any, table: str, account_id: str, call_uuid: uuid.UUID | str
) -> bool:
    """`release` for an aioboto3 client."""
    request = release_request(table, account_id, call_uuid)
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            await client.transact_write_items(**request)
            return True
        except ClientError as exc:
            if _reasons(exc):
                cleanup = _unheld_slot_cleanup(table, exc, request)
                if cleanup is not None:
                    await client.delete_item(**cleanup)
                return False
            if not _conflicted(exc) or attempt + 1 == CONFLICT_ATTEMPTS:
                raise
        await asyncio.sleep(_pause(attempt))
    raise AssertionError("not reached")  # pragma: no cover
