"""shared/dynamo/sealing.py and the secret inventory in shared/dynamo/mapping.py: pure, no AWS."""

from __future__ import annotations

import copy
import re

import pytest
from pydantic import BaseModel

from shared.dynamo import mapping
from shared.dynamo.mapping import MappingError
from shared.dynamo.sealing import (
    field_secrets,
    item_secrets,
    with_field_values,
    with_item_values,
)
from shared.models import (
    Account,
    ElevenLabsSettings,
    Extension,
    TelephonyConfig,
    TelephonyProvider,
    Trunk,
    VapiSettings,
)
from shared.provisioning import new_account
from shared.secret_box import PREFIX, SecretRef

# Every stored field that lets its reader act as someone: the complete inventory.
INVENTORY = {
    Account: {"webhook_secret", "elevenlabs.api_key", "vapi.api_key"},
    Trunk: {"password"},
    TelephonyConfig: {"bearer_token", "auth_token"},
    Extension: {"ha1_md5", "ha1_sha256"},
}
# Fields whose names look secret but are not: a key's SHA-256 cannot be used to authenticate, and
# require_token is a flag.
NOT_SECRETS = {"ApiKey.key_hash", "Agent.require_token"}
SECRET_NAME = re.compile(r"password|secret|token|api_key|ha1|hash|credential|private")


def secretive_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = field.annotation if isinstance(field.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            found |= secretive_fields(nested, f"{path}.")
        elif SECRET_NAME.search(name):
            found.add(path)
    return found


def test_the_declared_secrets_are_the_inventory() -> None:
    declared = {model: set(spec.secrets) for model, spec in mapping.SPECS.items() if spec.secrets}
    assert declared == INVENTORY


def test_no_stored_field_that_looks_secret_is_left_out() -> None:
    """A new field named like a secret must be declared (or listed here as harmless)."""
    for model in mapping.SPECS:
        declared = set(mapping.spec_for(model).secrets)
        undeclared = {
            path
            for path in secretive_fields(model)
            if path not in declared and f"{model.__name__}.{path}" not in NOT_SECRETS
        }
        assert undeclared == set(), model.__name__


def an_account() -> Account:
    return new_account(
        "Acme",
        elevenlabs=ElevenLabsSettings(api_key="el-key-123456", agent_id="agent_1"),
        vapi=VapiSettings(assistant_id="asst_1"),
    )


def test_item_secrets_finds_top_level_and_nested_values_present() -> None:
    account = an_account()
    item = mapping.to_item(account)
    found = item_secrets(item, mapping.spec_for(Account).secrets)
    pk = f"ACCOUNT#{account.account_id}"
    assert found == [
        (SecretRef(pk, "ACCOUNT", "webhook_secret"), account.webhook_secret),
        (SecretRef(pk, "ACCOUNT", "elevenlabs.api_key"), "el-key-123456"),
    ]  # vapi has no api_key: nothing to seal


def test_with_item_values_replaces_by_path_and_leaves_the_input_alone() -> None:
    item = mapping.to_item(an_account())
    before = copy.deepcopy(item)
    out = with_item_values(item, {"elevenlabs.api_key": "X", "webhook_secret": "Y"})
    assert item == before
    assert out["elevenlabs"]["M"]["api_key"] == {"S": "X"}
    assert out["elevenlabs"]["M"]["agent_id"] == before["elevenlabs"]["M"]["agent_id"]
    assert out["webhook_secret"] == {"S": "Y"}
    assert out["vapi"] is item["vapi"]  # untouched branches are shared, not copied


def test_field_secrets_of_an_update() -> None:
    key = mapping.key(Account, "acc_1")
    fields = {
        "vapi": {"api_key": "v-key", "assistant_id": None},
        "elevenlabs": {"api_key": None},
        "name": "n",
    }
    found = field_secrets(key, fields, mapping.spec_for(Account).secrets)
    assert found == [(SecretRef("ACCOUNT#acc_1", "ACCOUNT", "vapi.api_key"), "v-key")]
    out = with_field_values(fields, {"vapi.api_key": "sealed"})
    assert out["vapi"] == {"api_key": "sealed", "assistant_id": None}
    assert fields["vapi"]["api_key"] == "v-key"
    assert field_secrets(key, {"vapi": None}, ("vapi.api_key",)) == []


def test_from_item_refuses_a_sealed_secret_it_cannot_open() -> None:
    """A path around the repositories must never hand a sealed string out as a key."""
    config = TelephonyConfig(
        account_id="acc_1", provider=TelephonyProvider.TWILIO, account_sid="AC" + "0" * 32,
        auth_token="plain-token",
    )  # fmt: skip
    item = mapping.to_item(config)
    assert mapping.from_item(TelephonyConfig, item) == config  # plaintext still reads
    sealed = with_item_values(item, {"auth_token": PREFIX + "AAAA:AAAA:AAAA"})
    with pytest.raises(MappingError, match=r"auth_token of ACCOUNT#acc_1 / TELCO#.* is sealed"):
        mapping.from_item(TelephonyConfig, sealed)
