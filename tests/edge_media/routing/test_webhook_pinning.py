"""The routing webhook on the node's pinned HTTP client, and its replay-protection headers.

Loopback only: the customer's webhook is `WebhookPeer` on 127.0.0.1. The client is built as the
node builds it (``PinnedAsyncTransport``); the resolver is a fake. Its socket layer is wrapped so
that the documentation address 203.0.113.5 (opened by the allow list, as an operator would with
``AGERA_SSRF_ALLOW_LIST``) reaches the peer, while the URL's own port on 127.0.0.1 is a bare
listener standing for the private service a rebinding name would reach.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from edge_media.routing.webhook import RoutingWebhook, WebhookConnect, WebhookFailure
from shared.pinned_http import PinnedAsyncTransport
from shared.settings import Settings
from shared.ssrf import AddressPolicy
from tests.edge_media.routing.routing_peer import Reply, WebhookPeer, running_peer

pytestmark = pytest.mark.anyio

SECRET = "whsec_pinning_test_0123456789"
PUBLIC = "203.0.113.5"
ALLOW_PUBLIC = "203.0.113.0/24"
MOMENT = datetime(2026, 2, 9, 14, 30, 0, tzinfo=UTC)
BOT = "wss://bot.example/media"
README = Path(__file__).resolve().parents[3] / "README.md"


class Rebinding:
    """A resolver answering ``first`` to its first question and ``later`` to every other."""

    def __init__(self, first: Sequence[str], later: Sequence[str]) -> None:
        self.first, self.later = list(first), list(later)
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.first if len(self.asked) == 1 else self.later


class Dialer(httpcore.AsyncNetworkBackend):
    """Records the address each connect is for; carries the documentation one to the peer."""

    def __init__(self, routes: dict[tuple[str, int], tuple[str, int]]) -> None:
        self.routes = routes
        self.dialed: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> Any:
        self.dialed.append((host, port))
        host, port = self.routes.get((host, port), (host, port))
        return await self._real.connect_tcp(host, port, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


@pytest.fixture
def peer() -> Iterator[WebhookPeer]:
    yield from running_peer(SECRET)


@pytest.fixture
def private() -> Iterator[socket.socket]:
    """A listener that accepts nothing: any connect attempt stays visible in its backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def was_connected(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.fixture
async def pinned(
    peer: WebhookPeer, private: socket.socket
) -> AsyncIterator[tuple[Any, Rebinding, Dialer]]:
    """(client factory, resolver, dialer) for a node whose client is pinned."""
    port = private.getsockname()[1]
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    dialer = Dialer({(PUBLIC, port): ("127.0.0.1", peer.port)})
    transport = PinnedAsyncTransport(AddressPolicy((ALLOW_PUBLIC,), resolve), inner=dialer)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        yield client, resolve, dialer


async def ask(client: httpx.AsyncClient, resolve: Any, url: str) -> Any:
    settings = Settings.load({}, ssrf_allow_list=ALLOW_PUBLIC)
    hook = RoutingWebhook(client, settings, resolve=resolve, now=lambda: MOMENT)
    return await hook.ask(
        url,
        secret=SECRET,
        call_uuid="550e8400-e29b-41d4-a716-446655440000",
        direction="inbound",
        caller_number="+5511888888888",
        destination_number="+5511999999999",
        account_id="acc_12",
    )


async def test_a_name_that_rebinds_after_the_check_is_refused_at_the_connect(
    peer: WebhookPeer, private: socket.socket, pinned: Any
) -> None:
    """The webhook's own check sees the public answer; the pinned connect's lookup sees the
    private one and refuses it: the checked address or nowhere."""
    client, resolve, dialer = pinned
    peer.reply = Reply.json({"action": "connect", "socket_url": BOT})
    url = f"http://hooks.customer.example:{private.getsockname()[1]}/route"
    result = await ask(client, resolve, url)
    assert result.outcome == WebhookFailure(
        "webhook_url refused: hooks.customer.example (127.0.0.1) is a loopback address; the "
        "gateway only calls public addresses (an operator can allow a range with "
        "AGERA_SSRF_ALLOW_LIST)"
    )
    assert dialer.dialed == [] and peer.received == []
    assert not was_connected(private)


async def test_the_connect_goes_to_the_address_its_lookup_checked(
    peer: WebhookPeer, private: socket.socket, pinned: Any
) -> None:
    client, _, dialer = pinned
    peer.reply = Reply.json({"action": "connect", "socket_url": "wss://bot.example/media"})
    port = private.getsockname()[1]

    def public_for_the_check(host: str) -> list[str]:
        return [PUBLIC] if host == "hooks.customer.example" else ["93.184.216.34"]

    # The transport's own resolver answers PUBLIC first: the one lookup it makes.
    result = await ask(client, public_for_the_check, f"http://hooks.customer.example:{port}/route")
    assert result.outcome == WebhookConnect("wss://bot.example/media")
    assert dialer.dialed == [(PUBLIC, port)]
    [seen] = peer.received
    assert seen.headers["host"] == f"hooks.customer.example:{port}"
    assert not was_connected(private)


async def test_routing_requests_carry_verifiable_replay_headers(peer: WebhookPeer) -> None:
    peer.reply = Reply.json({"action": "hangup", "reason": "closed"})
    policy_ok = Settings.load({}, ssrf_allow_list="127.0.0.0/8")
    hook = RoutingWebhook(
        httpx.AsyncClient(trust_env=False),
        policy_ok,
        resolve=lambda host: [],
        request_id=lambda: "req_abc123",
    )
    try:
        result = await hook.ask(
            peer.url(),
            secret=SECRET,
            call_uuid="c-1",
            direction="inbound",
            caller_number="+5511888888888",
            destination_number="+5511999999999",
            account_id="acc_12",
        )
    finally:
        await hook.client.aclose()
    assert result.request_id == "req_abc123"
    [seen] = peer.received
    assert seen.raw_signature_ok and seen.guide_signature_ok  # X-Signature as before
    assert seen.headers["webhook-id"] == "req_abc123"
    section = README.read_text().split("### Webhooks", 1)[1].split("## Layout", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    receiver: dict[str, Any] = {}
    exec(compile(code, "README.md (webhooks)", "exec"), receiver)
    assert receiver["verify_webhook"](SECRET, seen.body, seen.headers)
    assert not receiver["verify_webhook"](SECRET, seen.body, seen.headers)  # replayed
