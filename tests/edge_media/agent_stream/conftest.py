"""A node with its agent-stream listener, the control plane at moto, and the providers' fakes.

Everything runs on loopback in the test's loop: the node (`running_gateway`), a Twilio-stream
echo bot, the fake provider clients (tests/support/fake_provider.py), and the fake Cloudonix and
Twilio REST APIs (threads). A test provisions an account, an agent and a telephony
configuration, then streams into ``stream_url``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from edge_media.node import EdgeNode
from shared.dynamo.repository import Repository
from shared.models import (
    Account,
    AccountLimits,
    Agent,
    TelephonyConfig,
    TelephonyProvider,
)
from tests.interop.gateway import running_gateway
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest

HANDSHAKE_SECONDS = 0.5  # the setting, short so the 4408 test is quick


@dataclass
class StreamTenant:
    account: Account
    agent: Agent

    @property
    def agent_uuid(self) -> uuid.UUID:
        return self.agent.agent_uuid


def provision(
    repo: Repository,
    socket_url: str,
    *,
    provider: TelephonyProvider | None = TelephonyProvider.CLOUDONIX,
    limits: AccountLimits | None = None,
    require_token: bool = False,
    **account: Any,
) -> StreamTenant:
    acct = Account(
        name="stream test",
        webhook_secret=secrets.token_hex(16),
        limits=limits or AccountLimits(),
        **account,
    )
    repo.put(acct)
    agent = Agent(
        account_id=acct.account_id,
        name="agent",
        socket_url=socket_url,
        require_token=require_token,
    )
    repo.put(agent)
    if provider is TelephonyProvider.CLOUDONIX:
        repo.put(
            TelephonyConfig(
                account_id=acct.account_id,
                provider=provider,
                domain=DOMAIN,
                bearer_token=TOKEN,
            )
        )
    elif provider is TelephonyProvider.TWILIO:
        repo.put(
            TelephonyConfig(
                account_id=acct.account_id,
                provider=provider,
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
            )
        )
    return StreamTenant(acct, agent)


def stream_base(node: EdgeNode) -> str:
    assert node.streams is not None
    host, port = node.streams.local_addr
    return f"ws://{host}:{port}"


@pytest.fixture
def cloudonix() -> Iterator[FakeCloudonix]:
    with FakeCloudonix() as fake:
        fake.add_domain(DOMAIN, TOKEN)
        yield fake


@pytest.fixture
def twilio_rest() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as fake:
        fake.add_account(ACCOUNT_SID, AUTH_TOKEN)
        yield fake


@pytest.fixture
async def gateway(
    aws: Any, cloudonix: FakeCloudonix, twilio_rest: FakeTwilioRest
) -> AsyncIterator[EdgeNode]:
    async with running_gateway(
        cloudonix_api_base=cloudonix.base_url,
        twilio_api_base=twilio_rest.base_url,
        stream_handshake_seconds=HANDSHAKE_SECONDS,
    ) as node:
        yield node
