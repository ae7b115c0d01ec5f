"""Call control through both front doors: real HTTP to uvicorn, and Mangum fed the events/api samples.

Each test gets its own SQS queues (originate, events, callbacks, one per edge node), so what a test
reads back from moto is exactly what its requests put there. Host names in URLs
(``my-bot-server.com`` and the like) go through a fake resolver on the context; the real DNS is
never asked.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import httpx
import pytest
import uvicorn
from mangum import Mangum

from functions.api import calls
from functions.api import idempotency as idempotency_module
from functions.api.app import create_app
from functions.api.call_bodies import CreateCallRequest
from functions.api.call_views import CallView
from functions.api.errors import ApiError
from functions.api.originate import originate
from functions.context import Context, reset_default_context
from functions.workers import events as events_worker
from infra.sqs_poller import LocalLambdaContext, sqs_event
from shared.clock import utc_now
from shared.commands import Hangup, Originate, Redirect, Transfer, parse_command
from shared.dynamo import mapping
from shared.dynamo.repository import ConditionFailed
from shared.events import CallbackMessage, CallCompleted, parse_event
from shared.models import (
    AccountStatus,
    ApiKey,
    ApiKeyRole,
    Call,
    CallStatus,
    Direction,
    EdgeNode,
)
from shared.provisioning import IssuedKey, create_account_with_key, new_account
from shared.settings import Settings

EVENTS = Path(__file__).resolve().parents[2] / "events" / "api"
SEED_BODY = {
    "destination_number": "5511999999999",
    "caller_id_number": "5511888888888",
    "caller_id_name": "My Business",
    "socket_url": "wss://my-bot-server.com/media",
    "webhook_url": "https://my-api.com/route-call",
}
PUBLIC_DNS = {
    "my-bot-server.com": ["93.184.216.34"],
    "my-api.com": ["93.184.216.35", "2606:2800:220:1:248:1893:25c8:1946"],
    "intranet.example.net": ["10.20.30.40"],
}
RECEIVE_ROUNDS = 5


def fake_resolver(host: str) -> list[str]:
    if host not in PUBLIC_DNS:
        raise OSError(f"[Errno -2] Name or service not known: {host}")
    return PUBLIC_DNS[host]


# --------------------------------------------------------------------------- fixtures


@dataclass
class Tenant:
    account_id: str
    key: str
    issued: IssuedKey


@pytest.fixture
def sqs(aws) -> Any:
    return boto3.session.Session().client("sqs")


def new_queue(sqs: Any, name: str) -> str:
    tag = uuid.uuid4().hex[:10]
    return str(sqs.create_queue(QueueName=f"{name}-{tag}")["QueueUrl"])


def missing_queue(sqs: Any) -> str:
    url = new_queue(sqs, "gone")
    sqs.delete_queue(QueueUrl=url)
    return url


@pytest.fixture
def queues(sqs) -> dict[str, str]:
    return {name: new_queue(sqs, name) for name in ("originate", "events", "callbacks")}


def make_ctx(queues: dict[str, str], **overrides: Any) -> Context:
    settings = Settings.load(
        api_key_cache_seconds=0,
        originate_queue_url=queues["originate"],
        events_queue_url=queues["events"],
        callbacks_queue_url=queues["callbacks"],
        **overrides,
    )
    ctx = Context(settings)
    ctx.resolve_host = fake_resolver
    return ctx


@pytest.fixture
def ctx(aws, queues) -> Context:
    return make_ctx(queues)


def add_tenant(ctx: Context, role: ApiKeyRole = ApiKeyRole.ACCOUNT, **fields: Any) -> Tenant:
    account = new_account(f"Tenant {uuid.uuid4().hex[:6]}", **fields)
    issued = create_account_with_key(ctx.repo, account, "default", role)
    return Tenant(account.account_id, issued.key, issued)


@pytest.fixture
def tenant(ctx) -> Tenant:
    return add_tenant(ctx)


@pytest.fixture
def other(ctx) -> Tenant:
    return add_tenant(ctx)


@pytest.fixture
def admin(ctx) -> Tenant:
    return add_tenant(ctx, ApiKeyRole.ADMIN)


@pytest.fixture
def node(ctx, sqs) -> EdgeNode:
    edge = EdgeNode(
        node_id=f"node-{uuid.uuid4().hex[:8]}",
        queue_url=new_queue(sqs, "node"),
        sip_address="127.0.0.1:5060",
        expires_at=utc_now() + timedelta(seconds=60),
    )
    ctx.repo.put(edge)
    return edge


def store_call(
    ctx: Context,
    account_id: str,
    status: CallStatus = CallStatus.QUEUED,
    node_id: str | None = None,
    **fields: Any,
) -> Call:
    call = Call(
        account_id=account_id,
        direction=fields.pop("direction", Direction.OUTBOUND),
        from_number="+5511888888888",
        to_number="+5511999999999",
        status=status,
        node_id=node_id,
        **fields,
    )
    ctx.repo.put(call, create_only=True)
    return call


def receive_messages(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message on a test's own queue (bounded: two empty polls end it)."""
    messages: list[dict[str, Any]] = []
    empty = 0
    for _ in range(RECEIVE_ROUNDS * 4):
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            empty += 1
            if empty >= 2:
                break
            continue
        for message in got:
            messages.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def receive_all(sqs: Any, url: str) -> list[str]:
    return [message["Body"] for message in receive_messages(sqs, url)]


def stored_item(ctx: Context, call_uuid: Any) -> dict[str, Any]:
    request = mapping.get_request(
        ctx.settings.table_name, mapping.key(Call, call_uuid), consistent=True
    )
    return dict(ctx.dynamodb.get_item(**request)["Item"])


