"""UTC timestamps in the one textual form the gateway emits (ISO-8601 with ``Z``).

The API guide's webhooks carry ``"timestamp": "2026-02-09T14:30:00Z"``; records keep milliseconds so
that listings sort by creation even for calls made in the same second.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_z(moment: datetime, *, millis: bool = False) -> str:
    """``2026-02-09T14:30:00Z`` (or ``...:00.123Z`` with millis) for an aware or naive-UTC time."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Inverse of iso_z; always returns an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
