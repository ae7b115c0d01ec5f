"""Commands over SQS, end to end: originate, hangup, redirect and transfer reach a real node.

Each command is sent exactly as the API sends it (``shared.commands.X(...).model_dump_json()``)
to the queue the API uses: the shared originate queue, or the node's own command queue. The
node runs in-process with its control plane at moto; the carriers and trunks are sipp, the
bots StrictTwilioBot. Every test reads back what a user can see: the SIP messages the peer got
(sipp's traces), the bot's messages, the call record and the events the node published, since
"a command either does what it says or is dropped without a trace" is the contract.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from edge_media.node import EdgeNode
from shared.commands import Hangup, Redirect, Transfer
from shared.dynamo.repository import Repository
from shared.models import Call, CallStatus, Direction
from tests.edge_media.routing.routing_peer import Reply, WebhookPeer
from tests.interop.audio import find_segments
from tests.interop.capture import (
    AUDIO_PAYLOAD_TYPES,
    PT_PCMU,
    RtpSeen,
    heard_pcm,
    inter_departure_ms,
    read_rtp,
    split_streams,
)
from tests.interop.gateway import (
    CALLER_ID,
    DESTINATION,
    add_number,
    add_trunk,
    calls_to,
    command_queue,
    custom_parameters,
    event_types,
    make_tenant,
    node_address,
    originate_for,
    play_continuously,
    queued_call,
    read_events,
    running_gateway,
    send_command,
    started,
    tone_frame,
    trunk_peer,
    wait_record,
)
from tests.interop.peers import HOST, Peers, SippRun, call_timings, free_port
from tests.support.twilio_bot import BotSession, StrictTwilioBot

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

pytestmark = pytest.mark.anyio

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UNTIL_BYE = SCENARIOS / "uac_until_bye.xml"  # no REFER in Allow, waits for the node's BYE

CALLER_NAME = "Agera Outbound"
SIPP_CALLER = "+155501001"  # From user of the first call of tests/interop/peers/sipp/uac_*.xml
NORMAL_CLEARING_Q850 = "Q.850;cause=16"
TRUNK_USER, TRUNK_PASSWORD = "gateway", "s3cret"
MAX_GAP_MS = 60.0
CALLEE_FRAMES = 250  # callee.ulaw, which the sipp UAS plays once: about 5 s
# A relayed transfer joins the legs a moment after the target answered (CommandHandler.transfer
# writes call.transferred in between); what the target says in that moment is lost.
MAX_JOIN_CLIP_FRAMES = 25


# --------------------------------------------------------------------------- helpers


def gateway() -> Any:
    """``running_gateway`` with an originate queue of its own.

    Why not the session's shared one: a node that stops cancels its consumer's long poll, and
    the queue still hands the next message to that abandoned poll (moto does), where it stays
    in flight, hidden from the next test's node for the queue's 60 s visibility timeout.
    """
    queue = boto3.client("sqs").create_queue(
        QueueName=f"agera-test-originate-{uuid.uuid4().hex[:12]}"
    )
    return running_gateway(originate_queue_url=queue["QueueUrl"])


def originate_consumer(node: EdgeNode) -> Any:
    return node._control.consumers[0]


def commands_consumer(node: EdgeNode) -> Any:
    return node._control.consumers[1]


async def wait_until(predicate: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds:g} s")
        await anyio.sleep(0.05)


async def wait_handled(consumer: Any, command_id: str, seconds: float = 10.0) -> None:
    """Until the consumer is done with ``command_id`` (handled or dropped, and deleted)."""
    await wait_until(
        lambda: consumer.recent.seen(command_id, consumer.clock()), f"command {command_id}", seconds
    )


async def wait_status(repo: Repository, call_uuid: uuid.UUID, status: CallStatus) -> Call:
    with anyio.fail_after(10):
        while True:
            call = repo.get(Call, call_uuid, consistent=True)
            if call is not None and call.status is status:
                return call
            await anyio.sleep(0.05)


def sip_messages(run: SippRun, *, received: bool = True) -> list[str]:
    """Every SIP message in sipp's ``-trace_msg`` file that it received (or sent), in order."""
    text = run.messages_path.read_text(errors="replace")
    word = "received" if received else "sent"
    out = []
    for block in re.split(r"^-{20,}.*$", text, flags=re.MULTILINE):
        head, _, body = block.strip("\n").partition("\n")
        if f"message {word}" in head:
            out.append(body.strip("\n"))
    return out