# --------------------------------------------------------------------------- front doors


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        assert set(self.body) == {"error"}, self.body
        return dict(self.body["error"])


class UvicornFront:
    """The app served by uvicorn on a free loopback port, spoken to over real HTTP."""

    name = "uvicorn"

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: Any = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-KEY"] = key
        content = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if content is not None:
            sent.setdefault("Content-Type", "application/json")
        response = self.client.request(
            method, path, content=content, headers=sent, params=query or None
        )
        return Reply(response.status_code, dict(response.headers), response.json())

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


SAMPLES = {
    ("POST", "/api/calls"): "calls_create.json",
    ("POST", "/api/calls/hangup"): "calls_hangup.json",
    ("POST", "/api/calls/transfer"): "calls_transfer.json",
    ("POST", "/api/calls/redirect"): "calls_redirect.json",
    ("GET", "/api/calls"): "calls_list.json",
}


class MangumFront:
    """The Lambda handler fed the events/api samples, edited for each request."""

    name = "mangum"

    def __init__(self, app: Any) -> None:
        self.handler = Mangum(app, lifespan="off")

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: Any = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply:
        event = json.loads((EVENTS / SAMPLES.get((method, path), "calls_get.json")).read_text())
        sent = {
            name: value
            for name, value in event["headers"].items()
            if name not in ("x-api-key", "idempotency-key", "content-length", "content-type")
        }
        sent.update({name.lower(): value for name, value in (headers or {}).items()})
        if key is not None:
            sent["x-api-key"] = key
        content = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if content is not None:
            event["body"] = content
            sent.setdefault("content-type", "application/json")
            sent["content-length"] = str(len(content.encode()))
        else:
            event.pop("body", None)
        event["headers"] = sent
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        event["pathParameters"] = {"proxy": path.removeprefix("/api/")}
        event["rawQueryString"] = urlencode(query or {})
        if query:
            event["queryStringParameters"] = dict(query)
        else:
            event.pop("queryStringParameters", None)
        response = self.handler(event, LocalLambdaContext("ApiFunction"))
        headers_out = {name.lower(): value for name, value in response["headers"].items()}
        return Reply(response["statusCode"], headers_out, json.loads(response["body"]))

    def close(self) -> None:
        pass


@pytest.fixture(params=["uvicorn", "mangum"])
def front(request, ctx) -> Iterator[UvicornFront | MangumFront]:
    holder = {"ctx": ctx}
    app = create_app(lambda: holder["ctx"])
    if request.param == "mangum":
        request.getfixturevalue("mangum_loop")
        door: UvicornFront | MangumFront = MangumFront(app)
    else:
        door = UvicornFront(app)
    door.holder = holder  # type: ignore[union-attr]  # lets a test swap the context
    yield door
    door.close()


def use_ctx(front: Any, ctx: Context) -> None:
    front.holder["ctx"] = ctx


# --------------------------------------------------------------------------- originate


def test_originate_writes_a_queued_call_and_queues_the_command(front, ctx, tenant, sqs) -> None:
    reply = front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY)
    assert reply.status == 201, reply.body
    body = reply.body
    call_uuid = uuid.UUID(body["call_uuid"])
    assert body["status"] == "queued"
    assert body["direction"] == "outbound"
    assert body["account_id"] == tenant.account_id
    assert (body["from_number"], body["to_number"]) == ("5511888888888", "5511999999999")
    assert body["caller_id_name"] == "My Business"
    assert body["socket_url"] == "wss://my-bot-server.com/media"
    assert body["webhook_url"] == "https://my-api.com/route-call"
    assert set(body) == set(CallView.model_fields)
    assert reply.headers["location"] == f"/api/calls/{call_uuid}"

    stored = ctx.repo.get(Call, call_uuid, consistent=True)
    assert stored is not None
    assert (stored.status, stored.direction, stored.node_id) == (
        CallStatus.QUEUED,
        Direction.OUTBOUND,
        None,
    )
    (message,) = receive_all(sqs, ctx.settings.originate_queue_url)
    command = parse_command(message)
    assert isinstance(command, Originate)
    assert command.call_uuid == call_uuid
    assert command.account_id == tenant.account_id
    assert command.destination_number == "5511999999999"
    assert command.caller_id_number == "5511888888888"
    assert command.caller_id_name == "My Business"
    assert command.socket_url == "wss://my-bot-server.com/media"
    assert command.webhook_url == "https://my-api.com/route-call"


@pytest.mark.parametrize(
    ("defaults", "command_socket", "command_webhook"),
    [
        ({"socket_url": "elevenlabs&agent_default"}, "elevenlabs&agent_default", None),
        ({"webhook_url": "https://my-api.com/route-call"}, None, "https://my-api.com/route-call"),
    ],
    ids=["default-socket", "default-webhook"],
)
def test_originate_without_a_route_uses_the_account_default(
    front, ctx, sqs, defaults, command_socket, command_webhook
) -> None:
    owner = add_tenant(ctx, **defaults)
    body = {"destination_number": "+5511999999999", "caller_id_number": "+5511888888888"}
    reply = front.request("POST", "/api/calls", key=owner.key, body=body)
    assert reply.status == 201, reply.body
    assert reply.body["socket_url"] == command_socket
    assert reply.body["webhook_url"] is None  # status callbacks go to the account's webhook
    (message,) = receive_all(sqs, ctx.settings.originate_queue_url)
    command = parse_command(message)
    assert (command.socket_url, command.webhook_url) == (command_socket, command_webhook)


