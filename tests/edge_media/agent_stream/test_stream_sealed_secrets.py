"""The node reads sealed secrets (docs/secrets.md) through its own wiring (node_control.py's
AsyncRepository with an AsyncSecretBox): an account and provider configuration written by a
sealing repository, as the API writes them, admit a stream only if the node opened the Cloudonix
bearer token (the fake answers 401 to any other) and the webhook secret (which signs the
stream token)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edge_media.node import EdgeNode
from shared.dynamo.repository import Repository
from shared.models import CallStatus
from shared.stream_tokens import make_stream_token
from tests.edge_media.agent_stream.conftest import provision
from tests.edge_media.agent_stream.test_stream_calls import record_of, v1_url
from tests.interop.gateway import started
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_provider import ProviderStream
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio


async def test_a_stream_is_admitted_with_secrets_stored_sealed(
    gateway: EdgeNode, sealed_repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("sealed-1", DOMAIN)
    async with StrictTwilioBot() as bot:
        tenant = provision(sealed_repo, bot.url, require_token=True)
        raw: Any = sealed_repo.client.scan(TableName=sealed_repo.table)["Items"]
        stored = repr(raw)
        token = make_stream_token(
            tenant.account.webhook_secret, tenant.agent_uuid, int(time.time()) + 600
        )
        stream = ProviderStream(
            v1_url(gateway, tenant.agent_uuid) + f"&token={token}", session="sealed-1"
        )
        await stream.open()
        await started(bot)
        await stream.stop()
        call = await record_of(sealed_repo, tenant.account.account_id)
    assert TOKEN not in stored and tenant.account.webhook_secret not in stored
    assert "agera:enc:v1:" in stored
    assert call.status is CallStatus.COMPLETED
    checks = [r for r in cloudonix.requests if r.path.endswith("/sessions/sealed-1")]
    assert checks and all(r.authorization == f"Bearer {TOKEN}" for r in checks)
