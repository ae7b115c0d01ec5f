"""The native ElevenLabs Agents driver: a `BotDriver` over `ElevenLabsProtocol` and `WsConnection`.

Why this split (as the Twilio-stream driver): the protocol object decides every byte and is
tested on literal JSON, `audio_format` converts audio, the WebSocket layer moves bytes, and this
class only wires them to the caller leg.

Connecting, all within the bot connect timeout: the agent id (the target's ``&<id>``, else the
account's ``elevenlabs.agent_id``); the URL (a per-call signed URL from the REST API when the
account has an ``elevenlabs.api_key``, as a private agent requires; else the public one); the
WebSocket, whose first message is our initiation; and its answer, the metadata naming the audio
formats. Connect returns only then, so the bridge never starts a call whose audio it cannot
convert. The API key goes only into the REST request's ``xi-api-key`` header (never on the
socket, in a log, an exception or the stats); the signed URL's query is a signature, so only
its `display_url` is ever shown.

Why caller audio may be buffered: until the metadata names the agent's input format there is
nothing to convert it to. Up to `CALLER_BUFFER_BYTES` (2 s) is kept, oldest dropped, and sent in
order once the format is known, so the caller's first words are not lost.

Why caller audio goes to a PCM agent 40 ms at a time (`PCM_CHUNK_MS`): every message costs the
node a WebSocket frame, a write and, with an echoing peer, a message back, whatever its size;
once the 16 kHz conversion was made cheap, those costs were most of what the converted path
added (bench/calls.py --drivers elevenlabs-ulaw elevenlabs-pcm16: 40 ms chunks took the node
from 5.5 to 4.3 ms per call-second at 100 calls; bench/audio_convert.py times the conversion).
Two 20 ms frames per message halve them, and ElevenLabs suggests larger chunks for PCM anyway.
The price is latency: the first frame of each pair waits one frame (20 ms, 10 ms on average)
for the second, which the 16 kHz path more than recovers (its filter now holds 3 ms where the
resampler held 30). A ``ulaw_8000`` agent still gets every RTP payload as it comes: passthrough
costs nothing to batch away, and each chunk stays one payload on the wire.

Why the resampler's tail is flushed by a timer: a PCM agent's audio is resampled, and the
resampler keeps its last few ms until more input comes, so the end of every reply would wait
for the next one. Flushing restarts the filter, which marks the audio where it happens, so it is
done only when the agent has gone quiet and the caller is about to hear all it was given (its
playout end is estimated from what was handed to the leg): a reply that continues after that
follows a gap anyway. Each agent chunk only moves the flush's due time; the one timer, when it
fires early, sleeps again until then (rather than a timer cancelled and made per chunk).

Once `stop` begins (caller gone, or a redirect swaps the bot), anything the agent still sends is
dropped, and the socket is closed with 1000: the client ends an ElevenLabs conversation by
closing it, there is no goodbye message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import deque
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from edge_media.drivers.audio_format import AgentToCaller, CallerToAgent
from edge_media.drivers.base import (
    BotConnector,
    BotDriver,
    BotEnd,
    BotUnavailable,
    CallerLeg,
    CallInfo,
    ConnectStep,
    PlayedMark,
)
from edge_media.drivers.context import DriverContext
from edge_media.drivers.elevenlabs_protocol import (
    IGNORED_BAD_METADATA,
    IGNORED_UNUSED,
    AgentAudio,
    ElevenLabsProtocol,
    Ignored,
    Interruption,
    Metadata,
    Ping,
    StaleAudio,
    ToolCall,
    dtmf_text,
)
from edge_media.drivers.inbound_budget import DEFAULT_LIMITS, BotLimits, json_audio_wire_rate
from edge_media.drivers.provider_connect import Deadline, http_failure, read_account, socket_step
from edge_media.drivers.ws_client import (
    CLOSE_TIMEOUT,
    WsClosed,
    WsConnection,
    connection_figures,
    display_url,
    peer_end,
)
from edge_media.drivers.ws_connect import connect_websocket
from shared.validation import MediaKind, parse_media_target

__all__ = [
    "CALLER_BUFFER_BYTES",
    "ElevenLabsDriver",
    "conversation_url",
    "elevenlabs_connector",
]

logger = logging.getLogger("agera.drivers.elevenlabs")

NORMAL_CLOSURE = 1000
CALLER_BUFFER_BYTES = 16000  # 2 s of 8 kHz μ-law kept while the agent's input format is unknown
AGENT_IDLE_FLUSH = 0.1  # at least this long without agent audio before the resampler's tail
FLUSH_LEAD = 0.04  # ... and hand it over this long before the caller would run out of audio
FLUSH_SLACK = 0.002  # a flush timer this close to its due time counts as due (timers are ms)
PCM_CHUNK_MS = 40  # caller audio per user_audio_chunk for a PCM agent (ulaw: each frame as is)
ULAW_BYTES_PER_SECOND = 8000
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
CONVERSATION_PATH = "/v1/convai/conversation"
API_KEY_HEADER = "xi-api-key"
MAX_CLOSE_REASON_CHARS = 80
# Inbound budget (PROTOCOL.md §6): until the metadata names the agent's output format, real time
# is taken as the largest one's (pcm_48000 as base64 JSON); then the format's own.
FIRST_REALTIME_WIRE_BYTES = json_audio_wire_rate(96000)
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what a key is


def conversation_url(api_base: str, agent_id: str) -> str:
    """A public agent's conversation URL: the API host over ws(s)://."""
    parts = urlsplit(api_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{CONVERSATION_PATH}?{urlencode({'agent_id': agent_id})}"


class ElevenLabsDriver:
    """One call's ElevenLabs conversation. Built by the connector, open once `connect` returns."""

    def __init__(
        self,
        protocol: ElevenLabsProtocol,
        leg: CallerLeg,
        *,
        agent_id: str,
        close_timeout: float = CLOSE_TIMEOUT,
        idle_flush: float = AGENT_IDLE_FLUSH,
        pcm_chunk_ms: int = PCM_CHUNK_MS,
        limits: BotLimits = DEFAULT_LIMITS,
    ) -> None:
        self.protocol = protocol
        self.agent_id = agent_id
        self._leg = leg
        self._limits = limits
        self._close_timeout = close_timeout
        self._idle_flush = idle_flush
        self._pcm_chunk_bytes = ULAW_BYTES_PER_SECOND * pcm_chunk_ms // 1000
        self._chunk_bytes = 0  # caller μ-law per message: set with the agent's input format
        self._pending = b""  # caller μ-law waiting for the rest of its message
        self._call = protocol.info.call_uuid
        self._conn: WsConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._connect_error: BotUnavailable | None = None
        self._to_agent: CallerToAgent | None = None
        self._to_caller: AgentToCaller | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_at = 0.0  # loop time the resampler's tail is due, if no agent audio comes
        self._play_end = 0.0  # loop time when the audio handed to the leg so far is played
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._stop_reason: str | None = None
        self._audio_out = 0
        self._audio_in = 0
        self._bytes_to_caller = 0
        self._interruptions = 0
        self._stale_bytes = 0
        self._pongs = 0
        self._last_ping_ms: int | None = None
        self._dtmf_out = 0
        self._tool_calls = 0
        self._ignored = 0
        self._buffer_dropped = 0

    @property
    def conversation_id(self) -> str | None:
        metadata = self.protocol.metadata
        return metadata.conversation_id if metadata is not None else None

    async def connect(
        self,
        url: str,
        seconds: float,
        *,
        ssl_context: ssl.SSLContext | None = None,
        budget: float | None = None,
    ) -> None:
        """Open ``url``, send the initiation and wait for the conversation metadata, all within
        ``seconds``. `BotUnavailable` (the socket aborted) when any of it fails. ``budget`` is
        the whole connect timeout that ``seconds`` remains of, for the messages."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        self._ready = loop.create_future()
        try:
            conn = await connect_websocket(
                url,
                seconds=seconds,
                on_open=self.on_open,
                on_text=self.on_text,
                on_bytes=self.on_bytes,
                ssl_context=ssl_context,
                max_message_bytes=self._limits.max_message_bytes,
                budget=self._limits.budget(FIRST_REALTIME_WIRE_BYTES),
                log_name=f"[call {self._call}] ElevenLabs agent {self.agent_id}",
            )
        except BotUnavailable as error:
            raise BotUnavailable(
                f"ElevenLabs agent {self.agent_id}: {error}", step=socket_step(error)
            ) from None
        closed = conn.closed
        try:
            await asyncio.wait(
                (self._ready, closed),
                timeout=max(deadline - loop.time(), 0.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:  # cancelled: leave nothing open behind
            conn.abort()
            raise
        finally:
            if not closed.done():
                closed.cancel()
        if self._ready.done() and self._connect_error is None:
            return
        conn.abort()
        if self._connect_error is not None:
            raise self._connect_error
        if closed.done() and not closed.cancelled():
            how = closed.result()
            reason = f" {how.reason[:MAX_CLOSE_REASON_CHARS]}" if how.reason else ""
            raise BotUnavailable(
                f"ElevenLabs agent {self.agent_id} closed the conversation before its metadata "
                f"({how.code}{reason})",
                step=ConnectStep.HANDSHAKE,
            )
        raise BotUnavailable(
            f"ElevenLabs agent {self.agent_id} sent no conversation metadata within "
            f"{budget or seconds:g} s",
            step=ConnectStep.TIMEOUT,
        )

    # -- BotDriver ---------------------------------------------------------------------------

    def send_audio(self, ulaw: bytes) -> None:
        if self._stop_reason is not None:
            return
        to_agent = self._to_agent
        if to_agent is None or self._conn is None:
            self._buffer.append(ulaw)
            self._buffered += len(ulaw)
            while self._buffered > CALLER_BUFFER_BYTES and self._buffer:
                self._buffered -= len(self._buffer.popleft())
                self._buffer_dropped += 1
            return
        self._forward(to_agent, ulaw)

    def send_dtmf(self, digit: str) -> None:
        conn = self._conn
        if conn is None or self._stop_reason is not None:
            return
        if conn.send_text(self.protocol.contextual_update(dtmf_text(digit))):
            self._dtmf_out += 1

    def marks_played(self, marks: list[PlayedMark]) -> None:
        """Native agents get no playout acknowledgements: nothing to do."""

    async def wait_closed(self) -> BotEnd:
        conn = self._conn
        assert conn is not None, "wait_closed before the driver was connected"
        closed = await conn.closed
        return self._bot_end(closed)

    async def stop(self, reason: str) -> None:
        """Close with 1000; the closing handshake is bounded by the close timeout, after which
        the connection is aborted."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._cancel_flush()
            self._buffer.clear()
            self._buffered = 0
            self._pending = b""
        conn = self._conn
        if conn is None:
            return
        await conn.close(NORMAL_CLOSURE, reason, self._close_timeout)

    def stats(self) -> dict[str, Any]:
        conn = self._conn
        to_agent, to_caller = self._to_agent, self._to_caller
        return {
            "audio_out": self._audio_out,
            "audio_in": self._audio_in,
            "bytes_to_caller": self._bytes_to_caller,
            "interruptions": self._interruptions,
            "stale_dropped": self.protocol.stale_dropped,
            "stale_bytes": self._stale_bytes,
            "pongs": self._pongs,
            "agent_ping_ms": self._last_ping_ms,
            "dtmf_out": self._dtmf_out,
            "tool_calls": self._tool_calls,
            "ignored": self._ignored,
            "unknown_types": self.protocol.unknown_types,
            "buffer_dropped": self._buffer_dropped,
            **connection_figures(conn),
            "input_format": to_agent.format.name if to_agent is not None else None,
            "output_format": to_caller.format.name if to_caller is not None else None,
        }

    def provider_ids(self) -> dict[str, str]:
        conversation_id = self.conversation_id
        return {"conversation_id": conversation_id} if conversation_id else {}

    # -- WebSocket callbacks -----------------------------------------------------------------

    def on_open(self, conn: WsConnection) -> None:
        """The initiation is the first message, before anything the agent sends is handled."""
        self._conn = conn
        conn.send_text(self.protocol.initiation())

    def on_text(self, text: str) -> None:
        if self._stop_reason is not None:
            return
        for event in self.protocol.receive_text(text):
            if type(event) is AgentAudio:
                self._play(event)
            elif type(event) is Ping:
                self._pong(event)
            elif type(event) is Interruption:
                self._interrupt()
            elif type(event) is StaleAudio:
                self._stale_bytes += event.size
            elif type(event) is Metadata:
                self._start(event)
            elif type(event) is ToolCall:
                self._refuse_tool(event)
            elif type(event) is Ignored:
                self._note_ignored(event)

    def on_bytes(self, data: bytes) -> None:
        if self._stop_reason is not None:
            return
        for event in self.protocol.receive_bytes(data):
            if type(event) is Ignored:
                self._note_ignored(event)

    # -- internals ---------------------------------------------------------------------------

    def _start(self, metadata: Metadata) -> None:
        try:
            to_agent = CallerToAgent(metadata.user_input_audio_format)
            to_caller = AgentToCaller(metadata.agent_output_audio_format)
        except ValueError as error:
            self._fail_connect(f"ElevenLabs agent {self.agent_id}: {error}")
            return
        self._to_agent, self._to_caller = to_agent, to_caller
        budget = self._conn.inbound.budget if self._conn is not None else None
        if budget is not None:
            rate, burst = self._limits.byte_rates(
                json_audio_wire_rate(to_caller.format.bytes_per_second)
            )
            budget.retune_bytes(rate, burst, asyncio.get_running_loop().time())
        self._chunk_bytes = 0 if to_agent.passthrough else self._pcm_chunk_bytes
        buffered, self._buffer = self._buffer, deque()
        self._buffered = 0
        for frame in buffered:
            self._forward(to_agent, frame)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _fail_connect(self, reason: str) -> None:
        if self._ready is not None and not self._ready.done():
            self._connect_error = BotUnavailable(reason, step=ConnectStep.HANDSHAKE)
            self._ready.set_result(None)

    def _forward(self, to_agent: CallerToAgent, ulaw: bytes) -> None:
        """Caller μ-law to the agent: a passthrough frame at once, PCM once a chunk is full."""
        if self._chunk_bytes:
            if self._pending:
                ulaw = self._pending + ulaw
            if len(ulaw) < self._chunk_bytes:
                self._pending = ulaw
                return
            self._pending = b""
        self._send_user_audio(to_agent.convert(ulaw))

    def _send_user_audio(self, data: bytes) -> None:
        conn = self._conn
        if not data or conn is None:
            return
        if conn.send_text(self.protocol.user_audio(data)):
            self._audio_out += 1
        elif conn.take_drop_warning():
            logger.warning(
                "[call %s] ElevenLabs at %s is not reading: caller audio is being dropped",
                self._call,
                conn.url,
            )

    def _play(self, event: AgentAudio) -> None:
        to_caller = self._to_caller
        if to_caller is None:
            return
        self._audio_in += 1
        ulaw = to_caller.convert(event.audio)
        if not to_caller.holds_audio:
            self._bytes_to_caller += len(ulaw)
            self._leg.play(ulaw)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if ulaw:
            self._bytes_to_caller += len(ulaw)
            self._play_end = max(self._play_end, now) + len(ulaw) / ULAW_BYTES_PER_SECOND
            self._leg.play(ulaw)
        # Never earlier than before: play_end only grows (an interruption cancels the timer).
        self._flush_at = now + max(self._play_end - now - FLUSH_LEAD, self._idle_flush)
        if self._flush_timer is None:
            self._flush_timer = loop.call_at(self._flush_at, self._flush_tail)

    def _flush_tail(self) -> None:
        self._flush_timer = None
        to_caller = self._to_caller
        if self._stop_reason is not None or to_caller is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._flush_at - FLUSH_SLACK:  # agent audio came since it was set
            self._flush_timer = loop.call_at(self._flush_at, self._flush_tail)
            return
        tail = to_caller.flush()
        if tail:
            self._bytes_to_caller += len(tail)
            self._leg.play(tail)

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _interrupt(self) -> None:
        self._interruptions += 1
        self._cancel_flush()
        self._play_end = 0.0
        if self._to_caller is not None:
            self._to_caller.reset()
        self._leg.clear()  # native agents get no marks: the returned ones need no echo

    def _pong(self, ping: Ping) -> None:
        self._last_ping_ms = ping.ping_ms
        conn = self._conn
        # Past the write cap: an unanswered ping may end the conversation.
        if conn is not None and conn.send_text(self.protocol.pong(ping.event_id), always=True):
            self._pongs += 1

    def _refuse_tool(self, call: ToolCall) -> None:
        self._tool_calls += 1
        conn = self._conn
        if conn is not None:
            conn.send_text(self.protocol.tool_unsupported(call.tool_call_id), always=True)
        if self._tool_calls == 1:
            logger.warning(
                "[call %s] ElevenLabs agent %s asked for client tool %r; the gateway has none "
                "and answered with an error",
                self._call,
                self.agent_id,
                call.tool_name[:60],
            )

    def _note_ignored(self, event: Ignored) -> None:
        self._ignored += 1
        if event.kind == IGNORED_BAD_METADATA:
            self._fail_connect(f"ElevenLabs agent {self.agent_id} sent {event.detail}")
        if not event.first:
            return
        if event.kind == IGNORED_UNUSED:
            logger.debug("[call %s] ElevenLabs message %s not used", self._call, event.detail)
            return
        logger.warning(
            "[call %s] ignored an ElevenLabs message (%s): %s; later ones of this kind are only "
            "counted",
            self._call,
            event.kind,
            event.detail,
        )

    def _bot_end(self, closed: WsClosed) -> BotEnd:
        if closed.code == NORMAL_CLOSURE:
            return peer_end(closed, self._stop_reason, "agent ended the conversation")
        return peer_end(closed, self._stop_reason, "ElevenLabs closed the conversation")


# -- connecting ----------------------------------------------------------------------------


async def _signed_url(context: DriverContext, agent_id: str, api_key: str, seconds: float) -> str:
    endpoint = context.settings.elevenlabs_api_base.rstrip("/") + SIGNED_URL_PATH
    params = {"agent_id": agent_id}
    headers = {API_KEY_HEADER: api_key}
    if not _HEADER_VALUE.fullmatch(api_key):  # else httpx would fail, quoting it
        raise BotUnavailable(
            "elevenlabs.api_key holds characters an HTTP header cannot carry",
            step=ConnectStep.CREDENTIALS,
        )
    try:
        async with asyncio.timeout(seconds):
            if context.http is not None:
                response = await context.http.get(
                    endpoint, params=params, headers=headers, timeout=seconds
                )
            else:  # a node always passes its pooled client; tools and tests may not
                verify: ssl.SSLContext | bool = context.ssl_context or True
                async with httpx.AsyncClient(verify=verify) as client:
                    response = await client.get(
                        endpoint, params=params, headers=headers, timeout=seconds
                    )
    except (TimeoutError, httpx.TimeoutException):
        raise BotUnavailable(
            f"ElevenLabs did not answer the signed-URL request for agent {agent_id} in time",
            step=ConnectStep.TIMEOUT,
        ) from None
    except httpx.HTTPError as error:
        step, why = http_failure(error)
        raise BotUnavailable(
            f"ElevenLabs signed-URL request for agent {agent_id} to {display_url(endpoint)}: {why}",
            step=step,
        ) from None
    if response.status_code != httpx.codes.OK:
        raise BotUnavailable(
            f"ElevenLabs refused the signed-URL request for agent {agent_id}: "
            f"HTTP {response.status_code}",
            step=ConnectStep.REST,
        )
    try:
        url = response.json().get("signed_url")
    except (ValueError, AttributeError):
        url = None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise BotUnavailable(
            f"ElevenLabs answered the signed-URL request for agent {agent_id} without a "
            "ws(s):// signed_url",
            step=ConnectStep.REST,
        )
    return url


def elevenlabs_connector(context: DriverContext) -> BotConnector:
    """The connector for ``elevenlabs`` and ``elevenlabs&<agent_id>`` targets."""
    settings = context.settings

    async def connect(target: str, info: CallInfo, leg: CallerLeg, seconds: float) -> BotDriver:
        deadline = Deadline(seconds, "ElevenLabs")
        try:
            parsed = parse_media_target(target)
        except ValueError as error:
            raise BotUnavailable(f"not a media target: {error}", step=ConnectStep.TARGET) from None
        if parsed.kind is not MediaKind.ELEVENLABS:
            raise BotUnavailable(f"not an ElevenLabs target: {target}", step=ConnectStep.TARGET)
        account = await read_account(context, info.account_id, deadline)
        own = account.elevenlabs if account is not None else None
        agent_id = parsed.agent_id or (own.agent_id if own is not None else None)
        if not agent_id:
            raise BotUnavailable(
                f"account {info.account_id} has no elevenlabs.agent_id and the target names "
                "no agent (elevenlabs&<agent_id>)",
                step=ConnectStep.CREDENTIALS,
            )
        api_key = own.api_key if own is not None else None
        if api_key:
            url = await _signed_url(context, agent_id, api_key, deadline.left("signed URL"))
        else:
            url = conversation_url(settings.elevenlabs_api_base, agent_id)
        remaining = deadline.left("opening the conversation")
        driver = ElevenLabsDriver(
            ElevenLabsProtocol(info),
            leg,
            agent_id=agent_id,
            limits=BotLimits.from_settings(settings),
        )
        await driver.connect(url, remaining, ssl_context=context.ssl_context, budget=seconds)
        stats = driver.stats()
        logger.info(
            "[call %s] ElevenLabs conversation %s open to %s (agent %s%s, %s in, %s out)",
            info.call_uuid,
            driver.conversation_id,
            display_url(url),
            agent_id,
            ", signed" if api_key else "",
            stats["input_format"],
            stats["output_format"],
        )
        return driver

    return connect
