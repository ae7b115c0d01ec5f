"""The reaper against moto: dead nodes' calls end once, live ones are left, slots and queues tidied.

Calls are written the way a node writes them (``mapping.to_item`` puts a node-owned, unended call
in the live index; ``node_run`` is the node's run id), and nodes are EdgeNode items with a chosen
heartbeat. Each test starts with an empty live index and no accounts listed (the table is shared
by the module), and gets its own events queue and node queue prefix, so the reaper's report
counts exactly this test's work.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from functions.context import Context
from functions.workers import events, reaper, reaper_queues
from infra.scheduler import scheduled_event
from infra.sqs_poller import LocalLambdaContext, SqsPoller
from shared import call_slots
from shared.clock import iso_z, utc_now
from shared.dynamo import mapping
from shared.events import CallCompleted, parse_event
from shared.models import (
    Account,
    AccountLimits,
    Call,
    CallStatus,
    Direction,
    EdgeNode,
)
from shared.provisioning import new_account
from shared.settings import Settings

GRACE = 90.0


@pytest.fixture
def dynamodb(session: Any) -> Any:
    return session.client("dynamodb")


@pytest.fixture
def sqs(session: Any) -> Any:
    return session.client("sqs")


def _empty_index_and_accounts(dynamodb: Any, table: str) -> None:
    """Other tests' calls out of the live index and their accounts out of the listing."""
    for item in dynamodb.scan(TableName=table, IndexName=mapping.LIVE_INDEX).get("Items", []):
        dynamodb.update_item(
            TableName=table,
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="REMOVE live_node",
        )
    accounts = dynamodb.query(
        TableName=table,
        IndexName=mapping.GSI_NAME,
        KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": "ACCOUNTS"}},
    )
    for item in accounts.get("Items", []):
        dynamodb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})


@pytest.fixture
def ctx(aws: Any, dynamodb: Any, sqs: Any) -> Context:
    tag = uuid.uuid4().hex[:8]
    events_queue = sqs.create_queue(
        QueueName=f"reaper-events-{tag}", Attributes={"VisibilityTimeout": "0"}
    )["QueueUrl"]
    settings = Settings.load(
        events_queue_url=events_queue,
        node_queue_prefix=f"reap-{tag}-",
        reaper_grace_seconds=GRACE,
    )
    _empty_index_and_accounts(dynamodb, settings.table_name)
    return Context(settings)


@pytest.fixture
def account(ctx: Context) -> Account:
    account = new_account("Reaped")
    ctx.repo.put(account)
    return account


def ago(seconds: float, now: datetime | None = None) -> datetime:
    return (now or utc_now()) - timedelta(seconds=seconds)


def put_node(ctx: Context, node_id: str, heartbeat: datetime, run_id: str | None = None) -> None:
    ctx.repo.put(
        EdgeNode(
            node_id=node_id,
            queue_url=f"http://127.0.0.1/{node_id}",
            sip_address="127.0.0.1:5060",
            heartbeat_at=heartbeat,
            expires_at=heartbeat + timedelta(seconds=60),
            run_id=run_id,
        )
    )


def put_call(
    ctx: Context,
    account: Account,
    node_id: str | None,
    status: CallStatus,
    *,
    age: float = 600.0,
    answered: float | None = None,
    run: str | None = None,
    slot: bool = True,
) -> Call:
    """A call as its node wrote it, ``age`` seconds old, answered ``answered`` seconds ago."""
    now = utc_now()
    call = Call(
        account_id=account.account_id,
        direction=Direction.INBOUND,
        from_number="+15005550006",
        to_number="+15005550001",
        status=status,
        node_id=node_id,
        created_at=ago(age, now),
        answered_at=ago(answered, now) if answered is not None else None,
    )
    request = mapping.put_request(ctx.settings.table_name, call)
    if run is not None:
        request["Item"][mapping.NODE_RUN_ATTRIBUTE] = {"S": run}
    ctx.dynamodb.put_item(**request)
    if slot:
        refused = call_slots.acquire(
            ctx.dynamodb,
            ctx.settings.table_name,
            account.account_id,
            call.call_uuid,
            AccountLimits(),
            now=ago(age, now).timestamp(),
        )
        assert refused is None
    return call


def record(ctx: Context, call: Call) -> dict[str, Any]:
    request = mapping.get_request(
        ctx.settings.table_name, mapping.key(Call, call.call_uuid), consistent=True
    )
    item: dict[str, Any] = ctx.dynamodb.get_item(**request)["Item"]
    return item


def stored(ctx: Context, call: Call) -> Call:
    return mapping.from_item(Call, record(ctx, call))


