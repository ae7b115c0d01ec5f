"""Tests for digest, digest_client and digest_server: RFC vectors, header grammar, both sides."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest

from edge_media.sip.digest import (
    Algorithm,
    Challenge,
    Credentials,
    DigestError,
    compute_ha1,
    compute_response,
    parse_challenge,
    parse_credentials,
)
from edge_media.sip.digest_client import DigestClient
from edge_media.sip.digest_server import (
    AuthBad,
    AuthOk,
    AuthStale,
    DigestServer,
    sip_uris_equivalent,
)

NOW = 1_700_000_000.0  # fake wall clock; every server call gets it explicitly
SECRET = b"0123456789abcdef-test-secret"
REALM = "gw.test"
URI = "sip:bot@127.0.0.1:5060"


def md5(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Published vectors
# --------------------------------------------------------------------------------------------

RFC2617_NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
RFC2617_OPAQUE = "5ccc069c403ebaf9f0171e9517f40e41"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


class TestRfcVectors:
    def test_rfc2617_section_3_5(self) -> None:
        ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
        response = compute_response(
            ha1=ha1,
            algorithm=Algorithm.MD5,
            nonce=RFC2617_NONCE,
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc=1,
            cnonce="0a4f113b",
        )
        assert response == "6629fae49393a05397450978507c4ef1"

    def test_rfc2617_client_builds_the_published_header(self) -> None:
        challenge = (
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            f'nonce="{RFC2617_NONCE}", opaque="{RFC2617_OPAQUE}"'
        )
        value = DigestClient().respond(
            challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
        )
        assert value == (
            'Digest username="Mufasa", realm="testrealm@host.com", '
            f'nonce="{RFC2617_NONCE}", uri="/dir/index.html", '
            'response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", '
            f'opaque="{RFC2617_OPAQUE}", qop=auth, nc=00000001'
        )

    @pytest.mark.parametrize(
        ("algorithm", "expected"),
        [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ],
    )
    def test_rfc7616_section_3_9_1(self, algorithm: str, expected: str) -> None:
        parsed = Algorithm.parse(algorithm)
        assert parsed is not None
        ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
        response = compute_response(
            ha1=ha1,
            algorithm=parsed,
            nonce=RFC7616_NONCE,
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc=1,
            cnonce=RFC7616_CNONCE,
        )
        assert response == expected

    @pytest.mark.parametrize("order", [("MD5", "SHA-256"), ("SHA-256", "MD5")])
    def test_rfc7616_client_prefers_sha256_in_any_order(self, order: tuple[str, str]) -> None:
        challenges = [
            f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
            f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
            for alg in order
        ]
        value = DigestClient().respond(
            challenges,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            cnonce=RFC7616_CNONCE,
        )
        creds = parse_credentials(value)
        assert creds.algorithm == "SHA-256"
        assert creds.response == (
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        )
        assert creds.opaque == RFC7616_OPAQUE


class TestHashErrors:
    def test_unknown_algorithm_for_ha1(self) -> None:
        with pytest.raises(DigestError, match="unsupported algorithm 'SHA-512-256'"):
            compute_ha1("u", "r", "p", "SHA-512-256")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"algorithm": Algorithm.MD5_SESS, "cnonce": None}, "MD5-sess needs a cnonce"),
            ({"qop": "auth-conf"}, "unsupported qop 'auth-conf'"),
            ({"nc": None}, "qop needs nc and cnonce"),
        ],
    )
    def test_response_inputs(self, kwargs: dict[str, object], message: str) -> None:
        base: dict[str, object] = {
            "ha1": "0" * 32,
            "algorithm": Algorithm.MD5,
            "nonce": "n",
            "method": "INVITE",
            "uri": URI,
            "qop": "auth",
            "nc": 1,
            "cnonce": "c",
        }
        with pytest.raises(DigestError, match=re.escape(message)):
            compute_response(**{**base, **kwargs})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Header grammar
# --------------------------------------------------------------------------------------------


class TestParseChallenge:
    def test_fields(self) -> None:
        challenge = parse_challenge(
            'Digest realm="carrier.test", nonce="abc", algorithm=SHA-256, '
            'qop="auth,auth-int", opaque="xyz", stale=TRUE, domain="sip:carrier.test"'
        )
        assert challenge == Challenge(
            realm="carrier.test",
            nonce="abc",
            algorithm="SHA-256",
            qop=("auth", "auth-int"),
            opaque="xyz",
            stale=True,
            domain="sip:carrier.test",
        )
        assert challenge.supported_algorithm is Algorithm.SHA_256

    def test_sipp_uas_auth_challenge(self) -> None:
        # The 401 of the SIPp uas_auth.xml scenario that tests/interop/test_edge_calls.py runs:
        # MD5, no qop (RFC 2069 mode).
        challenge = parse_challenge(
            'Digest realm="carrier.test", nonce="12341a1b2c3d4e5f6", algorithm=MD5'
        )
        assert (challenge.algorithm, challenge.qop) == ("MD5", ())

    def test_names_scheme_and_values_case(self) -> None:
        challenge = parse_challenge(
            'digest REALM="r", Nonce="n", ALGORITHM=sha-256-SESS, QOP="AUTH", Stale=false'
        )
        assert challenge.realm == "r"
        assert challenge.supported_algorithm is Algorithm.SHA_256_SESS
        assert challenge.qop == ("auth",)
        assert challenge.stale is False

    def test_quoted_pair_escapes(self) -> None:
        challenge = parse_challenge(r'Digest realm="a \"quoted\" \\ realm", nonce="n"')
        assert challenge.realm == 'a "quoted" \\ realm'
        assert str(challenge) == r'Digest realm="a \"quoted\" \\ realm", nonce="n"'

    def test_lenient_spacing_empty_elements_and_unquoted_values(self) -> None:
        challenge = parse_challenge(
            'Digest  realm = "r" ,, nonce=ab/c+d==, algorithm="MD5",qop=auth , '
        )
        assert (challenge.realm, challenge.nonce, challenge.algorithm) == ("r", "ab/c+d==", "MD5")
        assert challenge.qop == ("auth",)

    def test_unknown_params_kept(self) -> None:
        challenge = parse_challenge('Digest realm="r", nonce="n", charset=UTF-8')
        assert challenge.extras == (("charset", "UTF-8"),)
        assert str(challenge) == 'Digest realm="r", nonce="n", charset="UTF-8"'

    def test_format(self) -> None:
        challenge = Challenge("r", "n", "SHA-256", ("auth",), opaque="o", stale=True)
        assert str(challenge) == (
            'Digest realm="r", nonce="n", opaque="o", stale=TRUE, algorithm=SHA-256, qop="auth"'
        )
        assert parse_challenge(str(challenge)) == challenge

    def test_format_all_fields(self) -> None:
        challenge = Challenge(
            "r", "n", None, ("auth", "auth-int"), domain="sip:a.test sip:b.test", userhash=True
        )
        assert str(challenge) == (
            'Digest realm="r", domain="sip:a.test sip:b.test", nonce="n", '
            'qop="auth,auth-int", userhash=true'
        )
        assert parse_challenge(str(challenge)) == challenge

    def test_format_refuses_a_non_token_algorithm(self) -> None:
        with pytest.raises(DigestError, match="algorithm 'MD5, evil=1' is not a token"):
            str(Challenge("r", "n", "MD5, evil=1"))


class TestParseCredentials:
    def test_fields(self) -> None:
        creds = parse_credentials(
            'Digest username="alice", realm="r", nonce="n", uri="sip:bob@127.0.0.1", '
            'response="ABCDEF", algorithm=MD5, cnonce="c", qop=auth, nc=0000000A, opaque="o"'
        )
        assert creds == Credentials(
            username="alice",
            realm="r",
            nonce="n",
            uri="sip:bob@127.0.0.1",
            response="ABCDEF",
            algorithm="MD5",
            cnonce="c",
            opaque="o",
            qop="auth",
            nc=10,
        )
        assert parse_credentials(str(creds)) == creds

    def test_rfc2069_form(self) -> None:
        creds = parse_credentials(
            'Digest username="a", realm="r", nonce="n", uri="sip:x@127.0.0.1", response="f"'
        )
        assert (creds.qop, creds.nc, creds.cnonce) == (None, None, None)


HEADER_ERRORS = [
    ("", "missing authentication scheme"),
    ("Basic dXNlcjpwYXNz", "unsupported authentication scheme 'Basic'"),
    ("Digest", "no digest parameters"),
    ('Digest="x"', "expected whitespace after 'Digest'"),
    ('Digest realm="r" nonce="n"', "expected ',' after 'realm'"),
    ('Digest realm "r"', "expected '=' after 'realm'"),
    ('Digest ="r"', "expected a parameter name"),
    ("Digest realm=", "empty value for 'realm'"),
    ('Digest realm="r', "unterminated quoted string"),
    ('Digest realm="r\\', "unterminated quoted string"),
    ('Digest realm="a\x01b", nonce="n"', "control character in quoted string"),
    ('Digest realm="r", REALM="s", nonce="n"', "duplicate parameter 'REALM'"),
    ("Digest " + ", ".join(f"p{i}=1" for i in range(33)), "more than 32 parameters"),
    ('Digest realm="' + "r" * 9000 + '"', "longer than 8192"),
]


class TestHeaderErrors:
    @pytest.mark.parametrize(("value", "message"), HEADER_ERRORS)
    def test_challenge(self, value: str, message: str) -> None:
        with pytest.raises(DigestError, match=message_pattern(message)):
            parse_challenge(value)

    @pytest.mark.parametrize(("value", "message"), HEADER_ERRORS)
    def test_credentials(self, value: str, message: str) -> None:
        with pytest.raises(DigestError, match=message_pattern(message)):
            parse_credentials(value)

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ('Digest nonce="n"', "challenge has no realm"),
            ('Digest realm="r"', "challenge has no nonce"),
            ('Digest realm="r", nonce="n", stale=maybe', "stale='maybe' is neither"),
        ],
    )
    def test_challenge_semantics(self, value: str, message: str) -> None:
        with pytest.raises(DigestError, match=message_pattern(message)):
            parse_challenge(value)

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (', qop=auth, cnonce="c"', "need both cnonce and nc"),
            (', qop=auth, nc=00000001, cnonce="c"', None),
            (", nc=00000001", "carry nc without qop"),
            (', qop=auth, cnonce="c", nc=1', "nc '1' is not 8 hex digits"),
            (', qop=auth, cnonce="c", nc=0000000g', "nc '0000000g' is not 8 hex digits"),
        ],
    )
    def test_credentials_semantics(self, extra: str, message: str | None) -> None:
        value = 'Digest username="u", realm="r", nonce="n", uri="sip:a@127.0.0.1", response="x"'
        if message is None:
            assert parse_credentials(value + extra).nc == 1
        else:
            with pytest.raises(DigestError, match=message_pattern(message)):
                parse_credentials(value + extra)

    def test_credentials_need_each_mandatory_field(self) -> None:
        full = {"username": "u", "realm": "r", "nonce": "n", "uri": "sip:a@h", "response": "x"}
        for missing in full:
            value = "Digest " + ", ".join(f'{k}="{v}"' for k, v in full.items() if k != missing)
            with pytest.raises(DigestError, match=f"credentials have no {missing}"):
                parse_credentials(value)

    @pytest.mark.parametrize("parser", [parse_challenge, parse_credentials])
    def test_every_truncation_and_corruption_raises_only_digest_error(
        self, parser: Callable[[str], object]
    ) -> None:
        value = (
            'Digest username="Mufasa", realm="r\\"x", nonce="abc", uri="sip:a@127.0.0.1", '
            'response="0123", algorithm=SHA-256, cnonce="c", qop=auth, nc=00000001'
        )
        variants = [value[:end] for end in range(len(value))]
        variants += [
            value[:i] + c + value[i + 1 :] for i in range(len(value)) for c in '"\\,= \x00é'
        ]
        outcomes = set()
        for variant in variants:
            try:
                parser(variant)
                outcomes.add("ok")
            except DigestError:
                outcomes.add("DigestError")
        assert outcomes == {"ok", "DigestError"}

    def test_formatting_refuses_line_breaks(self) -> None:
        with pytest.raises(DigestError, match="CR or LF"):
            str(Challenge("r\r\nX-Injected: 1", "n"))


def message_pattern(message: str) -> str:
    return re.escape(message)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def challenge_value(algorithm: str = "MD5", qop: str | None = "auth", nonce: str = "n1") -> str:
    value = f'Digest realm="{REALM}", nonce="{nonce}", algorithm={algorithm}'
    return value + (f', qop="{qop}"' if qop is not None else "")


class TestClient:
    def test_nonce_count_increments_per_nonce(self) -> None:
        client = DigestClient()
        values = [
            client.respond(challenge_value(nonce=n), "REGISTER", URI, "u", "p", cnonce="c")
            for n in ("n1", "n1", "n2", "n1")
        ]
        assert [parse_credentials(v).nc for v in values] == [1, 2, 1, 3]

    def test_nonce_memory_is_bounded(self) -> None:
        client = DigestClient(max_nonces=1)
        for nonce in ("n1", "n2", "n1"):
            value = client.respond(
                challenge_value(nonce=nonce), "INVITE", URI, "u", "p", cnonce="c"
            )
        assert parse_credentials(value).nc == 1  # n1 was forgotten when n2 arrived

    def test_auth_int_when_offered_alone(self) -> None:
        body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
        value = DigestClient().respond(
            challenge_value(qop="auth-int"), "INVITE", URI, "u", "p", body, cnonce="cn"
        )
        creds = parse_credentials(value)
        ha2 = md5(f"INVITE:{URI}:{md5(body)}")
        expected = md5(f"{md5(f'u:{REALM}:p')}:n1:00000001:cn:auth-int:{ha2}")
        assert (creds.qop, creds.response) == ("auth-int", expected)

    def test_auth_preferred_over_auth_int(self) -> None:
        value = DigestClient().respond(
            challenge_value(qop="auth-int,auth"), "INVITE", URI, "u", "p", cnonce="c"
        )
        assert parse_credentials(value).qop == "auth"

    def test_rfc2069_mode_without_qop(self) -> None:
        # What sipp uas_auth.xml sends: no qop, so no cnonce or nc either.
        value = DigestClient().respond(
            challenge_value(qop=None), "INVITE", URI, "gateway", "s3cret", cnonce="unused"
        )
        expected = md5(f"{md5(f'gateway:{REALM}:s3cret')}:n1:{md5(f'INVITE:{URI}')}")
        assert value == (
            f'Digest username="gateway", realm="{REALM}", nonce="n1", uri="{URI}", '
            f'response="{expected}", algorithm=MD5'
        )

    @pytest.mark.parametrize(("algorithm", "h"), [("MD5-sess", md5), ("SHA-256-sess", sha256)])
    def test_session_algorithms(self, algorithm: str, h: Callable[[str], str]) -> None:
        value = DigestClient().respond(
            challenge_value(algorithm), "REGISTER", URI, "u", "p", cnonce="cn"
        )
        ha1 = h(f"{h(f'u:{REALM}:p')}:n1:cn")
        expected = h(f"{ha1}:n1:00000001:cn:auth:{h(f'REGISTER:{URI}')}")
        assert parse_credentials(value).response == expected

    def test_userhash(self) -> None:
        challenge = challenge_value("SHA-256") + ", userhash=true"
        creds = parse_credentials(
            DigestClient().respond(challenge, "REGISTER", URI, "u", "p", cnonce="c")
        )
        assert (creds.username, creds.userhash) == (sha256(f"u:{REALM}"), True)

    def test_unusable_challenges_are_skipped(self) -> None:
        value = DigestClient().respond(
            [
                'Basic realm="x"',
                challenge_value("SHA-512-256"),
                challenge_value("MD5", qop="auth-conf"),
                challenge_value("SHA-256-sess", qop=None),  # -sess needs a cnonce, so a qop
                challenge_value("MD5"),
            ],
            "INVITE",
            URI,
            "u",
            "p",
            cnonce="c",
        )
        assert parse_credentials(value).algorithm == "MD5"

    def test_nothing_usable(self) -> None:
        with pytest.raises(DigestError, match="no usable digest challenge"):
            DigestClient().respond(
                [challenge_value("SHA-512-256"), "Basic realm=x"],
                "INVITE",
                URI,
                "u",
                "p",
                cnonce="c",
            )

    def test_cnonce_required_with_qop(self) -> None:
        with pytest.raises(DigestError, match="cnonce is required"):
            DigestClient().respond(challenge_value(), "INVITE", URI, "u", "p", cnonce="")

    def test_topmost_wins_between_equal_strengths(self) -> None:
        value = DigestClient().respond(
            [challenge_value("MD5", nonce="first"), challenge_value("MD5-sess", nonce="second")],
            "INVITE",
            URI,
            "u",
            "p",
            cnonce="c",
        )
        assert parse_credentials(value).nonce == "first"


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------

USERS = {"alice": "wonderland", "bob": "builder"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(username, realm, password, algorithm)


def sign_in(
    client: DigestClient,
    challenges: list[str],
    *,
    user: str = "alice",
    password: str = "wonderland",
    method: str = "INVITE",
    uri: str = URI,
    cnonce: str = "0a4f113b",
) -> str:
    return client.respond(challenges, method, uri, user, password, cnonce=cnonce)


class TestServer:
    def test_challenge_values(self) -> None:
        server = DigestServer(REALM, SECRET)
        values = server.challenge(NOW)
        parsed = [parse_challenge(v) for v in values]
        assert [c.algorithm for c in parsed] == ["SHA-256", "MD5"]
        assert {c.nonce for c in parsed} == {server.new_nonce(NOW)}
        assert all(c.qop == ("auth",) and c.realm == REALM and not c.stale for c in parsed)
        assert values[0] == f'Digest realm="{REALM}", nonce="{parsed[0].nonce}", ' + (
            'algorithm=SHA-256, qop="auth"'
        )

    def test_stale_flag_and_algorithm_subset(self) -> None:
        (value,) = DigestServer(REALM, SECRET).challenge(NOW, stale=True, algorithms=("MD5",))
        challenge = parse_challenge(value)
        assert (challenge.stale, challenge.algorithm) == (True, "MD5")

    def test_salt_changes_nonce(self) -> None:
        server = DigestServer(REALM, SECRET)
        assert server.new_nonce(NOW, b"a") != server.new_nonce(NOW, b"b")

    @pytest.mark.parametrize("algorithms", [("SHA-256",), ("MD5",), ("SHA-256", "MD5")])
    def test_round_trip_ok(self, algorithms: tuple[str, ...]) -> None:
        server = DigestServer(REALM, SECRET, algorithms=algorithms)
        value = sign_in(DigestClient(), server.challenge(NOW))
        outcome = server.verify(value, "INVITE", URI, NOW + 1, lookup)
        assert outcome == AuthOk("alice", Algorithm.parse(algorithms[0]) or Algorithm.MD5)

    def test_other_node_with_same_secret_accepts(self) -> None:
        value = sign_in(DigestClient(), DigestServer(REALM, SECRET).challenge(NOW))
        other = DigestServer(REALM, SECRET)
        assert isinstance(other.verify(value, "INVITE", URI, NOW, lookup), AuthOk)

    def test_stale_then_rechallenge(self) -> None:
        server = DigestServer(REALM, SECRET, nonce_ttl=300.0)
        client = DigestClient()
        value = sign_in(client, server.challenge(NOW))
        late = NOW + 301.0
        assert server.verify(value, "INVITE", URI, late, lookup) == AuthStale("alice")
        retry = sign_in(client, server.challenge(late, stale=True))
        assert server.verify(retry, "INVITE", URI, late, lookup) == AuthOk(
            "alice", Algorithm.SHA_256
        )

    def test_fresh_at_exactly_ttl(self) -> None:
        server = DigestServer(REALM, SECRET, nonce_ttl=300.0)
        value = sign_in(DigestClient(), server.challenge(NOW))
        assert isinstance(server.verify(value, "INVITE", URI, NOW + 300.0, lookup), AuthOk)

    def test_expired_nonce_with_wrong_password_is_bad_not_stale(self) -> None:
        server = DigestServer(REALM, SECRET)
        value = sign_in(DigestClient(), server.challenge(NOW), password="nope")
        outcome = server.verify(value, "INVITE", URI, NOW + 3600, lookup)
        assert isinstance(outcome, AuthBad)
        assert "wrong response" in outcome.reason

    def test_replayed_nonce_count(self) -> None:
        server = DigestServer(REALM, SECRET)
        client = DigestClient()
        challenges = server.challenge(NOW)
        first = sign_in(client, challenges)
        second = sign_in(client, challenges)
        assert isinstance(server.verify(first, "INVITE", URI, NOW, lookup), AuthOk)
        assert isinstance(server.verify(second, "INVITE", URI, NOW, lookup), AuthOk)
        replay = server.verify(first, "INVITE", URI, NOW, lookup)
        assert replay == AuthBad("nonce count 00000001 replayed (last 00000002)")

    def test_nonce_counts_are_per_user(self) -> None:
        server = DigestServer(REALM, SECRET)
        challenges = server.challenge(NOW)
        alice = sign_in(DigestClient(), challenges)
        bob = sign_in(DigestClient(), challenges, user="bob", password="builder")
        assert isinstance(server.verify(alice, "INVITE", URI, NOW, lookup), AuthOk)
        assert server.verify(bob, "INVITE", URI, NOW, lookup) == AuthOk("bob", Algorithm.SHA_256)

    def test_replay_memory_is_an_lru(self) -> None:
        server = DigestServer(REALM, SECRET, max_tracked_nonces=2)
        clients = {name: DigestClient() for name in "abc"}
        challenges = {name: server.challenge(NOW + i) for i, name in enumerate("abc")}

        def use(name: str) -> str:
            value = sign_in(clients[name], challenges[name])
            assert isinstance(server.verify(value, "INVITE", URI, NOW + 5, lookup), AuthOk)
            return value

        use("a")
        b1 = use("b")
        a2 = use("a")  # refreshes a: b is now the least recently used
        use("c")  # evicts b
        assert isinstance(server.verify(a2, "INVITE", URI, NOW + 5, lookup), AuthBad)
        # b's replay passes: evicted entries lose replay protection until the nonce expires.
        assert isinstance(server.verify(b1, "INVITE", URI, NOW + 5, lookup), AuthOk)

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"password": "nope"}, "wrong response (bad password or tampered request)"),
            ({"user": "mallory"}, "unknown user 'mallory'"),
            ({"method": "BYE"}, "wrong response (bad password or tampered request)"),
            ({"uri": "sip:other@127.0.0.1:5060"}, "does not match the Request-URI"),
        ],
    )
    def test_bad_credentials(self, change: dict[str, str], reason: str) -> None:
        server = DigestServer(REALM, SECRET)
        kwargs = {"user": "alice", "password": "wonderland", "method": "INVITE", "uri": URI}
        kwargs.update(change)
        value = DigestClient().respond(
            server.challenge(NOW),
            kwargs["method"],
            kwargs["uri"],
            kwargs["user"],
            kwargs["password"],
            cnonce="c",
        )
        outcome = server.verify(value, "INVITE", URI, NOW, lookup)
        assert isinstance(outcome, AuthBad)
        assert reason in outcome.reason

    def test_equivalent_request_uri_is_accepted(self) -> None:
        server = DigestServer(REALM, SECRET)
        value = sign_in(
            DigestClient(),
            server.challenge(NOW),
            uri="sip:bot@127.0.0.1:5060;transport=UDP",
        )
        outcome = server.verify(
            value, "INVITE", "SIP:bot@127.0.0.1:5060;Transport=udp", NOW, lookup
        )
        assert isinstance(outcome, AuthOk)

    def test_nonce_from_another_secret(self) -> None:
        server = DigestServer(REALM, SECRET)
        foreign = DigestServer(REALM, b"another-secret-of-16+bytes")
        value = sign_in(DigestClient(), foreign.challenge(NOW))
        outcome = server.verify(value, "INVITE", URI, NOW, lookup)
        assert outcome == AuthBad("nonce was not issued by this realm")

    def test_nonce_bound_to_realm(self) -> None:
        # Same secret, other realm: the realm is inside the MAC, so the nonce does not carry over.
        server = DigestServer(REALM, SECRET)
        nonce = DigestServer("other.test", SECRET).new_nonce(NOW)
        value = sign_in(DigestClient(), [challenge_value("SHA-256", nonce=nonce)])
        outcome = server.verify(value, "INVITE", URI, NOW, lookup)
        assert outcome == AuthBad("nonce was not issued by this realm")

    def test_wrong_realm(self) -> None:
        server = DigestServer(REALM, SECRET)
        value = sign_in(DigestClient(), DigestServer("other.test", SECRET).challenge(NOW))
        outcome = server.verify(value, "INVITE", URI, NOW, lookup)
        assert outcome == AuthBad("realm 'other.test' is not ours")

    @pytest.mark.parametrize("nonce", ["not base64!", "AAAA", "", "ü"])
    def test_garbage_nonce(self, nonce: str) -> None:
        server = DigestServer(REALM, SECRET)
        value = sign_in(DigestClient(), [challenge_value("SHA-256", nonce=nonce)])
        outcome = server.verify(value, "INVITE", URI, NOW, lookup)
        assert outcome == AuthBad("nonce was not issued by this realm")

    def test_tampered_nonce(self) -> None:
        server = DigestServer(REALM, SECRET)
        nonce = server.new_nonce(NOW)
        tampered = ("B" if nonce[0] == "A" else "A") + nonce[1:]
        value = sign_in(DigestClient(), [challenge_value("SHA-256", nonce=tampered)])
        assert server.verify(value, "INVITE", URI, NOW, lookup) == AuthBad(
            "nonce was not issued by this realm"
        )

    def test_nonce_from_the_future(self) -> None:
        server = DigestServer(REALM, SECRET)
        value = sign_in(DigestClient(), server.challenge(NOW + 60))
        assert server.verify(value, "INVITE", URI, NOW, lookup) == AuthBad(
            "nonce is from the future"
        )

    def test_algorithm_not_offered(self) -> None:
        server = DigestServer(REALM, SECRET, algorithms=("SHA-256",))
        nonce = server.new_nonce(NOW)
        value = sign_in(DigestClient(), [challenge_value("MD5", nonce=nonce)])
        assert server.verify(value, "INVITE", URI, NOW, lookup) == AuthBad(
            "algorithm 'MD5' was not offered"
        )

    def test_qop_required(self) -> None:
        server = DigestServer(REALM, SECRET)
        nonce = server.new_nonce(NOW)
        value = sign_in(DigestClient(), [challenge_value("SHA-256", qop=None, nonce=nonce)])
        assert server.verify(value, "INVITE", URI, NOW, lookup) == AuthBad(
            "qop None was not offered (need qop=auth)"
        )

    def test_nc_zero_rejected(self) -> None:
        server = DigestServer(REALM, SECRET)
        creds = parse_credentials(sign_in(DigestClient(), server.challenge(NOW)))
        zero = Credentials(**{**_fields(creds), "nc": 0})
        assert server.verify(zero, "INVITE", URI, NOW, lookup) == AuthBad(
            "nonce count must start at 00000001"
        )

    def test_userhash_not_accepted(self) -> None:
        server = DigestServer(REALM, SECRET)
        creds = parse_credentials(sign_in(DigestClient(), server.challenge(NOW)))
        hashed = Credentials(**{**_fields(creds), "userhash": True})
        assert server.verify(hashed, "INVITE", URI, NOW, lookup) == AuthBad(
            "userhash was not offered"
        )

    @pytest.mark.parametrize(
        "value", ["", "Basic YWxpY2U6d29uZGVybGFuZA==", 'Digest username="a"', 'Digest realm="']
    )
    def test_malformed_credentials_are_bad_not_exceptions(self, value: str) -> None:
        outcome = DigestServer(REALM, SECRET).verify(value, "INVITE", URI, NOW, lookup)
        assert isinstance(outcome, AuthBad)
        assert outcome.reason.startswith("malformed credentials: ")

    def test_configuration_checks(self) -> None:
        with pytest.raises(ValueError, match="nonce_ttl must be positive"):
            DigestServer(REALM, SECRET, nonce_ttl=0)
        with pytest.raises(ValueError, match="non-negative"):
            DigestServer(REALM, SECRET).new_nonce(-1.0)
        with pytest.raises(ValueError, match="salt longer than 32 bytes"):
            DigestServer(REALM, SECRET).new_nonce(NOW, b"x" * 33)
        with pytest.raises(ValueError, match="at least 16 bytes"):
            DigestServer(REALM, b"short")
        with pytest.raises(ValueError, match="unsupported algorithm"):
            DigestServer(REALM, SECRET, algorithms=("SHA-512-256",))
        with pytest.raises(ValueError, match="subset"):
            DigestServer(REALM, SECRET, algorithms=("MD5",)).challenge(NOW, algorithms=("SHA-256",))


def _fields(creds: Credentials) -> dict[str, object]:
    return {name: getattr(creds, name) for name in Credentials.__dataclass_fields__}


# --------------------------------------------------------------------------------------------
# RFC 3261 §19.1.4 URI comparison
# --------------------------------------------------------------------------------------------


class TestUriEquivalence:
    @pytest.mark.parametrize(
        ("a", "b"),
        [
            # RFC 3261 §19.1.4, the equivalent pairs
            ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
            ("sip:[::1]:5060", "SIP:[::1]:5060"),
            ("sip:+15550100;npdi@127.0.0.1;user=phone", "sip:+15550100;npdi@127.0.0.1;user=phone"),
        ],
    )
    def test_equivalent(self, a: str, b: str) -> None:
        assert sip_uris_equivalent(a, b)
        assert sip_uris_equivalent(b, a)

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            # RFC 3261 §19.1.4, the non-equivalent pairs
            ("sip:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            # and a few more
            ("sip:bob@biloxi.com;maddr=127.0.0.1", "sip:bob@biloxi.com"),
            ("sip:bob@biloxi.com;user=phone", "sip:bob@biloxi.com"),
            ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
            ("tel:+15550100", "TEL:+15550100"),
            ("sip:bob@biloxi.com;lr=on", "sip:bob@biloxi.com;lr=off"),
        ],
    )
    def test_not_equivalent(self, a: str, b: str) -> None:
        assert not sip_uris_equivalent(a, b)
        assert not sip_uris_equivalent(b, a)


def test_host_uri_match_accepts_the_request_uri_without_its_user() -> None:
    from edge_media.sip.digest import compute_ha1
    from edge_media.sip.digest_client import DigestClient
    from edge_media.sip.digest_server import AuthBad, AuthOk, DigestServer

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        return compute_ha1(username, realm, "pw", algorithm)

    for mode, expected in (("exact", AuthBad), ("host", AuthOk)):
        server = DigestServer("r", b"k" * 32, algorithms=("MD5",), uri_match=mode)
        challenge = server.challenge(1000.0)
        value = DigestClient().respond(
            challenge, "INVITE", "sip:10.0.0.1:5060", "u", "pw", cnonce="c"
        )
        verdict = server.verify(value, "INVITE", "sip:echo@10.0.0.1:5060", 1000.0, lookup)
        assert isinstance(verdict, expected), (mode, verdict)
        # Another host is never accepted.
        other = DigestClient().respond(
            challenge, "INVITE", "sip:10.0.0.2:5060", "u", "pw", cnonce="d"
        )
        assert isinstance(
            server.verify(other, "INVITE", "sip:echo@10.0.0.1:5060", 1000.0, lookup), AuthBad
        )
