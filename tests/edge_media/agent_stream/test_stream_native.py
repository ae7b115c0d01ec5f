"""An agent stream to a native agent (the ElevenLabs fake, PCM 16 kHz both ways): speech the
provider streams in is what the agent hears, and the agent's answer is what the provider gets
back, judged by cross-correlation of real speech (espeak-ng, as the SIP interop tests do)."""

from __future__ import annotations

import secrets
import warnings
from pathlib import Path
from typing import Any

import pytest

from shared.dynamo.repository import Repository
from shared.models import Account, Agent, CallStatus, TelephonyConfig, TelephonyProvider
from tests.edge_media.agent_stream.test_stream_calls import record_of, v2_url
from tests.interop.audio import find_segments
from tests.interop.gateway import running_gateway
from tests.interop.media import make_media
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_elevenlabs import DEFAULT_AGENT_ID, DEFAULT_API_KEY, FakeElevenLabs
from tests.support.fake_provider import ProviderStream

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

pytestmark = pytest.mark.anyio

SPEECH_SECONDS = 3


async def test_a_stream_talks_both_ways_with_an_elevenlabs_agent(
    aws: Any, repo: Repository, cloudonix: FakeCloudonix, tmp_path: Path
) -> None:
    media = make_media(tmp_path)
    speech = media.caller_ulaw.read_bytes()[: 8000 * SPEECH_SECONDS]
    reference = audioop.ulaw2lin(speech, 2)
    cloudonix.add_session("el-1", DOMAIN)
    account = Account(
        name="native stream",
        webhook_secret=secrets.token_hex(16),
        elevenlabs={"api_key": DEFAULT_API_KEY, "agent_id": DEFAULT_AGENT_ID},
    )
    repo.put(account)
    agent = Agent(account_id=account.account_id, name="el", socket_url="elevenlabs")
    repo.put(agent)
    repo.put(
        TelephonyConfig(
            account_id=account.account_id,
            provider=TelephonyProvider.CLOUDONIX,
            domain=DOMAIN,
            bearer_token=TOKEN,
        )
    )
    async with (
        FakeElevenLabs(
            public=False, echo=True, input_format="pcm_16000", output_format="pcm_16000"
        ) as fake,
        running_gateway(
            elevenlabs_api_base=fake.api_base, cloudonix_api_base=cloudonix.base_url
        ) as node,
    ):
        stream = ProviderStream(v2_url(node, "cloudonix", agent.agent_uuid), session="el-1")
        await stream.open()
        session = await fake.next_session(10)
        await stream.play(speech)
        await session.wait_audio(2 * 16000 * (SPEECH_SECONDS - 1), 10)
        await stream.wait_audio(8000 * (SPEECH_SECONDS - 1), 10)
        await stream.stop()
        call = await record_of(repo, account.account_id)
    heard_by_agent = audioop.ratecv(bytes(session.audio), 2, 1, 16000, 8000, None)[0]
    assert find_segments(reference, heard_by_agent).fraction >= 0.8
    back = audioop.ulaw2lin(stream.received_audio(), 2)
    echoed = find_segments(reference, back)
    assert echoed.found >= 2, echoed
    assert not stream.violations, stream.violations
    assert call.status is CallStatus.COMPLETED
    [leg] = call.media
    assert leg.driver == "elevenlabs"
    assert leg.provider_ids == {"conversation_id": session.conversation_id}
    assert DEFAULT_API_KEY not in str(call.model_dump())
