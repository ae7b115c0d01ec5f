"""SipTransport with a SourceGuard: trusted sources unlimited, banned ones silent, scanners
dropped, TCP capped per source. Real loopback sockets; 127.0.0.2 is a second source address.

As in test_transport.py, ordering makes these deterministic: a "barrier" request answered after
the others proves every earlier datagram was handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from edge_media.sip.source_guard import SourceBans, SourceGuard
from edge_media.sip.transport import SipAddress
from tests.edge_media.sip.test_transport import (
    LOCALHOST,
    WAIT,
    Recorder,
    TcpClient,
    request_bytes,
    running,
    udp_client,
    until,
)

pytestmark = pytest.mark.anyio

OTHER = "127.0.0.2"  # another loopback address: a second source


def with_agent(data: bytes, agent: str) -> bytes:
    return data.replace(
        b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\nUser-Agent: {agent}\r\n".encode()
    )


@asynccontextmanager
async def tcp_from(host: str, addr: SipAddress) -> AsyncIterator[TcpClient]:
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection(addr[0], addr[1], local_addr=(host, 0))
    client = TcpClient(reader, writer)
    try:
        yield client
    finally:
        await client.close()


async def test_a_trusted_source_is_not_rate_limited_and_others_are() -> None:
    handler = Recorder(reply=False)
    guard = SourceGuard(trusted=lambda source: source == LOCALHOST)
    async with running(handler, request_rate=0.001, request_burst=2, guard=guard) as transport:
        async with udp_client() as trusted, udp_client(OTHER) as stranger:
            for index in range(5):
                stranger.send(request_bytes(f"s{index}", stranger.addr[1]), transport.local_addr)
            for index in range(5):
                trusted.send(request_bytes(f"t{index}", trusted.addr[1]), transport.local_addr)
            await handler.wait_for(7)
        stats = transport.stats()
    assert handler.call_ids == ["s0", "s1"] + [f"t{i}" for i in range(5)]
    assert stats["rate_limited"] == 3


async def test_malformed_requests_ban_the_source_and_it_gets_silence() -> None:
    handler = Recorder()
    guard = SourceGuard(bans=SourceBans(2, 60.0, 600.0))
    async with running(handler, guard=guard) as transport:
        async with udp_client() as attacker, udp_client(OTHER) as bystander:
            for index in range(2):
                bad = request_bytes(f"bad{index}", attacker.addr[1], cseq="1 INVITE")
                attacker.send(bad, transport.local_addr)
            answers = await attacker.wait_for(2)  # the two 400s: the ban starts with the 2nd
            attacker.send(request_bytes("after", attacker.addr[1]), transport.local_addr)
            attacker.send(
                request_bytes("bad-again", attacker.addr[1], cseq="1 INVITE"), transport.local_addr
            )
            bystander.send(request_bytes("barrier", bystander.addr[1]), transport.local_addr)
            await bystander.wait_for(1)
            assert len(attacker.received) == 2
        stats = transport.stats()
    assert [a.status for a in answers] == [400, 400]
    assert handler.call_ids == ["barrier"]
    assert stats["banned_dropped"] == 2
    assert guard.banned(LOCALHOST, 0.0) and not guard.banned(OTHER, 0.0)


async def test_a_trusted_source_is_never_banned_for_garbage() -> None:
    handler = Recorder()
    guard = SourceGuard(bans=SourceBans(1, 60.0, 600.0), trusted=lambda source: True)
    async with running(handler, guard=guard) as transport, udp_client() as carrier:
        carrier.send(request_bytes("bad", carrier.addr[1], cseq="1 INVITE"), transport.local_addr)
        carrier.send(request_bytes("good", carrier.addr[1]), transport.local_addr)
        answers = await carrier.wait_for(2)
    assert [(a.status, a.call_id) for a in answers] == [(400, "bad"), (200, "good")]


async def test_scanner_user_agents_are_dropped_unanswered() -> None:
    handler = Recorder()
    guard = SourceGuard()
    async with running(handler, guard=guard) as transport, udp_client() as udp:
        udp.send(
            with_agent(request_bytes("scan", udp.addr[1]), "friendly-scanner"), transport.local_addr
        )
        udp.send(
            with_agent(request_bytes("phone", udp.addr[1]), "Linphone/5.2"), transport.local_addr
        )
        (answer,) = await udp.wait_for(1)
        stats = transport.stats()
    assert answer.call_id == "phone"
    assert handler.call_ids == ["phone"]
    assert (stats["scanner_dropped"], stats["requests_in"]) == (1, 1)


async def test_tcp_connections_are_capped_per_source_but_not_our_dials() -> None:
    handler = Recorder()
    accepted: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(on_connect, LOCALHOST, 0)
    dial: SipAddress = (LOCALHOST, server.sockets[0].getsockname()[1])
    try:
        async with running(handler, tcp_max_connections_per_source=1) as transport:
            # Our own dial to a peer at 127.0.0.1 does not count against that host's cap.
            await transport.send(request_bytes("out", transport.local_addr[1]), dial, "tcp")
            async with tcp_from(LOCALHOST, transport.local_addr) as first:
                await until(lambda: transport.stats()["tcp_accepted"] == 1)
                async with tcp_from(LOCALHOST, transport.local_addr) as second:
                    assert await second.read_until_eof() == b""
                async with tcp_from(OTHER, transport.local_addr) as other:
                    await other.send(request_bytes("other", other.port, transport="TCP"))
                    (answer,) = await other.responses(1)
                await first.send(request_bytes("first", first.port, transport="TCP"))
                (first_answer,) = await first.responses(1)
            # Once the first closed, the host may connect again.
            await until(lambda: transport.stats()["tcp_connections"] == 1)
            async with tcp_from(LOCALHOST, transport.local_addr) as again:
                await again.send(request_bytes("again", again.port, transport="TCP"))
                (again_answer,) = await again.responses(1)
            stats = transport.stats()
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert (answer.call_id, first_answer.call_id, again_answer.call_id) == (
        "other",
        "first",
        "again",
    )
    assert (stats["tcp_rejected_per_source"], stats["tcp_connected"]) == (1, 1)


async def test_trusted_sources_are_not_capped_on_tcp() -> None:
    handler = Recorder()
    guard = SourceGuard(trusted=lambda source: True)
    async with running(handler, tcp_max_connections_per_source=1, guard=guard) as transport:
        async with (
            tcp_from(LOCALHOST, transport.local_addr) as first,
            tcp_from(LOCALHOST, transport.local_addr) as second,
        ):
            await first.send(request_bytes("one", first.port, transport="TCP"))
            await second.send(request_bytes("two", second.port, transport="TCP"))
            assert [r.call_id for r in await first.responses(1)] == ["one"]
            assert [r.call_id for r in await second.responses(1)] == ["two"]
        assert transport.stats()["tcp_rejected_per_source"] == 0
