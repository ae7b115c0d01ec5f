"""Certify FakeTwilioRest against the official Twilio Python library (dev extra ``twilio``).

Why: the node's `TwilioApi` is tested against the fake, so the fake must speak what Twilio
speaks. The official client is the other real client of the Calls resource; pointed at the fake
(its ``api`` domain's ``base_url``), its own requests must be accepted (basic auth, form-encoded
updates, ``Accept`` and ``Content-Type``) and the fake's answers parsed by it: the call resource
into a ``CallInstance``, and errors into a ``TwilioRestException`` with Twilio's status, code and
message.

The library is imported unconditionally: it is in the dev extras with pytest itself, so a
missing library is an error here, never a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from tests.support.fake_twilio_rest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilioRest,
    new_call_sid,
)

TWIML = "<Response><Dial><Number>+15005550009</Number></Dial></Response>"


@pytest.fixture
def fake() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as server:
        server.add_account()
        yield server


@pytest.fixture
def make_client(fake: FakeTwilioRest) -> Iterator[Callable[[str, str], Client]]:
    """``make_client(sid, token)``: the official client with its API domain on the fake."""
    made: list[TwilioHttpClient] = []

    def build(account_sid: str, auth_token: str) -> Client:
        http = TwilioHttpClient(timeout=5)
        made.append(http)
        client = Client(account_sid, auth_token, http_client=http, environment={})
        client.api.base_url = fake.base_url
        return client

    yield build
    for http in made:
        http.session.close()  # type: ignore[union-attr]


def test_the_client_fetches_a_call(fake: FakeTwilioRest, make_client) -> None:
    call = fake.add_call(from_="+15005550006", to="+15005550001", direction="inbound")
    fetched = make_client(ACCOUNT_SID, AUTH_TOKEN).calls(call.sid).fetch()
    assert (fetched.sid, fetched.account_sid, fetched.status) == (
        call.sid,
        ACCOUNT_SID,
        "in-progress",
    )
    assert (fetched._from, fetched.to, fetched.direction) == (
        "+15005550006",
        "+15005550001",
        "inbound",
    )
    assert fetched.date_created is not None and fetched.date_created.tzinfo is not None
    assert fetched.end_time is None
    assert fetched.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"
    [request] = fake.requests
    assert (request.method, request.status) == ("GET", 200)
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"
    assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)


def test_the_client_updates_a_call_with_twiml_then_completes_it(
    fake: FakeTwilioRest, make_client
) -> None:
    call = fake.add_call()
    client = make_client(ACCOUNT_SID, AUTH_TOKEN)
    redirected = client.calls(call.sid).update(twiml=TWIML)
    assert redirected.status == "in-progress"
    assert call.twiml == [TWIML]
    completed = client.calls(call.sid).update(status="completed")
    assert completed.status == "completed" and completed.end_time is not None
    assert call.status == "completed"
    assert client.calls(call.sid).fetch().status == "completed"
    twiml_update, status_update, _ = fake.requests
    for request in (twiml_update, status_update):
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert request.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert twiml_update.form() == {"Twiml": TWIML}
    assert status_update.form() == {"Status": "completed"}


def test_the_client_reports_a_bad_token_as_twilio_does(fake: FakeTwilioRest, make_client) -> None:
    call = fake.add_call()
    with pytest.raises(TwilioRestException) as caught:
        make_client(ACCOUNT_SID, "not-the-token").calls(call.sid).fetch()
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert "Authenticate" in caught.value.msg
    with pytest.raises(TwilioRestException) as caught:
        make_client(ACCOUNT_SID, "not-the-token").calls(call.sid).update(status="completed")
    assert caught.value.status == 401
    assert call.status == "in-progress"


def test_the_client_reports_an_unknown_call_and_a_refused_redirect(
    fake: FakeTwilioRest, make_client
) -> None:
    client = make_client(ACCOUNT_SID, AUTH_TOKEN)
    with pytest.raises(TwilioRestException) as caught:
        client.calls(new_call_sid()).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)
    ended = fake.add_call(status="completed")
    with pytest.raises(TwilioRestException) as caught:
        client.calls(ended.sid).update(twiml=TWIML)
    assert (caught.value.status, caught.value.code) == (400, 21220)
    assert ended.twiml == []


def test_another_accounts_call_is_not_found(fake: FakeTwilioRest, make_client) -> None:
    other_sid = "AC" + "a1" * 16
    fake.add_account(other_sid, "other-token")
    theirs = fake.add_call(account_sid=other_sid)
    with pytest.raises(TwilioRestException) as caught:
        make_client(ACCOUNT_SID, AUTH_TOKEN).calls(theirs.sid).fetch()
    assert caught.value.status == 404
    assert make_client(other_sid, "other-token").calls(theirs.sid).fetch().sid == theirs.sid