@pytest.mark.parametrize(
    ("socket_url", "account_fields", "status", "message"),
    [
        ("elevenlabs&agent_42", {}, 201, None),
        ("elevenlabs", {"elevenlabs": {"agent_id": "agent_7"}}, 201, None),
        ("elevenlabs", {}, 422, "socket_url: 'elevenlabs' needs an agent"),
        ("vapi&asst-1", {"vapi": {"api_key": "vapi-key-123456"}}, 201, None),
        ("vapi", {"vapi": {"api_key": "vapi-key-123456"}}, 422, "vapi.assistant_id"),
        ("vapi&asst-1", {}, 422, "socket_url: 'vapi' needs vapi.api_key on the account"),
    ],
)
def test_native_driver_targets(front, ctx, socket_url, account_fields, status, message) -> None:
    owner = add_tenant(ctx, **account_fields)
    body = {"destination_number": "5511999999999", "caller_id_number": "5511888888888"}
    reply = front.request(
        "POST", "/api/calls", key=owner.key, body={**body, "socket_url": socket_url}
    )
    assert reply.status == status, reply.body
    if status == 201:
        assert reply.body["socket_url"] == socket_url
    else:
        assert reply.error["field"] == "socket_url"
        assert message in reply.error["message"]


BASE = {"destination_number": "5511999999999", "caller_id_number": "5511888888888"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"caller_id_number": "5511888888888", "socket_url": "elevenlabs&a"},
            "destination_number",
            "field required",
        ),
        (
            {**BASE, "destination_number": "call me", "socket_url": "elevenlabs&a"},
            "destination_number",
            "phone number",
        ),
        (
            {"destination_number": "5511999999999", "socket_url": "elevenlabs&a"},
            "caller_id_number",
            "field required",
        ),
        (
            {**BASE, "caller_id_name": "x" * 129, "socket_url": "elevenlabs&a"},
            "caller_id_name",
            "at most 128",
        ),
        ({**BASE, "socket_url": "https://bot.example/ws"}, "socket_url", "ws:// or wss://"),
        ({**BASE, "socket_url": "vapi&bad id!"}, "socket_url", "after 'vapi&'"),
        ({**BASE, "webhook_url": "ftp://my-api.com/x"}, "webhook_url", "http:// or https://"),
        ({**BASE, "socket_url": "elevenlabs&a", "trunk_id": "trk_1"}, "trunk_id", "unknown field"),
        (BASE, "socket_url", "give socket_url or webhook_url"),
    ],
    ids=[
        "no-destination",
        "bad-destination",
        "no-caller-id",
        "long-caller-name",
        "socket-not-ws",
        "bad-driver-id",
        "webhook-not-http",
        "unknown-field",
        "no-route",
    ],
)
def test_originate_validation_names_the_field(
    front, ctx, tenant, sqs, body, field, message
) -> None:
    reply = front.request("POST", "/api/calls", key=tenant.key, body=body)
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "validation_error"
    assert reply.error["field"] == field
    assert message in reply.error["message"]
    assert reply.error["message"].startswith(f"{field}: ")
    assert receive_all(sqs, ctx.settings.originate_queue_url) == []


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ("a=b", "application/x-www-form-urlencoded", 415),
    ],
    ids=["bad-json", "not-an-object", "form"],
)
def test_originate_refuses_bodies_that_are_not_a_json_object(
    front, tenant, raw, content_type, status
) -> None:
    reply = front.request(
        "POST", "/api/calls", key=tenant.key, raw=raw, headers={"Content-Type": content_type}
    )
    assert reply.status == status
    assert reply.error["code"] in {"invalid_json", "unsupported_media_type"}


@pytest.mark.parametrize(
    ("changes", "field", "shown"),
    [
        ({"socket_url": "ws://169.254.169.254/latest/meta-data"}, "socket_url", "cloud metadata"),
        ({"socket_url": "wss://10.0.0.5/bot"}, "socket_url", "10.0.0.5 is a private address"),
        ({"webhook_url": "http://[::ffff:192.168.1.1]/x"}, "webhook_url", "private"),
        ({"webhook_url": "https://intranet.example.net/x"}, "webhook_url", "(10.20.30.40)"),
        ({"webhook_url": "https://no-such-host.invalid/x"}, "webhook_url", "does not resolve"),
        ({"socket_url": "ws://0x7f000001.example.com/x"}, "socket_url", "does not resolve"),
    ],
    ids=["metadata", "private", "mapped-v6", "resolves-private", "unresolvable", "name"],
)
def test_originate_refuses_urls_the_gateway_must_not_call(
    front, ctx, tenant, sqs, changes, field, shown
) -> None:
    body = {**SEED_BODY, **changes}
    reply = front.request("POST", "/api/calls", key=tenant.key, body=body)
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "unsafe_url"
    assert reply.error["field"] == field
    assert shown in reply.error["message"]
    assert receive_all(sqs, ctx.settings.originate_queue_url) == []


def test_loopback_is_allowed_when_the_operator_allow_lists_it(front, ctx, tenant) -> None:
    # The test environment sets AGERA_SSRF_ALLOW_LIST=127.0.0.0/8, as the local stack does.
    assert ctx.settings.ssrf_allow_list == ("127.0.0.0/8",)
    body = {**BASE, "socket_url": "ws://127.0.0.1:9/bot", "webhook_url": "http://127.0.0.1:9/h"}
    assert front.request("POST", "/api/calls", key=tenant.key, body=body).status == 201
    strict = make_ctx(
        {
            "originate": ctx.settings.originate_queue_url,
            "events": ctx.settings.events_queue_url,
            "callbacks": ctx.settings.callbacks_queue_url,
        },
        ssrf_allow_list=(),
    )
    use_ctx(front, strict)
    reply = front.request("POST", "/api/calls", key=tenant.key, body=body)
    assert reply.status == 422
    assert reply.error["field"] == "socket_url"
    assert "loopback" in reply.error["message"]


