"""Write-only secrets on read: enough of the value to recognise it, never enough to use it.

Provider API keys, trunk passwords and CPaaS tokens are stored because the gateway must use them,
but an API response is read by dashboards, logs and support tickets. Showing the last four
characters lets a user tell which key is configured; short secrets show nothing at all, since four
characters of an eight-character secret are half of it.
"""

from __future__ import annotations

MASK = "…"
VISIBLE_CHARS = 4
# Below this length no characters are shown.
MIN_LENGTH_TO_SHOW = 9


def mask(secret: str | None) -> str | None:
    """``"…cdef"`` for a configured secret, None when there is none."""
    if not secret:
        return None
    if len(secret) < MIN_LENGTH_TO_SHOW:
        return MASK
    return MASK + secret[-VISIBLE_CHARS:]
