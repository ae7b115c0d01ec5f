"""Front doors for API tests: real HTTP to uvicorn, and Mangum fed API Gateway v2 events.

The ``front`` fixture runs a test once through each: a uvicorn server on a loopback port (one per
session; each test points it at its own Context) and the Lambda handler given events shaped like
``events/api/*.json``. Host names in URLs resolve through a fake resolver set on the context; the
real DNS is never asked. Accounts are fresh per test (uuid-based ids), as the suite's conftest
expects.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from mangum import Mangum

from functions.api.app import create_app
from functions.context import Context
from functions.observability import logger
from infra.sqs_poller import LocalLambdaContext
from shared.models import ApiKeyRole
from shared.provisioning import new_key_record
from shared.settings import Settings
from tests.support.api_server import LoopbackApiServer, Tenant, make_tenant

API_EVENTS = Path(__file__).resolve().parents[2] / "events" / "api"
PUBLIC_DNS = {
    "my-bot-server.com": ["93.184.216.34"],
    "my-api.com": ["93.184.216.35"],
    "bot.example.com": ["93.184.216.36", "2606:2800:220:1:248:1893:25c8:1946"],
    "hooks.example.com": ["93.184.216.37"],
    "intranet.example.net": ["10.20.30.40"],
}


def fake_resolver(host: str) -> list[str]:
    if host not in PUBLIC_DNS:
        raise OSError(f"[Errno -2] Name or service not known: {host}")
    return PUBLIC_DNS[host]


def make_api_ctx(**overrides: Any) -> Context:
    settings = Settings.load(**{"api_key_cache_seconds": 0, **overrides})
    ctx = Context(settings)
    ctx.resolve_host = fake_resolver
    return ctx


@pytest.fixture
def api_ctx(aws: Any) -> Context:
    return make_api_ctx()


# --------------------------------------------------------------------------- tenants


def add_key(ctx: Context, tenant: Tenant, role: ApiKeyRole = ApiKeyRole.ACCOUNT) -> Tenant:
    """Another key of the same account."""
    issued = new_key_record(tenant.account_id, f"{role.value} key", role)
    ctx.repo.put(issued.record, create_only=True)
    return Tenant(tenant.account, issued.key, issued.record.key_id)


@pytest.fixture
def new_tenant(api_ctx: Context) -> Any:
    """Factory: a fresh account with one key, ``new_tenant(role=..., **account_fields)``."""

    def make(role: ApiKeyRole = ApiKeyRole.ACCOUNT, **fields: Any) -> Tenant:
        return make_tenant(api_ctx, role, **fields)

    return make


@pytest.fixture
def new_key(api_ctx: Context) -> Any:
    """Factory: another key of a tenant's account, ``new_key(tenant, role)``."""

    def make(tenant: Tenant, role: ApiKeyRole = ApiKeyRole.ACCOUNT) -> Tenant:
        return add_key(api_ctx, tenant, role)

    return make


@pytest.fixture
def tenant(new_tenant: Any) -> Tenant:
    return new_tenant()  # type: ignore[no-any-return]


@pytest.fixture
def other_tenant(new_tenant: Any) -> Tenant:
    return new_tenant()  # type: ignore[no-any-return]


@pytest.fixture
def admin_tenant(new_tenant: Any) -> Tenant:
    return new_tenant(ApiKeyRole.ADMIN)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def error(self) -> dict[str, Any]:
        body = self.json()
        assert set(body) == {"error"}, body
        return dict(body["error"])


def encode_body(body: Any, raw: bytes | str | None) -> bytes | None:
    if raw is not None:
        return raw.encode() if isinstance(raw, str) else raw
    return json.dumps(body).encode() if body is not None else None


# --------------------------------------------------------------------------- uvicorn


