"""The three ElevenLabs target forms from each place a route can come from.

Forms: ``elevenlabs`` with the account's key (a signed URL per call), ``elevenlabs`` without a key
(the public agent's URL), ``elevenlabs&<agent_id>`` (another agent than the account's, signed
with the account's key). Sources: a number's route, a routing webhook's ``connect.socket_url``,
an originate's ``socket_url`` (``POST /api/calls``), and a redirect's ``media_server``. Each
call is real (sipp) and short: it is done once the fake agent has the caller's audio. Every
source and every form is on the wire once (a source with one form each); how each form builds
its URL and first message is tested in tests/edge_media/drivers/test_elevenlabs_driver.py.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import boto3
import pytest

from edge_media.node import EdgeNode
from shared.commands import Hangup, Redirect
from shared.models import Account, Call, CallStatus
from tests.edge_media.routing.routing_peer import Reply, WebhookPeer
from tests.interop.gateway import (
    Tenant,
    add_number,
    command_queue,
    custom_parameters,
    originate_for,
    queued_call,
    read_events,
    running_gateway,
    send_command,
    started,
    trunk_peer,
    wait_record,
)
from tests.interop.native_agents import hang_up, place_call
from tests.interop.peers import Peers
from tests.support.fake_elevenlabs import DEFAULT_API_KEY, FakeElevenLabs, FakeSession
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

ACCOUNT_AGENT = "agent_of_the_account"
OTHER_AGENT = "agent_named_in_the_target"


@dataclass(frozen=True)
class Form:
    name: str
    target: str
    key: bool  # the account has an ElevenLabs API key
    agent: str  # the agent the conversation must be with

    @property
    def account_settings(self) -> dict[str, str]:
        settings = {"agent_id": ACCOUNT_AGENT}
        if self.key:
            settings["api_key"] = DEFAULT_API_KEY
        return settings


FORMS = (
    Form("signed", "elevenlabs", key=True, agent=ACCOUNT_AGENT),
    Form("public", "elevenlabs", key=False, agent=ACCOUNT_AGENT),
    Form("other agent", f"elevenlabs&{OTHER_AGENT}", key=True, agent=OTHER_AGENT),
)


def new_account(repo: Any, form: Form, **fields: Any) -> Account:
    account = Account(
        name=f"route test: {form.name}",
        webhook_secret=secrets.token_hex(16),
        elevenlabs=form.account_settings,
        **fields,
    )
    repo.put(account)
    return account


def check_conversation(fake: FakeElevenLabs, session: FakeSession, form: Form) -> None:
    """The conversation is with the form's agent, reached the form's way."""
    assert session.violations == [], session.violations
    assert session.agent_id == form.agent
    assert session.signed is form.key
    rest = [(r.agent_id, r.key_valid, r.status) for r in fake.rest_requests]
    assert rest == ([(form.agent, True, 200)] if form.key else []), rest
    assert not session.api_key_on_upgrade


def check_record(record: Call, form: Form) -> None:
    assert record.status is CallStatus.COMPLETED
    last = record.media[-1]
    assert (last.driver, last.target, last.failed_step) == ("elevenlabs", form.target, None)
    assert last.provider_ids.get("conversation_id", "").startswith("conv_")


@asynccontextmanager
async def agent_and_node(**settings: Any) -> AsyncIterator[tuple[FakeElevenLabs, EdgeNode]]:
    async with (
        FakeElevenLabs(public=True, agent_id=None, echo=True) as fake,
        running_gateway(elevenlabs_api_base=fake.api_base, **settings) as node,
    ):
        yield fake, node


async def conversation(fake: FakeElevenLabs) -> tuple[FakeSession, uuid.UUID]:
    """The agent's session once it has half a second of the caller, and the call's uuid."""
    session = await fake.next_session(10)
    await session.wait_audio(4000, 10)
    assert session.first_message is not None
    return session, uuid.UUID(session.first_message["dynamic_variables"]["call_uuid"])


async def inbound_call(
    peers: Peers,
    repo: Any,
    form: Form,
    account: Account,
    number: str,
    fake: FakeElevenLabs,
    node: EdgeNode,
    before: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    placed = await place_call(peers, node, repo, Tenant(account, number), form.name)
    if before is not None:
        await before()
    session, call_uuid = await conversation(fake)
    done = await hang_up(placed, call_uuid)
    assert done.result.ok, done.result.describe()
    check_conversation(fake, session, form)
    check_record(done.record, form)


@pytest.mark.parametrize("form", FORMS[0:1], ids=lambda f: f.name)
async def test_a_number_routed_to_elevenlabs(peers: Peers, aws: Any, repo: Any, form: Form) -> None:
    async with agent_and_node() as (fake, node):
        account = new_account(repo, form)
        number = add_number(repo, account, socket_url=form.target)
        await inbound_call(peers, repo, form, account, number, fake, node)


@pytest.mark.parametrize("form", FORMS[1:2], ids=lambda f: f.name)
async def test_a_routing_webhook_connecting_to_elevenlabs(
    peers: Peers, aws: Any, repo: Any, form: Form
) -> None:
    account = new_account(repo, form)
    with WebhookPeer(account.webhook_secret) as hook:
        hook.reply = Reply.json({"action": "connect", "socket_url": form.target})
        number = add_number(repo, account, webhook_url=hook.url("/route"))
        async with agent_and_node() as (fake, node):
            await inbound_call(peers, repo, form, account, number, fake, node)
    assert len(hook.received) == 1


@pytest.mark.parametrize("form", FORMS[2:3], ids=lambda f: f.name)
async def test_an_originate_to_elevenlabs(peers: Peers, aws: Any, repo: Any, form: Form) -> None:
    account = new_account(repo, form)
    trunk = await trunk_peer(peers, repo, account, "uas_answer.xml")  # answers, talks
    call = queued_call(repo, account, socket_url=form.target)
    queue = boto3.client("sqs").create_queue(
        QueueName=f"agera-test-originate-{uuid.uuid4().hex[:12]}"
    )["QueueUrl"]
    async with agent_and_node(originate_queue_url=queue) as (fake, node):
        await send_command(queue, originate_for(call))
        session, call_uuid = await conversation(fake)
        assert call_uuid == call.call_uuid
        variables = session.first_message["dynamic_variables"] if session.first_message else {}
        assert variables["direction"] == "outbound"
        await send_command(
            command_queue(node),
            Hangup(call_uuid=call_uuid, account_id=account.account_id),
        )
        record = await wait_record(repo, str(call_uuid), seconds=15)
        events = await read_events(node, str(call_uuid))
    await anyio.to_thread.run_sync(trunk.wait, 15.0)
    check_conversation(fake, session, form)
    check_record(record, form)
    assert [e["type"] for e in events][-1] == "call.completed"


@pytest.mark.parametrize("form", FORMS[0:1], ids=lambda f: f.name)
async def test_a_redirect_to_elevenlabs(peers: Peers, aws: Any, repo: Any, form: Form) -> None:
    async with StrictTwilioBot(echo=True) as bot, agent_and_node() as (fake, node):
        account = new_account(repo, form)
        number = add_number(repo, account, socket_url=bot.url)

        async def redirect() -> None:
            session = await started(bot, 10)
            await send_command(
                command_queue(node),
                Redirect(
                    call_uuid=uuid.UUID(custom_parameters(session)["call_uuid"]),
                    account_id=account.account_id,
                    media_server=form.target,
                ),
            )

        await inbound_call(peers, repo, form, account, number, fake, node, before=redirect)
