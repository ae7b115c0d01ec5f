"""Webhook signing: ``X-Signature: sha256=<hex>`` over the exact bytes that are sent.

The API guide tells customers to verify by re-serialising the JSON they received with
``json.dumps(payload, sort_keys=True, separators=(',', ':'), ensure_ascii=False)`` encoded as UTF-8
and computing HMAC-SHA256 with their account secret. We therefore *send* exactly those bytes as the
body: then a receiver that verifies over the raw body and one that re-serialises per the guide both
agree. ``ensure_ascii=False`` matters: a caller name "José" is signed as UTF-8, not as ``\\u00e9``.

Replay protection (added alongside, ``X-Signature`` is unchanged byte for byte): ``X-Signature``
covers only the body, so a captured request can be replayed for ever. Every webhook therefore also
carries the Standard Webhooks headers (https://www.standardwebhooks.com): ``webhook-id`` (the
callback id, the same on every retry of one callback; the ``request_id`` of a routing request),
``webhook-timestamp`` (Unix seconds when this attempt was signed) and ``webhook-signature``
(``v1,`` + base64 of HMAC-SHA256 over ``"{id}.{timestamp}.{body}"``). A receiver refuses a
timestamp outside its tolerance (5 minutes is the spec's suggestion) and an id it has already
processed.

Key: the same key as ``X-Signature``, the account's webhook secret as UTF-8 bytes, the ``whsec_``
prefix included. Standard Webhooks libraries instead base64-decode what follows ``whsec_``; our
secrets are not base64 of a key, so a receiver using such a library passes it
``"whsec_" + base64(secret.encode())``, which decodes to exactly our key (`library_secret`).
One key for both headers means one secret to rotate and nothing new to store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

USER_AGENT = "VoiceAPI/1.0"
SIGNATURE_PREFIX = "sha256="
STANDARD_VERSION = "v1"
WEBHOOK_ID_PREFIX = "msg_"


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


def standard_signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{STANDARD_VERSION},{base64.b64encode(digest).decode('ascii')}"


def library_secret(secret: str) -> str:
    """The secret to give a Standard Webhooks library so it derives our key (see module doc)."""
    return "whsec_" + base64.b64encode(secret.encode("utf-8")).decode("ascii")


def signed_webhook(
    secret: str,
    payload: dict[str, Any],
    call_uuid: str,
    *,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    **extra_headers: str,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a webhook POST (routing request or status callback).

    ``webhook_id`` names the message for replay checks (a fresh ``msg_…`` when None; a retry must
    pass the same id); ``timestamp`` is the signing time in Unix seconds (now when None).
    """
    body = canonical_json(payload)
    webhook_id = webhook_id or WEBHOOK_ID_PREFIX + secrets.token_hex(12)
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "X-Call-UUID": call_uuid,
        "X-Signature": sign(secret, body),
        "User-Agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, webhook_id, timestamp, body),
        **extra_headers,
    }
    return body, headers
