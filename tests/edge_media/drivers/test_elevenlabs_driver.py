"""ElevenLabsDriver and its connector against FakeElevenLabs over real loopback sockets.

The caller side is `RecordingLeg`, a stand-in for the bridge's leg that records what the driver
asks of it (the `CallerLeg` seam). The account lookup is a dict, as the routing cache would
answer; the HTTP client is a real httpx.AsyncClient.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from edge_media.drivers.base import (
    BotConnector,
    BotEnd,
    BotUnavailable,
    CallInfo,
    ConnectStep,
    PlayedMark,
)
from edge_media.drivers.context import DriverContext
from edge_media.drivers.elevenlabs_driver import (
    ElevenLabsDriver,
    conversation_url,
    elevenlabs_connector,
)
from edge_media.drivers.elevenlabs_protocol import ElevenLabsProtocol
from edge_media.drivers.provider_connect import http_failure, socket_step
from edge_media.drivers.ws_connect import connect_step, connect_websocket
from shared.models import Account, ElevenLabsSettings
from shared.settings import Settings
from tests.edge_media.drivers.recording_leg import RecordingLeg
from tests.support.fake_elevenlabs import (
    DEFAULT_AGENT_ID,
    DEFAULT_API_KEY,
    FakeElevenLabs,
    FakeSession,
    decode_audio,
    tone,
)

pytestmark = pytest.mark.anyio

INFO = CallInfo(
    call_uuid="7d1e5a90-3b2c-4f6e-8a9d-0c1b2e3f4a5b",
    account_id="acc_el_1",
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
    extra={"campaign": "spring"},
)
FRAMES = [bytes([(index * 7 + offset) % 256 for offset in range(160)]) for index in range(50)]
TIMEOUT = 3.0


def account(*, api_key: str | None = None, agent_id: str | None = None) -> Account:
    return Account(
        account_id=INFO.account_id,
        name="Acme",
        webhook_secret="s" * 16,
        elevenlabs=ElevenLabsSettings(api_key=api_key, agent_id=agent_id),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def connector(
    api_base: str, http: httpx.AsyncClient | None, the_account: Account | None
) -> BotConnector:
    async def accounts(account_id: str) -> Account | None:
        return the_account if account_id == INFO.account_id else None

    settings = Settings.load(environ={}, elevenlabs_api_base=api_base)
    return elevenlabs_connector(DriverContext(settings=settings, accounts=accounts, http=http))


async def open_call(
    fake: FakeElevenLabs,
    http: httpx.AsyncClient | None,
    *,
    target: str = f"elevenlabs&{DEFAULT_AGENT_ID}",
    the_account: Account | None = None,
) -> tuple[ElevenLabsDriver, FakeSession, RecordingLeg]:
    leg = RecordingLeg()
    driver = await connector(fake.api_base, http, the_account)(target, INFO, leg, TIMEOUT)
    assert isinstance(driver, ElevenLabsDriver)
    session = await fake.next_session()
    return driver, session, leg


async def expect_unavailable(
    fake_base: str,
    http: httpx.AsyncClient | None,
    the_account: Account | None,
    target: str = "elevenlabs",
    seconds: float = TIMEOUT,
) -> BotUnavailable:
    with pytest.raises(BotUnavailable) as caught:
        await connector(fake_base, http, the_account)(target, INFO, RecordingLeg(), seconds)
    return caught.value


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fit_residual(samples: np.ndarray, frequency: float, rate: int) -> tuple[float, float]:
    """Amplitude of the best-fitting sine at ``frequency`` and the largest deviation from it."""
    index = np.arange(len(samples))
    basis = np.stack(
        [np.sin(2 * np.pi * frequency * index / rate), np.cos(2 * np.pi * frequency * index / rate)]
    ).T
    coefficients, *_ = np.linalg.lstsq(basis, samples, rcond=None)
    residual = samples - basis @ coefficients
    return float(np.hypot(*coefficients)), float(np.max(np.abs(residual)))


# -- a normal call -------------------------------------------------------------------------


async def test_public_agent_speech_both_ways_is_byte_identical_in_ulaw(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    fake.echo = True
    driver, session, leg = await open_call(fake, http, the_account=account())
    assert session.first_message == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {},
        "dynamic_variables": {
            "caller_number": "+15005550006",
            "called_number": "+15005550001",
            "call_uuid": INFO.call_uuid,
            "direction": "inbound",
            "account_id": "acc_el_1",
            "campaign": "spring",
        },
    }
    assert driver.provider_ids() == {"conversation_id": session.conversation_id}
    for frame in FRAMES:
        driver.send_audio(frame)
    await session.wait_audio(160 * len(FRAMES))
    assert session.audio_chunks == FRAMES  # passthrough: one chunk per frame, untouched
    await leg.wait_for(lambda: len(leg.audio) >= 160 * len(FRAMES))
    assert bytes(leg.audio) == b"".join(FRAMES)
    assert fake.rest_requests == []  # no key: the public URL, no REST call
    assert not session.signed
    assert not session.api_key_on_upgrade
    stats = driver.stats()
    assert stats["audio_out"] == 50
    assert stats["audio_in"] == 50
    assert (stats["input_format"], stats["output_format"]) == ("ulaw_8000", "ulaw_8000")
    await driver.stop("caller hung up")
    assert await driver.wait_closed() == BotEnd(by_bot=False, reason="caller hung up", code=1000)
    await session.wait_closed()
    assert session.close_code == 1000
    assert session.violations == []


async def test_private_agent_gets_a_signed_url_and_the_key_goes_only_to_rest(
    fake: FakeElevenLabs, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.public = False
    the_account = account(api_key=DEFAULT_API_KEY, agent_id=DEFAULT_AGENT_ID)
    with caplog.at_level(logging.DEBUG):
        driver, session, _ = await open_call(
            fake, http, target="elevenlabs", the_account=the_account
        )
        await driver.stop("caller hung up")
        await driver.wait_closed()
    [request] = fake.rest_requests
    assert (request.agent_id, request.key_valid, request.status) == (DEFAULT_AGENT_ID, True, 200)
    assert session.signed
    assert not session.api_key_on_upgrade
    signature = session.query["conversation_signature"]
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert f"ElevenLabs conversation {session.conversation_id} open" in text
    assert DEFAULT_API_KEY not in text
    assert signature not in text
    assert DEFAULT_API_KEY not in json.dumps(driver.stats())
    assert session.violations == []


async def test_pcm_16000_agent_hears_and_speaks_a_clean_tone(
    http: httpx.AsyncClient,
) -> None:
    async with FakeElevenLabs(
        input_format="pcm_16000", output_format="pcm_16000", echo=True
    ) as fake:
        driver, session, leg = await open_call(fake, http)
        caller = tone("ulaw_8000", 1000, 1000, level=0.5)
        for offset in range(0, len(caller), 160):
            driver.send_audio(caller[offset : offset + 160])
        await session.wait_audio(2 * 15000)
        heard = decode_audio("pcm_16000", bytes(session.audio))[1600:]
        amplitude, deviation = fit_residual(heard, 1000, 16000)
        assert amplitude == pytest.approx(0.5, rel=0.03)
        assert deviation < 0.03  # μ-law steps only: no click at the 20 ms chunk edges
        await leg.wait_for(lambda: len(leg.audio) >= 7000)
        played = decode_audio("ulaw_8000", bytes(leg.audio))[800:7000]
        amplitude, deviation = fit_residual(played, 1000, 8000)
        assert amplitude == pytest.approx(0.5, rel=0.05)
        assert deviation < 0.05
        assert driver.stats()["input_format"] == "pcm_16000"
        await driver.stop("caller hung up")
        assert session.violations == []


async def test_the_tail_of_a_pcm_reply_is_played_when_the_agent_goes_quiet(
    http: httpx.AsyncClient,
) -> None:
    greeting = tone("pcm_24000", 600, 300)
    async with FakeElevenLabs(output_format="pcm_24000", greeting=greeting) as fake:
        driver, _, leg = await open_call(fake, http)
        await leg.wait_for(lambda: len(leg.audio) >= 2400)
        assert len(leg.audio) == 2400  # 300 ms at 8 kHz, nothing kept back or lost
        await driver.stop("caller hung up")


async def test_ping_is_answered_with_pong(fake: FakeElevenLabs, http: httpx.AsyncClient) -> None:
    driver, session, _ = await open_call(fake, http)
    first = await session.send_ping(ping_ms=80)
    second = await session.send_ping(ping_ms=None)
    await session.wait_for(lambda: len(session.pongs) == 2, "two pongs")
    assert session.pongs == [first, second]
    assert driver.stats()["pongs"] == 2
    await driver.stop("caller hung up")
    assert session.violations == []


async def test_interruption_clears_the_leg_and_stale_audio_is_never_played(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    driver, session, leg = await open_call(fake, http)
    speech, stale, fresh = b"\x11" * 800, b"\x22" * 800, b"\x33" * 800
    await session.send_audio(speech)
    await session.interrupt_with_stale_audio(stale, fresh)
    await leg.wait_for(lambda: len(leg.calls) >= 3)
    assert leg.calls == [("play", speech), ("clear", None), ("play", fresh)]
    stats = driver.stats()
    assert (stats["interruptions"], stats["stale_dropped"], stats["stale_bytes"]) == (1, 1, 800)
    await driver.stop("caller hung up")


async def test_dtmf_reaches_the_agent_as_a_contextual_update(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    driver, session, _ = await open_call(fake, http)
    driver.send_dtmf("5")
    driver.send_dtmf("*")
    await session.wait_for(lambda: len(session.contextual_updates) == 2, "two updates")
    assert session.contextual_updates == ["caller pressed 5", "caller pressed *"]
    driver.marks_played([PlayedMark("m", 20)])  # nothing to do, nothing sent
    await driver.stop("caller hung up")
    await session.wait_closed()
    assert len(session.messages) == 3
    assert session.violations == []


async def test_agent_hanging_up_ends_by_bot_with_1000(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    driver, _, _ = await open_call(fake, http)
    driver.send_dtmf("#")  # the fake's trigger for a hang-up
    end = await asyncio.wait_for(driver.wait_closed(), TIMEOUT)
    assert end == BotEnd(
        by_bot=True, reason="agent ended the conversation (1000 Agent ended the call)", code=1000
    )
    # After the end nothing goes out and nothing raises.
    driver.send_audio(FRAMES[0])
    driver.send_dtmf("1")
    await driver.stop("caller hung up")
    assert await driver.wait_closed() == end


async def test_a_crashed_agent_ends_by_bot_with_1006(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    driver, session, _ = await open_call(fake, http)
    session.abort()
    end = await asyncio.wait_for(driver.wait_closed(), TIMEOUT)
    assert (end.by_bot, end.code) == (True, 1006)
    assert end.reason.startswith("ElevenLabs closed the conversation (1006")


async def test_after_stop_late_agent_messages_reach_no_one(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    driver, session, leg = await open_call(fake, http)
    await driver.stop("redirected")
    driver.on_text(
        json.dumps({"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": 9}})
    )
    driver.on_text('{"type":"interruption","interruption_event":{"event_id":9}}')
    driver.send_audio(FRAMES[0])
    assert leg.calls == []
    assert await driver.wait_closed() == BotEnd(by_bot=False, reason="redirected", code=1000)
    await session.wait_closed()
    assert (session.close_code, session.close_reason) == (1000, "redirected")


async def test_junk_from_the_agent_is_logged_once_per_kind_with_the_call(
    fake: FakeElevenLabs, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    driver, session, leg = await open_call(fake, http)
    with caplog.at_level(logging.DEBUG, logger="agera.drivers.elevenlabs"):
        for _ in range(2):
            await session.send_raw("{not json")
            await session.send_raw(b"\x00\x01")
            await session.send_json({"type": "brand_new"})
            await session.send_json(
                {"type": "audio", "audio_event": {"audio_base_64": "@@", "event_id": 50}}
            )
            await session.send_json({"type": "agent_response", "agent_response_event": {}})
        await session.send_audio(b"\x44" * 160)
        await leg.wait_for(lambda: len(leg.calls) == 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 4
    assert all(message.startswith(f"[call {INFO.call_uuid}] ignored") for message in warnings)
    assert [
        kind
        for kind in ("bad_json", "binary", "unknown_type", "bad_base64")
        if any(kind in m for m in warnings)
    ] == [
        "bad_json",
        "binary",
        "unknown_type",
        "bad_base64",
    ]
    stats = driver.stats()
    assert (stats["ignored"], stats["unknown_types"]) == (10, 2)
    await driver.stop("caller hung up")


async def test_a_client_tool_call_gets_an_error_result(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    driver, session, _ = await open_call(fake, http)
    await session.send_json(
        {
            "type": "client_tool_call",
            "client_tool_call": {"tool_name": "lookup", "tool_call_id": "tc-1", "parameters": {}},
        }
    )
    await session.wait_for(lambda: len(session.tool_results) == 1, "a tool result")
    assert session.tool_results[0]["tool_call_id"] == "tc-1"
    assert session.tool_results[0]["is_error"] is True
    await driver.stop("caller hung up")


async def test_caller_audio_before_the_metadata_is_buffered_then_sent_in_order(
    fake: FakeElevenLabs,
) -> None:
    fake.metadata_delay = 0.2
    leg = RecordingLeg()
    driver = ElevenLabsDriver(ElevenLabsProtocol(INFO), leg, agent_id=DEFAULT_AGENT_ID)
    connecting = asyncio.create_task(driver.connect(fake.conversation_url, TIMEOUT))
    frames = [bytes([index]) * 160 for index in range(150)]  # 3 s: the first second is dropped
    for frame in frames:
        driver.send_audio(frame)
    await connecting
    session = await fake.next_session()
    await session.wait_audio(160 * 100)
    assert session.audio_chunks == frames[50:]
    assert session.messages[0]["type"] == "conversation_initiation_client_data"
    assert driver.stats()["buffer_dropped"] == 50
    driver.send_audio(b"\xee" * 160)
    await session.wait_audio(160 * 101)
    assert session.audio_chunks[-1] == b"\xee" * 160
    await driver.stop("caller hung up")
    assert session.violations == []


# -- failures ------------------------------------------------------------------------------


async def test_no_agent_id_anywhere_is_a_credentials_failure(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    for the_account in (account(api_key=DEFAULT_API_KEY), None):
        error = await expect_unavailable(fake.api_base, http, the_account)
        assert error.step is ConnectStep.CREDENTIALS
        assert "elevenlabs.agent_id" in str(error)
        assert INFO.account_id in str(error)
        assert DEFAULT_API_KEY not in str(error)
    assert fake.rest_requests == []
    assert fake.sessions == []


async def test_rest_401_is_a_rest_failure_and_the_key_is_in_no_log(
    fake: FakeElevenLabs, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = "xi-wrong-key-55aa"
    with caplog.at_level(logging.DEBUG):
        error = await expect_unavailable(
            fake.api_base, http, account(api_key=wrong_key, agent_id=DEFAULT_AGENT_ID)
        )
    assert error.step is ConnectStep.REST
    assert str(error) == (
        f"ElevenLabs refused the signed-URL request for agent {DEFAULT_AGENT_ID}: HTTP 401"
    )
    assert [(r.key_present, r.key_valid, r.status) for r in fake.rest_requests] == [
        (True, False, 401)
    ]
    assert fake.sessions == []
    for record in caplog.records:
        assert wrong_key not in record.getMessage()
        assert wrong_key not in str(record.exc_info or "")


async def test_a_key_no_header_can_carry_is_refused_without_quoting_it(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    bad_key = "xi key\nwith-newline"
    error = await expect_unavailable(
        fake.api_base, http, account(api_key=bad_key, agent_id=DEFAULT_AGENT_ID)
    )
    assert error.step is ConnectStep.CREDENTIALS
    assert "elevenlabs.api_key" in str(error)
    assert "xi key" not in str(error)
    assert fake.rest_requests == []


@pytest.mark.parametrize("status", [403, 404, 500, 503])
async def test_rest_refusals_name_the_status(
    fake: FakeElevenLabs, http: httpx.AsyncClient, status: int
) -> None:
    fake.signed_url_status = status
    error = await expect_unavailable(
        fake.api_base, http, account(api_key=DEFAULT_API_KEY, agent_id=DEFAULT_AGENT_ID)
    )
    assert error.step is ConnectStep.REST
    assert str(error).endswith(f"HTTP {status}")


async def test_slow_metadata_is_a_timeout_within_the_timeout(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    fake.metadata_delay = 5.0
    started = time.monotonic()
    error = await expect_unavailable(
        fake.api_base, http, account(), f"elevenlabs&{DEFAULT_AGENT_ID}", 0.3
    )
    elapsed = time.monotonic() - started
    assert error.step is ConnectStep.TIMEOUT
    assert "no conversation metadata within 0.3 s" in str(error)
    assert 0.25 <= elapsed < 3.0  # the timeout, not the agent's 5 s (a bound under load)
    session = fake.sessions[0]
    await session.wait_closed()  # the socket was aborted, not left open


async def test_agent_closing_before_the_metadata_is_a_handshake_failure(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    fake.send_metadata = False
    connect = asyncio.create_task(
        connector(fake.api_base, http, account())(
            f"elevenlabs&{DEFAULT_AGENT_ID}", INFO, RecordingLeg(), TIMEOUT
        )
    )
    session = await fake.next_session()
    await session.wait_for(lambda: session.first_message is not None, "the initiation")
    await session.hang_up(1008, "Invalid message received")
    with pytest.raises(BotUnavailable) as caught:
        await connect
    assert caught.value.step is ConnectStep.HANDSHAKE
    assert "(1008 Invalid message received)" in str(caught.value)


async def test_an_agent_format_we_cannot_convert_fails_the_handshake(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    fake.output_format = "mp3_44100"
    error = await expect_unavailable(
        fake.api_base, http, account(), f"elevenlabs&{DEFAULT_AGENT_ID}"
    )
    assert error.step is ConnectStep.HANDSHAKE
    assert "mp3_44100" in str(error)


async def test_a_refused_upgrade_is_a_handshake_failure(
    fake: FakeElevenLabs, http: httpx.AsyncClient
) -> None:
    fake.public = False  # private agent, but the account has no key: no signature
    error = await expect_unavailable(fake.api_base, http, account(agent_id=DEFAULT_AGENT_ID))
    assert error.step is ConnectStep.HANDSHAKE
    assert "HTTP 403" in str(error)
    assert fake.refused_upgrades == [("/v1/convai/conversation", 403)]


async def test_nothing_listening_is_a_connect_failure(http: httpx.AsyncClient) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    rest = await expect_unavailable(base, http, account(api_key="k", agent_id="a1"))
    assert rest.step is ConnectStep.CONNECT
    socket_error = await expect_unavailable(base, None, account(agent_id="a1"))
    assert socket_error.step is ConnectStep.CONNECT


async def test_without_a_pooled_client_the_rest_call_still_works(fake: FakeElevenLabs) -> None:
    fake.public = False
    the_account = account(api_key=DEFAULT_API_KEY, agent_id=DEFAULT_AGENT_ID)
    driver, session, _ = await open_call(fake, None, target="elevenlabs", the_account=the_account)
    assert session.signed
    await driver.stop("caller hung up")


async def test_a_bad_target_is_a_target_failure(fake: FakeElevenLabs) -> None:
    for target in ("elevenlabs&bad id", "vapi&x"):
        error = await expect_unavailable(fake.api_base, None, account(), target)
        assert error.step is ConnectStep.TARGET


# -- failure classification ----------------------------------------------------------------


def test_public_conversation_url_follows_the_api_scheme() -> None:
    assert conversation_url("https://api.elevenlabs.io", "a_1") == (
        "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=a_1"
    )
    assert conversation_url("http://127.0.0.1:8123/", "a-2") == (
        "ws://127.0.0.1:8123/v1/convai/conversation?agent_id=a-2"
    )


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as caught:
            raise outer from caught
    except BaseException as raised:
        return raised


def test_httpx_failures_map_to_their_step() -> None:
    dns = _chained(httpx.ConnectError("x"), socket.gaierror(-2, "Name or service not known"))
    tls = _chained(httpx.ConnectError("x"), ssl.SSLCertVerificationError(1, "verify failed"))
    assert http_failure_step(dns) is ConnectStep.DNS
    assert http_failure_step(tls) is ConnectStep.TLS
    assert http_failure_step(httpx.ConnectError("refused")) is ConnectStep.CONNECT
    assert http_failure_step(httpx.ConnectTimeout("slow")) is ConnectStep.TIMEOUT
    assert http_failure_step(httpx.RemoteProtocolError("bad")) is ConnectStep.REST


def http_failure_step(error: httpx.HTTPError) -> ConnectStep:
    return http_failure(error)[0]


def test_a_websocket_failure_keeps_the_step_the_websocket_layer_named() -> None:
    for step in ConnectStep:
        expected = ConnectStep.REST if step is ConnectStep.TARGET else step
        assert socket_step(BotUnavailable("x", step=step)) is expected


def test_os_errors_map_to_their_connect_step() -> None:
    assert connect_step(socket.gaierror(-2, "unknown")) is ConnectStep.DNS
    assert connect_step(ssl.SSLError(1, "bad")) is ConnectStep.TLS
    assert connect_step(ssl.SSLCertVerificationError(1, "bad cert")) is ConnectStep.TLS
    assert connect_step(ConnectionRefusedError(111, "refused")) is ConnectStep.CONNECT


async def test_a_refused_websocket_is_the_connect_step() -> None:
    with pytest.raises(BotUnavailable) as caught:
        await connect_websocket(
            f"ws://127.0.0.1:{closed_port()}/x",
            seconds=1.0,
            on_text=lambda text: None,
            on_bytes=lambda data: None,
        )
    assert socket_step(caught.value) is ConnectStep.CONNECT