def requests_of(messages: list[str], method: str) -> list[str]:
    return [m for m in messages if m.startswith(f"{method} ")]


def header(message: str, name: str) -> str | None:
    for line in message.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


async def hang_up(
    node: EdgeNode,
    repo: Any,
    tenant: Any,
    call_uuid: uuid.UUID,
    bot: BotSession,
    caller: SippRun,
) -> tuple[Any, Call, list[dict[str, Any]]]:
    """A hangup command for a bridged call, then its outcome: the sipp caller's result, the
    completed record and the call's events, once the bot's stream has closed."""
    await send_command(
        command_queue(node), Hangup(call_uuid=call_uuid, account_id=tenant.account.account_id)
    )
    await bot.wait_closed(10)
    result = await anyio.to_thread.run_sync(caller.wait, 30.0)
    record = await wait_record(repo, str(call_uuid))
    return result, record, await read_events(node, str(call_uuid))


async def transfer_a_bridged_call(
    peers: Peers,
    node: EdgeNode,
    repo: Any,
    tenant: Any,
    bot: StrictTwilioBot,
    target: SippRun,
    destination: str,
) -> tuple[SippRun, BotSession, Any, Call, list[dict[str, Any]], Any]:
    """A sipp caller talks to ``bot`` for a second, then a transfer command sends the call to
    ``destination`` (answered by ``target``); returns the caller, the bot session, the caller's
    result, the record, the events and the RTP capture of all three legs, once the call ended."""
    caller = peers.sipp(UNTIL_BYE, remote=node_address(node), service=tenant.number, calls=1)
    capture = peers.capture(
        "transfer", ports=[node.endpoint.local_addr[1], caller.media_port, target.media_port]
    )
    await anyio.to_thread.run_sync(capture.start)
    await anyio.to_thread.run_sync(caller.start)
    session = await started(bot, 10)
    call_uuid = uuid.UUID(custom_parameters(session)["call_uuid"])
    await session.wait_for(lambda: len(session.audio) >= 8000, "1 s of audio", 5)
    await send_command(
        command_queue(node),
        Transfer(
            call_uuid=call_uuid, account_id=tenant.account.account_id, destination=destination
        ),
    )
    await session.wait_closed(5)
    caller_result = await anyio.to_thread.run_sync(caller.wait, 30.0)
    record = await wait_record(repo, str(call_uuid))
    events = await read_events(node, str(call_uuid))
    await anyio.to_thread.run_sync(capture.stop)
    return caller, session, caller_result, record, events, capture


def no_events(queue_url: str, *, polls: int = 2) -> list[str]:
    """Whatever is on the node's events queue now (a test expects nothing)."""
    sqs = boto3.client("sqs")
    found = []
    for _ in range(polls):
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        found += [message["Body"] for message in reply.get("Messages", [])]
    return found


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    return audioop.ulaw2lin(ulaw, 2)


def from_node(packets: list[RtpSeen], port: int) -> list[RtpSeen]:
    """Audio the node sent to a peer's media ``port``."""
    return [
        p
        for p in packets
        if p.dst[1] == port and p.src[1] != port and p.payload_type in AUDIO_PAYLOAD_TYPES
    ]


# --------------------------------------------------------------------------- 1. originate


