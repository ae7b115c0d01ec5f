"""Webhook signing: ``X-Signature: sha256=<hex>`` over the exact bytes that are sent.

The API guide tells customers to verify by re-serialising the JSON they received with
``json.dumps(payload, sort_keys=True, separators=(',', ':'), ensure_ascii=False)`` encoded as UTF-8
and computing HMAC-SHA256 with their account secret. We therefore *send* exactly those bytes as the
body: then a receiver that verifies over the raw body and one that re-serialises per the guide both
agree. ``ensure_ascii=False`` matters: a caller name "José" is signed as UTF-8, not as ``\\u00e9``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

USER_AGENT = "VoiceAPI/1.0"
SIGNATURE_PREFIX = "sha256="


def canonical_json(payload: Any) -> bytes:
    """The deterministic serialisation the API guide specifies (and the body we send)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sign(secret: str, body: bytes) -> str:
    """The X-Signature header value for ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Check an X-Signature header in constant time."""
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body), header)


def signed_webhook(
    secret: str, payload: dict[str, Any], call_uuid: str, **extra_headers: str
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a webhook POST (routing request or status callback)."""
    body = canonical_json(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Call-UUID": call_uuid,
        "X-Signature": sign(secret, body),
        "User-Agent": USER_AGENT,
        **extra_headers,
    }
    return body, headers
