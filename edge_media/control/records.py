"""Call records as the edge writes them, and the events it hands to the events worker.

The edge owns what happens to a call, so it writes the record as things happen (the API shows a
ringing call at once) and then queues the event for the events worker, which turns it into the
customer's status callback. Both write through the same fold (``shared.call_fold``) and the same
conditional update (``mapping.call_transition_request``): statuses only move forward and an event
id applies once, so the worker finds an event the edge applied and just queues its callback.

Failure rules, because a record write must never break a live call:

- The record refuses an event because it already moved past it (a late ``call.ringing`` after
  ``call.completed``): ``record`` returns False and the event is not queued, so the customer never
  sees a call ring after it ended.
- DynamoDB fails or the record is missing: the event is queued anyway and the worker applies it
  (it retries until the record exists). The edge never drops an event for want of a table write.
- SQS fails: a few short retries, then the event waits in the node's spool
  (control/event_spool.py), retried with back-off until SQS takes it: late, never lost unless
  the spool overflows or the node stops first (both logged and counted).

``claim`` is the one place where the edge must know the outcome: an originate command may be taken
only by one node, and not at all once the API cancelled the queued call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Annotated, Any

import pydantic
from botocore.exceptions import BotoCoreError, ClientError

from edge_media.control.backoff import backoff_delay
from edge_media.control.event_spool import EventSpool
from edge_media.errors import RecordUnavailable
from shared.call_fold import fold
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.events import CallCreated, CallEvent
from shared.models import Call, CallStatus
from shared.settings import Settings

__all__ = ["CallRecorder", "RecordOutcome"]

logger = logging.getLogger("agera.control.records")

# What a network or service failure of an aioboto3 call raises (aiohttp errors arrive wrapped in
# botocore's; TimeoutError is an OSError); anything else is a programming error and propagates.
AWS_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, OSError)
CONDITION_FAILED = "ConditionalCheckFailedException"
SEND_ATTEMPTS = 3
SEND_BACKOFF_SECONDS = 0.2  # then 0.4 s: the event is late by at most ~0.6 s plus SDK retries
SEND_BACKOFF_CAP = 2.0
# Fields that only their own paths may change: identity, ownership (claim/create), status
# (record, so the lifecycle stays monotonic and callbacks follow) and the callbacks worker's log.
PROTECTED_FIELDS = frozenset(
    {
        "call_uuid",
        "account_id",
        "direction",
        "created_at",
        "updated_at",
        "status",
        "node_id",
        "callback_attempts",
    }
)


class RecordOutcome(Enum):
    """What ``apply`` did with an event."""

    APPLIED = "applied"  # this write moved the record
    ALREADY = "already"  # the event id was applied before (a repeat of record())
    DEFERRED = "deferred"  # not written (no record yet, DynamoDB failing): the worker applies it
    STALE = "stale"  # the record is already past this event


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


@cache
def _field_adapter(name: str) -> pydantic.TypeAdapter[Any]:
    """Validator of one Call field, constraints included, so a bad value never reaches the table."""
    info = Call.model_fields[name]
    return pydantic.TypeAdapter(Annotated[info.annotation, info])


def _stored_value(name: str, value: Any) -> Any:
    """``value`` validated as Call.``name`` and in its stored (JSON) form; raises ValueError."""
    adapter = _field_adapter(name)
    try:
        valid = adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        raise ValueError(f"{name}: {exc.errors()[0]['msg']}") from None
    if isinstance(valid, datetime):
        return iso_z(valid, millis=True)
    return adapter.dump_python(valid, mode="json")


class CallRecorder:
    """Writes the call records of one node and queues their events.

    ``dynamodb`` and ``sqs`` are aioboto3 clients the caller has entered. ``clock`` gives the wall
    time of ``updated_at`` (tests pass a fake one). ``run_id`` (the node's ``EdgeNode.run_id``) is
    stamped on every call the node creates or claims, with the call's entry in the live index
    (``mapping.LIVE_INDEX``): the reaper ends the calls of a run that died, even when the node came
    back under the same id.
    """

    def __init__(
        self,
        dynamodb: Any,
        sqs: Any,
        settings: Settings,
        *,
        node_id: str,
        run_id: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        send_attempts: int = SEND_ATTEMPTS,
        send_backoff_seconds: float = SEND_BACKOFF_SECONDS,
    ) -> None:
        if not settings.events_queue_url:
            raise ValueError("settings.events_queue_url (AGERA_EVENTS_QUEUE_URL) is not set")
        if send_attempts < 1:
            raise ValueError("send_attempts must be at least 1")
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.table = settings.table_name
        self.events_queue_url = settings.events_queue_url
        self.node_id = node_id
        self.run_id = run_id
        self.clock = clock
        self.send_attempts = send_attempts
        self.send_backoff_seconds = send_backoff_seconds
        self.unsent = 0  # events that could not be queued after every retry (then spooled)
        self.spool = EventSpool(self._send_once)

    # ----------------------------------------------------------------------- create / claim

    async def create(self, call: Call) -> bool:
        """Write a new call's record (inbound calls: the node creates them), owned by this node.

        False if a record with that uuid exists already (nothing is changed). Raises
        RecordUnavailable if DynamoDB cannot be reached, so the caller can refuse the call.
        """
        request = self._create_request(call)
        try:
            await self.dynamodb.put_item(**request)
        except AWS_ERRORS as exc:
            if _error_code(exc) == CONDITION_FAILED:
                logger.warning("call %s: record exists already; not created", call.call_uuid)
                return False
            raise RecordUnavailable(f"call {call.call_uuid}: record not created: {exc}") from exc
        return True

    def _create_request(self, call: Call) -> dict[str, Any]:
        if call.node_id not in (None, self.node_id):
            raise ValueError(f"call {call.call_uuid} belongs to node {call.node_id}")
        owned = call if call.node_id else call.model_copy(update={"node_id": self.node_id})
        request = mapping.put_request(self.table, owned, create_only=True)
        if self.run_id:  # live_node itself comes with the item (mapping.to_item)
            request["Item"][mapping.NODE_RUN_ATTRIBUTE] = {"S": self.run_id}
        return request

    def create_item(self, call: Call) -> dict[str, Any]:
        """`create`'s write as a transaction item, for the account-slot acquire to carry
        (one round trip for both; ``shared.call_slots.acquire_with_async``)."""
        return {"Put": self._create_request(call)}

    async def claim(self, call_uuid: uuid.UUID | str) -> Call | None:
        """Take a queued call for this node: one conditional write, the call as stored or None.

        The write sets ``node_id`` only while the call is ``queued`` with no node; the API's cancel
        of a queued call uses the mirror condition (``call_transition_request(unclaimed=True)``),
        so of a claim and a cancel, or of two claims, exactly one wins. None means this node lost
        (claimed elsewhere, cancelled, or no such call). Raises RecordUnavailable when DynamoDB
        cannot be reached (the originate handler then leaves the command for a retry).
        """
        now = self.clock()
        fields = {
            "node_id": self.node_id,
            "updated_at": iso_z(now, millis=True),
            mapping.LIVE_NODE_ATTRIBUTE: self.node_id,  # into the live index (the reaper's)
        }
        if self.run_id:
            fields[mapping.NODE_RUN_ATTRIBUTE] = self.run_id
        request = mapping.update_request(
            self.table,
            mapping.key(Call, call_uuid),
            fields,
            condition="#st = :queued AND attribute_not_exists(#node)",
            condition_values={":queued": CallStatus.QUEUED.value},
            condition_names={"#st": "status", "#node": "node_id"},
            return_new=True,
        )
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            response = await self.dynamodb.update_item(**request)
        except AWS_ERRORS as exc:
            if _error_code(exc) != CONDITION_FAILED:
                raise RecordUnavailable(f"call {call_uuid}: claim not written: {exc}") from exc
            old = exc.response.get("Item") if isinstance(exc, ClientError) else None
            logger.info(
                "call %s: not claimed (%s)",
                call_uuid,
                _why_not_claimed(old),
                extra={"call_uuid": str(call_uuid), "node_id": self.node_id},
            )
            return None
        return mapping.from_item(Call, response["Attributes"])

    # ----------------------------------------------------------------------- events

    async def record(self, event: CallEvent) -> bool:
        """Apply ``event`` to its record, then queue it for the events worker.

        False when the record is already past the event (stale): then nothing is queued. True
        otherwise, including when DynamoDB or SQS failed (logged; see the module notes). Raises
        only for programming errors (``call.created`` belongs to ``create``).
        """
        if isinstance(event, CallCreated):
            raise TypeError("call.created is not recorded; write the record with create()")
        outcome = await self.apply(event)
        if outcome is RecordOutcome.STALE:
            logger.info(
                "call %s: %s is stale; record kept, event not queued",
                event.call_uuid,
                event.type,
                extra=_event_extra(event),
            )
            return False
        await self.send(event)
        return True

    async def apply(self, event: CallEvent) -> RecordOutcome:
        """The record half of ``record``: the conditional write and, if refused, why."""
        status, fields, allow_same = fold(event)
        request = mapping.call_transition_request(
            self.table,
            event.call_uuid,
            status,
            {name: value for name, value in fields.items() if value is not None},
            event_id=event.id,
            allow_same=allow_same,
            now=self.clock(),
        )
        try:
            await self.dynamodb.update_item(**request)
        except AWS_ERRORS as exc:
            if _error_code(exc) != CONDITION_FAILED:
                logger.warning(
                    "call %s: %s not written (%s); the events worker will apply it",
                    event.call_uuid,
                    event.type,
                    exc,
                    extra=_event_extra(event),
                )
                return RecordOutcome.DEFERRED
        else:
            return RecordOutcome.APPLIED
        return await self._refusal(event)

    async def _refusal(self, event: CallEvent) -> RecordOutcome:
        """Why the conditional write was refused: missing record, a repeat, or a stale event."""
        request = mapping.get_request(
            self.table, mapping.key(Call, event.call_uuid), consistent=True
        )
        try:
            item = (await self.dynamodb.get_item(**request)).get("Item")
        except AWS_ERRORS as exc:
            logger.warning(
                "call %s: record unreadable (%s); the events worker decides on %s",
                event.call_uuid,
                exc,
                event.type,
                extra=_event_extra(event),
            )
            return RecordOutcome.DEFERRED
        if item is None:
            logger.warning(
                "call %s: no record; the events worker applies %s once it exists",
                event.call_uuid,
                event.type,
                extra=_event_extra(event),
            )
            return RecordOutcome.DEFERRED
        if event.id in item.get("applied_events", {}).get("SS", []):
            return RecordOutcome.ALREADY
        return RecordOutcome.STALE

    async def send(self, event: CallEvent) -> bool:
        """Queue ``event`` for the events worker; a few short retries, then the spool (False:
        it goes late)."""
        body = event.model_dump_json()
        for attempt in range(1, self.send_attempts + 1):
            try:
                await self.sqs.send_message(QueueUrl=self.events_queue_url, MessageBody=body)
            except AWS_ERRORS as exc:
                if attempt == self.send_attempts:
                    self.unsent += 1
                    logger.error(
                        "call %s: %s event %s not queued after %d attempts (%s); "
                        "kept in the spool and retried",
                        event.call_uuid,
                        event.type,
                        event.id,
                        attempt,
                        exc,
                        extra=_event_extra(event),
                    )
                    self.spool.put(body, f"call {event.call_uuid} {event.type}")
                    return False
                await asyncio.sleep(
                    backoff_delay(attempt, base=self.send_backoff_seconds, cap=SEND_BACKOFF_CAP)
                )
            else:
                return True
        return False  # not reached: the loop returns on its last attempt

    async def _send_once(self, body: str) -> bool:
        try:
            await self.sqs.send_message(QueueUrl=self.events_queue_url, MessageBody=body)
        except AWS_ERRORS as exc:
            logger.debug("events queue still failing: %s", exc)
            return False
        return True

    # ----------------------------------------------------------------------- other fields

    async def update(self, call_uuid: uuid.UUID | str, fields: Mapping[str, Any]) -> Call | None:
        """Set non-status fields (``media``, ``stats``, ``socket_url``, ...); the call as stored.

        Values are validated as the Call model's fields first; an unknown or protected field name
        or an invalid value raises ValueError (a programming error). A missing record or a
        DynamoDB failure is logged and gives None: these fields are bookkeeping, never worth
        breaking a call for. None as a value removes the field.
        """
        if not fields:
            raise ValueError("update needs at least one field")
        stored: dict[str, Any] = {}
        for name, value in fields.items():
            if name not in Call.model_fields or name in PROTECTED_FIELDS:
                raise ValueError(f"{name!r} is not a call field update() may set")
            stored[name] = None if value is None else _stored_value(name, value)
        stored["updated_at"] = iso_z(self.clock(), millis=True)
        request = mapping.update_request(
            self.table, mapping.key(Call, call_uuid), stored, return_new=True
        )
        try:
            response = await self.dynamodb.update_item(**request)
        except AWS_ERRORS as exc:
            reason = "no such record" if _error_code(exc) == CONDITION_FAILED else str(exc)
            logger.warning(
                "call %s: fields %s not updated (%s)",
                call_uuid,
                ", ".join(sorted(fields)),
                reason,
                extra={"call_uuid": str(call_uuid), "node_id": self.node_id},
            )
            return None
        return mapping.from_item(Call, response["Attributes"])


def _why_not_claimed(old: Mapping[str, Any] | None) -> str:
    if not old:
        return "no such call"
    status = old.get("status", {}).get("S", "?")
    node = old.get("node_id", {}).get("S")
    return f"claimed by node {node}" if node else f"status {status}"


def _event_extra(event: CallEvent) -> dict[str, str]:
    return {
        "call_uuid": str(event.call_uuid),
        "account_id": event.account_id,
        "event_type": event.type,
        "event_id": event.id,
    }
