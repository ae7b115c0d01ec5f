"""Certify FakeElevenLabs against the official ElevenLabs Python SDK (dev extra ``elevenlabs``).

Why: the gateway's driver is tested against the fake, so the fake must speak what ElevenLabs
speaks. The SDK is the other real client of the protocol; pointed at the fake (its
``base_url``), the SDK's own messages must be accepted (initiation, audio chunks, pongs, no key
on the socket) and the fake's messages understood by the SDK (it plays the fake's audio and
drops audio of an interrupted reply), for a public agent and for a private one (signed URL).

The SDK is imported unconditionally: it is in the dev extras with pytest itself, so a missing
SDK is an error here, never a skip. Its import touches a websockets alias deprecated in 17.x,
hence the warning filter around it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs import ElevenLabs
    from elevenlabs.conversational_ai.conversation import (
        AsyncAudioInterface,
        AsyncConversation,
        ConversationInitiationData,
        DisconnectionDetails,
    )

from tests.support.fake_elevenlabs import (
    DEFAULT_AGENT_ID,
    DEFAULT_API_KEY,
    FakeElevenLabs,
    FakeSession,
)

pytestmark = pytest.mark.anyio

WAIT = 5.0
CHUNKS = [bytes([index]) * 160 for index in range(1, 11)]


class RecordingAudio(AsyncAudioInterface):
    """The SDK's audio device, replaced: the test speaks through ``speak``, and everything the
    SDK plays or interrupts is recorded."""

    def __init__(self) -> None:
        self.played: list[bytes] = []
        self.interrupts = 0
        self.changed = asyncio.Event()
        self._input: Callable[[bytes], Awaitable[None]] | None = None

    async def start(self, input_callback: Callable[[bytes], Awaitable[None]]) -> None:
        self._input = input_callback

    async def stop(self) -> None:
        self._input = None

    async def output(self, audio: bytes) -> None:
        self.played.append(audio)
        self.changed.set()

    async def interrupt(self) -> None:
        self.interrupts += 1
        self.changed.set()

    async def speak(self, chunk: bytes) -> None:
        assert self._input is not None, "the SDK did not start the audio interface"
        await self._input(chunk)

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"the SDK did not play {what}") from None


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs() as server:
        yield server


async def start_sdk(
    fake: FakeElevenLabs, *, requires_auth: bool
) -> tuple[AsyncConversation, RecordingAudio, list[DisconnectionDetails], FakeSession]:
    client = ElevenLabs(api_key=DEFAULT_API_KEY, base_url=fake.api_base)
    audio = RecordingAudio()
    ended: list[DisconnectionDetails] = []

    async def on_disconnect(details: DisconnectionDetails) -> None:
        ended.append(details)

    conversation = AsyncConversation(
        client,
        DEFAULT_AGENT_ID,
        requires_auth=requires_auth,
        audio_interface=audio,
        config=ConversationInitiationData(dynamic_variables={"caller_number": "+15005550006"}),
        callback_disconnect=on_disconnect,
    )
    await conversation.start_session()
    session = await fake.next_session()
    await session.metadata_sent.wait()
    return conversation, audio, ended, session


async def run_conversation(fake: FakeElevenLabs, *, requires_auth: bool) -> FakeSession:
    conversation, audio, ended, session = await start_sdk(fake, requires_auth=requires_auth)
    try:
        # The SDK's messages are accepted: initiation first, bare audio chunks, pongs.
        assert session.first_message is not None
        assert session.first_message["type"] == "conversation_initiation_client_data"
        assert session.first_message["dynamic_variables"] == {"caller_number": "+15005550006"}
        await audio.wait_for(lambda: audio._input is not None, "(start)")
        for chunk in CHUNKS:
            await audio.speak(chunk)
        await session.wait_audio(160 * len(CHUNKS))
        assert session.audio_chunks == CHUNKS
        ping = await session.send_ping(ping_ms=30)
        await session.wait_for(lambda: session.pongs == [ping], "the SDK's pong")
        # The fake's messages are understood: audio is played, an interruption interrupts,
        # and audio of the interrupted reply (event_id <= the interruption's) is dropped.
        await session.send_audio(b"\x11" * 320)
        await audio.wait_for(lambda: audio.played == [b"\x11" * 320], "the first audio")
        await session.interrupt_with_stale_audio(b"\x22" * 320, b"\x33" * 320)
        await audio.wait_for(lambda: len(audio.played) == 2, "the fresh audio")
        assert audio.played == [b"\x11" * 320, b"\x33" * 320]
        assert audio.interrupts == 1
        # The agent ends the conversation: the SDK reports a normal, agent-side close.
        await session.hang_up()
        await asyncio.wait_for(conversation.wait_for_session_end(), WAIT)
        assert [(d.reason, d.close_code) for d in ended] == [("agent", 1000)]
    finally:
        await conversation.end_session()
    assert session.violations == []
    assert not session.api_key_on_upgrade
    return session


async def test_the_sdk_talks_to_a_public_agent(fake: FakeElevenLabs) -> None:
    session = await run_conversation(fake, requires_auth=False)
    assert not session.signed
    assert session.query["agent_id"] == DEFAULT_AGENT_ID
    assert fake.rest_requests == []


async def test_the_sdk_talks_to_a_private_agent_through_a_signed_url(
    fake: FakeElevenLabs,
) -> None:
    fake.public = False
    session = await run_conversation(fake, requires_auth=True)
    assert session.signed
    [request] = fake.rest_requests
    assert (request.agent_id, request.key_valid, request.status) == (DEFAULT_AGENT_ID, True, 200)


async def test_the_sdk_ending_the_session_closes_normally(fake: FakeElevenLabs) -> None:
    conversation, _, ended, session = await start_sdk(fake, requires_auth=False)
    await conversation.end_session()
    await asyncio.wait_for(conversation.wait_for_session_end(), WAIT)
    await session.wait_closed()
    assert session.close_code == 1000
    assert [d.reason for d in ended] == ["user"]
    assert session.violations == []


# -- the fake's own checks report mistakes (so `violations == []` means something) ----------


async def test_the_fake_reports_protocol_mistakes(fake: FakeElevenLabs) -> None:
    headers = {"xi-api-key": "leaked"}
    async with connect(fake.conversation_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"user_audio_chunk": "AAAA"}))  # before the initiation
        await ws.send(json.dumps({"user_audio_chunk": "A!", "extra": 1}))
        await ws.send(json.dumps({"type": "pong", "event_id": 99}))
        await ws.send(json.dumps({"type": "what"}))
        await ws.send(b"\x00")
        await ws.send("not json")
    session = fake.sessions[0]
    await session.wait_closed()
    problems = "\n".join(session.violations)
    for expected in (
        "xi-api-key header on the WebSocket upgrade",
        "first message is not the initiation",
        "audio message keys",
        "not base64",
        "pong for event_id 99",
        "unknown client message type 'what'",
        "binary frame",
        "invalid JSON",
    ):
        assert expected in problems
    assert len(session.violations) == 8


async def test_the_fake_refuses_unsigned_private_and_unknown_agents(fake: FakeElevenLabs) -> None:
    fake.public = False
    for url in (fake.conversation_url, fake.conversation_url.replace(DEFAULT_AGENT_ID, "nobody")):
        with pytest.raises(InvalidStatus):
            async with connect(url):
                pass
    assert [status for _, status in fake.refused_upgrades] == [403, 404]


async def test_the_fake_echoes_in_the_agent_format(fake: FakeElevenLabs) -> None:
    fake.echo = True
    fake.output_format = "pcm_16000"
    async with connect(fake.conversation_url) as ws:
        await ws.send(json.dumps({"type": "conversation_initiation_client_data"}))
        metadata: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        event = metadata["conversation_initiation_metadata_event"]
        assert (event["user_input_audio_format"], event["agent_output_audio_format"]) == (
            "ulaw_8000",
            "pcm_16000",
        )
        await ws.send(json.dumps({"user_audio_chunk": base64.b64encode(b"\xff" * 160).decode()}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert reply["type"] == "audio"
    assert reply["audio_event"]["event_id"] == 1
    # 20 ms of μ-law silence at 8 kHz becomes (about) 20 ms of 16-bit PCM at 16 kHz.
    assert abs(len(base64.b64decode(reply["audio_event"]["audio_base_64"])) - 640) <= 4
