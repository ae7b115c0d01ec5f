"""The test phone behind ``agera call``: one outbound call on the gateway's own SIP stack.

Why our own stack and not a softphone: a new user's first call should need nothing but this
package, and a phone built from the same `SipEndpoint`, `UserAgent` and `MediaClock` as the
node exercises them from the other side (UAC, digest login, CANCEL, BYE, RFC 4733 both ways).
It is assembled the way `EdgeNode` assembles a node, minus routing: its router refuses every
inbound call, because this phone only dials.

What the call does, in order: INVITE (with digest credentials when given), wait for the answer
up to ``answer_timeout`` (then CANCEL), play the WAV into the leg's playout queue and keep the
queue topped up with silence afterwards (a far end that watches for dead RTP must not hang up on
us), send the DTMF digits as RFC 4733 events (SIP INFO when the far end did not offer
telephone-event), record what arrives, and hang up after ``hangup_after`` seconds of
conversation, on ``stop`` (Ctrl-C), or when the far end sends BYE.

The recording is every inbound 20 ms frame in the order it arrived: gaps (lost packets, or a far
end that sends nothing while it is silent) are not filled, so the file can be shorter than the
call and is not a timeline. The recorder is the leg's media sink from the moment its RTP port
opens, so the first packet after the 200 OK is in it too.

The hang-up cause is the Q.850 cause of the far end's ``Reason`` header (RFC 3326) when it sent
one, in the final response or the BYE; `SipCall` only keeps the cause its status maps to
(RFC 3398), and a 404 from the gateway means NO_ROUTE_DESTINATION, not UNALLOCATED_NUMBER.

What the phone is asked to dial is checked by phone_options.py, and what it returns and prints
about the call is phone_result.py's: this module is the call itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable
from typing import Any, TextIO

from edge_media.phone.phone_options import (
    DEFAULT_SIP_PORT,
    PhoneError,
    PhoneOptions,
    Target,
    check_options,
)
from edge_media.phone.phone_result import (
    PhoneResult,
    ReceivedDigit,
    cause_line,
    code_of_cause,
    q850_of_reason,
    stats_line,
)
from edge_media.phone.wav import CLOCK_RATE, read_wav_as_ulaw, write_ulaw_as_wav
from edge_media.rtp.dtmf import DtmfDigit
from edge_media.rtp.ports import PortAllocator
from edge_media.rtp.session import RtpSession
from edge_media.rtp.transport import MediaClock, monotonic_clock_for
from edge_media.sip.call import SipCall
from edge_media.sip.call_state import CallState
from edge_media.sip.causes import NORMAL_CLEARING, ORIGINATOR_CANCEL
from edge_media.sip.endpoint import SipEndpoint, host_for_uri
from edge_media.sip.info_dtmf import DTMF_RELAY, build_dtmf_relay
from edge_media.sip.message import SipResponse
from edge_media.sip.transaction import Event, RequestReceived, ResponseReceived, StrayResponse
from edge_media.sip.ua import CallApp, Reject, UserAgent
from edge_media.sip.uri import escape_user

__all__ = ["run_phone"]

PLAYOUT_SECONDS = 60.0  # queue room when no WAV is played (silence only)
PLAYOUT_MARGIN_SECONDS = 5.0  # room beyond the WAV, for the silence behind it
SILENCE_LOW_MS = 100.0  # top the queue up when less than this is left...
SILENCE_CHUNK = b"\xff" * (CLOCK_RATE // 5)  # ...with 200 ms of μ-law silence
FEED_INTERVAL = 0.05  # seconds between looks at the queue
BYE_SETTLE = 2.0  # seconds we wait for the answer to our BYE before closing the sockets
CANCEL_SETTLE = 2.0  # seconds we wait for the INVITE's final response after a CANCEL


# -- I/O ------------------------------------------------------------------------------------------


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


class _ReasonWatch:
    """Sits between the endpoint and the UA to keep what `SipCall` drops: Reason headers.

    Sees every transaction event first (the UA still gets each one): the final response to our
    INVITE and a BYE from the far end, for our Call-ID only.
    """

    def __init__(self, ua: UserAgent) -> None:
        self._ua = ua
        self.call_id: str | None = None
        self.remote_cause: tuple[str, int] | None = None
        self.final = asyncio.Event()  # a final response to the INVITE arrived

    def on_event(self, event: Event) -> None:
        try:
            self._look(event)
        finally:
            self._ua.on_event(event)

    def _look(self, event: Event) -> None:
        if isinstance(event, ResponseReceived | StrayResponse):
            response = event.response
            if response.call_id != self.call_id or response.cseq.method != "INVITE":
                return
            if response.status >= 200:
                self.final.set()
            if response.status >= 300:
                self._keep(response.headers.get_all("reason"))
        elif isinstance(event, RequestReceived):
            request = event.request
            if request.call_id == self.call_id and request.method == "BYE":
                self._keep(request.headers.get_all("reason"))

    def _keep(self, values: list[str]) -> None:
        cause = q850_of_reason(values)
        if cause is not None:
            self.remote_cause = cause


class _Recorder:
    """The leg's media sink: keeps every inbound frame and reports each digit as it comes."""

    def __init__(self, out: TextIO, call: SipCall) -> None:
        self._out = out
        self._call = call
        self.frames: list[bytes] = []
        self.digits: list[ReceivedDigit] = []

    def on_frames(self, frames: tuple[bytes, ...]) -> None:
        self.frames.extend(frames)

    def on_digits(self, digits: tuple[DtmfDigit, ...]) -> None:
        for digit in digits:
            self._digit(digit.digit, "RFC 4733")

    def on_info_digit(self, digit: str, duration_ms: int) -> None:
        self._digit(digit, "SIP INFO")

    def _digit(self, digit: str, via: str) -> None:
        call = self._call
        at = call.endpoint.now() - (call.answered_at or call.endpoint.now())
        self.digits.append(ReceivedDigit(digit, via, round(at, 3)))
        _say(self._out, f"received DTMF {digit} ({via})")


