"""The route cache: the pure TTL + LRU cache, and the router reading through it against DynamoDB
(moto), counted at the repository so a test sees exactly which lookups reached the table."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aioboto3
import httpx
import pytest

from edge_media.routing.cache import MISSING, RouteCache, TtlCache
from edge_media.routing.router import CallRoute, CallRouter, Refuse
from edge_media.routing.webhook import RoutingWebhook
from shared.dynamo.repository import AsyncRepository, Repository
from shared.models import Account, AccountStatus, Agent, Extension, Number, Route
from shared.settings import Settings

LOOPBACK = Settings.load({}, ssrf_allow_list="127.0.0.0/8")
BOT_A = "ws://127.0.0.1:9/a"
BOT_B = "ws://127.0.0.1:9/b"


# --------------------------------------------------------------------------- the pure cache


def test_entries_expire_after_the_ttl() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl_seconds=30.0, max_size=10)
    cache.put("k", "v", now=100.0)
    assert cache.get("k", now=129.9) == "v"
    assert cache.get("k", now=130.0) is MISSING
    assert len(cache) == 0  # an expired entry is dropped when met


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_seconds=30.0, max_size=2)
    cache.put("a", 1, now=0.0)
    cache.put("b", 2, now=0.0)
    assert cache.get("a", now=1.0) == 1  # "a" is now the most recent
    cache.put("c", 3, now=1.0)
    assert cache.get("b", now=1.0) is MISSING
    assert (cache.get("a", now=1.0), cache.get("c", now=1.0)) == (1, 3)
    assert len(cache) == 2


def test_a_miss_is_cached_as_none_and_told_apart_from_not_cached() -> None:
    cache: TtlCache[str, str | None] = TtlCache(ttl_seconds=30.0, max_size=10)
    assert cache.get("+15550000000", now=0.0) is MISSING
    cache.put("+15550000000", None, now=0.0)
    assert cache.get("+15550000000", now=1.0) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_invalidate_forgets_the_keys_and_counts_what_was_cached() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl_seconds=30.0, max_size=10)
    cache.put("a", "1", now=0.0)
    cache.put("b", "2", now=0.0)
    assert cache.invalidate(["a", "never-cached"]) == 1
    assert cache.get("a", now=0.0) is MISSING
    assert cache.get("b", now=0.0) == "2"


def test_a_value_read_across_an_invalidation_is_not_kept() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl_seconds=30.0, max_size=10)
    before = cache.generation  # noted before the read
    cache.invalidate(["k"])  # arrives while the read is in flight
    cache.put("k", "old", now=0.0, generation=before)
    assert cache.get("k", now=0.0) is MISSING
    cache.put("k", "new", now=0.0, generation=cache.generation)
    assert cache.get("k", now=0.0) == "new"


def test_a_zero_ttl_keeps_nothing_and_the_size_must_be_positive() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl_seconds=0, max_size=10)
    cache.put("k", "v", now=0.0)
    assert cache.get("k", now=0.0) is MISSING
    with pytest.raises(ValueError, match="cache size 0 must be at least 1"):
        TtlCache(ttl_seconds=1.0, max_size=0)


def test_each_kind_has_its_own_entries_and_invalidation() -> None:
    cache = RouteCache(route_seconds=30.0, account_seconds=5.0, max_size=10)
    cache.accounts.put("acc_1", None, now=0.0)
    cache.numbers.put("acc_1", None, now=0.0)  # same text, other kind: another entry
    cache.extensions.put(("acc_1", "101"), None, now=0.0)
    cache.extensions.put(("acc_2", "101"), None, now=0.0)
    cache.agents.put("8d9f", None, now=0.0)
    assert cache.invalidate("extension", "acc_1", ["101"]) == 1
    assert ("acc_2", "101") in cache.extensions  # another account's extension 101 stays
    assert cache.invalidate("account", "acc_1", []) == 1
    assert "acc_1" in cache.numbers
    assert cache.invalidate("number", "acc_9", ["acc_1"]) == 1  # numbers: whatever the account
    assert cache.invalidate("agent", "acc_1", ["8d9f"]) == 1
    assert cache.sizes() == {"account": 0, "number": 0, "extension": 1, "agent": 0}
    assert cache.invalidations == 4
    assert cache.accounts.ttl_seconds == 5.0 and cache.numbers.ttl_seconds == 30.0


# --------------------------------------------------------------------------- router reads


class CountingRepository(AsyncRepository):
    """The real repository (moto), counting reads by model; ``during_read`` runs mid-read."""

    def __init__(self, client: Any, table_name: str) -> None:
        super().__init__(client, table_name)
        self.reads: Counter[str] = Counter()
        self.during_read: Callable[[], None] | None = None

    async def get(self, model: Any, *ids: Any, consistent: bool = False) -> Any:
        self.reads[model.__name__] += 1
        found = await super().get(model, *ids, consistent=consistent)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        return found


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def no_dns(host: str) -> Sequence[str]:
    raise AssertionError(f"DNS asked about {host!r}")


@pytest.fixture
async def counted(aws: Any) -> AsyncIterator[tuple[CallRouter, CountingRepository, FakeClock]]:
    clock = FakeClock()
    async with (
        aioboto3.Session().client("dynamodb") as dynamodb,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        repo = CountingRepository(dynamodb, aws.table_name)
        webhook = RoutingWebhook(client, LOOPBACK, resolve=no_dns)
        yield CallRouter(repo, webhook, clock=clock), repo, clock


def an_account(**fields: Any) -> Account:
    return Account(name="cache test", webhook_secret="whsec_cache_test_0123456789", **fields)


def a_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def target(found: CallRoute | Refuse) -> str | None:
    assert isinstance(found, CallRoute), found
    return found.static_target


@pytest.mark.anyio
async def test_a_second_call_to_a_number_reads_nothing(
    repo: Repository, counted: tuple[CallRouter, CountingRepository, FakeClock]
) -> None:
    router, table, clock = counted
    account = an_account()
    agent = Agent(account_id=account.account_id, name="Support", socket_url=BOT_A)
    number = a_number()
    repo.put(account)
    repo.put(agent)
    repo.put(
        Number(
            number=number, account_id=account.account_id, route=Route(agent_uuid=agent.agent_uuid)
        )
    )
    assert target(await router.lookup_inbound(number)) == BOT_A
    assert table.reads == Counter({"Number": 1, "Account": 1, "Agent": 1})
    clock.now += 4.9  # within both TTLs (accounts 5 s, routes 30 s)
    assert target(await router.lookup_inbound(number[1:])) == BOT_A  # however it is dialled
    assert table.reads == Counter({"Number": 1, "Account": 1, "Agent": 1})
    clock.now += 0.1  # the account's 5 s are up; the number and agent are kept 30 s
    assert target(await router.lookup_inbound(number)) == BOT_A
    assert table.reads == Counter({"Number": 1, "Account": 2, "Agent": 1})


@pytest.mark.anyio
async def test_an_unknown_number_is_read_once_until_it_is_created(
    repo: Repository, counted: tuple[CallRouter, CountingRepository, FakeClock]
) -> None:
    router, table, _ = counted
    number = a_number()
    for _ in range(3):  # a scanner dialling the same unknown number
        found = await router.lookup_inbound(number)
        assert isinstance(found, Refuse) and found.status == 404
    assert table.reads == Counter({"Number": 1})
    account = an_account(socket_url=BOT_B)
    repo.put(account)
    repo.put(Number(number=number, account_id=account.account_id, route=Route(socket_url=BOT_A)))
    still = await router.lookup_inbound(number)  # nothing told the node yet: the miss stands
    assert isinstance(still, Refuse) and still.status == 404
    router.invalidate("number", account.account_id, [number])  # what the API's create sends
    assert target(await router.lookup_inbound(number)) == BOT_A
    assert table.reads["Number"] == 2


@pytest.mark.anyio
async def test_invalidations_make_changes_apply_to_the_next_call(
    repo: Repository, counted: tuple[CallRouter, CountingRepository, FakeClock]
) -> None:
    router, table, _ = counted
    account = an_account()
    agent = Agent(account_id=account.account_id, name="Sales", socket_url=BOT_A)
    repo.put(account)
    repo.put(agent)
    repo.put(
        Extension(
            account_id=account.account_id,
            extension="101",
            sip_username=f"u{uuid.uuid4().hex[:12]}",
            realm="agera",
            ha1_md5="0" * 32,
            ha1_sha256="0" * 64,
            route=Route(agent_uuid=agent.agent_uuid),
        )
    )
    ext = (account.account_id, "101")
    assert target(await router.lookup_inbound("101", ext)) == BOT_A
    repo.update(Agent, (agent.agent_uuid,), {"socket_url": BOT_B})
    assert target(await router.lookup_inbound("101", ext)) == BOT_A  # cached, not yet told
    router.invalidate("agent", account.account_id, [str(agent.agent_uuid)])
    assert target(await router.lookup_inbound("101", ext)) == BOT_B
    repo.update(Extension, (account.account_id, "101"), {"route": {"socket_url": BOT_A}})
    router.invalidate("extension", account.account_id, ["101"])
    assert target(await router.lookup_inbound("101", ext)) == BOT_A
    repo.update(Account, (account.account_id,), {"status": "suspended"})
    router.invalidate("account", account.account_id, [])
    refused = await router.lookup_inbound("101", ext)
    assert isinstance(refused, Refuse) and refused.status == 403
    assert table.reads == Counter({"Extension": 2, "Account": 2, "Agent": 2})
    cached = await router.account(account.account_id)
    assert cached is not None and cached.status is AccountStatus.SUSPENDED
    assert table.reads["Account"] == 2


@pytest.mark.anyio
async def test_an_invalidation_during_a_read_is_not_undone_by_it(
    repo: Repository, counted: tuple[CallRouter, CountingRepository, FakeClock]
) -> None:
    router, table, _ = counted
    account = an_account()
    number = a_number()
    repo.put(account)
    repo.put(Number(number=number, account_id=account.account_id, route=Route(socket_url=BOT_A)))

    def the_api_writes_and_invalidates() -> None:  # after the node read the old item
        repo.update(Number, (number,), {"route": {"socket_url": BOT_B}})
        router.invalidate("number", account.account_id, [number])

    table.during_read = the_api_writes_and_invalidates
    assert target(await router.lookup_inbound(number)) == BOT_A  # this call had read it already
    assert target(await router.lookup_inbound(number)) == BOT_B  # the old item was not kept
    assert table.reads["Number"] == 2


@pytest.mark.anyio
async def test_storage_errors_are_not_cached(aws: Any) -> None:
    async with (
        aioboto3.Session().client("dynamodb") as dynamodb,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        repo = CountingRepository(dynamodb, f"missing-{uuid.uuid4().hex[:8]}")
        router = CallRouter(repo, RoutingWebhook(client, LOOPBACK, resolve=no_dns))
        for _ in range(2):
            found = await router.lookup_inbound("+15551230000")
            assert isinstance(found, Refuse) and found.status == 503
        assert reads_of(repo) == 2
        assert router.cache.sizes()["number"] == 0


def reads_of(repo: CountingRepository) -> int:
    return sum(repo.reads.values())


@pytest.mark.anyio
async def test_zero_seconds_turns_the_cache_off(
    repo: Repository, counted: tuple[CallRouter, CountingRepository, FakeClock]
) -> None:
    _, table, clock = counted
    router = CallRouter(
        table,
        counted[0].webhook,
        route_cache_seconds=0,
        account_cache_seconds=0,
        clock=clock,
    )
    account = an_account()
    number = a_number()
    repo.put(account)
    repo.put(Number(number=number, account_id=account.account_id, route=Route(socket_url=BOT_A)))
    for _ in range(2):
        assert target(await router.lookup_inbound(number)) == BOT_A
    assert table.reads == Counter({"Number": 2, "Account": 2})
