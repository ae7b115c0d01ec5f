"""What a driver kind needs beyond `BotConnector`'s four arguments, given once per node.

Why a context object rather than more connector arguments: the bridge connects every kind the
same way (target, call, leg, timeout), so a redirect can move a call between any two kinds with
no special case. Native kinds also need the node's settings (API base URLs), the account's stored
credentials (read through the routing cache, never copied into `CallInfo`, which a Twilio-stream
bot is shown) and a pooled HTTP client for their REST step; the registry builds each kind's
connector once, from this.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.models import Account
from shared.settings import Settings
from shared.ssrf import resolve_host

if TYPE_CHECKING:
    import httpx

__all__ = ["AccountLookup", "DriverContext"]

AccountLookup = Callable[[str], Awaitable[Account | None]]


async def _no_accounts(account_id: str) -> Account | None:
    return None


@dataclass(frozen=True, slots=True)
class DriverContext:
    """The node-wide things drivers share. ``http`` is required by the native kinds only."""

    settings: Settings
    accounts: AccountLookup = _no_accounts
    http: httpx.AsyncClient | None = None
    resolve: Callable[[str], Sequence[str]] = resolve_host
    ssl_context: ssl.SSLContext | None = None  # None: the system's default verification
