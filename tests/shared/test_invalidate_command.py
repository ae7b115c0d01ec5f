"""The Invalidate command: JSON round trip, its bounds, and what a node that predates it does."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.commands import (
    MAX_INVALIDATE_KEYS,
    Command,
    Hangup,
    Invalidate,
    Originate,
    parse_command,
)

CALL = uuid.UUID("d3b07384-d113-444c-9b1d-1234567890ab")


@pytest.mark.parametrize(
    "command",
    [
        Invalidate(account_id="acc_1", kind="number", keys=["+15551230000"]),
        Invalidate(account_id="acc_1", kind="extension", keys=["101", "102"]),
        Invalidate(account_id="acc_1", kind="agent", keys=[str(CALL)]),
        Invalidate(account_id="acc_1", kind="account"),
    ],
    ids=lambda c: c.kind,
)
def test_an_invalidate_round_trips_through_json(command: Invalidate) -> None:
    body = command.model_dump_json()
    parsed = parse_command(body)
    assert parsed == command and type(parsed) is Invalidate
    assert parsed.id.startswith("cmd_") and parsed.version == 1
    data = json.loads(body)
    assert list(data) == ["id", "version", "account_id", "issued_at", "type", "kind", "keys"]
    assert data["type"] == "invalidate"
    assert "call_uuid" not in data  # it is about no call


def test_the_call_commands_keep_their_fields_in_their_order() -> None:
    hangup = json.loads(Hangup(call_uuid=CALL, account_id="a").model_dump_json())
    assert list(hangup) == [
        "id",
        "version",
        "call_uuid",
        "account_id",
        "issued_at",
        "type",
        "cause",
    ]
    originate = Originate(call_uuid=CALL, account_id="a", destination_number="+15551230000")
    assert list(json.loads(originate.model_dump_json()))[:6] == [
        "id",
        "version",
        "call_uuid",
        "account_id",
        "issued_at",
        "type",
    ]


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"kind": "number", "keys": []}, "keys: at least one number is needed"),
        ({"kind": "number", "keys": [""]}, "keys.0"),
        ({"kind": "number", "keys": ["x" * 129]}, "keys.0"),
        ({"kind": "number", "keys": ["1"] * (MAX_INVALIDATE_KEYS + 1)}, "keys"),
        ({"kind": "trunk", "keys": ["t"]}, "kind"),
        ({"kind": "account", "call_uuid": str(CALL)}, "call_uuid"),
    ],
    ids=["no-keys", "empty-key", "long-key", "too-many", "unknown-kind", "call-uuid"],
)
def test_a_malformed_invalidate_is_refused(fields: dict[str, object], where: str) -> None:
    body = json.dumps({"type": "invalidate", "account_id": "acc_1", **fields})
    with pytest.raises(ValidationError) as info:
        parse_command(body)
    error = info.value.errors()[0]
    located = ".".join(str(part) for part in error["loc"][1:])  # after the union member
    assert where in f"{located}: {error['msg']}"


def test_a_node_that_predates_invalidate_refuses_it_as_invalid() -> None:
    """An old node's parser knew only the call commands: the type is an unknown tag, which its
    consumer drops (deletes) as an invalid command; the TTL then bounds its staleness."""
    before = TypeAdapter(Command)  # the union a node without Invalidate parsed with
    body = Invalidate(account_id="acc_1", kind="account").model_dump_json()
    with pytest.raises(ValidationError) as info:
        before.validate_json(body)
    assert info.value.errors()[0]["type"] == "union_tag_invalid"
