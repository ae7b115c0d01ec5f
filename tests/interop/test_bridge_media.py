"""Bot audio on the wire: marks against the RTP clock, clear (barge-in), odd chunk sizes.

sipp (a carrier that talks until the node hangs up) → in-process edge node → a scripted
StrictTwilioBot. tshark records what the node sent the caller, and the test compares the wire
with what the bot did: a mark's echo must arrive when playout *reaches* it (PROTOCOL.md,
"5. Playout, marks and clear"), so the echo's arrival at the bot is compared with the capture
time of the last packet of the audio queued ahead of it. Both are read on the same host clock:
tshark's ``frame.time_epoch`` and the bot's ``loop.time()``, converted with the offset between
``time.time()`` and ``loop.time()`` measured at the start of the test.

The bot's audio is a frequency sweep, so every 20 ms frame of it is different: the test can
tell exactly which frame each RTP packet carried, and therefore find the last packet before a
mark, a repeated or missing frame, or a stale frame after a clear. Between talkspurts the node
sends comfort silence (μ-law 0xFF frames), never nothing.

Each echo also says how much bot audio played since the previous mark (``played_ms``); the test
counts the same thing on the wire, the bot's frames between the marks (padded tails included,
comfort silence not), and for a clear the frames that went out before it.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from shared.models import Call, CallStatus
from tests.interop.capture import AUDIO_PAYLOAD_TYPES, RtpSeen, grid_errors_ms, read_rtp
from tests.interop.gateway import make_tenant, node_address, running_gateway, wait_record
from tests.interop.peers import Peers
from tests.interop.sipp import SippResult, call_timings
from tests.support.twilio_bot import BotSession, StrictTwilioBot

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

pytestmark = pytest.mark.anyio

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
TALK_UNTIL_BYE = SCENARIOS / "uac_talk_until_bye.xml"  # caller audio until the node's BYE

RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law
FRAME_S = 0.020
FRAME_MS = 20
SILENCE_FRAME = b"\xff" * FRAME_BYTES  # μ-law zero: what the node sends when the queue is empty
SWEEP_AMPLITUDE = 6000
SWEEP_LOW_HZ = 300.0
SWEEP_HIGH_HZ = 3300.0
BOT_CHUNK_BYTES = 800  # the scripted bot sends 100 ms media messages, like a TTS stream

# Timing windows that hold on a loaded 2-core box (a test's process shares it with sipp, tshark,
# moto and, in CI, anything else): they tell "at playout" from "on receipt" (seconds apart here)
# and "cut" from "played on" (seconds of audio), not the budget figures. Those (clear -> last
# stale packet <= 20 ms, clear -> the dropped marks' echoes) are measured by bench/calls.py; see
# docs/performance.md.
MARK_AFTER_PACKET_S = 0.250  # a mark's echo at most this long after its last packet left
IDLE_MARK_ECHO_S = 0.250  # a mark with nothing queued: the next tick, plus loop latency
CLEAR_SILENCE_S = 0.250  # first silence packet after the clear
CLEAR_LAST_STALE_S = (
    0.250  # last bot packet after the clear (those the node sent before reading it)
)
CLEAR_MARKS_S = 0.250  # the pending marks' echoes after the clear
CLOCK_SLACK_S = 0.0005  # the time.time()/loop.time() offset is read to well under this
GRID_P50_MS = 5.0  # median departure error on the grid (no p99/max assertion: a shared box)
GRID_SPAN_S = 0.070  # first to last packet of a run against its frame count (the catch-up cap)
CALL_TIMEOUT_S = 20.0
OFFSET_SAMPLES = 20


# --------------------------------------------------------------------------- audio


def sweep(seconds: float, low_hz: float = SWEEP_LOW_HZ, high_hz: float = SWEEP_HIGH_HZ) -> bytes:
    """μ-law of a linear chirp from ``low_hz`` to ``high_hz``: every 20 ms frame differs."""
    samples = round(seconds * RATE)
    rate = (high_hz - low_hz) / (seconds or 1.0)
    pcm = bytearray()
    for n in range(samples):
        t = n / RATE
        value = SWEEP_AMPLITUDE * math.sin(2 * math.pi * (low_hz * t + rate * t * t / 2))
        pcm += round(value).to_bytes(2, "little", signed=True)
    ulaw = audioop.lin2ulaw(bytes(pcm), 2)
    frames = split_frames(ulaw)
    assert len(set(frames)) == len(frames), "the sweep repeats a frame: the test cannot tell"
    assert SILENCE_FRAME not in frames
    return ulaw


def split_frames(ulaw: bytes) -> list[bytes]:
    """Whole 160-byte frames; a partial tail is padded with μ-law silence, as the node pads it."""
    frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] += b"\xff" * (FRAME_BYTES - len(frames[-1]))
    return frames


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --------------------------------------------------------------------------- clocks


def epoch_minus_loop() -> float:
    """``time.time() - loop.time()``, from the reading bracketed most tightly by loop.time()."""
    loop = asyncio.get_running_loop()
    best: tuple[float, float] | None = None
    for _ in range(OFFSET_SAMPLES):
        before = loop.time()
        epoch = time.time()
        after = loop.time()
        sample = (after - before, epoch - (before + after) / 2)
        if best is None or sample < best:
            best = sample
    assert best is not None
    return best[1]


# --------------------------------------------------------------------------- one scripted call


@dataclass
class ScriptedCall:
    """What one call left behind: the bot's view, sipp's, the wire's and the record."""

    session: BotSession
    result: SippResult
    to_caller: list[RtpSeen]  # audio packets node → caller, in capture order
    offset: float  # epoch = loop time + offset
    record: Call
    script: dict[str, Any]  # what the script noted (send times, names)

    def epoch(self, loop_time: float) -> float:
        return loop_time + self.offset

    def echo_at(self, name: str) -> float:
        """The epoch arrival time of the (single) echo of mark ``name``."""
        times = [at for echoed, at in self.session.mark_echoes if echoed == name]
        assert len(times) == 1, (name, self.session.mark_echoes)
        return self.epoch(times[0])

    def payloads(self) -> list[bytes]:
        return [p.payload for p in self.to_caller]

    def run_of(self, frames: Sequence[bytes]) -> int:
        """Where ``frames`` start on the wire; asserts they went out whole, in order, no gap."""
        payloads = self.payloads()
        assert frames[0] in payloads, "the bot's first frame never reached the caller"
        start = payloads.index(frames[0])
        sent = payloads[start : start + len(frames)]
        assert len(sent) == len(frames), f"only {len(sent)} of {len(frames)} frames went out"
        for index, (got, want) in enumerate(zip(sent, frames, strict=True)):
            kind = "silence" if got == SILENCE_FRAME else "another frame"
            assert got == want, f"frame {index} of {len(frames)} is {kind}, not the bot's"
        packets = self.to_caller[start : start + len(frames)]
        # One RTP stream, on the 20 ms grid: every sequence number and every 160 samples.
        seqs = [(p.seq - packets[0].seq) % 65536 for p in packets]
        stamps = [(p.timestamp - packets[0].timestamp) % (1 << 32) for p in packets]
        assert seqs == list(range(len(packets))), "a sequence gap inside the audio"
        assert stamps == [FRAME_BYTES * i for i in range(len(packets))], "a timestamp gap"
        assert len({p.ssrc for p in packets}) == 1
        return start


