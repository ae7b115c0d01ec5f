"""``agera stream-token AGENT_UUID``: print a token for an agent that requires one.

The token is what `shared.stream_tokens` checks on the node: the expiry and an HMAC of the agent
UUID keyed with the account's webhook secret. The command reads the agent and its account from
the table the settings name (``AGERA_TABLE_NAME``, with the usual AWS credentials, or the local
stack's ``AWS_ENDPOINT_URL``), so the secret never passes through a command line. Without table
access, a customer's own code can mint the same token from the webhook secret (docs in
PROTOCOL.md, "Agent streams").
"""

from __future__ import annotations

import sys
import time
import uuid
from urllib.parse import quote

import boto3

from shared.dynamo.repository import Repository
from shared.models import Account, Agent
from shared.secret_box import SecretBox
from shared.settings import Settings
from shared.stream_tokens import MAX_TTL_SECONDS, make_stream_token


def main(agent: str, ttl: int, base_url: str | None) -> int:
    try:
        agent_uuid = uuid.UUID(agent)
    except ValueError:
        print(f"agera stream-token: {agent!r} is not an agent UUID", file=sys.stderr)
        return 2
    if not 0 < ttl <= MAX_TTL_SECONDS:
        print(f"agera stream-token: --ttl must be 1..{MAX_TTL_SECONDS} seconds", file=sys.stderr)
        return 2
    settings = Settings.load()
    # The account's webhook secret is stored sealed (docs/secrets.md): kms:Decrypt is needed.
    repo = Repository(
        boto3.client("dynamodb"),
        settings.table_name,
        secrets=SecretBox.from_settings(settings, lambda: boto3.client("kms")),
    )
    found = repo.get(Agent, agent_uuid, consistent=True)
    account = repo.get(Account, found.account_id) if found is not None else None
    if found is None or account is None:
        print(f"agera stream-token: no agent {agent_uuid}", file=sys.stderr)
        return 2
    expires = int(time.time()) + ttl
    token = make_stream_token(account.webhook_secret, agent_uuid, expires)
    print(token)
    path = f"/api/v1/agent-stream/{agent_uuid}?provider=cloudonix&Domain=...&token={quote(token)}"
    where = (base_url or "wss://<edge>").rstrip("/")
    print(f"# expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}", file=sys.stderr)
    print(f"# v1 URL: {where}{path}", file=sys.stderr)
    print('# Twilio: <Parameter name="token" value="..."/> inside <Stream>', file=sys.stderr)
    if not found.require_token:
        print(
            "# note: this agent does not require a token (require_token is false)", file=sys.stderr
        )
    return 0
