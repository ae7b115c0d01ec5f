"""The edge node's door over real UDP on loopback: bans, scanners, trunk sources and lookups.

Standalone nodes (no control plane) with loopback *not* trusted, so 127.0.0.1 is a stranger;
a trunk's source is 127.0.0.2, set with `EdgeNode.set_trusted_sources` as the trunk book does.
Per-trunk account checks need numbers in the table: test_node_trunk_trust.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import pytest

from edge_media.sip.digest_client import DigestClient
from edge_media.sip.extensions import StaticDirectory, extension_auth
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.registrar import ExtensionAuth
from tests.edge_media.test_node import OFFER, Peer, node_settings, running

pytestmark = pytest.mark.anyio

TRUNK_SOURCE = "127.0.0.2"
STRANGER = "127.0.0.3"
QUIET = 0.3  # seconds a silent node is listened to (only in the negative checks)


@contextlib.asynccontextmanager
async def peer_at(host: str) -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=(host, 0))
    try:
        yield protocol
    finally:
        transport.close()


def via(peer: Peer, host: str = "127.0.0.1") -> str:
    return f"SIP/2.0/UDP {host}:{peer.port};branch=z9hG4bK{secrets.token_hex(6)};rport"


def options(peer: Peer, *, user_agent: str | None = None, call_id: str | None = None) -> SipRequest:
    return SipRequest.build(
        "OPTIONS",
        "sip:127.0.0.1",
        from_=f"<sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}",
        to="<sip:127.0.0.1>",
        call_id=call_id or secrets.token_hex(8),
        cseq=1,
        via=via(peer),
        extra_headers=[("User-Agent", user_agent)] if user_agent else [],
    )


def register(
    peer: Peer, node: tuple[str, int], cseq: int, user: str = "alice", auth: str | None = None
) -> SipRequest:
    return SipRequest.build(
        "REGISTER",
        f"sip:127.0.0.1:{node[1]}",
        from_=f"<sip:{user}@127.0.0.1>;tag=reg{user}",
        to=f"<sip:{user}@127.0.0.1>",
        call_id=f"reg-{user}-{peer.port}",
        cseq=cseq,
        via=via(peer),
        contact=f"<sip:{user}@10.0.0.7:5060>;expires=600",
        extra_headers=[("Authorization", auth)] if auth else [],
    )


def credentials(challenge: SipResponse, header: str, method: str, uri: str, user: str) -> str:
    return DigestClient().respond(
        challenge.headers.get_lines(header), method, uri, user, "wrong password",
        cnonce=secrets.token_hex(4),
    )  # fmt: skip


async def silent(peer: Peer, call_id: str) -> bool:
    """True when nothing for ``call_id`` arrives within QUIET seconds."""
    try:
        await asyncio.wait_for(
            peer.expect(lambda m: isinstance(m, SipResponse) and m.call_id == call_id), QUIET
        )
    except TimeoutError:
        return True
    return False


class CountingDirectory(StaticDirectory):
    """The node's extension directory, counting lookups (each is two reads in production)."""

    def __init__(self, extensions: list[ExtensionAuth]) -> None:
        super().__init__(extensions)
        self.lookups: list[str] = []

    async def lookup(self, username: str) -> ExtensionAuth | None:
        self.lookups.append(username)
        return await super().lookup(username)


