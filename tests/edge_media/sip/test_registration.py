"""The trunk registration client (RFC 3261 §10.2) with a fake clock, exact requests and real
digest maths; then the client registering against our own registrar, in memory."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable

import pytest

from edge_media.sip.bindings import Aor
from edge_media.sip.digest import compute_ha1, parse_credentials
from edge_media.sip.digest_server import DigestServer
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.message_parse import parse_message
from edge_media.sip.registrar import (
    ExtensionAuth,
    Registrar,
    RegistrarConfig,
    lookup_username,
)
from edge_media.sip.registration import (
    BACKOFF_MAX,
    RegistrationClient,
    RegistrationError,
    RegistrationState,
    backoff_delay,
    refresh_delay,
)

NOW = 1_700_000_000.0
REGISTRAR = "sip:carrier.test"
AOR = "sip:gw123@carrier.test"
CONTACT = "<sip:gw123@198.51.100.10:5060>"
USERNAME = "gw123"
PASSWORD = "trunk-pw"
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
NONCE_2 = "5ccc069c403ebaf9f0171e9517f40e41"

REGISTER = (
    "REGISTER sip:carrier.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.10:5060;rport;branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:gw123@carrier.test>;tag=from-tag\r\n"
    "To: <sip:gw123@carrier.test>\r\n"
    "Call-ID: trunk-reg-1\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "Contact: <sip:gw123@198.51.100.10:5060>\r\n"
    "Expires: {expires}\r\n"
)


def expected(cseq: int, branch: str, expires: int = 3600, extra: Iterable[str] = ()) -> bytes:
    text = REGISTER.format(cseq=cseq, branch=branch, expires=expires)
    text += "".join(f"{line}\r\n" for line in extra)
    return (text + "Content-Length: 0\r\n\r\n").encode()


def counter(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def make_client(**overrides: object) -> RegistrationClient:
    options: dict[str, object] = {
        "registrar": REGISTRAR,
        "aor": AOR,
        "contact": CONTACT,
        "username": USERNAME,
        "password": PASSWORD,
        "local_address": ("198.51.100.10", 5060),
        "new_branch": counter("-b"),
        "new_tag": lambda: "from-tag",
        "new_call_id": lambda: "trunk-reg-1",
        "new_cnonce": counter("cnonce"),
    }
    options.update(overrides)
    return RegistrationClient(**options)  # type: ignore[arg-type]


def reply(request: SipRequest, status: int, *lines: str, reason: str | None = None) -> SipResponse:
    """The registrar's response as it arrives off the wire."""
    headers = [tuple(line.split(": ", 1)) for line in lines]
    response = make_response(
        request,
        status,
        reason,
        to_tag="carrier-tag",
        extra_headers=headers,  # type: ignore[arg-type]
    )
    parsed = parse_message(bytes(response))
    assert isinstance(parsed, SipResponse)
    return parsed


def www(nonce: str = NONCE, algorithm: str = "MD5", stale: bool = False) -> str:
    stale_part = ", stale=TRUE" if stale else ""
    return (
        f'WWW-Authenticate: Digest realm="carrier.test", nonce="{nonce}"{stale_part}, '
        f'algorithm={algorithm}, qop="auth"'
    )


def digest_response(
    algorithm: str, nonce: str, cnonce: str, nc: int = 1, uri: str = REGISTRAR
) -> str:
    """RFC 7616 §3.4.1 computed here with hashlib, independently of digest.py."""

    def h(text: str) -> str:
        data = text.encode()
        if algorithm == "SHA-256":
            return hashlib.sha256(data).hexdigest()
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    ha1 = h(f"{USERNAME}:carrier.test:{PASSWORD}")
    ha2 = h(f"REGISTER:{uri}")
    return h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")


def authorization(algorithm: str, nonce: str, cnonce: str, nc: int = 1) -> str:
    return (
        f'Digest username="{USERNAME}", realm="carrier.test", nonce="{nonce}", '
        f'uri="{REGISTRAR}", response="{digest_response(algorithm, nonce, cnonce, nc)}", '
        f'algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={nc:08x}'
    )


