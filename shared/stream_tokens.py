"""Agent-stream tokens: an optional second factor beside the agent UUID in a stream's URL.

An agent with ``require_token`` accepts a stream only with a token made for it: the expiry (epoch
seconds) and an HMAC-SHA256 over the agent UUID and that expiry, keyed with the account's
webhook secret, as ``<expiry>.<base64url mac>``. Why the webhook secret: it is the one secret
every account already has, the customer holds it (so their own dialer can mint tokens, as the
signature docs show), and rotating it revokes every token at once. Why an expiry: a URL copied
into a provider's console leaks through logs and screenshots; a token that ends bounds the leak.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

__all__ = ["MAX_TTL_SECONDS", "make_stream_token", "stream_token_problem"]

MAX_TTL_SECONDS = 366 * 24 * 3600


def _mac(secret: str, agent_uuid: uuid.UUID, expires: int) -> str:
    message = f"{agent_uuid}.{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_stream_token(secret: str, agent_uuid: uuid.UUID, expires: int) -> str:
    """A token for ``agent_uuid`` valid until ``expires`` (epoch seconds)."""
    return f"{expires}.{_mac(secret, agent_uuid, expires)}"


def stream_token_problem(secret: str, agent_uuid: uuid.UUID, token: str, now: float) -> str | None:
    """None when ``token`` admits a stream to ``agent_uuid`` at ``now``, else why not (for the
    close reason: it never repeats the token)."""
    if not token:
        return "Token required"
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or not mac:
        return "Malformed token"
    expires = int(expires_text)
    if not hmac.compare_digest(mac, _mac(secret, agent_uuid, expires)):
        return "Invalid token"
    if expires < now:
        return "Token expired"
    return None
