"""Which agent and provider an agent-stream URL names, in either of the two URL forms.

- v1: ``/api/v1/agent-stream/{agent_uuid}?provider=cloudonix&Domain=…&callId=…&from=…&to=…``
  (the first published contract; ``CallSid`` is accepted for ``callId``);
- v2: ``/api/v1/agent-stream/{provider}/{agent_uuid}``, every id from the ``start`` message.
  Twilio allows no query string on a stream URL, so Twilio streams use this form.

Why a pure function: the HTTP layer decides 404 (not an agent-stream path at all) before the
upgrade, and everything after the upgrade is a close code; both rest on this one parse, tested
on literal paths. The URL is a capability (the agent UUID authorises the stream), so nothing
here keeps or logs the raw path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, urlsplit

__all__ = ["PREFIX", "StreamRoute", "SupportedProvider", "parse_stream_path"]

PREFIX = "/api/v1/agent-stream/"
MAX_QUERY_PARAMS = 32


class SupportedProvider(StrEnum):
    CLOUDONIX = "cloudonix"
    TWILIO = "twilio"


# Providers whose streams exist but which this endpoint does not speak (yet): 1011, "not
# supported", rather than 1008 "unknown", so an operator knows the name was understood.
KNOWN_UNSUPPORTED = frozenset(
    {"telnyx", "plivo", "vonage", "ari", "exotel", "bandwidth", "signalwire", "sinch", "jambonz"}
)


@dataclass(frozen=True, slots=True)
class StreamRoute:
    """An agent-stream request: ``agent_uuid`` is None when the segment is not a UUID (the
    endpoint answers "agent not found", as for an unknown one)."""

    version: int
    provider: str  # lower-cased; "" when a v1 URL has no provider
    agent_uuid: uuid.UUID | None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def supported(self) -> SupportedProvider | None:
        try:
            return SupportedProvider(self.provider)
        except ValueError:
            return None

    def param(self, *names: str) -> str:
        """The first of ``names`` present in the query, trimmed ("" when none is)."""
        for name in names:
            value = self.query.get(name)
            if value:
                return value.strip()
        return ""


def _uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def parse_stream_path(target: str) -> StreamRoute | None:
    """The route of a request target (path and query), or None when it is no agent-stream path."""
    parts = urlsplit(target)
    if not parts.path.startswith(PREFIX):
        return None
    segments = parts.path[len(PREFIX) :].split("/")
    query = dict(parse_qsl(parts.query, keep_blank_values=False)[:MAX_QUERY_PARAMS])
    if len(segments) == 1 and segments[0]:
        provider = query.get("provider", "").strip().lower()
        return StreamRoute(1, provider, _uuid(segments[0]), query)
    if len(segments) == 2 and segments[0] and segments[1]:
        return StreamRoute(2, segments[0].lower(), _uuid(segments[1]), query)
    return None
