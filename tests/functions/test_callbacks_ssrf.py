"""The callbacks worker as an SSRF target: it checks the address it connects to, and the call
record keeps only a status class and a generic reason of each attempt.

Loopback only: the customer's server is a real HTTP server on 127.0.0.1, reached or refused
according to the policy (``ssrf_allow_list``) each test sets. Host names resolve through a fake
resolver on the context (``Context.resolve_host``); the real DNS is never asked. ``deliver`` is
called directly with one SQS record (no receipt handle, so no visibility change is attempted).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.context import Context
from functions.workers import callbacks
from shared.dynamo.repository import Repository
from shared.models import Call, Direction
from shared.provisioning import new_account
from shared.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
LOOPBACK = "127.0.0.0/8"
CLASSES = {"2xx", "3xx", "4xx", "5xx", "timeout", "connection failed", "refused by policy"}
LEAKY_BODY = b"<html>admin console: redis 6.2 on 10.0.3.7, password=hunter2</html>"


class Target:
    """The customer's webhook: answers ``status`` with a revealing body, after ``delay``."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                target.requests.append(
                    {"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}}
                )
                time.sleep(target.delay)
                self.send_response(target.status, "Internal Detail Phrase")
                self.send_header("Content-Length", str(len(LEAKY_BODY)))
                self.end_headers()
                self.wfile.write(LEAKY_BODY)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


def no_dns(host: str) -> list[str]:
    raise OSError(f"no DNS in tests: {host}")


def make_ctx(resolve: Any = no_dns, **overrides: Any) -> Context:
    ctx = Context(Settings.load(**overrides))
    ctx.resolve_host = resolve
    return ctx


def setup_call(repo: Repository, url: str) -> tuple[Any, Call]:
    account = new_account("Callbacks SSRF")
    account.webhook_url = url
    repo.put(account)
    call = Call(
        account_id=account.account_id,
        direction=Direction.INBOUND,
        from_number="+15005550006",
        to_number="+15005550001",
    )
    repo.put(call)
    return account, call


def record_for(call: Call, *, receive_count: int = 1) -> SQSRecord:
    message = {
        "id": f"cb_{uuid.uuid4().hex[:12]}",
        "account_id": call.account_id,
        "call_uuid": str(call.call_uuid),
        "payload": {"event_type": "call.answered", "call_uuid": str(call.call_uuid)},
    }
    return SQSRecord(
        {
            "messageId": uuid.uuid4().hex,
            "receiptHandle": "",
            "body": json.dumps(message),
            "attributes": {"ApproximateReceiveCount": str(receive_count)},
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:callbacks",
        }
    )


def attempts(repo: Repository, call: Call) -> list[dict[str, Any]]:
    stored = repo.get(Call, call.call_uuid, consistent=True)
    assert stored is not None
    return stored.callback_attempts


def shown_to_customer(repo: Repository, call: Call) -> str:
    """What the attempts say about the target (ids, times and durations left out)."""
    return json.dumps([(a["status"], a["reason"]) for a in attempts(repo, call)])


# -- refused by policy --------------------------------------------------------------------------


def test_a_private_target_is_refused_recorded_and_not_requested(aws, repo, target) -> None:
    ctx = make_ctx(ssrf_allow_list=())
    _, call = setup_call(repo, f"http://127.0.0.1:{target.port}/hook")
    callbacks.deliver(ctx, record_for(call))  # no DeliveryFailed: a refusal is not retried
    assert target.requests == []
    [attempt] = attempts(repo, call)
    assert attempt["status"] == "refused by policy"
    assert attempt["reason"] == "the webhook URL points to an address the gateway does not call"
    assert "127.0.0.1" not in shown_to_customer(repo, call)


def test_a_name_rebound_to_a_private_address_is_refused(aws, repo, target) -> None:
    """The API saw a public address for this name; at delivery it answers loopback."""
    ctx = make_ctx(lambda host: ["93.184.216.34", "127.0.0.1"], ssrf_allow_list=())
    _, call = setup_call(repo, f"http://hooks.customer.example:{target.port}/hook")
    callbacks.deliver(ctx, record_for(call))
    assert target.requests == []
    assert [a["status"] for a in attempts(repo, call)] == ["refused by policy"]