def registered(client: RegistrationClient, now: float = NOW, granted: int = 3600) -> SipRequest:
    """Drive ``client`` through 401 -> 200 and return the authenticated REGISTER."""
    first = client.start(now) if client.state is RegistrationState.IDLE else client.on_deadline(now)
    assert first is not None
    second = client.on_response(reply(first, 401, www()), now)
    assert second is not None
    assert (
        client.on_response(reply(second, 200, f"Contact: {CONTACT};expires={granted}"), now) is None
    )
    return second


# --------------------------------------------------------------------------------------------
# Timing functions
# --------------------------------------------------------------------------------------------


class TestTiming:
    @pytest.mark.parametrize(
        ("granted", "delay"), [(3600, 3000.0), (1201, 601.0), (1200, 600.0), (600, 300.0), (1, 0.5)]
    )
    def test_refresh_delay(self, granted: int, delay: float) -> None:
        assert refresh_delay(granted) == delay

    def test_backoff_doubles_from_60_to_the_1800_cap(self) -> None:
        # RFC 5626 §4.5 with base-time 30 s: min(1800, 30 * 2**failures) times the draw.
        assert [backoff_delay(n, 1.0) for n in range(1, 8)] == [
            60.0, 120.0, 240.0, 480.0, 960.0, 1800.0, 1800.0,
        ]  # fmt: skip
        assert backoff_delay(3, 0.5) == 120.0
        assert backoff_delay(10_000, 1.0) == BACKOFF_MAX
        assert backoff_delay(2, 1.0, base=5.0, cap=15.0) == 15.0

    @pytest.mark.parametrize(("failures", "factor"), [(0, 1.0), (1, 0.0), (1, 1.5)])
    def test_backoff_rejects_bad_arguments(self, failures: int, factor: float) -> None:
        with pytest.raises(ValueError):
            backoff_delay(failures, factor)


# --------------------------------------------------------------------------------------------
# The client alone
# --------------------------------------------------------------------------------------------


