"""Per-node capacity (edge_media/node_capacity.py): the window's rules alone, then a real node
whose one call slot is held by an agent stream — SIP gets 503, a second stream 503, health says
full, a queued originate stays on the queue — and everything is taken again once the stream ends.

Here because the stream fixtures (moto, the fake Cloudonix) are this package's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import httpx
import pytest

from edge_media.node_capacity import LagWindow, NodeCapacity, worker_share
from shared.dynamo.repository import Repository
from shared.models import Call, CallStatus
from tests.edge_media.agent_stream.conftest import provision, stream_base
from tests.edge_media.agent_stream.test_stream_calls import v2_url
from tests.edge_media.agent_stream.test_stream_limits import dial
from tests.interop.gateway import (
    add_number,
    originate_for,
    queued_call,
    running_gateway,
    send_command,
    started,
)
from tests.support.fake_cloudonix import DOMAIN, FakeCloudonix
from tests.support.fake_provider import HandshakeRefused, ProviderStream
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio


# ----------------------------------------------------------------------------- the rules


def test_lag_window_trips_on_a_sustained_lag_not_on_one_pause() -> None:
    window = LagWindow(limit_ms=50)
    for _ in range(19):
        assert not window.observe(200)  # less than a second of samples decides nothing
    assert window.observe(200) and window.over
    calm = LagWindow(limit_ms=50)
    for lag in [1.0] * 19 + [900.0]:  # one GC pause among calm probes
        calm.observe(lag)
    assert not calm.over


def test_lag_window_clears_only_below_half_the_limit() -> None:
    window = LagWindow(limit_ms=50)
    for _ in range(20):
        window.observe(80)
    assert window.over
    for _ in range(20):
        window.observe(30)  # under the limit but above half: still full (no flapping)
    assert window.over
    changed = [window.observe(10) for _ in range(20)]
    assert not window.over and changed.count(True) == 1


def test_worker_shares_add_up_and_never_read_as_unlimited() -> None:
    assert [worker_share(10, 4, i) for i in range(4)] == [3, 3, 2, 2]
    assert [worker_share(1, 2, i) for i in range(2)] == [1, 1]
    assert worker_share(0, 4, 3) == 0  # no limit stays no limit


def test_max_calls_counts_what_the_node_says_is_in_progress() -> None:
    calls = [0]
    capacity = NodeCapacity(max_calls=2, max_loop_lag_ms=0, calls=lambda: calls[0])
    assert capacity.refuse() is None
    calls[0] = 2
    full = capacity.refuse()
    assert full is not None and full.reason == "node full (2 calls)" and full.retry_after == 5
    assert capacity.refused == 1
    calls[0] = 1
    assert capacity.room() is None


async def test_a_blocked_loop_makes_the_node_refuse_until_it_recovers() -> None:
    capacity = NodeCapacity(max_calls=0, max_loop_lag_ms=20, calls=lambda: 0)
    capacity.start()
    try:
        await asyncio.sleep(0.2)
        assert capacity.room() is None
        for _ in range(22):  # the loop blocked 100 ms in every 110 ms: each probe ~60 ms late
            time.sleep(0.1)  # noqa: ASYNC251 - the blocking is what is tested
            await asyncio.sleep(0.01)
        full = capacity.room()
        assert full is not None and "event loop lag" in full.reason
        await asyncio.sleep(1.5)  # a second of calm probes flushes the window
        assert capacity.room() is None
    finally:
        await capacity.stop()


# ------------------------------------------------------------------------- a real node


async def record(repo: Repository, call: Call) -> Call:
    found = await anyio.to_thread.run_sync(lambda: repo.get(Call, call.call_uuid, consistent=True))
    assert found is not None
    return found


async def test_a_full_node_refuses_sip_and_streams_and_leaves_originates_queued(
    aws: Any, repo: Repository, cloudonix: FakeCloudonix
) -> None:
    cloudonix.add_session("cap-1", DOMAIN)
    cloudonix.add_session("cap-2", DOMAIN)
    async with (
        running_gateway(max_calls=1, cloudonix_api_base=cloudonix.base_url) as node,
        StrictTwilioBot() as bot,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        tenant = provision(repo, bot.url)
        health_url = stream_base(node).replace("ws://", "http://") + "/health"
        holder = ProviderStream(v2_url(node, "cloudonix", tenant.agent_uuid), session="cap-1")
        await holder.open()
        await started(bot)

        health = await http.get(health_url)
        body = health.json()
        assert (health.status_code, body["status"], body["max_calls"]) == (503, "full", 1)
        number = add_number(repo, tenant.account, socket_url=bot.url)
        busy = await dial(node, number)
        second = ProviderStream(v2_url(node, "cloudonix", tenant.agent_uuid), session="cap-2")
        with pytest.raises(HandshakeRefused) as refused:
            await second.open()
        queued = queued_call(repo, tenant.account, socket_url=bot.url)
        await send_command(node.settings.originate_queue_url, originate_for(queued))
        await asyncio.sleep(2.5)  # beyond two originate polls (originate_poll_seconds=1)
        waiting = await record(repo, queued)

        await holder.stop()
        await holder.wait_closed()
        with anyio.fail_after(15):  # room again: the queued originate is taken now
            while (taken := await record(repo, queued)).node_id is None:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        # The originate holds the one slot while it is being placed; it fails (no trunk), and
        # only then is the node empty again.
        with anyio.fail_after(15):
            while not (await record(repo, queued)).status.terminal:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        with anyio.fail_after(5):
            while (after := await http.get(health_url)).status_code != 200:  # noqa: ASYNC110
                await anyio.sleep(0.1)
    assert (busy.answered, busy.status) == (False, 503), busy
    assert refused.value.status == 503
    assert (waiting.status, waiting.node_id) == (CallStatus.QUEUED, None)
    assert taken.node_id == node.node_id
    assert (after.status_code, after.json()["status"]) == (200, "ok")
    assert node.capacity.refused >= 2  # the INVITE and the stream
