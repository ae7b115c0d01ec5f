"""The signer, checked with the verification procedure the API guide gives customers.

``guide_verify`` is written from the guide's description (seed 000, "Security"): re-serialise the
received JSON with sort_keys, compact separators and ensure_ascii=False, HMAC-SHA256 it with the
secret, compare with the hex after ``sha256=``. It shares no code with shared.signing.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from shared.signing import USER_AGENT, canonical_json, sign, signed_webhook, verify

SECRET = "whsec_test_secret_value_123456"


def guide_verify(secret: str, payload: dict, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.split("=", 1)[1], expected)


PAYLOADS = [
    {
        "event_type": "call.routing_request",
        "call_uuid": "550e8400-e29b-41d4-a716-446655440000",
        "timestamp": "2026-02-09T14:30:00Z",
        "direction": "inbound",
        "caller_number": "5511999999999",
        "destination_number": "5511888888888",
        "account_id": "12",
        "request_id": "req_789012",
    },
    {"event_type": "call.completed", "duration": 45, "hangup_cause": "NORMAL_CLEARING"},
    {"caller_name": "José Ñoño 日本語 ☎", "nested": {"b": [1, 2.5, None], "a": True}},
    {"emoji": "🤖", "quote": 'say "hi"\n', "slash": "a/b"},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_receiver_following_the_guide_accepts_our_signature(payload: dict) -> None:
    body, headers = signed_webhook(SECRET, payload, "call-1")
    received = json.loads(body)  # what the customer's framework hands them
    assert received == payload
    assert guide_verify(SECRET, received, headers["X-Signature"])


@pytest.mark.parametrize("payload", PAYLOADS)
def test_body_is_exactly_the_signed_bytes(payload: dict) -> None:
    body, headers = signed_webhook(SECRET, payload, "call-1")
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == "sha256=" + expected
    assert verify(SECRET, body, headers["X-Signature"])


def test_non_ascii_is_signed_as_utf8_not_escaped() -> None:
    body = canonical_json({"name": "José"})
    assert body == '{"name":"José"}'.encode()
    assert b"\\u00e9" not in body


def test_wrong_secret_or_tampered_body_fails() -> None:
    payload = PAYLOADS[0]
    body, headers = signed_webhook(SECRET, payload, "call-1")
    assert not guide_verify("another_secret_value_xyz", payload, headers["X-Signature"])
    tampered = dict(payload, account_id="13")
    assert not guide_verify(SECRET, tampered, headers["X-Signature"])
    assert not verify(SECRET, body + b" ", headers["X-Signature"])
    assert not verify(SECRET, body, None)
    assert not verify(SECRET, body, headers["X-Signature"].removeprefix("sha256="))


def test_headers_are_the_guides() -> None:
    _, headers = signed_webhook(SECRET, PAYLOADS[0], "550e8400")
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Call-UUID"] == "550e8400"
    assert headers["User-Agent"] == USER_AGENT == "VoiceAPI/1.0"
    assert headers["X-Signature"].startswith("sha256=")
    assert len(headers["X-Signature"]) == len("sha256=") + 64


def test_sign_is_deterministic_over_key_order() -> None:
    a = canonical_json({"b": 1, "a": {"d": 2, "c": 3}})
    b = canonical_json({"a": {"c": 3, "d": 2}, "b": 1})
    assert a == b == b'{"a":{"c":3,"d":2},"b":1}'
    assert sign(SECRET, a) == sign(SECRET, b)