class TestRegister:
    def test_first_register(self) -> None:
        client = make_client(user_agent="Agera/1.0")
        request = client.start(NOW)
        assert bytes(request) == expected(1, "-b1", extra=["User-Agent: Agera/1.0"])
        assert client.state is RegistrationState.REGISTERING and client.pending
        assert client.next_deadline() is None

    @pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
    def test_401_gets_one_authenticated_retry(self, algorithm: str) -> None:
        client = make_client()
        first = client.start(NOW)
        retry = client.on_response(reply(first, 401, www(algorithm=algorithm)), NOW)
        assert retry is not None
        assert bytes(retry) == expected(
            2, "-b2", extra=[f"Authorization: {authorization(algorithm, NONCE, 'cnonce1')}"]
        )

    def test_strongest_algorithm_is_chosen(self) -> None:
        client = make_client()
        first = client.start(NOW)
        retry = client.on_response(
            reply(first, 401, www(algorithm="MD5"), www(NONCE_2, algorithm="SHA-256")), NOW
        )
        assert retry is not None
        credentials = parse_credentials(retry.headers.get("authorization") or "")
        assert (credentials.algorithm, credentials.nonce) == ("SHA-256", NONCE_2)

    def test_407_is_answered_with_proxy_authorization(self) -> None:
        client = make_client()
        first = client.start(NOW)
        challenge = www().replace("WWW-Authenticate", "Proxy-Authenticate")
        retry = client.on_response(reply(first, 407, challenge), NOW)
        assert retry is not None
        assert bytes(retry) == expected(
            2, "-b2", extra=[f"Proxy-Authorization: {authorization('MD5', NONCE, 'cnonce1')}"]
        )
        # A 401 next keeps the proxy credentials (nc 2 under the same nonce) and adds ours.
        final = client.on_response(reply(retry, 401, www(NONCE_2)), NOW)
        assert final is not None
        assert bytes(final) == expected(
            3,
            "-b3",
            extra=[
                f"Proxy-Authorization: {authorization('MD5', NONCE, 'cnonce2', nc=2)}",
                f"Authorization: {authorization('MD5', NONCE_2, 'cnonce3')}",
            ],
        )

    def test_200_registers_with_the_granted_interval_of_our_contact(self) -> None:
        client = make_client()
        request = client.start(NOW)
        ok = reply(
            request,
            200,
            "Contact: <sip:other@192.0.2.1>;expires=60",
            f"Contact: {CONTACT};expires=1800",
            "Expires: 900",
        )
        assert client.on_response(ok, NOW) is None
        assert client.state is RegistrationState.REGISTERED and not client.pending
        assert (client.granted_expires, client.registered_until) == (1800, NOW + 1800)
        assert client.next_deadline() == NOW + 1200  # 600 s before expiry
        assert client.is_registered(NOW + 1799) and not client.is_registered(NOW + 1800)
        assert client.failures == 0 and client.last_error is None

    @pytest.mark.parametrize(
        ("lines", "granted"),
        [
            (("Contact: <sip:other@192.0.2.1>;expires=60", "Expires: 900"), 900),
            ((f"Contact: {CONTACT};expires=soon", "Expires: 900"), 900),
            ((), 3600),  # nothing said: what we asked for
        ],
    )
    def test_granted_falls_back_to_expires_then_the_request(
        self, lines: tuple[str, ...], granted: int
    ) -> None:
        client = make_client()
        client.on_response(reply(client.start(NOW), 200, *lines), NOW)
        assert client.granted_expires == granted

    def test_public_address_from_via_received_and_rport(self) -> None:
        client = make_client()
        request = client.start(NOW)
        ok = reply(request, 200)
        via = "SIP/2.0/UDP 198.51.100.10:5060;rport=61000;branch=z9hG4bK-b1;received=203.0.113.9"
        client.on_response(ok.with_headers(ok.headers.with_replaced("Via", via)), NOW)
        assert client.public_address == ("203.0.113.9", 61000)

    def test_refresh_keeps_call_id_and_tag_and_raises_cseq(self) -> None:
        client = make_client()
        registered(client)
        assert client.on_deadline(NOW + 2999) is None
        refresh = client.on_deadline(NOW + 3000)
        assert refresh is not None and bytes(refresh) == expected(3, "-b3")
        assert client.state is RegistrationState.REGISTERED and client.next_deadline() is None
        # A refresh starts without credentials; the next challenge is answered again.
        again = client.on_response(reply(refresh, 401, www(NONCE_2)), NOW + 3000)
        assert again is not None and again.cseq.number == 4
        client.on_response(reply(again, 200, "Expires: 600"), NOW + 3000)
        assert client.next_deadline() == NOW + 3300

    def test_stale_nonce_retries_without_counting_a_failure(self) -> None:
        client = make_client()
        first = client.start(NOW)
        second = client.on_response(reply(first, 401, www()), NOW)
        assert second is not None
        third = client.on_response(reply(second, 401, www(NONCE_2, stale=True)), NOW)
        assert third is not None
        assert third.headers.get("authorization") == authorization("MD5", NONCE_2, "cnonce2")
        assert client.failures == 0 and client.state is RegistrationState.REGISTERING

    @pytest.mark.parametrize(
        "challenge", [www(), www(NONCE_2), www(stale=True)], ids=["same", "new", "stale-same"]
    )
    def test_rejected_credentials_fail_without_retrying(self, challenge: str) -> None:
        client = make_client()
        first = client.start(NOW)
        second = client.on_response(reply(first, 401, www()), NOW)
        assert second is not None
        assert client.on_response(reply(second, 401, challenge), NOW + 1) is None
        assert client.state is RegistrationState.FAILED
        assert client.last_error == RegistrationError(401, "credentials rejected", NOW + 1)
        assert client.next_deadline() == NOW + 1 + 60

    def test_endless_stale_challenges_end_the_attempt(self) -> None:
        client = make_client()
        request = client.start(NOW)
        nonces = [f"n{i}" for i in range(10)]
        sent = 1
        for index, nonce in enumerate(nonces):
            request = client.on_response(reply(request, 401, www(nonce, stale=index > 0)), NOW)
            if request is None:
                break
            sent += 1
        assert sent == 5  # the first REGISTER and four retries
        assert client.last_error == RegistrationError(401, "too many challenges", NOW)

    @pytest.mark.parametrize(
        "challenge",
        [
            'WWW-Authenticate: Basic realm="carrier.test"',
            'WWW-Authenticate: Digest realm="carrier.test", nonce="x", algorithm=SHA-512-256',
        ],
    )
    def test_unusable_challenge_fails(self, challenge: str) -> None:
        client = make_client()
        assert client.on_response(reply(client.start(NOW), 401, challenge), NOW) is None
        assert client.state is RegistrationState.FAILED
        assert client.last_error is not None and client.last_error.reason.startswith(
            "unusable challenge"
        )

    def test_401_without_challenge_fails(self) -> None:
        client = make_client()
        assert client.on_response(reply(client.start(NOW), 401), NOW) is None
        assert client.state is RegistrationState.FAILED

    def test_423_retries_with_min_expires_and_keeps_it(self) -> None:
        client = make_client(expires=60)
        first = client.start(NOW)
        second = client.on_response(reply(first, 401, www()), NOW)
        assert second is not None
        retry = client.on_response(reply(second, 423, "Min-Expires: 300"), NOW)
        assert retry is not None
        # The answered challenge is reused (nc 2) so the retry needs no new 401.
        assert bytes(retry) == expected(
            3,
            "-b3",
            expires=300,
            extra=[f"Authorization: {authorization('MD5', NONCE, 'cnonce2', nc=2)}"],
        )
        client.on_response(reply(retry, 200, f"Contact: {CONTACT};expires=300"), NOW)
        refresh = client.on_deadline(NOW + 150)
        assert refresh is not None and refresh.headers.get("expires") == "300"

    @pytest.mark.parametrize("lines", [(), ("Min-Expires: 60",), ("Min-Expires: soon",)])
    def test_423_without_a_higher_min_expires_fails(self, lines: tuple[str, ...]) -> None:
        client = make_client(expires=60)
        assert client.on_response(reply(client.start(NOW), 423, *lines), NOW) is None
        assert client.state is RegistrationState.FAILED
        assert client.last_error == RegistrationError(423, "423 without a usable Min-Expires", NOW)

    def test_granted_zero_is_a_failure(self) -> None:
        client = make_client()
        client.on_response(reply(client.start(NOW), 200, f"Contact: {CONTACT};expires=0"), NOW)
        assert client.state is RegistrationState.FAILED
        assert client.last_error == RegistrationError(200, "registrar granted no time", NOW)

    def test_stray_and_provisional_responses_are_ignored(self) -> None:
        client = make_client()
        request = client.start(NOW)
        other = SipRequest.build(
            "REGISTER", REGISTRAR, from_="<sip:a@b>;tag=1", to="<sip:a@b>", call_id="x", cseq=1,
            via="SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-x",
        )  # fmt: skip
        assert client.on_response(reply(other, 200), NOW) is None
        old_cseq = request.with_headers(request.headers.with_replaced("CSeq", "9 REGISTER"))
        assert client.on_response(reply(old_cseq, 200), NOW) is None
        assert client.on_response(reply(request, 100), NOW) is None
        assert client.state is RegistrationState.REGISTERING and client.pending

    def test_misuse(self) -> None:
        client = make_client()
        client.start(NOW)
        with pytest.raises(RuntimeError, match="already started"):
            client.start(NOW)
        with pytest.raises(ValueError, match="without a user"):
            make_client(registrar="sip:gw123@carrier.test")
        with pytest.raises(ValueError, match="must be a SIP URI"):
            make_client(aor="tel:+15005550006")
        with pytest.raises(ValueError, match="positive"):
            make_client(expires=0)

    def test_ipv6_tcp_via_and_a_contact_given_as_a_uri(self) -> None:
        from edge_media.sip.uri import SipUri

        client = make_client(
            local_address=("2001:db8::10", 5080),
            transport="tcp",
            contact=SipUri.parse("sip:gw123@[2001:db8::10]:5080;transport=tcp"),
            new_branch=lambda: "z9hG4bK-own",
        )
        request = client.start(NOW)
        assert (
            request.headers.get("via") == "SIP/2.0/TCP [2001:db8::10]:5080;rport;branch=z9hG4bK-own"
        )
        assert request.headers.get("contact") == "<sip:gw123@[2001:db8::10]:5080;transport=tcp>"