def test_a_name_inside_the_allow_list_is_delivered_at_the_checked_address(
    aws, repo, target
) -> None:
    asked: list[str] = []

    def resolve(host: str) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    ctx = make_ctx(resolve, ssrf_allow_list=LOOPBACK)
    _, call = setup_call(repo, f"http://hooks.customer.example:{target.port}/hook")
    callbacks.deliver(ctx, record_for(call))
    assert asked == ["hooks.customer.example"]  # one lookup, and the connect used it
    [request] = target.requests
    assert request["headers"]["host"] == f"hooks.customer.example:{target.port}"
    assert [(a["status"], a["reason"]) for a in attempts(repo, call)] == [("2xx", "delivered")]


# -- only the status class is kept -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "recorded", "reason"),
    [
        (404, "4xx", "the webhook answered with a client error"),
        (503, "5xx", "the webhook answered with a server error"),
        (302, "3xx", "the webhook answered with a redirect, which is not followed"),
    ],
)
def test_a_failed_attempt_records_the_class_not_the_answer(
    aws, repo, target, status, recorded, reason
) -> None:
    ctx = make_ctx(ssrf_allow_list=LOOPBACK)
    target.status = status
    _, call = setup_call(repo, f"http://127.0.0.1:{target.port}/hook")
    with pytest.raises(callbacks.DeliveryFailed) as failed:
        callbacks.deliver(ctx, record_for(call))
    assert len(target.requests) == 1
    [attempt] = attempts(repo, call)
    assert set(attempt) == {"callback_id", "event_type", "attempt", "at", "status", "reason", "ms"}
    assert (attempt["status"], attempt["reason"]) == (recorded, reason)
    shown = shown_to_customer(repo, call) + str(failed.value)
    for leak in (str(status), "Internal Detail", "hunter2", "redis", "10.0.3.7"):
        assert leak not in shown


def test_a_closed_port_is_connection_failed_without_the_os_text(aws, repo) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    ctx = make_ctx(ssrf_allow_list=LOOPBACK)
    _, call = setup_call(repo, f"http://127.0.0.1:{closed}/hook")
    with pytest.raises(callbacks.DeliveryFailed):
        callbacks.deliver(ctx, record_for(call))
    [attempt] = attempts(repo, call)
    assert (attempt["status"], attempt["reason"]) == (
        "connection failed",
        "could not connect to the webhook",
    )
    shown = shown_to_customer(repo, call).lower()
    assert "refused" not in shown and "errno" not in shown


def test_a_slow_target_is_a_timeout(aws, repo, target) -> None:
    ctx = make_ctx(ssrf_allow_list=LOOPBACK, callback_timeout_seconds=0.3)
    target.delay = 1.0
    _, call = setup_call(repo, f"http://127.0.0.1:{target.port}/hook")
    with pytest.raises(callbacks.DeliveryFailed):
        callbacks.deliver(ctx, record_for(call))
    [attempt] = attempts(repo, call)
    assert (attempt["status"], attempt["reason"]) == ("timeout", "no answer within 0.3 s")
    assert all(a["status"] in CLASSES for a in attempts(repo, call))


# -- replay protection on the wire ---------------------------------------------------------------


def readme_receiver() -> dict[str, Any]:
    section = README.read_text().split("### Webhooks", 1)[1].split("## Layout", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md (webhooks)", "exec"), namespace)
    return namespace


def test_a_delivered_callback_verifies_per_the_readme_and_its_replay_does_not(
    aws, repo, target
) -> None:
    ctx = make_ctx(ssrf_allow_list=LOOPBACK)
    account, call = setup_call(repo, f"http://127.0.0.1:{target.port}/hook")
    record = record_for(call)
    callbacks.deliver(ctx, record)
    [got] = target.requests
    receiver = readme_receiver()
    secret = account.webhook_secret
    assert receiver["verify_x_signature"](secret, got["body"], got["headers"])
    assert receiver["verify_webhook"](secret, got["body"], got["headers"])
    assert got["headers"]["webhook-id"] == got["headers"]["x-callback-id"]
    # The same request captured and sent again is refused; the body alone cannot tell.
    assert not receiver["verify_webhook"](secret, got["body"], got["headers"])
    assert receiver["verify_x_signature"](secret, got["body"], got["headers"])