def test_suspended_account_cannot_originate(front, ctx) -> None:
    owner = add_tenant(ctx, status=AccountStatus.SUSPENDED)
    reply = front.request("POST", "/api/calls", key=owner.key, body=SEED_BODY)
    assert reply.status == 403
    assert reply.error["code"] == "forbidden"


def test_originate_queue_failure_marks_the_call_failed_and_says_so(
    front, ctx, tenant, sqs, queues
) -> None:
    broken = make_ctx({**queues, "originate": missing_queue(sqs)})
    use_ctx(front, broken)
    reply = front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY)
    assert reply.status == 503, reply.body
    assert reply.error["code"] == "unavailable"
    assert "originate queue" in reply.error["message"]
    assert reply.headers["retry-after"] == "1"
    listing = front.request("GET", "/api/calls", key=tenant.key, query={"limit": "5"})
    (call,) = listing.body["items"]
    assert call["status"] == "failed"
    assert call["hangup_cause"] == "ORIGINATE_QUEUE_UNAVAILABLE"
    assert call["ended_at"] is not None
    assert call["call_uuid"] in reply.error["message"]


def test_failed_send_after_a_node_claimed_the_call_keeps_the_call(ctx, tenant) -> None:
    """The unclaimed condition: a node's claim beats the API's "mark failed" (and its cancel)."""
    claimed = store_call(ctx, tenant.account_id, node_id="node-x")
    free = store_call(ctx, tenant.account_id)
    for call, expect_applied in ((claimed, False), (free, True)):
        request = mapping.call_transition_request(
            ctx.settings.table_name,
            call.call_uuid,
            CallStatus.FAILED,
            {"hangup_cause": "X"},
            unclaimed=True,
            now=utc_now(),
        )
        if expect_applied:
            ctx.repo.execute_update(request)
        else:
            with pytest.raises(ConditionFailed):
                ctx.repo.execute_update(request)
    assert ctx.repo.get(Call, claimed.call_uuid, consistent=True).status is CallStatus.QUEUED
    assert ctx.repo.get(Call, free.call_uuid, consistent=True).status is CallStatus.FAILED


def test_originate_counts_and_logs_with_call_and_account(
    ctx, tenant, mangum_loop, monkeypatch, capfd, caplog
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    front = MangumFront(create_app(lambda: ctx))
    capfd.readouterr()
    reply = front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY)
    assert reply.status == 201
    lines = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")
    ]
    emf = [line for line in lines if "CallsOriginated" in line]
    assert len(emf) == 1
    (directive,) = emf[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "AgeraVoiceGateway"
    assert emf[0]["CallsOriginated"] in (1.0, [1.0])
    (queued,) = [r for r in caplog.records if r.getMessage() == "outbound call queued"]
    assert queued.call_uuid == reply.body["call_uuid"]  # type: ignore[attr-defined]
    assert queued.account_id == tenant.account_id  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- idempotency


def test_same_key_and_body_return_the_same_call_once(front, ctx, tenant, sqs) -> None:
    key = str(uuid.uuid4())
    first = front.request(
        "POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers={"Idempotency-Key": key}
    )
    again = front.request(
        "POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers={"Idempotency-Key": key}
    )
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert len(receive_all(sqs, ctx.settings.originate_queue_url)) == 1
    listing = front.request("GET", "/api/calls", key=tenant.key)
    assert [c["call_uuid"] for c in listing.body["items"]] == [first.body["call_uuid"]]


def test_same_key_with_another_body_is_422(front, ctx, tenant, sqs) -> None:
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    assert (
        front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers=headers).status
        == 201
    )
    changed = {**SEED_BODY, "destination_number": "5511977777777"}
    reply = front.request("POST", "/api/calls", key=tenant.key, body=changed, headers=headers)
    assert reply.status == 422
    assert reply.error["code"] == "idempotency_key_reused"
    assert reply.error["field"] == "Idempotency-Key"
    assert len(receive_all(sqs, ctx.settings.originate_queue_url)) == 1


def test_keys_are_scoped_per_account(front, ctx, tenant, other, sqs) -> None:
    headers = {"Idempotency-Key": "order-1234"}
    mine = front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers=headers)
    theirs = front.request("POST", "/api/calls", key=other.key, body=SEED_BODY, headers=headers)
    assert (mine.status, theirs.status) == (201, 201)
    assert mine.body["call_uuid"] != theirs.body["call_uuid"]
    assert theirs.body["account_id"] == other.account_id
    assert len(receive_all(sqs, ctx.settings.originate_queue_url)) == 2


def test_a_failed_request_releases_its_key(front, ctx, tenant, sqs, queues) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    use_ctx(front, make_ctx({**queues, "originate": missing_queue(sqs)}))
    assert (
        front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers=headers).status
        == 503
    )
    use_ctx(front, ctx)
    retry = front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers=headers)
    assert retry.status == 201
    assert "idempotent-replayed" not in retry.headers
    (message,) = receive_all(sqs, ctx.settings.originate_queue_url)
    assert str(parse_command(message).call_uuid) == retry.body["call_uuid"]


@pytest.mark.parametrize("key", ["", "k" * 256, "has space"], ids=["empty", "long", "space"])
def test_malformed_idempotency_key_is_422(front, tenant, key) -> None:
    reply = front.request(
        "POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers={"Idempotency-Key": key}
    )
    assert reply.status == 422
    assert reply.error["field"] == "Idempotency-Key"


# --------------------------------------------------------------------------- live commands