async def test_originate_dials_the_trunk_and_bridges_the_bot_on_answer(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo)
        # The trunk hangs up 8 s after the answer.
        trunk = await trunk_peer(peers, repo, tenant.account, "uas_answer.xml")
        call = queued_call(repo, tenant.account, caller_id_name=CALLER_NAME, socket_url=bot.url)
        async with gateway() as node:
            await send_command(node.settings.originate_queue_url, originate_for(call))
            session = await started(bot, 10)
            await session.wait_closed(15)
            record = await wait_record(repo, str(call.call_uuid))
            events = await read_events(node, str(call.call_uuid))
        result = await anyio.to_thread.run_sync(trunk.wait, 10.0)

    assert result.ok, result.describe()
    # The INVITE the trunk got: Request-URI the destination, From the caller id and name.
    invites = requests_of(sip_messages(trunk), "INVITE")
    assert len(invites) == 1, invites
    request_line = invites[0].splitlines()[0]
    assert request_line == f"INVITE sip:{DESTINATION}@{HOST}:{trunk.local_port} SIP/2.0"
    from_ = header(invites[0], "From")
    assert from_ is not None and from_.startswith(f'"{CALLER_NAME}" <sip:{CALLER_ID}@'), from_
    # The bot was connected on the answer with the outbound call's parameters.
    assert session.violations == [], session.violations
    names = session.events()
    assert names[:2] == ["connected", "start"] and names[-1] == "stop", names[:3] + names[-3:]
    assert session.close_code == 1000
    assert custom_parameters(session) == {
        "from_number": CALLER_ID,
        "to_number": DESTINATION,
        "call_uuid": str(call.call_uuid),
        "direction": "outbound",
        "account_id": tenant.account.account_id,
    }
    # The callee's speech reached the bot.
    heard = find_segments(peers.media.callee_wav, ulaw_to_pcm(bytes(session.audio)))
    assert heard.fraction >= 0.9, heard
    # Claimed by this node; completed when the trunk hung up after its 8 s.
    assert [t.bye_by_us for t in call_timings(result.messages)] == [True]
    assert record.node_id == node.node_id
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert record.duration is not None and 7 <= record.duration <= 10, record.duration
    assert event_types(events) == ["call.ringing", "call.answered", "call.completed"]


# --------------------------------------------------------------------------- 2. ring timeout, auth


