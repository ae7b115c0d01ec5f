"""REFER (RFC 3515) with its NOTIFY sipfrag reports (RFC 3420), Referred-By (RFC 3892),
Refer-Sub (RFC 4488) and Replaces (RFC 3891) as carried in Refer-To.

Why: a bot hands a call to a human by blind transfer, and carriers and phones transfer the
bot's calls; both directions must work with real peers (sipp, baresip). The two roles:

* Transferor (we send REFER): `refer_headers` builds Refer-To/Referred-By, and an
  `OutgoingRefer` (module `refer_transferor`) reads the REFER's response and the NOTIFYs that
  follow. When it reaches ``SUCCEEDED`` the UA sends BYE on the original call (blind transfer).
* Transferee (we receive REFER): `parse_refer` validates the request (or raises `ReferError`
  with the status to answer), the UA answers 202 with `ReferNotifier.accept_headers`, then
  sends the NOTIFYs the notifier builds while it INVITEs the target: ``100 Trying`` at once,
  then the target's provisional and final status.

What is refused, and with which status: zero or several Refer-To values, or one that does not
parse, is 400 (§2.4.2: "An agent responding to a REFER method MUST return a 400 (Bad Request)
if the request contained zero or more than one Refer-To header field values"). RFC 3515 names
no status for a well-formed target the recipient cannot act on: §2.4.2 lets a UA whose approval
is denied "decline the request", so a scheme we cannot call (``http:``, ``mailto:``, ``sips:``
without TLS) or a ``method`` other than INVITE is a 603 Decline. 416 only concerns the
Request-URI (RFC 3261 §21.4.16) and 488 a session description (§21.4.26), so neither is used.
``tel:`` targets are accepted: the UA routes them like a dialled number.

Nothing here does I/O or reads a clock; ``now`` is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import quote, unquote

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import NameAddr, parse_name_addr, parse_params, split_list
from edge_media.sip.message import REASON_PHRASES, SipRequest
from edge_media.sip.uri import Params, SipUri, Uri

__all__ = [
    "DEFAULT_REFER_SCHEMES",
    "DEFAULT_SUBSCRIPTION_EXPIRES",
    "NOREFERSUB_OPTION_TAG",
    "REFER_EVENT",
    "SIPFRAG_CONTENT_TYPE",
    "SIPFRAG_MIME",
    "ReferError",
    "ReferNotifier",
    "ReferNotify",
    "ReferRequest",
    "ReferTarget",
    "Replaces",
    "build_sipfrag",
    "format_refer_to",
    "parse_refer",
    "parse_refer_to",
    "parse_replaces",
    "refer_headers",
]

REFER_EVENT: Final = "refer"
# RFC 3515 §2.4.5: "Each NOTIFY MUST contain a body of type "message/sipfrag""; RFC 3420 §4
# registers the version parameter, and peers (sipp, baresip) send version=2.0.
SIPFRAG_MIME: Final = "message/sipfrag"
SIPFRAG_CONTENT_TYPE: Final = "message/sipfrag;version=2.0"
# RFC 4488 §4: the option tag of the Refer-Sub extension.
NOREFERSUB_OPTION_TAG: Final = "norefersub"
# RFC 3515 §2.4.4: "The duration of the subscription is chosen by the agent accepting the
# REFER". Long enough for the target to ring and answer (sipp and baresip use 60-120).
DEFAULT_SUBSCRIPTION_EXPIRES: Final = 120
# Schemes a transferee acts on by default: we place calls over UDP/TCP only (no TLS for sips).
DEFAULT_REFER_SCHEMES: Final = ("sip", "tel")

# hvalue = *( hnv-unreserved / unreserved / escaped ) (RFC 3261 §25.1): ";", "=", "@" and ","
# inside an embedded header value must be %-escaped.
_HVALUE_SAFE = "-_.!~*'()[]/?:+$"


class ReferError(SipParseError):
    """A REFER we will not act on; answer ``status`` (400 or 603) with ``reason``."""


# ---------------------------------------------------------------------------------------------
# Replaces (RFC 3891) as embedded in Refer-To for attended transfer
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Replaces:
    """``Replaces: call-id;to-tag=...;from-tag=...[;early-only]`` (RFC 3891 §6.1)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def __str__(self) -> str:
        early = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{early}"