async def test_failed_digests_ban_the_source_until_the_ban_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = node_settings(
        trust_loopback=False, sip_ban_failures=3, sip_ban_window_seconds=30, sip_ban_seconds=0.6
    )
    alice = extension_auth("acc_1", "201", "alice", "s3cret", settings.sip_realm)
    caplog.set_level(logging.WARNING, "agera.sip.guard")
    async with (
        running(settings, directory=StaticDirectory([alice])) as edge,
        peer_at("127.0.0.1") as attacker,
        peer_at(STRANGER) as bystander,
    ):
        node = edge.endpoint.local_addr
        uri = f"sip:127.0.0.1:{node[1]}"
        attacker.send(register(attacker, node, 1), node)
        challenge = await attacker.response(401, "REGISTER")
        for cseq in (2, 3):  # two REGISTERs with a wrong password
            auth = credentials(challenge, "www-authenticate", "REGISTER", uri, "alice")
            attacker.send(register(attacker, node, cseq, auth=auth), node)
            await attacker.response(403, "REGISTER")
        # ... and an INVITE with a wrong password: the third failed digest.
        invite = SipRequest.build(
            "INVITE", "sip:+15550001@127.0.0.1", from_="<sip:alice@127.0.0.1>;tag=i1",
            to="<sip:+15550001@127.0.0.1>", call_id="inv-1", cseq=1, via=via(attacker),
            contact=f"<sip:alice@127.0.0.1:{attacker.port}>",
            body=OFFER.format(port=9, direction="sendrecv").encode(),
            content_type="application/sdp",
        )  # fmt: skip
        attacker.send(invite, node)
        proxy_challenge = await attacker.response(407)
        auth = credentials(
            proxy_challenge, "proxy-authenticate", "INVITE", str(invite.uri), "alice"
        )
        headers = invite.headers.with_replaced("CSeq", "2 INVITE").with_replaced(
            "Via", via(attacker)
        )
        attacker.send(invite.with_headers(headers.with_added("Proxy-Authorization", auth)), node)
        forbidden = await attacker.response(403)
        assert "bad credentials" in forbidden.reason

        # Banned: silence, even for OPTIONS; other sources are answered meanwhile.
        attacker.send(options(attacker, call_id="while-banned"), node)
        bystander.send(options(bystander, call_id="bystander"), node)
        await bystander.response(200, "OPTIONS")
        assert await silent(attacker, "while-banned")
        stats = edge.endpoint.transport.stats()
        assert stats["banned_dropped"] == 1

        await asyncio.sleep(0.6 - QUIET + 0.05)  # the ban (0.6 s) is over
        attacker.send(options(attacker, call_id="after-ban"), node)
        answer = await attacker.response(200, "OPTIONS")
        assert answer.call_id == "after-ban"
    bans = [r.getMessage() for r in caplog.records if "banned" in r.getMessage()]
    assert len(bans) == 1
    assert "127.0.0.1" in bans[0] and "3 failed digest attempts" in bans[0]
    assert "alice" not in bans[0] and "wrong" not in bans[0]


async def test_scanner_user_agents_get_no_answer() -> None:
    async with (
        running(node_settings(trust_loopback=False)) as edge,
        peer_at("127.0.0.1") as scanner,
    ):
        node = edge.endpoint.local_addr
        scanner.send(options(scanner, user_agent="friendly-scanner", call_id="scan-1"), node)
        scanner.send(options(scanner, user_agent="sipvicious/0.3", call_id="scan-2"), node)
        scanner.send(options(scanner, user_agent="Linphone/5.2", call_id="phone"), node)
        first = await scanner.expect(lambda m: isinstance(m, SipResponse))
        assert first.call_id == "phone"  # handled in order: the scans before it got nothing
        assert edge.endpoint.transport.stats()["scanner_dropped"] == 2
        assert await silent(scanner, "scan-1")


async def test_a_trunk_source_above_50_requests_a_second_is_not_dropped() -> None:
    count, batch = 150, 10  # ~330 requests/s: past the 100 burst and 50/s of a stranger

    async def blast(peer: Peer, node: tuple[str, int]) -> None:
        for start in range(0, count, batch):
            for index in range(start, start + batch):
                peer.send(options(peer, call_id=f"{peer.port}-{index}"), node)
            await asyncio.sleep(0.03)

    async def answered(peer: Peer, seconds: float) -> int:
        got = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while got < count:
                    await peer.response(200, "OPTIONS")
                    got += 1
        return got

    async with (
        running(node_settings(trust_loopback=False)) as edge,
        peer_at(TRUNK_SOURCE) as trunk,
        peer_at(STRANGER) as stranger,
    ):
        edge.set_trusted_sources([(f"{TRUNK_SOURCE}/32", "acc_trunk")])
        node = edge.endpoint.local_addr
        await blast(trunk, node)
        assert await answered(trunk, 5.0) == count
        await blast(stranger, node)
        assert await answered(stranger, 1.0) < count  # the same load from a stranger is cut
        assert edge.endpoint.transport.stats()["rate_limited"] > 0


async def test_lookups_are_skipped_without_credentials_and_after_a_miss() -> None:
    settings = node_settings(trust_loopback=False)
    directory = CountingDirectory([])
    async with running(settings, directory=directory) as edge, peer_at("127.0.0.1") as phone:
        node = edge.endpoint.local_addr
        uri = f"sip:127.0.0.1:{node[1]}"
        phone.send(register(phone, node, 1, user="ghost"), node)
        challenge = await phone.response(401, "REGISTER")
        phone.send(register(phone, node, 2, user="ghost"), node)
        await phone.response(401, "REGISTER")
        assert directory.lookups == []  # no credentials: challenged without a lookup
        for cseq in (3, 4, 5):
            auth = credentials(challenge, "www-authenticate", "REGISTER", uri, "ghost")
            phone.send(register(phone, node, cseq, user="ghost", auth=auth), node)
            await phone.response(403, "REGISTER")
        assert directory.lookups == ["ghost"]  # the first miss only
        assert edge.ua is not None and edge.ua.stats["directory_misses_cached"] == 2
