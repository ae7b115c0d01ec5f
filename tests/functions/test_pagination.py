"""Listing query and page models."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from functions.api.pagination import DEFAULT_PAGE_SIZE, ListQuery, page_body, page_model


class Item(BaseModel):
    name: str


def test_list_query_defaults_and_bounds() -> None:
    assert ListQuery().model_dump() == {"limit": DEFAULT_PAGE_SIZE, "cursor": None}
    assert ListQuery.model_validate({"limit": "100"}).limit == 100
    for bad in ({"limit": "0"}, {"limit": "101"}, {"page": "2"}):
        with pytest.raises(ValidationError):
            ListQuery.model_validate(bad)


def test_page_model_and_body() -> None:
    ItemList = page_model(Item, "ItemList")
    schema = ItemList.model_json_schema()
    assert schema["title"] == "ItemList"
    assert schema["required"] == ["items"]
    body = page_body([Item(name="a")], "next")
    assert body == {"items": [{"name": "a"}], "next_cursor": "next"}
    assert ItemList.model_validate(body).model_dump() == body
