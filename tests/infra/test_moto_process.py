"""The local stack's moto child (infra/moto_process.py): a TransactWriteItems that fails leaves
every item it named as it was, now that only those items are backed up (not the whole table)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra.local_aws import LocalResources

pytestmark = pytest.mark.xdist_group("moto")


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _get(client: Any, table: str, pk: str, sk: str) -> dict[str, Any] | None:
    item = client.get_item(TableName=table, Key=_key(pk, sk), ConsistentRead=True).get("Item")
    return item


def test_a_cancelled_transaction_puts_back_exactly_its_own_items(
    aws: LocalResources, session: Any
) -> None:
    client = session.client("dynamodb")
    table = aws.table_name
    for n in range(50):  # other items, which the transaction never names
        client.put_item(TableName=table, Item={**_key("OTHER", f"{n:03d}"), "n": {"N": str(n)}})
    client.put_item(TableName=table, Item={**_key("TX", "COUNTER"), "active": {"N": "1"}})
    client.put_item(TableName=table, Item={**_key("TX", "GONE"), "v": {"S": "kept"}})

    with pytest.raises(ClientError) as refused:
        client.transact_write_items(
            TransactItems=[
                {  # changes an existing item in place ...
                    "Update": {
                        "TableName": table,
                        "Key": _key("TX", "COUNTER"),
                        "UpdateExpression": "ADD active :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {  # ... creates one ...
                    "Put": {"TableName": table, "Item": {**_key("TX", "NEW"), "v": {"S": "x"}}}
                },
                {"Delete": {"TableName": table, "Key": _key("TX", "GONE")}},  # ... deletes one
                {  # ... and then fails
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": _key("TX", "GUARD"),  # absent: the condition fails
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _get(client, table, "TX", "COUNTER") == {**_key("TX", "COUNTER"), "active": {"N": "1"}}
    assert _get(client, table, "TX", "NEW") is None
    assert _get(client, table, "TX", "GONE") == {**_key("TX", "GONE"), "v": {"S": "kept"}}
    assert _get(client, table, "OTHER", "049") == {**_key("OTHER", "049"), "n": {"N": "49"}}

    client.transact_write_items(  # and one that succeeds writes all of it
        TransactItems=[
            {
                "Update": {
                    "TableName": table,
                    "Key": _key("TX", "COUNTER"),
                    "UpdateExpression": "ADD active :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
            {"Put": {"TableName": table, "Item": {**_key("TX", "NEW"), "v": {"S": "x"}}}},
        ]
    )
    assert _get(client, table, "TX", "COUNTER") == {**_key("TX", "COUNTER"), "active": {"N": "2"}}
    assert _get(client, table, "TX", "NEW") == {**_key("TX", "NEW"), "v": {"S": "x"}}
