"""OpenAPI 3.1 at ``GET /api/openapi.json`` and a rendered page at ``GET /api/docs``, both open.

The document is generated, never written: every API module declares its ``OPERATIONS``
(``functions.api.operations``), the modules are listed once in `OPERATION_MODULES`, and schemas
come from the same pydantic models the handlers validate with (JSON Schema 2020-12, which OpenAPI
3.1 uses as is). A test checks that every route of the app has an operation and vice versa, so
the document cannot drift from what is served.

It is built on the first request and kept: import time is Lambda cold-start time, and schema
generation for every model costs tens of milliseconds that most invocations never need.

``/api/docs`` is a small page loading a pinned Swagger UI from jsDelivr, with Subresource
Integrity hashes; it fetches ``openapi.json`` relative to itself, so it works behind any base path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from types import ModuleType
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from functions.api import (
    account,
    accounts,
    agents,
    calls,
    extensions,
    health,
    keys,
    numbers,
    telephony_configs,
    trunks,
)
from functions.api.operations import Operation
from functions.api.routing import route
from functions.api.schemas import ResponseBody
from functions.context import Context

OPENAPI_VERSION = "3.1.0"
TITLE = "Agera Voice Gateway API"
REF_TEMPLATE = "#/components/schemas/{model}"
SWAGGER_UI_VERSION = "5.17.14"
SWAGGER_UI_CDN = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
# Subresource Integrity of the two files in the npm package swagger-ui-dist@5.17.14: a CDN that
# served anything else would be refused by the browser.
SWAGGER_UI_CSS_SRI = "sha384-wxLW6kwyHktdDGr6Pv1zgm/VGJh99lfUbzSn6HNHBENZlCN7W602k9VkGdxuFvPn"
SWAGGER_UI_JS_SRI = "sha384-wmyclcVGX/WhUkdkATwhaK1X1JtiNrr2EoYJ+diV3vj4v6OC5yCeSu+yW13SYJep"
TAG = "docs"

API_KEY_SCHEME = "ApiKeyHeader"
BEARER_SCHEME = "BearerToken"
SECURITY_SCHEMES = {
    API_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": "The account's API key, sk_live_...",
    },
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "The same API key as a bearer token: Authorization: Bearer sk_live_...",
    },
}
DESCRIPTION = (
    "Control plane of the Agera Voice Gateway: place and control calls, route numbers, "
    "extensions and agents to bots, manage keys and the account. Every error has the shape "
    '`{"error": {"code", "message", "field"?}}`; `field` names the request field at fault. '
    "Listings are paged with `limit` and `cursor`; loop until `next_cursor` is null."
)

_ERROR_TEXT = {
    400: "The body is not a JSON object.",
    401: "Missing or invalid API key.",
    403: "The key lacks the admin role.",
    404: "No such resource in this account.",
    413: "The body is larger than 64 KiB.",
    415: "The body is not JSON.",
    422: "A field is invalid; `field` names it.",
}
_PATH_PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


class ErrorDetail(ResponseBody):
    code: str = Field(description="Stable, for programs: validation_error, not_found, ...")
    message: str = Field(description="For people.")
    field: str | None = Field(None, description="The request field at fault (dotted if nested).")


class ErrorBody(ResponseBody):
    """The body of every 4xx/5xx response."""

    error: ErrorDetail


OPERATIONS = (
    Operation("GET", "/api/openapi.json", "This document (OpenAPI 3.1)", TAG, auth=False),
    Operation("GET", "/api/docs", "The API reference, rendered (HTML)", TAG, auth=False),
)

OPERATION_MODULES: tuple[ModuleType, ...] = (
    health,
    account,
    accounts,
    keys,
    calls,
    numbers,
    extensions,
    trunks,
    agents,
    telephony_configs,
)


def all_operations() -> tuple[Operation, ...]:
    """Every operation the API serves, in document order."""
    operations: list[Operation] = []
    for module in OPERATION_MODULES:
        operations.extend(module.OPERATIONS)
    operations.extend(OPERATIONS)
    return tuple(operations)


def openapi_path(path: str) -> str:
    """Starlette's ``{name:converter}`` as OpenAPI's ``{name}``."""
    return _PATH_PARAM_RE.sub(lambda m: "{" + m.group(1) + "}", path)


def operation_id(operation: Operation) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", openapi_path(operation.path).removeprefix("/api/").lower())
    return f"{operation.method.lower()}_{words.strip('_')}"


def _schemas(operations: Iterable[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """(model, mode) → schema reference, and the components they refer to."""
    from pydantic.json_schema import models_json_schema  # only the first document request pays

    wanted: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for op in operations:
        for model in (op.request, op.query):
            if model is not None:
                wanted[(model, "validation")] = None
        if op.response is not None:
            wanted[(op.response, "serialization")] = None
    refs, definitions = models_json_schema(list(wanted), ref_template=REF_TEMPLATE)
    return dict(refs), dict(definitions.get("$defs", {}))


def _component(ref: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[-1]
    schema: dict[str, Any] = components[name]
    return schema


def _query_parameters(
    model: type[BaseModel], refs: dict[Any, Any], components: dict[str, Any]
) -> list[dict[str, Any]]:
    schema = _component(refs[(model, "validation")], components)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": _ERROR_TEXT[status],
        "content": {
            "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}
        },
    }


def _operation(op: Operation, refs: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    path_names = _PATH_PARAM_RE.findall(op.path)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_names
    ]
    if op.query is not None:
        parameters.extend(_query_parameters(op.query, refs, components))
    if op.idempotent_header:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Retry safely: the same key and body return the same result; "
                "the same key with another body is a 422.",
                "schema": {"type": "string", "maxLength": 255},
            }
        )
    success: dict[str, Any] = {"description": "No content" if op.status == 204 else "OK"}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
    responses: dict[str, Any] = {str(op.status): success}
    errors: list[int] = []
    if op.request is not None:
        errors += [400, 413, 415, 422]
    elif op.query is not None:
        errors.append(422)
    if op.auth:
        errors.append(401)
    if op.admin_only:
        errors.append(403)
    if path_names:
        errors.append(404)
    for status in sorted(set(errors)):
        responses[str(status)] = _error_response(status)
    responses["default"] = {
        "description": "Any other error (409 conflict, 503 unavailable, ...), same shape.",
        "content": {
            "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}
        },
    }
    document: dict[str, Any] = {
        "operationId": operation_id(op),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "security": [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}] if op.auth else [],
    }
    if parameters:
        document["parameters"] = parameters
    if op.request is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.request, "validation")]}},
        }
    return document


def build_document(operations: Iterable[Operation], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations``."""
    operations = tuple(operations)
    refs, components = _schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(
            op, refs, components
        )
    tags = list(dict.fromkeys(op.tag for op in operations))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


@cache
def openapi_document() -> dict[str, Any]:
    return build_document(all_operations(), health.VERSION)


DOCS_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title>
<link rel="stylesheet" href="{SWAGGER_UI_CDN}/swagger-ui.css"
 integrity="{SWAGGER_UI_CSS_SRI}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SWAGGER_UI_CDN}/swagger-ui-bundle.js"
 integrity="{SWAGGER_UI_JS_SRI}" crossorigin="anonymous"></script>
<script>
window.ui = SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""


def openapi_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    async def document(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document())

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    return [
        route("/api/openapi.json", {"GET": document}),
        route("/api/docs", {"GET": docs}),
    ]
