"""CloudonixApi and TwilioApi against the loopback fakes: checks, hangups, transfers, failures.

Every failure is checked for what it says (provider, step, status) and for what it must not say:
the token, the session id, the URL. The Twilio fake is certified against the official client
(tests/support/test_fake_twilio_rest.py), so passing here means speaking Twilio's API.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from edge_media.agent_stream.provider_api import (
    CloudonixApi,
    ProviderCallFailed,
    ProviderCheckFailed,
    ProviderError,
    TwilioApi,
    dial_document,
)
from tests.support.fake_cloudonix import DOMAIN, TOKEN, FakeCloudonix
from tests.support.fake_twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest

pytestmark = pytest.mark.anyio

SESSION = "a1b2c3d4e5f6-session-7788"
NUMBER = "+15005550009"
SIP = "sip:support@pbx.example.com;transport=tls?X-Ref=1&X-Why=agent"
SHORT_TIMEOUT = 0.3


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        yield client


@pytest.fixture
def cloudonix() -> Iterator[FakeCloudonix]:
    with FakeCloudonix() as fake:
        fake.add_domain()
        fake.add_session(SESSION)
        yield fake


@pytest.fixture
def twilio() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as fake:
        fake.add_account()
        yield fake


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on: the port was bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_says_nothing_secret(error: ProviderError, *secrets: str) -> None:
    """No secret in the text, and no chained library exception whose text could hold one."""
    for text in (str(error), repr(error), error.reason):
        for secret in secrets:
            assert secret not in text, (secret, text)
        assert "http://" not in text and "https://" not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# -- Cloudonix ----------------------------------------------------------------------------------


async def test_cloudonix_validates_a_live_session(http, cloudonix: FakeCloudonix) -> None:
    await CloudonixApi(http, cloudonix.base_url).validate_session(DOMAIN, SESSION, TOKEN)
    [request] = cloudonix.requests
    assert (request.method, request.status) == ("GET", 200)
    assert request.path == f"/customers/self/domains/{DOMAIN}/sessions/{SESSION}"
    assert request.authorization == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("token", "session", "status"),
    [("wrong-token-0000", SESSION, 401), (TOKEN, "unknown-session-1", 404)],
    ids=["bad-token", "unknown-session"],
)
async def test_cloudonix_check_failures_name_the_status(
    http, cloudonix: FakeCloudonix, token: str, session: str, status: int
) -> None:
    api = CloudonixApi(http, cloudonix.base_url)
    with pytest.raises(ProviderCheckFailed) as caught:
        await api.validate_session(DOMAIN, session, token)
    assert caught.value.status == status
    assert str(caught.value) == f"cloudonix session check: HTTP {status}"
    assert_says_nothing_secret(caught.value, TOKEN, token, session)
    assert [r.status for r in cloudonix.requests] == [status]


async def test_cloudonix_check_fails_on_a_server_error(http, cloudonix: FakeCloudonix) -> None:
    cloudonix.force_status = 503
    with pytest.raises(ProviderCheckFailed) as caught:
        await CloudonixApi(http, cloudonix.base_url).validate_session(DOMAIN, SESSION, TOKEN)
    assert caught.value.status == 503
    assert_says_nothing_secret(caught.value, TOKEN, SESSION)


async def test_cloudonix_down_is_a_connection_failure(http, closed_port_url: str) -> None:
    with pytest.raises(ProviderCheckFailed) as caught:
        await CloudonixApi(http, closed_port_url).validate_session(DOMAIN, SESSION, TOKEN)
    assert str(caught.value) == "cloudonix session check: connection failed"
    assert caught.value.status is None
    assert_says_nothing_secret(caught.value, TOKEN, SESSION, closed_port_url)


async def test_cloudonix_slow_answer_is_a_timeout(http, cloudonix: FakeCloudonix) -> None:
    cloudonix.delay = 5.0  # released by the fixture's stop
    api = CloudonixApi(http, cloudonix.base_url, timeout=SHORT_TIMEOUT)
    with pytest.raises(ProviderCheckFailed) as caught:
        await api.validate_session(DOMAIN, SESSION, TOKEN)
    assert str(caught.value) == "cloudonix session check: timeout"
    assert_says_nothing_secret(caught.value, TOKEN, SESSION)


async def test_cloudonix_hangup_ends_the_session_with_the_stored_token(
    http, cloudonix: FakeCloudonix
) -> None:
    api = CloudonixApi(http, cloudonix.base_url)
    await api.hangup(DOMAIN, SESSION, TOKEN)
    assert cloudonix.ended(SESSION) and not cloudonix.is_live(SESSION)
    [request] = cloudonix.requests
    assert (request.method, request.status) == ("DELETE", 204)
    assert request.path == f"/customers/self/domains/{DOMAIN}/sessions/{SESSION}"
    assert request.authorization == f"Bearer {TOKEN}"
    await api.hangup(DOMAIN, SESSION, TOKEN)  # already gone: 404 is what a hangup wants
    assert [r.status for r in cloudonix.requests] == [204, 404]
    with pytest.raises(ProviderCheckFailed):
        await api.validate_session(DOMAIN, SESSION, TOKEN)


@pytest.mark.parametrize(("token", "status"), [("wrong-token-0000", 401), (TOKEN, 500)])
async def test_cloudonix_hangup_failures(
    http, cloudonix: FakeCloudonix, token: str, status: int
) -> None:
    cloudonix.force_status = 500 if status == 500 else None
    with pytest.raises(ProviderCallFailed) as caught:
        await CloudonixApi(http, cloudonix.base_url).hangup(DOMAIN, SESSION, token)
    assert str(caught.value) == f"cloudonix hangup: HTTP {status}"
    assert_says_nothing_secret(caught.value, TOKEN, token, SESSION)
    assert cloudonix.is_live(SESSION)


@pytest.mark.parametrize(
    ("destination", "cxml"),
    [
        (NUMBER, f"<Response><Dial><Number>{NUMBER}</Number></Dial></Response>"),
        (
            SIP,
            "<Response><Dial><Sip>sip:support@pbx.example.com;transport=tls?X-Ref=1&amp;"
            "X-Why=agent</Sip></Dial></Response>",
        ),
    ],
    ids=["number", "sip"],
)
async def test_cloudonix_transfer_posts_the_cxml(
    http, cloudonix: FakeCloudonix, destination: str, cxml: str
) -> None:
    await CloudonixApi(http, cloudonix.base_url).transfer(DOMAIN, SESSION, TOKEN, destination)
    assert cloudonix.applications == {(DOMAIN, SESSION): [cxml]}
    [request] = cloudonix.requests
    assert (request.method, request.status) == ("POST", 200)
    assert request.path == f"/calls/{DOMAIN}/sessions/{SESSION}/application"
    assert request.authorization == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {"cxml": cxml}


async def test_cloudonix_transfer_of_an_ended_session_fails(http, cloudonix: FakeCloudonix) -> None:
    api = CloudonixApi(http, cloudonix.base_url)
    await api.hangup(DOMAIN, SESSION, TOKEN)
    with pytest.raises(ProviderCallFailed) as caught:
        await api.transfer(DOMAIN, SESSION, TOKEN, NUMBER)
    assert str(caught.value) == "cloudonix transfer: HTTP 404"
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("domain", "session", "token"),
    [
        ("acme.cloudonix.net/../x", SESSION, TOKEN),
        ("acme.cloudonix.net?x=1", SESSION, TOKEN),
        ("acme..net", SESSION, TOKEN),
        ("", SESSION, TOKEN),
        (DOMAIN, "../admin", TOKEN),
        (DOMAIN, "..", TOKEN),
        (DOMAIN, "a/b", TOKEN),
        (DOMAIN, "abc?x=1", TOKEN),
        (DOMAIN, "abc#x", TOKEN),
        (DOMAIN, "abc\n", TOKEN),
        (DOMAIN, "a%2Fb", TOKEN),
        (DOMAIN, "", TOKEN),
        (DOMAIN, SESSION, TOKEN + "\r\nX-Injected: 1"),
        (DOMAIN, SESSION, ""),
    ],
)
async def test_cloudonix_bad_ids_are_refused_before_any_request(
    http, cloudonix: FakeCloudonix, domain: str, session: str, token: str
) -> None:
    api = CloudonixApi(http, cloudonix.base_url)
    with pytest.raises(ProviderCheckFailed) as check:
        await api.validate_session(domain, session, token)
    with pytest.raises(ProviderCallFailed):
        await api.hangup(domain, session, token)
    with pytest.raises(ProviderCallFailed):
        await api.transfer(domain, session, token, NUMBER)
    assert "is not valid" in str(check.value)
    assert_says_nothing_secret(check.value, TOKEN)
    assert cloudonix.requests == []


@pytest.mark.parametrize("destination", ["15005550009", "+0123", "tel:+15005550009", "", "sip:"])
async def test_transfer_destination_must_be_a_number_or_a_sip_uri(
    http, cloudonix: FakeCloudonix, twilio: FakeTwilioRest, destination: str
) -> None:
    with pytest.raises(ProviderCallFailed, match=r"neither an E\.164 number nor a SIP URI"):
        await CloudonixApi(http, cloudonix.base_url).transfer(DOMAIN, SESSION, TOKEN, destination)
    call = twilio.add_call()
    with pytest.raises(ProviderCallFailed, match=r"neither an E\.164 number nor a SIP URI"):
        await TwilioApi(http, twilio.base_url).transfer(
            ACCOUNT_SID, AUTH_TOKEN, call.sid, destination
        )
    assert cloudonix.requests == [] and twilio.requests == []


def test_dial_document() -> None:
    assert dial_document("+442071838750") == (
        "<Response><Dial><Number>+442071838750</Number></Dial></Response>"
    )
    assert dial_document("sips:a@b.example.com") == (
        "<Response><Dial><Sip>sips:a@b.example.com</Sip></Dial></Response>"
    )
    for bad in ("sip:a@b.example.com<x", 'sip:"a"@b', "sip:a b@c", "sip:a@b\x00"):
        with pytest.raises(ValueError):
            dial_document(bad)


# -- Twilio -------------------------------------------------------------------------------------


async def test_twilio_check_accepts_an_in_progress_call(http, twilio: FakeTwilioRest) -> None:
    call = twilio.add_call(from_="+15005550006")
    fetched = await TwilioApi(http, twilio.base_url).check_in_progress(
        ACCOUNT_SID, AUTH_TOKEN, call.sid
    )
    assert (fetched["sid"], fetched["status"], fetched["from"]) == (
        call.sid,
        "in-progress",
        "+15005550006",
    )
    [request] = twilio.requests
    assert (request.method, request.status) == ("GET", 200)
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"
    assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)


@pytest.mark.parametrize("status", ["completed", "ringing", "queued", "canceled"])
async def test_twilio_check_refuses_a_call_not_in_progress(
    http, twilio: FakeTwilioRest, status: str
) -> None:
    call = twilio.add_call(status=status)
    api = TwilioApi(http, twilio.base_url)
    assert (await api.fetch_call(ACCOUNT_SID, AUTH_TOKEN, call.sid))["status"] == status
    with pytest.raises(ProviderCheckFailed) as caught:
        await api.check_in_progress(ACCOUNT_SID, AUTH_TOKEN, call.sid)
    assert str(caught.value) == f"twilio call check: call is {status}, not in-progress"
    assert_says_nothing_secret(caught.value, AUTH_TOKEN)


async def test_twilio_check_failures_name_the_status(http, twilio: FakeTwilioRest) -> None:
    call = twilio.add_call()
    api = TwilioApi(http, twilio.base_url)
    with pytest.raises(ProviderCheckFailed) as bad_token:
        await api.check_in_progress(ACCOUNT_SID, "wrong-token-0000", call.sid)
    assert str(bad_token.value) == "twilio call check: HTTP 401"
    assert_says_nothing_secret(bad_token.value, AUTH_TOKEN, "wrong-token-0000")
    with pytest.raises(ProviderCheckFailed) as unknown:
        await api.check_in_progress(ACCOUNT_SID, AUTH_TOKEN, "CA" + "0" * 32)
    assert (str(unknown.value), unknown.value.status) == ("twilio call check: HTTP 404", 404)
    assert [r.status for r in twilio.requests] == [401, 404]


async def test_twilio_down_or_slow(http, twilio: FakeTwilioRest, closed_port_url: str) -> None:
    call = twilio.add_call()
    with pytest.raises(ProviderCallFailed) as down:
        await TwilioApi(http, closed_port_url).hangup(ACCOUNT_SID, AUTH_TOKEN, call.sid)
    assert str(down.value) == "twilio hangup: connection failed"
    assert_says_nothing_secret(down.value, AUTH_TOKEN, call.sid)
    twilio.delay = 5.0
    slow = TwilioApi(http, twilio.base_url, timeout=SHORT_TIMEOUT)
    with pytest.raises(ProviderCheckFailed) as timed_out:
        await slow.check_in_progress(ACCOUNT_SID, AUTH_TOKEN, call.sid)
    assert str(timed_out.value) == "twilio call check: timeout"


async def test_twilio_hangup_completes_the_call(http, twilio: FakeTwilioRest) -> None:
    call = twilio.add_call()
    await TwilioApi(http, twilio.base_url).hangup(ACCOUNT_SID, AUTH_TOKEN, call.sid)
    assert call.status == "completed"
    [request] = twilio.requests
    assert (request.method, request.status) == ("POST", 200)
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"
    assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form() == {"Status": "completed"}


async def test_twilio_hangup_with_a_bad_token_fails(http, twilio: FakeTwilioRest) -> None:
    call = twilio.add_call()
    with pytest.raises(ProviderCallFailed) as caught:
        await TwilioApi(http, twilio.base_url).hangup(ACCOUNT_SID, "wrong-token-0000", call.sid)
    assert (str(caught.value), caught.value.status) == ("twilio hangup: HTTP 401", 401)
    assert_says_nothing_secret(caught.value, AUTH_TOKEN, "wrong-token-0000")
    assert call.status == "in-progress"


@pytest.mark.parametrize(
    ("destination", "twiml"),
    [
        (NUMBER, f"<Response><Dial><Number>{NUMBER}</Number></Dial></Response>"),
        (
            SIP,
            "<Response><Dial><Sip>sip:support@pbx.example.com;transport=tls?X-Ref=1&amp;"
            "X-Why=agent</Sip></Dial></Response>",
        ),
    ],
    ids=["number", "sip"],
)
async def test_twilio_transfer_posts_the_twiml(
    http, twilio: FakeTwilioRest, destination: str, twiml: str
) -> None:
    call = twilio.add_call()
    await TwilioApi(http, twilio.base_url).transfer(ACCOUNT_SID, AUTH_TOKEN, call.sid, destination)
    assert call.twiml == [twiml] and call.status == "in-progress"
    [request] = twilio.requests
    assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert request.form() == {"Twiml": twiml}


async def test_twilio_transfer_of_an_ended_call_fails(http, twilio: FakeTwilioRest) -> None:
    call = twilio.add_call(status="completed")
    with pytest.raises(ProviderCallFailed) as caught:
        await TwilioApi(http, twilio.base_url).transfer(ACCOUNT_SID, AUTH_TOKEN, call.sid, NUMBER)
    assert (str(caught.value), caught.value.status) == ("twilio transfer: HTTP 400", 400)


@pytest.mark.parametrize(
    ("account_sid", "call_sid", "token"),
    [
        (ACCOUNT_SID, "CA123", AUTH_TOKEN),
        (ACCOUNT_SID, "CA" + "g" * 32, AUTH_TOKEN),
        (ACCOUNT_SID, "CA" + "0" * 32 + "/../../x", AUTH_TOKEN),
        (ACCOUNT_SID, "CA" + "0" * 32 + "\n", AUTH_TOKEN),
        (ACCOUNT_SID, "XX" + "0" * 32, AUTH_TOKEN),
        ("AC" + "0" * 31, "CA" + "0" * 32, AUTH_TOKEN),
        ("AC" + "0" * 32 + "/Calls", "CA" + "0" * 32, AUTH_TOKEN),
        (ACCOUNT_SID, "CA" + "0" * 32, "token with spaces"),
    ],
)
async def test_twilio_bad_ids_are_refused_before_any_request(
    http, twilio: FakeTwilioRest, account_sid: str, call_sid: str, token: str
) -> None:
    api = TwilioApi(http, twilio.base_url)
    with pytest.raises(ProviderCheckFailed) as check:
        await api.check_in_progress(account_sid, token, call_sid)
    with pytest.raises(ProviderCheckFailed):
        await api.fetch_call(account_sid, token, call_sid)
    with pytest.raises(ProviderCallFailed):
        await api.hangup(account_sid, token, call_sid)
    with pytest.raises(ProviderCallFailed):
        await api.transfer(account_sid, token, call_sid, NUMBER)
    assert "is not valid" in str(check.value)
    assert twilio.requests == []


async def test_defaults_point_at_the_real_providers(http) -> None:
    """The production base URLs, and that no request is made just by building a client."""
    assert CloudonixApi(http)._base == "https://api.cloudonix.io"
    assert TwilioApi(http)._base == "https://api.twilio.com"
