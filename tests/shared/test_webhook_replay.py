"""Replay protection on webhooks, checked with the receiver code the README gives customers.

The README's Python block is executed as it stands (no copy here), so if the documentation and
the signer drift apart, these tests fail. ``X-Signature`` is pinned separately: it must stay
exactly the seed's header, whatever the new headers do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import pytest

from shared.signing import library_secret, signed_webhook

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_Vx1-replay_test_secret_value_0123456789"
PAYLOAD = {"event_type": "call.answered", "call_uuid": "c-1", "call_status": "in-progress"}


def readme_receiver() -> dict[str, Any]:
    """The namespace of the README's webhook verification snippet, freshly executed."""
    text = README.read_text()
    section = text[text.index("### Webhooks") : text.index("## Layout")]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md (webhooks)", "exec"), namespace)
    return namespace


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_a_receiver_following_the_readme_accepts_once_then_refuses_the_replay() -> None:
    receiver = readme_receiver()
    body, headers = signed_webhook(SECRET, PAYLOAD, "c-1", webhook_id="cb_1")
    got = lower(headers)
    assert receiver["verify_x_signature"](SECRET, body, got)
    assert receiver["verify_webhook"](SECRET, body, got)
    assert not receiver["verify_webhook"](SECRET, body, got)  # the same request again
    # X-Signature alone cannot tell: that is why the new headers exist.
    assert receiver["verify_x_signature"](SECRET, body, got)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, h: (body + b" ", h), id="body"),
        pytest.param(lambda body, h: (body, {**h, "webhook-id": "cb_other"}), id="id"),
        pytest.param(
            lambda body, h: (
                body,
                {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)},
            ),
            id="timestamp",
        ),
        pytest.param(
            lambda body, h: (body, {**h, "webhook-signature": "v1," + "A" * 44}), id="signature"
        ),
        pytest.param(lambda body, h: (body, {**h, "webhook-signature": ""}), id="no-signature"),
    ],
)
def test_an_altered_request_is_refused(tamper: Any) -> None:
    receiver = readme_receiver()
    body, headers = signed_webhook(SECRET, PAYLOAD, "c-1", webhook_id="cb_2")
    altered_body, altered = tamper(body, lower(headers))
    assert not receiver["verify_webhook"](SECRET, altered_body, altered)


def test_a_stale_request_is_refused_even_when_its_signature_is_good() -> None:
    receiver = readme_receiver()
    old = int(time.time()) - 301
    body, headers = signed_webhook(SECRET, PAYLOAD, "c-1", webhook_id="cb_3", timestamp=old)
    assert not receiver["verify_webhook"](SECRET, body, lower(headers))
    assert not receiver["verify_webhook"]("whsec_another_secret", body, lower(headers))


def test_the_standard_webhooks_signature_is_the_documented_formula() -> None:
    body, headers = signed_webhook(SECRET, PAYLOAD, "c-1", webhook_id="cb_4", timestamp=1770647400)
    assert headers["webhook-id"] == "cb_4"
    assert headers["webhook-timestamp"] == "1770647400"
    signed = b"cb_4.1770647400." + body
    digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_a_standard_webhooks_library_given_the_documented_secret_derives_our_key() -> None:
    # What standardwebhooks/svix do with a "whsec_" secret: base64-decode the rest as the key.
    converted = library_secret(SECRET)
    assert converted == "whsec_" + base64.b64encode(SECRET.encode()).decode()
    key = base64.b64decode(converted.removeprefix("whsec_"))
    body, headers = signed_webhook(SECRET, PAYLOAD, "c-1", webhook_id="cb_5", timestamp=1)
    digest = hmac.new(key, b"cb_5.1." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_x_signature_is_unchanged_byte_for_byte() -> None:
    body, headers = signed_webhook(SECRET, PAYLOAD, "c-1", webhook_id="cb_6", timestamp=5)
    assert body == b'{"call_status":"in-progress","call_uuid":"c-1","event_type":"call.answered"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == "sha256=" + expected
    # The seed's headers keep their names and values; the new ones are additions.
    assert set(headers) == {
        "Content-Type",
        "X-Call-UUID",
        "X-Signature",
        "User-Agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }


def test_each_message_gets_its_own_id_unless_one_is_given() -> None:
    _, first = signed_webhook(SECRET, PAYLOAD, "c-1")
    _, second = signed_webhook(SECRET, PAYLOAD, "c-1")
    assert first["webhook-id"] != second["webhook-id"]
    assert abs(int(first["webhook-timestamp"]) - time.time()) < 5
