"""The provider REST calls an agent stream needs: check the call is real, hang it up, transfer it.

Why: a provider (Cloudonix or Twilio) opens the agent stream to us, so the stream alone proves
nothing and controls nothing. Before the agent is connected, the node asks the provider whether
the call the stream names is live under the stored credentials (`CloudonixApi.validate_session`,
`TwilioApi.check_in_progress`); when the agent ends or transfers the call, the node asks the
provider to do it (``hangup``, ``transfer``), since the provider, not the node, owns the call leg.

Shape:

- One `httpx.AsyncClient` is passed in and shared (its connection pool serves every call of the
  node); every request says ``follow_redirects=False`` (a redirect would carry the credentials to
  another URL) and its own timeout. On a node that client is pinned
  (``shared.pinned_http``): each connect goes to the address its one lookup returned, and the
  provider origins, being the operator's settings, are trusted rather than SSRF-checked.
- Every path component is checked against a strict pattern before any request (Twilio's
  ``AC``/``CA`` SIDs, a DNS-shaped Cloudonix domain, a URL-safe Cloudonix session id), so no value
  can add a path segment, a query or a ``..``. Credentials must be printable ASCII without spaces
  (what a header carries).
- A failure is one exception per purpose: `ProviderCheckFailed` from a check,
  `ProviderCallFailed` from a hangup or a transfer, both `ProviderError`. The text names the
  provider, the step and the HTTP status, or ``timeout`` / ``connection failed``, and never a
  token, a session id or a URL: an HTTP library's own message can quote a URL (with the session
  in it) or a header (with the token), so the library's exception is never chained or quoted.
- A transfer destination is an E.164 number (``<Dial><Number>``) or a ``sip:``/``sips:`` URI
  (``<Dial><Sip>``), XML-escaped into the document both providers execute (Cloudonix cXML and
  Twilio TwiML have the same ``<Response><Dial>`` shape).
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

import httpx

__all__ = [
    "DEFAULT_CLOUDONIX_BASE",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_TWILIO_BASE",
    "CloudonixApi",
    "ProviderCallFailed",
    "ProviderCheckFailed",
    "ProviderError",
    "TwilioApi",
    "dial_document",
]

DEFAULT_CLOUDONIX_BASE = "https://api.cloudonix.io"
DEFAULT_TWILIO_BASE = "https://api.twilio.com"
DEFAULT_TIMEOUT_SECONDS = 5.0  # each request, whole; the connect part is bounded by it too

TWILIO_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
TWILIO_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
# DNS labels of letters, digits and inner hyphens; a domain is at most 253 characters.
CLOUDONIX_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# URL-unreserved characters only, not starting with a dot (so never ``.`` or ``..``).
CLOUDONIX_SESSION = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,127}")
CREDENTIAL = re.compile(r"[\x21-\x7e]{1,1024}")
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
SIP_URI = re.compile(r"sips?:[^\s<>\"]{1,2040}", re.IGNORECASE)
TWILIO_IN_PROGRESS = "in-progress"


class ProviderError(Exception):
    """A provider request that did not do what was asked. ``reason`` is safe to log and store:
    provider, step and HTTP status (``status``, None when there was no answer), nothing secret."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ProviderCheckFailed(ProviderError):
    """The provider did not confirm that the stream's call is live under these credentials."""


class ProviderCallFailed(ProviderError):
    """The provider did not hang up or transfer the call."""


def _require(
    pattern: re.Pattern[str], value: str, what: str, error: type[ProviderError], step: str
) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise error(f"{step}: {what} is not valid")
    return value


def dial_document(destination: str) -> str:
    """``<Response><Dial>…</Dial></Response>`` sending the call to ``destination``: an E.164
    number as ``<Number>``, a SIP URI as ``<Sip>``. `ValueError` for anything else (the caller
    decides which failure that is)."""
    if E164.fullmatch(destination):
        noun = "Number"
    elif SIP_URI.fullmatch(destination) and destination.isprintable():
        noun = "Sip"
    else:
        raise ValueError("transfer destination is neither an E.164 number nor a SIP URI")
    return f"<Response><Dial><{noun}>{escape(destination)}</{noun}></Dial></Response>"


