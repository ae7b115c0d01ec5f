"""The edge node's user agent over real UDP on loopback, driven by a hand-written SIP peer.

These check the UA's answers message by message (exact statuses, headers and SDP) where sipp
scenarios only say pass or fail; the sipp, baresip and kamailio runs are in tests/interop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator

import pytest

from edge_media.node import EdgeNode
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.message_parse import parse_message
from edge_media.sip.sdp_parse import parse_sdp
from shared.settings import Settings

pytestmark = pytest.mark.anyio

WAIT = 3.0
_ports = itertools.count(41000, 40)

OFFER = (
    "v=0\r\n"
    "o=peer 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio {port} RTP/AVP 8 0 96\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
    "a=fmtp:96 0-15\r\n"
    "a={direction}\r\n"
)


class Peer(asyncio.DatagramProtocol):
    """A SIP phone made of one UDP socket: sends what the test writes, queues what comes back."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if message is not None:
            self.inbox.put_nowait(message)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, message: SipRequest, node: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(message.serialize(), node)

    async def expect(self, predicate: object = None) -> SipRequest | SipResponse:
        async with asyncio.timeout(WAIT):
            while True:
                message = await self.inbox.get()
                if predicate is None or predicate(message):  # type: ignore[operator]
                    return message

    async def response(self, status: int, method: str = "INVITE") -> SipResponse:
        message = await self.expect(
            lambda m: isinstance(m, SipResponse) and m.status == status and m.cseq.method == method
        )
        assert isinstance(message, SipResponse)
        return message


def node_settings(**overrides: object) -> Settings:
    """A node on a free SIP port with its own RTP block; loopback trusted unless overridden."""
    base = next(_ports)
    values: dict[str, object] = {
        "sip_host": "127.0.0.1",
        "sip_port": 0,
        "ws_port": 0,
        "rtp_port_min": base,
        "rtp_port_max": base + 38,
        "trust_loopback": True,
    }
    return Settings.load({}, **{**values, **overrides})


@contextlib.asynccontextmanager
async def running(settings: Settings, **options: object) -> AsyncIterator[EdgeNode]:
    edge = EdgeNode(settings, **options)  # type: ignore[arg-type]
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop(drain_seconds=0)


@pytest.fixture
async def node() -> AsyncIterator[EdgeNode]:
    async with running(node_settings()) as edge:
        yield edge


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    yield protocol
    transport.close()


def invite(
    peer: Peer, user: str = "echo", *, sdp: str | None = None, call_id: str | None = None
) -> SipRequest:
    body = sdp.encode() if sdp is not None else b""
    return SipRequest.build(
        "INVITE",
        f"sip:{user}@127.0.0.1",
        from_=f"<sip:+15550100@127.0.0.1>;tag={secrets.token_hex(4)}",
        to=f"<sip:{user}@127.0.0.1>",
        call_id=call_id or secrets.token_hex(8),
        cseq=1,
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        contact=f"<sip:peer@127.0.0.1:{peer.port}>",
        body=body,
        content_type="application/sdp" if body else None,
    )


def in_dialog(
    peer: Peer,
    method: str,
    original: SipRequest,
    response: SipResponse,
    cseq: int,
    *,
    body: str = "",
) -> SipRequest:
    return SipRequest.build(
        method,
        response.contacts[0].uri if response.contacts != "*" else original.uri,  # type: ignore[index]
        from_=original.from_,
        to=response.to,
        call_id=original.call_id,
        cseq=cseq,
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        contact=f"<sip:peer@127.0.0.1:{peer.port}>",
        body=body.encode(),
        content_type="application/sdp" if body else None,
    )


def ack_for(peer: Peer, original: SipRequest, response: SipResponse, body: str = "") -> SipRequest:
    return in_dialog(peer, "ACK", original, response, original.cseq.number, body=body)


async def test_options_answers_with_capabilities(node: EdgeNode, peer: Peer) -> None:
    options = SipRequest.build(
        "OPTIONS",
        "sip:127.0.0.1",
        from_=f"<sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}",
        to="<sip:127.0.0.1>",
        call_id=secrets.token_hex(8),
        cseq=7,
        via=f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{secrets.token_hex(6)}",
    )
    peer.send(options, node.endpoint.local_addr)
    response = await peer.response(200, "OPTIONS")
    allow = {m.strip() for m in response.headers.get("allow", "").split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "INFO", "UPDATE"} <= allow
    assert response.headers.get("accept") == "application/sdp"
    assert response.to_tag is not None