async def scripted_call(
    peers: Peers,
    repo: Any,
    name: str,
    script: Callable[[BotSession, dict[str, Any]], Awaitable[None]],
) -> ScriptedCall:
    """One inbound call whose bot runs ``script`` (which must end the call by closing)."""
    notes: dict[str, Any] = {}
    async with StrictTwilioBot() as bot:
        tenant = make_tenant(repo, socket_url=bot.url)
        async with running_gateway() as node:
            sip_port = node.endpoint.local_addr[1]
            run = peers.sipp(
                str(TALK_UNTIL_BYE),
                remote=node_address(node),
                service=tenant.number,
                calls=1,
                timeout_s=30,
            )
            capture = peers.capture(name, ports=[sip_port, run.media_port])
            await anyio.to_thread.run_sync(capture.start)
            offset = epoch_minus_loop()
            results: list[SippResult] = []

            async def caller() -> None:
                results.append(await anyio.to_thread.run_sync(run.run, abandon_on_cancel=True))

            with anyio.fail_after(CALL_TIMEOUT_S):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(caller)
                    session = await bot.next_session(10)
                    await session.wait_events(2)  # connected, start: stream_sid is known
                    await script(session, notes)
            await anyio.to_thread.run_sync(capture.stop)
            assert session.start is not None
            call_uuid = session.start["start"]["customParameters"]["call_uuid"]
            record = await wait_record(repo, call_uuid)
    packets = read_rtp(capture.path, sip_ports=[sip_port])
    to_caller = [
        p
        for p in packets
        if p.dst[1] == run.media_port
        and p.src[1] != run.media_port
        and p.payload_type in AUDIO_PAYLOAD_TYPES
    ]
    (result,) = results
    assert result.ok, result.describe()
    (timing,) = call_timings(result.messages)
    assert timing.bye_by_us is False, timing  # the node hung up when the bot closed
    assert session.violations == [], session.violations
    assert record.status is CallStatus.COMPLETED and record.hangup_cause == "NORMAL_CLEARING"
    assert to_caller, "the node sent the caller no RTP"
    return ScriptedCall(session, result, to_caller, offset, record, notes)