class TestFailures:
    @pytest.mark.parametrize(
        ("status", "state"),
        [
            (403, RegistrationState.FAILED),
            (404, RegistrationState.FAILED),
            (302, RegistrationState.FAILED),
            (603, RegistrationState.FAILED),
            (408, RegistrationState.BACKING_OFF),
            (480, RegistrationState.BACKING_OFF),
            (500, RegistrationState.BACKING_OFF),
            (503, RegistrationState.BACKING_OFF),
        ],
    )
    def test_final_failures(self, status: int, state: RegistrationState) -> None:
        client = make_client()
        response = reply(client.start(NOW), status)
        assert client.on_response(response, NOW) is None
        assert client.state is state and client.failures == 1
        assert client.last_error == RegistrationError(status, response.reason, NOW)
        assert client.next_deadline() == NOW + 60

    def test_retry_after_is_honoured_up_to_the_cap(self) -> None:
        client = make_client()
        client.on_response(reply(client.start(NOW), 503, "Retry-After: 17 (maintenance)"), NOW)
        assert client.next_deadline() == NOW + 17
        retry = client.on_deadline(NOW + 17)
        assert retry is not None
        client.on_response(reply(retry, 503, "Retry-After: 999999"), NOW + 17)
        assert client.next_deadline() == NOW + 17 + BACKOFF_MAX

    def test_timeouts_back_off_exponentially_to_the_cap_with_jitter(self) -> None:
        draws = iter([1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 1.0])
        client = make_client(rand_factor=lambda: next(draws))
        now = NOW
        request = client.start(now)
        waits = []
        for _ in range(7):
            assert client.on_timeout(now) is None
            assert client.state is RegistrationState.BACKING_OFF
            assert client.last_error == RegistrationError(None, "REGISTER timed out", now)
            deadline = client.next_deadline()
            assert deadline is not None
            waits.append(deadline - now)
            assert client.on_deadline(deadline - 0.001) is None
            now = deadline
            request = client.on_deadline(now)
            assert request is not None
            assert client.state is RegistrationState.REGISTERING
        assert waits == [60.0, 60.0, 240.0, 480.0, 960.0, 1800.0, 1350.0]
        assert client.failures == 7
        # A 200 resets the count: the next failure waits 60 s again.
        client.on_response(reply(request, 200), now)
        assert client.failures == 0 and client.state is RegistrationState.REGISTERED
        refresh = client.on_deadline(now + 3000)
        assert refresh is not None
        client.on_timeout(now + 3032)
        assert client.next_deadline() == now + 3032 + 60

    def test_failed_refresh_keeps_the_binding_until_it_expires(self) -> None:
        client = make_client()
        registered(client)
        refresh = client.on_deadline(NOW + 3000)
        assert refresh is not None
        client.on_response(reply(refresh, 500), NOW + 3000)
        assert client.state is RegistrationState.BACKING_OFF
        assert client.is_registered(NOW + 3599) and client.registered_until == NOW + 3600
        assert client.next_deadline() == NOW + 3060

    def test_timeout_without_pending_request_does_nothing(self) -> None:
        client = make_client()
        assert client.on_timeout(NOW) is None and client.state is RegistrationState.IDLE


