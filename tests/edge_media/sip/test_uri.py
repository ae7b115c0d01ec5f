"""URIs: SIP/SIPS parsing and rendering, tel and opaque schemes, §19.1.4 comparison."""

from __future__ import annotations

import pytest

from edge_media.sip.errors import SipParseError
from edge_media.sip.uri import (
    AbsoluteUri,
    Params,
    SipUri,
    TelUri,
    check_request_uri,
    escape_user,
    parse_uri,
    quote_string,
    unquote_string,
    uri_equal,
    uri_scheme,
)


def test_full_sip_uri_components() -> None:
    uri = SipUri.parse("sips:alice:secret@atlanta.example.com:5061;transport=TLS;lr?subject=hi&x=")
    assert uri == SipUri(
        host="atlanta.example.com",
        user="alice",
        password="secret",
        port=5061,
        params=Params((("transport", "TLS"), ("lr", None))),
        headers=(("subject", "hi"), ("x", "")),
        scheme="sips",
    )
    assert uri.transport == "tls"
    assert uri.is_secure
    assert str(uri) == "sips:alice:secret@atlanta.example.com:5061;transport=TLS;lr?subject=hi&x="


def test_host_only_and_ipv6() -> None:
    assert SipUri.parse("sip:example.com") == SipUri("example.com")
    uri = SipUri.parse("sip:bob@[2001:db8::10]:5070")
    assert (uri.host, uri.host_address, uri.port) == ("[2001:db8::10]", "2001:db8::10", 5070)
    assert str(uri) == "sip:bob@[2001:db8::10]:5070"


def test_scheme_is_case_insensitive() -> None:
    assert SipUri.parse("SIP:bob@example.com").scheme == "sip"
    assert uri_scheme("SoAp.BeEp://x") == "soap.beep"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:bob@",
        "sip:bob@exa mple.com",
        "sip:bob@example.com:99999",
        "sip:bob@example.com:",
        "sip:bob%zz@example.com",
        "sip:bob@example.com;=x",
        "sip:bob@example.com?",
        "sip:<bob@example.com>",
        "sip:bob@-example.com",
    ],
)
def test_malformed_sip_uris(text: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400


def test_user_part_keeps_escapes_and_decodes_on_request() -> None:
    uri = SipUri.parse("sip:%61lice%20smith@example.com")
    assert uri.user == "%61lice%20smith"
    assert uri.unescaped_user == "alice smith"
    assert str(uri) == "sip:%61lice%20smith@example.com"


def test_param_access_is_case_insensitive_and_unescaped() -> None:
    uri = SipUri.parse("sip:h.example.com;Transport=UDP;%6Dethod=INVITE;lr")
    assert uri.param("transport") == "UDP"
    assert uri.transport == "udp"
    assert uri.param("METHOD") == "INVITE"
    assert "LR" in uri.params
    assert uri.param("lr") is None
    assert uri.param("maddr") is None and "maddr" not in uri.params


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert uri == TelUri("+1-201-555-0123", Params((("phone-context", "example.com"),)))
    assert isinstance(uri, TelUri) and uri.digits == "+12015550123"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    with pytest.raises(SipParseError):
        parse_uri("tel:call me")


def test_unknown_schemes_are_opaque() -> None:
    assert parse_uri("urn:service:sos") == AbsoluteUri("urn", "service:sos")
    assert str(parse_uri("HTTP://www.example.com/a?b=c")) == "http://www.example.com/a?b=c"
    for bad in ("nocolon", "1abc:x", "mailto:", "x: y"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_request_uri_check() -> None:
    check_request_uri("sip:bob@example.com;transport=tcp")
    check_request_uri("tel:+15551230000")
    check_request_uri("urn:service:sos")
    with pytest.raises(SipParseError, match="must not contain URI headers"):
        check_request_uri("sip:bob@example.com?Route=%3Csip:x%3E")
    with pytest.raises(SipParseError, match="Malformed URI"):
        check_request_uri("sip:bob@example.com;%zz")


def test_build_escapes_and_brackets() -> None:
    uri = SipUri.build("2001:db8::1", user="alice smith", port=5060, params={"transport": "tcp"})
    assert str(uri) == "sip:alice%20smith@[2001:db8::1]:5060;transport=tcp"
    assert SipUri.parse(str(uri)) == uri
    odd = SipUri.build("example.com", params=[("x;y", "a b"), ("lr", None)])
    assert str(odd) == "sip:example.com;x%3By=a%20b;lr"
    assert odd.param("x;y") == "a b"  # escaped names match their unescaped form
    with pytest.raises(ValueError, match="invalid host"):
        SipUri.build("bad host")
    with pytest.raises(ValueError, match="invalid port"):
        SipUri.build("example.com", port=70000)


def test_escape_user() -> None:
    assert escape_user("+1 (555) a@b:c") == "+1%20(555)%20a%40b%3Ac"


def test_quote_and_unquote_strings() -> None:
    assert quote_string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert unquote_string('"say \\"hi\\" \\\\ bye"') == 'say "hi" \\ bye'
    assert unquote_string("token") == "token"


def test_params_copies() -> None:
    params = Params.of({"tag": "a", "lr": None})
    assert str(params) == ";tag=a;lr"
    assert str(params.with_param("TAG", "b")) == ";tag=b;lr"
    assert str(params.with_param("x", "1")) == ";tag=a;lr;x=1"
    assert str(params.without("Lr")) == ";tag=a"
    assert params.get("quoted", "dflt") == "dflt"
    assert Params.of([("q", '"a\\"b"')]).get("q") == 'a"b'
    assert Params.of([("q", '"a\\"b"')]).raw("q") == '"a\\"b"'


# RFC 3261 §19.1.4: the equivalent and non-equivalent examples, verbatim.
EQUIVALENT = [
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
    ("sip:bob@[2001:db8:0::1]", "sip:bob@[2001:DB8::1]"),
]
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com"),
]


@pytest.mark.parametrize(("left", "right"), EQUIVALENT)
def test_equivalent_uris(left: str, right: str) -> None:
    assert uri_equal(parse_uri(left), parse_uri(right))
    assert uri_equal(parse_uri(right), parse_uri(left))


@pytest.mark.parametrize(("left", "right"), NOT_EQUIVALENT)
def test_non_equivalent_uris(left: str, right: str) -> None:
    assert not uri_equal(parse_uri(left), parse_uri(right))
    assert not uri_equal(parse_uri(right), parse_uri(left))


def test_equality_across_schemes() -> None:
    assert uri_equal(parse_uri("tel:+1-201-555-0123"), parse_uri("tel:+1.201.555.0123"))
    assert not uri_equal(parse_uri("tel:+12015550123"), parse_uri("sip:+12015550123@x.com"))
    assert uri_equal(parse_uri("URN:a:b"), parse_uri("urn:a:b"))
    assert not uri_equal(parse_uri("urn:a:b"), parse_uri("urn:a:B"))
