"""VapiDriver against FakeVapi over loopback: REST and WebSocket on one 127.0.0.1 port.

The caller side is `RecordingLeg`, a stand-in for the bridge's leg (the `CallerLeg` seam of
drivers/base.py) with a playout queue: `play` queues audio, `clear` drops what is queued, and
`drain` plays it out, so a test can see that a barge-in flushed audio not yet heard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edge_media.drivers.base import BotEnd, BotUnavailable, CallInfo, ConnectStep
from edge_media.drivers.context import DriverContext
from edge_media.drivers.provider_connect import http_failure
from edge_media.drivers.vapi_driver import VapiDriver, connect_vapi, vapi_connector
from edge_media.rtp.playout import PlayedMark
from shared.models import Account, VapiSettings
from shared.settings import Settings
from tests.edge_media.drivers.recording_leg import RecordingLeg
from tests.support.fake_vapi import API_KEY, FakeVapi, VapiSession

pytestmark = pytest.mark.anyio

INFO = CallInfo(
    call_uuid="0b6f3c2e-5a1d-4c8e-9f7a-2d4e6f8a0c1b",
    account_id="acc-42",
    direction="inbound",
    from_number="+15005550006",
    to_number="+15005550001",
    extra={"campaign": "spring"},
)
ASSISTANT = "0b7e2c1a-0000-4000-8000-00000000a001"
FRAMES = [bytes([(index * 7 + offset) % 256 for offset in range(160)]) for index in range(50)]
CALL = f"[call {INFO.call_uuid}]"


def account(api_key: str | None = API_KEY, assistant_id: str | None = ASSISTANT) -> Account:
    return Account(
        account_id=INFO.account_id,
        name="Acme",
        webhook_secret="s" * 16,
        vapi=VapiSettings(api_key=api_key, assistant_id=assistant_id),
    )


DEFAULT = account()


def context_for(
    fake: FakeVapi, http: httpx.AsyncClient, found: Account | None = DEFAULT, base: str = ""
) -> DriverContext:
    async def accounts(account_id: str) -> Account | None:
        return found if account_id == INFO.account_id else None

    return DriverContext(Settings(vapi_api_base=base or fake.url), accounts=accounts, http=http)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def vapi() -> AsyncIterator[FakeVapi]:
    async with FakeVapi() as fake:
        yield fake


async def open_call(
    fake: FakeVapi, http: httpx.AsyncClient, target: str = "vapi", seconds: float = 3.0
) -> tuple[VapiDriver, VapiSession, RecordingLeg]:
    leg = RecordingLeg()
    driver = await vapi_connector(context_for(fake, http))(target, INFO, leg, seconds)
    assert isinstance(driver, VapiDriver)
    session = await fake.next_session()
    return driver, session, leg


async def refused(
    fake: FakeVapi,
    http: httpx.AsyncClient,
    *,
    found: Account | None = DEFAULT,
    target: str = "vapi",
    seconds: float = 3.0,
    base: str = "",
) -> BotUnavailable:
    with pytest.raises(BotUnavailable) as caught:
        await connect_vapi(
            target, INFO, RecordingLeg(), seconds, context=context_for(fake, http, found, base)
        )
    return caught.value


async def hang_up(driver: VapiDriver, session: VapiSession) -> BotEnd:
    await driver.stop("caller hung up")
    end = await driver.wait_closed()
    await session.wait_closed()
    return end


def no_secret_in(records: list[logging.LogRecord], *secrets: str) -> None:
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text, f"{secret!r} logged by {record.name}: {text}"


# -- creating the call -----------------------------------------------------------------------


async def test_create_call_sends_the_body_and_the_bearer_key(
    vapi: FakeVapi, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        driver, session, _ = await open_call(vapi, http)
    [create] = vapi.creates
    assert create.status == 201
    assert create.headers["Authorization"] == f"Bearer {API_KEY}"
    assert create.headers["Content-Type"] == "application/json"
    assert create.body == {
        "assistantId": ASSISTANT,
        "assistantOverrides": {
            "variableValues": {
                "caller_number": "+15005550006",
                "called_number": "+15005550001",
                "call_uuid": INFO.call_uuid,
                "direction": "inbound",
                "account_id": "acc-42",
                "campaign": "spring",
            }
        },
        "transport": {
            "provider": "vapi.websocket",
            "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
        },
    }
    assert session.path == f"/{session.call_id}/transport"
    assert "Authorization" not in session.headers  # the key never goes to the socket
    assert driver.provider_ids() == {"vapi_call_id": session.call_id}
    assert f"{CALL} Vapi call {session.call_id} connected (assistant {ASSISTANT})" in [
        r.getMessage() for r in caplog.records
    ]
    await hang_up(driver, session)
    no_secret_in(caplog.records, API_KEY, vapi.socket_url(session.call_id), session.path)


async def test_the_target_names_the_assistant_over_the_account(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    driver, session, _ = await open_call(vapi, http, target="vapi&asst_from_route")
    assert vapi.creates[0].body["assistantId"] == "asst_from_route"
    await hang_up(driver, session)


# -- audio -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [320, 800])
async def test_audio_goes_both_ways_byte_identical(http: httpx.AsyncClient, chunk: int) -> None:
    async with FakeVapi(echo=True, echo_chunk=chunk) as fake:
        driver, session, leg = await open_call(fake, http)
        for frame in FRAMES:
            driver.send_audio(frame)
        sent = b"".join(FRAMES)
        await leg.wait_for(lambda: len(leg.audio) >= len(sent))
        assert session.frames == FRAMES  # one binary frame per caller frame, no envelope
        assert bytes(session.audio) == sent
        assert bytes(leg.audio) == sent
        assert [len(ulaw) for _, ulaw in leg.calls] == [chunk] * (len(sent) // chunk)
        stats = driver.stats()
        assert {
            key: stats[key] for key in ("frames_out", "bytes_out", "frames_in", "bytes_in")
        } == {
            "frames_out": 50,
            "bytes_out": 8000,
            "frames_in": 8000 // chunk,
            "bytes_in": 8000,
        }
        assert stats["dropped_out"] == 0
        await hang_up(driver, session)


async def test_odd_sized_frames_from_vapi_play_as_they_come(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    driver, session, leg = await open_call(vapi, http)
    sizes = [1, 7, 159, 161, 333, 4096]
    pieces = [bytes([size % 251]) * size for size in sizes]
    for piece in pieces:
        await session.send_audio(piece)
    await leg.wait_for(lambda: len(leg.calls) >= len(sizes))
    assert leg.calls == [("play", piece) for piece in pieces]
    await hang_up(driver, session)


async def test_a_greeting_plays_before_the_caller_says_anything(http: httpx.AsyncClient) -> None:
    greeting = bytes(range(256)) * 10
    async with FakeVapi(greeting=greeting, greeting_chunk=800) as fake:
        driver, session, leg = await open_call(fake, http)
        await leg.wait_for(lambda: len(leg.audio) >= len(greeting))
        assert bytes(leg.audio) == greeting
        await hang_up(driver, session)


# -- barge-in and control messages -----------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"type": "user-interrupted", "turnId": "t-1"},
        {"type": "speech-update", "status": "started", "role": "user", "turn": 1},
    ],
)
async def test_barge_in_flushes_the_queued_audio(
    vapi: FakeVapi, http: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    driver, session, leg = await open_call(vapi, http)
    await session.send_audio(b"\x11" * 1600, chunk=320)
    await session.send_json(message)
    await session.send_audio(b"\x22" * 320)  # the answer to the interruption
    await leg.wait_for(lambda: len(leg.audio) >= 1920)
    assert leg.kinds() == ["play"] * 5 + ["clear", "play"]
    assert bytes(leg.cleared) == b"\x11" * 1600
    assert bytes(leg.queued) == b"\x22" * 320
    assert driver.stats()["barge_ins"] == 1
    await hang_up(driver, session)


async def test_barge_in_on_a_trigger_after_caller_audio(http: httpx.AsyncClient) -> None:
    async with FakeVapi(greeting=b"\x33" * 800, barge_in_after_bytes=480) as fake:
        driver, session, leg = await open_call(fake, http)
        await leg.wait_for(lambda: len(leg.audio) >= 800)
        for frame in FRAMES[:3]:
            driver.send_audio(frame)
        await leg.wait_for(lambda: leg.kinds().count("clear") >= 2)
        assert bytes(leg.cleared) == b"\x33" * 800  # the second clear found nothing queued
        assert driver.stats()["barge_ins"] == 2
        await hang_up(driver, session)


async def test_assistant_speech_and_noise_do_not_clear_and_are_not_logged(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeVapi(noise=True, echo=True) as fake:
        with caplog.at_level(logging.INFO, logger="agera.drivers.vapi"):
            driver, session, leg = await open_call(fake, http)
            await session.speech_update("assistant", "started")
            await session.speech_update("user", "stopped")
            for frame in FRAMES:
                driver.send_audio(frame)
            await leg.wait_for(lambda: len(leg.audio) >= 8000)
            await asyncio.sleep(0.02)  # the transcript after the last echo
        assert "clear" not in leg.kinds()
        stats = driver.stats()
        assert stats["barge_ins"] == 0
        assert stats["ignored"] == stats["control_in"] >= 4  # status, conversation, 2 speech
        assert driver.protocol.counts["speech-update"] == 2
        assert [r for r in caplog.records if r.name == "agera.drivers.vapi"][1:] == []
        await hang_up(driver, session)


async def test_malformed_frames_are_logged_once_per_kind_and_the_call_goes_on(
    vapi: FakeVapi, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    driver, session, leg = await open_call(vapi, http)
    caplog.clear()  # the connect line is not what this test counts
    with caplog.at_level(logging.INFO, logger="agera.drivers.vapi"):
        await session.send_text("not json")
        await session.send_text("not json either")
        await session.send_text('["user-interrupted"]')
        await session.send_text('{"event": "x"}')
        await session.send_text('{"type": "brand-new"}')
        await session.send_text('{"type": "brand-new"}')
        await session.send_raw_bytes(b"")  # an empty audio frame: nothing to play
        await session.send_audio(b"\x55" * 160)
        await leg.wait_for(lambda: len(leg.calls) >= 1)
    assert leg.calls == [("play", b"\x55" * 160)]
    stats = driver.stats()
    assert (stats["ignored"], stats["malformed"], stats["control_in"]) == (6, 4, 6)
    suffix = "; later ones of this kind are only counted"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            f"{CALL} ignored a Vapi message (bad_json): invalid JSON (JSONDecodeError){suffix}",
        ),
        (logging.WARNING, f"{CALL} ignored a Vapi message (not_object): JSON list{suffix}"),
        (
            logging.WARNING,
            f"{CALL} ignored a Vapi message (missing_type): no string 'type'{suffix}",
        ),
        (
            logging.INFO,
            f"{CALL} ignored a Vapi message of unknown type 'brand-new'; later ones are only "
            "counted",
        ),
    ]
    await hang_up(driver, session)


async def test_dtmf_and_marks_send_nothing(vapi: FakeVapi, http: httpx.AsyncClient) -> None:
    driver, session, _ = await open_call(vapi, http)
    driver.send_dtmf("5")
    driver.marks_played([PlayedMark("m", 20)])
    driver.send_audio(FRAMES[0])
    await session.wait_audio(160)
    assert session.received[0].data == FRAMES[0]
    assert len(session.received) == 1
    assert driver.stats()["dtmf_not_sent"] == 1
    await hang_up(driver, session)


# -- ending ----------------------------------------------------------------------------------


async def test_stop_sends_end_call_then_closes_1000(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    driver, session, leg = await open_call(vapi, http)
    driver.send_audio(FRAMES[0])
    end = await hang_up(driver, session)
    assert end == BotEnd(by_bot=False, reason="caller hung up", code=1000)
    assert session.frames == [FRAMES[0]]
    assert [r.text for r in session.received if r.text is not None] == ['{"type":"end-call"}']
    assert (session.close_code, session.close_reason) == (1000, "caller hung up")
    assert driver.stats()["end_call_sent"] is True
    # After stop nothing more goes out, and anything late from Vapi reaches no one.
    driver.send_audio(FRAMES[1])
    driver.on_bytes(b"\x01" * 160)
    driver.on_text('{"type":"user-interrupted"}')
    assert leg.calls == []
    assert driver.stats()["frames_out"] == 1
    assert driver.stats()["late_in"] == 2
    await driver.stop("again")
    assert await driver.wait_closed() == end
    assert session.end_calls == 1


async def test_vapi_closing_on_end_call_is_still_our_stop(http: httpx.AsyncClient) -> None:
    async with FakeVapi(close_on_end_call=True) as fake:
        driver, session, _ = await open_call(fake, http)
        end = await hang_up(driver, session)
        assert end == BotEnd(by_bot=False, reason="caller hung up", code=1000)


@pytest.mark.parametrize("how", ["now", "timer", "after_audio"])
async def test_vapi_closing_ends_the_call_by_bot(http: httpx.AsyncClient, how: str) -> None:
    settings: dict[str, Any] = {
        "now": {},
        "timer": {"close_after_seconds": 0.05},
        "after_audio": {"close_after_bytes": 320},
    }[how]
    async with FakeVapi(**settings) as fake:
        driver, session, _ = await open_call(fake, http)
        if how == "now":
            await session.close(1000, "assistant ended the call")
        elif how == "after_audio":
            driver.send_audio(FRAMES[0])
            driver.send_audio(FRAMES[1])
        async with asyncio.timeout(5):
            end = await driver.wait_closed()
        assert end == BotEnd(
            by_bot=True, reason="Vapi closed the call (1000 assistant ended the call)", code=1000
        )
        await session.wait_closed()
        assert session.closed_by_fake
        # A stop after Vapi left sends nothing and changes nothing.
        await driver.stop("caller hung up")
        assert await driver.wait_closed() == end
        assert session.end_calls == 0


async def test_vapi_crashing_ends_the_call_by_bot(vapi: FakeVapi, http: httpx.AsyncClient) -> None:
    driver, session, _ = await open_call(vapi, http)
    session.abort()
    async with asyncio.timeout(5):
        end = await driver.wait_closed()
    assert (end.by_bot, end.code) == (True, 1006)
    assert end.reason.startswith("Vapi closed the call (1006 connection lost")


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "target", "message"),
    [
        (
            account(api_key=None),
            "vapi",
            "account acc-42 has no vapi.api_key: set it to connect calls to Vapi",
        ),
        (
            account(assistant_id=None),
            "vapi",
            "account acc-42 has no vapi.assistant_id: set it to connect calls to Vapi",
        ),
        (
            account(api_key=None, assistant_id=None),
            "vapi",
            "account acc-42 has no vapi.api_key and no vapi.assistant_id: set it to connect "
            "calls to Vapi",
        ),
        (
            None,
            "vapi&asst_9",
            "account acc-42 (not found) has no vapi.api_key: set it to connect calls to Vapi",
        ),
    ],
)
async def test_missing_credentials_are_named(
    vapi: FakeVapi, http: httpx.AsyncClient, found: Account | None, target: str, message: str
) -> None:
    error = await refused(vapi, http, found=found, target=target)
    assert error.step is ConnectStep.CREDENTIALS
    assert str(error) == message
    assert vapi.creates == []


async def test_the_assistant_from_the_target_needs_no_account_setting(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    leg = RecordingLeg()
    context = context_for(vapi, http, account(assistant_id=None))
    driver = await connect_vapi("vapi&asst_9", INFO, leg, 3.0, context=context)
    session = await vapi.next_session()
    assert vapi.creates[0].body["assistantId"] == "asst_9"
    await hang_up(driver, session)


async def test_a_non_vapi_target_is_refused(vapi: FakeVapi, http: httpx.AsyncClient) -> None:
    error = await refused(vapi, http, target="elevenlabs&agent_1")
    assert error.step is ConnectStep.TARGET


@pytest.mark.parametrize(
    ("status", "key", "message"),
    [
        (
            None,
            "sk-wrong-key-000",
            "Vapi create-call refused: HTTP 401, the API key was refused: Invalid Key. Hot tip, "
            "you may be using the private key.",
        ),
        (
            403,
            API_KEY,
            "Vapi create-call refused: HTTP 403, the API key was refused: forced by the test",
        ),
        (
            404,
            API_KEY,
            "Vapi create-call refused: HTTP 404, not found (is the assistant id right?): forced "
            "by the test",
        ),
        (500, API_KEY, "Vapi create-call refused: HTTP 500: forced by the test"),
        (503, API_KEY, "Vapi create-call refused: HTTP 503: forced by the test"),
    ],
)
async def test_a_refused_create_call_names_the_status_never_the_key(
    vapi: FakeVapi,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    status: int | None,
    key: str,
    message: str,
) -> None:
    vapi.rest_status = status
    with caplog.at_level(logging.DEBUG, logger="agera"):
        error = await refused(vapi, http, found=account(api_key=key))
    assert error.step is ConnectStep.REST
    assert str(error) == message
    assert vapi.creates[0].status == (status or 401)
    assert vapi.sessions == []
    assert key not in str(error)
    no_secret_in(caplog.records, key)


async def test_an_unusable_response_is_a_rest_failure(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    vapi.rest_body = json.dumps({"id": "c1", "status": "queued"}).encode()
    error = await refused(vapi, http)
    assert error.step is ConnectStep.REST
    assert str(error) == "create-call response for call c1 has no websocketCallUrl"


async def test_slow_rest_is_a_timeout_within_the_budget(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    vapi.rest_delay = 10.0
    loop = asyncio.get_running_loop()
    began = loop.time()
    error = await refused(vapi, http, seconds=0.3)
    assert loop.time() - began < 2.0  # a bound, not a measurement
    assert error.step is ConnectStep.TIMEOUT
    assert str(error) == "Vapi create-call did not answer within 0.3 s"


async def test_slow_upgrade_is_a_timeout_and_names_no_url(
    vapi: FakeVapi, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    vapi.upgrade_delay = 10.0
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.DEBUG, logger="agera"):
        error = await refused(vapi, http, seconds=0.5)
    assert loop.time() - began < 2.0  # a bound, not a measurement
    assert error.step is ConnectStep.TIMEOUT
    [call_id] = vapi.calls
    assert str(error).startswith(f"Vapi call {call_id}: the socket did not answer within ")
    assert "/transport" not in str(error)
    no_secret_in(caplog.records, API_KEY, vapi.socket_url(call_id))


async def test_an_unknown_call_id_on_upgrade_is_a_handshake_failure(
    vapi: FakeVapi, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    vapi.rest_body = json.dumps(
        {"id": "not-a-call", "transport": {"websocketCallUrl": vapi.socket_url("not-a-call")}}
    ).encode()
    with caplog.at_level(logging.DEBUG, logger="agera"):
        error = await refused(vapi, http)
    assert error.step is ConnectStep.HANDSHAKE
    assert str(error) == "Vapi call not-a-call: the socket refused the WebSocket upgrade: HTTP 404"
    assert [upgrade.status for upgrade in vapi.upgrades] == [404]
    no_secret_in(caplog.records, API_KEY, "/not-a-call/transport")


async def test_an_api_that_is_not_there_is_a_connect_failure(http: httpx.AsyncClient) -> None:
    async with FakeVapi() as fake:
        pass  # the port is free again
    error = await refused(fake, http)
    assert error.step is ConnectStep.CONNECT
    assert str(error).startswith(f"Vapi create-call at {fake.url}/call: cannot connect")


async def test_tls_to_a_clear_text_api_is_a_tls_failure(
    vapi: FakeVapi, http: httpx.AsyncClient
) -> None:
    error = await refused(vapi, http, base=f"https://127.0.0.1:{vapi.port}")
    assert error.step is ConnectStep.TLS
    assert str(error).startswith(f"Vapi create-call at https://127.0.0.1:{vapi.port}/call: TLS")


def _chained(error: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except httpx.HTTPError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "step"),
    [
        (_chained(httpx.ConnectError("x"), socket.gaierror(-2, "Name unknown")), "dns"),
        (_chained(httpx.ConnectError("x"), ssl.SSLCertVerificationError(1, "bad")), "tls"),
        (_chained(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")), "connect"),
        (httpx.ConnectTimeout("x"), "timeout"),
        (httpx.ReadTimeout("x"), "timeout"),
        (httpx.ReadError("x"), "connect"),
        (httpx.RemoteProtocolError("x"), "rest"),
    ],
)
def test_http_errors_map_to_connect_steps(error: httpx.HTTPError, step: str) -> None:
    assert http_failure(error)[0] == step
