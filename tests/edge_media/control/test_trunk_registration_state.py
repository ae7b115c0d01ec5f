"""The node publishes its trunk registrations in its heartbeat item: real REGISTERs over UDP on
127.0.0.1 to a registrar (our own `Registrar` behind a datagram socket, real digest maths), the
states read back from the EdgeNode item on moto.

What is checked is what the dashboard relies on: one entry per registering trunk with the
account, ``registered`` with 200 and the binding's expiry, ``failed`` with the registrar's 403,
``failed`` with the reason for a trunk the node cannot register with, nothing for a trunk that
does not register, an entry gone once its trunk is, and no credential anywhere in the item.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest

from edge_media.control.registry import NodeRegistry
from edge_media.sip.digest import compute_ha1
from edge_media.sip.digest_server import DigestServer
from edge_media.sip.endpoint import SipEndpoint
from edge_media.sip.message import SipRequest
from edge_media.sip.message_parse import parse_message
from edge_media.sip.registrar import ExtensionAuth, Registrar, RegistrarConfig, lookup_username
from edge_media.trunk_registrations import TrunkRegistrations
from shared.dynamo import mapping
from shared.dynamo.repository import AsyncRepository
from shared.models import EdgeNode, Transport, Trunk
from shared.settings import Settings

pytestmark = pytest.mark.anyio
HOST = "127.0.0.1"
REALM = "carrier.test"
USERNAME = "gw-acme"
PASSWORD = "trunk-secret-pw-9876"
WRONG_PASSWORD = "wrong-secret-pw-5432"
GRANTED = 600
WAIT_LIMIT = 10.0  # a bound for UDP on loopback, never a timing assertion
POLL_SECONDS = 0.02


class UdpRegistrar(asyncio.DatagramProtocol):
    """A registrar on a loopback UDP port: each REGISTER in, our `Registrar`'s answer out."""

    def __init__(self) -> None:
        self.registrar = Registrar(
            DigestServer(REALM, secrets.token_bytes(32)),
            new_tag=lambda: secrets.token_hex(4),
            config=RegistrarConfig(default_expires=GRANTED, max_expires=GRANTED),
        )
        self.auth = ExtensionAuth(
            account_id="carrier",
            extension="gw",
            username=USERNAME,
            realm=REALM,
            ha1_md5=compute_ha1(USERNAME, REALM, PASSWORD, "MD5"),
            ha1_sha256=compute_ha1(USERNAME, REALM, PASSWORD, "SHA-256"),
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.statuses: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        if not isinstance(request, SipRequest) or request.method != "REGISTER":
            return
        auth = self.auth if lookup_username(request, REALM) == USERNAME else None
        outcome = self.registrar.handle(request, addr, "udp", auth, time.time())
        self.statuses.append(outcome.response.status)
        assert self.transport is not None
        self.transport.sendto(bytes(outcome.response), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


@pytest.fixture
async def registrar() -> AsyncIterator[UdpRegistrar]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(UdpRegistrar, local_addr=(HOST, 0))
    yield protocol
    transport.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    sip = SipEndpoint(HOST, 0)
    await sip.start()
    yield sip
    await sip.close()


def trunk(account_id: str, port: int, **fields: Any) -> Trunk:
    values: dict[str, Any] = {
        "account_id": account_id,
        "name": "Carrier",
        "host": HOST,
        "port": port,
        "transport": Transport.UDP,
        "username": USERNAME,
        "password": PASSWORD,
        "needs_registration": True,
        **fields,
    }
    return Trunk(**values)


async def wait_for(predicate: Any) -> None:
    for _ in range(int(WAIT_LIMIT / POLL_SECONDS)):
        if predicate():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"condition not met within {WAIT_LIMIT} s")


async def raw_item(aio: Any, node_id: str) -> dict[str, Any]:
    request = mapping.get_request(aio.table_name, mapping.key(EdgeNode, node_id), consistent=True)
    item = (await aio.dynamodb.get_item(**request)).get("Item")
    assert item is not None
    return dict(item)


async def test_heartbeat_publishes_each_trunks_registration_without_secrets(
    aio: Any, settings: Settings, wall: Any, registrar: UdpRegistrar, endpoint: SipEndpoint
) -> None:
    account = f"acc_{uuid.uuid4().hex[:20]}"
    good = trunk(account, registrar.port)
    refused = trunk(account, registrar.port, password=WRONG_PASSWORD)
    named = trunk(account, registrar.port, host="sip.carrier.example")
    silent = trunk(account, registrar.port, needs_registration=False)
    registrations = TrunkRegistrations(endpoint, clock=wall)
    node_id = f"node-{uuid.uuid4().hex[:12]}"
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address=f"{HOST}:5060",
        active_calls=lambda: 0,
        trunk_registrations=registrations.states,
        heartbeat_seconds=3600,  # beats are driven by the test
        ttl_seconds=7200,
        clock=wall,
    )
    await registry.start()
    try:
        await registrations.sync([good, refused, named, silent])
        good_run = registrations.active[good.trunk_id][1]
        bad_run = registrations.active[refused.trunk_id][1]
        await wait_for(lambda: good_run.registered.is_set())
        await wait_for(lambda: bad_run.snapshot().state == "failed")
        await registry.beat()

        node = await AsyncRepository(aio.dynamodb, aio.table_name).get(EdgeNode, node_id)
        assert node is not None
        states = node.trunk_registrations
        assert set(states) == {good.trunk_id, refused.trunk_id, named.trunk_id}
        ok = states[good.trunk_id]
        assert (ok.account_id, ok.state, ok.status_code, ok.reason) == (
            account,
            "registered",
            200,
            "OK",
        )
        assert ok.expires_at is not None
        assert abs(ok.expires_at - (wall.now + timedelta(seconds=GRANTED))) < timedelta(seconds=5)
        assert ok.since == wall.now
        failed = states[refused.trunk_id]
        assert (failed.state, failed.status_code, failed.expires_at) == ("failed", 403, None)
        assert states[named.trunk_id].state == "failed"
        assert "IP address host" in states[named.trunk_id].reason
        assert registrar.statuses.count(200) == 1 and 403 in registrar.statuses

        text = json.dumps(await raw_item(aio, node_id))
        for secret in (PASSWORD, WRONG_PASSWORD, "nonce", "Digest", "response="):
            assert secret not in text

        # The trunk is deleted: unregistered, and the next beat drops it from the item.
        wall.advance(30)
        await registrations.sync([refused, named])
        await registry.beat()
        node = await AsyncRepository(aio.dynamodb, aio.table_name).get(EdgeNode, node_id)
        assert node is not None
        assert set(node.trunk_registrations) == {refused.trunk_id, named.trunk_id}
        assert not registrar.registrar.store.contacts_for(registrar.auth.aor, time.time())
    finally:
        await registrations.stop()
        await registry.stop()


async def test_a_failing_source_neither_stops_the_beat_nor_wipes_the_last_state(
    aio: Any, settings: Settings, wall: Any
) -> None:
    calls = [0]

    def states() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("broken")
        return {}

    node_id = f"node-{uuid.uuid4().hex[:12]}"
    registry = NodeRegistry(
        aio.dynamodb,
        aio.sqs,
        settings,
        node_id=node_id,
        sip_address=f"{HOST}:5060",
        active_calls=lambda: 2,
        trunk_registrations=states,
        heartbeat_seconds=3600,
        ttl_seconds=7200,
        clock=wall,
    )
    await registry.start()
    try:
        wall.advance(10)
        await registry.beat()
        item = await raw_item(aio, node_id)
        assert item["trunk_registrations"] == {"M": {}}
        assert item["heartbeat_at"] == {"S": "2026-02-09T14:30:10.000Z"}
    finally:
        await registry.stop()