def test_hangup_of_a_queued_call_cancels_it_and_produces_call_completed(
    front, ctx, tenant, sqs, queues, monkeypatch
) -> None:
    created = front.request("POST", "/api/calls", key=tenant.key, body=SEED_BODY)
    call_uuid = created.body["call_uuid"]
    reply = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": call_uuid}
    )
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "canceled"
    assert reply.body["command"] == "hangup"
    stored = ctx.repo.get(Call, call_uuid, consistent=True)
    assert stored.status is CallStatus.CANCELED
    assert (stored.hangup_cause, stored.duration) == ("ORIGINATOR_CANCEL", 0)
    assert "undelivered_event" not in stored_item(ctx, call_uuid)

    (message,) = receive_messages(sqs, queues["events"])
    event = parse_event(message["Body"])
    assert isinstance(event, CallCompleted)
    assert event.id == reply.body["command_id"]
    assert (str(event.call_uuid), event.status, event.hangup_cause) == (
        call_uuid,
        CallStatus.CANCELED,
        "ORIGINATOR_CANCEL",
    )

    # The events worker turns it into the customer's call.completed callback.
    for name, value in {"AGERA_CALLBACKS_QUEUE_URL": queues["callbacks"]}.items():
        monkeypatch.setenv(name, value)
    reset_default_context()
    arn = "arn:aws:sqs:us-east-1:123456789012:agera-EventsQueue-test"
    result = events_worker.handler(sqs_event([message], arn), LocalLambdaContext("EventsFunction"))
    assert result == {"batchItemFailures": []}
    (raw_callback,) = receive_all(sqs, queues["callbacks"])
    callback = CallbackMessage.model_validate_json(raw_callback)
    assert callback.payload == {
        "event_type": "call.completed",
        "call_uuid": call_uuid,
        "timestamp": callback.payload["timestamp"],
        "call_status": "canceled",
        "duration": 0,
        "hangup_cause": "ORIGINATOR_CANCEL",
        "slo": None,  # never reached a node: no media figures
    }
    assert callback.webhook_url == "https://my-api.com/route-call"

    again = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": call_uuid}
    )
    assert again.status == 409
    assert again.error["field"] == "call_uuid"
    assert "canceled" in again.error["message"]


def test_cancel_event_is_kept_until_the_events_queue_takes_it(
    front, ctx, tenant, sqs, queues
) -> None:
    call = store_call(ctx, tenant.account_id)
    use_ctx(front, make_ctx({**queues, "events": missing_queue(sqs)}))
    body = {"call_uuid": str(call.call_uuid)}
    failed = front.request("POST", "/api/calls/hangup", key=tenant.key, body=body)
    assert failed.status == 503
    assert "events queue" in failed.error["message"]
    item = stored_item(ctx, call.call_uuid)
    assert item["status"] == {"S": "canceled"}
    kept = parse_event(item["undelivered_event"]["S"])

    use_ctx(front, ctx)
    retried = front.request("POST", "/api/calls/hangup", key=tenant.key, body=body)
    assert retried.status == 202
    assert retried.body["command_id"] == kept.id
    (raw_event,) = receive_all(sqs, queues["events"])
    assert parse_event(raw_event).id == kept.id
    assert "undelivered_event" not in stored_item(ctx, call.call_uuid)
    assert front.request("POST", "/api/calls/hangup", key=tenant.key, body=body).status == 409


@pytest.mark.parametrize(
    ("path", "extra", "kind", "check"),
    [
        ("/api/calls/hangup", {}, Hangup, lambda c: c.cause == "NORMAL_CLEARING"),
        (
            "/api/calls/transfer",
            {"destination_number": "+5511977777777"},
            Transfer,
            lambda c: c.destination == "+5511977777777",
        ),
        (
            "/api/calls/transfer",
            {"destination_number": "101"},
            Transfer,
            lambda c: c.destination == "101",
        ),
        (
            "/api/calls/transfer",
            {"destination_number": "sip:alice@my-api.com"},
            Transfer,
            lambda c: c.destination == "sip:alice@my-api.com",
        ),
        (
            "/api/calls/redirect",
            {"media_server": "elevenlabs"},
            Redirect,
            lambda c: c.media_server == "elevenlabs",
        ),
        (
            "/api/calls/redirect",
            {"media_server": "vapi&asst-9"},
            Redirect,
            lambda c: c.media_server == "vapi&asst-9",
        ),
        (
            "/api/calls/redirect",
            {"media_server": "wss://my-bot-server.com/v2"},
            Redirect,
            lambda c: c.media_server == "wss://my-bot-server.com/v2",
        ),
    ],
    ids=[
        "hangup",
        "transfer-number",
        "transfer-extension",
        "transfer-sip",
        "redirect-elevenlabs",
        "redirect-vapi",
        "redirect-ws",
    ],
)
def test_live_command_lands_on_the_owning_nodes_queue(
    front, ctx, tenant, node, sqs, queues, path, extra, kind, check
) -> None:
    call = store_call(ctx, tenant.account_id, CallStatus.IN_PROGRESS, node.node_id)
    reply = front.request(
        "POST", path, key=tenant.key, body={"call_uuid": str(call.call_uuid), **extra}
    )
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "in-progress"
    (message,) = receive_all(sqs, node.queue_url)
    command = parse_command(message)
    assert isinstance(command, kind)
    assert (command.call_uuid, command.account_id) == (call.call_uuid, tenant.account_id)
    assert command.id == reply.body["command_id"]
    assert check(command)
    assert receive_all(sqs, queues["originate"]) == []
    assert ctx.repo.get(Call, call.call_uuid, consistent=True).status is CallStatus.IN_PROGRESS


def test_hangup_of_a_claimed_queued_call_goes_to_its_node(front, ctx, tenant, node, sqs) -> None:
    call = store_call(ctx, tenant.account_id, CallStatus.QUEUED, node.node_id)
    reply = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": str(call.call_uuid)}
    )
    assert reply.status == 202
    assert reply.body["status"] == "queued"
    (message,) = receive_all(sqs, node.queue_url)
    assert isinstance(parse_command(message), Hangup)
    assert ctx.repo.get(Call, call.call_uuid, consistent=True).status is CallStatus.QUEUED