async def _refuse(call: SipCall) -> CallApp | Reject:
    return Reject(603, "Decline (this phone only dials)", "CALL_REJECTED")


async def _first(*waits: Awaitable[Any], limit: float | None = None) -> None:
    """Wait until any of ``waits`` is done (or ``limit`` seconds pass), then cancel the rest."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _source_address(host: str) -> str:
    """The local address packets to ``host`` leave from: what our Via, Contact and SDP carry.

    A connected UDP socket makes the kernel pick the route; nothing is sent.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, DEFAULT_SIP_PORT))
        except OSError as error:
            raise PhoneError(f"no route to {host}: {error.strerror or error}") from None
        return str(probe.getsockname()[0])


async def _address_of(target: Target) -> str:
    """The target host as an IP literal (A/AAAA lookup for a name, first answer)."""
    try:
        ipaddress.ip_address(target.host)
        return target.host
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as error:
        raise PhoneError(f"cannot resolve {target.host}: {error.strerror or error}") from None
    return str(infos[0][4][0])


class _Phone:
    """One call's worth of stack: endpoint, user agent and media clock; `close` undoes it all."""

    def __init__(self, endpoint: SipEndpoint, clock: MediaClock, ua: UserAgent) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.ua = ua
        self.watch = _ReasonWatch(ua)
        endpoint.attach(self.watch)

    @classmethod
    async def start(cls, options: PhoneOptions, host: str, playout_seconds: float) -> _Phone:
        endpoint = SipEndpoint(host, options.local_port)
        try:
            await endpoint.start()
        except OSError as error:
            await endpoint.close()
            raise PhoneError(
                f"cannot listen on {host}:{options.local_port}: {error.strerror or error}"
            ) from None
        loop = asyncio.get_running_loop()
        clock = MediaClock.create(loop=loop, clock=monotonic_clock_for(loop))
        ua = UserAgent(
            endpoint,
            ports=PortAllocator(*options.rtp_ports),
            pacer=clock.pacer,
            router=_refuse,
            source_allowed=lambda source: True,
            media_host=host,
            playout_seconds=playout_seconds,
        )
        clock.start()
        return cls(endpoint, clock, ua)

    async def close(self) -> None:
        # A call still up here means the caller was interrupted: the far end must not keep it.
        await self.ua.hangup_all(NORMAL_CLEARING, settle=BYE_SETTLE)
        await self.ua.close()
        self.clock.stop()
        await self.endpoint.close()


