"""Value types shared by the API, the workers and the edge: phone numbers, URLs, media targets.

Why here and not in each model: the same rules decide what the REST API accepts, what a routing
webhook may answer and what the edge dials, so they live once, as pydantic ``Annotated`` types whose
error messages are written for the API user (they surface verbatim in 422 responses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

# E.164 allows at most 15 digits; carriers and the API guide send them with or without "+".
_NUMBER_RE = re.compile(r"^\+?[1-9][0-9]{2,14}$")
_NUMBER_NOISE = re.compile(r"[\s().-]")
_EXTENSION_RE = re.compile(r"^[0-9A-Za-z_.-]{1,32}$")
_DRIVER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# host[:port] of a SIP URI: a name (letters, digits, '.', '-'), IPv4, or a bracketed IPv6 reference.
_SIP_HOSTPORT_RE = re.compile(
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$"
)
MAX_URL_LENGTH = 2048
# Below this many digits (and without "+") a transfer target is taken as an extension.
MIN_NUMBER_DIGITS = 7


def normalize_number(value: str) -> str:
    """Return a phone number as ``+digits``; raise ValueError with a message for the API user.

    Spaces, dots, dashes and brackets are dropped, so ``+55 (11) 99999-9999`` is accepted.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string of digits, optionally starting with +")
    compact = _NUMBER_NOISE.sub("", value)
    if not _NUMBER_RE.match(compact):
        raise ValueError(
            "must be a phone number of 3 to 15 digits, optionally starting with + (E.164)"
        )
    return compact if compact.startswith("+") else "+" + compact


def check_number(value: str) -> str:
    """Validate like normalize_number but keep the caller's spelling (minus punctuation)."""
    normalize_number(value)
    return _NUMBER_NOISE.sub("", value)


def check_extension(value: str) -> str:
    if not isinstance(value, str) or not _EXTENSION_RE.match(value):
        raise ValueError("must be 1-32 characters: letters, digits, '_', '.', '-'")
    return value


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a URL string")
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() not in schemes:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"must start with {wanted}")
    if not parts.hostname:
        raise ValueError("must include a host")
    if port == 0:
        raise ValueError("must not use port 0")
    return value


def check_http_url(value: str) -> str:
    return _check_url(value, ("http", "https"))


def check_ws_url(value: str) -> str:
    return _check_url(value, ("ws", "wss"))


class MediaKind(StrEnum):
    """Which bot driver a call's media goes to."""

    WEBSOCKET = "websocket"
    ELEVENLABS = "elevenlabs"
    VAPI = "vapi"


@dataclass(frozen=True, slots=True)
class MediaTarget:
    """A parsed ``socket_url``/``media_server``: a WebSocket URL or a native AI driver.

    ``agent_id`` is the ElevenLabs agent or Vapi assistant given inline after ``&``; None means the
    account's configured default.
    """

    kind: MediaKind
    url: str | None = None
    agent_id: str | None = None

    def __str__(self) -> str:
        if self.kind is MediaKind.WEBSOCKET:
            return self.url or ""
        return f"{self.kind}&{self.agent_id}" if self.agent_id else str(self.kind)


def parse_media_target(value: str) -> MediaTarget:
    """Parse the API's media target forms: ws(s) URL, ``elevenlabs[&id]``, ``vapi[&id]``."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a ws:// or wss:// URL, 'elevenlabs[&agent_id]' or 'vapi[&id]'")
    name, sep, agent = value.partition("&")
    if name in (MediaKind.ELEVENLABS, MediaKind.VAPI):
        if sep and not _DRIVER_ID_RE.match(agent):
            raise ValueError(f"the id after '{name}&' must be 1-128 letters, digits, '_' or '-'")
        return MediaTarget(MediaKind(name), agent_id=agent or None)
    if "://" not in value:
        raise ValueError("must be a ws:// or wss:// URL, 'elevenlabs[&agent_id]' or 'vapi[&id]'")
    return MediaTarget(MediaKind.WEBSOCKET, url=check_ws_url(value))


def _check_media_target(value: str) -> str:
    parse_media_target(value)
    return value


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


PhoneNumber = Annotated[str, BeforeValidator(_strip), AfterValidator(check_number)]
E164Number = Annotated[str, BeforeValidator(_strip), AfterValidator(normalize_number)]
ExtensionName = Annotated[str, AfterValidator(check_extension)]
HttpUrl = Annotated[str, BeforeValidator(_strip), AfterValidator(check_http_url)]
WsUrl = Annotated[str, BeforeValidator(_strip), AfterValidator(check_ws_url)]
MediaTargetStr = Annotated[str, BeforeValidator(_strip), AfterValidator(_check_media_target)]


def sip_uri_host(value: str) -> str:
    """The host of a ``sip:``/``sips:`` URI (IPv6 without brackets); ValueError if it has none.

    Why here and strict: the API checks this host against the SSRF rule and the node dials the
    host its own SIP parser finds, so both must find the same one. RFC 3261 §25.1 lets ``@``
    appear only once, unescaped, as the end of the user info (params and headers cannot hold
    it), so a URI with a second ``@`` is refused rather than read one way here and another there.
    """
    if not isinstance(value, str) or not value.lower().startswith(("sip:", "sips:")):
        raise ValueError("must be a sip: or sips: URI")
    rest = value.split(":", 1)[1]
    if rest.count("@") > 1:
        raise ValueError("SIP URI must have at most one '@'")
    host_port = rest.rsplit("@", 1)[-1]
    host_port = re.split(r"[;?]", host_port, maxsplit=1)[0]
    match = _SIP_HOSTPORT_RE.match(host_port)
    if match is None:
        raise ValueError("SIP URI must include a host, e.g. sip:alice@example.com")
    return match.group(1).removeprefix("[").removesuffix("]")


def parse_transfer_destination(value: str) -> tuple[str, str]:
    """Classify a transfer destination as ("sip", uri), ("number", +e164) or ("extension", name).

    Only the form is checked here; whether a SIP URI's host may be called is the SSRF rule's
    (``shared.ssrf.check_sip_uri``), which needs settings and DNS.
    """
    value = value.strip()
    if value.lower().startswith(("sip:", "sips:")):
        sip_uri_host(value)
        return ("sip", value)
    # Short digit strings are extensions ("101"); "+" or 7+ digits make a phone number.
    digits = _NUMBER_NOISE.sub("", value)
    if digits.startswith("+") or (digits.isdigit() and len(digits) >= MIN_NUMBER_DIGITS):
        return ("number", normalize_number(value))
    try:
        return ("extension", check_extension(value))
    except ValueError:
        raise ValueError("must be a phone number, an extension or a sip: URI") from None


def _check_transfer_destination(value: str) -> str:
    parse_transfer_destination(value)
    return value


TransferDestination = Annotated[
    str, BeforeValidator(_strip), AfterValidator(_check_transfer_destination)
]
