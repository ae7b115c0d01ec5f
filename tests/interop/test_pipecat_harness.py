"""The pipecat echo bot and its harness, driven by a plain websockets client playing Twilio.

The client sends what the gateway will send (PROTOCOL.md, "2. Messages the gateway sends"):
``connected``, then ``start`` with ``streamSid``/``callSid`` nested and at top level and the
caller/callee in ``customParameters``, then 2 s of a 1 kHz tone as 20 ms μ-law media messages
in real time. The bot must answer with the same tone as Twilio media messages carrying our
streamSid, and its log must show that pipecat's own handshake parser read our call.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect

from edge_media.rtp.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from tests.interop.pipecat import PipecatBot
from tests.interop.process import PeerError

RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 160
TONE_HZ = 1000  # a whole number of periods in every 20 ms window: no Goertzel leakage
TONE_AMPLITUDE = 8000
TONE_FRAMES = 100  # 2 s
STREAM_SID = "MZ00000000000000000000000000000001"
CALL_SID = "CA00000000000000000000000000000001"
ACCOUNT_SID = "AC00000000000000000000000000000001"
FROM_NUMBER = "+15550100001"
TO_NUMBER = "+15550100002"
ECHO_SETTLE_S = 1.0  # after our last frame, how long without bot media ends the call
CALL_TIMEOUT_S = 20.0
OPEN_TIMEOUT_S = 10.0
MAX_ECHO_MESSAGES = 1000  # far more than 2 s of 40 ms messages
ECHO_MESSAGE_BYTES = 320  # pipecat's default audio_out_10ms_chunks=4: 40 ms of μ-law a message
SILENCE_RMS = 100  # a 20 ms window quieter than this (16-bit PCM) holds no tone
TONE_PURITY = 0.95  # share of the echo's energy that must be at TONE_HZ
LEVEL_TOLERANCE = 0.05  # echoed tone RMS within 5 % of the sent one
MIN_VOICED_FRAMES = TONE_FRAMES - 2  # a window at each end may straddle the tone's edge


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[PipecatBot]:
    """A started bot; its log tail is printed at teardown, which pytest shows only on failure."""
    peer = PipecatBot(tmp_path / "pipecat")
    try:
        yield peer.start()
    finally:
        peer.stop()
        print(f"\n{peer.report()}")


def tone_frames() -> list[bytes]:
    """TONE_FRAMES consecutive 20 ms frames of a continuous TONE_HZ sine, μ-law encoded."""
    samples = [
        round(TONE_AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * n / RATE))
        for n in range(TONE_FRAMES * FRAME_SAMPLES)
    ]
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    ulaw = pcm16_to_ulaw(pcm)
    return [ulaw[i : i + FRAME_SAMPLES] for i in range(0, len(ulaw), FRAME_SAMPLES)]


def pcm_samples(ulaw: bytes) -> list[int]:
    pcm = ulaw_to_pcm16(ulaw)
    return [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def tone_power(samples: list[int], freq: float) -> float:
    """Energy of ``samples`` at ``freq`` (Goertzel), on the scale of sum(s * s)."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for s in samples:
        s1, s2 = s + coeff * s1 - s2, s1
    magnitude2 = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * magnitude2 / len(samples)


@dataclass
class ToneReport:
    voiced_frames: int  # 20 ms windows of the echo louder than SILENCE_RMS
    voiced_rms: float
    purity: float  # tone energy / total energy over the whole echo


def analyse(ulaw: bytes) -> ToneReport:
    samples = pcm_samples(ulaw)
    windows = [samples[i : i + FRAME_SAMPLES] for i in range(0, len(samples), FRAME_SAMPLES)]
    voiced = [w for w in windows if len(w) == FRAME_SAMPLES and rms(w) >= SILENCE_RMS]
    total = sum(s * s for s in samples)
    at_tone = sum(tone_power(w, TONE_HZ) for w in windows if len(w) == FRAME_SAMPLES)
    return ToneReport(
        voiced_frames=len(voiced),
        voiced_rms=rms([s for w in voiced for s in w]),
        purity=at_tone / total if total else 0.0,
    )


def twilio_start() -> list[dict[str, Any]]:
    """``connected`` and ``start`` as Twilio sends them (PROTOCOL.md, Twilio-stream bots)."""
    return [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                "customParameters": {"from_number": FROM_NUMBER, "to_number": TO_NUMBER},
            },
            "streamSid": STREAM_SID,
        },
    ]


