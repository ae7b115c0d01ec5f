"""examples/echo_bot.py as a user runs it: a subprocess on a free loopback port, spoken to by a
websockets client playing the gateway's side of the Twilio stream."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "echo_bot.py"
SID = "MZ00000000000000000000000000000001"
CALL = "6a1f9e7c-0000-4000-8000-000000000001"


class EchoBotProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def read_until(self, pattern: str, seconds: float = 10.0) -> re.Match[str]:
        """Read the bot's log until a line matches ``pattern``."""
        assert self.process.stderr is not None
        async with asyncio.timeout(seconds):
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                raw = await self.process.stderr.readline()
                if not raw:
                    raise AssertionError(f"echo bot exited; its log: {self.lines}")
                self.lines.append(raw.decode().rstrip())


@pytest.fixture
async def echo_bot() -> AsyncIterator[tuple[EchoBotProcess, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    bot = EchoBotProcess(process)
    try:
        found = await bot.read_until(r"listening on (ws://127\.0\.0\.1:\d+/)")
        yield bot, found.group(1)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await process.wait()


def message(event: str, sequence: int, body: dict[str, Any]) -> str:
    return json.dumps(
        {"event": event, "sequenceNumber": str(sequence), "streamSid": SID, event: body}
    )


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        received = json.loads(await ws.recv())
    assert isinstance(received, dict)
    return received


async def test_echo_bot_echoes_marks_each_second_and_logs_the_call(
    echo_bot: tuple[EchoBotProcess, str],
) -> None:
    bot, url = echo_bot
    frames = [bytes([index]) * 160 for index in range(55)]  # 1.1 s of audio
    async with connect(url, compression=None) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            message(
                "start",
                1,
                {
                    "streamSid": SID,
                    "accountSid": "acc-1",
                    "callSid": CALL,
                    "tracks": ["inbound"],
                    "customParameters": {
                        "from_number": "+15005550006",
                        "to_number": "+15005550001",
                        "call_uuid": CALL,
                        "direction": "inbound",
                        "account_id": "acc-1",
                    },
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            )
        )
        sequence = 1
        for chunk, frame in enumerate(frames):
            sequence += 1
            await ws.send(
                message(
                    "media",
                    sequence,
                    {
                        "track": "inbound",
                        "chunk": str(chunk + 1),
                        "timestamp": str(chunk * 20),
                        "payload": base64.b64encode(frame).decode(),
                    },
                )
            )
        replies = [await receive(ws) for _ in range(len(frames) + 1)]
        media = [reply for reply in replies if reply["event"] == "media"]
        marks = [reply for reply in replies if reply["event"] == "mark"]
        assert [base64.b64decode(reply["media"]["payload"]) for reply in media] == frames
        assert all(reply["streamSid"] == SID for reply in replies)
        # The mark follows exactly the audio that completes the first second (frame 50).
        assert marks == [{"event": "mark", "streamSid": SID, "mark": {"name": "second-1"}}]
        assert replies.index(marks[0]) == 50

        sequence += 1
        await ws.send(message("mark", sequence, {"name": "second-1"}))
        sequence += 1
        await ws.send(message("dtmf", sequence, {"track": "inbound_track", "digit": "7"}))
        sequence += 1
        await ws.send(message("stop", sequence, {"accountSid": "acc-1", "callSid": CALL}))
        await bot.read_until(rf"\[{CALL}\] stop")
        await ws.close(1000)

    await bot.read_until(rf"\[{CALL}\] connection closed \(code 1000\)")
    log = "\n".join(bot.lines)
    assert "connected: protocol Call 1.0.0" in log
    assert f"[{CALL}] start: from +15005550006 to +15005550001 (inbound)" in log
    assert f"[{CALL}] mark second-1 sent" in log
    assert f"[{CALL}] mark second-1 played" in log
    assert f"[{CALL}] dtmf 7" in log
    assert re.search(r"Traceback|ERROR", log) is None


async def test_echo_bot_survives_junk_and_serves_the_next_call(
    echo_bot: tuple[EchoBotProcess, str],
) -> None:
    bot, url = echo_bot
    async with connect(url, compression=None) as ws:
        await ws.send("not json")
        await ws.send(b"\x00binary")
        await ws.send(json.dumps({"event": "media", "media": {"payload": "!!"}}))
        await ws.send(json.dumps({"event": "media", "media": {"payload": "fn5+"}}))
        reply = await receive(ws)
        assert reply == {"event": "media", "streamSid": None, "media": {"payload": "fn5+"}}
    await bot.read_until(r"not JSON: not json")
    await bot.read_until(r"media payload is not base64")
    async with connect(url, compression=None) as ws:
        await ws.send(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))
        assert (await receive(ws))["media"] == {"payload": "AAAA"}
