"""The local stack's default account and keys, so a new user can make a request at once.

Keys are random unless ``AGERA_DEV_API_KEY`` / ``AGERA_DEV_ADMIN_KEY`` fix them (scripts and CI
want the same key every run). The admin key belongs to the same account with the ``admin`` role.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.dynamo.repository import Repository
from shared.models import Account, ApiKeyRole
from shared.provisioning import create_account_with_key, new_account, new_key_record

DEFAULT_ACCOUNT_NAME = "Local development"


@dataclass(frozen=True)
class Bootstrap:
    account: Account
    api_key: str
    admin_key: str


def bootstrap_default_account(
    repo: Repository,
    *,
    api_key: str | None = None,
    admin_key: str | None = None,
    webhook_url: str | None = None,
    socket_url: str | None = None,
) -> Bootstrap:
    account = new_account(DEFAULT_ACCOUNT_NAME, webhook_url=webhook_url, socket_url=socket_url)
    issued = create_account_with_key(repo, account, "default", ApiKeyRole.ACCOUNT, api_key)
    admin = new_key_record(account.account_id, "admin", ApiKeyRole.ADMIN, admin_key)
    repo.put(admin.record, create_only=True)
    return Bootstrap(account, issued.key, admin.key)
