"""The registrar for our extensions (RFC 3261 §10.3), sans-I/O.

Why it looks like this: phones register from behind NATs, reboot with new Contacts, send
REGISTERs out of order and retry with stale nonces; each of those has a rule in §10.3, and each
rule sits next to the code below. The module never looks anything up and never persists: the UA
finds the extension's credentials first (`lookup_username` says whom to look up), calls
`Registrar.handle`, sends the response and writes the reported binding changes to its database.
Time (`now`, wall-clock seconds shared by every node, as digest nonces carry it) and random
values (To tags, nonce salts) are passed in, so every outcome is reproducible under test.

Calls to an extension go to the address its REGISTER came from, not to the Contact host (a
private address behind NAT): each `Binding` keeps both, and `Binding.target` says where to send
and which Request-URI to use (RFC 3581 §4 applied to requests, as SIP-aware NAT practice does).
Bindings live in a `BindingStore` (`bindings.py`) that the UA also reads to route calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol

from edge_media.sip import _abnf
from edge_media.sip.bindings import Aor, Binding, BindingStore
from edge_media.sip.digest import (
    Algorithm,
    Credentials,
    DigestError,
    compute_response,
    parse_credentials,
)
from edge_media.sip.digest_server import AuthBad, AuthOk, AuthStale, DigestServer
from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import NameAddr
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.uri import SipUri, uri_equal

__all__ = [
    "DEFAULT_EXPIRES",
    "MAX_EXPIRES",
    "MIN_EXPIRES",
    "ExtensionAuth",
    "RegisterOutcome",
    "Registrar",
    "RegistrarConfig",
    "credentials_username",
    "lookup_username",
]

DEFAULT_EXPIRES = 3600  # seconds granted when the REGISTER names no interval (§10.2.1.1)
MIN_EXPIRES = 60  # shorter requests get 423 with Min-Expires (§10.3 step 7)
MAX_EXPIRES = 7200  # longer requests are shortened (§10.3 step 7: "MAY be shortened")
# §10.2.1.1: "Malformed values SHOULD be treated as equivalent to 3600", and values above
# 2**32-1 "MAY" be treated as 2**32-1.
MALFORMED_EXPIRES = 3600
MAX_DELTA_SECONDS = 2**32 - 1
MAX_USER_AGENT_LENGTH = 256  # what shared.models.Registration stores
_MIN_RETRY_AFTER = 1


class _ExtensionLike(Protocol):
    """What `ExtensionAuth.from_extension` reads (shared.models.Extension has these fields)."""

    @property
    def account_id(self) -> str: ...
    @property
    def extension(self) -> str: ...
    @property
    def sip_username(self) -> str: ...
    @property
    def realm(self) -> str: ...
    @property
    def ha1_md5(self) -> str: ...
    @property
    def ha1_sha256(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ExtensionAuth:
    """The credentials of the extension a REGISTER claims to be, as the UA looked them up."""

    account_id: str
    extension: str
    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str

    @classmethod
    def from_extension(cls, extension: _ExtensionLike) -> ExtensionAuth:
        """From a stored extension (shared.models.Extension), without importing pydantic here."""
        return cls(
            extension.account_id,
            extension.extension,
            extension.sip_username,
            extension.realm,
            extension.ha1_md5,
            extension.ha1_sha256,
        )

    @property
    def aor(self) -> Aor:
        return Aor(self.account_id, self.extension)

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The stored HA1 for a digest check, None unless username and realm are this one's:
        an HA1 is only valid for the realm it was computed with."""
        if username != self.username or realm != self.realm:
            return None
        if algorithm == Algorithm.SHA_256.value:
            return self.ha1_sha256
        if algorithm == Algorithm.MD5.value:
            return self.ha1_md5
        return None


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """Expiry policy (seconds). ``min_expires`` must stay below an hour (§10.3 step 7)."""

    min_expires: int = MIN_EXPIRES
    default_expires: int = DEFAULT_EXPIRES
    max_expires: int = MAX_EXPIRES

    def __post_init__(self) -> None:
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 1 <= min_expires <= default_expires <= max_expires")
        if self.min_expires >= 3600:
            raise ValueError("min_expires must be below one hour (RFC 3261 §10.3 step 7)")


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """What a REGISTER produced: the response to send and the binding changes to persist.

    ``bindings`` is the AOR's whole set after the request (what a 200 lists); ``detail`` says
    why a request was refused, for logs only (never sent to the peer).
    """

    response: SipResponse
    aor: Aor | None = None
    added: tuple[Binding, ...] = ()
    refreshed: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()
    bindings: tuple[Binding, ...] = ()
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return 200 <= self.response.status < 300

    @property
    def changed(self) -> bool:
        return bool(self.added or self.refreshed or self.removed)


