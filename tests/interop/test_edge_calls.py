"""The node's user agent driven from the test (in this process) against sipp peers.

Outbound calls, transfers and authentication need someone to act on the node's side (the API
and bots will, issue 5); here the test does, through the same `UserAgent` calls, while sipp
runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from edge_media.node import EdgeNode
from edge_media.sip.extensions import StaticDirectory, extension_auth
from edge_media.sip.refer_transferor import TransferState
from edge_media.sip.transfer import send_refer
from shared.settings import Settings
from tests.interop.peers import HOST, Peers, free_port, free_udp_range

pytestmark = pytest.mark.anyio

SIPP_WAIT_S = 30.0


async def start_node(
    *, trust_loopback: bool = True, directory: StaticDirectory | None = None, **settings: object
) -> EdgeNode:
    low, high = free_udp_range(64)
    config = Settings.load(
        {},
        sip_host=HOST,
        sip_port=free_port(),
        ws_port=0,
        rtp_port_min=low,
        rtp_port_max=high,
        trust_loopback=trust_loopback,
        **settings,
    )
    node = EdgeNode(config, directory=directory)
    await node.start()
    return node


@pytest.fixture
async def node() -> AsyncIterator[EdgeNode]:
    edge = await start_node()
    yield edge
    await edge.stop(drain_seconds=0)


def callee_addr(sipp: object) -> tuple[str, int]:
    return (HOST, sipp.local_port)  # type: ignore[attr-defined]


async def test_outbound_call_answered_by_sipp_then_hung_up(peers: Peers, node: EdgeNode) -> None:
    callee = peers.sipp("uas_answer.xml", calls=1)
    await anyio.to_thread.run_sync(callee.start)
    assert node.ua is not None
    call = node.ua.invite(
        f"sip:+15550199@{callee.address}", addr=callee_addr(callee), from_user="+15550100"
    )
    assert await call.wait_answered()
    await anyio.sleep(1.0)
    await call.hangup()
    result = await anyio.to_thread.run_sync(callee.wait, SIPP_WAIT_S)
    assert result.ok, result.describe()
    assert call.media is not None and call.media.stats()["packets_in"] > 20  # sipp played audio


async def test_outbound_call_cancelled_while_ringing(peers: Peers, node: EdgeNode) -> None:
    callee = peers.sipp("uas_ring_cancel.xml", calls=1)
    await anyio.to_thread.run_sync(callee.start)
    assert node.ua is not None
    call = node.ua.invite(
        f"sip:+15550199@{callee.address}", addr=callee_addr(callee), from_user="+15550100"
    )
    assert await call.wait_ringing()
    await call.hangup("ORIGINATOR_CANCEL")
    result = await anyio.to_thread.run_sync(callee.wait, SIPP_WAIT_S)
    assert result.ok, result.describe()
    assert call.end is not None and call.end.cause == "ORIGINATOR_CANCEL"


async def test_outbound_call_logs_in_to_a_trunk_that_challenges(
    peers: Peers, node: EdgeNode
) -> None:
    callee = peers.sipp("uas_auth.xml", calls=1, keys={"user": "gateway", "pass": "s3cret"})
    await anyio.to_thread.run_sync(callee.start)
    assert node.ua is not None
    call = node.ua.invite(
        f"sip:+15550199@{callee.address}",
        addr=callee_addr(callee),
        from_user="+15550100",
        credentials=("gateway", "s3cret"),
    )
    assert await call.wait_answered(), call.end
    await call.hangup()
    result = await anyio.to_thread.run_sync(callee.wait, SIPP_WAIT_S)
    assert result.ok, result.describe()


async def test_inbound_digest_auth_for_an_extension(peers: Peers) -> None:
    directory = StaticDirectory()
    # sipp 3.6 answers only the first challenge and knows only MD5: the default order.
    edge = await start_node(trust_loopback=False, directory=directory)
    directory.add(extension_auth("acc_1", "201", "carrier", "s3cret", edge.settings.sip_realm))
    try:
        caller = peers.sipp(
            "uac_auth.xml",
            remote=f"{HOST}:{edge.endpoint.local_addr[1]}",
            service="echo",
            auth=("carrier", "s3cret"),
            duration_ms=1000,
            calls=1,
        )
        result = await anyio.to_thread.run_sync(caller.run)
        assert result.ok, result.describe()
        statuses = [m.status for m in result.messages if m.is_response]
        assert statuses[:1] == [407] or 407 in statuses
    finally:
        await edge.stop(drain_seconds=0)


async def test_blind_transfer_by_refer(peers: Peers, node: EdgeNode) -> None:
    caller = peers.sipp(
        "uac_refer_accept.xml",
        remote=f"{HOST}:{node.endpoint.local_addr[1]}",
        service="echo",
        calls=1,
    )
    async with anyio.create_task_group() as group:
        outcome: dict[str, object] = {}

        async def run_caller() -> None:
            outcome["result"] = await anyio.to_thread.run_sync(caller.run)

        group.start_soon(run_caller)
        assert node.ua is not None
        with anyio.fail_after(SIPP_WAIT_S):
            while not node.ua._active:  # noqa: ASYNC110 - the call arrives from another process
                await anyio.sleep(0.05)
        call = next(iter(node.ua._active))
        assert await call.wait_answered()
        state = await send_refer(call, f"sip:agent@{HOST}:5092")
        assert state is TransferState.SUCCEEDED
        await call.hangup()
    result = outcome["result"]
    assert result.ok, result.describe()  # type: ignore[attr-defined]
    assert any("sip:agent@127.0.0.1:5092" in line for line in result.log_lines)  # type: ignore[attr-defined]
