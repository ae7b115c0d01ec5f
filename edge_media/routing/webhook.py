"""The routing webhook, client side: one signed POST per call, one strict deadline, no retry.

Why it is shaped like this (API guide §3.A): the customer's server picks the bot while the caller
hears ringing, so the whole exchange (address checks, connect, send, read) shares one deadline,
``Settings.routing_webhook_timeout_seconds`` (3 s, "strict"). Nothing is retried ("Retry: None")
and redirects are not followed: a 3xx is a failure, because following it would send the signed
body to a host no SSRF check has seen. Every way the exchange can go wrong ends as a
`WebhookFailure` whose reason is written for the log; `router.py` then falls back to the account
default ("Fallback to default behavior on failure").

The body is the canonical JSON that `shared.signing` signs, so a receiver verifying over the raw
body and one re-serialising per the guide's Python example both match the ``X-Signature``. The
Standard Webhooks headers (``webhook-id`` = the ``request_id``, ``webhook-timestamp``,
``webhook-signature``) let the receiver refuse a replayed request.

SSRF, twice and pinned: `RoutingWebhook` checks the URL itself first (the clear "webhook_url
refused: ..." reason, whatever client it is given), and the node's shared client is built on
``shared.pinned_http.PinnedAsyncTransport`` (``node_control.py``), which resolves the host once
more, checks those addresses, and connects to one of them. A rebinding name that passes the first
check and answers a private address to the second is refused there ("or nowhere"); the address a
socket is opened to is always one that was checked.

Split: `routing_request` (the payload) and `parse_answer` (the reply) are pure; `RoutingWebhook`
does the I/O with the node's one shared ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared.clock import iso_z, utc_now
from shared.pinned_http import refusal_of
from shared.settings import Settings
from shared.signing import signed_webhook
from shared.ssrf import Resolver, UnsafeUrlError, check_public_url, parse_ip_literal, resolve_host
from shared.validation import MediaKind, parse_media_target

__all__ = [
    "EVENT_TYPE",
    "MAX_ANSWER_BYTES",
    "MAX_SESSION_SECONDS",
    "MIN_SESSION_SECONDS",
    "AnswerError",
    "RoutingWebhook",
    "WebhookAnswer",
    "WebhookConnect",
    "WebhookFailure",
    "WebhookHangup",
    "WebhookOutcome",
    "WebhookResult",
    "loggable_url",
    "new_request_id",
    "parse_answer",
    "routing_request",
]

EVENT_TYPE = "call.routing_request"
# A routing answer is a few hundred bytes; anything past this is not one (and must not be buffered).
MAX_ANSWER_BYTES = 64 * 1024
# The answer's optional "timeout" (seconds the session may last); outside this range it is ignored.
MIN_SESSION_SECONDS = 1
MAX_SESSION_SECONDS = 86_400
# Longest hangup reason / value excerpt kept for logs and call records.
MAX_REASON_CHARS = 256
REQUEST_ID_BYTES = 8


class AnswerError(Exception):
    """A routing answer we cannot use; ``str()`` is the reason, written for the log."""


@dataclass(frozen=True, slots=True)
class WebhookConnect:
    """``{"action": "connect"}``: the bot to connect and the session limit (None: no limit).

    ``warnings`` lists what was ignored in an otherwise usable answer (a bad ``timeout``).
    """

    socket_url: str
    max_seconds: int | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookHangup:
    """``{"action": "hangup", "reason": ...}``: the customer refuses the call."""

    reason: str


@dataclass(frozen=True, slots=True)
class WebhookFailure:
    """No usable answer; ``reason`` says why ("timeout after 3.0 s", "HTTP 500", ...)."""

    reason: str


WebhookAnswer = WebhookConnect | WebhookHangup
WebhookOutcome = WebhookConnect | WebhookHangup | WebhookFailure


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """One exchange: what came of it, how long it took (ms) and the request_id we sent."""

    outcome: WebhookOutcome
    elapsed_ms: float
    request_id: str


def new_request_id() -> str:
    """``req_`` + random hex: lets the customer match their logs with ours."""
    return "req_" + secrets.token_hex(REQUEST_ID_BYTES)


def routing_request(
    *,
    call_uuid: str,
    timestamp: datetime,
    direction: str,
    caller_number: str,
    destination_number: str,
    account_id: str,
    request_id: str,
) -> dict[str, str]:
    """The routing request payload, field for field as the API guide §3.A shows it."""
    return {
        "event_type": EVENT_TYPE,
        "call_uuid": call_uuid,
        "timestamp": iso_z(timestamp),  # "2026-02-09T14:30:00Z": UTC, no milliseconds
        "direction": str(direction),
        "caller_number": caller_number,
        "destination_number": destination_number,
        "account_id": account_id,
        "request_id": request_id,
    }


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _session_seconds(value: Any) -> tuple[int | None, tuple[str, ...]]:
    """The optional ``timeout``: an integer 1..86400, else ignored with a warning."""
    if value is None:
        return None, ()
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 30.0 is how some JSON encoders write 30
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and MIN_SESSION_SECONDS <= value <= MAX_SESSION_SECONDS:
        return value, ()
    return None, (
        f"timeout {_excerpt(value)} ignored: must be an integer number of seconds "
        f"{MIN_SESSION_SECONDS}..{MAX_SESSION_SECONDS}",
    )


def parse_answer(status: int, body: bytes) -> WebhookAnswer:
    """Read a routing webhook reply; raises AnswerError (only) when it is not usable.

    The guide: "Your server must respond with 200 OK and a JSON body indicating the action."
    The Content-Type is not checked: the body decides. The SSRF check of a connect answer's
    ws(s) URL needs DNS, so it is the caller's (`RoutingWebhook`).
    """
    if status != httpx.codes.OK:
        raise AnswerError(f"HTTP {status}")
    if len(body) > MAX_ANSWER_BYTES:
        raise AnswerError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AnswerError("answer is not valid JSON") from None
    if not isinstance(answer, dict):
        raise AnswerError(f"answer is a JSON {type(answer).__name__}, not an object")
    action = answer.get("action")
    if action == "hangup":
        reason = answer.get("reason")
        reason = reason[:MAX_REASON_CHARS] if isinstance(reason, str) else ""
        return WebhookHangup(reason)
    if action != "connect":
        raise AnswerError(f"unknown action {_excerpt(action)}")
    socket_url = answer.get("socket_url")
    if not isinstance(socket_url, str):
        raise AnswerError(
            f"connect answer without a socket_url string (got {_excerpt(socket_url)})"
        )
    socket_url = socket_url.strip()
    try:
        parse_media_target(socket_url)
    except ValueError as exc:
        raise AnswerError(f"bad socket_url {_excerpt(socket_url)}: {exc}") from None
    max_seconds, warnings = _session_seconds(answer.get("timeout"))
    return WebhookConnect(socket_url, max_seconds, warnings)


def loggable_url(url: str) -> str:
    """``scheme://host[:port]/path`` of a URL: query strings and user info may hold secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RoutingWebhook:
    """Asks a customer's routing webhook where a call goes. One instance per node.

    ``client`` is the node's shared ``httpx.AsyncClient`` (its pool is reused across calls; this
    class never closes it). ``settings`` gives the deadline and the SSRF allow-list. ``resolve``
    is the SSRF check's resolver (tests pass a fake); it runs in a worker thread because
    getaddrinfo blocks. ``clock``, ``now`` and ``request_id`` are injectable for tests.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        *,
        resolve: Resolver = resolve_host,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = utc_now,
        request_id: Callable[[], str] = new_request_id,
    ) -> None:
        self.client = client
        self.settings = settings
        self._resolve = resolve
        self._clock = clock
        self._now = now
        self._request_id = request_id

    @property
    def timeout_seconds(self) -> float:
        return self.settings.routing_webhook_timeout_seconds

    async def ask(
        self,
        url: str,
        *,
        secret: str,
        call_uuid: str,
        direction: str,
        caller_number: str,
        destination_number: str,
        account_id: str,
    ) -> WebhookResult:
        """POST the signed routing request to ``url``; never raises for anything the peer does."""
        request_id = self._request_id()
        payload = routing_request(
            call_uuid=call_uuid,
            timestamp=self._now(),
            direction=direction,
            caller_number=caller_number,
            destination_number=destination_number,
            account_id=account_id,
            request_id=request_id,
        )
        body, headers = signed_webhook(
            secret,
            payload,
            call_uuid,
            webhook_id=request_id,
            timestamp=int(self._now().timestamp()),
        )
        limit = self.timeout_seconds
        started = self._clock()
        outcome: WebhookOutcome
        try:
            # API guide §3.A "Timeout: 3 seconds (Strict)": one deadline over the whole exchange;
            # httpx's own timeouts are per phase (connect, each read), so they cannot bound it.
            async with asyncio.timeout(limit):
                outcome = await self._exchange(url, body, headers, limit)
        except TimeoutError:
            outcome = WebhookFailure(f"timeout after {limit} s")
        except AnswerError as exc:
            outcome = WebhookFailure(str(exc))
        elapsed_ms = round((self._clock() - started) * 1000, 1)
        return WebhookResult(outcome, elapsed_ms, request_id)

    async def _exchange(
        self, url: str, body: bytes, headers: dict[str, str], limit: float
    ) -> WebhookAnswer:
        await self._check_public(url, "webhook_url")
        try:
            async with self.client.stream(
                "POST",
                url,
                content=body,
                headers=headers,
                timeout=limit,
                follow_redirects=False,
            ) as response:
                status = response.status_code
                if status != httpx.codes.OK:
                    raise AnswerError(f"HTTP {status}")  # the body is not read
                raw = await self._read_capped(response)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            refused = refusal_of(exc)
            if refused is not None:  # the pinned transport's own check (a rebinding name)
                raise AnswerError(f"webhook_url refused: {refused.error.reason}") from None
            raise AnswerError(f"request failed ({_describe(exc)})") from None
        answer = parse_answer(status, raw)
        if isinstance(answer, WebhookConnect):
            target = parse_media_target(answer.socket_url)
            if target.kind is MediaKind.WEBSOCKET and target.url is not None:
                await self._check_public(target.url, "socket_url")
        return answer

    @staticmethod
    async def _read_capped(response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise AnswerError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        received = bytearray()
        async for chunk in response.aiter_bytes():
            received += chunk
            if len(received) > MAX_ANSWER_BYTES:
                raise AnswerError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        return bytes(received)

    async def _check_public(self, url: str, field: str) -> None:
        """The node's own SSRF rule (its ``ssrf_allow_list``), checked again before we connect."""
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        try:
            if not host or parse_ip_literal(host) is not None:
                check_public_url(url, field, self.settings, self._resolve)
            else:
                await asyncio.to_thread(check_public_url, url, field, self.settings, self._resolve)
        except UnsafeUrlError as exc:
            raise AnswerError(f"{exc.field} refused: {exc.reason}") from None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_REASON_CHARS]