class TestStop:
    def test_stop_unregisters_our_contact_with_authentication(self) -> None:
        client = make_client()
        registered(client)
        unregister = client.stop(NOW + 10)
        assert unregister is not None and bytes(unregister) == expected(3, "-b3", expires=0)
        assert client.state is RegistrationState.STOPPED and client.next_deadline() is None
        retry = client.on_response(reply(unregister, 401, www(NONCE_2)), NOW + 10)
        assert retry is not None
        assert bytes(retry) == expected(
            4,
            "-b4",
            expires=0,
            extra=[f"Authorization: {authorization('MD5', NONCE_2, 'cnonce2')}"],
        )
        assert client.on_response(reply(retry, 200), NOW + 10) is None
        assert client.registered_until is None and not client.pending
        assert client.stop(NOW + 11) is None

    def test_stop_before_anything_was_bound(self) -> None:
        client = make_client()
        assert client.stop(NOW) is None and client.state is RegistrationState.STOPPED

    def test_stop_waits_for_the_register_in_flight(self) -> None:
        client = make_client()
        first = client.start(NOW)
        assert client.stop(NOW) is None  # §10.2: one REGISTER at a time
        unregister = client.on_response(reply(first, 200, "Expires: 600"), NOW + 1)
        assert unregister is not None and unregister.headers.get("expires") == "0"
        assert client.state is RegistrationState.STOPPED

    def test_stop_during_a_challenge_of_a_new_registration_sends_nothing(self) -> None:
        client = make_client()
        first = client.start(NOW)
        client.stop(NOW)
        assert client.on_response(reply(first, 401, www()), NOW) is None
        assert client.state is RegistrationState.STOPPED and not client.pending

    def test_stop_during_a_refresh_that_times_out_still_unregisters(self) -> None:
        client = make_client()
        registered(client)
        assert client.on_deadline(NOW + 3000) is not None
        assert client.stop(NOW + 3001) is None
        unregister = client.on_timeout(NOW + 3030)
        assert unregister is not None and unregister.cseq.number == 4
        assert client.on_timeout(NOW + 3062) is None
        assert client.last_error == RegistrationError(None, "un-REGISTER timed out", NOW + 3062)

    def test_failed_unregister_is_recorded(self) -> None:
        client = make_client()
        registered(client)
        unregister = client.stop(NOW)
        assert unregister is not None
        retry = client.on_response(reply(unregister, 401, www(NONCE_2)), NOW)
        assert retry is not None
        assert client.on_response(reply(retry, 401, www(NONCE_2)), NOW) is None
        assert client.last_error == RegistrationError(401, "credentials rejected", NOW)
        assert client.state is RegistrationState.STOPPED and client.next_deadline() is None

    def test_restart_after_stop_keeps_call_id_and_cseq(self) -> None:
        client = make_client()
        registered(client)
        unregister = client.stop(NOW)
        assert unregister is not None
        with pytest.raises(RuntimeError, match="still in flight"):
            client.start(NOW)
        client.on_response(reply(unregister, 503), NOW)
        assert client.last_error == RegistrationError(503, "Service Unavailable", NOW)
        again = client.start(NOW + 5)
        assert bytes(again) == expected(4, "-b4")