def parse_replaces(value: str) -> Replaces:
    """Parse a Replaces value (already %-unescaped when it came from a URI header).

    RFC 3891 §6.1: Replaces = callid *(SEMI replaces-param); to-tag and from-tag are required
    by §3 ("A Replaces header field MUST contain exactly one to-tag and exactly one from-tag").
    """
    call_id, semi, rest = value.strip(" \t").partition(";")
    call_id = call_id.strip(" \t")
    if _abnf.CALL_ID_RE.fullmatch(call_id) is None:
        raise ReferError(400, "Malformed Call-ID in Replaces")
    try:
        params = parse_params(semi + rest, what="Replaces") if semi else Params()
    except SipParseError:
        raise ReferError(400, "Malformed Replaces parameters") from None
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    if not to_tag or not from_tag:
        raise ReferError(400, "Replaces needs a to-tag and a from-tag")
    return Replaces(call_id, to_tag, from_tag, "early-only" in params)


# ---------------------------------------------------------------------------------------------
# Refer-To (RFC 3515 §2.1)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReferTarget:
    """Whom to call: ``uri`` is the Request-URI for our INVITE (headers and ``method`` removed,
    RFC 3261 §19.1.5); ``headers`` are the embedded URI headers, unescaped; ``replaces`` is the
    embedded Replaces, parsed, for an attended transfer."""

    uri: Uri
    display_name: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    replaces: Replaces | None = None
    params: Params = field(default_factory=Params)
    method: str = "INVITE"

    def header(self, name: str) -> str | None:
        """An embedded header's unescaped value, matched without case (first one)."""
        key = name.lower()
        return next((value for hname, value in self.headers if hname.lower() == key), None)


def parse_refer_to(value: str) -> ReferTarget:
    """Parse one Refer-To value: ``( name-addr / addr-spec ) *(SEMI generic-param)``.

    Raises ReferError 400 for a malformed value or several comma-separated values. The scheme
    is not checked here (see `parse_refer`).
    """
    try:
        items = split_list(value)
    except SipParseError as exc:
        raise ReferError(400, exc.reason) from None
    if len(items) != 1:
        raise ReferError(400, "Refer-To must hold exactly one value")
    try:
        name_addr = parse_name_addr(items[0], what="Refer-To")
    except SipParseError as exc:
        raise ReferError(400, exc.reason) from None
    uri = name_addr.uri
    headers: tuple[tuple[str, str], ...] = ()
    method = "INVITE"
    if isinstance(uri, SipUri):
        headers = tuple((unquote(name), unquote(value)) for name, value in uri.headers)
        method_param = uri.param("method")
        if method_param is not None:
            method = method_param.upper()
        uri = replace(uri, headers=(), params=uri.params.without("method"))
    target = ReferTarget(uri, name_addr.display_name, headers, None, name_addr.params, method)
    replaces_value = target.header("Replaces")
    if replaces_value is not None:
        target = replace(target, replaces=parse_replaces(replaces_value))
    return target


def format_refer_to(
    uri: Uri, *, replaces: Replaces | None = None, display_name: str | None = None
) -> str:
    """A Refer-To value in name-addr form (required once the URI carries ``?``, §20.10).

    ``replaces`` is embedded as an escaped URI header for an attended transfer (RFC 3891 §4).
    """
    if replaces is not None:
        if not isinstance(uri, SipUri):
            raise ValueError("Replaces can only be embedded in a SIP URI")
        uri = replace(uri, headers=(("Replaces", quote(str(replaces), safe=_HVALUE_SAFE)),))
    return str(NameAddr(uri, display_name))


