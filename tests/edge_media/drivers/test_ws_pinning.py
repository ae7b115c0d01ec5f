"""Bot WebSockets connect only to an address the SSRF check passed (drivers/pinned_connect.py).

Loopback only. "Public" is 203.0.113.5 (TEST-NET-3) opened by the policy's allow list, as an
operator would with ``AGERA_SSRF_ALLOW_LIST``; "private" is 127.0.0.1, not allowed. Where a
connect to the public address must really happen, the loop's ``create_connection`` is wrapped to
record the address asked for and carry 203.0.113.5 to the loopback bot (stock asyncio only:
uvloop's loop cannot be patched); a bare listener at the URL's port on 127.0.0.1 stands for the
private service and must never see a connection.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve

from edge_media.drivers.base import BotUnavailable, ConnectStep
from edge_media.drivers.ws_client import WsConnection
from edge_media.drivers.ws_connect import connect_websocket
from shared.ssrf import AddressPolicy

pytestmark = pytest.mark.anyio

PUBLIC = "203.0.113.5"
ALLOW_PUBLIC = ("203.0.113.0/24",)


class Rebinding:
    """A resolver answering ``first`` to its first question and ``later`` to every other."""

    def __init__(self, first: Sequence[str], later: Sequence[str]) -> None:
        self.first, self.later = list(first), list(later)
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.first if len(self.asked) == 1 else self.later


class Untouched:
    """A listener that accepts nothing: a connect attempt stays in its backlog, visible."""

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


@pytest.fixture
def private() -> Iterator[Untouched]:
    listener = Untouched()
    yield listener
    listener.sock.close()


@pytest.fixture
async def bot() -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback bot that records each upgrade's Host header; (port, hosts)."""
    hosts: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        hosts.append(ws.request.headers["Host"] if ws.request is not None else "")
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        yield next(iter(server.sockets)).getsockname()[1], hosts


async def open_ws(url: str, policy: AddressPolicy | None, **options: Any) -> WsConnection:
    return await connect_websocket(
        url,
        seconds=options.pop("seconds", 3.0),
        on_text=lambda text: None,
        on_bytes=lambda data: None,
        ping_interval=None,
        policy=policy,
        **options,
    )


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_a_rebinding_name_is_connected_at_the_address_it_answered_first(
    bot: tuple[int, list[str]], private: Untouched, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot_port, hosts = bot
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    dialed: list[tuple[str, int]] = []

    async def dial(factory: Any, host: str, port: int, **kwargs: Any) -> Any:
        dialed.append((host, port))
        if (host, port) == (PUBLIC, private.port):
            host, port = "127.0.0.1", bot_port
        return await real(factory, host, port, **kwargs)

    monkeypatch.setattr(loop, "create_connection", dial)
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    conn = await open_ws(
        f"ws://bot.example:{private.port}/media", AddressPolicy(ALLOW_PUBLIC, resolve)
    )
    assert conn.is_open
    await conn.close()
    assert dialed == [(PUBLIC, private.port)]
    assert hosts == [f"bot.example:{private.port}"]  # the upgrade names the host, not the IP
    assert resolve.asked == ["bot.example"]  # one lookup, used by the connect
    assert not private.was_connected()


async def test_a_name_answering_public_and_private_at_once_is_refused_before_connecting(
    private: Untouched,
) -> None:
    resolve = Rebinding([PUBLIC, "127.0.0.1"], [PUBLIC])
    with pytest.raises(BotUnavailable) as caught:
        await open_ws(
            f"ws://bot.example:{private.port}/m?t=x", AddressPolicy(ALLOW_PUBLIC, resolve)
        )
    assert caught.value.step is ConnectStep.TARGET
    assert str(caught.value) == (
        "socket_url: bot.example (127.0.0.1) is a loopback address; the gateway only calls "
        "public addresses (an operator can allow a range with AGERA_SSRF_ALLOW_LIST)"
    )
    assert resolve.asked == ["bot.example"]
    assert not private.was_connected()


async def test_a_private_ip_literal_is_refused_without_dns(private: Untouched) -> None:
    def no_dns(host: str) -> list[str]:
        raise AssertionError(f"asked DNS for {host}")

    for host in ("127.0.0.1", "127.1", "[::ffff:127.0.0.1]"):
        with pytest.raises(BotUnavailable) as caught:
            await open_ws(f"ws://{host}:{private.port}/m", AddressPolicy((), no_dns))
        assert caught.value.step is ConnectStep.TARGET, host
    assert not private.was_connected()


async def test_a_name_that_does_not_resolve_is_a_dns_failure() -> None:
    def nothing(host: str) -> list[str]:
        raise OSError("no such name")

    with pytest.raises(BotUnavailable) as caught:
        await open_ws("ws://gone.example/m", AddressPolicy((), nothing))
    assert caught.value.step is ConnectStep.DNS
    assert (
        str(caught.value) == "cannot connect to bot at ws://gone.example/m: host does not resolve"
    )


async def test_an_allowed_address_connects(bot: tuple[int, list[str]]) -> None:
    bot_port, hosts = bot
    policy = AddressPolicy(("127.0.0.0/8",), lambda host: ["127.0.0.1"])
    conn = await open_ws(f"ws://bot.example:{bot_port}/media", policy)
    await conn.close()
    assert hosts == [f"bot.example:{bot_port}"]


# -- TLS is verified against the host name, not the pinned address ----------------------------


def certificate_for(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for DNS name ``name`` only (no IP address in it)."""
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


@pytest.mark.parametrize(("certified", "ok"), [("bot.example", True), ("other.example", False)])
async def test_wss_is_verified_against_the_host_name_over_the_pinned_connection(
    tmp_path: Path, certified: str, ok: bool
) -> None:
    cert_path, key_path = certificate_for(tmp_path, certified)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_path, key_path)
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: sni.append(name)
    trusted = ssl.create_default_context(cafile=str(cert_path))
    policy = AddressPolicy(("127.0.0.0/8",), lambda host: ["127.0.0.1"])

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ssl=server_tls, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"wss://bot.example:{port}/secure"
        if ok:
            conn = await open_ws(url, policy, ssl_context=trusted)
            await conn.close()
        else:
            with pytest.raises(BotUnavailable) as caught:
                await open_ws(url, policy, ssl_context=trusted)
            assert caught.value.step is ConnectStep.TLS
            assert "TLS certificate verify failed" in str(caught.value)
    assert sni == ["bot.example"]  # SNI is the name, though TCP went to 127.0.0.1
