"""Extensions at the UA: REGISTER, and INVITEs that must prove they come from an extension.

Why apart from `ua`: this is where a stranger costs us something (a directory lookup, two
DynamoDB reads in production) and where guessing happens. So every lookup goes through
`UnknownUsers` (a username that missed is not looked up again for a while), a REGISTER without
credentials is challenged without any lookup, and every refused credential or malformed
authorization is reported to the `SourceGuard`, which bans a source that keeps failing.
`registrar` and `digest_server` stay sans-I/O; this module awaits the directory around them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from edge_media.sip.digest import DigestError, parse_credentials
from edge_media.sip.digest_server import AuthOk, AuthStale
from edge_media.sip.extensions import ExtensionDirectory
from edge_media.sip.message import SipResponse
from edge_media.sip.negative_cache import UnknownUsers
from edge_media.sip.registrar import ExtensionAuth, Registrar, credentials_username
from edge_media.sip.source_guard import SourceGuard, Strike
from edge_media.sip.transaction import RequestReceived, TransactionId

__all__ = ["ExtensionIntake"]

logger = logging.getLogger("agera.sip.ua")

Reply = Callable[..., None]  # UserAgent._reply(txn, request, status, reason=None, extra=())
Accept = Callable[[RequestReceived, tuple[str, str | None, int], ExtensionAuth], None]


class ExtensionIntake:
    """REGISTER and authenticated INVITEs for one `UserAgent`.

    ``clock`` is the loop's monotonic time (bans and the miss cache); digest nonces use the
    wall clock, as every node must agree on it.
    """

    def __init__(
        self,
        registrar: Registrar,
        directory: ExtensionDirectory,
        *,
        send_response: Callable[[TransactionId, SipResponse], None],
        reply: Reply,
        accept: Accept,
        clock: Callable[[], float],
        guard: SourceGuard | None = None,
        unknown_users: UnknownUsers | None = None,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.registrar = registrar
        self.directory = directory
        self.guard = guard
        self.unknown_users = unknown_users
        self._send_response = send_response
        self._reply = reply
        self._accept = accept
        self._clock = clock
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("directory_lookups", 0)
        self.stats.setdefault("directory_misses_cached", 0)

    async def lookup(self, username: str) -> ExtensionAuth | None:
        """The extension, or None; a recent miss is answered without asking the directory."""
        unknown = self.unknown_users
        if unknown is not None and unknown.known_missing(username, self._clock()):
            self.stats["directory_misses_cached"] += 1
            return None
        self.stats["directory_lookups"] += 1
        found = await self.directory.lookup(username)
        if unknown is not None:
            if found is None:
                unknown.missed(username, self._clock())
            else:
                unknown.forget(username)
        return found

    def _strike(self, source: str, kind: Strike) -> None:
        if self.guard is not None:
            self.guard.strike(source, kind, self._clock())

    async def on_register(self, event: RequestReceived) -> None:
        request = event.request
        registrar = self.registrar
        username = credentials_username(request, registrar.realm)
        auth = await self.lookup(username) if username is not None else None
        outcome = registrar.handle(request, event.addr, event.transport.lower(), auth, time.time())
        self._send_response(event.txn_id, outcome.response)
        status = outcome.response.status
        if outcome.changed:
            logger.info(
                "REGISTER %s from %s:%d: %d contact(s) bound",
                outcome.aor, event.addr[0], event.addr[1], len(outcome.bindings),
            )  # fmt: skip
        elif not outcome.accepted and status != 401:
            logger.info(
                "REGISTER from %s:%d refused: %d %s", event.addr[0], event.addr[1],
                status, outcome.detail,
            )  # fmt: skip
        if status == 403:
            self._strike(event.addr[0], "auth")
        elif status == 400:
            self._strike(event.addr[0], "malformed")

    async def authorize_invite(self, event: RequestReceived) -> None:
        """An INVITE from outside the trusted sources must come from an extension (407)."""
        request = event.request
        merge_key = (request.call_id, request.from_tag, request.cseq.number)
        digest = self.registrar.digest
        now = time.time()
        header = request.headers.get("proxy-authorization")
        if header is None:
            self._reply(event.txn_id, request, 407, "Proxy Authentication Required",
                        _challenge(digest.challenge(now)))  # fmt: skip
            return
        try:
            username = parse_credentials(header).username
        except DigestError:
            self._strike(event.addr[0], "malformed")
            self._reply(event.txn_id, request, 400, "Malformed Proxy-Authorization")
            return
        extension = await self.lookup(username)
        lookup = extension.ha1 if extension is not None else (lambda *_: None)
        verdict = digest.verify(header, "INVITE", str(request.uri), now, lookup)
        if isinstance(verdict, AuthOk) and extension is not None:
            self._accept(event, merge_key, extension)
        elif isinstance(verdict, AuthStale):
            self._reply(event.txn_id, request, 407, "Proxy Authentication Required",
                        _challenge(digest.challenge(now, stale=True)))  # fmt: skip
        else:
            self.stats["rejected"] = self.stats.get("rejected", 0) + 1
            logger.info("INVITE %s from %s: bad credentials", request.call_id, event.addr[0])
            self._strike(event.addr[0], "auth")
            self._reply(event.txn_id, request, 403, "Forbidden (bad credentials)")


def _challenge(values: Iterable[str]) -> list[tuple[str, str]]:
    return [("Proxy-Authenticate", value) for value in values]
