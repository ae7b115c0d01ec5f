"""One count for every kind of call: while an agent stream holds the account's only slot, a SIP
call to the account's number gets 486 and an originate through the API 429; when the stream
ends, both go through again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edge_media.node import EdgeNode
from functions.api.app import create_app
from shared.dynamo.repository import Repository
from shared.models import (
    Account,
    AccountLimits,
    Agent,
    Number,
    Route,
    TelephonyConfig,
    TelephonyProvider,
)
from shared.provisioning import create_account_with_key, new_account
from tests.edge_media.agent_stream.test_stream_calls import v2_url
from tests.interop.gateway import new_number, node_address, phone_call, started
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_provider import ProviderStream
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio


async def dial(node: EdgeNode, number: str) -> Any:
    uri = f"sip:{number}@{node_address(node)}"
    return await phone_call(uri, hangup_after=0.5, answer_timeout=5)


async def originate(api: httpx.AsyncClient, key: str, to: str) -> httpx.Response:
    return await api.post(
        "/api/calls",
        headers={"X-API-KEY": key},
        json={
            "caller_id_number": "+15550001111",
            "destination_number": to,
            "socket_url": "ws://127.0.0.1:9/bot",
        },
    )


async def test_a_stream_holding_the_only_slot_refuses_sip_calls_and_originates(
    gateway: EdgeNode, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("limit-1", DOMAIN)
    async with StrictTwilioBot() as bot:
        account = new_account("one slot", limits=AccountLimits(max_concurrent_calls=1))
        issued = create_account_with_key(repo, account)
        agent = Agent(account_id=account.account_id, name="a", socket_url=bot.url)
        repo.put(agent)
        repo.put(
            TelephonyConfig(
                account_id=account.account_id,
                provider=TelephonyProvider.CLOUDONIX,
                domain=DOMAIN,
                bearer_token=TOKEN,
            )
        )
        number = new_number()
        repo.put(
            Number(number=number, account_id=account.account_id, route=Route(socket_url=bot.url))
        )
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as api:
            stream = ProviderStream(
                v2_url(gateway, "cloudonix", agent.agent_uuid), session="limit-1"
            )
            await stream.open()
            await started(bot)
            busy = await dial(gateway, number)
            refused = await originate(api, issued.key, "+15550002222")
            await stream.stop()
            await stream.wait_closed()
            await wait_free(repo, account)
            free = await dial(gateway, number)
            await wait_free(repo, account)  # the SIP call's slot is given back as it ends
            accepted = await originate(api, issued.key, "+15550003333")
    assert (busy.answered, busy.status) == (False, 486), busy
    assert refused.status_code == 429, refused.text
    assert refused.headers["Retry-After"].isdigit()
    assert "limits.max_concurrent_calls" in refused.json()["error"]["message"]
    assert free.answered, free
    assert accepted.status_code == 201, accepted.text


async def wait_free(repo: Repository, account: Account, seconds: float = 10.0) -> None:
    """Until the account's live-call count is back to 0 (the stream's record is written first)."""
    import anyio

    key = {"pk": {"S": f"ACCOUNT#{account.account_id}"}, "sk": {"S": "SLOTS"}}
    with anyio.fail_after(seconds):
        while True:
            item = repo.client.get_item(TableName=repo.table, Key=key, ConsistentRead=True)
            if int(item.get("Item", {}).get("active", {}).get("N", "0")) == 0:
                return
            await anyio.sleep(0.05)