@pytest.mark.parametrize(
    ("status", "with_node", "path", "extra", "message"),
    [
        (CallStatus.COMPLETED, True, "/api/calls/hangup", {}, "has already ended (completed)"),
        (
            CallStatus.FAILED,
            True,
            "/api/calls/transfer",
            {"destination_number": "101"},
            "already ended",
        ),
        (
            CallStatus.CANCELED,
            False,
            "/api/calls/redirect",
            {"media_server": "vapi"},
            "already ended",
        ),
        (
            CallStatus.QUEUED,
            False,
            "/api/calls/transfer",
            {"destination_number": "101"},
            "still queued",
        ),
        (CallStatus.QUEUED, False, "/api/calls/redirect", {"media_server": "vapi"}, "still queued"),
        (
            CallStatus.RINGING,
            True,
            "/api/calls/transfer",
            {"destination_number": "101"},
            "only an answered call",
        ),
    ],
    ids=[
        "hangup-ended",
        "transfer-ended",
        "redirect-ended",
        "transfer-queued",
        "redirect-queued",
        "transfer-ringing",
    ],
)
def test_commands_a_call_cannot_take_are_409(
    front, ctx, tenant, node, sqs, status, with_node, path, extra, message
) -> None:
    call = store_call(ctx, tenant.account_id, status, node.node_id if with_node else None)
    reply = front.request(
        "POST", path, key=tenant.key, body={"call_uuid": str(call.call_uuid), **extra}
    )
    assert reply.status == 409, reply.body
    assert reply.error["code"] == "conflict"
    assert message in reply.error["message"]
    assert receive_all(sqs, node.queue_url) == []


def test_redirect_of_a_ringing_call_is_accepted(front, ctx, tenant, node, sqs) -> None:
    call = store_call(ctx, tenant.account_id, CallStatus.RINGING, node.node_id)
    body = {"call_uuid": str(call.call_uuid), "media_server": "elevenlabs&agent_2"}
    assert front.request("POST", "/api/calls/redirect", key=tenant.key, body=body).status == 202
    assert len(receive_all(sqs, node.queue_url)) == 1


def test_unreachable_node_is_503_naming_it(front, ctx, tenant, sqs) -> None:
    ghost = store_call(ctx, tenant.account_id, CallStatus.IN_PROGRESS, "node-ghost")
    reply = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": str(ghost.call_uuid)}
    )
    assert reply.status == 503
    assert "node-ghost" in reply.error["message"]
    dead = EdgeNode(
        node_id=f"node-{uuid.uuid4().hex[:6]}",
        queue_url=missing_queue(sqs),
        sip_address="127.0.0.1:5060",
        expires_at=utc_now() + timedelta(seconds=60),
    )
    ctx.repo.put(dead)
    call = store_call(ctx, tenant.account_id, CallStatus.IN_PROGRESS, dead.node_id)
    reply = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": str(call.call_uuid)}
    )
    assert reply.status == 503
    assert f"command queue of edge node {dead.node_id}" in reply.error["message"]


def test_a_node_past_its_heartbeat_gets_no_commands(front, ctx, tenant, sqs) -> None:
    """A crashed node's item stays until the TTL sweep; its queue has nobody reading it."""
    silent = EdgeNode(
        node_id=f"node-{uuid.uuid4().hex[:6]}",
        queue_url=new_queue(sqs, "node"),
        sip_address="127.0.0.1:5060",
        expires_at=utc_now() - timedelta(seconds=5),
    )
    ctx.repo.put(silent)
    call = store_call(ctx, tenant.account_id, CallStatus.IN_PROGRESS, silent.node_id)
    reply = front.request(
        "POST", "/api/calls/hangup", key=tenant.key, body={"call_uuid": str(call.call_uuid)}
    )
    assert reply.status == 503, reply.body
    assert reply.error["code"] == "unavailable"
    assert f"edge node {silent.node_id}" in reply.error["message"]
    assert "has sent no heartbeat since" in reply.error["message"]
    assert reply.headers["retry-after"]
    assert receive_all(sqs, silent.queue_url) == []


@pytest.mark.parametrize(
    ("path", "body", "field", "code"),
    [
        ("/api/calls/hangup", {}, "call_uuid", "validation_error"),
        ("/api/calls/hangup", {"call_uuid": "not-a-uuid"}, "call_uuid", "validation_error"),
        (
            "/api/calls/hangup",
            {"call_uuid": str(uuid.uuid4()), "cause": "x"},
            "cause",
            "validation_error",
        ),
        (
            "/api/calls/transfer",
            {"call_uuid": str(uuid.uuid4())},
            "destination_number",
            "validation_error",
        ),
        (
            "/api/calls/transfer",
            {"call_uuid": str(uuid.uuid4()), "destination_number": "not a number!"},
            "destination_number",
            "validation_error",
        ),
        (
            "/api/calls/transfer",
            {"call_uuid": str(uuid.uuid4()), "destination_number": "sip:"},
            "destination_number",
            "validation_error",
        ),
        (
            "/api/calls/redirect",
            {"call_uuid": str(uuid.uuid4())},
            "media_server",
            "validation_error",
        ),
        (
            "/api/calls/redirect",
            {"call_uuid": str(uuid.uuid4()), "media_server": "https://x.example/"},
            "media_server",
            "validation_error",
        ),
        (
            "/api/calls/redirect",
            {"call_uuid": str(uuid.uuid4()), "media_server": "ws://169.254.169.254/"},
            "media_server",
            "unsafe_url",
        ),
        (
            "/api/calls/transfer",
            {"call_uuid": str(uuid.uuid4()), "destination_number": "sip:pbx@10.1.2.3:5060"},
            "destination_number",
            "unsafe_url",
        ),
        (
            "/api/calls/transfer",
            {"call_uuid": str(uuid.uuid4()), "destination_number": "sips:x@intranet.example.net"},
            "destination_number",
            "unsafe_url",
        ),
    ],
    ids=[
        "hangup-missing",
        "hangup-bad-uuid",
        "hangup-unknown",
        "transfer-missing",
        "transfer-bad",
        "transfer-empty-sip",
        "redirect-missing",
        "redirect-https",
        "redirect-metadata",
        "transfer-sip-private",
        "transfer-sip-private-name",
    ],
)
def test_command_validation_names_the_field(front, tenant, path, body, field, code) -> None:
    reply = front.request("POST", path, key=tenant.key, body=body)
    assert reply.status == 422, reply.body
    assert reply.error["code"] == code
    assert reply.error["field"] == field


