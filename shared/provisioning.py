"""Creating accounts and API keys, all-or-nothing.

Used by the admin endpoint (``POST /api/accounts``), ``POST /api/keys`` and the local stack's
bootstrap. An account and its first key are written in one DynamoDB transaction, so a failure never
leaves an account nobody can log in to, nor a key pointing at no account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.apikeys import (
    display_prefix,
    generate_api_key,
    generate_webhook_secret,
    hash_api_key,
    key_id_for,
    looks_like_api_key,
)
from shared.models import Account, ApiKey, ApiKeyRole


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key record plus the plaintext key, which exists only until it is shown to its owner."""

    record: ApiKey
    key: str


def new_key_record(
    account_id: str, name: str, role: ApiKeyRole = ApiKeyRole.ACCOUNT, key: str | None = None
) -> IssuedKey:
    """Build (not store) a key; ``key`` fixes the plaintext, e.g. ``AGERA_DEV_API_KEY``."""
    if key is None:
        key = generate_api_key()
    elif not looks_like_api_key(key):
        raise ValueError(
            "an API key must be 'sk_live_' followed by at least 43 URL-safe characters"
        )
    key_hash = hash_api_key(key)
    record = ApiKey(
        key_hash=key_hash,
        key_id=key_id_for(key_hash),
        account_id=account_id,
        prefix=display_prefix(key),
        name=name,
        role=role,
    )
    return IssuedKey(record, key)


def new_account(name: str, **fields: Any) -> Account:
    fields.setdefault("webhook_secret", generate_webhook_secret())
    return Account(name=name, **fields)


def create_account_with_key(
    repo: Any,
    account: Account,
    key_name: str = "default",
    role: ApiKeyRole = ApiKeyRole.ACCOUNT,
    key: str | None = None,
) -> IssuedKey:
    """Store ``account`` and its first key in one transaction; returns the issued key.

    ``repo`` is a sync ``Repository``; raises ``TransactionConflict`` if either already exists.
    """
    issued = new_key_record(account.account_id, key_name, role, key)
    repo.transact([(account, True), (issued.record, True)])
    return issued