async def test_echo_call_with_offer_then_bye(node: EdgeNode, peer: Peer) -> None:
    request = invite(peer, sdp=OFFER.format(port=peer.port + 2, direction="sendrecv"))
    peer.send(request, node.endpoint.local_addr)
    await peer.response(100)
    ringing = await peer.response(180)
    ok = await peer.response(200)
    assert ok.to_tag == ringing.to_tag
    answer = parse_sdp(ok.body)
    audio = answer.media[0]
    # RFC 3264 §6.1: one codec (the offer's first we support, PCMA) and telephone-event on
    # the offer's own payload type.
    assert audio.payload_types == (8, 96)
    assert audio.codec_for(96) is not None
    assert node.settings.rtp_port_min <= audio.port <= node.settings.rtp_port_max
    peer.send(ack_for(peer, request, ok), node.endpoint.local_addr)
    peer.send(in_dialog(peer, "BYE", request, ok, 2), node.endpoint.local_addr)
    await peer.response(200, "BYE")
    assert node.ua is not None
    assert await node.ua.wait_idle(WAIT)


async def test_invite_without_sdp_gets_offer_and_takes_answer_from_ack(
    node: EdgeNode, peer: Peer
) -> None:
    request = invite(peer)
    peer.send(request, node.endpoint.local_addr)
    ok = await peer.response(200)
    offer = parse_sdp(ok.body)
    assert set(offer.media[0].payload_types) >= {0, 8}
    answer = OFFER.format(port=peer.port + 2, direction="sendrecv").replace(
        "RTP/AVP 8 0 96", "RTP/AVP 0 101"
    )
    answer = answer.replace("96 telephone", "101 telephone").replace("fmtp:96", "fmtp:101")
    peer.send(ack_for(peer, request, ok, body=answer), node.endpoint.local_addr)
    # The node handles one socket's datagrams in order: once the OPTIONS sent after the ACK is
    # answered, the ACK has been processed.
    peer.send(in_dialog(peer, "OPTIONS", request, ok, 2), node.endpoint.local_addr)
    await peer.response(200, "OPTIONS")
    call = next(iter(node.ua._active))  # type: ignore[union-attr]
    assert call.negotiated is not None
    assert call.negotiated.payload_type == 0
    assert call.negotiated.dtmf_payload_type == 101


async def test_untrusted_source_must_authenticate_as_an_extension(peer: Peer) -> None:
    from edge_media.sip.digest_client import DigestClient
    from edge_media.sip.extensions import StaticDirectory, extension_auth

    base = next(_ports)
    settings = Settings.load(
        {},
        sip_port=0,
        ws_port=0,
        rtp_port_min=base,
        rtp_port_max=base + 38,
        trust_loopback=False,
        sip_digest_algorithms="SHA-256,MD5",
    )
    alice = extension_auth("acc_1", "201", "alice", "correct horse", settings.sip_realm)
    strict = EdgeNode(settings, directory=StaticDirectory([alice]))
    await strict.start()
    node = strict.endpoint.local_addr

    def with_credentials(request: SipRequest, challenge: SipResponse, password: str) -> SipRequest:
        value = DigestClient().respond(
            challenge.headers.get_lines("proxy-authenticate"),
            "INVITE",
            str(request.uri),
            "alice",
            password,
            cnonce=secrets.token_hex(4),
        )
        headers = request.headers.with_replaced("CSeq", f"{request.cseq.number + 1} INVITE")
        headers = headers.with_replaced(
            "Via", f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{secrets.token_hex(6)}"
        )
        return request.with_headers(headers.with_added("Proxy-Authorization", value))

    try:
        request = invite(peer, sdp=OFFER.format(port=peer.port + 2, direction="sendrecv"))
        peer.send(request, node)
        challenge = await peer.response(407)
        algorithms = " ".join(challenge.headers.get_lines("proxy-authenticate"))
        assert "SHA-256" in algorithms and "MD5" in algorithms  # RFC 8760 §2.3
        peer.send(with_credentials(request, challenge, "wrong"), node)
        forbidden = await peer.response(403)
        assert "bad credentials" in forbidden.reason

        request = invite(peer, sdp=OFFER.format(port=peer.port + 2, direction="sendrecv"))
        peer.send(request, node)
        challenge = await peer.response(407)
        peer.send(with_credentials(request, challenge, "correct horse"), node)
        answered = await peer.response(200)
        assert answered.cseq.number == 2
        call = next(iter(strict.ua._active))  # type: ignore[union-attr]
        assert call.extension == alice
    finally:
        await strict.stop(drain_seconds=0)


