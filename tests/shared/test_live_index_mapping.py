"""The sparse live index in the item mapping: who is in it, and which writes take a call out."""

from __future__ import annotations

import pytest

from shared.clock import utc_now
from shared.dynamo import mapping
from shared.models import Call, CallStatus, Direction


def call(**fields: object) -> Call:
    values: dict[str, object] = {
        "account_id": "acc_1",
        "direction": Direction.INBOUND,
        "from_number": "+15005550006",
        "to_number": "+15005550001",
    }
    return Call(**{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "indexed"),
    [
        ({"node_id": "n1", "status": CallStatus.RINGING}, True),
        ({"node_id": "n1", "status": CallStatus.IN_PROGRESS}, True),
        ({"node_id": "n1", "status": CallStatus.COMPLETED}, False),
        ({"status": CallStatus.QUEUED}, False),  # the API's originate: no node owns it yet
    ],
)
def test_only_node_owned_unended_calls_are_indexed(
    fields: dict[str, object], indexed: bool
) -> None:
    entity = call(**fields)
    item = mapping.to_item(entity)
    assert (item.get(mapping.LIVE_NODE_ATTRIBUTE) == {"S": "n1"}) is indexed
    assert mapping.from_item(Call, item) == entity  # bookkeeping, not a field of the call


def test_a_terminal_transition_leaves_the_index_unless_kept() -> None:
    now = utc_now()
    ended = mapping.call_transition_request(
        "t", "u", CallStatus.COMPLETED, {"duration": 3}, now=now
    )
    names = ended["ExpressionAttributeNames"]
    removed = ended["UpdateExpression"].split("REMOVE ", 1)[1].split()[0]
    assert names[removed] == mapping.LIVE_NODE_ATTRIBUTE
    kept = mapping.call_transition_request(
        "t", "u", CallStatus.COMPLETED, {"duration": 3}, keep_live=True, now=now
    )
    assert "REMOVE" not in kept["UpdateExpression"]
    ringing = mapping.call_transition_request(
        "t", "u", CallStatus.RINGING, {}, event_id="e", now=now
    )
    assert "REMOVE" not in ringing["UpdateExpression"]
    assert ringing["UpdateExpression"].endswith("ADD #ae :eids")