async def _feed_silence(media: RtpSession) -> None:
    """Keep RTP flowing after the WAV: a far end's media timeout must not end the call."""
    playout = media.playout
    while True:
        if playout.buffered_ms < SILENCE_LOW_MS:
            playout.push_media(SILENCE_CHUNK)
        await asyncio.sleep(FEED_INTERVAL)


async def _send_digits(
    call: SipCall, media: RtpSession, options: PhoneOptions, out: TextIO, sent: list[str]
) -> None:
    for key in options.digits.upper():
        await asyncio.sleep(options.digit_delay)
        if call.is_ended:
            return
        if media.send_dtmf(key):
            via = "RFC 4733"
        else:
            # RFC 6086 legacy INFO usage, for a far end that negotiated no telephone-event.
            via = "SIP INFO"
            final = await call.request("INFO", body=build_dtmf_relay(key), content_type=DTMF_RELAY)
            if not (isinstance(final, SipResponse) and 200 <= final.status < 300):
                _say(out, f"DTMF {key} not delivered: the far end refused the INFO")
                continue
        sent.append(key)
        _say(out, f"sent DTMF {key} ({via})")


async def run_phone(
    options: PhoneOptions, *, out: TextIO, stop: asyncio.Event | None = None
) -> PhoneResult:
    """Place the call ``options`` describe; print one line per event to ``out``.

    ``stop`` set (Ctrl-C) hangs up: CANCEL before the answer, BYE after. Raises PhoneError for
    options it cannot dial with and WavError for a WAV it cannot play, both before dialling.
    """
    target = check_options(options)
    audio = read_wav_as_ulaw(options.wav_in) if options.wav_in is not None else b""
    stop = stop or asyncio.Event()
    address = await _address_of(target)
    host = options.local_host or _source_address(address)
    playout_seconds = max(PLAYOUT_SECONDS, len(audio) / CLOCK_RATE + PLAYOUT_MARGIN_SECONDS)
    phone = await _Phone.start(options, host, playout_seconds)
    try:
        return await _call(phone, options, target, address, audio, out, stop)
    finally:
        await phone.close()


