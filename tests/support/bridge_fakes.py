"""In-memory stand-ins for what a bridged call talks to, for millisecond tests of `bridge/`.

The bridge's own code runs unchanged (`LiveCall`, `CallerMedia`, `inbound_app`, `Originator`,
`CommandHandler`); what is faked is what lies outside it and is proven against real peers in
tests/interop: the SIP leg (`FakeSipCall`, the subset of `SipCall` the bridge uses), the leg's
RTP wire (`FakeWire`, played by hand with `tick`), the bots (`ScriptedBot`, reached through
`Bots.connect` with the `BotConnector` signature) and the node's record writer and metrics
(`MemoryRecorder`, `MemoryMetrics`, which keep what they were given).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_media.bridge.live_call import LiveCall
from edge_media.bridge.services import BridgeServices
from edge_media.drivers.base import BotEnd, BotUnavailable, CallerLeg, CallInfo, ConnectStep
from edge_media.rtp.dtmf import DtmfDigit, DtmfTrigger
from edge_media.rtp.playout import PlayedMark, PlayoutQueue
from edge_media.rtp.session import DISCARD, MediaSink
from edge_media.sip.call_state import CallEnd
from shared.events import CallEvent
from shared.models import Call

FRAME = b"\x55" * 160


# --------------------------------------------------------------------------- the caller's wire


class FakeWire:
    """The leg's media as the bridge sees it: a connected queue and sink; `tick` plays a frame
    and reports reached marks as the RTP session does (after the frame has "left")."""

    def __init__(self) -> None:
        self.playout = PlayoutQueue()
        self.sink: MediaSink = DISCARD
        self.sent: list[bytes | None] = []  # what each tick sent (None: comfort silence)
        self.digits_out: list[str] = []

    def connect(self, playout: PlayoutQueue, sink: MediaSink) -> None:
        self.playout, self.sink = playout, sink

    def disconnect(self) -> None:
        self.sink = DISCARD

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.sent.append(self.playout.next_frame())
            marks = self.playout.take_reached()
            if marks:
                self.sink.on_marks(marks)

    def caller_says(self, frames: int) -> None:
        self.sink.on_frames((FRAME,) * frames)

    def caller_presses(self, digit: str) -> None:
        self.sink.on_digits((DtmfDigit(digit, 1, 0, 800, 10, DtmfTrigger.END),))

    def send_dtmf(self, digit: str, duration_ms: float = 100.0) -> bool:
        self.digits_out.append(digit)
        return True

    def stats(self) -> dict[str, Any]:
        played = sum(1 for frame in self.sent if frame is not None)
        return {"packets_in": 50, "lost": 0, "packets_out": len(self.sent), "played": played}


# --------------------------------------------------------------------------- the SIP leg


class FakeSipCall:
    """The SIP leg of a call: rings, answers (or not), ends from either side."""

    def __init__(
        self,
        *,
        caller: str = "+15550001111",
        dialed: str = "+15550002222",
        answers: bool = True,
    ) -> None:
        self.call_uuid = uuid.uuid4()
        self.remote_user = caller
        self.request_user = dialed
        self.log = logging.LoggerAdapter(logging.getLogger("test.sip"), {})
        self.media: FakeWire | None = None
        self.on_digit: Any = None
        self.end: CallEnd | None = None
        self.rang = False
        self.rejected: tuple[int, str, str] | None = None
        self.reject_headers: dict[str, str] = {}  # extra headers of the rejection
        self.hangups: list[str] = []
        self.ringing_seen = False
        self._answers = answers
        self._answered = asyncio.Event()
        self._ringing = asyncio.Event()
        self._ended = asyncio.Event()

    # inbound
    def ring(self) -> None:
        self.rang = True

    async def answer(self) -> bool:
        if self.is_ended:
            return False
        self.media = FakeWire()
        self._answered.set()
        return True

    def reject(
        self,
        status: int,
        reason: str,
        cause: str = "CALL_REJECTED",
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.rejected = (status, reason, cause)
        self.reject_headers = dict(extra)
        self._end(cause, status, "local")

    # outbound
    def far_end_rings(self) -> None:
        self.ringing_seen = True
        self._ringing.set()

    def far_end_answers(self) -> None:
        self.media = FakeWire()
        self._answered.set()

    async def wait_ringing(self) -> bool:
        await self._ringing.wait()
        return True

    async def wait_answered(self) -> bool:
        answered = asyncio.ensure_future(self._answered.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        await asyncio.wait({answered, ended}, return_when=asyncio.FIRST_COMPLETED)
        answered.cancel()
        ended.cancel()
        return self._answered.is_set()

    # either
    @property
    def is_ended(self) -> bool:
        return self._ended.is_set()

    async def ended(self) -> None:
        await self._ended.wait()

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self.is_ended:
            return  # as SipCall: hanging up an ended call does nothing
        self.hangups.append(cause)
        self._end(cause, None, "local")

    def caller_hangs_up(self) -> None:
        self._end("NORMAL_CLEARING", None, "remote")

    def _end(self, cause: str, status: int | None, by: str) -> None:
        if self.end is None:
            self.end = CallEnd(cause, status, by)
        self._ended.set()


# --------------------------------------------------------------------------- bots


class ScriptedBot:
    """A connected bot: keeps what the caller side sent it, and plays what a test tells it to."""

    def __init__(self, target: str, leg: CallerLeg) -> None:
        self.target = target
        self.leg = leg
        self.audio: list[bytes] = []
        self.digits: list[str] = []
        self.marks: list[PlayedMark] = []
        self.stopped: str | None = None
        self._closed: asyncio.Future[BotEnd] = asyncio.get_running_loop().create_future()

    def say(self, frames: int, mark: str | None = None) -> None:
        self.leg.play(FRAME * frames)
        if mark is not None:
            self.leg.mark(mark)

    def hang_up(self, reason: str = "bot closed") -> None:
        if not self._closed.done():
            self._closed.set_result(BotEnd(by_bot=True, reason=reason, code=1000))

    def crash(self, code: int = 1006) -> None:
        """The connection breaks (1006: no closing handshake; 1011/1012: a server error)."""
        if not self._closed.done():
            self._closed.set_result(BotEnd(by_bot=True, reason=f"bot dropped ({code})", code=code))

    # BotDriver
    def send_audio(self, ulaw: bytes) -> None:
        self.audio.append(ulaw)

    def send_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    def marks_played(self, marks: list[PlayedMark]) -> None:
        self.marks.extend(marks)

    async def wait_closed(self) -> BotEnd:
        return await self._closed

    async def stop(self, reason: str) -> None:
        self.stopped = reason
        if not self._closed.done():
            self._closed.set_result(BotEnd(by_bot=False, reason=reason))

    def stats(self) -> dict[str, Any]:
        return {"media_in": len(self.audio), "target": self.target}

    def provider_ids(self) -> dict[str, str]:
        return {"stream_sid": f"MZ-{self.target}"}


class Bots:
    """The node's bot connector over scripted bots: every target connects unless it is listed
    in ``unreachable``; ``hold`` makes a target's connect wait until released."""

    def __init__(self, *, unreachable: Mapping[str, ConnectStep] | None = None) -> None:
        self.unreachable = dict(unreachable or {})
        self.connected: list[ScriptedBot] = []
        self.attempts: list[str] = []
        self.infos: list[CallInfo] = []  # what each attempt was told about the call
        self.hold: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()

    async def connect(
        self, target: str, info: CallInfo, leg: CallerLeg, connect_timeout: float
    ) -> ScriptedBot:
        self.attempts.append(target)
        self.infos.append(info)
        gate = self.hold.get(target)
        if gate is not None:
            await gate.wait()
        step = self.unreachable.get(target)
        if step is not None:
            raise BotUnavailable(f"{target} refused", step=step)
        bot = ScriptedBot(target, leg)
        self.connected.append(bot)
        self.changed.set()
        return bot

    async def wait_connected(self, count: int) -> ScriptedBot:
        async with asyncio.timeout(5):
            while len(self.connected) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.connected[count - 1]