# --------------------------------------------------------------------------- reads


def test_get_call_shows_the_record_without_infrastructure(front, ctx, tenant, node) -> None:
    call = store_call(
        ctx,
        tenant.account_id,
        CallStatus.COMPLETED,
        node.node_id,
        duration=45,
        hangup_cause="NORMAL_CLEARING",
        trunk_id="trk_1",
    )
    reply = front.request("GET", f"/api/calls/{call.call_uuid}", key=tenant.key)
    assert reply.status == 200
    assert reply.body["call_uuid"] == str(call.call_uuid)
    assert (reply.body["status"], reply.body["duration"], reply.body["hangup_cause"]) == (
        "completed",
        45,
        "NORMAL_CLEARING",
    )
    assert set(reply.body) == set(CallView.model_fields)
    assert "node_id" not in reply.body and "trunk_id" not in reply.body


@pytest.mark.parametrize(
    "path", ["/api/calls/not-a-uuid", f"/api/calls/{uuid.uuid4()}"], ids=["malformed", "unknown"]
)
def test_get_missing_call_is_404(front, tenant, path) -> None:
    reply = front.request("GET", path, key=tenant.key)
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


def test_listing_is_newest_first_with_a_cursor(front, ctx, tenant, other) -> None:
    start = utc_now() - timedelta(minutes=10)
    made = [
        store_call(ctx, tenant.account_id, created_at=start + timedelta(seconds=i))
        for i in range(5)
    ]
    store_call(ctx, other.account_id)
    newest_first = [str(c.call_uuid) for c in reversed(made)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = front.request("GET", "/api/calls", key=tenant.key, query=query)
        assert reply.status == 200, reply.body
        seen += [c["call_uuid"] for c in reply.body["items"]]
        cursor = reply.body["next_cursor"]
        pages += 1
        if cursor is None or pages > 5:
            break
    assert seen == newest_first
    assert pages == 3


def test_listing_filters_and_fills_the_page(front, ctx, tenant) -> None:
    start = utc_now() - timedelta(minutes=10)
    statuses = [
        CallStatus.IN_PROGRESS,
        CallStatus.COMPLETED,
        CallStatus.IN_PROGRESS,
        CallStatus.COMPLETED,
        CallStatus.IN_PROGRESS,
    ]
    made = [
        store_call(ctx, tenant.account_id, status, created_at=start + timedelta(seconds=i))
        for i, status in enumerate(statuses)
    ]
    inbound = store_call(
        ctx,
        tenant.account_id,
        CallStatus.COMPLETED,
        direction=Direction.INBOUND,
        created_at=start + timedelta(seconds=9),
    )
    live = [str(c.call_uuid) for c in reversed(made) if c.status is CallStatus.IN_PROGRESS]
    first = front.request(
        "GET", "/api/calls", key=tenant.key, query={"status": "in-progress", "limit": "2"}
    )
    assert [c["call_uuid"] for c in first.body["items"]] == live[:2]
    assert first.body["next_cursor"]
    rest = front.request(
        "GET",
        "/api/calls",
        key=tenant.key,
        query={"status": "in-progress", "limit": "2", "cursor": first.body["next_cursor"]},
    )
    assert [c["call_uuid"] for c in rest.body["items"]] == live[2:]
    both = front.request(
        "GET", "/api/calls", key=tenant.key, query={"direction": "inbound", "status": "completed"}
    )
    assert [c["call_uuid"] for c in both.body["items"]] == [str(inbound.call_uuid)]
    assert both.body["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"status": "dancing"}, "status"),
        ({"direction": "sideways"}, "direction"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"colour": "blue"}, "colour"),
    ],
    ids=["limit-0", "limit-101", "status", "direction", "cursor", "unknown"],
)
def test_listing_validation_names_the_field(front, tenant, query, field) -> None:
    reply = front.request("GET", "/api/calls", key=tenant.key, query=query)
    assert reply.status == 422, reply.body
    assert reply.error["field"] == field


def test_a_cursor_from_another_account_is_refused(front, ctx, tenant, other) -> None:
    for _ in range(2):
        store_call(ctx, other.account_id)
    theirs = front.request("GET", "/api/calls", key=other.key, query={"limit": "1"})
    cursor = theirs.body["next_cursor"]
    assert cursor
    reply = front.request("GET", "/api/calls", key=tenant.key, query={"cursor": cursor})
    assert reply.status == 422
    assert reply.error["field"] == "cursor"


# --------------------------------------------------------------------------- auth matrix


ENDPOINTS = [
    ("POST", "/api/calls"),
    ("GET", "/api/calls"),
    ("GET", "/api/calls/{uuid}"),
    ("POST", "/api/calls/hangup"),
    ("POST", "/api/calls/transfer"),
    ("POST", "/api/calls/redirect"),
]