async def send_audio(session: BotSession, ulaw: bytes, size: int = BOT_CHUNK_BYTES) -> None:
    for chunk in chunks(ulaw, size):
        await session.send_media(chunk)


async def close_after(session: BotSession, seconds: float) -> None:
    await anyio.sleep(seconds)
    await session.close(1000, "done")


# --------------------------------------------------------------------------- 1. marks


FIRST_S, SECOND_S = 2.0, 1.0
IDLE_AFTER_S = 0.21  # m2's echo came just after a tick: the idle mark goes mid-interval


async def test_marks_are_echoed_when_playout_reaches_them(
    peers: Peers, aws: Any, repo: Any
) -> None:
    audio = sweep(FIRST_S + SECOND_S)
    first = audio[: round(FIRST_S * RATE)]
    second = audio[round(FIRST_S * RATE) :]
    loop = asyncio.get_running_loop()

    async def script(session: BotSession, notes: dict[str, Any]) -> None:
        await send_audio(session, first)
        await session.send_mark("m1")
        await send_audio(session, second)
        await session.send_mark("m2")
        notes["queued_at"] = loop.time()
        await session.wait_for(lambda: len(session.mark_echoes) == 2, "m1, m2", 6)
        await anyio.sleep(IDLE_AFTER_S)  # the queue is empty now
        notes["idle_sent_at"] = loop.time()
        await session.send_mark("idle")
        await session.wait_for(lambda: len(session.mark_echoes) == 3, "idle", 2)
        await close_after(session, 0.2)

    call = await scripted_call(peers, repo, "marks", script)

    frames = split_frames(audio)
    start = call.run_of(frames)  # all 3 s went out, in order, without a gap
    first_frames = len(split_frames(first))
    last_of_first = call.to_caller[start + first_frames - 1]
    last_of_second = call.to_caller[start + len(frames) - 1]
    assert last_of_first.payload == split_frames(first)[-1]
    # Nothing but comfort silence before the bot's audio and after it.
    assert set(call.payloads()[:start]) <= {SILENCE_FRAME}
    assert set(call.payloads()[start + len(frames) :]) == {SILENCE_FRAME}
    # The echoes came back in order, each once, as playout reached them...
    assert [name for name, _ in call.session.mark_echoes] == ["m1", "m2", "idle"]
    # ... not on receipt: the bot queued both marks about 3 s before the second one played.
    assert call.echo_at("m2") - call.epoch(call.script["queued_at"]) >= FIRST_S + SECOND_S - 0.1
    # m1: after the last packet of the first 2 s left the node, and at most 60 ms later.
    m1_lag = call.echo_at("m1") - last_of_first.time
    assert -CLOCK_SLACK_S <= m1_lag <= MARK_AFTER_PACKET_S, f"m1 echo {m1_lag * 1000:.2f} ms"
    m2_lag = call.echo_at("m2") - last_of_second.time
    assert -CLOCK_SLACK_S <= m2_lag <= MARK_AFTER_PACKET_S, f"m2 echo {m2_lag * 1000:.2f} ms"
    # A mark with nothing queued comes back at the next tick.
    idle_lag = call.echo_at("idle") - call.epoch(call.script["idle_sent_at"])
    assert 0 <= idle_lag <= IDLE_MARK_ECHO_S, f"idle mark echo {idle_lag * 1000:.2f} ms"
    # played_ms: the bot frames on the wire between the marks; the idle mark played nothing,
    # though comfort silence went out between m2 and it.
    assert call.session.mark_played == [
        ("m1", first_frames * FRAME_MS),
        ("m2", (len(frames) - first_frames) * FRAME_MS),
        ("idle", 0),
    ]
    assert call.session.mark_played == call.session.marks_sent_ms  # all of it played
    stats = call.record.stats["bot"][0]
    assert stats["marks_in"] == 3 and stats["marks_echoed"] == 3, stats


