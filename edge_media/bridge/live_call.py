"""One bridged call on this node: its SIP leg, its bot, its record, from first ring to the end.

Why one object per call: every path a call can take (inbound, originate, redirect, transfer,
hangup command, bot crash, node shutdown) must end in exactly one ``call.completed`` with the
right status, cause and figures. `LiveCall` is where that guarantee lives: `finish` runs in a
``finally`` of every call application, writes the terminal state once, and never raises.

The bot side is swappable (redirect): `connect_bot` connects a new driver while the old one still
plays, then the old one is stopped, its queued audio cleared, and caller media goes to the new
one. The caller hears silence for the switch, never a drop of the SIP leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from edge_media.bridge.bot_failover import (
    HOLD_TONE_SECONDS,
    ReconnectBudget,
    hold_tone,
)
from edge_media.bridge.call_slo import call_stats, report_media
from edge_media.bridge.caller_media import CallerMedia, PlayoutLeg
from edge_media.bridge.services import (
    BridgeServices,
    CallerCall,
)
from edge_media.bridge.setup_steps import SetupSteps
from edge_media.drivers.base import (
    BotDriver,
    BotEnd,
    BotUnavailable,
    CallInfo,
)
from edge_media.drivers.registry import driver_name, public_target
from edge_media.sip.call import SipCall
from shared.events import (
    CallAnswered,
    CallBotReconnected,
    CallCompleted,
    CallEvent,
    CallRinging,
)
from shared.models import CallStatus, MediaLeg

__all__ = ["LiveCall", "status_for_end", "until_ended"]

logger = logging.getLogger("agera.bridge")

T = TypeVar("T")

BOT_STOP_SECONDS = 2.0

# A call that never answered ends with the status its cause names (Twilio's vocabulary).
_UNANSWERED_STATUS = {
    "USER_BUSY": CallStatus.BUSY,
    "NO_ANSWER": CallStatus.NO_ANSWER,
    "NO_USER_RESPONSE": CallStatus.NO_ANSWER,
    "ORIGINATOR_CANCEL": CallStatus.CANCELED,
}


def status_for_end(answered: bool, cause: str) -> CallStatus:
    """The terminal status of a call from whether it was answered and its Q.850 cause."""
    if answered:
        return CallStatus.COMPLETED
    return _UNANSWERED_STATUS.get(cause, CallStatus.FAILED)


class _Log(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # The call's name may hold "%" (a Call-ID may: RFC 3261 word); it is part of the format
        # string here, so it is escaped, or every line of that call would fail to format.
        name = str(self.extra["call"]).replace("%", "%%")  # type: ignore[index]
        return f"[call {name}] {msg}", kwargs


class LiveCall:
    """A call this node owns. Create, `register`, drive it, and always `finish` it."""

    def __init__(
        self,
        services: BridgeServices,
        leg: CallerCall | None,
        info: CallInfo,
        call_uuid: uuid.UUID,
    ) -> None:
        self.services = services
        self.leg = leg  # None while an originate routes, before it dials
        self.info = info
        self.call_uuid = call_uuid
        self.log = _Log(logger, {"call": call_uuid})
        self.caller = CallerMedia()  # the caller's wire, joined to the current bot
        self.driver: BotDriver | None = None
        self.target: str | None = None
        self.fallback: str | None = None  # the account default, for a bot that does not come back
        self.failover = ReconnectBudget(services.reconnect)
        self.answered_at: datetime | None = None
        self.started = time.monotonic()
        self.setup = SetupSteps(self.started)
        self.ended_cause: str | None = None
        self.sip_status: int | None = None
        self.max_seconds: int | None = None
        self.transferring = False
        # A provider's stream is transferred by the provider's REST API (bridge/commands.py);
        # a SIP leg has none and is transferred by REFER or a relay.
        self.remote_transfer: Callable[[str], Awaitable[bool]] | None = None
        # A redirect that came while the call was routing or ringing, before any bot connected:
        # the first connection goes there instead of to the route's target.
        self.pending_target: str | None = None
        self._swapped = asyncio.Event()
        self._finished = False
        self.done = asyncio.Event()  # set once call.completed is written (or given up on)
        self._bot_stats: list[dict[str, Any]] = []
        # One entry per bot connection or failed attempt, in order: the record's ``media``.
        self.media: list[MediaLeg] = []
        self._media_of: dict[BotDriver, MediaLeg] = {}  # each connected driver's entry
        self._extra_stats: dict[str, Any] = {}
        # The call holds an account call slot (taken by inbound_app, or by the API for an
        # originate this node claimed); given back once call.completed is written.
        self.holds_slot = False

    @property
    def sip(self) -> SipCall | None:
        """The caller leg when it is SIP (transfers by REFER or relay need one)."""
        leg = self.leg
        return leg if isinstance(leg, SipCall) else None

    @sip.setter
    def sip(self, call: SipCall | None) -> None:
        self.leg = call

    # -- registry ---------------------------------------------------------------------------

    def register(self) -> None:
        self.services.live[self.call_uuid] = self

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    async def event(self, event: CallEvent) -> bool:
        """Write a state change to the record and the events queue (never raises)."""
        try:
            return bool(await self.services.recorder.record(event))
        except Exception:
            self.log.exception("recording %s failed", event.type)
            return False

    def _base(self) -> dict[str, Any]:
        return {
            "call_uuid": self.call_uuid,
            "account_id": self.info.account_id,
            "node_id": self.services.node_id,
        }

    async def ringing(self) -> None:
        await self.event(CallRinging(**self._base()))

    def note_answered(self) -> None:
        """The moment the call was answered (once): its time, the setup metric and log line.
        Separate from `mark_answered` because the answer may go out before `call.ringing` has
        been queued, and ``answered_at`` and the setup time are the answer's, not the event's."""
        if self.answered_at is not None:
            return
        self.answered_at = datetime.now(UTC)
        self.services.metrics.call_setup_ms((time.monotonic() - self.started) * 1000)
        if self.setup.steps:
            self.log.info("set up in %s", self.setup)

    async def mark_answered(self) -> None:
        self.note_answered()
        # Which bot took the call, for GET /api/calls/{id} and the callback; shown like every
        # target the edge writes, without user info or query (bot tokens live there).
        shown = public_target(self.target) if self.target is not None else None
        await self.event(CallAnswered(**self._base(), media_target=shown))
        if shown is not None:
            await self._update({"socket_url": shown, "media": self._media_record()})

    async def _update(self, fields: dict[str, Any]) -> None:
        try:
            await self.services.recorder.update(self.call_uuid, fields)
        except Exception:
            self.log.exception("record update failed")

    # -- the bot ----------------------------------------------------------------------------

    async def connect_bot(
        self,
        target: str,
        fallback: str | None = None,
        *,
        info: CallInfo | None = None,
        resumed_from: str | None = None,
    ) -> bool:
        """Connect ``target`` (or ``fallback`` when it is unreachable) and make it the call's bot.

        Each bot gets a playout queue of its own: a new bot's greeting queues up while the old
        one still plays, and the swap makes the new queue the leg's, so the old bot's unplayed
        audio (and its marks) go with it. False, with the old driver untouched, when neither
        target connects. ``info`` and ``resumed_from`` are a reconnection's (`_recover`).
        """
        if self.driver is None and self.pending_target is not None:
            self.log.info("connecting the redirect target instead of %s", public_target(target))
            target, self.pending_target = self.pending_target, None
        if fallback:
            self.fallback = fallback
        for candidate in (target, fallback):
            if not candidate:
                continue
            leg = PlayoutLeg(self.log, capacity_seconds=self.services.playout_seconds)
            started = time.monotonic()
            entry = MediaLeg(
                driver=driver_name(candidate),
                target=public_target(candidate),
                started_at=datetime.now(UTC),
                resumed_from=resumed_from,
            )
            self.media.append(entry)
            try:
                driver = await self.services.connect(
                    candidate, info or self.info, leg, self.services.bot_connect_timeout
                )
            except BotUnavailable as error:
                self.log.warning(
                    "bot %s unreachable (%s step failed): %s", entry.target, error.step, error
                )
                entry.ended_at = datetime.now(UTC)
                entry.failed_step = str(error.step)
                entry.end_reason = str(error)[:512]
                continue
            self.services.metrics.bot_connect_ms((time.monotonic() - started) * 1000)
            entry.provider_ids = self._provider_ids(driver)
            self._media_of[driver] = entry
            self.log.info("bot connected: %s", entry.target)
            old = self.driver
            self.driver, self.target = driver, candidate
            self.caller.attach(driver, leg)
            if old is not None:
                self._swapped.set()
                await self._stop_driver(old, "redirected")
            return True
        return False

    def _provider_ids(self, driver: BotDriver) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in driver.provider_ids().items()}
        except Exception:
            self.log.exception("provider ids failed")
            return {}

    def _end_media(self, driver: BotDriver, reason: str) -> None:
        """Close the driver's ``media`` entry once (the first reason wins: a bot that hung up
        stays "bot closed", not the "call ended" of the stop that follows)."""
        entry = self._media_of.get(driver)
        if entry is None:
            return
        entry.provider_ids = self._provider_ids(driver) or entry.provider_ids
        if entry.ended_at is None:
            entry.ended_at = datetime.now(UTC)
            entry.end_reason = reason[:512]

    def _media_record(self) -> list[dict[str, Any]]:
        return [entry.model_dump(mode="json", exclude_none=True) for entry in self.media]

    async def save_media(self) -> None:
        """Write the ``media`` list to the record now (after a redirect, or a failed one)."""
        if self.media:
            await self._update({"media": self._media_record()})

    def attach_media(self) -> None:
        """After the answer: bot audio plays on the leg, caller audio goes to the bot."""
        leg = self.leg
        if leg is None or leg.media is None:
            return
        self.caller.bind(leg.media)

    async def _stop_driver(self, driver: BotDriver, reason: str) -> None:
        try:
            async with asyncio.timeout(BOT_STOP_SECONDS + 1):
                await driver.stop(reason)
        except Exception as error:
            self.log.info("bot stop (%s) did not complete cleanly: %s", reason, error)
        self._end_media(driver, reason)
        try:
            self._bot_stats.append(driver.stats())
        except Exception:
            self.log.exception("bot stats failed")

    async def stop_bot(self, reason: str) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            self.caller.detach()  # caller audio is dropped until the next bot
            await self._stop_driver(driver, reason)

    async def run(self) -> None:
        """Serve the answered call until the caller or the bot ends it (or the session limit)."""
        leg = self.leg
        assert leg is not None
        deadline = None if not self.max_seconds else time.monotonic() + self.max_seconds
        ended = asyncio.ensure_future(leg.ended())
        try:
            while not leg.is_ended:
                driver = self.driver
                if driver is None:  # transferred away from the bot: wait for the end
                    await ended
                    break
                self._swapped.clear()
                closed = asyncio.ensure_future(driver.wait_closed())
                swapped = asyncio.ensure_future(self._swapped.wait())
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(
                    {ended, closed, swapped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in (closed, swapped):
                    if task not in done:
                        task.cancel()
                if ended in done:
                    break
                if not done:
                    self.log.info("session limit of %d s reached; hanging up", self.max_seconds)
                    await leg.hangup("NORMAL_CLEARING")
                    break
                if closed in done and driver is self.driver and not self.transferring:
                    end: BotEnd = closed.result()
                    self._end_media(driver, end.reason)
                    if end.failed and self.services.reconnect.attempts > 0:
                        finished, back = await until_ended(leg, self._recover(driver, end))
                        if not finished:
                            break
                        if back:
                            continue
                        self.log.info("no bot came back; hanging up")
                        await leg.hangup("NORMAL_CLEARING")
                        break
                    if end.by_bot:
                        self.log.info(
                            "bot ended the stream (%s%s); hanging up",
                            end.reason,
                            f", code {end.code}" if end.code is not None else "",
                        )
                        await leg.hangup("NORMAL_CLEARING")
                        break
                    await ended
                    break
        finally:
            ended.cancel()

    # -- failover (bridge/bot_failover.py) ---------------------------------------------------

    async def _recover(self, failed: BotDriver, end: BotEnd) -> bool:
        """The bot connection failed: reconnect to the same target within the budget, then the
        account default. True once a bot serves the call again."""
        target = self.target
        gap_started = time.monotonic()
        ids = self._provider_ids(failed)
        resumed_from = ids.get("stream_sid") or next(iter(ids.values()), None)
        self.driver = None
        self.caller.detach()  # the failed bot's queued audio plays out, then comfort silence
        await self._stop_driver(failed, end.reason)
        if self.services.reconnect.hold_tone:
            self.caller.hold(hold_tone() * int(HOLD_TONE_SECONDS / 2))
        shown = public_target(target) if target is not None else "?"
        self.log.warning("bot connection to %s failed (%s); reconnecting", shown, end.reason)
        tried = 0
        serving: str | None = None
        while target is not None and serving is None:
            pause = self.failover.next_pause(tried)
            if pause is None:
                break
            await asyncio.sleep(pause)
            if self.driver is not None:  # a redirect connected a bot meanwhile
                return True
            self.failover.spend()
            tried += 1
            if await self._reconnect(target, resumed_from, gap_started):
                serving = target
        is_fallback = serving is None
        if serving is None:
            fallback = self.fallback
            if not fallback or fallback == target:
                self.log.warning("bot %s did not come back (%d attempts)", shown, tried)
                return False
            tried += 1
            self.log.warning("bot %s did not come back; the account default takes over", shown)
            if not await self._reconnect(fallback, resumed_from, gap_started):
                return False
            serving = fallback
        gap_ms = int((time.monotonic() - gap_started) * 1000)
        self.failover.recovered(gap_ms)
        self.add_stats(
            bot_reconnects=self.failover.reconnects, bot_gap_ms=self.failover.gap_ms_total
        )
        self.log.info("bot back after %d ms (%d attempts)", gap_ms, tried)
        await self.event(
            CallBotReconnected(
                **self._base(),
                media_server=public_target(serving),
                driver=driver_name(serving),
                resumed_from=resumed_from,
                gap_ms=gap_ms,
                attempts=tried,
                fallback=is_fallback,
                reason=end.reason[:512],
            )
        )
        await self.save_media()
        return True

    async def _reconnect(self, target: str, resumed_from: str | None, since: float) -> bool:
        gap_ms = int((time.monotonic() - since) * 1000)
        info = replace(self.info, resumed_from=resumed_from, resume_gap_ms=gap_ms)
        return await self.connect_bot(target, info=info, resumed_from=resumed_from)

    # -- the end ----------------------------------------------------------------------------

    def add_stats(self, **figures: Any) -> None:
        self._extra_stats.update(figures)

    async def finish(self, *, cause: str | None = None, sip_status: int | None = None) -> None:
        """Stop the bot, write ``call.completed`` once, forget the call. Never raises."""
        if self._finished:
            return
        self._finished = True
        try:
            await self._complete(cause, sip_status)
        except Exception:
            self.log.exception("writing call.completed failed")
        finally:
            # After call.completed (a limit counts a call until its record is final), and even
            # when writing it failed: a slot kept by a failed write would block the account.
            await self._release_slot()
            self.services.live.pop(self.call_uuid, None)
            self.done.set()

    async def _complete(self, cause: str | None, sip_status: int | None) -> None:
        try:
            await self.stop_bot("call ended")
        except Exception:
            self.log.exception("stopping the bot failed")
        leg = self.leg
        end = leg.end if leg is not None else None
        cause = cause or (end.cause if end is not None else None) or "NORMAL_CLEARING"
        if sip_status is None and end is not None:
            sip_status = end.status
        stats = self._stats()
        duration = 0
        if self.answered_at is not None:
            duration = max(0, math.floor((datetime.now(UTC) - self.answered_at).total_seconds()))
        status = status_for_end(self.answered, cause)
        completed = CallCompleted(
            **self._base(),
            status=status,
            answered_at=self.answered_at,
            duration=duration,
            hangup_cause=cause,
            sip_status=sip_status,
            stats=stats,
        )
        self.log.info("completed: %s, %s, %d s", status.value, cause, duration)
        await self.save_media()  # before call.completed: the record is whole when it is sent
        await self.event(completed)
        self._report_media(stats)

    async def _release_slot(self) -> None:
        """Give the account's call slot back, once (never raises)."""
        slots = self.services.slots
        if not self.holds_slot or slots is None:
            return
        self.holds_slot = False
        try:
            await slots.release(self.info.account_id, self.call_uuid)
        except Exception:
            self.log.exception("releasing the call slot failed")

    def _stats(self) -> dict[str, Any]:
        media = self.leg.media if self.leg is not None else None
        return call_stats(
            media,
            self.caller,
            self._bot_stats,
            self._extra_stats,
            self.services.pacing_p99(),
            self.log,
        )

    def _report_media(self, stats: dict[str, Any]) -> None:
        report_media(self.services.metrics, stats)


async def until_ended(leg: CallerCall, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run ``work`` unless the caller's call ends first: (finished, result); the work is
    cancelled."""
    task = asyncio.ensure_future(work)
    ended = asyncio.ensure_future(leg.ended())
    try:
        done, _ = await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
    if task in done:
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # its outcome no longer matters: the caller is gone
    return False, None
