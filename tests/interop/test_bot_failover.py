"""Bot failover end to end: the bot's process is killed mid-call (SIGKILL: the kernel resets its
sockets, no closing handshake) while a real softphone talks through the node.

- The bot comes back on the same port: the node reconnects, the new ``start`` carries
  ``resumed_from`` (the dead connection's stream SID), and the call goes on.
- The bot stays dead: after its attempts, the account default takes over.

In both the caller's RTP never stops (comfort silence fills the gap: the phone's largest gap
between packets stays small), and the record and a ``call.bot_reconnected`` event say what
happened. The bot is examples/echo_bot.py, as a user runs it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_media.phone.phone_result import PhoneResult
from shared.models import CallStatus, Route
from tests.interop.gateway import (
    add_number,
    custom_parameters,
    event_types,
    events_for,
    make_tenant,
    node_address,
    phone_call,
    running_gateway,
    started,
    wait_record,
)
from tests.interop.ports import free_port
from tests.support.twilio_bot import StrictTwilioBot

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "echo_bot.py"
CALL_SECONDS = 7.0
# Comfort silence never stops; the bound is loose for a loaded CI box (the gap itself is ~1 s).
MAX_CALLER_GAP_MS = 300.0


class EchoBot:
    """examples/echo_bot.py on a fixed port, its log read line by line."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self.lines = []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await self.read_until(r"listening on ws://")

    async def read_until(self, pattern: str, seconds: float = 15.0) -> re.Match[str]:
        assert self.process is not None and self.process.stderr is not None
        async with asyncio.timeout(seconds):
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                raw = await self.process.stderr.readline()
                if not raw:
                    raise AssertionError(f"echo bot exited; its log: {self.lines}")
                self.lines.append(raw.decode().rstrip())

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await self.process.wait()


@asynccontextmanager
async def echo_bot() -> AsyncIterator[EchoBot]:
    bot = EchoBot(free_port())
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


async def call_for(node: Any, number: str, seconds: float) -> PhoneResult:
    return await phone_call(f"sip:{number}@{node_address(node)}", hangup_after=seconds)


def assert_caller_heard_no_gap(phone: PhoneResult) -> None:
    assert phone.ok, phone
    assert phone.rtp_stats["max_gap_ms"] < MAX_CALLER_GAP_MS, phone.rtp_stats
    assert phone.rtp_stats["lost"] == 0, phone.rtp_stats


async def test_a_killed_bot_that_restarts_gets_the_call_back_with_resumed_from(
    aws: Any, repo: Any
) -> None:
    async with echo_bot() as bot, running_gateway(bot_reconnect_attempts=6) as node:
        tenant = make_tenant(repo)
        number = add_number(repo, tenant.account, Route(socket_url=bot.url))
        phone = asyncio.ensure_future(call_for(node, number, CALL_SECONDS))
        first = await bot.read_until(r"\[([0-9a-f-]{36})\] start:")
        call_uuid = first.group(1)
        await asyncio.sleep(1.0)  # the call is up and echoing
        await bot.kill()
        await bot.start()  # same port; the node's attempts meet a refused port until it listens
        resumed = await bot.read_until(r"resumed from (MZ[0-9a-f]{32}) after (\d+) ms")
        result = await phone
        record = await wait_record(repo, call_uuid)
        events = await events_for(node.settings.events_queue_url, call_uuid)

    assert_caller_heard_no_gap(result)
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    dead, *refused, back = record.media  # attempts made while the bot restarted were refused
    assert dead.end_reason is not None and "1006" in dead.end_reason, dead
    assert all(leg.failed_step == "connect" for leg in refused), refused
    assert back.resumed_from == resumed.group(1) == dead.provider_ids["stream_sid"]
    assert back.target == dead.target and back.end_reason == "call ended"
    assert record.stats["bot_reconnects"] == 1 and record.stats["bot_gap_ms"] > 0
    assert event_types(events) == [
        "call.ringing",
        "call.answered",
        "call.bot_reconnected",
        "call.completed",
    ]
    (reconnected,) = [e for e in events if e["type"] == "call.bot_reconnected"]
    assert reconnected["resumed_from"] == dead.provider_ids["stream_sid"]
    assert reconnected["fallback"] is False and reconnected["attempts"] >= 1


async def test_a_bot_gone_for_good_hands_the_call_to_the_account_default(
    aws: Any, repo: Any
) -> None:
    async with (
        echo_bot() as bot,
        StrictTwilioBot(echo=True) as default,
        running_gateway(bot_reconnect_attempts=2, bot_reconnect_window_seconds=30) as node,
    ):
        tenant = make_tenant(repo, socket_url=None)
        tenant.account.socket_url = default.url  # the account default
        repo.put(tenant.account)
        number = add_number(repo, tenant.account, Route(socket_url=bot.url))
        phone = asyncio.ensure_future(call_for(node, number, CALL_SECONDS))
        first = await bot.read_until(r"\[([0-9a-f-]{36})\] start:")
        call_uuid = first.group(1)
        await asyncio.sleep(1.0)
        await bot.kill()  # and it never comes back
        session = await started(default, seconds=15)
        parameters = custom_parameters(session)
        result = await phone
        record = await wait_record(repo, call_uuid)
        events = await events_for(node.settings.events_queue_url, call_uuid)

    assert_caller_heard_no_gap(result)
    assert session.violations == [], session.violations
    dead = record.media[0]
    assert parameters["call_uuid"] == call_uuid
    assert parameters["resumed_from"] == dead.provider_ids["stream_sid"]
    # Two refused attempts at the dead bot (each its own media entry), then the default.
    assert [leg.failed_step for leg in record.media[1:-1]] == ["connect", "connect"]
    assert record.media[-1].failed_step is None and record.media[-1].end_reason == "call ended"
    (reconnected,) = [e for e in events if e["type"] == "call.bot_reconnected"]
    assert reconnected["fallback"] is True and reconnected["attempts"] == 3
