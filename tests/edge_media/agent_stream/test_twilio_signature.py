"""Twilio's request signature, checked against the official library's ``RequestValidator``.

Why against the library: the signature is Twilio's algorithm, not ours; the library is Twilio's
own statement of it, so our signature must equal the library's for every URL shape a stream can
have (query, port, ``wss`` and ``https``), and our check must accept what Twilio signs.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from twilio.request_validator import RequestValidator

from edge_media.agent_stream.twilio_signature import (
    compute_signature,
    signed_url_variants,
    stream_url,
    valid_signature,
)

TOKEN = "12345abcdef67890twiliotoken00001"
URLS = [
    "wss://edge.example.com/agent-stream/6f1c2b7e-3a45-4c8e-9d10-0a1b2c3d4e5f",
    "wss://edge.example.com/agent-stream/abc?provider=twilio&x=1%202",
    "wss://edge.example.com:8443/agent-stream/abc",
    "wss://edge.example.com:443/agent-stream/abc",
    "https://edge.example.com/voice?CallSid=CA123&From=%2B15005550006",
    "https://edge.example.com:443/voice",
    "ws://127.0.0.1:8080/agent-stream/abc",
]


@pytest.mark.parametrize("url", URLS)
def test_our_signature_is_twilios(url: str) -> None:
    assert compute_signature(TOKEN, url) == RequestValidator(TOKEN).compute_signature(url, {})
    assert compute_signature(TOKEN, url, None) == compute_signature(TOKEN, url, {})


def test_post_params_are_signed_sorted_like_twilios() -> None:
    url = "https://edge.example.com/voice"
    params = {"To": "+15005550001", "CallSid": "CA" + "1" * 32, "From": "+15005550006"}
    ours = compute_signature(TOKEN, url, params)
    assert ours == RequestValidator(TOKEN).compute_signature(url, params)
    assert ours != compute_signature(TOKEN, url)
    assert compute_signature(TOKEN, url, {"B": ["2", "1", "2"], "A": "x"}) == compute_signature(
        TOKEN, url + "Ax" + "B1" + "B2"
    )


@pytest.mark.parametrize("url", URLS)
def test_twilios_own_signature_is_accepted(url: str) -> None:
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    assert valid_signature(TOKEN, url, signature)
    assert RequestValidator(TOKEN).validate(url, {}, signature)


@pytest.mark.parametrize("url", URLS)
def test_a_wrong_token_or_altered_url_is_refused(url: str) -> None:
    signature = compute_signature(TOKEN, url)
    parts = urlsplit(url)
    altered = [
        urlunsplit(parts._replace(path=parts.path + "x")),
        urlunsplit(parts._replace(netloc="x" + parts.netloc)),
        urlunsplit(parts._replace(scheme="ws" if parts.scheme == "wss" else "wss")),
        urlunsplit(parts._replace(query=parts.query + ("&" if parts.query else "") + "extra=1")),
    ]
    assert len(set(altered)) == len(altered) and url not in altered
    assert valid_signature(TOKEN, url, signature)
    assert not valid_signature("another-token", url, signature)
    for other in altered:
        assert not valid_signature(TOKEN, other, signature), other
    flipped = signature[:-2] + ("A=" if signature[-2] != "A" else "B=")
    assert not valid_signature(TOKEN, url, flipped)


def test_an_altered_query_value_is_refused() -> None:
    url = "wss://edge.example.com/agent-stream/abc?provider=twilio"
    signature = compute_signature(TOKEN, url)
    assert valid_signature(TOKEN, url, signature)
    assert not valid_signature(TOKEN, url.replace("twilio", "twilia"), signature)


@pytest.mark.parametrize("signature", [None, "", "   ", "not base64 at all", "é" * 28])
def test_missing_or_junk_signatures_are_refused(signature: str | None) -> None:
    assert not valid_signature(TOKEN, URLS[0], signature)


def test_an_empty_token_or_bad_port_is_refused() -> None:
    assert not valid_signature("", URLS[0], compute_signature("", URLS[0]))
    bad = "wss://edge.example.com:99999999/agent-stream/abc"
    assert not valid_signature(TOKEN, bad, compute_signature(TOKEN, bad))
    assert not valid_signature(TOKEN, "wss://h:port/x", compute_signature(TOKEN, "wss://h:port/x"))


@pytest.mark.parametrize(
    ("received", "signed"),
    [
        ("https://edge.example.com/voice", "https://edge.example.com:443/voice"),
        ("https://edge.example.com:443/voice", "https://edge.example.com/voice"),
        ("http://edge.example.com/voice", "http://edge.example.com:80/voice"),
        ("https://edge.example.com:8443/voice?a=1", "https://edge.example.com/voice?a=1"),
    ],
)
def test_default_port_variants_match_the_library(received: str, signed: str) -> None:
    signature = compute_signature(TOKEN, signed)
    assert valid_signature(TOKEN, received, signature)
    assert RequestValidator(TOKEN).validate(received, {}, signature)


@pytest.mark.parametrize(
    ("received", "signed"),
    [
        ("wss://edge.example.com/agent-stream/abc", "wss://edge.example.com:443/agent-stream/abc"),
        ("wss://edge.example.com:443/agent-stream/abc", "wss://edge.example.com/agent-stream/abc"),
        ("ws://edge.example.com/agent-stream/abc", "ws://edge.example.com:80/agent-stream/abc"),
    ],
)
def test_websocket_schemes_use_their_default_ports(received: str, signed: str) -> None:
    assert valid_signature(TOKEN, received, compute_signature(TOKEN, signed))


def test_wss_never_takes_port_80() -> None:
    """The library adds ``:80`` to any non-https URL; a wss URL's default port is 443."""
    received = "wss://edge.example.com/agent-stream/abc"
    signature = compute_signature(TOKEN, "wss://edge.example.com:80/agent-stream/abc")
    assert not valid_signature(TOKEN, received, signature)
    assert signed_url_variants(received) == [
        received,
        "wss://edge.example.com:443/agent-stream/abc",
    ]