def refer_headers(
    target: Uri,
    *,
    referred_by: NameAddr | Uri | None = None,
    replaces: Replaces | None = None,
    subscription: bool = True,
) -> list[tuple[str, str]]:
    """Header lines for a REFER we send: Refer-To, Referred-By (RFC 3892) and, to ask for no
    NOTIFYs, ``Refer-Sub: false`` with ``Require: norefersub`` (RFC 4488 §4)."""
    lines = [("Refer-To", format_refer_to(target, replaces=replaces))]
    if referred_by is not None:
        by = referred_by if isinstance(referred_by, NameAddr) else NameAddr(referred_by)
        lines.append(("Referred-By", str(by)))
    if not subscription:
        lines += [("Refer-Sub", "false"), ("Require", NOREFERSUB_OPTION_TAG)]
    return lines


# ---------------------------------------------------------------------------------------------
# Transferee: a REFER we received
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReferRequest:
    """A REFER we may act on.

    ``referred_by_value`` is the Referred-By line as received, to copy into the INVITE to the
    target (RFC 3892 §3). ``subscription`` is False when the REFER carried ``Refer-Sub: false``
    (RFC 4488): answer with `ReferNotifier.accept_headers` and send no NOTIFY.
    """

    target: ReferTarget
    cseq: int
    referred_by: NameAddr | None = None
    referred_by_value: str | None = None
    subscription: bool = True


def _parse_refer_sub(value: str) -> bool:
    # RFC 4488 §3: Refer-Sub = "Refer-Sub" HCOLON refer-sub-value *(SEMI exten)
    # refer-sub-value = "true" / "false"
    flag, semi, rest = value.strip(" \t").partition(";")
    flag = flag.strip(" \t").lower()
    if flag not in ("true", "false"):
        raise ReferError(400, "Refer-Sub must be true or false")
    if semi:
        try:
            parse_params(semi + rest, what="Refer-Sub")
        except SipParseError:
            raise ReferError(400, "Malformed Refer-Sub header") from None
    return flag == "true"


def parse_refer(
    request: SipRequest, *, schemes: tuple[str, ...] = DEFAULT_REFER_SCHEMES
) -> ReferRequest:
    """Validate a received REFER; raises ReferError (400 or 603, see the module docstring).

    ``schemes`` are the target schemes the UA can call.
    """
    try:
        lines = request.headers.get_lines("refer-to")
        if len(lines) != 1:
            raise ReferError(400, f"REFER must carry exactly one Refer-To (got {len(lines)})")
        target = parse_refer_to(lines[0])
        by_value = request.headers.get("referred-by")
        referred_by = None if by_value is None else parse_name_addr(by_value, what="Referred-By")
        sub_value = request.headers.get("refer-sub")
        subscription = True if sub_value is None else _parse_refer_sub(sub_value)
        cseq = request.cseq.number
    except ReferError:
        raise
    except SipParseError as exc:
        raise ReferError(400, exc.reason) from None
    if target.uri.scheme not in {scheme.lower() for scheme in schemes}:
        raise ReferError(603, f"Refer-To scheme {target.uri.scheme} is not supported")
    if target.method != "INVITE":
        raise ReferError(603, f"Refer-To method {target.method} is not supported")
    return ReferRequest(target, cseq, referred_by, by_value, subscription)


@dataclass(frozen=True, slots=True)
class ReferNotify:
    """A NOTIFY to send: pass these to ``Dialog.create_request("NOTIFY", ...)``.

    ``extra_headers`` hold Event and Subscription-State (RFC 3515 §2.4.4, RFC 6665 §8.2.3).
    """

    status: int
    extra_headers: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str = SIPFRAG_CONTENT_TYPE
    terminated: bool = False


