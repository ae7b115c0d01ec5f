from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.call_fold import fold
from shared.events import (
    CallAnswered,
    CallCompleted,
    CallCreated,
    CallFailed,
    CallRedirected,
    CallRinging,
    CallTransferred,
)
from shared.models import CallStatus, Direction

AT = datetime(2026, 2, 9, 14, 30, 0, 123000, tzinfo=UTC)
IDS = {"call_uuid": uuid.UUID(int=7), "account_id": "acc", "node_id": "n", "occurred_at": AT}


def test_lifecycle_events_move_the_status_and_set_their_fields() -> None:
    assert fold(CallRinging(**IDS)) == (CallStatus.RINGING, {}, False)
    assert fold(CallAnswered(**IDS)) == (
        CallStatus.IN_PROGRESS,
        {"answered_at": "2026-02-09T14:30:00.123Z"},
        False,
    )
    answered = datetime(2026, 2, 9, 14, 29, 0, tzinfo=UTC)
    completed = CallCompleted(
        **IDS, status=CallStatus.BUSY, answered_at=answered, duration=3, sip_status=486
    )
    assert fold(completed) == (
        CallStatus.BUSY,
        {
            "ended_at": "2026-02-09T14:30:00.123Z",
            "duration": 3,
            "hangup_cause": "NORMAL_CLEARING",
            "sip_status": 486,
            "stats": None,
            "answered_at": "2026-02-09T14:29:00.000Z",
        },
        False,
    )
    assert fold(CallFailed(**IDS, hangup_cause="NO_ROUTE_DESTINATION")) == (
        CallStatus.FAILED,
        {
            "ended_at": "2026-02-09T14:30:00.123Z",
            "hangup_cause": "NO_ROUTE_DESTINATION",
            "sip_status": None,
        },
        False,
    )


def test_transfer_and_redirect_keep_the_call_in_progress() -> None:
    assert fold(CallTransferred(**IDS, destination="+15005550009", method="refer")) == (
        CallStatus.IN_PROGRESS,
        {"transferred_to": "+15005550009"},
        True,
    )
    assert fold(CallRedirected(**IDS, media_server="wss://bot.test/b")) == (
        CallStatus.IN_PROGRESS,
        {"socket_url": "wss://bot.test/b"},
        True,
    )


def test_call_created_has_no_fold() -> None:
    created = CallCreated(
        **IDS, direction=Direction.INBOUND, from_number="+15005550006", to_number="+15005550001"
    )
    with pytest.raises(TypeError):
        fold(created)