# --------------------------------------------------------------------------- 2. clear


QUEUED_S = 10.0
CLEAR_AFTER_S = 1.0
PENDING_MARKS = ["half", "end", "after-end"]


async def test_clear_cuts_the_audio_and_returns_pending_marks(
    peers: Peers, aws: Any, repo: Any
) -> None:
    audio = sweep(QUEUED_S)
    half = len(audio) // 2
    loop = asyncio.get_running_loop()

    async def script(session: BotSession, notes: dict[str, Any]) -> None:
        await send_audio(session, audio[:half])
        await session.send_mark(PENDING_MARKS[0])
        await send_audio(session, audio[half:])
        for name in PENDING_MARKS[1:]:
            await session.send_mark(name)
        await anyio.sleep(CLEAR_AFTER_S)
        notes["clear_at"] = loop.time()
        await session.send_clear()
        await session.wait_for(
            lambda: len(session.mark_echoes) == len(PENDING_MARKS), "pending marks", 2
        )
        await close_after(session, 1.0)

    call = await scripted_call(peers, repo, "clear", script)

    clear_at = call.epoch(call.script["clear_at"])
    frames = split_frames(audio)
    payloads = call.payloads()
    assert frames[0] in payloads, "the bot's audio never reached the caller"
    start = payloads.index(frames[0])
    played = 0
    while start + played < len(payloads) and payloads[start + played] == frames[played]:
        played += 1
    call.run_of(frames[:played])
    stale = [p for p in call.to_caller[start : start + played] if p.time > clear_at]
    after = call.to_caller[start + played :]
    # The tone played until the clear (about a second of it) ...
    assert played >= (CLEAR_AFTER_S - 0.2) / FRAME_S, f"only {played} frames played"
    assert after, "the audio went on after the clear until the call ended"
    assert after[0].time > clear_at, "silence before the clear was sent"
    # ... then silence, from the moment the node read the clear, to the end of the call: none of
    # the other 9 s of audio was ever sent.
    if stale:
        lags = [round((p.time - clear_at) * 1000, 2) for p in stale]
        assert stale[-1].time - clear_at <= CLEAR_LAST_STALE_S, lags
    assert after[0].time - clear_at <= CLEAR_SILENCE_S, (after[0].time - clear_at) * 1000
    assert {p.payload for p in after} == {SILENCE_FRAME}
    assert len(after) >= 40  # the call went on for the second after the clear
    # The marks queued behind the audio came back in order, right after the clear.
    assert [name for name, _ in call.session.mark_echoes] == PENDING_MARKS
    # What was heard: the first pending mark gets the frames that went out before the clear
    # (stale one included: it left before the node read the clear), the later ones nothing.
    assert call.session.mark_played == [(PENDING_MARKS[0], played * FRAME_MS)] + [
        (name, 0) for name in PENDING_MARKS[1:]
    ]
    for name in PENDING_MARKS:
        lag = call.echo_at(name) - clear_at
        assert 0 <= lag <= CLEAR_MARKS_S, f"{name} echoed {lag * 1000:.2f} ms after the clear"
    stats = call.record.stats["bot"][0]
    assert stats["clears"] == 1 and stats["marks_echoed"] == len(PENDING_MARKS), stats
    # The call's media figures (PROTOCOL.md, "Call figures"): the clear counted and timed, and
    # no underrun (the bot queued its audio ahead; the silence after the clear is no gap).
    slo = call.record.stats["slo"]
    assert_plausible_slo(slo)
    assert slo["barge_ins"] == 1 and slo["barge_in_stop_ms_max"] is not None, slo
    assert slo["underruns"] == 0 and slo["underrun_ms"] == 0, slo


def assert_plausible_slo(slo: dict[str, Any]) -> None:
    """Figures a clean call over loopback has: measured, in range, and nothing lost. (The
    record leaves a null figure out; these are all measured on such a call.)"""
    assert 0 < slo["rtp_to_bot_ms_p50"] <= slo["rtp_to_bot_ms_p99"] < 100, slo
    assert slo["pacing_error_ms_p99"] >= 0, slo
    assert slo["loss_pct"] == 0, slo
    assert slo["jitter_ms"] >= 0, slo
    assert slo.get("bot_rtt_ms", 0) >= 0, slo


