"""Twilio's request signature (``X-Twilio-Signature``), checked on an agent-stream upgrade.

Why: the agent-stream endpoint is a public WebSocket, and a Twilio stream names the call it
carries. Only someone holding the account's auth token can sign a request, so a valid signature
proves the stream comes from Twilio for that account; the call itself is then checked through
the REST API (``provider_api.TwilioApi``).

The algorithm is Twilio's published one: ``base64(HMAC-SHA1(auth_token, url + params))`` where
``params`` is every POST parameter, sorted by name, as name followed by value. A WebSocket upgrade
is a GET and has no POST parameters, so its signature covers the URL alone, query included.
Twilio's back end is known to sign some URLs with the default port spelled out and some without,
so a check, like the official library's ``RequestValidator.validate``, accepts either: the URL
with any port removed, and the URL with the scheme's default port added when it has none. One
deliberate difference: the library adds ``:443`` only for ``https`` and ``:80`` for every other
scheme, which for a ``wss`` URL gives ``wss://host:80/...``, a URL nobody signs; here ``wss``
gets ``:443`` like ``https`` and ``ws`` gets ``:80`` like ``http``. The URL as given is always a
candidate too (the library compares re-serialised URLs, which drop an empty ``?``).

The URL must be the one *Twilio* connected to, not the one this process saw. `stream_url`
rebuilds it:

- with a configured public base URL (``wss://streams.example.com``) it is that base plus the
  request's path and query: behind a load balancer, a CDN or a path-rewriting proxy, only the
  operator knows the public name, and the Host header may be the balancer's own;
- otherwise from the request's Host header and scheme. A TLS load balancer in front of the node
  terminates TLS and forwards plain ``ws``, so the node sees ``ws`` while Twilio signed ``wss``:
  ``X-Forwarded-Proto: https`` (the balancer's report of what the client used) means ``wss``,
  ``http`` means ``ws``. A forged header can only make the check use another URL; it cannot make
  a signature valid without the token.

Pure: no I/O, no clock, so it is tested on literal URLs against the official library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import ParseResult, urlparse

__all__ = [
    "SIGNATURE_HEADER",
    "Params",
    "compute_signature",
    "signed_url_variants",
    "stream_url",
    "valid_signature",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
# What a forwarded or configured scheme means for the stream's own (WebSocket) scheme.
WS_SCHEMES = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}

Params = Mapping[str, str | Sequence[str]]


def _signed_text(url: str, params: Params | None) -> str:
    text = url
    if not params:
        return text
    for name in sorted(set(params)):
        value = params[name]
        values = [value] if isinstance(value, str) else list(value)
        # Twilio signs each distinct value of a repeated parameter once, in sorted order.
        for item in sorted(set(values)):
            text += name + item
    return text


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """The signature Twilio sends for a request to ``url`` with POST ``params`` (none for a
    WebSocket upgrade): base64 of HMAC-SHA1 keyed by the auth token."""
    mac = hmac.new(
        auth_token.encode("utf-8"), _signed_text(url, params).encode("utf-8"), hashlib.sha1
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def _without_port(parsed: ParseResult) -> str:
    if parsed.port is None:
        return parsed.geturl()
    netloc, _, _ = parsed.netloc.rpartition(":")
    return parsed._replace(netloc=netloc).geturl()


def _with_default_port(parsed: ParseResult) -> str:
    if parsed.port is not None:
        return parsed.geturl()
    port = DEFAULT_PORTS.get(parsed.scheme)
    if port is None:
        return parsed.geturl()
    return parsed._replace(netloc=f"{parsed.netloc}:{port}").geturl()


def signed_url_variants(url: str) -> list[str]:
    """The spellings of ``url`` Twilio may have signed: as given, without its port, and with
    the scheme's default port. `ValueError` when the URL's port is not a number."""
    parsed = urlparse(url)
    parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    variants: list[str] = []
    for variant in (url, _without_port(parsed), _with_default_port(parsed)):
        if variant not in variants:
            variants.append(variant)
    return variants


def valid_signature(
    auth_token: str, url: str, signature: str | None, params: Params | None = None
) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) signs ``url`` and ``params``
    with ``auth_token``, in any spelling of `signed_url_variants`. Compared in constant time; a
    missing or empty signature, an empty token or an unparsable URL is simply not valid."""
    if not signature or not auth_token:
        return False
    try:
        variants = signed_url_variants(url)
    except ValueError:
        return False
    given = signature.strip().encode("utf-8")
    valid = False
    for variant in variants:
        # Every variant is compared (no early exit), so the time does not say which matched.
        expected = compute_signature(auth_token, variant, params).encode("ascii")
        valid |= hmac.compare_digest(expected, given)
    return valid


def _first_forwarded(value: str | None) -> str | None:
    """The client-side value of a forwarded header: its first entry (each proxy appends)."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip().lower()
    return first or None


def stream_url(
    public_base: str | None,
    host_header: str | None,
    scheme: str,
    forwarded_proto: str | None,
    path_and_query: str,
) -> str:
    """The URL Twilio connected to (and signed) for a request of ``path_and_query``.

    ``public_base`` (``wss://streams.example.com``, optionally with a path prefix the proxy
    strips) wins when set; an ``https``/``http`` base means ``wss``/``ws``. Otherwise the URL
    is ``scheme://Host`` + path, where ``X-Forwarded-Proto`` (``https`` → ``wss``, ``http`` →
    ``ws``; its first entry, and only when it is one of those) overrides the request's own
    ``scheme``. `ValueError` when neither a public base nor
    a Host header is there: then no URL can be rebuilt and the request cannot be checked."""
    path = path_and_query if path_and_query.startswith("/") else "/" + path_and_query
    if public_base and public_base.strip():
        base = public_base.strip().rstrip("/")
        head, sep, rest = base.partition("://")
        if sep and head.lower() in WS_SCHEMES:
            base = f"{WS_SCHEMES[head.lower()]}://{rest}"
        return base + path
    host = (host_header or "").strip()
    if not host:
        raise ValueError("no public base URL and no Host header: the stream URL is unknown")
    forwarded = _first_forwarded(forwarded_proto)
    proto = forwarded if forwarded in WS_SCHEMES else scheme.strip().lower()
    ws_scheme = WS_SCHEMES.get(proto, "ws")
    return f"{ws_scheme}://{host}{path}"
