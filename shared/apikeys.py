"""API keys and webhook secrets: generation, hashing at rest, display prefixes.

A key is ``sk_live_`` + 32 random bytes (URL-safe base64, 43 characters), shown to its owner once.
Only its SHA-256 is stored; a fast hash is right here (unlike passwords) because the key has 256 bits
of entropy, and lookups must be one DynamoDB GetItem on the hash. The display prefix
(``sk_live_ab12…``) lets people tell their keys apart without revealing them.
"""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "sk_live_"
KEY_RANDOM_BYTES = 32
DISPLAY_CHARS = 4
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_KEY_RE = re.compile(r"^sk_live_[A-Za-z0-9_-]{43,}$")


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + DISPLAY_CHARS] + "…"


def key_id_for(key_hash: str) -> str:
    """A stable public id for DELETE /api/keys/{id}, derived from the hash (not the key)."""
    return "key_" + key_hash[:16]


def looks_like_api_key(value: str) -> bool:
    """Cheap shape check before any lookup: rejects garbage without touching the table."""
    return bool(_KEY_RE.match(value))


def generate_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