class UvicornServer(LoopbackApiServer):
    """The app under uvicorn on a free loopback port; ``ctx`` is swapped per test."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        super().__init__(self._context)

    def _context(self) -> Context:
        assert self.ctx is not None, "no test context set"
        return self.ctx


@pytest.fixture(scope="session")
def uvicorn_server() -> Iterator[UvicornServer]:
    # The server records metrics after the response is sent, possibly after the test that made
    # the request has restored the environment: keep EMF lines off stdout for the whole session.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POWERTOOLS_METRICS_DISABLED", "1")
        server = UvicornServer()
        yield server
        server.close()


class UvicornFront:
    name = "uvicorn"

    def __init__(self, server: UvicornServer, ctx: Context) -> None:
        server.ctx = ctx
        self.client = httpx.Client(base_url=server.base_url, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: Any = None,
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-KEY"] = key
        content = encode_body(body, raw)
        if content is not None:
            sent.setdefault("Content-Type", "application/json")
        response = self.client.request(
            method, path, content=content, headers=sent, params=query or None
        )
        headers_out = {name.lower(): value for name, value in response.headers.items()}
        return Reply(response.status_code, headers_out, response.content)

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- Mangum


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((API_EVENTS / name).read_text())
    return event


def build_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API v2 event like the samples (health.json's envelope) for any request."""
    event = copy.deepcopy(load_event("health.json"))
    sent = dict(event["headers"])
    sent.update({name.lower(): value for name, value in (headers or {}).items()})
    if body is not None:
        try:
            event["body"] = body.decode()
        except UnicodeDecodeError:  # API Gateway sends such bodies base64-encoded
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
        sent.setdefault("content-type", "application/json")
        sent["content-length"] = str(len(body))
    event["headers"] = sent
    set_path(event, method, path)
    event["rawQueryString"] = urlencode(query or {})
    if query:
        event["queryStringParameters"] = dict(query)
    return event


def set_path(event: dict[str, Any], method: str, path: str) -> None:
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["pathParameters"] = {"proxy": path.removeprefix("/api/")}


def invoke(handler: Mangum, event: dict[str, Any]) -> Reply:
    response = handler(event, LocalLambdaContext("ApiFunction"))
    headers = {name.lower(): value for name, value in response.get("headers", {}).items()}
    body = response.get("body") or ""
    content = body.encode() if isinstance(body, str) else body
    return Reply(response["statusCode"], headers, content)


class MangumFront:
    name = "mangum"

    def __init__(self, ctx: Context) -> None:
        self.handler = Mangum(create_app(lambda: ctx), lifespan="off")

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: Any = None,
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            sent["x-api-key"] = key
        event = build_event(method, path, headers=sent, body=encode_body(body, raw), query=query)
        return invoke(self.handler, event)

    def close(self) -> None:
        pass


@pytest.fixture(params=["uvicorn", "mangum"])
def front(request: pytest.FixtureRequest, api_ctx: Context) -> Iterator[Any]:
    """The API through one front door; tests using it run once per door."""
    if request.param == "uvicorn":
        door: Any = UvicornFront(request.getfixturevalue("uvicorn_server"), api_ctx)
    else:
        request.getfixturevalue("mangum_loop")
        door = MangumFront(api_ctx)
    yield door
    door.close()


@pytest.fixture
def lambda_handler(api_ctx: Context, mangum_loop: Any) -> Mangum:
    """The Lambda entry point on the test's context, for the events/api samples."""
    return Mangum(create_app(lambda: api_ctx), lifespan="off")


def sample_event(
    name: str,
    key: str | None,
    *,
    path: str | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An events/api sample with a real key (and, for generated ids, the real path or body)."""
    event = copy.deepcopy(load_event(name))
    if key is None:
        event["headers"].pop("x-api-key", None)
    else:
        event["headers"]["x-api-key"] = key
    if path is not None:
        set_path(event, event["requestContext"]["http"]["method"], path)
    if body is not None:
        encoded = json.dumps(body)
        event["body"] = encoded
        event["headers"]["content-length"] = str(len(encoded.encode()))
    if query is not None:
        event["rawQueryString"] = urlencode(query)
        event["queryStringParameters"] = dict(query)
    return event


@pytest.fixture
def run_sample(lambda_handler: Mangum) -> Any:
    """``run_sample(name, key, path=..., body=..., query=...)``: invoke the Lambda handler with the
    sample events/api/<name> (key and generated ids substituted) and return the Reply."""

    def run(name: str, key: str | None, **changes: Any) -> Reply:
        return invoke(lambda_handler, sample_event(name, key, **changes))

    return run


@pytest.fixture
def sample_body() -> Any:
    """``sample_body(name)``: the JSON body of an events/api sample."""

    def body(name: str) -> Any:
        return json.loads(load_event(name)["body"])

    return body


@pytest.fixture
def make_event() -> Any:
    """``make_event(name, key, path=..., body=..., query=...)``: an edited events/api sample."""
    return sample_event


@pytest.fixture
def invoke_event(lambda_handler: Mangum) -> Any:
    """``invoke_event(event)``: the Lambda handler's Reply to a raw event."""

    def run(event: dict[str, Any]) -> Reply:
        return invoke(lambda_handler, event)

    return run


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the gateway's JSON log handler writes, read back (the same formatter, our stream)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    root = logging.getLogger(logger.service)
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)
