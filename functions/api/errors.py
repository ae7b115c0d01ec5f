"""One error shape for every 4xx/5xx: ``{"error": {"code", "message", "field"?}}``.

API users script against ``code`` and show ``message``; ``field`` names the request field at fault
(dotted for nested fields), so a client can highlight it. Validation errors from pydantic are turned
into the same shape, first error first, with a message written for people.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

logger = logging.getLogger("agera.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}
# On a 503 caused by an AWS service refusing a request: such refusals (throttling, a queue briefly
# unavailable) usually clear within a second, and a client told so retries instead of giving up.
RETRY_AFTER = {"Retry-After": "1"}


class ApiError(Exception):
    """An expected failure with the status, a stable code and a message for the API user."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def aws_reason(exc: Exception) -> str:
    """The AWS error code of a failed boto3 call, for a 503's message.

    The code (``ThrottlingException``, ``AWS.SimpleQueueService.NonExistentQueue``) tells the
    client whether a retry can help; the full message may carry ARNs and account ids it must not see.
    """
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def validation_error(exc: ValidationError) -> ApiError:
    """The first pydantic error as an ApiError naming the field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "field required"
    return ApiError(422, "validation_error", f"{field}: {message}" if field else message, field)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.field), exc.status, headers=exc.headers
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return await _api_error(request, validation_error(exc))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal error"), 500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    ValidationError: _validation_error,
    Exception: _internal_error,
}
