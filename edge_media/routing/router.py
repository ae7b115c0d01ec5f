"""Where a call goes: the number or extension lookup, then a static target, the routing webhook or
the account default, decided as `Connect` or `Refuse`.

Why the split: the rules (what wins, what a webhook answer or failure turns into, which SIP status
and Q.850 cause a refusal carries) are one pure function, `decide_route`, tested without I/O. The
lookups (DynamoDB through an `AsyncRepository`) and the webhook (HTTP, `webhook.py`) are
the I/O around it, in `CallRouter`. What the lookups read is cached (``cache.py``: accounts,
numbers, extensions and agents, unknown ones too) and the API invalidates it on every write that
changes routing, so a warm node answers an INVITE without a table read.

Precedence, the same as the control plane's originate (``functions/api/originate.py``): the route's
own target (a ``socket_url`` or an agent's) connects without any HTTP; else its ``webhook_url`` is
asked; a route with neither (an extension without one, an agent that is gone) uses the account
default: its ``socket_url``, else its ``webhook_url`` as routing webhook. When a webhook fails the
call falls back to the account's ``socket_url``, else it is refused with 480.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from edge_media.routing.cache import (
    ACCOUNT_CACHE_SECONDS,
    ACCOUNT_CACHE_SIZE,
    MISSING,
    ROUTE_CACHE_SECONDS,
    ROUTE_CACHE_SIZE,
    AccountCache,
    CacheKind,
    RouteCache,
    TtlCache,
)
from edge_media.routing.webhook import (
    RoutingWebhook,
    WebhookConnect,
    WebhookFailure,
    WebhookHangup,
    WebhookOutcome,
    loggable_url,
)
from shared.dynamo.mapping import MappingError
from shared.dynamo.repository import AsyncRepository
from shared.models import Account, AccountStatus, Agent, Entity, Extension, Number, Route
from shared.validation import normalize_number

__all__ = [
    "ACCOUNT_CACHE_SECONDS",
    "ACCOUNT_CACHE_SIZE",
    "ROUTE_CACHE_SECONDS",
    "ROUTE_CACHE_SIZE",
    "AccountCache",
    "CallRoute",
    "CallRouter",
    "Connect",
    "Refuse",
    "Source",
    "decide_route",
    "not_owned",
]

logger = logging.getLogger("agera.routing")

K = TypeVar("K")
T = TypeVar("T", bound=Entity)

Source = Literal["static", "webhook", "default"]


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect the call to ``target`` (a media target as `parse_media_target` reads it).

    ``max_seconds`` is the session limit the webhook asked for. ``fallback`` is the account's
    default target when it differs from ``target``: the bridge tries it if the bot cannot be
    reached. ``webhook_ms`` is how long the routing webhook took (None when none was asked).
    """

    target: str
    max_seconds: int | None
    fallback: str | None
    source: Source
    webhook_ms: float | None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not take the call: the SIP final status and reason phrase, the Q.850 cause name for the
    call record, and a detail for logs (the webhook's hangup reason when it refused).
    ``warning`` is text safe to tell the caller (a SIP Warning), None when there is none."""

    status: int
    reason: str
    cause: str
    detail: str
    webhook_ms: float | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class CallRoute:
    """What the lookup found for one call, before any webhook is asked.

    At most one of ``socket_url`` and ``agent_socket_url`` is set (both are static targets);
    ``webhook_url`` is the routing webhook asked when neither is. ``callback_url`` is where this
    call's status callbacks go (None: nowhere). ``label`` names the route in logs.
    """

    account: Account
    socket_url: str | None
    webhook_url: str | None
    agent_socket_url: str | None
    callback_url: str | None
    label: str

    @property
    def static_target(self) -> str | None:
        return self.socket_url or self.agent_socket_url

    @classmethod
    def for_originate(
        cls, account: Account, socket_url: str | None, webhook_url: str | None
    ) -> CallRoute:
        """The route of an outbound call: the originate command already carries the API's choice
        with the account's defaults applied (with both set, the webhook only gets callbacks)."""
        return cls(
            account=account,
            socket_url=socket_url,
            webhook_url=webhook_url,
            agent_socket_url=None,
            callback_url=webhook_url or account.webhook_url,
            label="originate",
        )


# --------------------------------------------------------------------------- the rules


def _suspended(account: Account) -> Refuse:
    return Refuse(403, "Forbidden", "CALL_REJECTED", f"account {account.account_id} is suspended")


def _default(route: CallRoute, why: str, webhook_ms: float | None) -> Connect | Refuse:
    default = route.account.socket_url
    if default:
        return Connect(default, None, None, "default", webhook_ms)
    return Refuse(
        480,
        "Temporarily Unavailable",
        "NORMAL_TEMPORARY_FAILURE",
        f"{why} and the account has no default socket_url",
        webhook_ms,
    )


def decide_route(
    route: CallRoute, outcome: WebhookOutcome | None = None, *, webhook_ms: float | None = None
) -> Connect | Refuse:
    """The decision for ``route`` given the routing webhook's outcome (None: none was asked).

    Pure. ``outcome`` only matters for a route without a static target and with a webhook_url.
    """
    account = route.account
    if account.status is AccountStatus.SUSPENDED:
        return _suspended(account)
    default = account.socket_url

    def fallback_for(target: str) -> str | None:
        return default if default and default != target else None

    static = route.static_target
    if static:
        return Connect(static, None, fallback_for(static), "static", None)
    if not route.webhook_url:
        return _default(route, f"{route.label} has no route", None)
    if isinstance(outcome, WebhookConnect):
        target = outcome.socket_url
        return Connect(target, outcome.max_seconds, fallback_for(target), "webhook", webhook_ms)
    if isinstance(outcome, WebhookHangup):
        # API guide §3.A Scenario B, "Hangs up the call immediately": 603 Decline is the SIP
        # answer for a callee that refuses (RFC 3261 §21.6.2), cause 21 per RFC 3398 §8.2.6.1.
        return Refuse(603, "Decline", "CALL_REJECTED", outcome.reason, webhook_ms)
    if isinstance(outcome, WebhookFailure):
        return _default(route, f"routing webhook failed ({outcome.reason})", webhook_ms)
    return _default(route, "the routing webhook was not asked", webhook_ms)


# --------------------------------------------------------------------------- I/O


def _dialed_number(dialed: str) -> str | None:
    """The E.164 form of a Request-URI user, or None when it is not a phone number.

    The user part may be escaped (RFC 3261 §19.1.2: ``%2B1555...``) and may carry telephone-
    subscriber parameters after ``;`` (RFC 3966 §3, e.g. ``+15551230000;npdi``).
    """
    user = unquote(dialed).split(";", 1)[0].strip()
    try:
        return normalize_number(user)
    except ValueError:
        return None


class CallRouter:
    """Route lookups (DynamoDB, through a `RouteCache`) and routing decisions (webhook) for one
    node.

    Numbers, extensions and agents are kept ``route_cache_seconds`` (default 30 s), accounts
    ``account_cache_seconds`` (default 5 s), each kind at most ``cache_size`` entries, unknown
    items included (``cache.py`` says why and how the API's invalidations keep them current).
    Storage errors are never cached. A fill reads consistently: an eventually consistent read
    just after an API write (which is when an invalidation makes the node read) could return the
    old item and keep it for a whole TTL; only misses pay for it, and they are rare.
    """

    def __init__(
        self,
        repo: AsyncRepository,
        webhook: RoutingWebhook,
        *,
        account_cache_seconds: float = ACCOUNT_CACHE_SECONDS,
        route_cache_seconds: float = ROUTE_CACHE_SECONDS,
        cache_size: int = ROUTE_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.webhook = webhook
        self.cache = RouteCache(
            route_seconds=route_cache_seconds,
            account_seconds=account_cache_seconds,
            max_size=cache_size,
        )
        self._clock = clock

    async def _cached(
        self, cache: TtlCache[K, T | None], key: K, model: type[T], *ids: Any
    ) -> T | None:
        """``model`` at ``ids`` from ``cache`` under ``key``, else read (and kept, None too)."""
        now = self._clock()
        found = cache.get(key, now)
        if found is not MISSING:
            return found
        generation = cache.generation  # an invalidation during the read must win (cache.py)
        value = await self.repo.get(model, *ids, consistent=True)
        cache.put(key, value, now, generation=generation)
        return value

    async def account(self, account_id: str) -> Account | None:
        """The account (None: there is none), from the cache when fresh; storage errors
        propagate."""
        return await self._cached(self.cache.accounts, account_id, Account, account_id)

    async def agent(self, agent_uuid: uuid.UUID) -> Agent | None:
        """The agent (whatever its account), from the cache when fresh."""
        return await self._cached(self.cache.agents, str(agent_uuid), Agent, agent_uuid)

    def invalidate(
        self, kind: CacheKind, account_id: str, keys: Collection[str], *, command_id: str = ""
    ) -> int:
        """Forget what an API write changed (the node's ``Invalidate`` command); how many
        entries were cached."""
        dropped = self.cache.invalidate(kind, account_id, keys)
        logger.info(
            "route cache: %s %s of account %s invalidated (%d cached) %s",
            kind,
            ", ".join(keys) or "-",
            account_id,
            dropped,
            command_id,
        )
        return dropped

    async def lookup_inbound(
        self,
        dialed: str,
        extension: tuple[str, str] | None = None,
        *,
        call_uuid: str | None = None,
        accounts: Collection[str] | None = None,
    ) -> CallRoute | Refuse:
        """The route of an inbound call, or why it is refused (404 unknown, 403 suspended or
        another account's number, 503).

        ``extension`` is ``(account_id, extension)`` when the caller authenticated as one of our
        extensions: that extension's route applies (else its account's defaults) whatever was
        dialled. Otherwise ``dialed`` (the Request-URI user) selects a Number, which must belong
        to one of ``accounts`` when given (the accounts whose trunks list the caller's source).
        """
        where = f"[call {call_uuid}] " if call_uuid else ""
        try:
            if extension is not None:
                return await self._for_extension(*extension)
            return await self._for_number(dialed, accounts)
        except (ClientError, BotoCoreError, MappingError) as exc:
            logger.exception("%srouting lookup failed for %r", where, dialed)
            return Refuse(
                503,
                "Service Unavailable",
                "NORMAL_TEMPORARY_FAILURE",
                f"route lookup failed ({type(exc).__name__})",
            )

    async def _for_number(
        self, dialed: str, accounts: Collection[str] | None = None
    ) -> CallRoute | Refuse:
        number = _dialed_number(dialed)
        if number is None:
            return _not_found(f"{dialed!r} is not a phone number we route")
        found = await self._cached(self.cache.numbers, number, Number, number)
        if found is None:
            return _not_found(f"number {number} is not provisioned")
        if accounts is not None and found.account_id not in accounts:
            return not_owned(number, found.account_id, accounts)
        return await self._route(found.account_id, found.route, f"number {number}")

    async def _for_extension(self, account_id: str, name: str) -> CallRoute | Refuse:
        key = (account_id, name)
        found = await self._cached(self.cache.extensions, key, Extension, account_id, name)
        if found is None:
            return _not_found(f"extension {name} of account {account_id} does not exist")
        return await self._route(account_id, found.route, f"extension {name}")

    async def _route(self, account_id: str, route: Route | None, label: str) -> CallRoute | Refuse:
        account = await self.account(account_id)
        if account is None:
            # A number or extension left behind by a deleted account is nobody's.
            return _not_found(f"{label} belongs to account {account_id}, which does not exist")
        if account.status is AccountStatus.SUSPENDED:
            return _suspended(account)
        socket_url = webhook_url = agent_socket_url = None
        if route is not None:
            socket_url = route.socket_url
            webhook_url = route.webhook_url
            if route.agent_uuid is not None:
                agent = await self.agent(route.agent_uuid)
                if agent is not None and agent.account_id == account_id:
                    agent_socket_url = agent.socket_url
                else:
                    logger.warning(
                        "%s routes to agent %s, which account %s does not have; "
                        "using the account default",
                        label,
                        route.agent_uuid,
                        account_id,
                    )
        if not (socket_url or webhook_url or agent_socket_url) and not account.socket_url:
            webhook_url = account.webhook_url  # the account default: routing webhook
        return CallRoute(
            account=account,
            socket_url=socket_url,
            webhook_url=webhook_url,
            agent_socket_url=agent_socket_url,
            callback_url=(route.webhook_url if route else None) or account.webhook_url,
            label=label,
        )

    async def decide(
        self,
        route: CallRoute,
        *,
        call_uuid: str,
        direction: str,
        caller_number: str,
        destination_number: str,
    ) -> Connect | Refuse:
        """Connect or refuse; asks the routing webhook only when the route has no static target.

        Never raises for anything the webhook does: every failure falls back (and is logged once).
        """
        if (
            route.account.status is AccountStatus.SUSPENDED
            or route.static_target
            or not route.webhook_url
        ):
            return decide_route(route)
        result = await self.webhook.ask(
            route.webhook_url,
            secret=route.account.webhook_secret,
            call_uuid=call_uuid,
            direction=direction,
            caller_number=caller_number,
            destination_number=destination_number,
            account_id=route.account.account_id,
        )
        decision = decide_route(route, result.outcome, webhook_ms=result.elapsed_ms)
        self._log(route, call_uuid, result.outcome, result.request_id, decision)
        return decision

    @staticmethod
    def _log(
        route: CallRoute,
        call_uuid: str,
        outcome: WebhookOutcome,
        request_id: str,
        decision: Connect | Refuse,
    ) -> None:
        url = loggable_url(route.webhook_url or "")
        if isinstance(outcome, WebhookFailure):
            then = (
                "using the account default"
                if isinstance(decision, Connect)
                else f"no account default: refusing with {decision.status}"
            )
            logger.warning(
                "[call %s] routing webhook %s failed (%s); %s (%s)",
                call_uuid,
                url,
                outcome.reason,
                then,
                request_id,
            )
        elif isinstance(outcome, WebhookHangup):
            logger.info(
                "[call %s] routing webhook %s refused the call: %r (%s)",
                call_uuid,
                url,
                outcome.reason,
                request_id,
            )
        else:
            for warning in outcome.warnings:
                logger.warning(
                    "[call %s] routing webhook %s: %s (%s)", call_uuid, url, warning, request_id
                )


def _not_found(detail: str) -> Refuse:
    return Refuse(404, "Not Found", "NO_ROUTE_DESTINATION", detail)


def not_owned(number: str, owner: str, accounts: Collection[str]) -> Refuse:
    """A trunk source dialled a number of another account: 403, not 404.

    Why 403: the source is a known carrier, and the refusal is about its authority, not the
    number; 404 would send its operators looking for a missing number, and carriers treat 404
    as "unallocated" and may try the number elsewhere. 403 says do not repeat this through this
    trunk (RFC 3261 §21.4.4). The Warning names no account; unknown numbers still get 404.
    """
    mine = ", ".join(sorted(accounts)) or "none"
    return Refuse(
        403,
        "Forbidden (trunk does not own the number)",
        "CALL_REJECTED",
        f"number {number} belongs to account {owner}; the source's trunks are of: {mine}",
        warning="the source's trunk does not own this number",
    )