def _credentials_for(request: SipRequest, realm: str) -> Credentials | None:
    """The Authorization value for ``realm`` (§22.4: one per realm), None if there is none.

    Raises DigestError when a value cannot be parsed at all.
    """
    for value in request.headers.get_lines("authorization"):
        credentials = parse_credentials(value)
        if credentials.realm == realm:
            return credentials
    return None


def lookup_username(request: SipRequest, realm: str) -> str | None:
    """Whom the UA should look up before `Registrar.handle`: the digest username of the
    credentials for ``realm`` if the REGISTER carries them, else the user part of To.

    None when neither exists (the registrar then only challenges or rejects).
    """
    try:
        credentials = _credentials_for(request, realm)
    except DigestError:
        credentials = None
    if credentials is not None:
        return credentials.username
    try:
        to_uri = request.to.uri
    except SipParseError:
        return None
    if isinstance(to_uri, SipUri) and to_uri.user:
        return to_uri.unescaped_user
    return None


def credentials_username(request: SipRequest, realm: str) -> str | None:
    """The digest username of the REGISTER's credentials for ``realm``; None without any.

    Why apart from `lookup_username`: a REGISTER without credentials (or with unparsable ones)
    is answered 401 (or 400) whoever its To names, so the UA need not look anyone up for it:
    the first REGISTER of every phone, and every probe without credentials, costs no read.
    """
    try:
        credentials = _credentials_for(request, realm)
    except DigestError:
        return None
    return None if credentials is None else credentials.username


def _delta_seconds(value: str) -> int:
    # delta-seconds = 1*DIGIT (§20.19, §20.10); malformed values count as 3600 (§10.2.1.1).
    value = value.strip(" \t")
    if _abnf.DIGITS_RE.fullmatch(value) is None:
        return MALFORMED_EXPIRES
    if len(value.lstrip("0")) > 10:
        return MAX_DELTA_SECONDS
    return min(int(value), MAX_DELTA_SECONDS)


