"""The dashboard's browser-facing defences: headers, session cookies, CSRF and sign-in limits.

- **Headers.** Every dashboard response carries a Content-Security-Policy that allows scripts,
  styles and fetches from the app's own origin only (no inline script, no eval: htmx is told not
  to need them, see ``templates/base.html``), refuses framing, and is never cached: pages show
  account data that must not outlive a sign-out in a shared browser's cache.
- **Session cookie.** Starlette's own ``SessionMiddleware`` (an itsdangerous-signed cookie):
  HttpOnly, SameSite=Strict, limited to ``/dashboard`` so it never rides along to the API, and
  Secure except on a loopback host, where ``make dev`` serves plain http and a Secure cookie would
  never come back. The Host header picks the cookie flavour; a forged Host only changes what the
  forger's own browser is told.
- **CSRF.** A per-session random token, sent back in a hidden form field or (htmx) the
  ``X-CSRF-Token`` header, compared in constant time on every POST; SameSite=Strict already keeps
  the cookie off cross-site requests, and a request whose ``Origin`` or ``Sec-Fetch-Site`` says it
  came from another site is refused before the token is even looked at.
- **Sign-in limit.** Failed sign-ins are counted per client address in a sliding window; past
  the limit every attempt from that address is refused with 429 until the window moves on. The
  count lives in the process (a Lambda instance, the local server): keys are 256-bit random, so
  the limit is there to stop noise and log floods, not to make guessing feasible.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "agera_dashboard"
COOKIE_PATH = "/dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
MIN_SECRET_LENGTH = 32

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


class DashboardConfigError(Exception):
    """A dashboard setting is unusable; the message names the variable, never its value."""


def session_secret(configured: str) -> str:
    """The cookie-signing key: the setting, or a random one for this process only."""
    if not configured:
        return secrets.token_urlsafe(48)
    if len(configured) < MIN_SECRET_LENGTH:
        raise DashboardConfigError(
            f"AGERA_DASHBOARD_SESSION_SECRET: must be at least {MIN_SECRET_LENGTH} characters"
        )
    return configured


def is_loopback(host: str) -> bool:
    """Whether a Host header (with or without port) names this machine's loopback."""
    name = host.lower()
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name in LOOPBACK_HOSTS


def _host_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


class DashboardSessions:
    """Two ``SessionMiddleware`` flavours, chosen per request: Secure unless on loopback."""

    def __init__(self, app: ASGIApp, secret_key: str, max_age: int) -> None:
        options = {
            "secret_key": secret_key,
            "session_cookie": SESSION_COOKIE,
            "max_age": max_age,
            "path": COOKIE_PATH,
            "same_site": "strict",
        }
        self.secure = SessionMiddleware(app, https_only=True, **options)  # type: ignore[arg-type]
        self.plain = SessionMiddleware(app, https_only=False, **options)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.plain if is_loopback(_host_of(scope)) else self.secure
        await chosen(scope, receive, send)


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` and ``Cache-Control: no-store`` (static files may be cached)."""

    def __init__(self, app: ASGIApp, static_prefix: str) -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --------------------------------------------------------------------------- CSRF


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (so the sign-in form has one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def cross_site(request: Request) -> bool:
    """Whether the browser says this request was started by another site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in {"same-origin", "none"}:
        return True
    origin = request.headers.get("origin")
    if origin is None:  # same-origin GETs and older browsers send none
        return False
    return origin != f"{request.url.scheme}://{request.url.netloc}"


async def csrf_ok(request: Request) -> bool:
    """Whether a state-changing request carries this session's token and came from this site."""
    if cross_site(request):
        return False
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not expected:
        return False
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        from functions.dashboard.forms import read  # forms imports nothing from here

        sent = (await read(request)).get(CSRF_FIELD)
    return sent is not None and hmac.compare_digest(sent, expected)


# --------------------------------------------------------------------------- sign-in limit


class SignInLimiter:
    """Failed sign-ins per client address in a sliding window (in this process).

    ``clock`` is injected so tests move time instead of sleeping. At most ``MAX_TRACKED``
    addresses are remembered; the oldest is forgotten first, so a spray of addresses cannot grow
    the process without bound.
    """

    MAX_TRACKED = 10_000

    def __init__(
        self, attempts: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client)
        if failures is None:
            return deque()
        cutoff = self.clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[client]
        return failures

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        failures = self._recent(client)
        if len(failures) < self.attempts:
            return None
        return max(1, int(failures[0] + self.window - self.clock()) + 1)

    def failed(self, client: str) -> None:
        failures = self._failures.setdefault(client, deque())
        failures.append(self.clock())
        if len(self._failures) > self.MAX_TRACKED:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
