"""Model ↔ item round trips for every entity, keys, conditions and cursors (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from boto3.dynamodb.types import TypeDeserializer

from shared.dynamo import mapping
from shared.models import (
    Account,
    Agent,
    ApiKey,
    Call,
    CallStatus,
    Direction,
    EdgeNode,
    Extension,
    Number,
    Registration,
    Route,
    TelephonyConfig,
    Trunk,
)
from shared.provisioning import new_account, new_key_record

NOW = datetime(2026, 11, 21, 9, 30, 15, 123000, tzinfo=UTC)


def entities() -> list:
    account = new_account("Acme", webhook_url="https://hooks.example.com/agera")
    account.elevenlabs.api_key = "xi-secret"
    key = new_key_record(account.account_id, "ci").record
    return [
        account,
        key,
        Number(number="+55 11 99999-9999", account_id="acc_1", route=Route(socket_url="vapi&a-1")),
        Extension(
            account_id="acc_1",
            extension="101",
            sip_username="alice",
            realm="agera",
            ha1_md5="0" * 32,
            ha1_sha256="f" * 64,
            route=Route(webhook_url="https://example.com/route"),
        ),
        Registration(
            account_id="acc_1",
            extension="101",
            contact="sip:alice@127.0.0.1:5070;transport=udp",
            source="127.0.0.1:5070",
            node_id="node-1",
            expires_at=NOW + timedelta(seconds=3600),
        ),
        Trunk(account_id="acc_1", name="carrier", host="127.0.0.1", inbound_sources=["10.0.0.1"]),
        Agent(account_id="acc_1", name="support", socket_url="wss://bot.example.com/s"),
        TelephonyConfig(
            account_id="acc_1", provider="cloudonix", domain="x.example", bearer_token="t"
        ),
        Call(
            account_id="acc_1",
            direction=Direction.INBOUND,
            from_number="+15005550006",
            to_number="+15005550001",
            stats={"packets_in": 1500, "jitter_ms": 1.25, "nested": {"p99": 0.5}},
        ),
        EdgeNode(
            node_id="node-1",
            queue_url="http://127.0.0.1/q",
            sip_address="127.0.0.1:5060",
            expires_at=NOW + timedelta(seconds=90),
        ),
    ]


@pytest.mark.parametrize("entity", entities(), ids=lambda e: type(e).__name__)
def test_round_trip(entity) -> None:
    item = mapping.to_item(entity)
    back = mapping.from_item(type(entity), item)
    if hasattr(entity, "expires_at"):  # TTL is stored as epoch seconds
        assert back.expires_at == entity.expires_at.replace(microsecond=0)
        back = back.model_copy(update={"expires_at": entity.expires_at})
    assert back == entity


def test_item_layout_of_a_call() -> None:
    call = Call(
        call_uuid=uuid.UUID("d3b07384-d113-444c-9b1d-1234567890ab"),
        account_id="acc_9",
        direction=Direction.OUTBOUND,
        from_number="5511888888888",
        to_number="5511999999999",
        created_at=NOW,
        stats={"jitter_ms": 1.5},
    )
    item = mapping.to_item(call)
    assert item["pk"] == {"S": "CALL#d3b07384-d113-444c-9b1d-1234567890ab"}
    assert item["sk"] == {"S": "CALL"}
    assert item["gsi1pk"] == {"S": "ACCOUNT#acc_9#CALLS"}
    assert item["gsi1sk"] == {"S": "2026-11-21T09:30:15.123Z#d3b07384-d113-444c-9b1d-1234567890ab"}
    assert item["entity"] == {"S": "call"}
    assert item["stats"] == {"M": {"jitter_ms": {"N": "1.5"}}}
    assert "answered_at" not in item  # None is not stored


def test_ttl_is_epoch_seconds() -> None:
    node = EdgeNode(node_id="n", queue_url="q", sip_address="a", expires_at=NOW)
    assert mapping.to_item(node)["expires_at"] == {"N": str(int(NOW.timestamp()))}


def test_key_builders() -> None:
    assert mapping.key(Number, "+5511") == {"pk": {"S": "NUMBER#+5511"}, "sk": {"S": "NUMBER"}}
    assert mapping.key(Trunk, "acc_1", "trk_2") == {
        "pk": {"S": "ACCOUNT#acc_1"},
        "sk": {"S": "TRUNK#trk_2"},
    }
    assert mapping.key(Extension, "acc_1", "101")["pk"] == {"S": "EXT#acc_1#101"}


def test_from_item_refuses_another_kind() -> None:
    item = mapping.to_item(entities()[0])
    with pytest.raises(mapping.MappingError, match="is a 'account', not a 'call'"):
        mapping.from_item(Call, item)


def test_from_item_reports_corrupt_items() -> None:
    item = mapping.to_item(entities()[2])
    item["route"] = {"M": {}}
    with pytest.raises(mapping.MappingError, match="does not fit Number"):
        mapping.from_item(Number, item)


def test_put_create_only_has_a_condition() -> None:
    request = mapping.put_request("t", entities()[0], create_only=True)
    assert request["ConditionExpression"] == "attribute_not_exists(pk)"
    assert "ConditionExpression" not in mapping.put_request("t", entities()[0])


def test_update_request_uses_names_for_reserved_words_and_removes_none() -> None:
    request = mapping.update_request(
        "t", mapping.key(Call, "u"), {"status": "ringing", "duration": None}
    )
    assert request["UpdateExpression"] == "SET #f0 = :v0 REMOVE #f1"
    assert request["ExpressionAttributeNames"] == {"#f0": "status", "#f1": "duration"}
    assert request["ExpressionAttributeValues"] == {":v0": {"S": "ringing"}}
    assert request["ConditionExpression"] == "attribute_exists(pk)"


def test_transition_only_allows_lower_ranks() -> None:
    request = mapping.call_transition_request(
        "t", "u", CallStatus.IN_PROGRESS, {}, event_id="evt_1", now=NOW
    )
    values = request["ExpressionAttributeValues"]
    allowed = {v["S"] for k, v in values.items() if k.startswith(":s")}
    assert allowed == {"queued", "ringing"}
    assert "NOT contains(#ae, :eid)" in request["ConditionExpression"]
    assert request["UpdateExpression"].endswith("ADD #ae :eids")
    terminal = mapping.call_transition_request("t", "u", CallStatus.COMPLETED, {}, now=NOW)
    allowed = {
        v["S"] for k, v in terminal["ExpressionAttributeValues"].items() if k.startswith(":s")
    }
    assert allowed == {"queued", "ringing", "in-progress"}
    same = mapping.call_transition_request(
        "t", "u", CallStatus.IN_PROGRESS, {}, allow_same=True, now=NOW
    )
    allowed = {v["S"] for k, v in same["ExpressionAttributeValues"].items() if k.startswith(":s")}
    assert allowed == {"queued", "ringing", "in-progress"}


def test_cursor_round_trip_and_refusal() -> None:
    last = {
        "pk": {"S": "CALL#1"},
        "sk": {"S": "CALL"},
        "gsi1pk": {"S": "ACCOUNT#a#CALLS"},
        "gsi1sk": {"S": "2026#1"},
    }
    cursor = mapping.encode_cursor(last)
    assert mapping.decode_cursor(cursor, "ACCOUNT#a#CALLS") == last
    with pytest.raises(mapping.CursorError):
        mapping.decode_cursor(cursor, "ACCOUNT#b#CALLS")  # another account's listing
    for bad in ("", "!!!", "bm90IGpzb24", mapping.encode_cursor({"pk": {"S": "x"}})):
        with pytest.raises(mapping.CursorError):
            mapping.decode_cursor(bad, "ACCOUNT#a#CALLS")


def test_query_request_filters_and_limits() -> None:
    request = mapping.query_partition_request(
        "t", "ACCOUNT#a#CALLS", limit=10, filters={"status": "completed"}
    )
    assert request["ScanIndexForward"] is False
    assert request["FilterExpression"] == "#q0 = :q0"
    assert request["ExpressionAttributeNames"] == {"#q0": "status"}
    with pytest.raises(ValueError, match="limit"):
        mapping.query_partition_request("t", "p", limit=0)


def test_serialized_floats_are_exact_decimals() -> None:
    value = TypeDeserializer().deserialize(mapping.serialize(0.1))
    assert str(value) == "0.1"


def test_every_stored_model_has_a_spec() -> None:
    for model in (Account, ApiKey, Number, Extension, Registration, Trunk, Agent, Call, EdgeNode):
        assert mapping.spec_for(model).model is model


def test_sort_prefix_narrows_a_shared_listing_and_binds_its_cursor() -> None:
    request = mapping.query_partition_request("t", "TRUNKS", sort_prefix="acc_a#")
    assert request["KeyConditionExpression"] == "gsi1pk = :p AND begins_with(gsi1sk, :sp)"
    assert request["ExpressionAttributeValues"][":sp"] == {"S": "acc_a#"}
    last = {
        "pk": {"S": "ACCOUNT#acc_a"},
        "sk": {"S": "TRUNK#trk_1"},
        "gsi1pk": {"S": "TRUNKS"},
        "gsi1sk": {"S": "acc_a#trk_1"},
    }
    cursor = mapping.encode_cursor(last)
    resumed = mapping.query_partition_request("t", "TRUNKS", cursor=cursor, sort_prefix="acc_a#")
    assert resumed["ExclusiveStartKey"] == last
    with pytest.raises(mapping.CursorError):  # another account's trunk listing
        mapping.query_partition_request("t", "TRUNKS", cursor=cursor, sort_prefix="acc_b#")


def test_sip_user_index_item() -> None:
    assert mapping.sip_user_key("alice") == {"pk": {"S": "SIPUSER#alice"}, "sk": {"S": "SIPUSER"}}
    assert mapping.sip_user_item("alice", "acc_1", "101") == {
        "pk": {"S": "SIPUSER#alice"},
        "sk": {"S": "SIPUSER"},
        "entity": {"S": "sipuser"},
        "account_id": {"S": "acc_1"},
        "extension": {"S": "101"},
    }
