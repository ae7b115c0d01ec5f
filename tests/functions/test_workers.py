"""Events worker and callbacks worker, end to end through real SQS (moto) and a real HTTP receiver.

The pollers are the local stack's event-source mapping; each test gets its own queues so messages
of other tests cannot leak in. The receiver verifies X-Signature exactly as the API guide tells
customers to (re-serialise, HMAC-SHA256, compare).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.context import reset_default_context
from functions.workers import callbacks, events
from infra.sqs_poller import SqsPoller
from shared.events import CallAnswered, CallCompleted, CallRinging
from shared.models import Call, CallStatus, Direction
from shared.provisioning import new_account


class Receiver:
    """A customer's webhook endpoint on 127.0.0.1 that records and verifies what it gets."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payload = json.loads(body)
                data = json.dumps(
                    payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                )
                expected = hmac.new(
                    receiver.secret.encode(), data.encode("utf-8"), hashlib.sha256
                ).hexdigest()
                header = self.headers.get("X-Signature", "")
                receiver.requests.append(
                    {
                        "payload": payload,
                        "headers": dict(self.headers),
                        "valid": header.startswith("sha256=")
                        and hmac.compare_digest(header.split("=", 1)[1], expected),
                    }
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def queues(aws, session, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    sqs = session.client("sqs")
    tag = uuid.uuid4().hex[:8]
    urls = {
        name: sqs.create_queue(QueueName=f"{name}-{tag}", Attributes={"VisibilityTimeout": "30"})[
            "QueueUrl"
        ]
        for name in ("events", "callbacks")
    }
    monkeypatch.setenv("AGERA_EVENTS_QUEUE_URL", urls["events"])
    monkeypatch.setenv("AGERA_CALLBACKS_QUEUE_URL", urls["callbacks"])
    reset_default_context()
    return urls


@pytest.fixture
def world(repo, queues, session) -> Iterator[dict[str, Any]]:
    account = new_account("Hooks")
    receiver = Receiver(account.webhook_secret)
    account.webhook_url = receiver.url
    repo.put(account)
    call = Call(
        account_id=account.account_id,
        direction=Direction.INBOUND,
        from_number="+15005550006",
        to_number="+15005550001",
    )
    repo.put(call)
    sqs = session.client("sqs")
    yield {
        "account": account,
        "call": call,
        "receiver": receiver,
        "sqs": sqs,
        "events": SqsPoller(
            sqs, queues["events"], events.handler, "EventsFunction", wait_seconds=0
        ),
        "callbacks": SqsPoller(
            sqs, queues["callbacks"], callbacks.handler, "CallbacksFunction", wait_seconds=0
        ),
    }
    receiver.close()


def send(world: dict[str, Any], queue: str, event: Any) -> None:
    world["sqs"].send_message(QueueUrl=queue, MessageBody=event.model_dump_json())


def event(world: dict[str, Any], cls: type, **fields: Any) -> Any:
    call = world["call"]
    return cls(call_uuid=call.call_uuid, account_id=call.account_id, node_id="node-t", **fields)


def drain(poller: SqsPoller) -> int:
    total = 0
    for _ in range(10):  # bounded
        handled = poller.poll_once()
        total += handled
        if not handled:
            break
    return total


def test_answered_event_updates_record_and_delivers_signed_callback(world, queues, repo) -> None:
    answered = event(world, CallAnswered)
    send(world, queues["events"], answered)
    assert drain(world["events"]) == 1
    stored = repo.get(Call, world["call"].call_uuid, consistent=True)
    assert stored.status is CallStatus.IN_PROGRESS and stored.answered_at is not None
    assert drain(world["callbacks"]) == 1
    [got] = world["receiver"].requests
    assert got["valid"]
    assert got["payload"] == {
        "event_type": "call.answered",
        "call_uuid": str(world["call"].call_uuid),
        "timestamp": answered.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "call_status": "in-progress",
    }
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert headers["x-call-uuid"] == str(world["call"].call_uuid)
    assert headers["user-agent"] == "VoiceAPI/1.0"
    assert headers["content-type"] == "application/json"
    stored = repo.get(Call, world["call"].call_uuid, consistent=True)
    assert [(a["status"], a["reason"]) for a in stored.callback_attempts] == [("2xx", "delivered")]


def test_out_of_order_and_duplicate_events_are_harmless(world, queues, repo) -> None:
    completed = event(world, CallCompleted, duration=45)
    late_ringing = event(world, CallRinging)
    send(world, queues["events"], completed)
    drain(world["events"])
    send(world, queues["events"], late_ringing)
    send(world, queues["events"], completed)  # SQS redelivery of the same event
    drain(world["events"])
    stored = repo.get(Call, world["call"].call_uuid, consistent=True)
    assert stored.status is CallStatus.COMPLETED
    assert (stored.duration, stored.hangup_cause) == (45, "NORMAL_CLEARING")
    drain(world["callbacks"])
    kinds = [r["payload"]["event_type"] for r in world["receiver"].requests]
    # No ringing after completion; the redelivered completion is re-sent under the same id.
    assert kinds == ["call.completed", "call.completed"]
    ids = {r["headers"]["X-Callback-ID"] for r in world["receiver"].requests}
    assert len(ids) == 1
    assert world["receiver"].requests[0]["payload"]["duration"] == 45


def test_failed_delivery_stays_queued_with_backoff_and_is_recorded(world, queues, repo) -> None:
    world["receiver"].status = 500
    send(world, queues["events"], event(world, CallAnswered))
    drain(world["events"])
    assert world["callbacks"].poll_once() == 1
    assert world["callbacks"].failures == 1
    attrs = world["sqs"].get_queue_attributes(QueueUrl=queues["callbacks"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"  # not deleted: SQS retries it
    stored = repo.get(Call, world["call"].call_uuid, consistent=True)
    assert [(a["status"], a["attempt"]) for a in stored.callback_attempts] == [("5xx", 1)]


def test_event_for_unknown_call_is_retried(world, queues) -> None:
    stray = CallAnswered(call_uuid=uuid.uuid4(), account_id="acc_x", node_id="n")
    send(world, queues["events"], stray)
    assert world["events"].poll_once() == 1
    assert world["events"].failures == 1


def test_backoff_grows_and_is_capped() -> None:
    assert [callbacks.backoff_seconds(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert [callbacks.backoff_seconds(n, base=3) for n in (1, 2)] == [3, 6]
    assert callbacks.backoff_seconds(30) == callbacks.BACKOFF_MAX_SECONDS


def test_failing_receiver_gets_every_attempt_then_the_dlq(
    world, queues, repo, session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 deliveries, each recorded on the call, then SQS's redrive moves the message aside."""
    sqs = world["sqs"]
    tag = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"callbacks-dlq-{tag}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # The template's redrive shape (maxReceiveCount 5 = callback_max_attempts), with no back-off
    # so the test does not wait 10 + 20 + 40 + 80 s.
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    # Visibility 0: the last failed receive is visible again at once (the template waits 360 s).
    sqs.set_queue_attributes(
        QueueUrl=queues["callbacks"],
        Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "0"},
    )
    monkeypatch.setenv("AGERA_CALLBACK_BACKOFF_SECONDS", "0")
    reset_default_context()
    world["receiver"].status = 503
    send(world, queues["events"], event(world, CallAnswered))
    drain(world["events"])
    for _ in range(8):  # bounded: five deliveries, then the sixth receive finds the DLQ move
        world["callbacks"].poll_once()
    assert len(world["receiver"].requests) == 5
    assert all(r["valid"] for r in world["receiver"].requests)
    ids = {r["headers"]["X-Callback-ID"] for r in world["receiver"].requests}
    assert len(ids) == 1  # the same callback each time, so a receiver can de-duplicate
    stored = repo.get(Call, world["call"].call_uuid, consistent=True)
    assert [(a["status"], a["attempt"]) for a in stored.callback_attempts] == [
        ("5xx", n) for n in range(1, 6)
    ]
    parked = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)["Messages"]
    assert json.loads(parked[0]["Body"])["id"] in ids
