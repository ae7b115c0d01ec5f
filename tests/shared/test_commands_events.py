from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.commands import Hangup, Originate, Redirect, Transfer, parse_command
from shared.events import (
    CallAnswered,
    CallCompleted,
    CallCreated,
    CallRedirected,
    CallRinging,
    callback_payload,
    parse_event,
)

CALL = uuid.UUID("d3b07384-d113-444c-9b1d-1234567890ab")
AT = datetime(2026, 2, 9, 14, 30, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "command",
    [
        Originate(
            call_uuid=CALL,
            account_id="a",
            destination_number="5511999999999",
            caller_id_number="5511888888888",
            socket_url="elevenlabs&ag1",
        ),
        Hangup(call_uuid=CALL, account_id="a"),
        Transfer(call_uuid=CALL, account_id="a", destination="sip:bob@127.0.0.1"),
        Redirect(call_uuid=CALL, account_id="a", media_server="wss://bot.example.com/x"),
    ],
    ids=lambda c: c.type,
)
def test_commands_round_trip_through_json(command) -> None:
    parsed = parse_command(command.model_dump_json())
    assert parsed == command
    assert type(parsed) is type(command)
    assert parsed.id.startswith("cmd_") and parsed.version == 1


def test_unknown_command_type_and_version_are_refused() -> None:
    body = json.loads(Hangup(call_uuid=CALL, account_id="a").model_dump_json())
    with pytest.raises(ValidationError):
        parse_command(json.dumps({**body, "type": "explode"}))
    with pytest.raises(ValidationError) as info:
        parse_command(json.dumps({**body, "version": 2}))
    assert info.value.errors()[0]["loc"][-1] == "version"


def test_bad_field_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        Originate(call_uuid=CALL, account_id="a", destination_number="x")
    assert info.value.errors()[0]["loc"] == ("destination_number",)


def test_callback_payloads_are_the_guides() -> None:
    answered = CallAnswered(call_uuid=CALL, account_id="a", node_id="n", occurred_at=AT)
    assert callback_payload(answered) == {
        "event_type": "call.answered",
        "call_uuid": str(CALL),
        "timestamp": "2026-02-09T14:30:00Z",
        "call_status": "in-progress",
    }
    completed = CallCompleted(
        call_uuid=CALL, account_id="a", node_id="n", occurred_at=AT, duration=45
    )
    assert callback_payload(completed) == {
        "event_type": "call.completed",
        "call_uuid": str(CALL),
        "timestamp": "2026-02-09T14:30:00Z",
        "call_status": "completed",
        "duration": 45,
        "hangup_cause": "NORMAL_CLEARING",
        "slo": None,  # the node measured nothing (a record the reaper ended has no stats)
    }
    ringing = CallRinging(call_uuid=CALL, account_id="a", node_id="n", occurred_at=AT)
    assert callback_payload(ringing)["call_status"] == "ringing"
    created = CallCreated(
        call_uuid=CALL,
        account_id="a",
        node_id="n",
        direction="inbound",
        from_number="1",
        to_number="2",
    )
    assert callback_payload(created) is None


def test_the_completed_callback_carries_the_records_slo_beside_the_guides_fields() -> None:
    slo = {"rtp_to_bot_ms_p99": 0.42, "loss_pct": 0.0, "barge_in_stop_ms_max": None}
    stats = {"packets_in": 10, "jitter_ms": 0.5, "slo": slo, "bot": [{"media_in": 3}]}
    completed = CallCompleted(
        call_uuid=CALL, account_id="a", node_id="n", occurred_at=AT, duration=3, stats=stats
    )
    payload = callback_payload(completed)
    assert payload is not None
    assert payload["slo"] == slo
    assert payload["duration"] == 3 and payload["hangup_cause"] == "NORMAL_CLEARING"
    assert "packets_in" not in payload and "bot" not in payload  # only the slo object goes out


def test_a_redirect_callback_names_the_new_driver() -> None:
    redirected = CallRedirected(
        call_uuid=CALL,
        account_id="a",
        node_id="n",
        occurred_at=AT,
        media_server="elevenlabs&agent_7",
        driver="elevenlabs",
    )
    assert callback_payload(redirected) == {
        "event_type": "call.redirected",
        "call_uuid": str(CALL),
        "timestamp": "2026-02-09T14:30:00Z",
        "call_status": "in-progress",
        "media_server": "elevenlabs&agent_7",
        "driver": "elevenlabs",
    }


def test_events_round_trip() -> None:
    event = CallCompleted(
        call_uuid=CALL,
        account_id="a",
        node_id="n",
        status="no-answer",
        hangup_cause="NO_ANSWER",
        stats={"lost": 3},
    )
    assert parse_event(event.model_dump_json()) == event
