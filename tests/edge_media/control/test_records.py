"""CallRecorder against moto: create, claim races, the event lifecycle, and the events worker after it."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from edge_media.control.records import CallRecorder, RecordOutcome
from edge_media.errors import RecordUnavailable
from functions.context import reset_default_context
from functions.workers import events as events_worker
from infra.sqs_poller import SqsPoller
from shared.clock import utc_now
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed, Repository
from shared.events import (
    CallAnswered,
    CallCompleted,
    CallCreated,
    CallRedirected,
    CallRinging,
    parse_callback,
    parse_event,
)
from shared.models import Call, CallStatus, Direction, MediaLeg
from shared.settings import Settings

pytestmark = pytest.mark.anyio
NODE = "node-a"


def queued_call(**fields: Any) -> Call:
    values: dict[str, Any] = {
        "account_id": "acc_records",
        "direction": Direction.OUTBOUND,
        "from_number": "+15005550006",
        "to_number": "+15005550001",
    }
    return Call(**{**values, **fields})


@pytest.fixture
async def events_queue(aio) -> str:
    return await aio.new_queue("events")


@pytest.fixture
def node_settings(settings: Settings, events_queue: str) -> Settings:
    return settings.model_copy(update={"events_queue_url": events_queue})


@pytest.fixture
def recorder(aio, node_settings: Settings, wall) -> CallRecorder:
    return CallRecorder(aio.dynamodb, aio.sqs, node_settings, node_id=NODE, clock=wall)


@pytest.fixture
def sync_repo(aws) -> Repository:
    return Repository(boto3.session.Session().client("dynamodb"), aws.table_name)


async def stored(aio, call_uuid: Any) -> Call:
    request = mapping.get_request(aio.table_name, mapping.key(Call, call_uuid), consistent=True)
    item = (await aio.dynamodb.get_item(**request))["Item"]
    return mapping.from_item(Call, item)


def event_of(cls: type, call: Call, **fields: Any) -> Any:
    return cls(call_uuid=call.call_uuid, account_id=call.account_id, node_id=NODE, **fields)


def api_cancel(repo: Repository, call: Call) -> None:
    """What the API does to cancel a queued call (functions/api/call_control.py, _cancel_in_place)."""
    now = utc_now()
    request = mapping.call_transition_request(
        repo.table,
        call.call_uuid,
        CallStatus.CANCELED,
        {
            "ended_at": "2026-02-09T14:30:00.000Z",
            "duration": 0,
            "hangup_cause": "ORIGINATOR_CANCEL",
        },
        event_id=f"evt_{uuid.uuid4().hex}",
        unclaimed=True,
        now=now,
    )
    repo.execute_update(request)


# --------------------------------------------------------------------------- create and claim


async def test_create_writes_an_owned_record_once(aio, recorder: CallRecorder) -> None:
    call = queued_call(direction=Direction.INBOUND)
    assert await recorder.create(call) is True
    assert (await stored(aio, call.call_uuid)).node_id == NODE
    assert await recorder.create(call.model_copy(update={"to_number": "+15005550002"})) is False
    assert (await stored(aio, call.call_uuid)).to_number == "+15005550001"


async def test_create_refuses_a_call_of_another_node(recorder: CallRecorder) -> None:
    with pytest.raises(ValueError):
        await recorder.create(queued_call(node_id="node-b"))


async def test_create_raises_its_own_error_when_the_table_is_unreachable(
    aio, settings: Settings, events_queue: str
) -> None:
    broken = settings.model_copy(
        update={"table_name": "no-such-table", "events_queue_url": events_queue}
    )
    recorder = CallRecorder(aio.dynamodb, aio.sqs, broken, node_id=NODE)
    with pytest.raises(RecordUnavailable):
        await recorder.create(queued_call())


async def test_claim_wins_once(aio, sync_repo: Repository, node_settings: Settings, wall) -> None:
    call = queued_call()
    sync_repo.put(call)
    first = CallRecorder(aio.dynamodb, aio.sqs, node_settings, node_id="node-a", clock=wall)
    second = CallRecorder(aio.dynamodb, aio.sqs, node_settings, node_id="node-b", clock=wall)
    claimed = await first.claim(call.call_uuid)
    assert claimed is not None
    assert (claimed.call_uuid, claimed.node_id, claimed.status) == (
        call.call_uuid,
        "node-a",
        CallStatus.QUEUED,
    )
    assert await second.claim(call.call_uuid) is None
    assert await first.claim(call.call_uuid) is None  # not even twice by the same node
    assert (await stored(aio, call.call_uuid)).node_id == "node-a"


async def test_claim_loses_against_the_api_cancel(
    aio, sync_repo: Repository, recorder: CallRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    call = queued_call()
    sync_repo.put(call)
    api_cancel(sync_repo, call)
    with caplog.at_level(logging.INFO, logger="agera.control.records"):
        assert await recorder.claim(call.call_uuid) is None
    assert "status canceled" in caplog.text
    record = await stored(aio, call.call_uuid)
    assert (record.status, record.node_id) == (CallStatus.CANCELED, None)


async def test_the_api_cancel_loses_against_a_claim(
    aio, sync_repo: Repository, recorder: CallRecorder
) -> None:
    call = queued_call()
    sync_repo.put(call)
    assert await recorder.claim(call.call_uuid) is not None
    with pytest.raises(ConditionFailed):
        api_cancel(sync_repo, call)
    assert (await stored(aio, call.call_uuid)).status is CallStatus.QUEUED


async def test_claim_of_an_unknown_call_is_none(recorder: CallRecorder) -> None:
    assert await recorder.claim(uuid.uuid4()) is None


# --------------------------------------------------------------------------- events


async def test_record_moves_the_call_forward_and_queues_each_event(
    aio, sync_repo: Repository, recorder: CallRecorder, events_queue: str
) -> None:
    call = queued_call()
    sync_repo.put(call)
    await recorder.claim(call.call_uuid)
    answered_at = datetime(2026, 2, 9, 14, 30, 5, tzinfo=UTC)
    ringing = event_of(CallRinging, call)
    answered = event_of(CallAnswered, call, occurred_at=answered_at)
    completed = event_of(
        CallCompleted,
        call,
        occurred_at=datetime(2026, 2, 9, 14, 31, 0, tzinfo=UTC),
        duration=55,
        hangup_cause="NORMAL_CLEARING",
        sip_status=200,
        stats={"rtp_loss_pct": 0.5},
    )
    statuses = []
    for event in (ringing, answered, completed):
        assert await recorder.record(event) is True
        statuses.append((await stored(aio, call.call_uuid)).status)
    assert statuses == [CallStatus.RINGING, CallStatus.IN_PROGRESS, CallStatus.COMPLETED]
    record = await stored(aio, call.call_uuid)
    assert (record.duration, record.hangup_cause, record.sip_status) == (55, "NORMAL_CLEARING", 200)
    assert record.answered_at == answered_at
    assert record.stats == {"rtp_loss_pct": 0.5}
    queued = [parse_event(body) for body in await aio.bodies(events_queue)]
    assert sorted(e.id for e in queued) == sorted([ringing.id, answered.id, completed.id])
    assert {e.id: e for e in queued}[completed.id] == completed


async def test_a_stale_event_is_refused_and_not_queued(
    aio, sync_repo: Repository, recorder: CallRecorder, events_queue: str
) -> None:
    call = queued_call()
    sync_repo.put(call)
    completed = event_of(CallCompleted, call, duration=0, hangup_cause="NO_ANSWER")
    assert await recorder.record(completed) is True
    late = event_of(CallRinging, call)
    assert await recorder.apply(late) is RecordOutcome.STALE
    assert await recorder.record(late) is False
    assert (await stored(aio, call.call_uuid)).status is CallStatus.COMPLETED
    assert [parse_event(b).id for b in await aio.bodies(events_queue)] == [completed.id]


async def test_an_event_applies_once(aio, sync_repo: Repository, recorder: CallRecorder) -> None:
    call = queued_call()
    sync_repo.put(call)
    redirected = event_of(CallRedirected, call, media_server="wss://bot.test/two")
    await recorder.record(event_of(CallAnswered, call))
    assert await recorder.apply(redirected) is RecordOutcome.APPLIED
    assert await recorder.apply(redirected) is RecordOutcome.ALREADY
    assert (await stored(aio, call.call_uuid)).socket_url == "wss://bot.test/two"


async def test_an_event_for_a_missing_record_goes_to_the_worker(
    aio, recorder: CallRecorder, events_queue: str
) -> None:
    ghost = queued_call()  # never written
    ringing = event_of(CallRinging, ghost)
    assert await recorder.apply(ringing) is RecordOutcome.DEFERRED
    assert await recorder.record(ringing) is True
    assert {parse_event(b).id for b in await aio.bodies(events_queue)} == {ringing.id}


async def test_a_failing_table_defers_the_event_to_the_worker(
    aio, settings: Settings, events_queue: str
) -> None:
    broken = settings.model_copy(
        update={"table_name": "no-such-table", "events_queue_url": events_queue}
    )
    recorder = CallRecorder(aio.dynamodb, aio.sqs, broken, node_id=NODE)
    answered = event_of(CallAnswered, queued_call())
    assert await recorder.record(answered) is True
    assert [parse_event(b).id for b in await aio.bodies(events_queue)] == [answered.id]


async def test_an_unsendable_event_is_logged_with_call_and_type(
    aio, settings: Settings, sync_repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    probe = await aio.new_queue("probe")
    gone = probe.rsplit("/", 1)[0] + f"/missing-{uuid.uuid4().hex[:8]}"
    recorder = CallRecorder(
        aio.dynamodb,
        aio.sqs,
        settings.model_copy(update={"events_queue_url": gone}),
        node_id=NODE,
        send_backoff_seconds=0.01,
    )
    call = queued_call()
    sync_repo.put(call)
    with caplog.at_level(logging.ERROR, logger="agera.control.records"):
        assert await recorder.record(event_of(CallRinging, call)) is True
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert str(call.call_uuid) in line
    assert "call.ringing" in line
    assert "after 3 attempts" in line
    assert recorder.unsent == 1
    assert (await stored(aio, call.call_uuid)).status is CallStatus.RINGING  # applied anyway


async def test_call_created_is_not_an_event_to_record(recorder: CallRecorder) -> None:
    created = CallCreated(
        call_uuid=uuid.uuid4(),
        account_id="acc",
        node_id=NODE,
        direction=Direction.INBOUND,
        from_number="+15005550006",
        to_number="+15005550001",
    )
    with pytest.raises(TypeError):
        await recorder.record(created)


async def test_the_events_worker_queues_one_callback_per_recorded_event(
    aio, sync_repo: Repository, recorder: CallRecorder, events_queue: str, monkeypatch
) -> None:
    callbacks_queue = await aio.new_queue("callbacks")
    monkeypatch.setenv("AGERA_EVENTS_QUEUE_URL", events_queue)
    monkeypatch.setenv("AGERA_CALLBACKS_QUEUE_URL", callbacks_queue)
    reset_default_context()
    call = queued_call(webhook_url="https://hooks.example.com/calls")
    sync_repo.put(call)
    await recorder.claim(call.call_uuid)
    recorded = [
        event_of(CallRinging, call),
        event_of(CallAnswered, call),
        event_of(CallCompleted, call, duration=12, hangup_cause="NORMAL_CLEARING"),
    ]
    for event in recorded:
        assert await recorder.record(event) is True
    assert await recorder.record(event_of(CallRinging, call)) is False  # stale: never sent

    sqs = boto3.session.Session().client("sqs")
    poller = SqsPoller(sqs, events_queue, events_worker.handler, "EventsFunction", wait_seconds=0)
    handled = 0
    for _ in range(10):  # bounded
        got = poller.poll_once()
        handled += got
        if not got:
            break
    assert (handled, poller.failures) == (3, 0)
    callbacks = [parse_callback(body) for body in await aio.bodies(callbacks_queue)]
    assert sorted(c.id for c in callbacks) == sorted(
        f"cb_{e.id.removeprefix('evt_')}" for e in recorded
    )
    by_type = {c.payload["event_type"]: c for c in callbacks}
    assert set(by_type) == {"call.ringing", "call.answered", "call.completed"}
    assert by_type["call.completed"].payload["duration"] == 12
    assert all(str(c.webhook_url) == "https://hooks.example.com/calls" for c in callbacks)
    # The worker found each event applied already; the record is unchanged by it.
    record = await stored(aio, call.call_uuid)
    assert (record.status, record.node_id) == (CallStatus.COMPLETED, NODE)
    reset_default_context()


# --------------------------------------------------------------------------- other fields


async def test_update_sets_validated_fields(
    aio, sync_repo: Repository, recorder: CallRecorder, wall
) -> None:
    call = queued_call()
    sync_repo.put(call)
    leg = MediaLeg(target="wss://bot.test/one", started_at=wall.now)
    updated = await recorder.update(
        call.call_uuid,
        {"media": [leg], "stats": {"packets_in": 2750}, "socket_url": "wss://bot.test/one"},
    )
    assert updated is not None
    assert updated.media == [leg]
    assert (updated.stats, updated.socket_url) == ({"packets_in": 2750}, "wss://bot.test/one")
    assert updated.updated_at == wall.now
    assert updated.status is CallStatus.QUEUED
    assert await stored(aio, call.call_uuid) == updated
    cleared = await recorder.update(call.call_uuid, {"socket_url": None})
    assert cleared is not None and cleared.socket_url is None


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "completed"},
        {"node_id": "node-x"},
        {"no_such_field": 1},
        {"duration": -1},
        {"socket_url": "ftp://bot.test"},
        {},
    ],
)
async def test_update_refuses_protected_unknown_or_invalid_fields(
    recorder: CallRecorder, fields: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        await recorder.update(uuid.uuid4(), fields)


async def test_update_of_a_missing_record_is_none(recorder: CallRecorder) -> None:
    assert await recorder.update(uuid.uuid4(), {"stats": {"a": 1}}) is None


def test_the_events_queue_must_be_configured() -> None:
    with pytest.raises(ValueError):
        CallRecorder(None, None, Settings.load({}), node_id=NODE)