async def test_register_then_the_node_calls_the_extension(peer: Peer) -> None:
    from edge_media.sip.digest_client import DigestClient
    from edge_media.sip.extensions import StaticDirectory, extension_auth

    base = next(_ports)
    settings = Settings.load({}, sip_port=0, ws_port=0, rtp_port_min=base, rtp_port_max=base + 38)
    alice = extension_auth("acc_1", "201", "alice", "pw", settings.sip_realm)
    edge = EdgeNode(settings, directory=StaticDirectory([alice]))
    await edge.start()
    node = edge.endpoint.local_addr

    def register(cseq: int, authorization: str | None = None) -> SipRequest:
        extra = [("Authorization", authorization)] if authorization else []
        return SipRequest.build(
            "REGISTER",
            f"sip:127.0.0.1:{node[1]}",
            from_="<sip:alice@127.0.0.1>;tag=reg1",
            to="<sip:alice@127.0.0.1>",
            call_id="reg-call-1",
            cseq=cseq,
            via=f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            contact="<sip:alice@10.0.0.7:5060>;expires=600",
            extra_headers=extra,
        )

    try:
        peer.send(register(1), node)
        challenge = await peer.response(401, "REGISTER")
        value = DigestClient().respond(
            challenge.headers.get_lines("www-authenticate"),
            "REGISTER",
            f"sip:127.0.0.1:{node[1]}",
            "alice",
            "pw",
            cnonce="abc123",
        )
        peer.send(register(2, value), node)
        ok = await peer.response(200, "REGISTER")
        assert "expires=600" in ok.headers.get("contact", "")
        assert edge.ua is not None
        (binding,) = edge.ua.contacts_for("acc_1", "201")
        # The phone's Contact is a private address: the call goes where the REGISTER came from.
        call = edge.ua.call_binding(binding, from_user="echo")
        incoming = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
        assert isinstance(incoming, SipRequest)
        assert str(incoming.uri) == "sip:alice@10.0.0.7:5060"
        await call.hangup()
    finally:
        await edge.stop(drain_seconds=0)


async def test_unknown_user_gets_404(node: EdgeNode, peer: Peer) -> None:
    peer.send(
        invite(peer, "nobody", sdp=OFFER.format(port=9, direction="sendrecv")),
        node.endpoint.local_addr,
    )
    rejected = await peer.response(404)
    assert rejected.headers.get("reason", "").startswith("Q.850;cause=3")


async def test_no_common_codec_gets_488_with_warning(node: EdgeNode, peer: Peer) -> None:
    sdp = OFFER.format(port=9, direction="sendrecv").replace("RTP/AVP 8 0 96", "RTP/AVP 18")
    peer.send(invite(peer, sdp=sdp), node.endpoint.local_addr)
    rejected = await peer.response(488)
    assert rejected.headers.get("warning", "").startswith("305 ")


async def test_hold_and_resume_by_reinvite(node: EdgeNode, peer: Peer) -> None:
    request = invite(peer, sdp=OFFER.format(port=peer.port + 2, direction="sendrecv"))
    peer.send(request, node.endpoint.local_addr)
    ok = await peer.response(200)
    peer.send(ack_for(peer, request, ok), node.endpoint.local_addr)
    call = next(iter(node.ua._active))  # type: ignore[union-attr]
    assert call.media is not None and call.media.sending

    hold = in_dialog(
        peer, "INVITE", request, ok, 2, body=OFFER.format(port=peer.port + 2, direction="sendonly")
    )
    peer.send(hold, node.endpoint.local_addr)
    held = await peer.response(200)
    assert held.cseq.number == 2
    assert parse_sdp(held.body).media[0].direction == "recvonly"
    peer.send(ack_for(peer, hold, held), node.endpoint.local_addr)
    assert not call.media.sending

    resume = in_dialog(
        peer, "INVITE", request, ok, 3, body=OFFER.format(port=peer.port + 2, direction="sendrecv")
    )
    peer.send(resume, node.endpoint.local_addr)
    resumed = await peer.expect(lambda m: isinstance(m, SipResponse) and m.cseq.number == 3)
    assert isinstance(resumed, SipResponse) and resumed.status == 200
    assert parse_sdp(resumed.body).media[0].direction == "sendrecv"
    assert call.media.sending
    # RFC 3264 §8: each new SDP of the session is the previous version plus one.
    versions = [parse_sdp(r.body).origin.session_version for r in (ok, held, resumed)]
    assert versions == [versions[0], versions[0] + 1, versions[0] + 2]


