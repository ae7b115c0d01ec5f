"""Routing writes tell the live edge nodes: an Invalidate lands on each live node's own queue (a
real moto SQS queue named by a seeded EdgeNode item), and a queue that fails never fails the
request."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import boto3

from functions.api import account as account_api
from functions.api import accounts as accounts_api
from functions.api import agents as agent_api
from functions.api import extensions as ext_api
from functions.api.auth import Principal
from functions.api.node_notify import Notified, invalidate_routes, live_nodes
from functions.context import Context
from shared.clock import utc_now
from shared.commands import Invalidate, parse_command
from shared.models import ApiKeyRole, EdgeNode, Number, Route

BOT = "wss://bot.example.com/media"
OTHER_BOT = "wss://bot.example.com/other"


def unique_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def a_node(ctx: Context, *, queue_url: str | None = None, lapsed: bool = False) -> EdgeNode:
    """A node's heartbeat item, with a real queue unless ``queue_url`` is given."""
    node_id = f"test-{uuid.uuid4().hex[:12]}"
    if queue_url is None:
        queue_url = boto3.client("sqs").create_queue(QueueName=f"agera-node-{node_id}")["QueueUrl"]
    now = utc_now()
    expires = now - timedelta(seconds=1) if lapsed else now + timedelta(seconds=60)
    node = EdgeNode(
        node_id=node_id, queue_url=queue_url, sip_address="127.0.0.1:5060", expires_at=expires
    )
    ctx.repo.put(node)
    return node


def received(node: EdgeNode) -> list[Invalidate]:
    """Every command on the node's queue (read and deleted), all of them Invalidate."""
    sqs = boto3.client("sqs")
    found: list[Invalidate] = []
    while True:
        reply = sqs.receive_message(QueueUrl=node.queue_url, MaxNumberOfMessages=10)
        messages = reply.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            sqs.delete_message(QueueUrl=node.queue_url, ReceiptHandle=message["ReceiptHandle"])
            command = parse_command(message["Body"])
            assert isinstance(command, Invalidate), command
            found.append(command)


def kinds(commands: list[Invalidate]) -> list[tuple[str, list[str]]]:
    """What the commands said, in a stable order (a standard queue need not keep the sent one)."""
    return sorted((c.kind, c.keys) for c in commands)


def principal_of(tenant: Any) -> Principal:
    return Principal(tenant.account_id, ApiKeyRole.ACCOUNT, tenant.key_id)


def test_updating_a_number_puts_an_invalidate_on_each_live_nodes_queue(
    front, tenant, api_ctx: Context
) -> None:
    live, also_live = a_node(api_ctx), a_node(api_ctx)
    lapsed = a_node(api_ctx, lapsed=True)
    number = unique_number()
    created = front.request(
        "POST",
        "/api/numbers",
        key=tenant.key,
        body={"number": number, "route": {"socket_url": BOT}},
    )
    assert created.status == 201, created.content
    assert kinds(received(live)) == [("number", [number])]  # a node may have cached the miss
    received(also_live)

    patched = front.request(
        "PATCH",
        f"/api/numbers/{number[1:]}",  # however the path spells it, the key is E.164
        key=tenant.key,
        body={"route": {"socket_url": OTHER_BOT}},
    )
    assert patched.status == 200, patched.content
    for node in (live, also_live):
        [command] = received(node)
        assert (command.kind, command.keys, command.account_id) == (
            "number",
            [number],
            tenant.account_id,
        )
    assert received(lapsed) == []  # a lapsed heartbeat: nobody reads that queue

    deleted = front.request("DELETE", f"/api/numbers/{number}", key=tenant.key)
    assert deleted.status == 204
    assert kinds(received(live)) == [("number", [number])]


def test_a_queue_that_fails_does_not_fail_the_request(
    front, tenant, api_ctx: Context, log_output: io.StringIO
) -> None:
    gone = a_node(api_ctx)
    boto3.client("sqs").delete_queue(QueueUrl=gone.queue_url)  # the node's queue is gone
    live = a_node(api_ctx)
    number = unique_number()
    api_ctx.repo.put(
        Number(number=number, account_id=tenant.account_id, route=Route(socket_url=OTHER_BOT))
    )
    patched = front.request(
        "PATCH", f"/api/numbers/{number}", key=tenant.key, body={"route": {"socket_url": BOT}}
    )
    assert patched.status == 200, patched.content
    assert patched.json()["route"]["socket_url"] == BOT
    assert kinds(received(live)) == [("number", [number])]  # the other nodes still hear of it
    lines = [
        json.loads(line) for line in log_output.getvalue().splitlines() if line.startswith("{")
    ]
    [failed] = [line for line in lines if line.get("node_id") == gone.node_id]
    assert failed["level"] == "WARNING" and "not queued" in failed["message"]
    assert failed["reason"] and failed["kind"] == "number"
    assert gone.queue_url not in json.dumps(failed)  # the error's code only, not its message


def test_listing_the_nodes_failing_is_counted_and_never_raised(api_ctx: Context) -> None:
    broken = Context(api_ctx.settings.model_copy(update={"table_name": "no-such-table"}))
    assert invalidate_routes(broken, "acc_1", "account") == Notified(sent=0, errors=1)


def test_only_nodes_with_a_live_heartbeat_are_listed(api_ctx: Context) -> None:
    live = a_node(api_ctx, queue_url="https://sqs.invalid/live")
    lapsed = a_node(api_ctx, queue_url="https://sqs.invalid/lapsed", lapsed=True)
    listed = {node.node_id for node in live_nodes(api_ctx)}
    assert live.node_id in listed and lapsed.node_id not in listed


def test_extensions_agents_and_accounts_invalidate_their_kind(api_ctx: Context, tenant) -> None:
    node = a_node(api_ctx)
    me = principal_of(tenant)
    ext = ext_api.ExtensionCreate.model_validate(
        {"extension": "101", "sip_username": f"u{uuid.uuid4().hex[:12]}", "password": "x" * 16}
    )
    ext_api.create_extension(api_ctx, me, ext)
    ext_api.update_extension(
        api_ctx, me, "101", ext_api.ExtensionUpdate.model_validate({"route": {"socket_url": BOT}})
    )
    ext_api.delete_extension(api_ctx, me, "101")
    agent = agent_api.create_agent(
        api_ctx, me, agent_api.AgentCreate.model_validate({"name": "A", "socket_url": BOT})
    )
    agent_id = str(agent.agent_uuid)
    agent_api.update_agent(
        api_ctx, me, agent_id, agent_api.AgentUpdate.model_validate({"socket_url": OTHER_BOT})
    )
    agent_api.delete_agent(api_ctx, me, agent_id)
    account_api.update_account(
        api_ctx, me, account_api.AccountUpdate.model_validate({"socket_url": BOT})
    )
    account_api.rotate_webhook_secret(api_ctx, me)
    accounts_api.update_account(
        api_ctx,
        tenant.account_id,
        accounts_api.AccountAdminUpdate.model_validate({"status": "suspended"}),
    )
    commands = received(node)
    assert kinds(commands) == [
        ("account", []),  # settings
        ("account", []),  # the webhook secret signs the node's routing webhooks
        ("account", []),  # the suspension
        ("agent", [agent_id]),  # update, delete; not create: a new uuid is cached nowhere
        ("agent", [agent_id]),
        ("extension", ["101"]),  # create: a node may have cached "no such extension"
        ("extension", ["101"]),
        ("extension", ["101"]),
    ]
    assert {c.account_id for c in commands} == {tenant.account_id}