def endpoint_request(method: str, path: str, call_uuid: str) -> tuple[str, dict[str, Any] | None]:
    bodies = {
        "/api/calls": SEED_BODY,
        "/api/calls/hangup": {"call_uuid": call_uuid},
        "/api/calls/transfer": {"call_uuid": call_uuid, "destination_number": "101"},
        "/api/calls/redirect": {"call_uuid": call_uuid, "media_server": "elevenlabs"},
    }
    return path.replace("{uuid}", call_uuid), bodies.get(path) if method == "POST" else None


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
def test_every_endpoint_refuses_bad_keys(front, ctx, tenant, method, path) -> None:
    target, body = endpoint_request(method, path, str(uuid.uuid4()))
    bad = {"none": None, "malformed": "sk_live_short", "unknown": "sk_live_" + "Z" * 43}
    for who, key in bad.items():
        reply = front.request(method, target, key=key, body=body)
        assert (who, reply.status, reply.error["code"]) == (who, 401, "unauthorized")
    assert front.request(method, target, key=tenant.key, body=body).status != 401
    ctx.repo.update(ApiKey, (tenant.issued.record.key_hash,), {"revoked_at": utc_now().isoformat()})
    revoked = front.request(method, target, key=tenant.key, body=body)
    assert (revoked.status, revoked.error["code"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("method", "path"), ENDPOINTS[2:], ids=[f"{m} {p}" for m, p in ENDPOINTS[2:]]
)
def test_another_accounts_call_is_404(front, ctx, tenant, other, node, sqs, method, path) -> None:
    call = store_call(ctx, other.account_id, CallStatus.IN_PROGRESS, node.node_id)
    target, body = endpoint_request(method, path, str(call.call_uuid))
    reply = front.request(method, target, key=tenant.key, body=body)
    assert reply.status == 404
    assert reply.error["code"] == "not_found"
    assert receive_all(sqs, node.queue_url) == []
    mine = front.request("GET", "/api/calls", key=tenant.key)
    assert str(call.call_uuid) not in [c["call_uuid"] for c in mine.body["items"]]


def test_admin_reads_and_controls_any_accounts_calls(
    front, ctx, admin, other, tenant, node, sqs
) -> None:
    call = store_call(ctx, other.account_id, CallStatus.IN_PROGRESS, node.node_id)
    read = front.request("GET", f"/api/calls/{call.call_uuid}", key=admin.key)
    assert read.status == 200
    assert read.body["account_id"] == other.account_id
    hung = front.request(
        "POST", "/api/calls/hangup", key=admin.key, body={"call_uuid": str(call.call_uuid)}
    )
    assert hung.status == 202
    assert isinstance(parse_command(receive_all(sqs, node.queue_url)[0]), Hangup)
    listing = front.request(
        "GET", "/api/calls", key=admin.key, query={"account_id": other.account_id}
    )
    assert [c["call_uuid"] for c in listing.body["items"]] == [str(call.call_uuid)]
    refused = front.request(
        "GET", "/api/calls", key=tenant.key, query={"account_id": other.account_id}
    )
    assert refused.status == 404
    assert refused.error["field"] == "account_id"


def test_wrong_method_lists_the_allowed_ones(front, tenant) -> None:
    reply = front.request("PUT", "/api/calls", key=tenant.key, body={})
    assert reply.status == 405
    assert {"GET", "POST"} <= set(reply.headers["allow"].split(", "))


def reenter(ctx: Context, account_id: str, *, idempotency: dict[str, Any]) -> dict[str, Any]:
    """Runs itself again under the same key while its own claim is still INPROGRESS."""
    return idempotency_module.run_once(
        ctx,
        reenter,
        (ctx, account_id),
        account_id=account_id,
        key=idempotency["key"],
        body=idempotency["body"],
        lambda_context=None,
    )


def test_a_key_still_in_progress_is_409_and_freed_after(ctx, tenant) -> None:
    key = str(uuid.uuid4())
    with pytest.raises(ApiError) as caught:
        reenter(ctx, tenant.account_id, idempotency={"key": key, "body": {"a": 1}})
    assert (caught.value.status, caught.value.field) == (409, "Idempotency-Key")
    assert caught.value.headers == {"Retry-After": "1"}
    done = idempotency_module.run_once(
        ctx,
        originate,
        (ctx, tenant.account_id, CreateCallRequest.model_validate(SEED_BODY)),
        account_id=tenant.account_id,
        key=key,
        body={"a": 1},
        lambda_context=None,
    )
    assert done["status"] == 201


def test_idempotency_records_live_in_the_table_with_a_ttl(front, ctx, tenant) -> None:
    reply = front.request(
        "POST", "/api/calls", key=tenant.key, body=SEED_BODY, headers={"Idempotency-Key": "k-1"}
    )
    assert reply.status == 201
    items = ctx.dynamodb.query(
        TableName=ctx.settings.table_name,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": idempotency_module.PARTITION}},
        ConsistentRead=True,
    )["Items"]
    (record,) = [i for i in items if reply.body["call_uuid"] in i.get("response", {}).get("S", "")]
    assert record["idempotency_status"] == {"S": "COMPLETED"}
    expires = int(record[mapping.TTL_ATTRIBUTE]["N"])
    expected = time.time() + idempotency_module.TTL_SECONDS
    assert expected - 60 < expires < expected + 60
    assert "payload_hash" in record


def test_operations_describe_every_route(ctx) -> None:
    routes = {
        (method, route.path)
        for route in calls.calls_routes(lambda: ctx)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert {(op.method, op.path) for op in calls.OPERATIONS} == routes
    assert {op.path for op in calls.OPERATIONS if op.idempotent_header} == {"/api/calls"}
