"""What ``agera call`` is asked to dial, checked before the phone opens a socket.

Why apart from the call itself: `infra/phone.py` builds `PhoneOptions` from the command line and
must report a bad dial string or option (one line, exit code 2) the same way whether or not a
call follows; every check here is pure, so the tests exercise each one without a network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from edge_media.rtp.ports import PortAllocator
from edge_media.sip.errors import SipParseError
from edge_media.sip.info_dtmf import KEYS
from edge_media.sip.uri import SipUri, uri_scheme

__all__ = [
    "DEFAULT_ANSWER_TIMEOUT",
    "DEFAULT_DIGIT_DELAY",
    "DEFAULT_FROM_USER",
    "DEFAULT_RTP_PORTS",
    "DEFAULT_SIP_PORT",
    "PhoneError",
    "PhoneOptions",
    "Target",
    "check_options",
    "parse_target",
]

DEFAULT_FROM_USER = "agera-phone"
DEFAULT_ANSWER_TIMEOUT = 30.0
DEFAULT_DIGIT_DELAY = 0.5
# Below Linux's ephemeral range (32768-60999) and above the node's default RTP range.
DEFAULT_RTP_PORTS = (30000, 31999)
DEFAULT_SIP_PORT = 5060
TRANSPORTS = ("udp", "tcp")
# A scheme (RFC 3986 §3.1) followed by something other than a port: "sip:", "tel:", "http:".
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?![0-9]*(?:$|[;?]))")


class PhoneError(Exception):
    """Options the phone cannot dial with (bad URI, digits, paths, ports); one line for the user."""


@dataclass(frozen=True, slots=True)
class PhoneOptions:
    """What ``agera call`` was asked to do. Times are seconds; port 0 means any free port."""

    uri: str
    wav_in: Path | None = None
    wav_out: Path | None = None
    digits: str = ""
    digit_delay: float = DEFAULT_DIGIT_DELAY
    hangup_after: float | None = None  # None: wait for the far end's BYE (or Ctrl-C)
    answer_timeout: float = DEFAULT_ANSWER_TIMEOUT
    from_user: str = DEFAULT_FROM_USER
    from_display: str | None = None
    local_host: str | None = None  # None: the address the route to the target leaves from
    local_port: int = 0
    username: str | None = None  # digest credentials, for a gateway that challenges
    password: str | None = None
    transport: str = "udp"
    rtp_ports: tuple[int, int] = DEFAULT_RTP_PORTS


@dataclass(frozen=True, slots=True)
class Target:
    """Where the INVITE goes: its Request-URI, the host and port to send to, the transport."""

    uri: str
    host: str
    port: int
    transport: str


def parse_target(text: str, *, tcp: bool = False) -> Target:
    """A dial string (``sip:echo@127.0.0.1:5060``, ``echo@host``) as a target; PhoneError if bad.

    RFC 3261 §19.1.1: the port defaults to 5060 and ``;transport=`` picks the transport. No
    DNS SRV/NAPTR (RFC 3263): a host name is looked up for its address only.
    """
    text = text.strip()
    if _SCHEME_RE.match(text) is None:
        text = f"sip:{text}"  # echo@127.0.0.1:5060, or host:port with no user
    scheme = uri_scheme(text).lower()
    if scheme == "sips":
        raise PhoneError("sips: needs TLS, which this phone does not speak; dial a sip: URI")
    if scheme != "sip":
        raise PhoneError(f"cannot dial a {scheme}: URI; dial a sip: URI (sip:user@host:port)")
    try:
        uri = SipUri.parse(text)
    except SipParseError as error:
        raise PhoneError(f"not a SIP URI: {text} ({error.reason})") from None
    transport = "tcp" if tcp else "udp"
    param = uri.params.get("transport")
    if isinstance(param, str):
        if param.lower() not in TRANSPORTS:
            raise PhoneError(f"transport={param} is not supported (udp or tcp)")
        transport = param.lower()
    return Target(str(uri), uri.host.strip("[]"), uri.port or DEFAULT_SIP_PORT, transport)


def check_options(options: PhoneOptions) -> Target:
    """Every option checked before a socket is opened; the target to dial, or PhoneError."""
    target = parse_target(options.uri, tcp=options.transport == "tcp")
    if options.transport not in TRANSPORTS:
        raise PhoneError(f"transport {options.transport!r} is not supported (udp or tcp)")
    bad = sorted({key for key in options.digits if key.upper() not in KEYS})
    if bad:
        raise PhoneError(f"not DTMF keys: {''.join(bad)} (use 0-9, *, #, A-D)")
    if options.digit_delay < 0:
        raise PhoneError("the DTMF delay cannot be negative")
    if options.hangup_after is not None and options.hangup_after <= 0:
        raise PhoneError("--hangup-after must be more than 0 seconds")
    if options.answer_timeout <= 0:
        raise PhoneError("the answer timeout must be more than 0 seconds")
    if not options.from_user:
        raise PhoneError("the From user cannot be empty")
    if (options.username is None) != (options.password is None):
        raise PhoneError("digest login needs both a user name and a password")
    if options.local_host is not None:
        try:
            ipaddress.ip_address(options.local_host)
        except ValueError:
            raise PhoneError(f"local host {options.local_host} is not an IP address") from None
    if not 0 <= options.local_port <= 65535:
        raise PhoneError(f"local port {options.local_port} is not a port number")
    try:
        PortAllocator(*options.rtp_ports)
    except ValueError as error:
        raise PhoneError(str(error)) from None
    if options.wav_out is not None:
        folder = options.wav_out.parent
        if not folder.is_dir():
            raise PhoneError(f"cannot record to {options.wav_out}: no folder {folder}")
    return target
