"""What the native drivers share while connecting: the account read, the time left, and how an
HTTP or WebSocket failure is named.

Why one place: ElevenLabs and Vapi both read the account's credentials, make one REST call and
open one socket, all within the bot connect timeout, and the call record's ``media`` entry says
which of those steps failed (`ConnectStep`). Naming a failure the same way for both keeps the
record comparable across providers, and keeps one rule for what may be said: an error is named
by the OS error under it or by its type, never by its text, because an HTTP library's message can
quote a header, and one header is the API key.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx

from edge_media.drivers.base import BotUnavailable, ConnectStep
from edge_media.drivers.context import DriverContext
from shared.models import Account

__all__ = [
    "Deadline",
    "http_failure",
    "read_account",
    "socket_step",
]

CAUSE_DEPTH = 8  # links of an exception's cause chain searched for the OS-level error
DETAIL_CHARS = 120


class Deadline:
    """The connect timeout as a point in time: every step gets what is left of it."""

    def __init__(self, seconds: float, provider: str) -> None:
        self._loop = asyncio.get_running_loop()
        self.seconds = seconds
        self.provider = provider
        self._at = self._loop.time() + seconds

    def left(self, what: str) -> float:
        """Seconds left for ``what``; `BotUnavailable` (``timeout``) when none are."""
        remaining = self._at - self._loop.time()
        if remaining <= 0:
            raise BotUnavailable(
                f"{self.provider} did not connect within {self.seconds:g} s ({what})",
                step=ConnectStep.TIMEOUT,
            )
        return remaining


async def read_account(
    context: DriverContext, account_id: str, deadline: Deadline
) -> Account | None:
    """The account (through the node's routing cache), within the deadline. A storage failure
    refuses the connect (``credentials``: they could not be read), never crashes the call."""
    try:
        async with asyncio.timeout(deadline.left("reading the account")):
            return await context.accounts(account_id)
    except TimeoutError:
        raise BotUnavailable(
            f"account {account_id} could not be read within {deadline.seconds:g} s",
            step=ConnectStep.TIMEOUT,
        ) from None
    except BotUnavailable:
        raise
    except Exception as error:
        raise BotUnavailable(
            f"cannot read account {account_id}: {type(error).__name__}",
            step=ConnectStep.CREDENTIALS,
        ) from None


def _os_cause(error: BaseException) -> OSError | None:
    """The OS-level error under an httpx error (httpx wraps httpcore, which wraps the socket's)."""
    link: BaseException | None = error
    for _ in range(CAUSE_DEPTH):
        if link is None:
            return None
        if isinstance(link, OSError):
            return link
        link = link.__cause__ or link.__context__
    return None


def http_failure(error: httpx.HTTPError) -> tuple[ConnectStep, str]:
    """The step a failed REST request belongs to, and a one-line reason with no header in it."""
    if isinstance(error, httpx.TimeoutException):
        return ConnectStep.TIMEOUT, f"timed out ({type(error).__name__})"
    cause = _os_cause(error)
    if isinstance(cause, socket.gaierror):
        return ConnectStep.DNS, f"cannot resolve the host: {cause.strerror or cause}"
    if isinstance(cause, ssl.SSLError):
        return ConnectStep.TLS, f"TLS failed: {getattr(cause, 'reason', None) or cause}"
    if isinstance(error, httpx.ConnectError | httpx.NetworkError):
        detail = cause.strerror or str(cause) if cause is not None else type(error).__name__
        return ConnectStep.CONNECT, f"cannot connect: {' '.join(detail.split())[:DETAIL_CHARS]}"
    return ConnectStep.REST, f"request failed: {type(error).__name__}"


def socket_step(error: BotUnavailable) -> ConnectStep:
    """The step of a failed provider socket: the one the WebSocket layer named, except that a
    socket URL which is not a WebSocket URL is the REST answer's fault (the provider gave it)."""
    if error.step is ConnectStep.TARGET:
        return ConnectStep.REST
    return error.step
