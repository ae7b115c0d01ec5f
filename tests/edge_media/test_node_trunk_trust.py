"""Per-trunk trust on a node with its control plane (moto): a trunk's source reaches only its
own account's numbers, and the trunk book's changes apply at once.

The carrier is a hand-written UDP peer on 127.0.0.2 (a trunk's inbound source); loopback is
not trusted, so nothing else lets it in. Accepted calls go to a StrictTwilioBot.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_media.node import EdgeNode
from edge_media.sip.message import SipRequest, SipResponse
from shared.models import Trunk
from tests.edge_media.test_node import OFFER, Peer, ack_for, in_dialog
from tests.interop.gateway import make_tenant, running_gateway
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

CARRIER_A = "127.0.0.2"  # account A's trunk
CARRIER_B = "127.0.0.4"  # account B's trunk, added while the node runs


@contextlib.asynccontextmanager
async def carrier(host: str) -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=(host, 0))
    try:
        yield protocol
    finally:
        transport.close()


def invite(peer: Peer, host: str, number: str) -> SipRequest:
    return SipRequest.build(
        "INVITE",
        f"sip:{number}@127.0.0.1",
        from_=f"<sip:+15550100@{host}>;tag={secrets.token_hex(4)}",
        to=f"<sip:{number}@127.0.0.1>",
        call_id=secrets.token_hex(8),
        cseq=1,
        via=f"SIP/2.0/UDP {host}:{peer.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        contact=f"<sip:carrier@{host}:{peer.port}>",
        body=OFFER.format(port=peer.port + 2, direction="sendrecv").encode(),
        content_type="application/sdp",
    )


def add_trunk(repo: Any, account_id: str, source: str) -> None:
    repo.put(
        Trunk(
            account_id=account_id,
            name="carrier",
            host="127.0.0.1",
            inbound_sources=[f"{source}/32"],
        )
    )


async def refused_as_not_owned(peer: Peer, request: SipRequest, node: EdgeNode) -> SipResponse:
    peer.send(request, node.endpoint.local_addr)
    refused = await peer.response(403)
    assert refused.call_id == request.call_id
    assert "trunk does not own the number" in refused.reason
    assert "does not own this number" in refused.headers.get("warning", "")
    assert refused.headers.get("reason", "").startswith("Q.850;cause=21")
    return refused


async def test_a_trunk_source_reaches_only_its_own_accounts_numbers(aws: Any, repo: Any) -> None:
    async with StrictTwilioBot() as bot:
        a = make_tenant(repo, socket_url=bot.url)
        b = make_tenant(repo, socket_url=bot.url)
        assert a.number is not None and b.number is not None
        add_trunk(repo, a.account.account_id, CARRIER_A)
        async with (
            running_gateway(trust_loopback=False) as node,
            carrier(CARRIER_A) as peer,
            carrier(CARRIER_B) as other,
        ):
            node_addr = node.endpoint.local_addr
            # Another account's number: 403, with no digest challenge and no bot.
            await refused_as_not_owned(peer, invite(peer, CARRIER_A, b.number), node)
            assert bot.sessions == []

            # Its own account's number: the call goes through to the bot.
            request = invite(peer, CARRIER_A, a.number)
            peer.send(request, node_addr)
            ok = await peer.response(200)
            peer.send(ack_for(peer, request, ok), node_addr)
            session = await bot.next_session(5.0)
            assert session is not None
            peer.send(in_dialog(peer, "BYE", request, ok, 2), node_addr)
            await peer.response(200, "BYE")

            # Not a trunk source yet: it must authenticate like anyone else.
            other.send(invite(other, CARRIER_B, b.number), node_addr)
            await other.response(407)
            # B's trunk appears in the table; the trunk book's reload applies it at once.
            add_trunk(repo, b.account.account_id, CARRIER_B)
            assert node._control is not None
            await node._control.trunks.load()
            assert node.reachable_accounts(CARRIER_B) == frozenset({b.account.account_id})
            assert node.reachable_accounts(CARRIER_A) == frozenset({a.account.account_id})
            await refused_as_not_owned(other, invite(other, CARRIER_B, a.number), node)
            assert node.ua is not None
            assert await node.ua.wait_idle(5.0)
