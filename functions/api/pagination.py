"""Cursor pagination shared by every listing: ``?limit=&cursor=`` in, ``{items, next_cursor}`` out.

Cursors are opaque to clients (they wrap DynamoDB's LastEvaluatedKey, see
``shared.dynamo.mapping.encode_cursor``) and are bound to the listing that issued them, so a cursor
from one account's listing cannot page through another's. ``next_cursor`` is null on the last page.
A page can hold fewer than ``limit`` items when a filter applies after the read; the cursor still
moves on, so clients loop until ``next_cursor`` is null, never until a short page.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from functions.api.schemas import RequestBody
from shared.dynamo.mapping import MAX_PAGE_SIZE

DEFAULT_PAGE_SIZE = 50
MAX_CURSOR_LENGTH = 2048


class ListQuery(RequestBody):
    """Query parameters of a plain listing."""

    limit: int = Field(
        DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Items per page (1-100)."
    )
    cursor: str | None = Field(
        None,
        max_length=MAX_CURSOR_LENGTH,
        description="The next_cursor of the previous page; omit for the first page.",
    )


def page_model(item: type[BaseModel], name: str) -> type[BaseModel]:
    """A ``{items: [item], next_cursor}`` response model named ``name`` (its OpenAPI schema)."""
    fields: dict[str, Any] = {
        "items": (list[item], ...),  # type: ignore[valid-type]
        "next_cursor": (
            str | None,
            Field(None, description="Pass as ?cursor= to get the next page; null on the last."),
        ),
    }
    model: type[BaseModel] = create_model(name, __doc__=f"A page of {item.__name__}.", **fields)
    return model


def page_body(items: list[BaseModel], next_cursor: str | None) -> dict[str, Any]:
    return {
        "items": [item.model_dump(mode="json") for item in items],
        "next_cursor": next_cursor,
    }
