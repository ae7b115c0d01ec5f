"""The client side of SIP digest authentication: answering a trunk's or registrar's challenge.

Why it is stateful: the nonce-count (RFC 7616 §3.4) must rise with each request made under the
same nonce, so one `DigestClient` per trunk or registration remembers the last few nonces. The
caller passes in the ``cnonce``, so nothing here draws randomness.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from edge_media.sip.digest import (
    QOP_AUTH,
    QOP_AUTH_INT,
    Algorithm,
    Challenge,
    Credentials,
    DigestError,
    compute_ha1,
    compute_response,
    parse_challenge,
)

__all__ = ["DigestClient"]

# How many nonces' nonce-counts to remember (one per trunk/registrar in practice).
MAX_CLIENT_NONCES = 16
MAX_NONCE_COUNT = 0xFFFFFFFF  # nc is 8 hex digits (RFC 7616 §3.4)


def _usable(challenge: Challenge) -> tuple[Algorithm, str | None] | None:
    algorithm = challenge.supported_algorithm
    if algorithm is None:
        return None
    if not challenge.qop:
        return None if algorithm.session else (algorithm, None)
    # Prefer qop=auth: it needs no body and every server that offers auth-int offers auth too.
    if QOP_AUTH in challenge.qop:
        return algorithm, QOP_AUTH
    if QOP_AUTH_INT in challenge.qop:
        return algorithm, QOP_AUTH_INT
    return None


class DigestClient:
    """Answers challenges for one set of credentials and counts nonce uses.

    One instance per trunk or registration: the nonce-count (RFC 7616 §3.4) must rise with
    each request made under the same nonce, so the object remembers the last few nonces.
    """

    def __init__(self, max_nonces: int = MAX_CLIENT_NONCES) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._max_nonces = max_nonces

    @staticmethod
    def choose(challenges: Sequence[str | Challenge]) -> tuple[Challenge, Algorithm, str | None]:
        """Pick the challenge to answer: strongest supported algorithm, topmost on a tie.

        RFC 8760 §2.4 has the UAC use the topmost challenge it supports unless local policy
        says otherwise; our policy is "strongest hash first", so a server (or a meddler)
        listing MD5 above SHA-256 cannot talk us down to MD5.
        """
        best: tuple[Challenge, Algorithm, str | None] | None = None
        problems: list[str] = []
        for item in challenges:
            try:
                challenge = parse_challenge(item) if isinstance(item, str) else item
            except DigestError as exc:
                problems.append(str(exc))  # RFC 8760 §2.4: ignore challenges we cannot use
                continue
            usable = _usable(challenge)
            if usable is None:
                problems.append(f"unsupported algorithm/qop in {challenge}")
                continue
            if best is None or usable[0].strength > best[1].strength:
                best = (challenge, *usable)
        if best is None:
            reasons = "; ".join(problems) or "no challenges"
            raise DigestError(f"no usable digest challenge: {reasons}")
        return best

    def respond(
        self,
        challenge: str | Challenge | Sequence[str | Challenge],
        method: str,
        uri: str,
        username: str,
        password: str,
        body: bytes = b"",
        *,
        cnonce: str,
    ) -> str:
        """Build the credentials value for the chosen challenge.

        ``uri`` is the Request-URI of the request being sent (RFC 3261 §22.4 item 3),
        ``cnonce`` a fresh random string from the caller, used whenever a qop applies.
        """
        candidates = [challenge] if isinstance(challenge, str | Challenge) else list(challenge)
        chosen, algorithm, qop = self.choose(candidates)
        # -sess challenges always come with a qop (``_usable``), so qop decides both.
        if qop is not None and not cnonce:
            raise DigestError("a cnonce is required for this challenge")
        nc = self._next_count(chosen.nonce) if qop is not None else None
        sent_cnonce = cnonce if qop is not None else None
        realm = chosen.realm
        ha1 = compute_ha1(username, realm, password, algorithm.base.value)
        response = compute_response(
            ha1=ha1,
            algorithm=algorithm,
            nonce=chosen.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=sent_cnonce,
            body=body,
        )
        # RFC 7616 §3.4.4: with userhash the username travels as H(username ":" realm).
        sent_username = (
            algorithm.hexdigest(f"{username}:{realm}".encode()) if chosen.userhash else username
        )
        credentials = Credentials(
            username=sent_username,
            realm=realm,
            nonce=chosen.nonce,
            uri=uri,
            response=response,
            algorithm=chosen.algorithm,
            cnonce=sent_cnonce,
            opaque=chosen.opaque,
            qop=qop,
            nc=nc,
            userhash=chosen.userhash,
        )
        return str(credentials)

    def _next_count(self, nonce: str) -> int:
        count = self._counts.pop(nonce, 0) + 1
        if count > MAX_NONCE_COUNT:
            raise DigestError("nonce count exhausted; wait for a new challenge")
        self._counts[nonce] = count
        while len(self._counts) > self._max_nonces:
            self._counts.popitem(last=False)
        return count
