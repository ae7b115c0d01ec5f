"""Secrets at rest through both repositories: what DynamoDB holds is sealed, what comes back is not.

Raw items are read with the plain boto3 client, bypassing our code, so "no plaintext in the table"
is checked on what moto stored.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aioboto3
import pytest

from shared.dynamo import mapping
from shared.dynamo.mapping import MappingError
from shared.dynamo.repository import AsyncRepository, Repository
from shared.models import (
    Account,
    ElevenLabsSettings,
    Entity,
    Extension,
    Number,
    Route,
    TelephonyConfig,
    TelephonyProvider,
    Trunk,
    VapiSettings,
)
from shared.provisioning import create_account_with_key, new_account
from shared.secret_box import PREFIX, AsyncSecretBox, SecretOpenFailed, SecretsNotConfigured
from shared.settings import Settings


def an_account() -> Account:
    return new_account(
        f"Acme {uuid.uuid4().hex[:6]}",
        elevenlabs=ElevenLabsSettings(api_key="el-key-" + uuid.uuid4().hex, agent_id="agent_1"),
        vapi=VapiSettings(api_key="vapi-key-" + uuid.uuid4().hex, assistant_id="asst_1"),
    )


def a_trunk(account_id: str, password: str = "trunk-pass-0123") -> Trunk:
    return Trunk(
        account_id=account_id, name="carrier", host="sip.example.net", username="u",
        password=password,
    )  # fmt: skip


def entities() -> list[tuple[Entity, list[str]]]:
    """One of each entity that holds secrets, with the plaintext of each of its secrets."""
    account = an_account()
    trunk = a_trunk(account.account_id, "trunk-pass-" + uuid.uuid4().hex)
    cloudonix = TelephonyConfig(
        account_id=account.account_id, provider=TelephonyProvider.CLOUDONIX,
        domain="example.cloudonix.net", bearer_token="XI" + uuid.uuid4().hex,
    )  # fmt: skip
    twilio = TelephonyConfig(
        account_id=account.account_id, provider=TelephonyProvider.TWILIO,
        account_sid="AC" + uuid.uuid4().hex, auth_token=uuid.uuid4().hex,
    )  # fmt: skip
    extension = Extension(
        account_id=account.account_id, extension="101", sip_username="u" + uuid.uuid4().hex[:8],
        realm="agera", ha1_md5=uuid.uuid4().hex, ha1_sha256=uuid.uuid4().hex * 2,
    )  # fmt: skip
    assert account.elevenlabs.api_key and account.vapi.api_key and trunk.password
    return [
        (
            account,
            [account.webhook_secret, account.elevenlabs.api_key, account.vapi.api_key],
        ),
        (trunk, [trunk.password]),
        (cloudonix, [cloudonix.bearer_token or ""]),
        (twilio, [twilio.auth_token or ""]),
        (extension, [extension.ha1_md5, extension.ha1_sha256]),
    ]


def ids_of(entity: Entity) -> tuple[str, ...]:
    return {
        Account: lambda: (entity.account_id,),  # type: ignore[attr-defined]
        Trunk: lambda: (entity.account_id, entity.trunk_id),  # type: ignore[attr-defined]
        TelephonyConfig: lambda: (entity.account_id, entity.config_id),  # type: ignore[attr-defined]
        Extension: lambda: (entity.account_id, entity.extension),  # type: ignore[attr-defined]
    }[type(entity)]()


def raw_item(repo: Repository, entity: Entity) -> dict[str, Any]:
    pk, sk = mapping.spec_for(type(entity)).key_of(entity)
    item = repo.client.get_item(
        TableName=repo.table, Key=mapping.key_item(pk, sk), ConsistentRead=True
    )["Item"]
    return dict(item)


def assert_no_plaintext(item: dict[str, Any], secrets: list[str]) -> None:
    text = json.dumps(item)
    for secret in secrets:
        assert secret not in text
    kind = item["entity"]["S"]
    paths = next(spec.secrets for spec in mapping.SPECS.values() if spec.kind == kind)
    assert paths
    for path in paths:
        node: Any = item
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.get(part, {}).get("M", {})
        if leaf in node:
            assert node[leaf]["S"].startswith(PREFIX), path


@pytest.mark.parametrize("index", range(5), ids=["account", "trunk", "cloudonix", "twilio", "ext"])
def test_every_secret_is_sealed_in_the_table_and_opens_on_read(sealed_repo, index: int) -> None:
    entity, secrets = entities()[index]
    sealed_repo.put(entity, create_only=True)
    assert_no_plaintext(raw_item(sealed_repo, entity), secrets)
    assert sealed_repo.get(type(entity), *ids_of(entity), consistent=True) == entity


def test_updates_transactions_and_listings_seal_and_open(sealed_repo) -> None:
    account = an_account()
    create_account_with_key(sealed_repo, account)  # a transaction
    assert_no_plaintext(raw_item(sealed_repo, account), [account.webhook_secret])
    fresh = {"api_key": "vapi-rotated-" + uuid.uuid4().hex, "assistant_id": "asst_2"}
    updated = sealed_repo.update(Account, (account.account_id,), {"vapi": fresh})
    assert updated.vapi.api_key == fresh["api_key"]
    assert_no_plaintext(raw_item(sealed_repo, account), [fresh["api_key"]])
    trunks = [a_trunk(account.account_id, f"pw-{i}-{uuid.uuid4().hex}") for i in range(3)]
    for trunk in trunks:
        sealed_repo.put(trunk)
    page = sealed_repo.list(
        "TRUNKS", Trunk, newest_first=False, sort_prefix=f"{account.account_id}#"
    )
    assert sorted(t.password for t in page.items) == sorted(t.password for t in trunks)


def test_a_sealed_value_copied_to_another_item_fails_without_showing_it(sealed_repo) -> None:
    account = an_account()
    mine, theirs = (
        a_trunk(account.account_id, "mine-" + uuid.uuid4().hex),
        a_trunk(account.account_id),
    )
    sealed_repo.put(mine)
    sealed_repo.put(theirs)
    stolen = raw_item(sealed_repo, mine)["password"]
    pk, sk = mapping.spec_for(Trunk).key_of(theirs)
    sealed_repo.client.update_item(
        TableName=sealed_repo.table,
        Key=mapping.key_item(pk, sk),
        UpdateExpression="SET password = :p",
        ExpressionAttributeValues={":p": stolen},
    )
    with pytest.raises(SecretOpenFailed) as info:
        sealed_repo.get(Trunk, account.account_id, theirs.trunk_id)
    message = str(info.value)
    assert f"password of {pk} / {sk}" in message
    assert mine.password not in message and stolen["S"] not in message


def test_plaintext_from_before_sealing_reads_and_is_sealed_when_written(repo, sealed_repo) -> None:
    account = an_account()
    repo.put(account)  # the `repo` fixture stores secrets unsealed, as older tables hold them
    assert raw_item(repo, account)["webhook_secret"] == {"S": account.webhook_secret}
    assert sealed_repo.get(Account, account.account_id) == account
    sealed_repo.update(Account, (account.account_id,), {"webhook_secret": "whsec_" + "n" * 20})
    item = raw_item(repo, account)
    assert item["webhook_secret"]["S"].startswith(PREFIX)
    assert item["vapi"]["M"]["api_key"] == {"S": account.vapi.api_key}  # not written: as it was
    sealed_repo.put(sealed_repo.get(Account, account.account_id))  # a full write seals it all
    assert_no_plaintext(raw_item(repo, account), [account.vapi.api_key or ""])


def test_without_a_box_no_secret_is_written_and_no_sealed_one_read(aws, session, sealed_repo):
    bare = Repository(session.client("dynamodb"), aws.table_name)
    account = an_account()
    with pytest.raises(SecretsNotConfigured, match="no secret box") as info:
        bare.put(account)
    assert account.webhook_secret not in str(info.value)
    sealed_repo.put(account)
    with pytest.raises(SecretsNotConfigured, match="is sealed"):
        bare.get(Account, account.account_id)
    with pytest.raises(MappingError, match="is sealed"):  # and around the repository
        mapping.from_item(Account, raw_item(bare, account))
    number = Number(number="+1555" + str(uuid.uuid4().int)[:7], account_id=account.account_id,
                    route=Route(socket_url="vapi"))  # fmt: skip
    bare.put(number)  # entities without secrets need no box
    assert bare.get(Number, number.number) == number


@pytest.mark.anyio
async def test_the_edge_reads_secrets_through_the_async_repository(aws, sealed_repo) -> None:
    """What the node does (edge_media/node_control.py): aioboto3 DynamoDB and KMS clients."""
    account = an_account()
    trunk = a_trunk(account.account_id, "edge-" + uuid.uuid4().hex)
    sealed_repo.put(account)
    sealed_repo.put(trunk)
    settings = Settings.load()
    session = aioboto3.Session()
    async with session.client("dynamodb") as dynamodb, session.client("kms") as kms:
        edge = AsyncRepository(
            dynamodb, aws.table_name, secrets=AsyncSecretBox.from_settings(settings, kms)
        )
        assert await edge.get(Account, account.account_id) == account
        page = await edge.list(
            "TRUNKS", Trunk, newest_first=False, sort_prefix=f"{account.account_id}#"
        )
        assert [t.password for t in page.items] == [trunk.password]
        # An edge write of a secret is sealed the same way (the node writes none today).
        other = a_trunk(account.account_id, "async-" + uuid.uuid4().hex)
        await edge.put(other)
        assert_no_plaintext(raw_item(sealed_repo, other), [other.password or ""])
        assert sealed_repo.get(Trunk, account.account_id, other.trunk_id) == other
        bare = AsyncRepository(dynamodb, aws.table_name)
        with pytest.raises(SecretsNotConfigured):
            await bare.get(Trunk, account.account_id, trunk.trunk_id)