async def _call(
    phone: _Phone,
    options: PhoneOptions,
    target: Target,
    address: str,
    audio: bytes,
    out: TextIO,
    stop: asyncio.Event,
) -> PhoneResult:
    ua, endpoint = phone.ua, phone.endpoint
    credentials = None
    if options.username is not None and options.password is not None:
        credentials = (options.username, options.password)
    from_user = escape_user(options.from_user)
    call = ua.invite(
        target.uri,
        addr=(address, target.port),
        kind=target.transport,
        from_user=from_user,
        from_display=options.from_display,
        credentials=credentials,
    )
    phone.watch.call_id = call.call_id
    recorder = _Recorder(out, call)
    call.media_sink = recorder  # before the media opens: no packet after the answer is missed
    local_host, local_port = endpoint.advertised
    _say(
        out,
        f"calling {target.uri} from sip:{from_user}@{host_for_uri(local_host)}:{local_port} "
        f"over {target.transport}",
    )
    ringing = asyncio.ensure_future(call.wait_ringing())

    def report_ringing(task: asyncio.Future[bool]) -> None:
        if not task.cancelled() and task.result():
            _say(out, "ringing")

    ringing.add_done_callback(report_ringing)
    try:
        answered = await _wait_answer(phone, call, options, stop, out)
    finally:
        ringing.cancel()
    if not answered:
        return _result(phone, call, None, [], 0.0)
    media = call.media
    assert media is not None and call.answered_at is not None
    call.on_digit = recorder.on_info_digit
    negotiated = call.negotiated
    if negotiated is not None:
        dtmf = negotiated.dtmf_payload_type
        _say(
            out,
            f"answered: {negotiated.codec_name}, RTP to "
            f"{negotiated.remote_address}:{negotiated.remote_port}, "
            + (f"DTMF payload type {dtmf}" if dtmf is not None else "no RFC 4733 DTMF"),
        )
    if audio:
        media.playout.push_media(audio)
        _say(out, f"playing {options.wav_in} ({len(audio) / CLOCK_RATE:.2f} s)")
    sent: list[str] = []
    helpers = [asyncio.ensure_future(_feed_silence(media))]
    if options.digits:
        helpers.append(asyncio.ensure_future(_send_digits(call, media, options, out, sent)))
    try:
        await _first(call.ended(), stop.wait(), limit=options.hangup_after)
        if not call.is_ended:
            why = "on request" if stop.is_set() else f"after {options.hangup_after:g} s"
            _say(out, f"hanging up {why}")
            await call.hangup(NORMAL_CLEARING)
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    connected = endpoint.now() - call.answered_at
    bye = call.bye_task
    if bye is not None:
        await asyncio.wait({bye}, timeout=BYE_SETTLE)
        bye.cancel()  # no answer to our BYE: the call is over for us all the same
    heard = b"".join(recorder.frames)
    result = _result(phone, call, recorder, sent, connected)
    _say(out, cause_line(result))
    if options.wav_out is not None:
        write_ulaw_as_wav(options.wav_out, heard)
        _say(out, f"recorded {len(heard) / CLOCK_RATE:.2f} s to {options.wav_out}")
    _say(out, stats_line(result.rtp_stats))
    return result


async def _wait_answer(
    phone: _Phone, call: SipCall, options: PhoneOptions, stop: asyncio.Event, out: TextIO
) -> bool:
    """True once answered; else the call has ended (rejected, timed out, or we cancelled)."""
    await _first(call.wait_answered(), stop.wait(), limit=options.answer_timeout)
    if call.answered_at is not None and not call.is_ended:
        return True
    if call.is_ended:
        _say(out, cause_line(_result(phone, call, None, [], 0.0)))
        return False
    if stop.is_set():
        cause = ORIGINATOR_CANCEL
        _say(out, "cancelling on request")
    else:
        cause = "NO_ANSWER" if call.state is CallState.RINGING else "NO_USER_RESPONSE"
        _say(out, f"cancelling: no answer within {options.answer_timeout:g} s")
    await call.hangup(cause)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CANCEL_SETTLE):
            await phone.watch.final.wait()  # the 487 (or a 200 that crossed the CANCEL)
    _say(out, cause_line(_result(phone, call, None, [], 0.0)))
    return False


def _result(
    phone: _Phone,
    call: SipCall,
    recorder: _Recorder | None,
    sent: list[str],
    connected: float,
) -> PhoneResult:
    end = call.end
    answered = call.answered_at is not None
    cause, status, reason, by = NORMAL_CLEARING, None, "", "local"
    if end is not None:
        cause, status, reason, by = end.cause, end.status, end.detail, end.by
    code = code_of_cause(cause)
    if by != "local" and phone.watch.remote_cause is not None:
        cause, code = phone.watch.remote_cause
    media = call.media
    negotiated = call.negotiated
    result = PhoneResult(
        answered=answered,
        cause=cause,
        cause_code=code,
        status=status,
        reason=reason,
        by=by,
        seconds_connected=round(connected, 3),
        codec=negotiated.codec_name if negotiated is not None else None,
        digits_sent=tuple(sent),
        digits_received=tuple(recorder.digits) if recorder is not None else (),
        bytes_heard=sum(len(frame) for frame in recorder.frames) if recorder else 0,
        rtp_stats=media.stats() if media is not None and answered else {},
    )
    return result
