"""Pinned HTTP connects (shared/pinned_http.py): the address checked is the address connected to.

Loopback only. "Public" is a documentation address (203.0.113.5, TEST-NET-3) opened by the
policy's allow list, as an operator would with ``AGERA_SSRF_ALLOW_LIST``; "private" is 127.0.0.1,
not allowed. The socket layer under the transport is replaced by a dialer that records the
address it is asked for and carries 203.0.113.5 to a loopback listener (the "public" server), so
nothing leaves the machine. A second listener on 127.0.0.1 at the URL's own port stands for the
private service a rebinding name would reach: it must never see a connection.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.pinned_http import (
    AddressRefused,
    PinnedAsyncTransport,
    PinnedTransport,
    operator_origins,
    refusal_of,
)
from shared.settings import Settings
from shared.ssrf import AddressPolicy, check_public_url

PUBLIC = "203.0.113.5"
ALLOW_PUBLIC = ("203.0.113.0/24",)


class Server:
    """An HTTP server on 127.0.0.1 that records each request's path and Host header."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                seen.append((self.path, self.headers.get("Host", "")))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Untouched:
    """A listener that accepts nothing: any connect attempt stays in its backlog, visible."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])

    def was_connected(self) -> bool:
        self.sock.setblocking(False)
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def public() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


@pytest.fixture
def private() -> Iterator[Untouched]:
    listener = Untouched()
    yield listener
    listener.close()


class Rebinding:
    """A resolver answering ``first`` to its first question and ``later`` to every other."""

    def __init__(self, first: Sequence[str], later: Sequence[str]) -> None:
        self.first, self.later = list(first), list(later)
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.first if len(self.asked) == 1 else self.later


def routes_for(public: Server, port: int) -> dict[tuple[str, int], tuple[str, int]]:
    return {(PUBLIC, port): ("127.0.0.1", public.port)}


class AsyncDialer(httpcore.AsyncNetworkBackend):
    """Records what it is asked to dial; carries the documentation address to loopback."""

    def __init__(self, routes: dict[tuple[str, int], tuple[str, int]]) -> None:
        self.routes = routes
        self.dialed: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> Any:
        self.dialed.append((host, port))
        host, port = self.routes.get((host, port), (host, port))
        return await self._real.connect_tcp(host, port, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class SyncDialer(httpcore.NetworkBackend):
    def __init__(self, routes: dict[tuple[str, int], tuple[str, int]]) -> None:
        self.routes = routes
        self.dialed: list[tuple[str, int]] = []
        self._real = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, **kwargs: Any) -> Any:
        self.dialed.append((host, port))
        host, port = self.routes.get((host, port), (host, port))
        return self._real.connect_tcp(host, port, **kwargs)


# -- the checked address is the one connected to ----------------------------------------------


@pytest.mark.anyio
async def test_async_a_rebinding_name_is_connected_at_the_address_it_answered_first(
    public: Server, private: Untouched
) -> None:
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    dialer = AsyncDialer(routes_for(public, private.port))
    transport = PinnedAsyncTransport(AddressPolicy(ALLOW_PUBLIC, resolve), inner=dialer)
    async with httpx.AsyncClient(transport=transport) as client:
        answer = await client.post(f"http://hook.example:{private.port}/cb", content=b"{}")
    assert answer.status_code == 200
    assert dialed_only_public(dialer.dialed, private.port)
    assert public.requests == [("/cb", f"hook.example:{private.port}")]  # Host: the name
    assert resolve.asked == ["hook.example"]  # once: the connect used that answer
    assert not private.was_connected()


def test_sync_a_rebinding_name_is_connected_at_the_address_it_answered_first(
    public: Server, private: Untouched
) -> None:
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    dialer = SyncDialer(routes_for(public, private.port))
    transport = PinnedTransport(AddressPolicy(ALLOW_PUBLIC, resolve), inner=dialer)
    with httpx.Client(transport=transport) as client:
        answer = client.post(f"http://hook.example:{private.port}/cb", content=b"{}")
    assert answer.status_code == 200
    assert dialed_only_public(dialer.dialed, private.port)
    assert public.requests == [("/cb", f"hook.example:{private.port}")]
    assert resolve.asked == ["hook.example"]
    assert not private.was_connected()


def dialed_only_public(dialed: list[tuple[str, int]], port: int) -> bool:
    return dialed == [(PUBLIC, port)]


@pytest.mark.anyio
async def test_a_check_before_the_request_cannot_be_rebound_under_it(
    public: Server, private: Untouched
) -> None:
    """Check first (public), then connect: the connect's own lookup (private) is refused."""
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    url = f"http://hook.example:{private.port}/cb"
    check_public_url(url, "webhook_url", Settings.load({}, ssrf_allow_list=ALLOW_PUBLIC), resolve)
    dialer = AsyncDialer(routes_for(public, private.port))
    transport = PinnedAsyncTransport(AddressPolicy(ALLOW_PUBLIC, resolve), inner=dialer)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post(url, content=b"{}")
    refused = refusal_of(caught.value)
    assert isinstance(refused, AddressRefused)
    assert "hook.example (127.0.0.1) is a loopback address" in refused.error.reason
    assert dialer.dialed == [] and public.requests == []
    assert not private.was_connected()


@pytest.mark.anyio
async def test_async_a_name_answering_public_and_private_at_once_is_refused_before_any_connect(
    public: Server, private: Untouched
) -> None:
    resolve = Rebinding([PUBLIC, "127.0.0.1"], [PUBLIC])
    dialer = AsyncDialer(routes_for(public, private.port))
    transport = PinnedAsyncTransport(AddressPolicy(ALLOW_PUBLIC, resolve), inner=dialer)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post(f"http://hook.example:{private.port}/cb", content=b"{}")
    assert refusal_of(caught.value) is not None
    assert dialer.dialed == [] and public.requests == []
    assert not private.was_connected()