async def test_cancel_while_ringing_gets_487(peer: Peer) -> None:
    async with running(node_settings(echo_ring_seconds=10.0)) as ringing_node:
        request = invite(peer, sdp=OFFER.format(port=9, direction="sendrecv"))
        peer.send(request, ringing_node.endpoint.local_addr)
        ringing = await peer.response(180)
        cancel = SipRequest.build(
            "CANCEL",
            request.uri,
            from_=request.from_,
            to=request.to,
            call_id=request.call_id,
            cseq=1,
            via=str(request.top_via),
        )
        peer.send(cancel, ringing_node.endpoint.local_addr)
        await peer.response(200, "CANCEL")
        terminated = await peer.response(487)
        assert terminated.to_tag == ringing.to_tag
        assert ringing_node.ua is not None
        assert await ringing_node.ua.wait_idle(WAIT)


async def test_bye_outside_a_dialog_gets_481(node: EdgeNode, peer: Peer) -> None:
    request = invite(peer)
    bye = SipRequest.build(
        "BYE",
        request.uri,
        from_=request.from_,
        to=f"{request.to};tag=nosuchtag",
        call_id=request.call_id,
        cseq=2,
        via=str(request.top_via),
    )
    peer.send(bye, node.endpoint.local_addr)
    await peer.response(481, "BYE")


async def test_draining_node_refuses_new_calls_with_503(node: EdgeNode, peer: Peer) -> None:
    assert node.ua is not None
    node.ua.accepting = False
    peer.send(
        invite(peer, sdp=OFFER.format(port=9, direction="sendrecv")), node.endpoint.local_addr
    )
    refused = await peer.response(503)
    assert refused.headers.get("retry-after") == "30"


# -- outbound (UAC) ---------------------------------------------------------------------------


def answer_sdp(port: int) -> str:
    return OFFER.format(port=port, direction="sendrecv").replace("RTP/AVP 8 0 96", "RTP/AVP 0 96")


def respond(
    request: SipRequest, status: int, tag: str, *, body: str = "", extra: tuple = ()
) -> SipResponse:
    from edge_media.sip.message import make_response

    return make_response(
        request,
        status,
        to_tag=tag,
        extra_headers=[
            ("Contact", f"<sip:callee@127.0.0.1:{request.uri.port}>"),
            *extra,
        ],
        body=body.encode(),
        content_type="application/sdp" if body else None,
    )


class Callee(Peer):
    def reply(self, request: SipRequest, response: SipResponse) -> None:
        assert self.transport is not None
        via = request.top_via
        self.transport.sendto(response.serialize(), (via.host, via.port or 5060))


@pytest.fixture
async def callee() -> AsyncIterator[Callee]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Callee, local_addr=("127.0.0.1", 0))
    yield protocol
    transport.close()


async def test_outbound_call_answered_acked_and_hung_up(node: EdgeNode, callee: Callee) -> None:
    assert node.ua is not None
    call = node.ua.invite(
        f"sip:+15550199@127.0.0.1:{callee.port}",
        addr=("127.0.0.1", callee.port),
        from_user="+15550100",
        from_display='Agera "Test"',
    )
    request = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
    assert isinstance(request, SipRequest)
    assert request.from_.display_name == 'Agera "Test"'
    offer = parse_sdp(request.body)
    assert {0, 8} <= set(offer.media[0].payload_types)
    callee.reply(request, respond(request, 180, "callee1"))
    assert await call.wait_ringing()
    callee.reply(request, respond(request, 200, "callee1", body=answer_sdp(callee.port + 2)))
    ack = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "ACK")
    assert isinstance(ack, SipRequest) and ack.cseq.number == request.cseq.number
    assert await call.wait_answered()
    assert call.negotiated is not None
    assert call.negotiated.payload_type == 0
    # A retransmitted 2xx (our ACK was lost) is ACKed again (§13.2.2.4).
    callee.reply(request, respond(request, 200, "callee1", body=answer_sdp(callee.port + 2)))
    again = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "ACK")
    assert again.serialize() == ack.serialize()
    await call.hangup()
    bye = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
    assert isinstance(bye, SipRequest) and bye.headers.get("reason", "").startswith(
        "Q.850;cause=16"
    )
    assert call.end is not None and call.end.cause == "NORMAL_CLEARING"


