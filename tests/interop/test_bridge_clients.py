"""Real clients on both sides of the bridge: pipecat as the bot, baresip as caller and callee,
kamailio as a registering trunk.

Each test puts an unmodified third-party program where a customer's would be, because the
gateway must work with what people run, not only with our strict test bot: pipecat parses the
``start`` message with its own code, baresip negotiates and plays like a desk phone, kamailio
challenges a REGISTER like a carrier. The node runs in-process with its control plane at moto;
what each test asserts is what a user sees: the audio on the wire (tshark), what the bot heard,
the call record and the events.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from shared.dynamo.repository import Repository
from shared.models import Call, CallStatus, Direction
from tests.interop.audio import find_segments
from tests.interop.capture import RtpSeen, heard_pcm, read_rtp
from tests.interop.gateway import (
    CALLER_ID,
    DESTINATION,
    add_trunk,
    event_types,
    make_tenant,
    node_address,
    originate_for,
    queued_call,
    read_events,
    running_gateway,
    wait_record,
)
from tests.interop.peers import PeerError, Peers
from tests.interop.pipecat import PipecatBot
from tests.support.twilio_bot import BotSession, StrictTwilioBot

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

pytestmark = pytest.mark.anyio

SIPP_CALLER = "+155501001"  # From user of the first call of tests/interop/peers/sipp/uac_*.xml
CALL_MS = 6000  # sipp's talk time before its DTMF and BYE: the whole caller utterance
SPEECH_S = 7.0  # baresip's source: 0.5 s of silence, then the ~6 s utterance
SPEECH_BYTES = int(SPEECH_S * 8000)  # μ-law at 8 kHz
HEARD = 0.8  # share of the utterance's voiced half-seconds found (audio.find_segments)
TRUNK_PASSWORD = "s3cret"  # what the shared kamailio config accepts for any user
WAIT_S = 20.0
EVENTS_ANSWERED = ["call.ringing", "call.answered", "call.completed"]


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    return audioop.ulaw2lin(ulaw, 2)


def call_uuid_of(session: BotSession) -> str:
    assert session.start is not None
    return str(session.start["start"]["customParameters"]["call_uuid"])


def sent_to(packets: list[RtpSeen], low: int, high: int) -> list[RtpSeen]:
    """Packets to a port in ``low..high`` from a port outside it (what a peer was sent)."""
    return [p for p in packets if low <= p.dst[1] <= high and not low <= p.src[1] <= high]


def assert_completed(record: Call, events: list[dict[str, Any]], direction: Direction) -> None:
    assert record.status is CallStatus.COMPLETED, record
    assert record.hangup_cause == "NORMAL_CLEARING", record
    assert record.direction is direction and record.answered_at is not None, record
    assert event_types(events) == EVENTS_ANSWERED, events


# --------------------------------------------------------------------------- 4. pipecat


@pytest.fixture
def pipecat(tmp_path: Path) -> Iterator[PipecatBot]:
    """A started pipecat echo bot; its log tail is printed at teardown (shown on failure)."""
    bot = PipecatBot(tmp_path / "pipecat")
    try:
        yield bot.start()
    finally:
        bot.stop()
        print(f"\n{bot.report()}")


async def test_pipecat_bot_takes_a_carrier_call_and_echoes_it(
    peers: Peers, aws: Any, repo: Repository, pipecat: PipecatBot
) -> None:
    tenant = make_tenant(repo, socket_url=pipecat.url)
    async with running_gateway() as node:
        sip_port = node.endpoint.local_addr[1]
        caller = peers.sipp("uac_audio_dtmf.xml", remote=node_address(node),
                            service=tenant.number, duration_ms=CALL_MS, calls=1)  # fmt: skip
        capture = peers.capture("pipecat", ports=[sip_port, caller.media_port])
        await anyio.to_thread.run_sync(capture.start)
        result = await anyio.to_thread.run_sync(caller.run)
        await anyio.to_thread.run_sync(capture.stop)
        parsed = pipecat.parsed_calls()
        assert len(parsed) == 1, parsed
        call_uuid = str(parsed[0].call_id)
        record = await wait_record(repo, call_uuid)
        events = await read_events(node, call_uuid)
    await anyio.to_thread.run_sync(pipecat.wait_ended, call_uuid)

    assert result.ok, result.describe()
    # pipecat's own parser recognised a Twilio stream and read our call from it.
    (call,) = parsed
    assert call.transport == "twilio", call
    assert call.call_id == str(record.call_uuid)
    assert call.from_number == SIPP_CALLER and call.to_number == tenant.number, call
    assert call.stream_id is not None and call.stream_id.startswith("MZ"), call
    assert call.body["direction"] == "inbound", call.body
    assert call.body["account_id"] == tenant.account.account_id, call.body
    # The caller heard its own speech, echoed by pipecat's pipeline through the node.
    packets = read_rtp(capture.path, sip_ports=[sip_port])
    to_caller = sent_to(packets, caller.media_port, caller.media_port)
    heard = heard_pcm(to_caller, dst_port=caller.media_port)
    found = find_segments(peers.media.caller_wav, heard)
    assert found.fraction >= HEARD, found
    # The record and the events: a whole call, the bot's audio counted.
    assert_completed(record, events, Direction.INBOUND)
    assert record.from_number == SIPP_CALLER and record.to_number == tenant.number
    bot_stats = record.stats["bot"][0]
    assert bot_stats["media_in"] > 100 and bot_stats["ignored"] == 0, bot_stats


# --------------------------------------------------------------------------- 5. baresip calls


async def test_baresip_calls_a_number_and_hears_itself_through_the_bot(
    peers: Peers, aws: Any, repo: Repository
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        async with running_gateway() as node:
            sip_port = node.endpoint.local_addr[1]
            phone = peers.baresip("caller")
            await anyio.to_thread.run_sync(phone.start)
            low, high = phone.rtp_ports
            capture = peers.capture("baresip", ports=[sip_port, *range(low, high + 1)])
            await anyio.to_thread.run_sync(capture.start)
            await anyio.to_thread.run_sync(phone.dial, f"sip:{tenant.number}@{node_address(node)}")
            await anyio.to_thread.run_sync(phone.wait_event, "CALL_ESTABLISHED")
            session = await bot.next_session(10)
            await session.wait_for(lambda: len(session.audio) >= SPEECH_BYTES, "speech", WAIT_S)
            await anyio.to_thread.run_sync(phone.hangup)
            await anyio.to_thread.run_sync(phone.wait_event, "CALL_CLOSED")
            await session.wait_closed()
            await anyio.to_thread.run_sync(capture.stop)
            call_uuid = call_uuid_of(session)
            record = await wait_record(repo, call_uuid)
            events = await read_events(node, call_uuid)

    # The bot had a whole, well-formed stream from the phone, ended by the phone's BYE.
    assert session.violations == [], session.violations
    assert session.stop is not None and session.close_code == 1000
    assert session.start is not None
    params = session.start["start"]["customParameters"]
    assert params["direction"] == "inbound" and params["to_number"] == tenant.number, params
    assert params["from_number"] == phone.user, params
    # What the phone said reached the bot ...
    to_bot = find_segments(peers.media.caller_wav, ulaw_to_pcm(bytes(session.audio)))
    assert to_bot.fraction >= HEARD, to_bot
    # ... and what the node sent the phone (the bot's echo) is the phone's own speech.
    to_phone = sent_to(read_rtp(capture.path, sip_ports=[sip_port]), low, high)
    assert to_phone, "the node sent the phone no RTP"
    heard = heard_pcm(to_phone, dst_port=to_phone[0].dst[1])
    found = find_segments(peers.media.caller_wav, heard)
    assert found.fraction >= HEARD, found
    assert_completed(record, events, Direction.INBOUND)
    assert record.from_number == phone.user and record.to_number == tenant.number


# --------------------------------------------------------------------------- 6. baresip answers


async def test_baresip_answers_an_originated_call_and_the_bot_hears_it(
    peers: Peers, aws: Any, repo: Repository
) -> None:
    # The callee is a phone line whose number is the destination (what a carrier delivers);
    # it answers by itself (answermode=auto).
    phone = peers.baresip("callee", user=DESTINATION)
    await anyio.to_thread.run_sync(phone.start)
    async with StrictTwilioBot() as bot:
        tenant = make_tenant(repo)
        add_trunk(repo, tenant.account, phone.sip_port)
        # An originate queue of its own: no other test's node can take this call's originate.
        originate_queue = boto3.client("sqs").create_queue(
            QueueName=f"agera-test-originate-{uuid.uuid4().hex[:12]}"
        )["QueueUrl"]
        async with running_gateway(originate_queue_url=originate_queue) as node:
            call = queued_call(repo, tenant.account, socket_url=bot.url)
            command = originate_for(call)
            boto3.client("sqs").send_message(
                QueueUrl=node.settings.originate_queue_url, MessageBody=command.model_dump_json()
            )
            # baresip auto-answers without a CALL_INCOMING event: the call's first is this one.
            try:
                incoming = await anyio.to_thread.run_sync(phone.wait_event, "CALL_ESTABLISHED")
            except PeerError as error:
                now = repo.get(Call, call.call_uuid, consistent=True)
                state = (now.status.value, now.hangup_cause) if now is not None else None
                raise AssertionError(f"phone never called ({error}); record: {state}") from None
            session = await bot.next_session(10)
            await session.wait_for(lambda: len(session.audio) >= SPEECH_BYTES, "speech", WAIT_S)
            await session.close(1000, "goodbye")  # the bot ends the call: the node hangs up
            closed = await anyio.to_thread.run_sync(phone.wait_event, "CALL_CLOSED")
            record = await wait_record(repo, str(call.call_uuid))
            events = await read_events(node, str(call.call_uuid))

    assert incoming.direction == "incoming", incoming
    assert CALLER_ID in incoming.peer_uri, incoming  # the From the node dialled with
    assert closed.call_id == incoming.call_id
    assert session.violations == [], session.violations
    assert session.start is not None
    params = session.start["start"]["customParameters"]
    assert params["direction"] == "outbound", params
    assert params["call_uuid"] == str(call.call_uuid), params
    assert params["from_number"] == CALLER_ID and params["to_number"] == DESTINATION, params
    assert session.start["start"]["callSid"] == str(call.call_uuid)
    # The bot heard the phone's speech.
    found = find_segments(peers.media.caller_wav, ulaw_to_pcm(bytes(session.audio)))
    assert found.fraction >= HEARD, found
    assert_completed(record, events, Direction.OUTBOUND)
    assert record.node_id == node.node_id


# --------------------------------------------------------------------------- 7. registration


async def test_node_registers_a_dynamodb_trunk_and_takes_calls_through_it(
    peers: Peers, aws: Any, repo: Repository
) -> None:
    proxy = peers.kamailio()
    await anyio.to_thread.run_sync(proxy.start)
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        assert tenant.number is not None
        # The trunk's username is the number the carrier delivers to this node.
        add_trunk(
            repo,
            tenant.account,
            proxy.port,
            username=tenant.number,
            password=TRUNK_PASSWORD,
            needs_registration=True,
        )
        async with running_gateway() as node:
            sip_port = node.endpoint.local_addr[1]
            registration = await anyio.to_thread.run_sync(proxy.wait_registered, tenant.number)
            # A carrier call to the registered AoR, through the proxy, reaches the node's bot.
            caller = peers.sipp("uac_audio_dtmf.xml", remote=proxy.address,
                                service=tenant.number, duration_ms=2000, calls=1)  # fmt: skip
            result = await anyio.to_thread.run_sync(caller.run)
            session = await bot.next_session(10)
            await session.wait_closed()
            call_uuid = call_uuid_of(session)
            record = await wait_record(repo, call_uuid)
            events = await read_events(node, call_uuid)
        # A node that stops unregisters (Expires: 0), so the carrier stops sending it calls.
        left = await anyio.to_thread.run_sync(proxy.registrations)

    assert f"@127.0.0.1:{sip_port}" in registration.contact, registration
    assert registration.expires is not None and registration.expires > 0, registration
    assert result.ok, result.describe()
    assert session.violations == [], session.violations
    assert session.start is not None
    params = session.start["start"]["customParameters"]
    assert params["to_number"] == tenant.number and params["from_number"] == SIPP_CALLER, params
    assert session.digits == list("1234#")
    assert_completed(record, events, Direction.INBOUND)
    assert [r for r in left if r.aor == tenant.number] == [], left