class _Rejected(Exception):
    """Internal: stop processing and answer ``status`` (outcome detail in ``detail``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = tuple(headers)


@dataclass(frozen=True, slots=True)
class _Requested:
    contact: NameAddr
    uri: SipUri
    expires: int  # after the §10.3 step 7 policy; 0 removes
    q: float | None


class Registrar:
    """Answers REGISTER requests for our extensions and keeps their bindings.

    ``new_tag`` makes the To tag of each response; ``new_salt`` (random bytes) keeps nonces
    issued in the same microsecond apart. Usage per REGISTER, after the UA looked up
    ``lookup_username(request, registrar.realm)``::

        outcome = registrar.handle(request, source, "udp", auth_or_none, now)
        send(outcome.response); persist(outcome.added, outcome.refreshed, outcome.removed)
    """

    def __init__(
        self,
        digest: DigestServer,
        *,
        new_tag: Callable[[], str],
        store: BindingStore | None = None,
        config: RegistrarConfig | None = None,
        new_salt: Callable[[], bytes] | None = None,
    ) -> None:
        self.digest = digest
        self.store = BindingStore() if store is None else store
        self.config = RegistrarConfig() if config is None else config
        self._new_tag = new_tag
        self._new_salt = new_salt

    @property
    def realm(self) -> str:
        return self.digest.realm

    def handle(
        self,
        request: SipRequest,
        source: tuple[str, int],
        transport: str,
        auth: ExtensionAuth | None,
        now: float,
    ) -> RegisterOutcome:
        """Process one REGISTER (§10.3) received from ``source`` over ``transport``.

        ``auth`` holds the credentials of the user `lookup_username` named, None if there is no
        such extension: the peer then sees the same challenge a known user gets, and 403 once
        it sends credentials, so probing cannot tell users apart.
        """
        if request.method != "REGISTER":
            raise ValueError(f"not a REGISTER: {request.method}")
        try:
            return self._handle(request, source, transport.lower(), auth, now)
        except _Rejected as rejected:
            return self._reject(request, rejected)
        except SipParseError as exc:
            return self._reject(request, _Rejected(400, exc.reason, reason=_phrase(exc.reason)))

    # -- steps -------------------------------------------------------------------------------
    def _handle(
        self,
        request: SipRequest,
        source: tuple[str, int],
        transport: str,
        auth: ExtensionAuth | None,
        now: float,
    ) -> RegisterOutcome:
        # Step 3 (§10.3): authenticate (§22). Steps 1-2 (Request-URI domain, Require) are
        # the UA's, which runs validate_request first.
        authenticated = self._authenticate(request, auth, now)
        # Step 4: the authenticated user may only change its own bindings.
        aor = self._authorize(request, authenticated)
        # Steps 6-7: contacts and their intervals, then the Call-ID/CSeq ordering rule,
        # applied all-or-nothing ("if and only if all binding updates and additions succeed").
        contacts = request.contacts
        existing = self.store.bindings(aor)
        if contacts == "*":
            kept: list[Binding] = []
            removed = self._wildcard(request, existing, now)
            added: list[Binding] = []
            refreshed: list[Binding] = []
        else:
            requested = self._requested(request, contacts)
            kept, added, refreshed, removed = self._apply(
                request, aor, requested, existing, source, transport, now
            )
        # Contact cap: 503 with Retry-After, not 403. The condition is temporary (a slot frees
        # when the oldest binding expires, usually a phone's contact from before a reboot),
        # while 403 tells a phone its request "SHOULD NOT be repeated" (§21.4.4), so it would
        # stay unregistered until someone touches it. kamailio's max_contacts answers 503 too.
        if len(kept) > self.store.max_bindings_per_aor:
            raise _Rejected(
                503,
                f"{aor} would hold {len(kept)} contacts (limit {self.store.max_bindings_per_aor})",
                reason="Too Many Registered Contacts",
                headers=[("Retry-After", str(self._retry_after(kept, now)))],
            )
        if kept and not self.store.has_room_for(aor):
            raise _Rejected(
                503,
                f"registrar holds {self.store.max_aors} AORs",
                reason="Registrar Full",
                headers=[("Retry-After", str(self.config.min_expires))],
            )
        self.store.replace(aor, kept)
        # Step 8: the 200 lists every current binding with its own "expires" parameter, and
        # "SHOULD include a Date header field".
        current = self.store.contacts_for(aor, now)
        headers = [("Contact", b.listed(now)) for b in current]
        headers.append(("Date", formatdate(now, usegmt=True)))
        response = make_response(request, 200, to_tag=self._to_tag(request), extra_headers=headers)
        return RegisterOutcome(
            response,
            aor,
            tuple(added),
            tuple(refreshed),
            tuple(removed),
            tuple(current),
        )

    def _authenticate(
        self, request: SipRequest, auth: ExtensionAuth | None, now: float
    ) -> ExtensionAuth:
        try:
            credentials = _credentials_for(request, self.realm)
        except DigestError as exc:
            raise _Rejected(
                400, f"malformed Authorization: {exc}", reason="Malformed Authorization"
            ) from None
        if credentials is None:
            raise self._challenge(now, stale=False, detail="no credentials for our realm")
        looked_up: list[str | None] = []

        def lookup_ha1(username: str, realm: str, algorithm: str) -> str | None:
            ha1 = None if auth is None else auth.ha1(username, realm, algorithm)
            looked_up.append(ha1)
            return ha1

        result = self.digest.verify(credentials, "REGISTER", str(request.uri), now, lookup_ha1)
        if isinstance(result, AuthOk) and auth is not None:
            return auth
        if isinstance(result, AuthStale):
            # RFC 7616 §3.3: right password, old nonce: a new challenge with stale=TRUE, so
            # the phone retries without asking its user for a password.
            raise self._challenge(now, stale=True, detail="stale nonce")
        reason = result.reason if isinstance(result, AuthBad) else "no extension"
        if not looked_up:
            # Rejected before the password mattered (a nonce of another node's secret or of an
            # expired secret, an algorithm we did not offer): a fresh challenge lets it retry.
            raise self._challenge(now, stale=False, detail=reason)
        ha1 = looked_up[-1]
        if ha1 is not None and self._password_right(credentials, ha1):
            # The digest was right but its nonce-count was replayed: re-challenge.
            raise self._challenge(now, stale=False, detail=reason)
        # Unknown user and wrong password look the same: 403 (§22.1 leaves the choice; 403
        # stops phones from retrying a password that will not work).
        raise _Rejected(403, reason)

    @staticmethod
    def _password_right(credentials: Credentials, ha1: str) -> bool:
        algorithm = Algorithm.parse(credentials.algorithm)
        if algorithm is None or credentials.nc is None or credentials.cnonce is None:
            return False
        expected = compute_response(
            ha1=ha1.lower(),
            algorithm=algorithm,
            nonce=credentials.nonce,
            method="REGISTER",
            uri=credentials.uri,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        return expected == credentials.response.lower()

    def _challenge(self, now: float, *, stale: bool, detail: str) -> _Rejected:
        salt = b"" if self._new_salt is None else self._new_salt()
        challenges = self.digest.challenge(now, stale=stale, salt=salt)
        return _Rejected(401, detail, headers=[("WWW-Authenticate", c) for c in challenges])

    @staticmethod
    def _authorize(request: SipRequest, auth: ExtensionAuth) -> Aor:
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or not to_uri.user:
            # §10.2: "This address-of-record MUST be a SIP URI or SIPS URI".
            raise _Rejected(400, "To is not a SIP URI with a user part", reason="Bad To")
        user = to_uri.unescaped_user
        if user not in (auth.username, auth.extension):
            raise _Rejected(
                403, f"{auth.username} may not register To user {user!r}", reason="Forbidden"
            )
        return auth.aor

    def _requested(self, request: SipRequest, contacts: Sequence[NameAddr]) -> list[_Requested]:
        header = request.headers.get("expires")
        header_expires = None if header is None else _delta_seconds(header)
        config = self.config
        requested: list[_Requested] = []
        for contact in contacts:
            uri = contact.uri
            if not isinstance(uri, SipUri):
                raise _Rejected(400, f"cannot call contact {uri}", reason="Contact Not SIP")
            # §10.3 step 7: the expires parameter beats the Expires header, which beats the
            # registrar's default.
            param = contact.params.get("expires")
            if "expires" in contact.params:
                expires = _delta_seconds(param or "")
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = config.default_expires
            if 0 < expires < config.min_expires:
                # "If and only if the requested expiration interval is greater than zero AND
                # smaller than one hour AND less than a registrar-configured minimum, the
                # registrar MAY reject the registration with a response of 423".
                raise _Rejected(
                    423,
                    f"{expires} s is below {config.min_expires} s",
                    headers=[("Min-Expires", str(config.min_expires))],
                )
            expires = min(expires, config.max_expires)
            requested.append(_Requested(contact, uri, expires, _parse_q(contact)))
        return requested

    @staticmethod
    def _check_order(request: SipRequest, binding: Binding) -> None:
        # §10.3 step 7: same Call-ID and a CSeq not higher than the stored one means this
        # REGISTER is older than the one that made the binding: "the update MUST be aborted
        # and the request fails" (the all-or-nothing rule above answers 500).
        if binding.call_id == request.call_id and request.cseq.number <= binding.cseq:
            raise _Rejected(
                500,
                f"CSeq {request.cseq.number} is not above {binding.cseq} for {binding.uri}",
                reason="Out Of Order CSeq",
            )

    def _wildcard(
        self, request: SipRequest, existing: Sequence[Binding], now: float
    ) -> list[Binding]:
        # §10.3 step 6: "*" only with Expires: 0 (the parser refuses "*" next to other
        # contacts); step 7 applies the Call-ID/CSeq rule to each binding it removes.
        expires = request.headers.get("expires")
        if expires is None or _delta_seconds(expires) != 0:
            raise _Rejected(400, "Contact * needs Expires: 0", reason="Wildcard Needs Expires 0")
        for binding in existing:
            if binding.expires_at > now:
                self._check_order(request, binding)
        return list(existing)

    def _apply(
        self,
        request: SipRequest,
        aor: Aor,
        requested: Sequence[_Requested],
        existing: Sequence[Binding],
        source: tuple[str, int],
        transport: str,
        now: float,
    ) -> tuple[list[Binding], list[Binding], list[Binding], list[Binding]]:
        # Bindings past their time but not yet swept are dropped (and reported) here.
        live = [b for b in existing if b.expires_at > now]
        removed = [b for b in existing if b.expires_at <= now]
        kept = list(live)
        user_agent = _user_agent(request)
        for item in requested:
            old = _find(live, item.uri)
            if old is not None:
                self._check_order(request, old)
            position = next((i for i, b in enumerate(kept) if uri_equal(b.uri, item.uri)), None)
            if item.expires == 0:
                if position is not None:
                    kept.pop(position)
                continue
            binding = Binding(
                aor=aor,
                contact=NameAddr(
                    item.contact.uri,
                    item.contact.display_name,
                    item.contact.params.without("expires"),
                ),
                source=source,
                transport=transport,
                expires_at=now + item.expires,
                registered_at=now if old is None else old.registered_at,
                updated_at=now,
                call_id=request.call_id,
                cseq=request.cseq.number,
                q=item.q,
                user_agent=user_agent,
            )
            if position is None:
                kept.append(binding)
            else:
                kept[position] = binding
        unchanged = {id(b) for b in live}
        added = [b for b in kept if id(b) not in unchanged and _find(live, b.uri) is None]
        refreshed = [b for b in kept if id(b) not in unchanged and _find(live, b.uri) is not None]
        removed += [b for b in live if _find(kept, b.uri) is None]
        return kept, added, refreshed, removed

    def _retry_after(self, bindings: Iterable[Binding], now: float) -> int:
        """Seconds until the earliest binding expires, when a contact slot frees itself."""
        soonest = min((b.expires_at for b in bindings), default=now + self.config.min_expires)
        return max(_MIN_RETRY_AFTER, math.ceil(soonest - now))

    # -- responses ---------------------------------------------------------------------------
    def _to_tag(self, request: SipRequest) -> str | None:
        return self._new_tag() if request.to_tag is None else None

    def _reject(self, request: SipRequest, rejected: _Rejected) -> RegisterOutcome:
        response = make_response(
            request,
            rejected.status,
            rejected.reason,
            to_tag=self._to_tag(request),
            extra_headers=rejected.headers,
        )
        return RegisterOutcome(response, detail=rejected.detail)


def _phrase(text: str) -> str | None:
    return text if _abnf.REASON_PHRASE_RE.fullmatch(text) else None


# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )   (§25.1)
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def _parse_q(contact: NameAddr) -> float | None:
    if "q" not in contact.params:
        return None
    text = contact.params.get("q") or ""
    if _QVALUE_RE.fullmatch(text) is None:
        raise _Rejected(400, f"malformed q value {text!r}", reason="Malformed q Value")
    return float(text)


def _find(bindings: Iterable[Binding], uri: SipUri) -> Binding | None:
    """The binding for ``uri``, compared as §10.3 step 7 says (§19.1.4 URI equality)."""
    return next((b for b in bindings if uri_equal(b.uri, uri)), None)


def _user_agent(request: SipRequest) -> str | None:
    lines = request.headers.get_lines("user-agent")
    if not lines:
        return None
    return lines[0][:MAX_USER_AGENT_LENGTH]