def _transport_reason(error: httpx.HTTPError) -> str:
    """A failed exchange named by kind only: an httpx message may quote the URL or a header."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connection failed"
    if isinstance(error, httpx.TransportError):
        return f"transport error ({type(error).__name__})"
    return f"request failed ({type(error).__name__})"


class _RestClient:
    """What both providers share: one request with the node's client, failures made safe."""

    provider = ""

    def __init__(self, http: httpx.AsyncClient, base_url: str, timeout: float) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        step: str,
        error: type[ProviderError],
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, url, timeout=self._timeout, follow_redirects=False, **kwargs
            )
        except httpx.HTTPError as failure:
            raise error(f"{self.provider} {step}: {_transport_reason(failure)}") from None
        except (UnicodeError, ValueError) as failure:
            # A credential or body httpx cannot encode: named by type, never by its text.
            raise error(
                f"{self.provider} {step}: request refused ({type(failure).__name__})"
            ) from None

    def _status_error(
        self, response: httpx.Response, step: str, error: type[ProviderError]
    ) -> ProviderError:
        return error(
            f"{self.provider} {step}: HTTP {response.status_code}", status=response.status_code
        )


class CloudonixApi(_RestClient):
    """Cloudonix's REST API, authenticated per request by the domain's bearer token.

    Session (a call) checks and hangups go to ``/customers/self/domains/{domain}/sessions/
    {session}``; a transfer replaces the session's running application with a cXML document at
    ``/calls/{domain}/sessions/{session}/application``."""

    provider = "cloudonix"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str = DEFAULT_CLOUDONIX_BASE,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(http, base_url, timeout)

    def _session_url(
        self, domain: str, session: str, token: str, error: type[ProviderError], step: str
    ) -> tuple[str, dict[str, str]]:
        _require(CLOUDONIX_DOMAIN, domain, "domain", error, f"cloudonix {step}")
        _require(CLOUDONIX_SESSION, session, "session id", error, f"cloudonix {step}")
        _require(CREDENTIAL, token, "bearer token", error, f"cloudonix {step}")
        url = f"{self._base}/customers/self/domains/{domain}/sessions/{session}"
        return url, {"Authorization": f"Bearer {token}"}

    async def validate_session(self, domain: str, session: str, token: str) -> None:
        """Returns when Cloudonix answers 200 for the session under this token; anything else
        (401 bad token, 404 unknown or ended session, 5xx, timeout, refused) raises
        `ProviderCheckFailed`."""
        step = "session check"
        url, headers = self._session_url(domain, session, token, ProviderCheckFailed, step)
        response = await self._send(
            "GET", url, headers=headers, step=step, error=ProviderCheckFailed
        )
        if response.status_code != 200:
            raise self._status_error(response, step, ProviderCheckFailed)

    async def hangup(self, domain: str, session: str, token: str) -> None:
        """Ends the session. 200 and 204 are success, and so is 404: the session is already
        gone, which is what a hangup wants. Anything else raises `ProviderCallFailed`."""
        step = "hangup"
        url, headers = self._session_url(domain, session, token, ProviderCallFailed, step)
        response = await self._send(
            "DELETE", url, headers=headers, step=step, error=ProviderCallFailed
        )
        if response.status_code not in (200, 204, 404):
            raise self._status_error(response, step, ProviderCallFailed)

    async def transfer(self, domain: str, session: str, token: str, destination: str) -> None:
        """Sends the caller to ``destination`` (E.164 or SIP URI) by giving the session a new
        application, ``{"cxml": "<Response><Dial>…</Dial></Response>"}``. Any 2xx is success."""
        step = "transfer"
        self._session_url(domain, session, token, ProviderCallFailed, step)
        try:
            cxml = dial_document(destination)
        except ValueError as bad:
            raise ProviderCallFailed(f"cloudonix {step}: {bad}") from None
        url = f"{self._base}/calls/{domain}/sessions/{session}/application"
        response = await self._send(
            "POST",
            url,
            headers={"Authorization": f"Bearer {token}"},
            json={"cxml": cxml},
            step=step,
            error=ProviderCallFailed,
        )
        if not 200 <= response.status_code < 300:
            raise self._status_error(response, step, ProviderCallFailed)


