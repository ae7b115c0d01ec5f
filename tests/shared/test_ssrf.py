"""The SSRF guard: which URLs the gateway refuses to call, and what it says about them.

Only IP literals and fake resolvers: the real DNS is never asked (the one real-resolver test passes
an IP literal, which getaddrinfo answers without a query).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from shared.settings import Settings
from shared.ssrf import (
    UnsafeUrlError,
    address_category,
    check_public_url,
    parse_ip_literal,
    resolve_host,
)

OPEN = Settings.load({})
LOOPBACK_ALLOWED = Settings.load({}, ssrf_allow_list="127.0.0.0/8,::1/128")


def no_dns(host: str) -> Sequence[str]:
    raise AssertionError(f"the guard asked DNS about {host!r}")


def dns(table: dict[str, list[str]]):
    def resolve(host: str) -> Sequence[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return table[host]

    return resolve


def refusal(url: str, settings: Settings = OPEN, resolve=no_dns, field: str = "socket_url") -> str:
    with pytest.raises(UnsafeUrlError) as caught:
        check_public_url(url, field, settings, resolve)
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {caught.value.reason}"
    return caught.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook",
        "wss://93.184.216.34:8443/media",
        "http://[2606:4700:4700::1111]/x",
        "ws://8.8.8.8",
    ],
)
def test_public_literals_pass_without_dns(url: str) -> None:
    check_public_url(url, "webhook_url", OPEN, no_dns)


@pytest.mark.parametrize(
    ("host", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("[::1]", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("[fc00::1]", "private"),
        ("169.254.169.254", "link-local (cloud metadata service)"),
        ("[fd00:ec2::254]", "link-local (cloud metadata service)"),
        ("169.254.10.10", "link-local"),
        ("[fe80::1]", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("[::]", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("[ff02::1]", "multicast"),
        ("100.64.0.1", "reserved (not publicly routable)"),
        ("240.0.0.1", "private"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("[64:ff9b::a9fe:a9fe]", "link-local (cloud metadata service)"),
        ("[2002:7f00:1::]", "loopback"),
        ("127.1", "loopback"),
        ("0x7f.0.0.1", "loopback"),
        ("2130706433", "loopback"),
        ("017700000001", "loopback"),
        ("0x0a000001", "private"),
    ],
)
def test_non_public_addresses_are_refused_with_their_category(host: str, category: str) -> None:
    reason = refusal(f"wss://{host}/media")
    assert f"is a {category} address" in reason
    assert "AGERA_SSRF_ALLOW_LIST" in reason


def test_localhost_names_are_loopback_without_dns() -> None:
    for host in ("localhost", "LOCALHOST.", "api.localhost"):
        assert "loopback" in refusal(f"http://{host}:8000/hook")
    check_public_url("http://localhost:8000/hook", "webhook_url", LOOPBACK_ALLOWED, no_dns)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/x", "must use http://, https://, ws:// or wss://"),
        ("file:///etc/passwd", "must use http://, https://, ws:// or wss://"),
        ("gopher://93.184.216.34:70/_", "must use http://, https://, ws:// or wss://"),
        ("93.184.216.34/x", "must use http://, https://, ws:// or wss://"),
        ("https:///nohost", "must include a host"),
        ("http://[::1/x", "is not a valid URL"),
    ],
)
def test_scheme_and_shape(url: str, reason: str) -> None:
    assert refusal(url, field="webhook_url") == reason


def test_allow_list_opens_exactly_its_ranges() -> None:
    settings = Settings.load({}, ssrf_allow_list="10.0.0.0/8,fd00:1234::/32")
    check_public_url("http://10.9.8.7/x", "webhook_url", settings, no_dns)
    check_public_url("http://[::ffff:10.9.8.7]/x", "webhook_url", settings, no_dns)
    check_public_url("ws://[fd00:1234::5]/x", "socket_url", settings, no_dns)
    assert "private" in refusal("http://192.168.0.1/x", settings)
    assert "cloud metadata" in refusal("http://169.254.169.254/x", settings)


def test_loopback_allow_list_of_the_local_stack() -> None:
    check_public_url("ws://127.0.0.1:8765/bot", "socket_url", LOOPBACK_ALLOWED, no_dns)
    check_public_url("ws://[::1]:8765/bot", "socket_url", LOOPBACK_ALLOWED, no_dns)
    assert "private" in refusal("ws://10.0.0.1/bot", LOOPBACK_ALLOWED)


def test_names_are_checked_by_every_address_they_resolve_to() -> None:
    resolve = dns(
        {
            "bot.example.com": ["93.184.216.34", "2606:2800:220:1::1"],
            "sneaky.example.com": ["93.184.216.34", "10.0.0.7"],
            "scoped.example.com": ["fe80::1%eth0"],
            "metadata.example.com": ["169.254.169.254"],
        }
    )
    check_public_url("wss://bot.example.com/media", "socket_url", OPEN, resolve)
    reason = refusal("https://sneaky.example.com/x", OPEN, resolve, "webhook_url")
    assert reason.startswith("sneaky.example.com (10.0.0.7) is a private address")
    assert "link-local" in refusal("ws://scoped.example.com/", OPEN, resolve)
    assert "cloud metadata" in refusal("ws://metadata.example.com/", OPEN, resolve)


def test_unresolvable_and_odd_answers_are_refused() -> None:
    resolve = dns({"empty.example.com": [], "weird.example.com": ["not-an-ip"]})
    assert refusal("https://nxdomain.example.com/", OPEN, resolve) == (
        "host nxdomain.example.com does not resolve"
    )
    assert "does not resolve" in refusal("https://empty.example.com/", OPEN, resolve)
    assert "unusable address" in refusal("https://weird.example.com/", OPEN, resolve)
    many = dns({"many.example.com": [f"93.184.{i // 250}.{i % 250 + 1}" for i in range(65)]})
    assert "too many addresses" in refusal("https://many.example.com/", OPEN, many)


def test_parse_ip_literal_accepts_resolver_spellings_only() -> None:
    assert str(parse_ip_literal("127.1")) == "127.0.0.1"
    assert str(parse_ip_literal("0x7f.0.0.1")) == "127.0.0.1"
    assert str(parse_ip_literal("2130706433")) == "127.0.0.1"
    assert str(parse_ip_literal("::ffff:1.2.3.4")) == "::ffff:102:304"
    for name in ("example.com", "deadbeef", "1.2.3.4.5", "0x1.com", "1.2.3.4 junk", ""):
        assert parse_ip_literal(name) is None


def test_address_category_of_public_addresses_is_none() -> None:
    for text in ("93.184.216.34", "2606:4700:4700::1111", "1.1.1.1"):
        address = parse_ip_literal(text)
        assert address is not None
        assert address_category(address) is None


def test_real_resolver_with_a_literal_needs_no_dns() -> None:
    assert resolve_host("127.0.0.1") == ["127.0.0.1"]


def test_usable_inside_a_pydantic_validator() -> None:
    def public(url: str) -> str:
        check_public_url(url, "webhook_url", OPEN, no_dns)
        return url

    class Body(BaseModel):
        webhook_url: Annotated[str, AfterValidator(public)]

    assert Body(webhook_url="https://1.1.1.1/x").webhook_url == "https://1.1.1.1/x"
    with pytest.raises(ValidationError) as caught:
        Body(webhook_url="http://127.0.0.1/x")
    (error,) = caught.value.errors()
    assert error["loc"] == ("webhook_url",)
    assert "loopback" in error["msg"]