# --------------------------------------------------------------------------- records, metrics


class MemoryRecorder:
    """`CallRecords` in memory: records by uuid, every event and update in order."""

    def __init__(self, *, queued: list[Call] | None = None) -> None:
        self.calls: dict[uuid.UUID, Call] = {call.call_uuid: call for call in queued or []}
        self.events: list[CallEvent] = []
        self.updates: list[tuple[uuid.UUID, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def create(self, call: Call) -> bool:
        if call.call_uuid in self.calls:
            return False
        self.calls[call.call_uuid] = call
        return True

    def create_item(self, call: Call) -> dict[str, Any] | None:
        return None  # not a table: the slot acquire cannot carry the record

    async def claim(self, call_uuid: uuid.UUID | str) -> Call | None:
        return self.calls.get(uuid.UUID(str(call_uuid)))

    async def record(self, event: CallEvent) -> bool:
        self.events.append(event)
        self.changed.set()
        return True

    async def update(self, call_uuid: uuid.UUID | str, fields: Mapping[str, Any]) -> Call | None:
        self.updates.append((uuid.UUID(str(call_uuid)), dict(fields)))
        return self.calls.get(uuid.UUID(str(call_uuid)))

    def kinds(self) -> list[str]:
        return [event.type for event in self.events]

    def last(self, kind: str) -> Any:
        return [event for event in self.events if event.type == kind][-1]

    def last_media(self) -> list[dict[str, Any]]:
        return [fields["media"] for _, fields in self.updates if "media" in fields][-1]


@dataclass
class MemoryMetrics:
    figures: dict[str, list[float]] = field(default_factory=dict)

    def _add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def call_setup_ms(self, value: float) -> None:
        self._add("call_setup_ms", value)

    def routing_webhook_ms(self, value: float) -> None:
        self._add("routing_webhook_ms", value)

    def bot_connect_ms(self, value: float) -> None:
        self._add("bot_connect_ms", value)

    def rtp_loss_pct(self, value: float) -> None:
        self._add("rtp_loss_pct", value)

    def rtp_to_bot_ms(self, value: float) -> None:
        self._add("rtp_to_bot_ms", value)

    def bot_to_wire_ms(self, value: float) -> None:
        self._add("bot_to_wire_ms", value)

    def call_pacing_error_ms(self, value: float) -> None:
        self._add("call_pacing_error_ms", value)

    def rtp_jitter_ms(self, value: float) -> None:
        self._add("rtp_jitter_ms", value)

    def playout_underruns(self, value: float) -> None:
        self._add("playout_underruns", value)

    def barge_in_stop_ms(self, value: float) -> None:
        self._add("barge_in_stop_ms", value)

    def bot_rtt_ms(self, value: float) -> None:
        self._add("bot_rtt_ms", value)


def services(bots: Bots, recorder: MemoryRecorder | None = None) -> BridgeServices:
    live: dict[uuid.UUID, LiveCall] = {}
    return BridgeServices(
        node_id="node-test",
        recorder=recorder or MemoryRecorder(),
        metrics=MemoryMetrics(),
        connect=bots.connect,
        bot_connect_timeout=1.0,
        playout_seconds=60.0,
        pacing_p99=lambda: 0.4,
        live=live,
    )
