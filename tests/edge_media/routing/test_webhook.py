"""The routing webhook client: the exact request, every way an answer can be read, and real HTTP
exchanges with a peer on 127.0.0.1 (signature, deadline, redirects, size cap, SSRF)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime

import httpx
import pytest

from edge_media.routing.webhook import (
    MAX_ANSWER_BYTES,
    AnswerError,
    RoutingWebhook,
    WebhookConnect,
    WebhookFailure,
    WebhookHangup,
    loggable_url,
    new_request_id,
    parse_answer,
    routing_request,
)
from shared.settings import Settings
from shared.signing import canonical_json
from tests.edge_media.routing.routing_peer import Reply, WebhookPeer, closed_port, running_peer

SECRET = "whsec_routing_test_0123456789"
CALL_UUID = "550e8400-e29b-41d4-a716-446655440000"
MOMENT = datetime(2026, 2, 9, 14, 30, 0, 987654, tzinfo=UTC)
LOOPBACK = Settings.load({}, ssrf_allow_list="127.0.0.0/8")
BOT = "ws://127.0.0.1:9/media"


def no_dns(host: str) -> Sequence[str]:
    raise AssertionError(f"DNS asked about {host!r}")


# --------------------------------------------------------------------------- the request


def test_routing_request_matches_the_guide_field_for_field() -> None:
    payload = routing_request(
        call_uuid=CALL_UUID,
        timestamp=MOMENT,
        direction="inbound",
        caller_number="5511999999999",
        destination_number="5511888888888",
        account_id="12",
        request_id="req_789012",
    )
    assert canonical_json(payload) == (
        b'{"account_id":"12","call_uuid":"550e8400-e29b-41d4-a716-446655440000",'
        b'"caller_number":"5511999999999","destination_number":"5511888888888",'
        b'"direction":"inbound","event_type":"call.routing_request","request_id":"req_789012",'
        b'"timestamp":"2026-02-09T14:30:00Z"}'
    )


def test_request_ids_are_req_and_random_hex() -> None:
    first, second = new_request_id(), new_request_id()
    assert re.fullmatch(r"req_[0-9a-f]{16}", first)
    assert first != second


# --------------------------------------------------------------------------- reading answers


def answer(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"action": "connect", "socket_url": "wss://bot.example/media/stream", "timeout": 30},
            WebhookConnect("wss://bot.example/media/stream", 30),
        ),
        ({"action": "connect", "socket_url": BOT}, WebhookConnect(BOT, None)),
        ({"action": "connect", "socket_url": " vapi&abc-123 "}, WebhookConnect("vapi&abc-123")),
        ({"action": "connect", "socket_url": "elevenlabs"}, WebhookConnect("elevenlabs")),
        ({"action": "connect", "socket_url": BOT, "timeout": 30.0}, WebhookConnect(BOT, 30)),
        ({"action": "connect", "socket_url": BOT, "timeout": 1}, WebhookConnect(BOT, 1)),
        ({"action": "connect", "socket_url": BOT, "timeout": 86400}, WebhookConnect(BOT, 86400)),
        (
            {"action": "hangup", "reason": "business_hours_closed"},
            WebhookHangup("business_hours_closed"),
        ),
        ({"action": "hangup"}, WebhookHangup("")),
        ({"action": "hangup", "reason": 7}, WebhookHangup("")),
    ],
)
def test_usable_answers(body: object, expected: object) -> None:
    assert parse_answer(200, answer(body)) == expected


@pytest.mark.parametrize("timeout", [0, 86401, -5, "30", True, 1.5, [30]])
def test_a_bad_timeout_is_ignored_with_a_warning(timeout: object) -> None:
    got = parse_answer(200, answer({"action": "connect", "socket_url": BOT, "timeout": timeout}))
    assert isinstance(got, WebhookConnect)
    assert (got.socket_url, got.max_seconds) == (BOT, None)
    assert got.warnings == (
        f"timeout {timeout!r} ignored: must be an integer number of seconds 1..86400",
    )


def test_a_long_hangup_reason_is_cut() -> None:
    got = parse_answer(200, answer({"action": "hangup", "reason": "x" * 1000}))
    assert got == WebhookHangup("x" * 256)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, answer({"action": "connect", "socket_url": BOT}), "HTTP 500"),
        (201, answer({"action": "connect", "socket_url": BOT}), "HTTP 201"),
        (200, b"{not json", "answer is not valid JSON"),
        (200, b"\xff\xfe\x00", "answer is not valid JSON"),
        (200, b"", "answer is not valid JSON"),
        (200, b"[" * 100_000, f"answer larger than {MAX_ANSWER_BYTES} bytes"),
        (200, b"[" * 60_000 + b"]" * 60_000, f"answer larger than {MAX_ANSWER_BYTES} bytes"),
        (200, b"[" * 30_000 + b"]" * 30_000, "answer is not valid JSON"),  # too deep
        (200, answer(["connect"]), "answer is a JSON list, not an object"),
        (200, answer("connect"), "answer is a JSON str, not an object"),
        (200, answer({"action": "transfer"}), "unknown action 'transfer'"),
        (200, answer({"socket_url": BOT}), "unknown action None"),
        (
            200,
            answer({"action": "connect"}),
            "connect answer without a socket_url string (got None)",
        ),
        (
            200,
            answer({"action": "connect", "socket_url": 5}),
            "connect answer without a socket_url string (got 5)",
        ),
        (
            200,
            answer({"action": "connect", "socket_url": "https://bot.example/x"}),
            "bad socket_url 'https://bot.example/x': must start with ws:// or wss://",
        ),
        (
            200,
            answer({"action": "connect", "socket_url": "elevenlabs&no spaces"}),
            "bad socket_url 'elevenlabs&no spaces': the id after 'elevenlabs&' must be 1-128 "
            "letters, digits, '_' or '-'",
        ),
        (
            200,
            answer({"action": "connect", "socket_url": ""}),
            "bad socket_url '': must be a ws:// or wss:// URL, 'elevenlabs[&agent_id]' or "
            "'vapi[&id]'",
        ),
    ],
)
def test_unusable_answers_say_why(status: int, body: bytes, reason: str) -> None:
    with pytest.raises(AnswerError) as caught:
        parse_answer(status, body)
    assert str(caught.value) == reason


def test_loggable_url_drops_user_info_and_query() -> None:
    assert loggable_url("https://u:pw@hooks.example:8443/route?token=s3cret") == (
        "https://hooks.example:8443/route"
    )
    assert loggable_url("http://[::1]:8000/r") == "http://[::1]:8000/r"
    assert loggable_url("http://host:99999/") == "(unparsable URL)"


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def peer() -> Iterator[WebhookPeer]:
    yield from running_peer(SECRET)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as shared:
        yield shared


def webhook(
    client: httpx.AsyncClient,
    settings: Settings = LOOPBACK,
    resolve=no_dns,
) -> RoutingWebhook:
    return RoutingWebhook(
        client, settings, resolve=resolve, now=lambda: MOMENT, request_id=lambda: "req_0a1b"
    )


async def ask(hook: RoutingWebhook, url: str):
    return await hook.ask(
        url,
        secret=SECRET,
        call_uuid=CALL_UUID,
        direction="outbound",
        caller_number="+5511888888888",
        destination_number="+5511999999999",
        account_id="acc_12",
    )


@pytest.mark.anyio
async def test_the_request_on_the_wire_is_signed_as_the_guide_says(
    peer: WebhookPeer, client: httpx.AsyncClient
) -> None:
    peer.reply = Reply.json({"action": "connect", "socket_url": BOT, "timeout": 30})
    result = await ask(webhook(client), peer.url())
    assert result.outcome == WebhookConnect(BOT, 30)
    assert result.request_id == "req_0a1b"
    assert result.elapsed_ms >= 0
    [seen] = peer.received
    assert seen.path == "/route"
    assert seen.raw_signature_ok and seen.guide_signature_ok
    assert seen.body == (
        b'{"account_id":"acc_12","call_uuid":"550e8400-e29b-41d4-a716-446655440000",'
        b'"caller_number":"+5511888888888","destination_number":"+5511999999999",'
        b'"direction":"outbound","event_type":"call.routing_request","request_id":"req_0a1b",'
        b'"timestamp":"2026-02-09T14:30:00Z"}'
    )
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-call-uuid"] == CALL_UUID
    assert seen.headers["user-agent"] == "VoiceAPI/1.0"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", seen.headers["x-signature"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (Reply.json({"action": "hangup", "reason": "closed"}), WebhookHangup("closed")),
        (
            Reply.json({"action": "connect", "socket_url": BOT}, status=500),
            WebhookFailure("HTTP 500"),
        ),
        (Reply(body=b"<html>oops</html>"), WebhookFailure("answer is not valid JSON")),
        (Reply.json({"action": "dance"}), WebhookFailure("unknown action 'dance'")),
        (
            Reply.json({"action": "connect", "socket_url": "ws://169.254.169.254/latest"}),
            WebhookFailure(
                "socket_url refused: 169.254.169.254 is a link-local (cloud metadata service) "
                "address; the gateway only calls public addresses (an operator can allow a range "
                "with AGERA_SSRF_ALLOW_LIST)"
            ),
        ),
        (
            Reply.json({"action": "connect", "socket_url": BOT, "pad": "x" * MAX_ANSWER_BYTES}),
            WebhookFailure(f"answer larger than {MAX_ANSWER_BYTES} bytes"),
        ),
        (
            Reply.json(
                {"action": "connect", "socket_url": BOT, "pad": "x" * MAX_ANSWER_BYTES},
                chunked=True,
            ),
            WebhookFailure(f"answer larger than {MAX_ANSWER_BYTES} bytes"),
        ),
        (
            Reply.json({"action": "connect", "socket_url": BOT, "pad": "x" * 60_000}, chunked=True),
            WebhookConnect(BOT),
        ),
    ],
    ids=[
        "hangup",
        "500",
        "bad-json",
        "unknown-action",
        "metadata",
        "too-big",
        "too-big-chunked",
        "big-chunked-ok",
    ],
)
async def test_answers_over_http(
    peer: WebhookPeer, client: httpx.AsyncClient, reply: Reply, outcome: object
) -> None:
    peer.reply = reply
    result = await ask(webhook(client), peer.url())
    assert result.outcome == outcome
    assert len(peer.received) == 1


@pytest.mark.anyio
async def test_redirects_are_not_followed(peer: WebhookPeer) -> None:
    peer.reply = Reply(status=307, headers={"location": peer.url("/elsewhere")})
    # Even by a client that would follow them for everyone else.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=True) as following:
        result = await ask(webhook(following), peer.url())
    assert result.outcome == WebhookFailure("HTTP 307")
    assert [seen.path for seen in peer.received] == ["/route"]


@pytest.mark.anyio
async def test_the_deadline_covers_the_whole_exchange(
    peer: WebhookPeer, client: httpx.AsyncClient
) -> None:
    settings = Settings.load({}, ssrf_allow_list="127.0.0.0/8", routing_webhook_timeout_seconds=0.3)
    peer.reply = Reply.json({"action": "connect", "socket_url": BOT}, delay=5.0)
    result = await ask(webhook(client, settings), peer.url())
    assert result.outcome == WebhookFailure("timeout after 0.3 s")
    assert 250 <= result.elapsed_ms < 300 + 2000  # the limit, not the peer's 5 s
    assert len(peer.received) == 1  # asked once, never retried


@pytest.mark.anyio
async def test_a_slow_drip_cannot_stretch_the_deadline(
    peer: WebhookPeer, client: httpx.AsyncClient
) -> None:
    # Each byte comes well within httpx's per-read timeout; only the whole-exchange deadline
    # stops a peer that keeps the call ringing this way.
    settings = Settings.load({}, ssrf_allow_list="127.0.0.0/8", routing_webhook_timeout_seconds=0.3)
    peer.reply = Reply.json({"action": "connect", "socket_url": BOT}, chunk_delay=0.05)
    result = await ask(webhook(client, settings), peer.url())
    assert result.outcome == WebhookFailure("timeout after 0.3 s")


@pytest.mark.anyio
async def test_connection_refused(client: httpx.AsyncClient) -> None:
    result = await ask(webhook(client), f"http://127.0.0.1:{closed_port()}/route")
    assert isinstance(result.outcome, WebhookFailure)
    assert result.outcome.reason.startswith("request failed (ConnectError")


@pytest.mark.anyio
async def test_the_webhook_url_itself_must_pass_the_node_ssrf_rule(
    peer: WebhookPeer, client: httpx.AsyncClient
) -> None:
    result = await ask(webhook(client, Settings.load({})), peer.url())
    assert result.outcome == WebhookFailure(
        "webhook_url refused: 127.0.0.1 is a loopback address; the gateway only calls public "
        "addresses (an operator can allow a range with AGERA_SSRF_ALLOW_LIST)"
    )
    assert peer.received == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("addresses", "outcome"),
    [
        (["93.184.216.34"], WebhookConnect("wss://bot.example/media")),
        (
            ["93.184.216.34", "10.1.2.3"],
            WebhookFailure(
                "socket_url refused: bot.example (10.1.2.3) is a private address; the gateway "
                "only calls public addresses (an operator can allow a range with "
                "AGERA_SSRF_ALLOW_LIST)"
            ),
        ),
    ],
)
async def test_a_socket_url_host_name_is_resolved_and_checked(
    peer: WebhookPeer, client: httpx.AsyncClient, addresses: list[str], outcome: object
) -> None:
    asked: list[str] = []

    def resolve(host: str) -> Sequence[str]:
        asked.append(host)
        return addresses

    peer.reply = Reply.json({"action": "connect", "socket_url": "wss://bot.example/media"})
    result = await ask(webhook(client, resolve=resolve), peer.url())
    assert result.outcome == outcome
    assert asked == ["bot.example"]