async def test_originate_through_a_trunk_that_asks_for_digest_auth(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot() as bot:
        tenant = make_tenant(repo)
        trunk = peers.sipp(
            "uas_auth.xml", calls=1, keys={"user": TRUNK_USER, "pass": TRUNK_PASSWORD}
        )
        await anyio.to_thread.run_sync(trunk.start)
        add_trunk(
            repo, tenant.account, trunk.local_port, username=TRUNK_USER, password=TRUNK_PASSWORD
        )
        call = queued_call(repo, tenant.account, socket_url=bot.url)
        async with gateway() as node:
            await send_command(node.settings.originate_queue_url, originate_for(call))
            session = await started(bot, 10)
            # A second of the callee's audio, then the bot ends the call.
            await session.wait_for(lambda: len(session.audio) >= 8000, "1 s of audio", 5)
            await session.close(1000)
            record = await wait_record(repo, str(call.call_uuid))
            events = await read_events(node, str(call.call_uuid))
        result = await anyio.to_thread.run_sync(trunk.wait, 10.0)

    # 401 to the first INVITE, then an INVITE with credentials that verifyauth accepted.
    assert result.ok, result.describe()
    invites = requests_of(sip_messages(trunk), "INVITE")
    assert len(invites) == 2, [i.splitlines()[0] for i in invites]
    assert header(invites[0], "Authorization") is None
    authorization = header(invites[1], "Authorization") or ""
    assert authorization.startswith("Digest ") and f'username="{TRUNK_USER}"' in authorization
    assert [m.status for m in result.messages if m.sent and m.is_response][:1] == [401]
    assert session.violations == [], session.violations
    assert custom_parameters(session)["direction"] == "outbound"
    assert record.node_id == node.node_id
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert event_types(events) == ["call.ringing", "call.answered", "call.completed"]


# --------------------------------------------------------------------------- 3. not queued


async def test_originate_for_a_call_no_longer_queued_is_dropped(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo)
        trunk = await trunk_peer(peers, repo, tenant.account, "uas_answer.xml")
        canceled = queued_call(repo, tenant.account, socket_url=bot.url, status=CallStatus.CANCELED)
        elsewhere = queued_call(repo, tenant.account, socket_url=bot.url, node_id="another-node")
        unknown = Call(
            account_id=tenant.account.account_id,
            direction=Direction.OUTBOUND,
            from_number=CALLER_ID,
            to_number=DESTINATION,
            socket_url=bot.url,
        )  # never written: the API's write failed, or the record expired
        before = {
            c.call_uuid: repo.get(Call, c.call_uuid, consistent=True) for c in (canceled, elsewhere)
        }
        async with gateway() as node:
            commands = [originate_for(c) for c in (canceled, elsewhere, unknown)]
            for command in commands:
                await send_command(node.settings.originate_queue_url, command)
            consumer = originate_consumer(node)
            for command in commands:
                await wait_handled(consumer, command.id)
            await anyio.sleep(1.0)  # an INVITE, had one been sent, is at the trunk by now
            leftovers = await anyio.to_thread.run_sync(no_events, node.settings.events_queue_url)
            live = dict(node.live)
            failed = (consumer.failed, consumer.retried, consumer.invalid)
        result = await anyio.to_thread.run_sync(trunk.stop)

    assert result.messages == (), result.describe()  # the trunk saw no INVITE at all
    assert bot.sessions == []
    assert live == {}
    assert leftovers == []
    assert failed == (0, 0, 0), failed  # dropped on purpose, not by a crash or a retry
    for call_uuid, stored in before.items():
        assert repo.get(Call, call_uuid, consistent=True) == stored
    assert repo.get(Call, unknown.call_uuid, consistent=True) is None


# --------------------------------------------------------------------------- 4. hangup


async def test_hangup_command_ends_an_inbound_call_once(peers: Peers, aws: Any, repo: Any) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        async with gateway() as node:
            caller = peers.sipp(
                UNTIL_BYE, remote=node_address(node), service=tenant.number, calls=1
            )
            await anyio.to_thread.run_sync(caller.start)
            session = await started(bot, 10)
            call_uuid = uuid.UUID(custom_parameters(session)["call_uuid"])
            # 1.5 s, not 1: 50 frames span only 0.98 s, and a burst after a stall can bring them
            # in under a second, which made the duration 0 (seen in CI)
            await session.wait_for(lambda: len(session.audio) >= 12000, "1.5 s of audio", 5)
            hangup = Hangup(call_uuid=call_uuid, account_id=tenant.account.account_id)
            # Delivered twice (SQS is at-least-once): applied once.
            await send_command(command_queue(node), hangup)
            await send_command(command_queue(node), hangup)
            await session.wait_closed(10)
            consumer = commands_consumer(node)
            await wait_until(lambda: consumer.duplicates >= 1, "the repeat dropped")
            result = await anyio.to_thread.run_sync(caller.wait, 30.0)
            record = await wait_record(repo, str(call_uuid))
            events = await read_events(node, str(call_uuid))
            counts = (consumer.handled, consumer.duplicates, consumer.failed, consumer.invalid)

    assert result.ok, result.describe()
    byes = requests_of(sip_messages(caller), "BYE")
    assert len({header(bye, "CSeq") for bye in byes}) == 1, byes  # one BYE (retransmits aside)
    reason = header(byes[0], "Reason") or ""
    assert reason.startswith(NORMAL_CLEARING_Q850), reason
    logged = [line.partition(":")[2].strip() for line in result.log_lines if "BYE Reason" in line]
    assert logged == [reason], result.log_lines  # what sipp's own header parse saw
    assert session.violations == [], session.violations
    assert session.events()[-1] == "stop" and session.close_code == 1000
    assert counts == (1, 1, 0, 0), counts
    assert record.node_id == node.node_id and record.direction is Direction.INBOUND
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert record.duration is not None and 1 <= record.duration <= 4, record.duration
    assert event_types(events) == ["call.ringing", "call.answered", "call.completed"]


async def test_hangup_command_while_an_outbound_call_rings_cancels_it(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo)
        trunk = await trunk_peer(peers, repo, tenant.account, "uas_ring_cancel.xml")
        call = queued_call(repo, tenant.account, socket_url=bot.url)
        async with gateway() as node:
            await send_command(
                node.settings.originate_queue_url, originate_for(call, ring_timeout=60)
            )
            await wait_status(repo, call.call_uuid, CallStatus.RINGING)
            await send_command(
                command_queue(node),
                Hangup(call_uuid=call.call_uuid, account_id=tenant.account.account_id),
            )
            record = await wait_record(repo, str(call.call_uuid))
            events = await read_events(node, str(call.call_uuid))
        result = await anyio.to_thread.run_sync(trunk.wait, 10.0)

    assert result.ok, result.describe()
    received = [m.method for m in result.messages if not m.sent and not m.is_response]
    assert received == ["INVITE", "CANCEL", "ACK"], received
    assert bot.sessions == []
    assert record.node_id == node.node_id
    assert record.status is CallStatus.CANCELED and record.hangup_cause == "ORIGINATOR_CANCEL"
    assert record.duration == 0
    assert event_types(events) == ["call.ringing", "call.completed"]


# --------------------------------------------------------------------------- 5. redirect


async def test_redirect_moves_the_call_to_another_bot_without_a_gap(
    peers: Peers, aws: Any, repo: Any
) -> None:
    tone = tone_frame()
    async with StrictTwilioBot() as bot_a, StrictTwilioBot(echo=True) as bot_b:
        tenant = make_tenant(repo, socket_url=bot_a.url)
        async with gateway() as node:
            caller = peers.sipp(
                UNTIL_BYE, remote=node_address(node), service=tenant.number, calls=1
            )
            capture = peers.capture(
                "redirect", ports=[node.endpoint.local_addr[1], caller.media_port]
            )
            await anyio.to_thread.run_sync(capture.start)
            epoch_minus_loop = time.time() - asyncio.get_running_loop().time()
            await anyio.to_thread.run_sync(caller.start)
            a = await started(bot_a, 10)
            talking = asyncio.ensure_future(play_continuously(a, tone))
            call_uuid = uuid.UUID(custom_parameters(a)["call_uuid"])
            await anyio.sleep(1.0)
            await send_command(
                command_queue(node),
                Redirect(
                    call_uuid=call_uuid,
                    account_id=tenant.account.account_id,
                    media_server=bot_b.url,
                ),
            )
            b = await started(bot_b, 10)
            await a.wait_closed(5)
            await b.wait_for(lambda: len(b.audio) >= 8000, "1 s of audio at B", 5)
            await anyio.sleep(1.0)
            caller_result, record, events = await hang_up(node, repo, tenant, call_uuid, b, caller)
            await talking
            await anyio.to_thread.run_sync(capture.stop)

    assert caller_result.ok, caller_result.describe()
    # A: a well-formed stream that ended with stop then close 1000.
    assert a.violations == [], a.violations
    assert a.events()[-1] == "stop" and a.close_code == 1000
    # B: connected/start for the same call, then the caller's audio, then stop at the hangup.
    assert b.violations == [], b.violations
    assert b.events()[:2] == ["connected", "start"] and b.events()[-1] == "stop"
    assert b.close_code == 1000
    assert custom_parameters(b)["call_uuid"] == str(call_uuid)
    assert custom_parameters(b)["direction"] == "inbound"
    assert b.start is not None
    b_started = b.received[1].at + epoch_minus_loop  # the start message, on the capture's clock
    # The caller's RTP from the node: one SSRC, no gap over 60 ms through the switch.
    packets = read_rtp(capture.path, sip_ports=[node.endpoint.local_addr[1]])
    to_caller = from_node(packets, caller.media_port)
    assert len(split_streams(to_caller)) == 1, list(split_streams(to_caller))
    through_switch = [p for p in to_caller if p.time <= b_started + 1.0]
    gaps = inter_departure_ms(through_switch)
    assert len(gaps) >= 50, len(gaps)
    late = [  # (gap in ms, when it ended, in s after B's start)
        (round(gap), round(p.time - b_started, 3))
        for gap, p in zip(gaps, through_switch[1:], strict=True)
        if gap > MAX_GAP_MS
    ]
    assert late == [], late
    # A's tone played before the switch and stopped with it; B's echo (the caller) after.
    tones = [p for p in to_caller if p.payload == tone]
    assert len(tones) >= 40 and tones[0].time < b_started, len(tones)
    assert tones[-1].time <= b_started + 0.5, tones[-1].time - b_started
    after = heard_pcm(
        [p for p in to_caller if p.time > b_started + 0.5], dst_port=caller.media_port
    )
    echoed = find_segments(peers.media.caller_wav, after)
    assert echoed.found >= 2, echoed
    # The record and the events.
    assert record.socket_url == bot_b.url
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert record.node_id == node.node_id
    types = event_types(events)
    assert types == ["call.ringing", "call.answered", "call.redirected", "call.completed"], types
    assert events[2]["media_server"] == bot_b.url


async def test_redirect_to_an_unreachable_bot_keeps_the_first_one(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot(echo=True) as bot_a, StrictTwilioBot(refuse_status=503) as bot_b:
        tenant = make_tenant(repo, socket_url=bot_a.url)
        async with gateway() as node:
            caller = peers.sipp(
                UNTIL_BYE, remote=node_address(node), service=tenant.number, calls=1
            )
            await anyio.to_thread.run_sync(caller.start)
            a = await started(bot_a, 10)
            call_uuid = uuid.UUID(custom_parameters(a)["call_uuid"])
            redirect = Redirect(
                call_uuid=call_uuid, account_id=tenant.account.account_id, media_server=bot_b.url
            )
            await send_command(command_queue(node), redirect)
            await wait_handled(commands_consumer(node), redirect.id)
            await wait_until(lambda: len(bot_b.requests) == 1, "the attempt at B")
            # The attempt is over once B refused; A still gets the caller a second later.
            heard_before = len(a.audio)
            await anyio.sleep(1.0)
            heard_after = len(a.audio)
            result, record, events = await hang_up(node, repo, tenant, call_uuid, a, caller)

    assert result.ok, result.describe()
    assert bot_b.sessions == []
    assert heard_after - heard_before >= 6000, (heard_before, heard_after)  # >= 0.75 s more
    assert a.violations == [], a.violations
    assert a.events()[-1] == "stop" and a.close_code == 1000
    assert event_types(events) == ["call.ringing", "call.answered", "call.completed"], events
    assert record.socket_url == bot_a.url, (record.socket_url, bot_a.url, bot_b.url)
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"


async def test_redirect_while_the_call_routes_sends_it_to_the_new_bot(
    peers: Peers, aws: Any, repo: Any
) -> None:
    """A redirect accepted while the routing webhook still thinks (the API takes redirects of
    ringing calls) decides where the call goes: the bot the webhook names never hears of it."""
    async with (
        StrictTwilioBot(echo=True) as bot_a,
        StrictTwilioBot(echo=True) as bot_b,
    ):
        tenant = make_tenant(repo)
        with WebhookPeer(tenant.account.webhook_secret) as hook:
            hook.reply = Reply.json({"action": "connect", "socket_url": bot_a.url}, delay=1.5)
            tenant.number = add_number(repo, tenant.account, webhook_url=hook.url("/route"))
            async with gateway() as node:
                caller = peers.sipp(
                    UNTIL_BYE, remote=node_address(node), service=tenant.number, calls=1
                )
                await anyio.to_thread.run_sync(caller.start)
                call_uuid = await record_of_number(repo, tenant.number)
                await send_command(
                    command_queue(node),
                    Redirect(
                        call_uuid=call_uuid,
                        account_id=tenant.account.account_id,
                        media_server=bot_b.url,
                    ),
                )
                b = await started(bot_b, 10)
                await b.wait_for(lambda: len(b.audio) >= 8000, "1 s of audio at B", 5)
                result, record, events = await hang_up(node, repo, tenant, call_uuid, b, caller)

    assert result.ok, result.describe()
    assert len(hook.received) == 1  # the webhook was asked, and its answer overruled
    assert bot_a.sessions == [] and bot_a.requests == []
    assert custom_parameters(b)["call_uuid"] == str(call_uuid)
    assert b.violations == [], b.violations
    assert event_types(events) == ["call.ringing", "call.answered", "call.completed"], events
    assert record.socket_url == bot_b.url
    assert record.status is CallStatus.COMPLETED


async def record_of_number(repo: Any, number: str, seconds: float = 10.0) -> uuid.UUID:
    """The call_uuid of the (one) call record to ``number``, once the node has written it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in await anyio.to_thread.run_sync(calls_to, repo, number):
            return uuid.UUID(item["call_uuid"]["S"])
        await anyio.sleep(0.05)
    raise AssertionError(f"no call record to {number} within {seconds:g} s")


# --------------------------------------------------------------------------- 6. transfer


async def test_transfer_to_a_sip_uri_from_a_caller_without_refer_is_relayed(
    peers: Peers, aws: Any, repo: Any
) -> None:
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        target = peers.sipp("uas_answer.xml", calls=1)  # hangs up 8 s after the answer
        await anyio.to_thread.run_sync(target.start)
        destination = f"sip:agent@{HOST}:{target.local_port}"
        async with gateway() as node:
            run = await transfer_a_bridged_call(peers, node, repo, tenant, bot, target, destination)
        target_result = await anyio.to_thread.run_sync(target.wait, 10.0)
        caller, session, caller_result, record, events, capture = run

    # The caller was never sent a REFER; the target was dialed with the caller's number.
    assert caller_result.ok, caller_result.describe()
    assert requests_of(sip_messages(caller), "REFER") == []
    assert target_result.ok, target_result.describe()
    invites = requests_of(sip_messages(target), "INVITE")
    assert len(invites) == 1 and invites[0].startswith(f"INVITE {destination} SIP/2.0"), invites
    assert (header(invites[0], "From") or "").startswith(f"<sip:{SIPP_CALLER}@"), invites[0]
    # The target's BYE ended the relay; the node hung the caller up in turn.
    assert [t.bye_by_us for t in call_timings(target_result.messages)] == [True]
    # The bot was stopped first.
    assert session.violations == [], session.violations
    assert session.events()[-1] == "stop" and session.close_code == 1000
    # Audio both ways through the node: the caller's speech at the target and the target's
    # speech at the caller.
    packets = read_rtp(capture.path, sip_ports=[node.endpoint.local_addr[1]])
    at_target = heard_pcm(from_node(packets, target.media_port), dst_port=target.media_port)
    caller_heard_at_target = find_segments(peers.media.caller_wav, at_target)
    assert caller_heard_at_target.fraction >= 0.9, caller_heard_at_target
    # The target's speech at the caller, frame for frame (PCMU on both legs passes through as
    # is): every frame from the moment the legs were joined; only a short head can be missing.
    from_target = [
        p.payload for p in packets if p.src[1] == target.media_port and p.payload_type == PT_PCMU
    ]
    delivered = {p.payload for p in from_node(packets, caller.media_port)}
    missing = [i for i, payload in enumerate(from_target) if payload not in delivered]
    assert len(from_target) >= CALLEE_FRAMES, len(from_target)
    assert missing == list(range(len(missing))), missing  # no hole once the relay runs
    assert len(missing) <= MAX_JOIN_CLIP_FRAMES, missing
    # The record and the events.
    assert record.transferred_to == destination
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert record.node_id == node.node_id
    types = event_types(events)
    assert types == ["call.ringing", "call.answered", "call.transferred", "call.completed"], types
    assert events[2]["method"] == "bridge" and events[2]["destination"] == destination


async def test_transfer_to_a_number_dials_it_through_the_accounts_trunk(
    peers: Peers, aws: Any, repo: Any
) -> None:
    """A phone number is dialled through the account's trunk and relayed (not REFERred: the
    caller would have no route to the carrier)."""
    number = "+15557654321"
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        # The carrier; hangs up 8 s after the answer.
        target = await trunk_peer(peers, repo, tenant.account, "uas_answer.xml")
        async with gateway() as node:
            run = await transfer_a_bridged_call(peers, node, repo, tenant, bot, target, number)
        target_result = await anyio.to_thread.run_sync(target.wait, 10.0)
        caller, session, caller_result, record, events, capture = run

    assert caller_result.ok, caller_result.describe()
    assert requests_of(sip_messages(caller), "REFER") == []
    assert target_result.ok, target_result.describe()
    invites = requests_of(sip_messages(target), "INVITE")
    assert len(invites) == 1, invites
    assert invites[0].startswith(f"INVITE sip:{number}@{HOST}:{target.local_port}"), invites[0]
    assert session.events()[-1] == "stop" and session.close_code == 1000
    packets = read_rtp(capture.path, sip_ports=[node.endpoint.local_addr[1]])
    at_target = heard_pcm(from_node(packets, target.media_port), dst_port=target.media_port)
    heard = find_segments(peers.media.caller_wav, at_target)
    assert heard.fraction >= 0.9, heard  # the caller's speech reached the carrier
    assert record.transferred_to == number
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    types = event_types(events)
    assert types == ["call.ringing", "call.answered", "call.transferred", "call.completed"], types
    assert events[2]["method"] == "bridge" and events[2]["destination"] == number


async def test_transfer_to_a_caller_that_accepts_refer_sends_refer(
    peers: Peers, aws: Any, repo: Any
) -> None:
    destination = f"sip:agent@{HOST}:{free_port()}"  # the caller only logs it, never dials it
    async with StrictTwilioBot(echo=True) as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        async with gateway() as node:
            caller = peers.sipp(
                "uac_refer_accept.xml", remote=node_address(node), service=tenant.number, calls=1
            )
            await anyio.to_thread.run_sync(caller.start)
            session = await started(bot, 10)
            call_uuid = uuid.UUID(custom_parameters(session)["call_uuid"])
            await session.wait_for(lambda: len(session.audio) >= 8000, "1 s of audio", 5)
            await send_command(
                command_queue(node),
                Transfer(
                    call_uuid=call_uuid,
                    account_id=tenant.account.account_id,
                    destination=destination,
                ),
            )
            await session.wait_closed(5)
            result = await anyio.to_thread.run_sync(caller.wait, 30.0)
            record = await wait_record(repo, str(call_uuid))
            events = await read_events(node, str(call_uuid))

    # REFER (202), NOTIFY 100 and 200, then the node's BYE: the scenario ran to its end.
    assert result.ok, result.describe()
    refers = requests_of(sip_messages(caller), "REFER")
    assert len({header(r, "CSeq") for r in refers}) == 1, refers
    refer_to = header(refers[0], "Refer-To") or ""
    assert refer_to.strip("<>") == destination, refer_to
    logged = [line.partition("REFER to")[2].strip() for line in result.log_lines]
    assert logged == [refer_to], result.log_lines  # what sipp's own header parse saw
    assert session.violations == [], session.violations
    assert session.events()[-1] == "stop" and session.close_code == 1000
    assert record.transferred_to == destination
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert record.node_id == node.node_id
    types = event_types(events)
    assert types == ["call.ringing", "call.answered", "call.transferred", "call.completed"], types
    assert events[2]["method"] == "refer" and events[2]["destination"] == destination


# --------------------------------------------------------------------------- 7. not owned
