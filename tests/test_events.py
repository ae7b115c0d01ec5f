"""The sample events in events/ must look exactly like what API Gateway and SQS deliver.

Handler tests and `sam local invoke` feed these files to the real functions, so a sample that
drifts from the wire shape (a wrong md5OfBody, a rawPath that disagrees with requestContext, a
stale content-length) would make those tests prove nothing. Each file is checked against the
`sam local generate-event` shape, against Powertools' own event models, and (API events) by
running it through Mangum into a Starlette app, which is how ApiFunction consumes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

EVENTS = Path(__file__).resolve().parent.parent / "events"
API_EVENTS = sorted((EVENTS / "api").glob("*.json"))
SQS_EVENTS = sorted((EVENTS / "sqs").glob("*.json"))
ALL_EVENTS = sorted(EVENTS.rglob("*.json"))

CALL_UUID = "d3b07384-d113-444c-8f4e-0a1b2c3d4e5f"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# (method, rawPath, rawQueryString) of each call-control sample events/ must hold.
EXPECTED_API_EVENTS = {
    "health.json": ("GET", "/api/health", ""),
    "calls_create.json": ("POST", "/api/calls", ""),
    "calls_hangup.json": ("POST", "/api/calls/hangup", ""),
    "calls_transfer.json": ("POST", "/api/calls/transfer", ""),
    "calls_redirect.json": ("POST", "/api/calls/redirect", ""),
    "calls_get.json": ("GET", f"/api/calls/{CALL_UUID}", ""),
    "calls_list.json": ("GET", "/api/calls", "status=in-progress&limit=20"),
    "account_get.json": ("GET", "/api/account", ""),
    "account_update.json": ("PATCH", "/api/account", ""),
    "account_webhook_secret.json": ("GET", "/api/account/webhook-secret", ""),
    "account_webhook_secret_rotate.json": ("POST", "/api/account/webhook-secret/rotate", ""),
    "accounts_create.json": ("POST", "/api/accounts", ""),
    "agents_create.json": ("POST", "/api/agents", ""),
    "agents_delete.json": ("DELETE", "/api/agents/7c9e6679-7425-40de-944b-e07fc1f90ae7", ""),
    "agents_get.json": ("GET", "/api/agents/7c9e6679-7425-40de-944b-e07fc1f90ae7", ""),
    "agents_list.json": ("GET", "/api/agents", "limit=20"),
    "agents_update.json": ("PATCH", "/api/agents/7c9e6679-7425-40de-944b-e07fc1f90ae7", ""),
    "docs.json": ("GET", "/api/docs", ""),
    "extensions_create.json": ("POST", "/api/extensions", ""),
    "extensions_delete.json": ("DELETE", "/api/extensions/101", ""),
    "extensions_get.json": ("GET", "/api/extensions/101", ""),
    "extensions_list.json": ("GET", "/api/extensions", "limit=20"),
    "extensions_update.json": ("PATCH", "/api/extensions/101", ""),
    "keys_create.json": ("POST", "/api/keys", ""),
    "keys_delete.json": ("DELETE", "/api/keys/key_0123456789abcdef", ""),
    "keys_list.json": ("GET", "/api/keys", "limit=20"),
    "numbers_create.json": ("POST", "/api/numbers", ""),
    "numbers_delete.json": ("DELETE", "/api/numbers/+5511999999999", ""),
    "numbers_get.json": ("GET", "/api/numbers/+5511999999999", ""),
    "numbers_list.json": ("GET", "/api/numbers", "limit=20"),
    "numbers_update.json": ("PATCH", "/api/numbers/+5511999999999", ""),
    "openapi.json": ("GET", "/api/openapi.json", ""),
    "telephony_configs_create.json": ("POST", "/api/telephony-configs", ""),
    "telephony_configs_delete.json": (
        "DELETE",
        "/api/telephony-configs/tel_0123456789abcdef0123",
        "",
    ),
    "telephony_configs_get.json": ("GET", "/api/telephony-configs/tel_0123456789abcdef0123", ""),
    "telephony_configs_list.json": ("GET", "/api/telephony-configs", "limit=20"),
    "telephony_configs_update.json": (
        "PATCH",
        "/api/telephony-configs/tel_0123456789abcdef0123",
        "",
    ),
    "trunks_create.json": ("POST", "/api/trunks", ""),
    "trunks_delete.json": ("DELETE", "/api/trunks/trk_0123456789abcdef0123", ""),
    "trunks_get.json": ("GET", "/api/trunks/trk_0123456789abcdef0123", ""),
    "trunks_list.json": ("GET", "/api/trunks", "limit=20"),
    "trunks_update.json": ("PATCH", "/api/trunks/trk_0123456789abcdef0123", ""),
}
EXPECTED_BODIES = {
    "calls_create.json": {
        "destination_number": "5511999999999",
        "caller_id_number": "5511888888888",
        "caller_id_name": "My Business",
        "socket_url": "wss://my-bot-server.com/media",
        "webhook_url": "https://my-api.com/route-call",
    },
    "calls_hangup.json": {"call_uuid": CALL_UUID},
    "calls_transfer.json": {"call_uuid": CALL_UUID, "destination_number": "5511999999999"},
    "calls_redirect.json": {"call_uuid": CALL_UUID, "media_server": "elevenlabs"},
    "account_update.json": {
        "webhook_url": "https://my-api.com/route-call",
        "socket_url": "wss://my-bot-server.com/media",
        "elevenlabs": {"api_key": "xi-sample-0123456789abcdef", "agent_id": "tVvN0123456789"},
    },
    "accounts_create.json": {
        "name": "Acme Support",
        "webhook_url": "https://my-api.com/route-call",
        "key_name": "production",
    },
    "agents_create.json": {"name": "Support bot", "socket_url": "wss://my-bot-server.com/media"},
    "agents_update.json": {"name": "Support bot v2"},
    "extensions_create.json": {
        "extension": "101",
        "sip_username": "acme-101",
        "password": "correct-horse-battery",
        "route": {"socket_url": "elevenlabs&tVvN0123456789"},
    },
    "extensions_update.json": {
        "route": {"socket_url": "wss://my-bot-server.com/media"},
        "description": "Front desk",
    },
    "keys_create.json": {"name": "production"},
    "numbers_create.json": {
        "number": "+5511999999999",
        "route": {"socket_url": "wss://my-bot-server.com/media"},
        "description": "Sales line",
    },
    "numbers_update.json": {"route": {"webhook_url": "https://my-api.com/route-call"}},
    "telephony_configs_create.json": {
        "provider": "twilio",
        "account_sid": "AC0123456789abcdef0123456789abcdef",
        "auth_token": "twilio-auth-token-0123",
    },
    "telephony_configs_update.json": {"auth_token": "rotated-auth-token-4567"},
    "trunks_create.json": {
        "name": "Carrier A",
        "host": "sip.carrier.example",
        "port": 5060,
        "transport": "udp",
        "username": "acme",
        "password": "trunk-secret-0123",
        "needs_registration": False,
        "inbound_sources": ["198.51.100.0/24"],
    },
    "trunks_update.json": {"port": 5080, "transport": "tcp"},
}

# Samples of endpoints that need no API key.
OPEN_EVENTS = {"health.json", "openapi.json", "docs.json"}

# Keys of `sam local generate-event apigateway http-api-proxy` (SAM CLI 1.170.0). API Gateway
# leaves out cookies, queryStringParameters, body and stageVariables when there are none, and
# authentication/authorizer when no mTLS or authorizer is configured (this API has neither).
HTTP_API_V2_KEYS = {
    "version",
    "routeKey",
    "rawPath",
    "rawQueryString",
    "cookies",
    "headers",
    "queryStringParameters",
    "requestContext",
    "body",
    "pathParameters",
    "isBase64Encoded",
    "stageVariables",
}
HTTP_API_V2_REQUIRED = {
    "version",
    "routeKey",
    "rawPath",
    "rawQueryString",
    "headers",
    "requestContext",
    "isBase64Encoded",
}
REQUEST_CONTEXT_KEYS = {
    "accountId",
    "apiId",
    "domainName",
    "domainPrefix",
    "http",
    "requestId",
    "routeKey",
    "stage",
    "time",
    "timeEpoch",
}
HTTP_KEYS = {"method", "path", "protocol", "sourceIp", "userAgent"}
# Route keys template.yaml declares for ApiFunction.
ROUTE_KEYS = {"/api": "ANY /api", "/api/": "ANY /api/{proxy+}"}

# Keys of one record of `sam local generate-event sqs receive-message` (SAM CLI 1.170.0).
SQS_RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}
SQS_ATTRIBUTE_KEYS = {
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
}
SQS_ARN_RE = re.compile(r"^arn:aws:sqs:(?P<region>[a-z0-9-]+):\d{12}:(?P<queue>[A-Za-z0-9_-]+)$")


def _load(path: Path) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(path.read_text())
    return event


def _rel(path: Path) -> str:
    return path.relative_to(EVENTS).as_posix()


def test_expected_samples_exist() -> None:
    assert sorted(p.name for p in API_EVENTS) == sorted(EXPECTED_API_EVENTS)
    assert sorted(p.name for p in SQS_EVENTS) == ["callbacks.json", "events.json"]
    assert sorted(ALL_EVENTS) == sorted(API_EVENTS + SQS_EVENTS)


@pytest.mark.parametrize("path", ALL_EVENTS, ids=_rel)
def test_event_is_a_json_object(path: Path) -> None:
    assert isinstance(_load(path), dict)


# --- HTTP API v2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", API_EVENTS, ids=_rel)
def test_api_event_has_http_api_v2_shape(path: Path) -> None:
    event = _load(path)
    assert HTTP_API_V2_REQUIRED <= set(event) <= HTTP_API_V2_KEYS
    assert event["version"] == "2.0"
    ctx = event["requestContext"]
    assert set(ctx) == REQUEST_CONTEXT_KEYS
    assert set(ctx["http"]) == HTTP_KEYS
    assert ctx["stage"] == "$default"
    assert ctx["domainName"] == f"{ctx['apiId']}.execute-api.us-east-1.amazonaws.com"
    assert ctx["domainPrefix"] == ctx["apiId"]


@pytest.mark.parametrize("path", API_EVENTS, ids=_rel)
def test_api_event_routing_fields_agree(path: Path) -> None:
    event = _load(path)
    method, raw_path, raw_query = EXPECTED_API_EVENTS[path.name]
    http = event["requestContext"]["http"]
    assert (http["method"], event["rawPath"], event["rawQueryString"]) == (
        method,
        raw_path,
        raw_query,
    )
    assert http["path"] == event["rawPath"]
    assert event["rawPath"].startswith("/api")
    expected_route = ROUTE_KEYS["/api"] if raw_path == "/api" else ROUTE_KEYS["/api/"]
    assert event["routeKey"] == event["requestContext"]["routeKey"] == expected_route
    if raw_path != "/api":
        assert event["pathParameters"] == {"proxy": raw_path.removeprefix("/api/")}
    query = event.get("queryStringParameters")
    assert (urlencode(query) if query else "") == raw_query


@pytest.mark.parametrize("path", API_EVENTS, ids=_rel)
def test_api_event_headers_and_body(path: Path) -> None:
    event = _load(path)
    headers = event["headers"]
    assert all(name == name.lower() for name in headers), "HTTP API v2 lowercases header names"
    assert headers["host"] == event["requestContext"]["domainName"]
    assert headers["user-agent"] == event["requestContext"]["http"]["userAgent"]
    assert event["isBase64Encoded"] is False
    if path.name in EXPECTED_BODIES:
        body = event["body"]
        assert json.loads(body) == EXPECTED_BODIES[path.name]
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == str(len(body.encode()))
    else:
        assert "body" not in event
        assert "content-length" not in headers


@pytest.mark.parametrize("path", API_EVENTS, ids=_rel)
def test_call_control_events_carry_an_api_key(path: Path) -> None:
    headers = _load(path)["headers"]
    if path.name in OPEN_EVENTS:
        assert "x-api-key" not in headers
    else:
        assert headers["x-api-key"].startswith("sk_live_")


@pytest.mark.parametrize("path", API_EVENTS, ids=_rel)
def test_api_event_validates_against_powertools_model(path: Path) -> None:
    from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model

    event = _load(path)
    model = APIGatewayProxyEventV2Model.model_validate(event)
    assert model.rawPath == event["rawPath"]
    assert model.requestContext.http.method == event["requestContext"]["http"]["method"]


@pytest.mark.parametrize("path", API_EVENTS, ids=_rel)
def test_api_event_reaches_starlette_through_mangum(path: Path, mangum_loop: Any) -> None:
    """What the route handler of ApiFunction will see for this sample."""
    from mangum import Mangum
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": sorted(request.query_params.multi_items()),
                "api_key": request.headers.get("x-api-key"),
                "body": (await request.body()).decode(),
            }
        )

    app = Starlette(
        routes=[Route("/{rest:path}", echo, methods=["GET", "POST", "PATCH", "DELETE"])]
    )
    event = _load(path)
    response = Mangum(app, lifespan="off")(event, object())
    assert response["statusCode"] == 200
    method, raw_path, raw_query = EXPECTED_API_EVENTS[path.name]
    assert json.loads(response["body"]) == {
        "method": method,
        "path": raw_path,
        "query": sorted([list(kv) for kv in parse_qsl(raw_query)]),
        "api_key": event["headers"].get("x-api-key"),
        "body": event.get("body", ""),
    }


# --- SQS -----------------------------------------------------------------------------------------


def _records(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = _load(path)["Records"]
    return records


@pytest.mark.parametrize("path", SQS_EVENTS, ids=_rel)
def test_sqs_event_envelope(path: Path) -> None:
    event = _load(path)
    assert set(event) == {"Records"}
    records = event["Records"]
    assert records
    assert len({r["messageId"] for r in records}) == len(records)
    for record in records:
        assert set(record) == SQS_RECORD_KEYS
        assert set(record["attributes"]) == SQS_ATTRIBUTE_KEYS
        assert record["eventSource"] == "aws:sqs"
        assert UUID_RE.match(record["messageId"])
        arn = SQS_ARN_RE.match(record["eventSourceARN"])
        assert arn is not None
        assert arn["region"] == record["awsRegion"]
        attributes = record["attributes"]
        assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(
            attributes["SentTimestamp"]
        )


@pytest.mark.parametrize("path", SQS_EVENTS, ids=_rel)
def test_sqs_md5_of_body_is_correct(path: Path) -> None:
    for record in _records(path):
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()


@pytest.mark.parametrize("path", SQS_EVENTS, ids=_rel)
def test_sqs_event_validates_against_powertools_model(path: Path) -> None:
    from aws_lambda_powertools.utilities.parser.models import SqsModel

    model = SqsModel.model_validate(_load(path))
    assert [r.md5OfBody for r in model.Records] == [r["md5OfBody"] for r in _records(path)]


def _body(name: str) -> str:
    (record,) = _records(EVENTS / "sqs" / name)
    body: str = record["body"]
    return body


def test_events_sample_is_an_edge_event() -> None:
    from shared.events import CallAnswered, parse_event

    (record,) = _records(EVENTS / "sqs" / "events.json")
    assert ":agera-EventsQueue-" in record["eventSourceARN"]
    event = parse_event(record["body"])
    assert isinstance(event, CallAnswered)
    assert (event.version, str(event.call_uuid), event.account_id) == (1, CALL_UUID, "12")


def test_callbacks_sample_is_what_the_events_worker_queues_for_the_events_sample() -> None:
    """The two SQS samples describe one pipeline step: edge event in, callback message out."""
    from shared.events import callback_payload, parse_callback, parse_event

    (record,) = _records(EVENTS / "sqs" / "callbacks.json")
    assert ":agera-CallbacksQueue-" in record["eventSourceARN"]
    event = parse_event(_body("events.json"))
    message = parse_callback(record["body"])
    assert message.id == "cb_" + event.id.removeprefix("evt_")
    assert (message.account_id, message.call_uuid) == (event.account_id, event.call_uuid)
    assert message.payload == callback_payload(event)
    assert message.payload == {
        "event_type": "call.answered",
        "call_uuid": CALL_UUID,
        "timestamp": "2026-11-21T09:30:05Z",
        "call_status": "in-progress",
    }
