"""What each call event does to its call record: one fold, used by the edge and the events worker.

Why shared: the edge applies its own events to the record as they happen (so the API shows a call
ringing at once), and the events worker applies the same events again from the queue (the path for
anything the edge could not write). Both must agree field for field, or a record would differ by
who wrote it. The conditional write itself is ``mapping.call_transition_request``.
"""

from __future__ import annotations

from typing import Any

from shared.clock import iso_z
from shared.events import (
    CallAnswered,
    CallBotReconnected,
    CallCompleted,
    CallEvent,
    CallFailed,
    CallRedirected,
    CallRinging,
    CallTransferred,
)
from shared.models import CallStatus


def fold(event: CallEvent) -> tuple[CallStatus, dict[str, Any], bool]:
    """What an event does to its record: (status, fields to set, allow same status).

    A field whose value is None is not set (the caller drops it). ``call.created`` has no fold: it
    creates the record instead. Raises TypeError for it.
    """
    if isinstance(event, CallRinging):
        return CallStatus.RINGING, {}, False
    if isinstance(event, CallAnswered):
        fields: dict[str, Any] = {"answered_at": iso_z(event.occurred_at, millis=True)}
        return CallStatus.IN_PROGRESS, fields, False
    if isinstance(event, CallCompleted):
        fields = {
            "ended_at": iso_z(event.occurred_at, millis=True),
            "duration": event.duration,
            "hangup_cause": event.hangup_cause,
            "sip_status": event.sip_status,
            "stats": event.stats or None,
        }
        if event.answered_at:
            fields["answered_at"] = iso_z(event.answered_at, millis=True)
        if event.ended_by:  # only the reaper's ends carry these (a dead node's calls)
            fields["ended_by"] = event.ended_by
            fields["end_detail"] = event.end_detail
        return event.status, fields, False
    if isinstance(event, CallFailed):
        fields = {
            "ended_at": iso_z(event.occurred_at, millis=True),
            "hangup_cause": event.hangup_cause,
            "sip_status": event.sip_status,
        }
        return CallStatus.FAILED, fields, False
    if isinstance(event, CallTransferred):
        return CallStatus.IN_PROGRESS, {"transferred_to": event.destination}, True
    if isinstance(event, CallRedirected | CallBotReconnected):
        return CallStatus.IN_PROGRESS, {"socket_url": event.media_server}, True
    raise TypeError(f"no fold for {type(event).__name__}")