# --------------------------------------------------------------------------------------------
# Our client against our registrar
# --------------------------------------------------------------------------------------------

REALM = "agera"
SECRET = b"cross-test-secret-0123456789abcd"
EXTENSION = ExtensionAuth(
    account_id="acc_1",
    extension="101",
    username="alice",
    realm=REALM,
    ha1_md5=compute_ha1("alice", REALM, "alice-pw", "MD5"),
    ha1_sha256=compute_ha1("alice", REALM, "alice-pw", "SHA-256"),
)
PHONE_SOURCE = ("203.0.113.50", 41000)


class Wire:
    """Carries messages between a client and a registrar as bytes, as a network would."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self.statuses: list[int] = []
        self.responses: list[SipResponse] = []

    def exchange(self, client: RegistrationClient, request: SipRequest | None, now: float) -> None:
        """Deliver ``request`` and every follow-up at ``now`` until the client sends nothing."""
        while request is not None:
            received = parse_message(bytes(request))
            assert isinstance(received, SipRequest)
            user = lookup_username(received, REALM)
            auth = EXTENSION if user == EXTENSION.username else None
            outcome = self.registrar.handle(received, PHONE_SOURCE, "udp", auth, now)
            self.statuses.append(outcome.response.status)
            self.responses.append(outcome.response)
            response = parse_message(bytes(outcome.response))
            assert isinstance(response, SipResponse)
            request = client.on_response(response, now)


def phone(expires: int = 3600) -> RegistrationClient:
    return make_client(
        registrar="sip:127.0.0.1:5060",
        aor="sip:alice@127.0.0.1",
        contact="<sip:alice@10.1.1.20:5062>",
        username="alice",
        password="alice-pw",
        local_address=("10.1.1.20", 5062),
        expires=expires,
    )


class TestAgainstOurRegistrar:
    @pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256",), ("SHA-256", "MD5")])
    def test_register_refresh_and_unregister(self, algorithms: tuple[str, ...]) -> None:
        tags = counter("gw-")
        registrar = Registrar(
            DigestServer(REALM, SECRET, algorithms=algorithms),
            new_tag=tags,
            config=RegistrarConfig(default_expires=1800, max_expires=1800),
        )
        wire = Wire(registrar)
        client = phone()
        aor = Aor("acc_1", "101")

        wire.exchange(client, client.start(NOW), NOW)
        assert wire.statuses == [401, 200]
        assert client.state is RegistrationState.REGISTERED
        assert client.granted_expires == 1800  # the registrar shortened 3600
        (binding,) = registrar.store.contacts_for(aor, NOW)
        assert str(binding.uri) == "sip:alice@10.1.1.20:5062" and binding.behind_nat
        assert binding.target().address == PHONE_SOURCE
        assert binding.call_id == client.call_id and binding.cseq == 2

        refresh_at = client.next_deadline()
        assert refresh_at == NOW + 1200
        wire.exchange(client, client.on_deadline(refresh_at), refresh_at)
        assert wire.statuses[2:] == [401, 200]
        (refreshed,) = registrar.store.contacts_for(aor, refresh_at)
        assert (refreshed.cseq, refreshed.expires_at) == (4, refresh_at + 1800)
        assert refreshed.registered_at == NOW

        wire.exchange(client, client.stop(refresh_at + 10), refresh_at + 10)
        assert wire.statuses[4:] == [401, 200]
        assert registrar.store.contacts_for(aor, refresh_at + 10) == []
        assert client.registered_until is None

    def test_min_expires(self) -> None:
        registrar = Registrar(
            DigestServer(REALM, SECRET),
            new_tag=counter("gw-"),
            config=RegistrarConfig(min_expires=300),
        )
        wire = Wire(registrar)
        client = phone(expires=120)
        wire.exchange(client, client.start(NOW), NOW)
        # Challenge, then 423 for 120 s, then the retry at Min-Expires reuses the credentials.
        assert wire.statuses == [401, 423, 200]
        assert client.expires == 300 and client.granted_expires == 300
        assert client.next_deadline() == NOW + 150

    def test_stale_nonce(self) -> None:
        registrar = Registrar(DigestServer(REALM, SECRET, nonce_ttl=30), new_tag=counter("gw-"))
        wire = Wire(registrar)
        client = phone()
        first = parse_message(bytes(client.start(NOW)))
        assert isinstance(first, SipRequest)
        challenge = registrar.handle(first, PHONE_SOURCE, "udp", None, NOW).response
        answer = client.on_response(challenge, NOW)
        # The answer reaches the registrar 40 s later: stale=TRUE, then the fresh nonce works.
        wire.exchange(client, answer, NOW + 40)
        assert wire.statuses == [401, 200]
        assert all(
            "stale=TRUE" in value for value in wire.responses[0].headers.get_all("www-authenticate")
        )
        assert client.failures == 0 and client.state is RegistrationState.REGISTERED

    def test_wrong_password_fails_and_backs_off(self) -> None:
        registrar = Registrar(DigestServer(REALM, SECRET), new_tag=counter("gw-"))
        wire = Wire(registrar)
        client = make_client(
            registrar="sip:127.0.0.1:5060",
            aor="sip:alice@127.0.0.1",
            contact="<sip:alice@10.1.1.20:5062>",
            username="alice",
            password="not-it",
            local_address=("10.1.1.20", 5062),
        )
        wire.exchange(client, client.start(NOW), NOW)
        assert wire.statuses == [401, 403]
        assert client.state is RegistrationState.FAILED
        assert client.last_error == RegistrationError(403, "Forbidden", NOW)
        assert client.next_deadline() == NOW + 60