# --------------------------------------------------------------------------- 2b. underruns


GAP_AUDIO_S = 0.3  # the first half of the utterance, then the bot is late with the rest
GAP_LATE_S = 0.45  # the queue runs dry ~0.15 s before the rest comes: under the 0.4 s cap


async def test_a_bot_late_with_the_rest_of_its_utterance_is_an_underrun(
    peers: Peers, aws: Any, repo: Any
) -> None:
    audio = sweep(2 * GAP_AUDIO_S)
    half = len(audio) // 2

    async def script(session: BotSession, notes: dict[str, Any]) -> None:
        await send_audio(session, audio[:half])
        await anyio.sleep(GAP_LATE_S)  # playout empties the queue meanwhile: silence goes out
        await send_audio(session, audio[half:])
        await session.send_mark("end")
        await session.wait_for(lambda: bool(session.mark_echoes), "end", 5)
        await close_after(session, 0.3)

    call = await scripted_call(peers, repo, "underrun", script)

    frames = split_frames(audio)
    payloads = call.payloads()
    first, second = payloads.index(frames[0]), payloads.index(frames[len(frames) // 2])
    between = payloads[first : second + 1]
    assert SILENCE_FRAME in between, "no silence mid-utterance: the bot was not late"
    slo = call.record.stats["slo"]
    assert_plausible_slo(slo)
    assert slo["underruns"] >= 1 and slo["underrun_ms"] >= FRAME_MS, slo
    # The rest of the utterance reached an idle queue: timed to its first packet. (The first
    # half came before the answer, while nothing played the queue: not a sample.)
    assert 0 < slo["bot_to_wire_ms_p50"] <= slo["bot_to_wire_ms_p99"] < 1000, slo
    assert slo["barge_ins"] == 0 and "barge_in_stop_ms_max" not in slo, slo


# --------------------------------------------------------------------------- 3. odd sizes


ODD_AUDIO_BYTES = 12100  # 75 frames and 100 bytes: the tail is padded when the mark comes
FIRST_CHUNK, SECOND_CHUNK = 333, 7
SPLIT_AT = 25 * FIRST_CHUNK  # 8325 bytes in 333-byte messages, the rest in 7-byte ones


async def test_odd_sized_bot_audio_plays_without_gaps_on_the_grid(
    peers: Peers, aws: Any, repo: Any
) -> None:
    audio = sweep(ODD_AUDIO_BYTES / RATE)
    assert len(audio) == ODD_AUDIO_BYTES

    async def script(session: BotSession, notes: dict[str, Any]) -> None:
        await send_audio(session, audio[:SPLIT_AT], FIRST_CHUNK)
        await send_audio(session, audio[SPLIT_AT:], SECOND_CHUNK)
        await session.send_mark("tail")  # the held 100-byte partial frame plays before it
        await session.wait_for(lambda: bool(session.mark_echoes), "tail", 5)
        await close_after(session, 0.3)

    call = await scripted_call(peers, repo, "odd", script)

    frames = split_frames(audio)
    assert len(frames) == 76 and frames[-1].endswith(b"\xff" * 60)
    start = call.run_of(frames)  # every byte, in order, no silence frame in between
    packets = call.to_caller[start : start + len(frames)]
    # On the 20 ms grid: typical departures on their slot, and the whole run as long as its
    # frames (a gap or a stall would stretch it; a late wake-up is caught up, not carried on).
    errors = grid_errors_ms(packets)
    assert statistics.median(abs(e) for e in errors) <= GRID_P50_MS, errors
    span = packets[-1].time - packets[0].time
    assert abs(span - (len(packets) - 1) * FRAME_S) <= GRID_SPAN_S, span
    tail_lag = call.echo_at("tail") - packets[-1].time
    assert -CLOCK_SLACK_S <= tail_lag <= MARK_AFTER_PACKET_S, tail_lag * 1000
    assert call.session.mark_played == [("tail", len(packets) * FRAME_MS)]  # the padded one too
    stats = call.record.stats["bot"][0]
    messages = len(chunks(audio[:SPLIT_AT], FIRST_CHUNK)) + len(chunks(audio[SPLIT_AT:], 7))
    assert stats["media_in"] == messages and stats["bytes_in"] == ODD_AUDIO_BYTES, stats
