"""Request bodies: JSON objects only, each failure a precise 400/415/422 in the error shape."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from functions.api.bodies import parse_json_object, patch_changes
from functions.api.errors import ApiError


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code", "message"),
    [
        (b'{"name": ', {}, 400, "invalid_json", "not valid JSON"),
        (b"[1, 2]", {}, 400, "invalid_json", "must be a JSON object"),
        (b"", {}, 400, "invalid_json", "empty"),
        (b'{"name": NaN}', {}, 400, "invalid_json", "NaN is not valid JSON"),
        (b"[" * 60000, {}, 400, "invalid_json", "nested too deeply"),
        (b"\xff\xfe{}", {}, 400, "invalid_json", "not valid JSON"),
        (
            b"name=x",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
            "Content-Type: application/json",
        ),
    ],
    ids=["truncated", "array", "empty", "nan", "deep", "not-utf8", "form"],
)
def test_bad_bodies(front, tenant, raw, headers, status, code, message) -> None:
    reply = front.request("POST", "/api/keys", key=tenant.key, raw=raw, headers=headers)
    assert reply.status == status, reply.content
    assert reply.error["code"] == code
    assert message in reply.error["message"]


def test_json_suffix_media_types_and_charset_are_accepted(front, tenant) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        reply = front.request(
            "PATCH",
            "/api/account",
            key=tenant.key,
            raw=b'{"name": "Merged"}',
            headers={"Content-Type": content_type},
        )
        assert reply.status == 200, (content_type, reply.content)


def test_parse_json_object_without_content_type_is_lenient() -> None:
    assert parse_json_object(b'{"a": 1}', None) == {"a": 1}
    with pytest.raises(ApiError) as caught:
        parse_json_object(b'{"a": 1}', "text/plain")
    assert caught.value.status == 415


class Update(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    note: str | None = None


def test_patch_changes_distinguishes_absent_from_null() -> None:
    assert patch_changes(Update.model_validate({})) == {}
    assert patch_changes(Update.model_validate({"note": None})) == {"note": None}
    assert patch_changes(Update.model_validate({"name": "x"}), required={"name"}) == {"name": "x"}
    with pytest.raises(ApiError) as caught:
        patch_changes(Update.model_validate({"name": None}), required={"name"})
    assert (caught.value.status, caught.value.field, caught.value.message) == (
        422,
        "name",
        "name: cannot be null",
    )
