"""POST /api/accounts (admin): an account and its first key, or 403 for keys without the role."""

from __future__ import annotations

import pytest

from shared.apikeys import hash_api_key
from shared.models import Account, ApiKey, ApiKeyRole


def test_admin_creates_an_account_whose_key_works(front, admin_tenant, api_ctx) -> None:
    reply = front.request(
        "POST",
        "/api/accounts",
        key=admin_tenant.key,
        body={"name": "Acme", "webhook_url": "https://hooks.example.com/x", "key_name": "prod"},
    )
    assert reply.status == 201, reply.content
    body = reply.json()
    assert set(body) == {"account", "api_key"}
    account_id = body["account"]["account_id"]
    assert account_id != admin_tenant.account_id
    assert (body["account"]["name"], body["account"]["webhook_url"]) == (
        "Acme",
        "https://hooks.example.com/x",
    )
    assert "webhook_secret" not in body["account"]
    key = body["api_key"]
    assert (key["name"], key["role"]) == ("prod", "account")
    stored = api_ctx.repo.get(Account, account_id)
    assert stored is not None and stored.webhook_secret.startswith("whsec_")
    record = api_ctx.repo.get(ApiKey, hash_api_key(key["key"]))
    assert record is not None and record.account_id == account_id
    assert record.role is ApiKeyRole.ACCOUNT
    mine = front.request("GET", "/api/account", key=key["key"])
    assert mine.status == 200 and mine.json()["account_id"] == account_id


def test_keys_without_the_admin_role_get_403_and_nothing_is_made(front, tenant, api_ctx) -> None:
    reply = front.request("POST", "/api/accounts", key=tenant.key, body={"name": "Sneaky"})
    assert reply.status == 403
    assert reply.error == {
        "code": "forbidden",
        "message": "this endpoint needs an API key with the admin role",
    }
    listed = api_ctx.dynamodb.query(
        TableName=api_ctx.settings.table_name,
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :p",
        FilterExpression="#n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":p": {"S": "ACCOUNTS"}, ":n": {"S": "Sneaky"}},
    )
    assert listed["Items"] == []


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "validation_error", "name"),
        ({"name": "x", "plan": "gold"}, "validation_error", "plan"),
        ({"name": "x", "socket_url": "ws://192.168.0.2/bot"}, "unsafe_url", "socket_url"),
        ({"name": "x", "key_name": ""}, "validation_error", "key_name"),
    ],
    ids=["no-name", "unknown", "private-socket", "empty-key-name"],
)
def test_errors_name_the_field(front, admin_tenant, body, code, field) -> None:
    reply = front.request("POST", "/api/accounts", key=admin_tenant.key, body=body)
    assert reply.status == 422, reply.content
    assert (reply.error["code"], reply.error["field"]) == (code, field)


def test_sample_event(run_sample, admin_tenant, tenant) -> None:
    refused = run_sample("accounts_create.json", tenant.key)
    assert refused.status == 403
    created = run_sample("accounts_create.json", admin_tenant.key)
    assert created.status == 201, created.content
    assert created.json()["account"]["name"] == "Acme Support"
    assert created.json()["api_key"]["name"] == "production"
