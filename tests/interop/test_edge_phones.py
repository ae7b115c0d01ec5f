"""The node with real phones and a real registrar/proxy: baresip and kamailio on loopback."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from edge_media.node import EdgeNode
from edge_media.sip.endpoint import new_branch, new_tag
from edge_media.sip.extensions import StaticDirectory, extension_auth
from edge_media.sip.registration import RegistrationClient
from edge_media.sip.registration_runner import TrunkRegistration
from shared.settings import Settings
from tests.interop.peers import (
    HOST,
    Peers,
    dtmf_digits,
    dtmf_events,
    find_segments,
    free_port,
    free_udp_range,
    heard_pcm,
    read_rtp,
)

WAIT_S = 20.0


def test_baresip_calls_the_echo_line_and_hears_itself(peers: Peers) -> None:
    node = peers.edge().start()
    phone = peers.baresip("caller").start()
    low, high = phone.rtp_ports
    capture = peers.capture("baresip", ports=[node.sip_port, *range(low, high + 1)]).start()
    phone.dial(node.echo_uri)
    phone.wait_event("CALL_ESTABLISHED")
    time.sleep(3.0)
    phone.send_digits("42#")
    phone.wait_event("CALL_DTMF_START")  # the node echoed a digit back as RFC 4733
    time.sleep(6.0)  # the rest of the ~7 s utterance
    phone.hangup()
    phone.wait_event("CALL_CLOSED")
    capture.stop()
    packets = read_rtp(capture.path, sip_ports=[node.sip_port])
    to_phone = [p for p in packets if low <= p.dst[1] <= high and not low <= p.src[1] <= high]
    assert to_phone, "the node sent the phone no RTP"
    # What the phone was sent is its own speech (baresip's own recording drops frames in its
    # jitter buffer, so the wire is the proof).
    heard = heard_pcm(to_phone, dst_port=to_phone[0].dst[1])
    found = find_segments(peers.media.caller_wav, heard)
    assert found.fraction >= 0.8, found
    assert dtmf_digits(dtmf_events(to_phone, payload_types=[101])) == "42#"
    assert node.stop() == 0


@pytest.fixture
async def inprocess_node() -> AsyncIterator[EdgeNode]:
    low, high = free_udp_range(64)
    settings = Settings.load(
        {}, sip_host=HOST, sip_port=free_port(), ws_port=0, rtp_port_min=low, rtp_port_max=high,
        trust_loopback=True, sip_realm="agera.test",
    )  # fmt: skip
    directory = StaticDirectory([extension_auth("acc_1", "201", "alice", "pw", "agera.test")])
    node = EdgeNode(settings, directory=directory)
    await node.start()
    yield node
    await node.stop(drain_seconds=0)


@pytest.mark.anyio
async def test_baresip_registers_as_an_extension_and_takes_a_call(
    peers: Peers, inprocess_node: EdgeNode
) -> None:
    node = inprocess_node
    sip = f"{HOST}:{node.endpoint.local_addr[1]}"
    phone = peers.baresip(
        "alice", user="alice", domain=sip,
        account_params=";auth_pass=pw;regint=60;answermode=auto",
    )  # fmt: skip
    await anyio.to_thread.run_sync(phone.start)
    await anyio.to_thread.run_sync(phone.wait_registered)
    assert node.ua is not None
    (binding,) = node.ua.contacts_for("acc_1", "201")
    call = node.ua.call_binding(binding, from_user="+15550100")
    assert await call.wait_answered(), call.end
    await anyio.sleep(1.0)
    assert call.media is not None and call.media.stats()["packets_in"] > 10
    await call.hangup()
    await anyio.to_thread.run_sync(phone.wait_event, "CALL_CLOSED")


@pytest.mark.anyio
async def test_node_registers_with_kamailio_and_takes_calls_through_it(
    peers: Peers, inprocess_node: EdgeNode
) -> None:
    node = inprocess_node
    proxy = peers.kamailio()
    await anyio.to_thread.run_sync(proxy.start)
    port = node.endpoint.local_addr[1]
    client = RegistrationClient(
        registrar=f"sip:{proxy.address}",
        aor=f"sip:echo@{proxy.address}",
        contact=f"<sip:echo@{HOST}:{port}>",
        username="echo",
        password="s3cret",
        local_address=(HOST, port),
        new_branch=new_branch,
        new_tag=new_tag,
        new_call_id=lambda: secrets.token_hex(12),
        new_cnonce=lambda: secrets.token_hex(6),
        expires=120,
    )
    registration = TrunkRegistration(node.endpoint, client, (HOST, proxy.port), "udp")
    registration.start()
    with anyio.fail_after(WAIT_S):
        await registration.registered.wait()
    await anyio.to_thread.run_sync(proxy.wait_registered, "echo")
    # A carrier call to the AOR reaches the node through the proxy (Record-Route in the path).
    caller = peers.sipp("uac_audio_dtmf.xml", remote=proxy.address, service="echo",
                        duration_ms=1500, calls=1)  # fmt: skip
    result = await anyio.to_thread.run_sync(caller.run)
    assert result.ok, result.describe()
    await registration.stop()
    assert not [r for r in await anyio.to_thread.run_sync(proxy.registrations) if r.aor == "echo"]