class TwilioApi(_RestClient):
    """Twilio's 2010-04-01 Calls resource, with HTTP basic auth (account SID, auth token).

    A check fetches the call and wants ``status == "in-progress"`` (a stream of a call that has
    ended, or not yet been answered, is not one to serve); a hangup updates the call with
    ``Status=completed``; a transfer updates it with ``Twiml=<Response><Dial>…``."""

    provider = "twilio"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str = DEFAULT_TWILIO_BASE,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(http, base_url, timeout)

    def _call_url(
        self,
        account_sid: str,
        auth_token: str,
        call_sid: str,
        error: type[ProviderError],
        step: str,
    ) -> str:
        _require(TWILIO_ACCOUNT_SID, account_sid, "account SID", error, f"twilio {step}")
        _require(TWILIO_CALL_SID, call_sid, "call SID", error, f"twilio {step}")
        _require(CREDENTIAL, auth_token, "auth token", error, f"twilio {step}")
        return f"{self._base}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"

    async def fetch_call(self, account_sid: str, auth_token: str, call_sid: str) -> dict[str, Any]:
        """The call resource as Twilio returns it (``sid``, ``status``, ``from``, ``to``, ...).
        Any answer but a 200 with a JSON object raises `ProviderCheckFailed`."""
        step = "call check"
        url = self._call_url(account_sid, auth_token, call_sid, ProviderCheckFailed, step)
        response = await self._send(
            "GET",
            url,
            auth=(account_sid, auth_token),
            headers={"Accept": "application/json"},
            step=step,
            error=ProviderCheckFailed,
        )
        if response.status_code != 200:
            raise self._status_error(response, step, ProviderCheckFailed)
        try:
            call = response.json()
        except ValueError:
            call = None
        if not isinstance(call, dict):
            raise ProviderCheckFailed(f"twilio {step}: the answer is not a call", status=200)
        return call

    async def check_in_progress(
        self, account_sid: str, auth_token: str, call_sid: str
    ) -> dict[str, Any]:
        """The call, when Twilio says it is this call and ``in-progress``; else
        `ProviderCheckFailed` naming the status it has."""
        call = await self.fetch_call(account_sid, auth_token, call_sid)
        if call.get("sid") != call_sid:
            raise ProviderCheckFailed("twilio call check: the answer is another call", status=200)
        status = call.get("status")
        if status != TWILIO_IN_PROGRESS:
            shown = status if isinstance(status, str) and status.isprintable() else "unknown"
            raise ProviderCheckFailed(
                f"twilio call check: call is {shown[:32]}, not {TWILIO_IN_PROGRESS}", status=200
            )
        return call

    async def _update(
        self, account_sid: str, auth_token: str, call_sid: str, step: str, form: dict[str, str]
    ) -> None:
        url = self._call_url(account_sid, auth_token, call_sid, ProviderCallFailed, step)
        response = await self._send(
            "POST",
            url,
            auth=(account_sid, auth_token),
            headers={"Accept": "application/json"},
            data=form,
            step=step,
            error=ProviderCallFailed,
        )
        if not 200 <= response.status_code < 300:
            raise self._status_error(response, step, ProviderCallFailed)

    async def hangup(self, account_sid: str, auth_token: str, call_sid: str) -> None:
        """Ends the call (``Status=completed``); any 2xx is success."""
        await self._update(account_sid, auth_token, call_sid, "hangup", {"Status": "completed"})

    async def transfer(
        self, account_sid: str, auth_token: str, call_sid: str, destination: str
    ) -> None:
        """Sends the caller to ``destination`` (E.164 or SIP URI) with new TwiML, ``<Response>
        <Dial>…</Dial></Response>``; any 2xx is success."""
        step = "transfer"
        self._call_url(account_sid, auth_token, call_sid, ProviderCallFailed, step)
        try:
            twiml = dial_document(destination)
        except ValueError as bad:
            raise ProviderCallFailed(f"twilio {step}: {bad}") from None
        await self._update(account_sid, auth_token, call_sid, step, {"Twiml": twiml})