def build_sipfrag(status: int, reason: str | None = None) -> bytes:
    """``SIP/2.0 200 OK\\r\\n``: a status line alone is a complete sipfrag (RFC 3420 §2,
    RFC 3515 §2.4.5 "The body of a NOTIFY MUST begin with a SIP Response Status-Line")."""
    if not 100 <= status <= 699:
        raise ValueError(f"status out of range: {status}")
    if reason is None:
        reason = REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")
    if _abnf.REASON_PHRASE_RE.fullmatch(reason) is None:
        raise ValueError(f"invalid reason phrase: {reason!r}")
    return f"SIP/2.0 {status} {reason}\r\n".encode()


class ReferNotifier:
    """The NOTIFY sequence of the implicit subscription a REFER we accepted created.

    ``first_in_dialog``: RFC 3515 §2.4.6 "for the second and subsequent REFER requests a UA
    receives in a given dialog, it MUST include an id parameter in the Event header field of
    each NOTIFY containing the sequence number ... of the REFER". Call `accepted` right after
    the 202 (RFC 6665 §4.2.1.2: the notifier sends a NOTIFY at once), `on_target_response` for
    each response to our INVITE to the target (a final one terminates the subscription), and
    `on_deadline` when `next_deadline` passes without a final response (RFC 6665 ``timeout``).
    With ``Refer-Sub: false`` every method returns None: no NOTIFY is sent.
    """

    __slots__ = ("_last_status", "_terminated", "event", "expires_at", "subscription")

    def __init__(
        self,
        refer: ReferRequest,
        *,
        first_in_dialog: bool,
        now: float,
        expires: int = DEFAULT_SUBSCRIPTION_EXPIRES,
    ) -> None:
        if expires < 1:
            raise ValueError(f"expires must be positive: {expires}")
        self.subscription = refer.subscription
        self.event = REFER_EVENT if first_in_dialog else f"{REFER_EVENT};id={refer.cseq}"
        self.expires_at = now + expires
        self._last_status = 0
        self._terminated = not refer.subscription

    @property
    def terminated(self) -> bool:
        return self._terminated

    def accept_headers(self) -> tuple[tuple[str, str], ...]:
        """Extra header lines for our 202 (RFC 4488 §4: echo ``Refer-Sub: false``)."""
        return () if self.subscription else (("Refer-Sub", "false"),)

    def _notify(self, status: int, reason: str | None, state: str, *, final: bool) -> ReferNotify:
        self._last_status = status
        if final:
            self._terminated = True
        return ReferNotify(
            status,
            (("Event", self.event), ("Subscription-State", state)),
            build_sipfrag(status, reason),
            terminated=final,
        )

    def _active(self, now: float) -> str:
        # RFC 6665 §4.2.2: expires is what is left of the subscription, not its full length.
        return f"active;expires={max(0, math.ceil(self.expires_at - now))}"

    def accepted(self, now: float) -> ReferNotify | None:
        """The initial ``SIP/2.0 100 Trying`` NOTIFY (RFC 3515 §2.4.5)."""
        if self._terminated:
            return None
        return self._notify(100, None, self._active(now), final=False)

    def on_target_response(
        self, status: int, now: float, reason: str | None = None
    ) -> ReferNotify | None:
        """The NOTIFY reporting our INVITE's response from the target, or None.

        A provisional response already reported (or a second 100) needs no NOTIFY. A final one
        ends the subscription: ``terminated;reason=noresource`` (RFC 6665 §4.2.2, as sipp and
        baresip send it). Pass 408 when the INVITE timed out without a response.
        """
        if self._terminated:
            return None
        if status >= 200:
            return self._notify(status, reason, "terminated;reason=noresource", final=True)
        if status == self._last_status:
            return None
        return self._notify(status, reason, self._active(now), final=False)

    def next_deadline(self) -> float | None:
        return None if self._terminated else self.expires_at

    def on_deadline(self, now: float) -> ReferNotify | None:
        """At expiry without a final response: a terminating NOTIFY repeating the last status
        (RFC 3515 §2.4.5: the body "contains the same as the previous NOTIFY")."""
        if self._terminated or now < self.expires_at:
            return None
        return self._notify(self._last_status or 100, None, "terminated;reason=timeout", final=True)
