"""FakeTwilioRest: Twilio's 2010-04-01 Calls resource (fetch and update), on a loopback port.

Why a fake: the node is a Twilio REST *client*, like the official ``twilio`` library, so neither
can test the other; both are tested against this server, built from Twilio's published API and
certified once against the official client (tests/support/test_fake_twilio_rest.py). It serves
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``:

- ``GET``: the call resource with Twilio's documented fields (``sid``, ``account_sid``,
  ``status``, ``from``, ``to``, ``direction``, RFC 2822 dates, ``uri``, ...);
- ``POST`` (form-encoded update): ``Status=completed`` ends the call (``canceled`` ends one that
  is queued or ringing), ``Twiml=...`` is recorded on the call (Twilio's 400 / 21220 when the call
  is not in progress), answered with the updated resource;
- HTTP basic auth with the account SID and its auth token, checked against the account in the
  path: otherwise 401 with Twilio's JSON error (``code`` 20003, ``message`` "Authenticate") and
  ``WWW-Authenticate``; an unknown call (or path) is Twilio's 404 (``code`` 20404).

Everything received is recorded in `FakeTwilioRest.requests` (method, path, basic-auth pair,
form), with the status answered. ``force_status`` answers every request with one status;
``delay`` holds every answer (for timeouts). API-key (``SK...``) auth is not modelled.

A stdlib ``ThreadingHTTPServer`` on its own thread, for the same reason as FakeCloudonix: the
official client blocks (``requests``) while the node's client is async, and both must reach it.
Use ``with FakeTwilioRest() as fake:``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "ACCOUNT_SID",
    "AUTH_TOKEN",
    "FakeTwilioCall",
    "FakeTwilioRest",
    "TwilioRequest",
    "new_call_sid",
]

HOST = "127.0.0.1"
ACCOUNT_SID = "AC" + "5f" * 16
AUTH_TOKEN = "twilio-test-auth-token-3c8e1a"  # a made-up token; tests check it never leaks
API_VERSION = "2010-04-01"
BODY_LIMIT = 64 * 1024
SOCKET_TIMEOUT = 5.0
JOIN_SECONDS = 5.0
POLL_SECONDS = 0.02  # how often the server thread looks for `stop` (the stdlib's is 0.5 s)
ENDED = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class TwilioRequest:
    """One request as received, and the status the fake answered."""

    method: str
    path: str  # path and query, as sent
    basic_auth: tuple[str, str] | None  # the decoded (username, password), if any
    headers: dict[str, str]
    body: bytes
    status: int

    def form(self) -> dict[str, str]:
        """The form-encoded body, one value per name."""
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass(slots=True)
class FakeTwilioCall:
    sid: str
    account_sid: str
    status: str = "in-progress"
    from_: str = "+15005550006"
    to: str = "+15005550001"
    direction: str = "inbound"
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_time: datetime | None = None
    twiml: list[str] = field(default_factory=list)  # every Twiml= update, in order

    def resource(self) -> dict[str, Any]:
        """The call as Twilio's API renders it."""
        started = self.status not in ("queued", "ringing")
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        duration = (
            str(int((self.end_time - self.date_created).total_seconds()))
            if self.end_time is not None
            else None
        )
        return {
            "sid": self.sid,
            "date_created": format_datetime(self.date_created),
            "date_updated": format_datetime(self.end_time or self.date_created),
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": format_datetime(self.date_created) if started else None,
            "end_time": format_datetime(self.end_time) if self.end_time else None,
            "duration": duration,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": f"{base}.json",
            "subresource_uris": {
                "notifications": f"{base}/Notifications.json",
                "recordings": f"{base}/Recordings.json",
                "streams": f"{base}/Streams.json",
            },
        }


class FakeTwilioRest:
    """Accounts with one auth token each, and their calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self.calls: dict[str, FakeTwilioCall] = {}
        self.requests: list[TwilioRequest] = []
        self.force_status: int | None = None
        self.delay = 0.0
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- state a test sets up and reads ---------------------------------------------------------

    def add_account(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        with self._lock:
            self._tokens[account_sid] = auth_token

    def add_call(
        self,
        call_sid: str | None = None,
        *,
        account_sid: str = ACCOUNT_SID,
        status: str = "in-progress",
        from_: str = "+15005550006",
        to: str = "+15005550001",
        direction: str = "inbound",
    ) -> FakeTwilioCall:
        """A call of ``account_sid`` (added with `AUTH_TOKEN` if new), with a fresh SID unless
        one is given."""
        with self._lock:
            self._tokens.setdefault(account_sid, AUTH_TOKEN)
            call = FakeTwilioCall(
                call_sid or new_call_sid(), account_sid, status, from_, to, direction
            )
            self.calls[call.sid] = call
        return call

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- lifetime ----------------------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._released.clear()
        self._server = _Server((HOST, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(POLL_SECONDS,),
            name="fake-twilio-rest",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)
            self._thread = None

    def __enter__(self) -> FakeTwilioRest:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- answering -----------------------------------------------------------------------------

    def _answer(
        self, method: str, path: str, auth: tuple[str, str] | None, body: bytes
    ) -> tuple[int, Any]:
        if self.delay:
            self._released.wait(self.delay)
        if self.force_status is not None:
            return self.force_status, _error(self.force_status, 20500, "Internal Server Error")
        route = urlsplit(path).path
        parts = [unquote(p) for p in route.split("/")[1:]]
        if not (
            len(parts) == 5
            and (parts[0], parts[1], parts[3]) == (API_VERSION, "Accounts", "Calls")
            and parts[4].endswith(".json")
            and method in ("GET", "POST")
        ):
            return 404, _not_found(route)
        account_sid, name = parts[2], parts[4]
        with self._lock:
            if auth is None or auth[0] != account_sid or self._tokens.get(account_sid) != auth[1]:
                return 401, _error(401, 20003, "Authenticate")
            call = self.calls.get(name.removesuffix(".json"))
            if call is None or call.account_sid != account_sid:
                return 404, _not_found(route)
            if method == "GET":
                return 200, call.resource()
            return self._update(call, body)

    def _update(self, call: FakeTwilioCall, body: bytes) -> tuple[int, Any]:
        form = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        status = form.get("Status")
        if status is not None:
            if status not in ("completed", "canceled"):
                return 400, _error(400, 21218, f"Invalid value for Status: {status}")
            if call.status not in ENDED and (
                status == "completed" or call.status in ("queued", "ringing")
            ):
                call.status = status
                call.end_time = datetime.now(UTC)
        if "Twiml" in form:
            if call.status != "in-progress":
                return 400, _error(400, 21220, "Call is not in-progress. Cannot redirect.")
            call.twiml.append(form["Twiml"])
        return 200, call.resource()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a timed-out test client) is not an error of the fake."""


class _Handler(BaseHTTPRequestHandler):
    owner: FakeTwilioRest
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `FakeTwilioRest.requests`."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, BODY_LIMIT)) if length else b""
        auth = _basic_auth(self.headers.get("Authorization"))
        status, payload = self.owner._answer(self.command, self.path, auth, body)
        with self.owner._lock:
            self.owner.requests.append(
                TwilioRequest(self.command, self.path, auth, dict(self.headers), body, status)
            )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _handle


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's REST error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _not_found(route: str) -> dict[str, Any]:
    return _error(404, 20404, f"The requested resource {route} was not found")
