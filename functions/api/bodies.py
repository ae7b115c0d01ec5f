"""Request bodies and query strings into pydantic models, with every failure in the error shape.

Every write handler goes through `read_model`, so the rules are the same everywhere: the body is
JSON (415 otherwise), it parses (400 otherwise, including nesting deep enough to exhaust the
parser), it is one object, and the model's first error names its field (422). Unknown fields fail
because request models forbid extras. The size limit is applied before any of this, by
`functions.api.limits.BodyLimitMiddleware`.

PATCH bodies distinguish "absent" (leave alone) from ``null`` (clear); `patch_changes` turns a
validated update model into that distinction and refuses ``null`` for fields that cannot be empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from functions.api.errors import ApiError, validation_error

M = TypeVar("M", bound=BaseModel)

JSON_MEDIA_TYPE = "application/json"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_MEDIA_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as a JSON object, or an ApiError (415, 400) saying what to send instead."""
    if content_type and not _is_json(content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return data


def validate(model: type[M], data: Any) -> M:
    """``model`` from plain data; the first pydantic error becomes a 422 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def read_model(request: Request, model: type[M]) -> M:
    """The request body validated as ``model``."""
    raw = await request.body()
    return validate(model, parse_json_object(raw, request.headers.get("content-type")))


def read_query(request: Request, model: type[M]) -> M:
    """Query-string parameters validated as ``model`` (a repeated parameter keeps its last value)."""
    return validate(model, dict(request.query_params))


def patch_changes(body: BaseModel, required: Iterable[str] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets, ``None`` meaning "clear"; ``required`` fields refuse null."""
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name in required:
            raise ApiError(422, "validation_error", f"{name}: cannot be null", name)
        changes[name] = value
    return changes
