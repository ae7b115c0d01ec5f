"""Routing: the pure rules, the account cache, lookups against DynamoDB (moto) and decisions that
ask a real routing webhook on 127.0.0.1."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence

import aioboto3
import httpx
import pytest

from edge_media.routing.router import (
    AccountCache,
    CallRoute,
    CallRouter,
    Connect,
    Refuse,
    decide_route,
)
from edge_media.routing.webhook import (
    RoutingWebhook,
    WebhookConnect,
    WebhookFailure,
    WebhookHangup,
)
from shared.dynamo.repository import AsyncRepository, Repository
from shared.models import (
    Account,
    AccountStatus,
    Agent,
    Extension,
    Number,
    Route,
)
from shared.settings import Settings
from tests.edge_media.routing.routing_peer import Reply, WebhookPeer, closed_port, running_peer

SECRET = "whsec_routing_test_0123456789"
DEFAULT_BOT = "ws://127.0.0.1:9/default"
NUMBER_BOT = "ws://127.0.0.1:9/number"
HOOK = "https://hooks.example/route"
LOOPBACK = Settings.load({}, ssrf_allow_list="127.0.0.0/8")


def no_dns(host: str) -> Sequence[str]:
    raise AssertionError(f"DNS asked about {host!r}")


def an_account(**fields: object) -> Account:
    values: dict[str, object] = {
        "account_id": f"acc_{uuid.uuid4().hex[:16]}",
        "name": "Routing test",
        "webhook_secret": SECRET,
    }
    values.update(fields)
    return Account.model_validate(values)


def a_route(account: Account, **fields: str | None) -> CallRoute:
    values: dict[str, str | None] = {
        "socket_url": None,
        "webhook_url": None,
        "agent_socket_url": None,
        "callback_url": None,
    }
    values.update(fields)
    return CallRoute(account=account, label="number +15551230000", **values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the rules (pure)


def test_a_static_target_connects_and_keeps_the_default_as_fallback() -> None:
    account = an_account(socket_url=DEFAULT_BOT)
    assert decide_route(a_route(account, socket_url=NUMBER_BOT)) == Connect(
        NUMBER_BOT, None, DEFAULT_BOT, "static", None
    )
    assert decide_route(a_route(account, agent_socket_url="vapi&abc")) == Connect(
        "vapi&abc", None, DEFAULT_BOT, "static", None
    )


def test_no_fallback_when_it_is_the_target_itself_or_there_is_none() -> None:
    same = an_account(socket_url=NUMBER_BOT)
    assert decide_route(a_route(same, socket_url=NUMBER_BOT)).fallback is None
    assert decide_route(a_route(an_account(), socket_url=NUMBER_BOT)).fallback is None


def test_webhook_outcomes() -> None:
    account = an_account(socket_url=DEFAULT_BOT)
    route = a_route(account, webhook_url=HOOK)
    assert decide_route(route, WebhookConnect(NUMBER_BOT, 30), webhook_ms=12.5) == Connect(
        NUMBER_BOT, 30, DEFAULT_BOT, "webhook", 12.5
    )
    assert decide_route(route, WebhookHangup("business_hours_closed"), webhook_ms=3.0) == Refuse(
        603, "Decline", "CALL_REJECTED", "business_hours_closed", 3.0
    )
    assert decide_route(route, WebhookFailure("HTTP 500"), webhook_ms=4.0) == Connect(
        DEFAULT_BOT, None, None, "default", 4.0
    )


def test_a_failed_webhook_without_a_default_refuses_with_480() -> None:
    route = a_route(an_account(), webhook_url=HOOK)
    assert decide_route(route, WebhookFailure("timeout after 3.0 s"), webhook_ms=3000.0) == Refuse(
        480,
        "Temporarily Unavailable",
        "NORMAL_TEMPORARY_FAILURE",
        "routing webhook failed (timeout after 3.0 s) and the account has no default socket_url",
        3000.0,
    )


def test_nothing_to_connect_to() -> None:
    assert decide_route(a_route(an_account(socket_url=DEFAULT_BOT))) == Connect(
        DEFAULT_BOT, None, None, "default", None
    )
    assert decide_route(a_route(an_account())) == Refuse(
        480,
        "Temporarily Unavailable",
        "NORMAL_TEMPORARY_FAILURE",
        "number +15551230000 has no route and the account has no default socket_url",
    )


def test_a_suspended_account_is_refused_whatever_the_route() -> None:
    account = an_account(status="suspended", socket_url=DEFAULT_BOT)
    expected = Refuse(
        403, "Forbidden", "CALL_REJECTED", f"account {account.account_id} is suspended"
    )
    assert decide_route(a_route(account, socket_url=NUMBER_BOT)) == expected
    assert decide_route(a_route(account, webhook_url=HOOK), WebhookConnect(NUMBER_BOT)) == expected


def test_for_originate_uses_the_commands_choice() -> None:
    account = an_account(webhook_url="https://acct.example/hook")
    both = CallRoute.for_originate(account, NUMBER_BOT, "https://call.example/hook")
    assert (both.static_target, both.callback_url, both.label) == (
        NUMBER_BOT,
        "https://call.example/hook",
        "originate",
    )
    assert decide_route(both).source == "static"
    hook_only = CallRoute.for_originate(account, None, None)
    assert hook_only.callback_url == "https://acct.example/hook"


# --------------------------------------------------------------------------- account cache


def test_account_cache_expires_and_evicts_the_least_recently_used() -> None:
    cache = AccountCache(ttl_seconds=5.0, max_size=2)
    first, second, third = an_account(), an_account(), an_account()
    cache.put(first, now=100.0)
    cache.put(second, now=100.0)
    assert cache.get(first.account_id, now=104.9) is first  # first is now the most recent
    cache.put(third, now=101.0)
    assert cache.get(second.account_id, now=101.0) is None  # evicted
    assert cache.get(first.account_id, now=105.0) is None  # expired
    assert cache.get(third.account_id, now=105.9) is third
    assert len(cache) == 1


def test_a_zero_ttl_caches_nothing() -> None:
    cache = AccountCache(ttl_seconds=0)
    account = an_account()
    cache.put(account, now=1.0)
    assert cache.get(account.account_id, now=1.0) is None
    with pytest.raises(ValueError, match="cache size 0 must be at least 1"):
        AccountCache(max_size=0)


# --------------------------------------------------------------------------- decisions over HTTP


@pytest.fixture
def peer() -> Iterator[WebhookPeer]:
    yield from running_peer(SECRET)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as shared:
        yield shared


class NoRepository(AsyncRepository):
    """Decisions never read the table; any read is a test failure."""

    def __init__(self) -> None:
        super().__init__(client=None, table_name="unused")

    async def get(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise AssertionError("decide() read the table")


def a_router(client: httpx.AsyncClient, settings: Settings = LOOPBACK) -> CallRouter:
    return CallRouter(NoRepository(), RoutingWebhook(client, settings, resolve=no_dns))


async def decide(router: CallRouter, route: CallRoute, call_uuid: str = "c-1") -> Connect | Refuse:
    return await router.decide(
        route,
        call_uuid=call_uuid,
        direction="inbound",
        caller_number="+5511999999999",
        destination_number="+15551230000",
    )


@pytest.mark.anyio
async def test_a_static_route_makes_no_request(
    peer: WebhookPeer, client: httpx.AsyncClient
) -> None:
    account = an_account(webhook_url=peer.url())
    route = a_route(account, socket_url=NUMBER_BOT, callback_url=peer.url())
    assert await decide(a_router(client), route) == Connect(NUMBER_BOT, None, None, "static", None)
    assert peer.received == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "max_seconds"),
    [
        ({"action": "connect", "socket_url": NUMBER_BOT, "timeout": 45}, 45),
        ({"action": "connect", "socket_url": NUMBER_BOT}, None),
    ],
)
async def test_webhook_connect(
    peer: WebhookPeer, client: httpx.AsyncClient, answer: dict, max_seconds: int | None
) -> None:
    peer.reply = Reply.json(answer)
    account = an_account(socket_url=DEFAULT_BOT)
    decision = await decide(a_router(client), a_route(account, webhook_url=peer.url()))
    assert isinstance(decision, Connect)
    assert (decision.target, decision.max_seconds, decision.fallback, decision.source) == (
        NUMBER_BOT,
        max_seconds,
        DEFAULT_BOT,
        "webhook",
    )
    assert decision.webhook_ms is not None and decision.webhook_ms >= 0
    [seen] = peer.received
    assert seen.raw_signature_ok and seen.guide_signature_ok
    assert seen.headers["x-call-uuid"] == "c-1"


@pytest.mark.anyio
async def test_webhook_hangup(peer: WebhookPeer, client: httpx.AsyncClient) -> None:
    peer.reply = Reply.json({"action": "hangup", "reason": "business_hours_closed"})
    account = an_account(socket_url=DEFAULT_BOT)
    decision = await decide(a_router(client), a_route(account, webhook_url=peer.url()))
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.reason, decision.cause, decision.detail) == (
        603,
        "Decline",
        "CALL_REJECTED",
        "business_hours_closed",
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(status=500), "HTTP 500"),
        (Reply(body=b"not json"), "answer is not valid JSON"),
        (Reply.json({"action": "forward"}), "unknown action 'forward'"),
        (
            Reply.json({"action": "connect", "socket_url": "wss://169.254.169.254/x"}),
            "socket_url refused: 169.254.169.254 is a link-local (cloud metadata service) "
            "address; the gateway only calls public addresses (an operator can allow a range "
            "with AGERA_SSRF_ALLOW_LIST)",
        ),
    ],
    ids=["500", "bad-json", "unknown-action", "metadata"],
)
async def test_a_failed_webhook_falls_back_to_the_default_and_says_so_once(
    peer: WebhookPeer,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
    reason: str,
) -> None:
    peer.reply = reply
    account = an_account(socket_url=DEFAULT_BOT)
    with caplog.at_level(logging.INFO, logger="agera.routing"):
        decision = await decide(a_router(client), a_route(account, webhook_url=peer.url()), "c-9")
    assert isinstance(decision, Connect)
    assert (decision.target, decision.source, decision.fallback) == (DEFAULT_BOT, "default", None)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith(
        f"[call c-9] routing webhook {peer.url()} failed ({reason}); using the account default"
    )


@pytest.mark.anyio
async def test_a_timeout_falls_back_at_the_configured_limit(
    peer: WebhookPeer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.load({}, ssrf_allow_list="127.0.0.0/8", routing_webhook_timeout_seconds=0.3)
    peer.reply = Reply.json({"action": "connect", "socket_url": NUMBER_BOT}, delay=5.0)
    account = an_account(socket_url=DEFAULT_BOT)
    with caplog.at_level(logging.INFO, logger="agera.routing"):
        decision = await decide(
            a_router(client, settings), a_route(account, webhook_url=peer.url()), "c-7"
        )
    assert isinstance(decision, Connect)
    assert (decision.target, decision.source) == (DEFAULT_BOT, "default")
    assert decision.webhook_ms is not None and decision.webhook_ms < 300 + 2000
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"[call c-7] routing webhook {peer.url()} failed (timeout after 0.3 s); "
        "using the account default"
    )


@pytest.mark.anyio
async def test_connection_refused_without_a_default_refuses_480(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/route"
    with caplog.at_level(logging.INFO, logger="agera.routing"):
        decision = await decide(a_router(client), a_route(an_account(), webhook_url=url), "c-3")
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.reason, decision.cause) == (
        480,
        "Temporarily Unavailable",
        "NORMAL_TEMPORARY_FAILURE",
    )
    assert decision.detail.startswith("routing webhook failed (request failed (ConnectError")
    [record] = caplog.records
    assert f"[call c-3] routing webhook {url} failed (request failed (ConnectError" in (
        record.getMessage()
    )
    assert "; no account default: refusing with 480" in record.getMessage()


@pytest.mark.anyio
async def test_a_bad_timeout_in_the_answer_is_logged_and_ignored(
    peer: WebhookPeer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    peer.reply = Reply.json({"action": "connect", "socket_url": NUMBER_BOT, "timeout": 0})
    with caplog.at_level(logging.INFO, logger="agera.routing"):
        decision = await decide(
            a_router(client), a_route(an_account(), webhook_url=peer.url()), "c-5"
        )
    assert isinstance(decision, Connect)
    assert (decision.target, decision.max_seconds) == (NUMBER_BOT, None)
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"[call c-5] routing webhook {peer.url()}: timeout 0 ignored: must be an integer"
    )


# --------------------------------------------------------------------------- lookups (moto)


def a_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def an_extension(account: Account, name: str, route: Route | None) -> Extension:
    return Extension(
        account_id=account.account_id,
        extension=name,
        sip_username=f"u{uuid.uuid4().hex[:12]}",
        realm="agera",
        ha1_md5="0" * 32,
        ha1_sha256="0" * 64,
        route=route,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def lookups(aws, client: httpx.AsyncClient) -> AsyncIterator[tuple[CallRouter, FakeClock]]:
    clock = FakeClock()
    async with aioboto3.Session().client("dynamodb") as dynamodb:
        repo = AsyncRepository(dynamodb, aws.table_name)
        webhook = RoutingWebhook(client, LOOPBACK, resolve=no_dns)
        yield CallRouter(repo, webhook, clock=clock), clock


@pytest.mark.anyio
@pytest.mark.parametrize(
    "spelling",
    ["{e164}", "{digits}", "{spaced}", "%2B{digits}", "{e164};npdi"],
    ids=["plus", "no-plus", "spaces-dashes", "escaped-plus", "user-param"],
)
async def test_a_number_is_found_however_it_is_dialled(
    repo: Repository, lookups: tuple[CallRouter, FakeClock], spelling: str
) -> None:
    router, _ = lookups
    account = an_account(webhook_url="https://acct.example/hook")
    number = a_number()
    repo.put(account)
    repo.put(Number(number=number, account_id=account.account_id, route=Route(socket_url="vapi")))
    digits = number[1:]
    dialed = spelling.format(
        e164=number, digits=digits, spaced=f"{digits[:1]} {digits[1:4]}-{digits[4:]}"
    )
    assert await router.lookup_inbound(dialed) == CallRoute(
        account=account,
        socket_url="vapi",
        webhook_url=None,
        agent_socket_url=None,
        callback_url="https://acct.example/hook",
        label=f"number {number}",
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("dialed", "detail"),
    [
        ("+15550000000", "number +15550000000 is not provisioned"),
        ("echo2", "'echo2' is not a phone number we route"),
        ("", "'' is not a phone number we route"),
    ],
)
async def test_unknown_numbers_get_404(
    lookups: tuple[CallRouter, FakeClock], dialed: str, detail: str
) -> None:
    router, _ = lookups
    assert await router.lookup_inbound(dialed) == Refuse(
        404, "Not Found", "NO_ROUTE_DESTINATION", detail
    )


@pytest.mark.anyio
async def test_a_trunk_sources_accounts_bound_the_numbers_it_reaches(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    owner, other = an_account(), an_account()
    number = a_number()
    repo.put(owner)
    repo.put(Number(number=number, account_id=owner.account_id, route=Route(socket_url="vapi")))
    refused = await router.lookup_inbound(number, accounts=frozenset({other.account_id}))
    assert isinstance(refused, Refuse)
    assert (refused.status, refused.reason, refused.cause) == (
        403,
        "Forbidden (trunk does not own the number)",
        "CALL_REJECTED",
    )
    assert refused.warning == "the source's trunk does not own this number"
    assert owner.account_id in refused.detail  # for our logs; never sent to the caller
    for accounts in (frozenset({other.account_id, owner.account_id}), None):
        found = await router.lookup_inbound(number, accounts=accounts)
        assert isinstance(found, CallRoute) and found.account == owner
    # An unknown number is still 404 for a trunk source.
    missing = await router.lookup_inbound("+15550000000", accounts=frozenset())
    assert isinstance(missing, Refuse) and missing.status == 404


@pytest.mark.anyio
async def test_a_numbers_webhook_route_is_asked(
    repo: Repository,
    lookups: tuple[CallRouter, FakeClock],
    peer: WebhookPeer,
) -> None:
    router, _ = lookups
    account = an_account(socket_url=DEFAULT_BOT)
    number = a_number()
    repo.put(account)
    repo.put(
        Number(number=number, account_id=account.account_id, route=Route(webhook_url=peer.url()))
    )
    route = await router.lookup_inbound(number[1:])
    assert isinstance(route, CallRoute)
    assert (route.webhook_url, route.callback_url) == (peer.url(), peer.url())
    peer.reply = Reply.json({"action": "connect", "socket_url": NUMBER_BOT, "timeout": 60})
    decision = await router.decide(
        route,
        call_uuid="c-42",
        direction="inbound",
        caller_number="+5511999999999",
        destination_number=number,
    )
    assert isinstance(decision, Connect)
    assert (decision.target, decision.max_seconds, decision.fallback, decision.source) == (
        NUMBER_BOT,
        60,
        DEFAULT_BOT,
        "webhook",
    )
    [seen] = peer.received
    assert seen.raw_signature_ok and seen.guide_signature_ok
    assert f'"account_id":"{account.account_id}"'.encode() in seen.body
    assert f'"destination_number":"{number}"'.encode() in seen.body


@pytest.mark.anyio
async def test_an_agent_route_connects_to_the_agents_target(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    account = an_account()
    agent = Agent(account_id=account.account_id, name="Support", socket_url="elevenlabs&agent_x")
    number = a_number()
    repo.put(account)
    repo.put(agent)
    repo.put(
        Number(
            number=number, account_id=account.account_id, route=Route(agent_uuid=agent.agent_uuid)
        )
    )
    route = await router.lookup_inbound(number)
    assert isinstance(route, CallRoute)
    assert (route.socket_url, route.agent_socket_url) == (None, "elevenlabs&agent_x")
    assert decide_route(route) == Connect("elevenlabs&agent_x", None, None, "static", None)


@pytest.mark.anyio
async def test_another_accounts_agent_is_not_a_target(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    owner, other = an_account(), an_account()
    agent = Agent(account_id=owner.account_id, name="Not yours", socket_url=NUMBER_BOT)
    number = a_number()
    repo.put(other)
    repo.put(agent)
    repo.put(
        Number(number=number, account_id=other.account_id, route=Route(agent_uuid=agent.agent_uuid))
    )
    route = await router.lookup_inbound(number)
    assert isinstance(route, CallRoute)
    assert route.static_target is None
    decision = decide_route(route)
    assert isinstance(decision, Refuse) and decision.status == 480


@pytest.mark.anyio
async def test_an_extension_route_applies_whatever_was_dialled(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    account = an_account(socket_url=DEFAULT_BOT)
    repo.put(account)
    repo.put(an_extension(account, "101", Route(socket_url=NUMBER_BOT)))
    route = await router.lookup_inbound("+15550000000", (account.account_id, "101"))
    assert route == CallRoute(
        account=account,
        socket_url=NUMBER_BOT,
        webhook_url=None,
        agent_socket_url=None,
        callback_url=None,
        label="extension 101",
    )
    assert decide_route(route) == Connect(NUMBER_BOT, None, DEFAULT_BOT, "static", None)


@pytest.mark.anyio
async def test_an_extension_without_a_route_uses_the_account_defaults(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    with_socket = an_account(socket_url=DEFAULT_BOT, webhook_url="https://acct.example/hook")
    with_hook = an_account(webhook_url="https://acct.example/hook")
    for account in (with_socket, with_hook):
        repo.put(account)
        repo.put(an_extension(account, "102", None))
    by_socket = await router.lookup_inbound("102", (with_socket.account_id, "102"))
    assert isinstance(by_socket, CallRoute)
    assert (by_socket.static_target, by_socket.webhook_url, by_socket.callback_url) == (
        None,
        None,
        "https://acct.example/hook",
    )
    assert decide_route(by_socket) == Connect(DEFAULT_BOT, None, None, "default", None)
    by_hook = await router.lookup_inbound("102", (with_hook.account_id, "102"))
    assert isinstance(by_hook, CallRoute)
    assert (by_hook.static_target, by_hook.webhook_url) == (None, "https://acct.example/hook")


@pytest.mark.anyio
async def test_an_unknown_extension_gets_404(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    account = an_account()
    repo.put(account)
    assert await router.lookup_inbound("103", (account.account_id, "103")) == Refuse(
        404,
        "Not Found",
        "NO_ROUTE_DESTINATION",
        f"extension 103 of account {account.account_id} does not exist",
    )


@pytest.mark.anyio
async def test_a_number_whose_account_is_gone_gets_404(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, _ = lookups
    number = a_number()
    repo.put(Number(number=number, account_id="acc_gone", route=Route(socket_url=NUMBER_BOT)))
    assert await router.lookup_inbound(number) == Refuse(
        404,
        "Not Found",
        "NO_ROUTE_DESTINATION",
        f"number {number} belongs to account acc_gone, which does not exist",
    )


@pytest.mark.anyio
async def test_a_suspended_account_gets_403_and_the_account_is_cached_briefly(
    repo: Repository, lookups: tuple[CallRouter, FakeClock]
) -> None:
    router, clock = lookups
    account = an_account(socket_url=DEFAULT_BOT)
    number = a_number()
    repo.put(account)
    repo.put(Number(number=number, account_id=account.account_id, route=Route(socket_url="vapi")))
    assert isinstance(await router.lookup_inbound(number), CallRoute)
    repo.update(Account, (account.account_id,), {"status": "suspended"})
    clock.now += 4.9
    assert isinstance(await router.lookup_inbound(number), CallRoute)  # still the cached account
    clock.now += 0.1
    suspended = Refuse(
        403, "Forbidden", "CALL_REJECTED", f"account {account.account_id} is suspended"
    )
    assert await router.lookup_inbound(number) == suspended
    updated = await router.account(account.account_id)
    assert updated is not None and updated.status is AccountStatus.SUSPENDED
    route = CallRoute.for_originate(updated, NUMBER_BOT, None)
    assert (
        await router.decide(
            route,
            call_uuid="c-1",
            direction="outbound",
            caller_number="+15551230000",
            destination_number="+5511999999999",
        )
        == suspended
    )


@pytest.mark.anyio
async def test_a_storage_failure_gets_503(aws, client: httpx.AsyncClient) -> None:
    async with aioboto3.Session().client("dynamodb") as dynamodb:
        repo = AsyncRepository(dynamodb, f"missing-{uuid.uuid4().hex[:8]}")
        router = CallRouter(repo, RoutingWebhook(client, LOOPBACK, resolve=no_dns))
        assert await router.lookup_inbound("+15551230000", call_uuid="c-8") == Refuse(
            503,
            "Service Unavailable",
            "NORMAL_TEMPORARY_FAILURE",
            "route lookup failed (ResourceNotFoundException)",
        )