def test_variants_keep_the_url_as_given() -> None:
    assert signed_url_variants("https://h.example.com:8443/p?") == [
        "https://h.example.com:8443/p?",
        "https://h.example.com/p",
        "https://h.example.com:8443/p",
    ]
    assert signed_url_variants("wss://[2001:db8::1]:443/s") == [
        "wss://[2001:db8::1]:443/s",
        "wss://[2001:db8::1]/s",
    ]


@pytest.mark.parametrize(
    ("public_base", "host", "scheme", "forwarded", "path", "expected"),
    [
        (
            "wss://streams.example.com",
            "10.0.0.5:8080",
            "ws",
            None,
            "/agent-stream/abc?x=1",
            "wss://streams.example.com/agent-stream/abc?x=1",
        ),
        (
            "https://streams.example.com/edge/",
            None,
            "ws",
            "http",
            "/agent-stream/abc",
            "wss://streams.example.com/edge/agent-stream/abc",
        ),
        (
            "  ",
            "edge.example.com",
            "ws",
            "https",
            "/agent-stream/abc",
            "wss://edge.example.com/agent-stream/abc",
        ),
        (
            None,
            "edge.example.com",
            "ws",
            "https, http",
            "/agent-stream/abc",
            "wss://edge.example.com/agent-stream/abc",
        ),
        (
            None,
            "edge.example.com:8080",
            "wss",
            "http",
            "/agent-stream/abc",
            "ws://edge.example.com:8080/agent-stream/abc",
        ),
        (
            None,
            "127.0.0.1:8080",
            "ws",
            None,
            "/agent-stream/abc?p=1",
            "ws://127.0.0.1:8080/agent-stream/abc?p=1",
        ),
        (
            None,
            "edge.example.com",
            "wss",
            None,
            "agent-stream/abc",
            "wss://edge.example.com/agent-stream/abc",
        ),
        (None, "edge.example.com", "ws", "gopher", "/s", "ws://edge.example.com/s"),
        (None, "edge.example.com", "https", "", "/s", "wss://edge.example.com/s"),
    ],
    ids=[
        "public-base",
        "public-base-https-with-prefix",
        "blank-base-forwarded-https",
        "forwarded-list",
        "forwarded-http",
        "plain-ws",
        "no-leading-slash",
        "unknown-forwarded",
        "https-scheme",
    ],
)
def test_stream_url(public_base, host, scheme, forwarded, path, expected) -> None:
    assert stream_url(public_base, host, scheme, forwarded, path) == expected


def test_stream_url_needs_a_base_or_a_host() -> None:
    with pytest.raises(ValueError, match="Host"):
        stream_url(None, None, "ws", "https", "/agent-stream/abc")
    with pytest.raises(ValueError, match="Host"):
        stream_url("", " ", "ws", None, "/agent-stream/abc")


def test_a_signed_stream_behind_a_tls_balancer_validates() -> None:
    """End to end: Twilio signs the public wss URL; the node sees ws plus X-Forwarded-Proto."""
    public = "wss://edge.example.com/agent-stream/abc?provider=twilio"
    signature = RequestValidator(TOKEN).compute_signature(public, {})
    rebuilt = stream_url(
        None, "edge.example.com", "ws", "https", "/agent-stream/abc?provider=twilio"
    )
    assert valid_signature(TOKEN, rebuilt, signature)
    naive = stream_url(None, "edge.example.com", "ws", None, "/agent-stream/abc?provider=twilio")
    assert not valid_signature(TOKEN, naive, signature)