async def test_outbound_call_answers_a_digest_challenge(node: EdgeNode, callee: Callee) -> None:
    from edge_media.sip.digest import compute_ha1
    from edge_media.sip.digest_server import AuthOk, DigestServer

    server = DigestServer("carrier.test", b"0123456789abcdef0123456789abcdef")
    assert node.ua is not None
    call = node.ua.invite(
        f"sip:+15550199@127.0.0.1:{callee.port}",
        addr=("127.0.0.1", callee.port),
        from_user="+15550100",
        credentials=("trunkuser", "s3cret"),
    )
    first = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
    assert isinstance(first, SipRequest)
    now = asyncio.get_running_loop().time()
    challenge = server.challenge(now)
    callee.reply(
        first, respond(first, 401, "c401", extra=tuple(("WWW-Authenticate", c) for c in challenge))
    )
    second = await callee.expect(
        lambda m: isinstance(m, SipRequest) and m.method == "INVITE" and m.cseq.number == 2
    )
    assert isinstance(second, SipRequest)
    password = {"trunkuser": "s3cret"}

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        secret = password.get(username)
        return compute_ha1(username, realm, secret, algorithm) if secret else None

    verdict = server.verify(
        second.headers.get("authorization", ""), "INVITE", str(second.uri), now, lookup
    )
    assert isinstance(verdict, AuthOk)
    callee.reply(second, respond(second, 486, "busy1"))
    end = await call.ended()
    assert (end.cause, end.status) == ("USER_BUSY", 486)


async def test_outbound_cancel_before_answer(node: EdgeNode, callee: Callee) -> None:
    assert node.ua is not None
    call = node.ua.invite(
        f"sip:+15550199@127.0.0.1:{callee.port}",
        addr=("127.0.0.1", callee.port),
        from_user="+15550100",
    )
    request = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
    assert isinstance(request, SipRequest)
    callee.reply(request, respond(request, 180, "ring1"))
    assert await call.wait_ringing()
    await call.hangup("ORIGINATOR_CANCEL")
    cancel = await callee.expect(lambda m: isinstance(m, SipRequest) and m.method == "CANCEL")
    assert isinstance(cancel, SipRequest)
    assert cancel.top_via.branch == request.top_via.branch  # §9.1
    assert call.end is not None and call.end.cause == "ORIGINATOR_CANCEL"


async def test_call_without_rtp_is_hung_up_after_the_media_timeout(peer: Peer) -> None:
    async with running(node_settings(rtp_timeout_seconds=0.4)) as edge:
        request = invite(peer, sdp=OFFER.format(port=peer.port + 2, direction="sendrecv"))
        peer.send(request, edge.endpoint.local_addr)
        ok = await peer.response(200)
        peer.send(ack_for(peer, request, ok), edge.endpoint.local_addr)
        bye = await peer.expect(lambda m: isinstance(m, SipRequest) and m.method == "BYE")
        assert isinstance(bye, SipRequest)
        assert bye.headers.get("reason", "").startswith("Q.850;cause=102")


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        ("contact", "Missing Contact"),
        ("from-tag", "Missing From tag"),
        ("contact-broken", "Malformed Contact header"),  # refused by the parser already
    ],
)
async def test_invite_without_dialog_fields_gets_400_before_routing(
    node: EdgeNode, peer: Peer, drop: str, reason: str
) -> None:
    """RFC 2543-style INVITEs parse (RFC 4475 §3.4.3) but cannot set up a dialog: 400 with the
    reason, before routing (found by the fuzz: they used to reach the call app and get 500)."""
    request = invite(peer, sdp=OFFER.format(port=9, direction="sendrecv"))
    text = request.serialize().decode()
    if drop == "contact":
        text = "".join(line for line in text.splitlines(True) if not line.startswith("Contact:"))
    elif drop == "contact-broken":
        text = text.replace(f"Contact: <sip:peer@127.0.0.1:{peer.port}>", "Contact: <sip:peer@", 1)
    else:
        text = text.replace(f";tag={request.from_tag}", "", 1)
    assert node.ua is not None
    routed = node.ua.stats.get("invites", 0)
    assert peer.transport is not None
    peer.transport.sendto(text.encode(), node.endpoint.local_addr)
    refused = await peer.response(400)
    assert refused.reason == reason
    assert node.ua.stats.get("invites", 0) == routed and node.ua.active_calls == 0


async def test_a_percent_in_the_call_id_does_not_break_the_call_log(
    node: EdgeNode, peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Call-ID may hold "%" (RFC 3261 word): the call's log lines must still format."""
    request = invite(
        peer, sdp=OFFER.format(port=peer.port + 2, direction="sendrecv"), call_id="ab%aa18%s@x"
    )
    with caplog.at_level("DEBUG", logger="agera"):
        peer.send(request, node.endpoint.local_addr)
        ok = await peer.response(200)
        peer.send(ack_for(peer, request, ok), node.endpoint.local_addr)
        peer.send(in_dialog(peer, "BYE", request, ok, 2), node.endpoint.local_addr)
        await peer.response(200, "BYE")
    lines = [record.getMessage() for record in caplog.records]  # raises if one cannot format
    assert any(line.startswith("[call ab%aa18%s@x]") for line in lines), lines