def queued_events(ctx: Context) -> list[dict[str, Any]]:
    """Every event on the test's events queue, deleted as read."""
    found = []
    while True:
        reply = ctx.sqs.receive_message(
            QueueUrl=ctx.settings.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages = reply.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            ctx.sqs.delete_message(
                QueueUrl=ctx.settings.events_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )


def slot_state(ctx: Context, account: Account, call: Call) -> tuple[int, bool]:
    """(the account's active count, whether the call's SLOT# item exists)."""
    table = ctx.settings.table_name
    counter = ctx.dynamodb.get_item(
        TableName=table, Key=call_slots.counter_key(account.account_id), ConsistentRead=True
    ).get("Item", {})
    held = ctx.dynamodb.get_item(
        TableName=table,
        Key=call_slots.slot_key(account.account_id, call.call_uuid),
        ConsistentRead=True,
    )
    return int(counter.get("active", {}).get("N", "0")), "Item" in held


def in_live_index(ctx: Context, call: Call) -> bool:
    items = ctx.dynamodb.scan(TableName=ctx.settings.table_name, IndexName=mapping.LIVE_INDEX)
    return any(item["pk"]["S"] == f"CALL#{call.call_uuid}" for item in items.get("Items", []))


# --------------------------------------------------------------------------- calls


def test_answered_call_of_an_unregistered_node_is_completed_event_queued_slot_released(
    ctx: Context, account: Account
) -> None:
    node = f"gone-{uuid.uuid4().hex[:8]}"
    call = put_call(ctx, account, node, CallStatus.IN_PROGRESS, age=600, answered=300)
    assert in_live_index(ctx, call) and slot_state(ctx, account, call) == (1, True)
    now = utc_now()

    report = reaper.run(ctx, now=now)

    assert (report.calls_ended, report.slots_released, report.errors) == (1, 1, 0)
    ended = stored(ctx, call)
    assert ended.status is CallStatus.COMPLETED
    assert ended.hangup_cause == "NETWORK_OUT_OF_ORDER"
    assert ended.ended_by == "reaper"
    assert ended.end_detail == f"edge node {node} stopped heartbeating and is no longer registered"
    assert ended.ended_at is not None and abs((ended.ended_at - now).total_seconds()) < 0.01
    assert ended.duration == 300  # from answered_at to the end (now: no heartbeat is known)
    (event,) = queued_events(ctx)
    parsed = parse_event(json.dumps(event))
    assert isinstance(parsed, CallCompleted)
    assert (parsed.call_uuid, parsed.status, parsed.hangup_cause, parsed.duration) == (
        call.call_uuid,
        CallStatus.COMPLETED,
        "NETWORK_OUT_OF_ORDER",
        300,
    )
    assert parsed.ended_by == "reaper" and parsed.end_detail == ended.end_detail
    item = record(ctx, call)
    assert parsed.id in item["applied_events"]["SS"]  # the events worker finds it applied
    assert slot_state(ctx, account, call) == (0, False)
    assert not in_live_index(ctx, call)
    assert reaper.PENDING_EVENT not in item


def test_ringing_call_of_a_silent_node_fails_at_its_last_heartbeat(
    ctx: Context, account: Account
) -> None:
    node = f"silent-{uuid.uuid4().hex[:8]}"
    heartbeat = ago(GRACE + 30)
    put_node(ctx, node, heartbeat, run_id="run-a")
    call = put_call(ctx, account, node, CallStatus.RINGING, age=300, run="run-a")

    reaper.run(ctx)

    ended = stored(ctx, call)
    assert (ended.status, ended.duration, ended.ended_by) == (CallStatus.FAILED, 0, "reaper")
    assert ended.ended_at == heartbeat.replace(microsecond=heartbeat.microsecond // 1000 * 1000)
    assert ended.end_detail == (
        f"edge node {node} stopped heartbeating (last at {iso_z(heartbeat)})"
    )
    assert [e["status"] for e in queued_events(ctx)] == ["failed"]


def test_calls_of_a_live_node_young_calls_and_ended_calls_are_left_alone(
    ctx: Context, account: Account
) -> None:
    live = f"live-{uuid.uuid4().hex[:8]}"
    put_node(ctx, live, ago(5), run_id="run-b")
    on_live = put_call(ctx, account, live, CallStatus.IN_PROGRESS, answered=100, run="run-b")
    unknown_run = put_call(ctx, account, live, CallStatus.IN_PROGRESS, answered=100)
    # A node writes its first calls a moment before its EdgeNode item exists.
    young = put_call(ctx, account, f"new-{uuid.uuid4().hex[:8]}", CallStatus.RINGING, age=5)
    done = put_call(ctx, account, f"gone-{uuid.uuid4().hex[:8]}", CallStatus.COMPLETED, slot=False)
    before = {c.call_uuid: record(ctx, c) for c in (on_live, unknown_run, young, done)}

    report = reaper.run(ctx)

    assert (report.calls_ended, report.slots_released, report.counters_repaired) == (0, 0, 0)
    assert {c.call_uuid: record(ctx, c) for c in (on_live, unknown_run, young, done)} == before
    assert not in_live_index(ctx, done)  # an ended call is never in the index
    assert queued_events(ctx) == []


def test_an_originate_claimed_by_a_dead_node_that_never_rang_fails(
    ctx: Context, account: Account
) -> None:
    call = put_call(ctx, account, None, CallStatus.QUEUED, age=400)  # the API's originate
    assert not in_live_index(ctx, call)
    node = f"claimer-{uuid.uuid4().hex[:8]}"
    put_node(ctx, node, ago(600), run_id="run-c")
    # The claim, as CallRecorder.claim writes it.
    ctx.dynamodb.update_item(
        **mapping.update_request(
            ctx.settings.table_name,
            mapping.key(Call, call.call_uuid),
            {
                "node_id": node,
                mapping.LIVE_NODE_ATTRIBUTE: node,
                mapping.NODE_RUN_ATTRIBUTE: "run-c",
            },
        )
    )
    assert in_live_index(ctx, call)

    report = reaper.run(ctx)

    ended = stored(ctx, call)
    assert (ended.status, ended.hangup_cause, ended.ended_by) == (
        CallStatus.FAILED,
        "NETWORK_OUT_OF_ORDER",
        "reaper",
    )
    assert report.calls_ended == 1 and report.slots_released == 1
    assert [e["call_uuid"] for e in queued_events(ctx)] == [str(call.call_uuid)]


def test_a_restarted_node_keeps_its_new_run_and_loses_the_old_one(
    ctx: Context, account: Account
) -> None:
    node = f"restarted-{uuid.uuid4().hex[:8]}"
    put_node(ctx, node, ago(3), run_id="run-new")
    old = put_call(ctx, account, node, CallStatus.IN_PROGRESS, answered=500, run="run-old")
    new = put_call(ctx, account, node, CallStatus.IN_PROGRESS, answered=200, run="run-new")

    reaper.run(ctx)

    assert stored(ctx, old).status is CallStatus.COMPLETED
    assert stored(ctx, old).end_detail == (
        f"edge node {node} restarted; the run that carried this call is gone"
    )
    assert stored(ctx, new).status is CallStatus.IN_PROGRESS
    assert [e["call_uuid"] for e in queued_events(ctx)] == [str(old.call_uuid)]


def test_a_second_run_does_nothing(ctx: Context, account: Account) -> None:
    node = f"gone-{uuid.uuid4().hex[:8]}"
    calls = [put_call(ctx, account, node, CallStatus.IN_PROGRESS, answered=60) for _ in range(3)]

    first = reaper.run(ctx)
    after_first = {c.call_uuid: record(ctx, c) for c in calls}
    second = reaper.run(ctx)

    assert first.calls_ended == 3
    assert second == reaper.ReapReport()
    assert {c.call_uuid: record(ctx, c) for c in calls} == after_first
    assert len(queued_events(ctx)) == 3


def test_a_run_that_read_the_call_before_another_ended_it_does_not_end_it_again(
    ctx: Context, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reapers at once (two invocations overlap): the second read the call while the first
    was ending it. Its conditional write must fail, and it must then see the call ended.

    The interleaving is made exact instead of raced with threads: moto's conditional updates
    are not atomic across threads (DynamoDB's are), so a thread race tests moto, not us."""
    node = f"gone-{uuid.uuid4().hex[:8]}"
    call = put_call(ctx, account, node, CallStatus.IN_PROGRESS, answered=60)
    stale = reaper._read(ctx, str(call.call_uuid))
    assert stale is not None
    first = reaper.run(Context(ctx.settings))
    assert first.calls_ended == 1
    reads = [stale]
    fresh = reaper._read
    monkeypatch.setattr(reaper, "_read", lambda c, uuid_: reads.pop() if reads else fresh(c, uuid_))
    second = reaper.ReapReport()
    entry = reaper.LiveEntry(str(call.call_uuid), node, None, call.created_at)
    reaper.end_call(Context(ctx.settings), entry, None, "stopped heartbeating", utc_now(), second)
    assert second.calls_ended == 0 and not reads  # the stale read was used, and refused
    ids = [e["call_uuid"] for e in queued_events(ctx)]
    assert ids == [str(call.call_uuid)]  # one call.completed, from the first run
    assert stored(ctx, call).status is CallStatus.COMPLETED
    assert slot_state(ctx, account, call) == (0, False)


def test_an_event_the_queue_refused_is_sent_by_a_later_run(ctx: Context, account: Account) -> None:
    call = put_call(ctx, account, f"gone-{uuid.uuid4().hex[:8]}", CallStatus.RINGING)
    broken = Context(
        ctx.settings.model_copy(update={"events_queue_url": ctx.settings.events_queue_url + "-x"})
    )
    now = utc_now()

    report = reaper.run(broken, now=now)

    assert (report.calls_ended, report.errors) == (1, 1)
    item = record(ctx, call)
    # The call stays in the live index with its event until the queue takes the event. (Its
    # slot went back anyway: the slot step releases the slot of any ended call.)
    assert reaper.PENDING_EVENT in item and in_live_index(ctx, call)
    assert slot_state(ctx, account, call) == (0, False)
    # Too soon: a run still in flight may be about to send it.
    assert reaper.run(ctx, now=now + timedelta(seconds=30)).events_resent == 0
    later = reaper.run(ctx, now=now + timedelta(seconds=reaper.RESEND_AFTER_SECONDS + 1))
    assert (later.events_resent, later.calls_ended, later.errors) == (1, 0, 0)
    (event,) = queued_events(ctx)
    assert event["id"] == json.loads(item[reaper.PENDING_EVENT]["S"])["id"]
    assert not in_live_index(ctx, call) and reaper.PENDING_EVENT not in record(ctx, call)


def test_the_events_worker_folds_the_reaped_end_and_queues_the_callback(
    ctx: Context, account: Account, sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    callbacks_queue = sqs.create_queue(QueueName=f"reaper-callbacks-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]
    monkeypatch.setenv("AGERA_EVENTS_QUEUE_URL", ctx.settings.events_queue_url)
    monkeypatch.setenv("AGERA_CALLBACKS_QUEUE_URL", callbacks_queue)
    from functions.context import reset_default_context

    reset_default_context()
    call = put_call(
        ctx, account, f"gone-{uuid.uuid4().hex[:8]}", CallStatus.IN_PROGRESS, answered=42
    )
    reaper.run(ctx)

    poller = SqsPoller(sqs, ctx.settings.events_queue_url, events.handler, "EventsFunction")
    poller.wait_seconds = 0
    assert poller.poll_once() == 1 and poller.failures == 0
    reply = sqs.receive_message(QueueUrl=callbacks_queue, WaitTimeSeconds=0)
    (message,) = reply["Messages"]
    payload = json.loads(message["Body"])["payload"]
    assert payload["event_type"] == "call.completed"
    assert payload["call_uuid"] == str(call.call_uuid)
    assert (payload["call_status"], payload["hangup_cause"], payload["duration"]) == (
        "completed",
        "NETWORK_OUT_OF_ORDER",
        stored(ctx, call).duration,
    )


def test_the_handler_reports_what_it_did(ctx: Context, account: Account, monkeypatch) -> None:
    monkeypatch.setattr(reaper, "default_context", lambda: ctx)
    put_call(ctx, account, f"gone-{uuid.uuid4().hex[:8]}", CallStatus.RINGING)
    result = reaper.handler(scheduled_event("reaper"), LocalLambdaContext("ReaperFunction"))
    assert result["calls_ended"] == 1 and result["errors"] == 0


@pytest.mark.parametrize(
    ("node", "created", "run", "dead"),
    [
        (None, 600, None, True),
        (None, 30, None, False),  # young: the node may not have registered yet
        ((10, "r1"), 600, "r1", False),
        ((10, "r1"), 600, None, False),  # a call the events worker created: no run known
        ((10, "r2"), 600, "r1", True),  # restarted under the same id
        ((200, "r1"), 600, "r1", True),
    ],
)
def test_dead_reason(
    node: tuple[float, str] | None, created: float, run: str | None, dead: bool
) -> None:
    now = utc_now()
    edge = None
    if node is not None:
        edge = EdgeNode(
            node_id="n",
            queue_url="q",
            sip_address="a",
            heartbeat_at=ago(node[0], now),
            expires_at=now,
            run_id=node[1],
        )
    entry = reaper.LiveEntry("u", "n", run, ago(created, now))
    assert (reaper.dead_reason(entry, edge, now, timedelta(seconds=GRACE)) is not None) is dead


# --------------------------------------------------------------------------- slots


def test_leaked_slots_are_released_and_the_counter_repaired(ctx: Context, account: Account) -> None:
    table = ctx.settings.table_name
    live = f"live-{uuid.uuid4().hex[:8]}"
    put_node(ctx, live, ago(1))
    running = put_call(ctx, account, live, CallStatus.IN_PROGRESS, answered=30)
    ended = put_call(ctx, account, live, CallStatus.COMPLETED)  # its release failed
    phantom = Call(
        account_id=account.account_id,
        direction=Direction.INBOUND,
        from_number="a",
        to_number="b",
    )  # a slot whose call never got a record
    starting = phantom.model_copy(update={"call_uuid": uuid.uuid4()})
    for leaked, age in ((phantom, 600), (starting, 5)):
        call_slots.acquire(
            ctx.dynamodb,
            table,
            account.account_id,
            leaked.call_uuid,
            AccountLimits(),
            now=ago(age).timestamp(),
        )
    # Drift: DynamoDB's TTL dropped slot items the counter still counts.
    ctx.dynamodb.update_item(
        TableName=table,
        Key=call_slots.counter_key(account.account_id),
        UpdateExpression="ADD active :n",
        ExpressionAttributeValues={":n": {"N": "3"}},
    )
    assert slot_state(ctx, account, running)[0] == 7

    report = reaper.run(ctx)

    assert (report.slots_released, report.counters_repaired, report.calls_ended) == (2, 1, 0)
    assert slot_state(ctx, account, running) == (2, True)  # the live call and the starting one
    assert slot_state(ctx, account, starting)[1] is True
    assert slot_state(ctx, account, ended)[1] is False
    assert slot_state(ctx, account, phantom)[1] is False
    assert reaper.run(ctx).counters_repaired == 0


def test_a_counter_lower_than_its_slots_is_raised(ctx: Context, account: Account) -> None:
    live = f"live-{uuid.uuid4().hex[:8]}"
    put_node(ctx, live, ago(1))
    call = put_call(ctx, account, live, CallStatus.IN_PROGRESS, answered=30)
    ctx.dynamodb.update_item(
        TableName=ctx.settings.table_name,
        Key=call_slots.counter_key(account.account_id),
        UpdateExpression="SET active = :z",
        ExpressionAttributeValues={":z": {"N": "0"}},
    )
    assert reaper.run(ctx).counters_repaired == 1
    assert slot_state(ctx, account, call) == (1, True)


# --------------------------------------------------------------------------- queues


def test_queues_of_a_node_gone_for_a_day_are_deleted_with_their_dlq(ctx: Context) -> None:
    prefix = ctx.settings.node_queue_prefix
    urls = {
        name: ctx.sqs.create_queue(QueueName=f"{prefix}{name}")["QueueUrl"]
        for name in ("vanished", "vanished-dlq", "stale", "stale-dlq", "alive", "alive-dlq")
    }
    now = utc_now()
    put_node(ctx, "stale", ago(2 * 86400, now))
    # Still beating at the end of the simulated day and a bit below.
    put_node(ctx, "alive", now + timedelta(hours=26))
    assert sorted(reaper_queues.node_queues(ctx)) == ["alive", "stale", "vanished"]

    first = reaper.run(ctx, now=now)

    # The stale node's heartbeat says how long it is gone; the vanished one is tagged for later.
    assert (first.queues_deleted, first.queues_tagged) == (2, 2)
    assert sorted(reaper_queues.node_queues(ctx)) == ["alive", "vanished"]
    assert reaper.run(ctx, now=now + timedelta(hours=23)).queues_deleted == 0
    later = reaper.run(ctx, now=now + timedelta(hours=25))
    assert later.queues_deleted == 2
    left = reaper_queues.node_queues(ctx)
    assert list(left) == ["alive"]
    assert sorted(left["alive"]) == sorted([urls["alive"], urls["alive-dlq"]])


def test_a_node_that_comes_back_loses_its_gone_tag(ctx: Context) -> None:
    prefix = ctx.settings.node_queue_prefix
    url = ctx.sqs.create_queue(QueueName=f"{prefix}returning")["QueueUrl"]
    now = utc_now()
    assert reaper.run(ctx, now=now).queues_tagged == 1
    assert reaper_queues.GONE_TAG in ctx.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    put_node(ctx, "returning", now + timedelta(seconds=10))
    assert reaper.run(ctx, now=now + timedelta(seconds=20)).queues_tagged == 0
    assert reaper_queues.GONE_TAG not in ctx.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
