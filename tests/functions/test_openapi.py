"""The OpenAPI 3.1 document: generated from every module, matches the routes, describes replies."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Route

from functions.api.app import create_app
from functions.api.openapi import (
    SWAGGER_UI_JS_SRI,
    SWAGGER_UI_VERSION,
    all_operations,
    openapi_path,
)

METHODS = {"get", "post", "put", "patch", "delete"}


def document(front) -> dict[str, Any]:
    reply = front.request("GET", "/api/openapi.json")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    return body


def schema_for(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one component, its references rewritten to local $defs."""
    text = json.dumps(doc["components"]["schemas"]).replace("#/components/schemas/", "#/$defs/")
    schema = {"$defs": json.loads(text), "$ref": f"#/$defs/{name}"}
    return Draft202012Validator(schema)


def ref_name(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def test_every_route_has_an_operation_and_every_operation_a_route() -> None:
    served = set()
    for route in create_app().routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                served.add((method, openapi_path(route.path)))
    declared = [(op.method, openapi_path(op.path)) for op in all_operations()]
    assert len(declared) == len(set(declared)), "an operation is declared twice"
    assert served == set(declared)


def test_document_is_open_and_lists_every_operation(front) -> None:
    doc = document(front)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Agera Voice Gateway API"
    listed = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    assert listed == {(op.method, openapi_path(op.path)) for op in all_operations()}
    ids = [item[m]["operationId"] for item in doc["paths"].values() for m in item]
    assert len(ids) == len(set(ids))


def test_security_schemes_and_which_operations_need_a_key(front) -> None:
    doc = document(front)
    assert doc["components"]["securitySchemes"]["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": "The account's API key, sk_live_...",
    }
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    open_ops = {
        path
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if op["security"] == []
    }
    assert open_ops == {"/api/health", "/api/openapi.json", "/api/docs"}
    keyed = doc["paths"]["/api/numbers"]["post"]
    assert keyed["security"] == [{"ApiKeyHeader": []}, {"BearerToken": []}]
    assert set(keyed["responses"]) >= {"201", "400", "401", "413", "415", "422", "default"}
    assert "403" in doc["paths"]["/api/accounts"]["post"]["responses"]


def test_component_schemas_are_valid_json_schema_and_refs_resolve(front) -> None:
    doc = document(front)
    components = doc["components"]["schemas"]
    for name, schema in components.items():
        Draft202012Validator.check_schema(schema)
        for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)):
            assert ref in components, (name, ref)
    for path, item in doc["paths"].items():
        for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(item)):
            assert ref in components, (path, ref)


def test_request_schemas_are_the_validating_models(front) -> None:
    doc = document(front)
    body = doc["paths"]["/api/numbers"]["post"]["requestBody"]["content"]["application/json"]
    create = doc["components"]["schemas"][ref_name(body["schema"])]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"number", "route"}
    params = {p["name"]: p for p in doc["paths"]["/api/numbers"]["get"]["parameters"]}
    assert params["limit"]["in"] == "query"
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 100)
    one = doc["paths"]["/api/numbers/{number}"]["get"]["parameters"]
    assert one == [{"name": "number", "in": "path", "required": True, "schema": {"type": "string"}}]
    idem = doc["paths"]["/api/calls"]["post"]["parameters"]
    assert [p["name"] for p in idem if p["in"] == "header"] == ["Idempotency-Key"]


def test_real_replies_conform_to_their_documented_schemas(front, tenant) -> None:
    doc = document(front)
    number = "+1555" + str(uuid.uuid4().int)[:7]
    created = front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"socket_url": "wss://bot.example.com/b"}},
    )
    post = doc["paths"]["/api/numbers"]["post"]["responses"]["201"]
    schema_for(doc, ref_name(post["content"]["application/json"]["schema"])).validate(
        created.json()
    )
    listed = front.request("GET", "/api/numbers", key=tenant.key)
    get = doc["paths"]["/api/numbers"]["get"]["responses"]["200"]
    schema_for(doc, ref_name(get["content"]["application/json"]["schema"])).validate(listed.json())
    account = front.request("GET", "/api/account", key=tenant.key)
    schema_for(doc, "AccountOut").validate(account.json())
    error = front.request("POST", "/api/numbers", key=tenant.key, body={"number": "x"})
    schema_for(doc, "ErrorBody").validate(error.json())
    validator = schema_for(doc, "ErrorBody")
    assert not validator.is_valid({"error": {"message": "no code"}})


def test_docs_page_loads_the_pinned_ui_and_the_document(front) -> None:
    reply = front.request("GET", "/api/docs")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    html = reply.content.decode()
    assert f"swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui-bundle.js" in html
    assert html.count('integrity="sha384-') == 2 and SWAGGER_UI_JS_SRI in html
    assert 'url: "openapi.json"' in html


@pytest.mark.parametrize("name", ["openapi.json", "docs.json"])
def test_sample_events(run_sample, name) -> None:
    reply = run_sample(name, None)
    assert reply.status == 200
    if name == "openapi.json":
        assert reply.json()["openapi"] == "3.1.0"
    else:
        assert b"swagger-ui" in reply.content
