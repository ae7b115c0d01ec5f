"""HTTP transports that connect only to the address the SSRF check passed ("pinned" connects).

Why: checking a URL's host and then handing the URL to an HTTP client lets the client resolve the
name a second time, and a rebinding name (public for the check, ``127.0.0.1`` or the metadata
service for the connect) walks straight past the check. Here the resolution *is* the connect:
httpx's transport keeps its pool, its HTTP/1.1 and its TLS, but its ``httpcore`` network backend
is ours. `PinnedAsyncBackend.connect_tcp` gets the URL's host name, resolves it once with the
`AddressPolicy`'s resolver, checks every address, and opens TCP to one of those checked addresses.

How TLS verification survives: httpcore opens TCP through the backend and then upgrades the
stream itself with ``start_tls(server_hostname=<the URL's host>)``. So SNI and certificate
verification are against the host *name*, exactly as without pinning, and the ``Host`` header
comes from the URL as always; only the TCP destination is fixed. We chose this over rewriting
the URL to an IP with a ``Host`` header and httpcore's ``sni_hostname`` extension because the
pool keys connections by the URL's origin: with IP URLs, a connection verified for one customer's
host name could be reused for another host that resolves to the same IP.

Trusted origins: the operator's own API bases (Cloudonix, Twilio, ElevenLabs, Vapi: settings, not
customer input) may be on private addresses in tests and the local stack; their connects are
pinned all the same but not checked (`operator_origins`).

A refusal is `AddressRefused`, an ``httpcore.ConnectError``: httpx raises it as
``httpx.ConnectError`` with the refusal as ``__cause__`` (`refusal_of` finds it), so callers that
already handle a failed connect need no new branch. Resolution is bounded by the request's connect
timeout and runs in a worker thread (getaddrinfo blocks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
from collections.abc import Callable, Collection, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.settings import Settings
from shared.ssrf import AddressPolicy, HostUnresolvable, UnsafeUrlError

__all__ = [
    "AddressRefused",
    "HostNotFound",
    "PinnedAsyncBackend",
    "PinnedAsyncTransport",
    "PinnedBackend",
    "PinnedTransport",
    "operator_origins",
    "refusal_of",
]

Origin = tuple[str, int]
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
CAUSE_DEPTH = 8  # links of an exception chain searched for the refusal
# The field name a refusal carries; callers that know the request field say it themselves.
FIELD = "url"
# httpx's own defaults for the node's shared client; the worker sends one POST per client.
ASYNC_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
SYNC_LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=0)


class AddressRefused(httpcore.ConnectError):
    """The host's addresses failed the SSRF check: no connection was attempted."""

    def __init__(self, error: UnsafeUrlError) -> None:
        super().__init__(error.reason)
        self.error = error


class HostNotFound(httpcore.ConnectError, socket.gaierror):
    """The host has no address. Also a ``gaierror``, what an unpinned connect raises, so callers
    that name a failure by the OS error under it (``drivers/provider_connect.py``) still see DNS
    (httpcore's pool drops ``__cause__``, so the class itself must say it)."""


def refusal_of(error: BaseException) -> AddressRefused | None:
    """The `AddressRefused` under an httpx error, if the connect was refused by the policy."""
    link: BaseException | None = error
    for _ in range(CAUSE_DEPTH):
        if link is None:
            return None
        if isinstance(link, AddressRefused):
            return link
        link = link.__cause__ or link.__context__
    return None


def operator_origins(settings: Settings) -> frozenset[Origin]:
    """(host, port) of the provider API bases the operator configured: trusted, not checked."""
    origins = set()
    for base in (
        settings.cloudonix_api_base,
        settings.twilio_api_base,
        settings.elevenlabs_api_base,
        settings.vapi_api_base,
    ):
        parts = urlsplit(base)
        if parts.hostname:
            origins.add((parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme, 443)))
    return frozenset(origins)


def _addresses(
    policy: AddressPolicy, trusted: Collection[Origin], host: str, port: int
) -> list[str]:
    """The addresses to try, from one resolution; `AddressRefused` / ``ConnectError`` if none."""
    try:
        if (host, port) in trusted:
            return policy.lookup(host)
        return policy.addresses(host, FIELD)
    except HostUnresolvable as error:
        raise HostNotFound(socket.EAI_NONAME, error.reason) from None
    except UnsafeUrlError as error:
        raise AddressRefused(error) from None


class PinnedAsyncBackend(httpcore.AsyncNetworkBackend):
    """An httpcore backend whose TCP connects go to checked addresses only (asyncio).

    ``inner`` opens the sockets (httpcore's default backend); tests pass one that records the
    address it is given and maps a documentation address to a loopback listener.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        trusted: Collection[Origin] = (),
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._trusted = frozenset(trusted)
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._policy.needs_dns(host):
            try:
                async with asyncio.timeout(timeout):
                    addresses = await asyncio.to_thread(
                        _addresses, self._policy, self._trusted, host, port
                    )
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        else:
            addresses = _addresses(self._policy, self._trusted, host, port)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as error:  # refused, unreachable: the next address
                failure = error
        assert failure is not None  # a resolution always has at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not for customer URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedBackend(httpcore.NetworkBackend):
    """`PinnedAsyncBackend` for sync clients (the callbacks worker)."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        trusted: Collection[Origin] = (),
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._trusted = frozenset(trusted)
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._policy.needs_dns(host):
            addresses = _bounded(
                lambda: _addresses(self._policy, self._trusted, host, port), timeout, host
            )
        else:
            addresses = _addresses(self._policy, self._trusted, host, port)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as error:
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not for customer URLs")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bounded(work: Callable[[], list[str]], timeout: float | None, host: str) -> list[str]:
    """``work()`` (a resolution) given at most ``timeout`` seconds; getaddrinfo has no timeout
    of its own, so it runs in a thread that is left behind when time is up."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="resolve")
    try:
        return pool.submit(work).result(timeout)
    except concurrent.futures.TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
    finally:
        pool.shutdown(wait=False)


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify, trust_env=False)


class PinnedAsyncTransport(httpx.AsyncHTTPTransport):
    """httpx's async transport (pool, HTTP/1.1, TLS, exception mapping) on a pinned backend.

    Built as httpx builds it, then given a pool whose network backend is `PinnedAsyncBackend`;
    ``AsyncConnectionPool`` takes a backend but ``AsyncHTTPTransport`` does not pass one through
    (httpx 0.28), hence the one replaced attribute, checked here so an upgrade fails loudly.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        trusted: Collection[Origin] = (),
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = ASYNC_LIMITS,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport changed: cannot pin its connections")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedAsyncBackend(policy, trusted=trusted, inner=inner),
        )


class PinnedTransport(httpx.HTTPTransport):
    """`PinnedAsyncTransport` for sync clients (the callbacks worker)."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        trusted: Collection[Origin] = (),
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = SYNC_LIMITS,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("httpx.HTTPTransport changed: cannot pin its connections")
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(policy, trusted=trusted, inner=inner),
        )