def twilio_media(sequence: int, chunk: int, payload: bytes) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(sequence),
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str((chunk - 1) * FRAME_MS),
            "payload": base64.b64encode(payload).decode("ascii"),
        },
        "streamSid": STREAM_SID,
    }


@dataclass
class Conversation:
    received: list[dict[str, Any]] = field(default_factory=list)
    echo_arrived: anyio.Event = field(default_factory=anyio.Event)

    @property
    def echoed_ulaw(self) -> bytes:
        return b"".join(
            base64.b64decode(m["media"]["payload"])
            for m in self.received
            if m.get("event") == "media"
        )


async def send_tone(ws: ClientConnection, frames: list[bytes]) -> None:
    """Frames at absolute 20 ms deadlines from the first, so pacing does not drift."""
    for message in twilio_start():
        await ws.send(json.dumps(message))
    started_at = anyio.current_time()
    for index, frame in enumerate(frames):
        await anyio.sleep_until(started_at + index * FRAME_MS / 1000)
        await ws.send(json.dumps(twilio_media(index + 2, index + 1, frame)))


async def collect(ws: ClientConnection, talk: Conversation) -> None:
    async for raw in ws:
        message = json.loads(raw)
        talk.received.append(message)
        if message.get("event") == "media":
            talk.echo_arrived.set()


async def run_call(url: str, frames: list[bytes]) -> Conversation:
    """One call: the tone in real time, then listen until the bot is quiet for ECHO_SETTLE_S."""
    talk = Conversation()
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with (
            connect(url, open_timeout=OPEN_TIMEOUT_S) as ws,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(collect, ws, talk)
            await send_tone(ws, frames)
            for _ in range(MAX_ECHO_MESSAGES):  # each round but the last sees one more echo
                talk.echo_arrived = anyio.Event()
                with anyio.move_on_after(ECHO_SETTLE_S) as quiet:
                    await talk.echo_arrived.wait()
                if quiet.cancelled_caught:
                    break
            stop = {
                "event": "stop",
                "sequenceNumber": str(len(frames) + 2),
                "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
                "streamSid": STREAM_SID,
            }
            await ws.send(json.dumps(stop))
            await ws.close(1000)
    return talk


@pytest.mark.anyio
async def test_pipecat_bot_parses_start_and_echoes_the_tone(bot: PipecatBot) -> None:
    frames = tone_frames()
    talk = await run_call(bot.url, frames)

    kinds = {m.get("event") for m in talk.received}
    assert kinds == {"media"}, f"pipecat sent {kinds}\n{bot.report()}"
    assert {m.get("streamSid") for m in talk.received} == {STREAM_SID}
    sizes = {len(base64.b64decode(m["media"]["payload"])) for m in talk.received}
    assert sizes == {ECHO_MESSAGE_BYTES}

    sent = analyse(b"".join(frames))
    echo = analyse(talk.echoed_ulaw)
    assert echo.voiced_frames >= MIN_VOICED_FRAMES, (echo, sent)
    assert echo.voiced_frames <= TONE_FRAMES + 1, (echo, sent)
    assert echo.purity >= TONE_PURITY, (echo, sent)
    assert abs(echo.voiced_rms - sent.voiced_rms) <= LEVEL_TOLERANCE * sent.voiced_rms, (
        echo,
        sent,
    )
    # 8 kHz μ-law in, PCM at 8 kHz through the pipeline, μ-law out: nothing is resampled, so
    # with no frame lost the echo is our audio byte for byte.
    assert talk.echoed_ulaw == b"".join(frames)

    parsed = bot.parsed_calls()
    assert len(parsed) == 1, bot.report()
    call = parsed[0]
    assert (call.transport, call.stream_id, call.call_id) == ("twilio", STREAM_SID, CALL_SID)
    assert (call.from_number, call.to_number) == (FROM_NUMBER, TO_NUMBER)
    assert call.body == {"from_number": FROM_NUMBER, "to_number": TO_NUMBER}

    await anyio.to_thread.run_sync(lambda: bot.wait_ended(CALL_SID))


def test_missing_pipecat_venv_fails_with_the_command_to_run(tmp_path: Path) -> None:
    peer = PipecatBot(tmp_path / "pipecat", venv=tmp_path / "no-such-venv")
    with pytest.raises(PeerError, match=r"run `make test`"):
        peer.start()
    assert not peer.process.running
