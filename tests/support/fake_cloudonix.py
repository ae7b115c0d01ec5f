"""FakeCloudonix: the few Cloudonix REST calls an agent stream makes, on a loopback port.

Why a fake: the node is a Cloudonix REST *client*; its checks, hangups and transfers are tested
against this server, which answers as Cloudonix's published API does for these calls:

- ``GET /customers/self/domains/{domain}/sessions/{session}``: 200 with the session when the
  bearer token is the domain's and the session is live; 401 for a missing or wrong token (or an
  unknown domain); 404 for an unknown or ended session;
- ``DELETE`` on the same path: ends a live session (204), 404 when it is unknown or ended;
- ``POST /calls/{domain}/sessions/{session}/application`` with JSON ``{"cxml": "..."}``: records
  the document for the session (200), 400 when the body has no ``cxml``.

Everything received is recorded in `FakeCloudonix.requests` (method, path, Authorization header,
body, the status answered), so a test asserts on what the node sent. ``force_status`` answers
every request with one status; ``delay`` holds every answer (for timeouts). Cloudonix ships no
official Python client to certify this fake against, so the shapes above are the contract.

Why a stdlib ``ThreadingHTTPServer`` on its own thread rather than a server on the test's event
loop: the same fake then serves async clients (the node's httpx) and blocking ones alike, and a
test needs no loop to set it up. Use ``with FakeCloudonix() as fake:``; `stop` releases any held
answer, closes the socket and joins the server thread.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["DOMAIN", "TOKEN", "CloudonixRequest", "FakeCloudonix"]

HOST = "127.0.0.1"
DOMAIN = "acme.cloudonix.net"
TOKEN = "XI-cloudonix-test-token-5b2e9d"  # a made-up token; tests check it never leaks
BODY_LIMIT = 64 * 1024
SOCKET_TIMEOUT = 5.0  # seconds a client may take to send its request
JOIN_SECONDS = 5.0
POLL_SECONDS = 0.02  # how often the server thread looks for `stop` (the stdlib's is 0.5 s)


@dataclass(frozen=True, slots=True)
class CloudonixRequest:
    """One request as received, and the status the fake answered."""

    method: str
    path: str  # path and query, as sent
    authorization: str | None
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Domain:
    token: str
    live: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)


class FakeCloudonix:
    """Domains with one bearer token each, and the sessions live on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: dict[str, _Domain] = {}
        self._released = threading.Event()
        self.requests: list[CloudonixRequest] = []
        # (domain, session) -> every cXML document POSTed to the session's application, in order
        self.applications: dict[tuple[str, str], list[str]] = {}
        self.force_status: int | None = None
        self.delay = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- state a test sets up and reads ---------------------------------------------------------

    def add_domain(self, domain: str = DOMAIN, token: str = TOKEN) -> None:
        with self._lock:
            self._domains[domain] = _Domain(token)

    def add_session(self, session: str, domain: str = DOMAIN) -> None:
        """A live session on ``domain`` (the domain is added with `TOKEN` if it is new)."""
        with self._lock:
            entry = self._domains.setdefault(domain, _Domain(TOKEN))
            entry.live.add(session)
            entry.ended.discard(session)

    def is_live(self, session: str, domain: str = DOMAIN) -> bool:
        with self._lock:
            entry = self._domains.get(domain)
            return entry is not None and session in entry.live

    def ended(self, session: str, domain: str = DOMAIN) -> bool:
        """Whether the session was ended by a DELETE."""
        with self._lock:
            entry = self._domains.get(domain)
            return entry is not None and session in entry.ended

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
            name="fake-cloudonix",
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

    def __enter__(self) -> FakeCloudonix:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- answering -----------------------------------------------------------------------------

    def _answer(
        self, method: str, path: str, authorization: str | None, body: bytes
    ) -> tuple[int, Any]:
        if self.delay:
            self._released.wait(self.delay)
        if self.force_status is not None:
            return self.force_status, _error(self.force_status)
        parts = [unquote(p) for p in urlsplit(path).path.split("/")[1:]]
        match parts:
            case ["customers", "self", "domains", domain, "sessions", session] if method in (
                "GET",
                "DELETE",
            ):
                return self._session(method, domain, session, authorization)
            case ["calls", domain, "sessions", session, "application"] if method == "POST":
                return self._application(domain, session, authorization, body)
        return 404, _error(404)

    def _authorised(self, domain: str, authorization: str | None) -> _Domain | None:
        entry = self._domains.get(domain)
        if entry is None or authorization != f"Bearer {entry.token}":
            return None
        return entry

    def _session(
        self, method: str, domain: str, session: str, authorization: str | None
    ) -> tuple[int, Any]:
        with self._lock:
            entry = self._authorised(domain, authorization)
            if entry is None:
                return 401, _error(401)
            if session not in entry.live:
                return 404, _error(404)
            if method == "DELETE":
                entry.live.discard(session)
                entry.ended.add(session)
                return 204, None
        return 200, {"token": session, "domain": domain, "status": "connected"}

    def _application(
        self, domain: str, session: str, authorization: str | None, body: bytes
    ) -> tuple[int, Any]:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        with self._lock:
            entry = self._authorised(domain, authorization)
            if entry is None:
                return 401, _error(401)
            if session not in entry.live:
                return 404, _error(404)
            if not isinstance(document, dict) or not isinstance(document.get("cxml"), str):
                return 400, _error(400)
            self.applications.setdefault((domain, session), []).append(document["cxml"])
        return 200, {"token": session, "domain": domain, "status": "connected"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a timed-out test client) is not an error of the fake."""


class _Handler(BaseHTTPRequestHandler):
    owner: FakeCloudonix
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `FakeCloudonix.requests`."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, BODY_LIMIT)) if length else b""
        authorization = self.headers.get("Authorization")
        status, payload = self.owner._answer(self.command, self.path, authorization, body)
        with self.owner._lock:
            self.owner.requests.append(
                CloudonixRequest(
                    self.command, self.path, authorization, dict(self.headers), body, status
                )
            )
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle


def _error(status: int) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"status": status, "message": phrase}
