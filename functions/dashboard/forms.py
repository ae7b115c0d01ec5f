"""Reading submitted forms: trimmed text, optional text, checkboxes.

HTML forms send every field as a string, an empty string for an empty input; the API's bodies
want absent, ``null`` or a value. These helpers make that translation the same on every page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from functions.api.pagination import ListQuery


def text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional(form: Mapping[str, Any], name: str) -> str | None:
    """The trimmed value, or None for an empty input (the API's "clear")."""
    return text(form, name) or None


def checked(form: Mapping[str, Any], name: str) -> bool:
    return name in form and form.get(name) not in ("", "0", "off", None)


def values(form: Mapping[str, Any]) -> dict[str, str]:
    """The form as plain strings, to show back after a refused submission (never secrets:
    callers drop password and key fields before rendering)."""
    return {name: value for name, value in form.items() if isinstance(value, str)}


def list_query(request: Request, limit: int = 50) -> ListQuery:
    """The page of a listing from ``?cursor=`` (one from another listing is the API's 422)."""
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and len(cursor) > 2048:
        cursor = None
    return ListQuery(limit=limit, cursor=cursor)


FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 200


async def read(request: Request) -> dict[str, str]:
    """The submitted ``application/x-www-form-urlencoded`` form (a repeated field keeps its last
    value); any other body reads as an empty form.

    Parsed with the standard library rather than Starlette's ``request.form()``, which needs the
    python-multipart package for a format the dashboard never sends (its forms upload no files).
    The body is already size-limited by the API's ``BodyLimitMiddleware``; Starlette caches it
    on the request, so the CSRF check and the endpoint read it once.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM_MEDIA_TYPE:
        return {}
    raw = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:  # more fields than any dashboard form has
        return {}
    return dict(pairs)