def test_sync_a_name_answering_public_and_private_at_once_is_refused_before_any_connect(
    public: Server, private: Untouched
) -> None:
    resolve = Rebinding([PUBLIC, "127.0.0.1"], [PUBLIC])
    dialer = SyncDialer(routes_for(public, private.port))
    transport = PinnedTransport(AddressPolicy(ALLOW_PUBLIC, resolve), inner=dialer)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError) as caught:
        client.post(f"http://hook.example:{private.port}/cb", content=b"{}")
    assert refusal_of(caught.value) is not None
    assert dialer.dialed == [] and public.requests == []
    assert not private.was_connected()


@pytest.mark.anyio
async def test_an_ip_literal_is_checked_without_asking_the_resolver(private: Untouched) -> None:
    def no_dns(host: str) -> list[str]:
        raise AssertionError(f"asked DNS for {host}")

    transport = PinnedAsyncTransport(AddressPolicy((), no_dns))
    async with httpx.AsyncClient(transport=transport) as client:
        for host in ("127.0.0.1", "127.1", "[::ffff:127.0.0.1]"):
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"http://{host}:{private.port}/")
            assert refusal_of(caught.value) is not None, host
    assert not private.was_connected()


@pytest.mark.anyio
async def test_an_ordinary_connect_failure_is_not_a_refusal() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    transport = PinnedAsyncTransport(AddressPolicy(("127.0.0.0/8",), lambda host: []))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{closed}/")
    assert refusal_of(caught.value) is None


@pytest.mark.anyio
async def test_operator_origins_are_pinned_but_not_checked(public: Server) -> None:
    settings = Settings.load({}, cloudonix_api_base=f"http://cloudonix.internal:{public.port}")
    trusted = operator_origins(settings)
    assert ("cloudonix.internal", public.port) in trusted
    assert ("api.twilio.com", 443) in trusted
    resolve = Rebinding(["127.0.0.1"], ["10.9.9.9"])
    transport = PinnedAsyncTransport(AddressPolicy((), resolve), trusted=trusted)
    async with httpx.AsyncClient(transport=transport) as client:
        answer = await client.get(f"http://cloudonix.internal:{public.port}/sessions")
        assert answer.status_code == 200
        # The same private address under a customer's name is refused.
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://hooks.customer.example:{public.port}/")
    assert refusal_of(caught.value) is not None
    assert public.requests == [("/sessions", f"cloudonix.internal:{public.port}")]


# -- TLS is verified against the host name, not the pinned address ----------------------------


def certificate_for(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate valid for DNS name ``name`` only (no IP address in it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Callable[[str], tuple[Server, ssl.SSLContext, list]]]:
    made: list[Server] = []

    def make(name: str) -> tuple[Server, ssl.SSLContext, list]:
        cert_path, key_path = certificate_for(tmp_path, name)
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert_path, key_path)
        sni: list[str | None] = []
        server_tls.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)
        server = Server(server_tls)
        made.append(server)
        return server, ssl.create_default_context(cafile=str(cert_path)), sni

    yield make
    for server in made:
        server.close()


@pytest.mark.anyio
async def test_tls_is_verified_against_the_host_name_over_the_pinned_connection(
    tls_server: Any,
) -> None:
    server, trusted, sni = tls_server("hook.example")
    policy = AddressPolicy(("127.0.0.0/8",), lambda host: ["127.0.0.1"])
    transport = PinnedAsyncTransport(policy, verify=trusted)
    async with httpx.AsyncClient(transport=transport) as client:
        answer = await client.post(f"https://hook.example:{server.port}/tls", content=b"{}")
    assert answer.status_code == 200
    assert sni == ["hook.example"]  # SNI is the name, though TCP went to 127.0.0.1
    assert server.requests == [("/tls", f"hook.example:{server.port}")]


def test_a_certificate_for_another_name_fails_verification(tls_server: Any) -> None:
    server, trusted, _ = tls_server("other.example")
    policy = AddressPolicy(("127.0.0.0/8",), lambda host: ["127.0.0.1"])
    with (
        httpx.Client(transport=PinnedTransport(policy, verify=trusted)) as client,
        pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|Hostname mismatch"),
    ):
        client.post(f"https://hook.example:{server.port}/tls", content=b"{}")
    assert server.requests == []


def test_ip_addresses_in_the_policy_are_the_ones_checked() -> None:
    policy = AddressPolicy(ALLOW_PUBLIC, lambda host: [PUBLIC, "2001:db8::1"])
    with pytest.raises(ValueError, match=r"2001:db8::1\) is a"):
        policy.addresses("mixed.example", "webhook_url")
    assert AddressPolicy(ALLOW_PUBLIC, lambda host: [PUBLIC]).addresses("a.example", "f") == [
        PUBLIC
    ]
    assert ipaddress.ip_address(PUBLIC).is_global is False  # a documentation address


@pytest.mark.anyio
async def test_a_name_without_addresses_is_a_dns_failure_not_a_refusal() -> None:
    def nothing(host: str) -> list[str]:
        raise OSError("no such name")

    transport = PinnedAsyncTransport(AddressPolicy((), nothing))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(
            httpx.ConnectError, match=r"host gone\.example does not resolve"
        ) as caught:
            await client.get("http://gone.example/")
    assert refusal_of(caught.value) is None
    # Named like an unpinned connect's failure: a gaierror under the httpx error.
    assert isinstance(caught.value.__cause__, socket.gaierror)
