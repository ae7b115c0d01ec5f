"""Header fields: the multi-map, list splitting, and the structured value parsers."""

from __future__ import annotations

import pytest

from edge_media.sip.errors import DuplicateHeaderError, SipParseError
from edge_media.sip.header_values import (
    WILDCARD,
    ContentType,
    CSeq,
    NameAddr,
    Via,
    check_name_addr,
    is_rfc1123_date,
    parse_call_id,
    parse_contacts,
    parse_content_type,
    parse_cseq,
    parse_max_forwards,
    parse_name_addr,
    parse_name_addr_list,
    parse_params,
    parse_via,
    split_list,
)
from edge_media.sip.headers import Headers, canonical_name, header_key
from edge_media.sip.uri import AbsoluteUri, Params, SipUri

COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
}


@pytest.mark.parametrize(("compact", "key"), sorted(COMPACT.items()))
def test_compact_forms_map_to_long_forms(compact: str, key: str) -> None:
    assert header_key(compact) == key
    assert header_key(compact.upper()) == key
    headers = Headers([(compact.upper(), "value")])
    assert headers.get(canonical_name(key)) == "value"
    assert headers.get(compact) == "value"


def test_lookup_ignores_case_and_keeps_original_names() -> None:
    headers = Headers([("cAlL-iD", "abc"), ("CSEQ", "1 INVITE"), ("X-Custom", "1")])
    assert headers.get("Call-ID") == headers.get("i") == "abc"
    assert headers.get("cseq") == "1 INVITE"
    assert headers.get("x-custom") == "1"
    assert headers.get("Missing") is None
    assert headers.get("Missing", "dflt") == "dflt"
    assert "CALL-ID" in headers and "Route" not in headers
    assert list(headers) == [("cAlL-iD", "abc"), ("CSEQ", "1 INVITE"), ("X-Custom", "1")]
    assert headers.serialize() == "cAlL-iD: abc\r\nCSEQ: 1 INVITE\r\nX-Custom: 1\r\n"


def test_canonical_names() -> None:
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("x-my-header") == "X-My-Header"


def test_single_value_header_repeated_raises() -> None:
    headers = Headers([("Call-ID", "a"), ("i", "b")])
    with pytest.raises(DuplicateHeaderError) as caught:
        headers.get("Call-ID")
    assert (caught.value.status, caught.value.reason) == (400, "Duplicate Call-ID header field")
    assert headers.get_all("Call-ID") == ["a", "b"]


def test_repeated_list_header_joins_like_one_line() -> None:
    headers = Headers([("Supported", "timer"), ("k", "100rel, path")])
    assert headers.get("Supported") == "timer, 100rel, path"
    assert headers.get_all("Supported") == ["timer", "100rel", "path"]
    assert headers.get_lines("Supported") == ["timer", "100rel, path"]
    assert headers.count("supported") == 2


def test_get_all_splits_only_list_headers() -> None:
    challenge = 'Digest realm="a, b", nonce="x", qop="auth,auth-int"'
    headers = Headers(
        [
            ("Contact", '"Doe, John" <sip:j@a.com;x=1,2>;q=0.5, <sip:k@b.com>'),
            ("WWW-Authenticate", challenge),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/TCP b;branch=z9hG4bK2"),
            ("X-Unknown", "a, b"),
        ]
    )
    assert headers.get_all("Contact") == ['"Doe, John" <sip:j@a.com;x=1,2>;q=0.5', "<sip:k@b.com>"]
    assert headers.get_all("WWW-Authenticate") == [challenge]
    assert headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.get_all("v") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/TCP b;branch=z9hG4bK2",
    ]
    assert headers.get_all("X-Unknown") == ["a, b"]
    assert headers.get_all("Route") == []


def test_split_list_strictness() -> None:
    assert split_list('a, "b,\\" c" , <d,e>') == ["a", '"b,\\" c"', "<d,e>"]
    with pytest.raises(SipParseError, match="Empty element"):
        split_list("a,,b")
    with pytest.raises(SipParseError, match="Empty element"):
        split_list("a, <b>,")
    with pytest.raises(SipParseError, match="Unbalanced"):
        split_list('"a, b')
    assert split_list('"a, b', strict=False) == ['"a, b']
    assert split_list("a,,b", strict=False) == ["a", "", "b"]


def test_copies_with_changes() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:b@x>"), ("Via", "SIP/2.0/UDP c")])
    added = headers.with_added("Contact", "<sip:me@h>")
    assert list(added)[-1] == ("Contact", "<sip:me@h>")
    assert len(headers) == 3  # the original is untouched
    top = headers.with_prepended("v", "SIP/2.0/TCP new")
    assert top.get_lines("Via") == ["SIP/2.0/TCP new", "SIP/2.0/UDP a", "SIP/2.0/UDP c"]
    assert next(iter(top)) == ("v", "SIP/2.0/TCP new")
    replaced = headers.with_replaced("via", "SIP/2.0/UDP only")
    assert list(replaced) == [("Via", "SIP/2.0/UDP only"), ("To", "<sip:b@x>")]
    assert list(headers.with_replaced("Max-Forwards", "69"))[-1] == ("Max-Forwards", "69")
    assert list(headers.without("VIA")) == [("To", "<sip:b@x>")]
    assert Headers([("t", "x")]) == Headers([("To", "x")])
    assert Headers([("To", "x")]) != Headers([("To", "y")])


@pytest.mark.parametrize(
    ("name", "value"),
    [("Bad Name", "x"), ("", "x"), ("X", "a\r\nInjected: yes"), ("X", "a\nb"), ("X", "a\rb")],
)
def test_building_rejects_invalid_fields(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=r"invalid header name|CR or LF"):
        Headers([(name, value)])


def test_name_addr_forms() -> None:
    assert parse_name_addr('"Alice \\"A\\"" <sip:alice@a.com;transport=tcp>;tag=1') == NameAddr(
        SipUri("a.com", "alice", params=Params((("transport", "tcp"),))),
        'Alice "A"',
        Params((("tag", "1"),)),
    )
    bare = parse_name_addr("sip:bob@b.com;tag=9;transport=tcp")
    assert bare.uri == SipUri("b.com", "bob")
    assert bare.params.items == (("tag", "9"), ("transport", "tcp"))
    assert bare.tag == "9"
    tokens = parse_name_addr("Bob  Smith<sip:bob@b.com>")
    assert tokens.display_name == "Bob  Smith" and tokens.tag is None
    assert parse_name_addr("<urn:service:sos>").uri == AbsoluteUri("urn", "service:sos")
    assert parse_name_addr('"" <sip:x@y>').display_name == ""


def test_name_addr_params_case_and_quotes() -> None:
    na = parse_name_addr('<sip:a@b> ; TAG = xyz ; Expires=60 ; +sip.instance="<urn:uuid:1>"')
    assert na.tag == "xyz"
    assert na.params.get("expires") == "60"
    assert na.params.get("+SIP.INSTANCE") == "<urn:uuid:1>"
    assert na.params.raw("+sip.instance") == '"<urn:uuid:1>"'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"Unclosed <sip:a@b>', "Unterminated quoted string in To header"),
        ("< sip:a@b>", "Whitespace inside <> in To header"),
        ("Doe, John <sip:a@b>", "Display name with non-token characters must be quoted"),
        ("sip:a@b?Subject=x", "URI with headers must be enclosed in <> in To header"),
        ("<sip:a@b", "Malformed To header"),
        ("<sip:a@b>;", "Malformed To header"),
        ("<sip:a@b>;tag=", "Malformed To header"),
        ("<sip:a@b> junk", "Malformed To header"),
        ("<sip:a%zz@b>", "Malformed URI in To header"),
        ("<sip:a@b:70000>", "Malformed To header"),
        ("", "Malformed To header"),
    ],
)
def test_bad_name_addrs(value: str, reason: str) -> None:
    for check in (parse_name_addr, check_name_addr):
        with pytest.raises(SipParseError) as caught:
            check(value, what="To")
        assert caught.value.status == 400
        assert reason in caught.value.reason


def test_name_addr_builds_back() -> None:
    na = NameAddr(SipUri("b.com", "bob"), 'Bob "B"').with_tag("t1")
    assert str(na) == '"Bob \\"B\\"" <sip:bob@b.com>;tag=t1'
    assert parse_name_addr(str(na)) == na
    with pytest.raises(ValueError, match="token"):
        na.with_tag("bad tag")


def test_contact_lists_and_wildcard() -> None:
    contacts = parse_contacts(["<sip:a@h1>;expires=10, sip:b@h2;q=0.1", '"C" <sip:c@h3>'])
    assert contacts != WILDCARD
    assert [str(c.uri) for c in contacts] == ["sip:a@h1", "sip:b@h2", "sip:c@h3"]
    assert contacts[1].params.get("q") == "0.1"
    assert parse_contacts(["*"]) == WILDCARD
    with pytest.raises(SipParseError, match="Contact \\* combined"):
        parse_contacts(["*", "<sip:a@h>"])
    assert [str(r.uri) for r in parse_name_addr_list("<sip:p1;lr>,<sip:p2;lr>")] == [
        "sip:p1;lr",
        "sip:p2;lr",
    ]


def test_via_full() -> None:
    (via,) = parse_via(
        "SIP/2.0/udp [2001:db8::9]:5062;branch=z9hG4bKabc;received=2001:db8::1;rport=5999"
        ";maddr=239.1.1.1;ttl=16;x-ext"
    )
    assert via == Via(
        "UDP",
        "[2001:db8::9]",
        5062,
        Params(
            (
                ("branch", "z9hG4bKabc"),
                ("received", "2001:db8::1"),
                ("rport", "5999"),
                ("maddr", "239.1.1.1"),
                ("ttl", "16"),
                ("x-ext", None),
            )
        ),
    )
    assert (via.branch, via.received, via.rport, via.has_rport, via.maddr, via.ttl) == (
        "z9hG4bKabc",
        "2001:db8::1",
        5999,
        True,
        "239.1.1.1",
        16,
    )
    assert via.sent_by == ("[2001:db8::9]", 5062)


def test_via_rport_without_value_and_stamping() -> None:
    (via,) = parse_via("SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bK1")
    assert via.has_rport and via.rport is None
    stamped = via.with_param("rport", "6000").with_param("received", "198.51.100.7")
    assert str(stamped) == "SIP/2.0/UDP 192.0.2.1;rport=6000;branch=z9hG4bK1;received=198.51.100.7"
    (plain,) = parse_via("SIP/2.0/TCP host")
    assert not plain.has_rport and plain.branch is None and plain.port is None


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch",
        'SIP/2.0/UDP host;branch="quoted"',
        "SIP/2.0/UDP host;ttl=256",
        "SIP/2.0/UDP host;ttl=x",
        "SIP/2.0/UDP host;rport=70000",
        "SIP/2.0/UDP host;received=bad_host!",
        "SIP/2.0/UDP host:65536",
        "SIP/2.0/UDP host,",
        "SIP/2.0/UDP host extra",
    ],
)
def test_bad_vias(value: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_via(value)
    assert caught.value.status == 400
    assert "Via" in caught.value.reason


def test_cseq() -> None:
    assert parse_cseq("0009 INVITE") == CSeq(9, "INVITE")
    assert parse_cseq(f"{2**31 - 1}\tBYE") == CSeq(2**31 - 1, "BYE")
    assert str(CSeq(5, "ACK")) == "5 ACK"
    for bad, reason in [
        (str(2**31) + " INVITE", "out of range"),
        ("1" * 5000 + " INVITE", "out of range"),
        ("INVITE 1", "Malformed"),
        ("1", "Malformed"),
        ("-1 INVITE", "Malformed"),
        ("\u0661 INVITE", "Malformed"),  # ARABIC-INDIC DIGIT ONE: not a DIGIT
    ]:
        with pytest.raises(SipParseError, match=reason):
            parse_cseq(bad)


def test_small_value_parsers() -> None:
    assert parse_call_id("a84b4c76e66710@pc33.example.com") == "a84b4c76e66710@pc33.example.com"
    with pytest.raises(SipParseError, match="Call-ID"):
        parse_call_id("has space")
    assert parse_max_forwards("070") == 70
    with pytest.raises(SipParseError, match="out of range"):
        parse_max_forwards("256")
    with pytest.raises(SipParseError, match="Malformed Max-Forwards"):
        parse_max_forwards("7a")
    assert is_rfc1123_date("Sat, 13 Nov 2010 23:29:00 GMT")
    assert not is_rfc1123_date("Fri, 01 Jan 2010 16:00:00 EST")


def test_content_type_and_params() -> None:
    parsed = parse_content_type('Multipart/Mixed ; boundary="a b";charset=utf-8')
    assert parsed == ContentType(
        "multipart", "mixed", Params((("boundary", '"a b"'), ("charset", "utf-8")))
    )
    assert parsed.mime == "multipart/mixed"
    assert parsed.params.get("BOUNDARY") == "a b"
    with pytest.raises(SipParseError, match="Content-Type"):
        parse_content_type("application")
    assert parse_params(';a=1;B;c="x;y"').items == (("a", "1"), ("B", None), ("c", '"x;y"'))
    with pytest.raises(SipParseError, match="Malformed parameters in header"):
        parse_params(";a=1;")


PATHOLOGICAL = {
    "token words without <": "a " * 4000,
    "token words then <": "a " * 4000 + "<",
    "unterminated quote": '"' + "a" * 8000,
    "escapes without end": '"' + "\\a" * 4000,
    "empty params": "<sip:a@b>" + ";a" * 4000 + ";",
    "params then =": "<sip:a@b>" + ";a=b" * 2000 + "=",
    "long user": "sip:" + "a" * 8000 + "@",
    "semicolons in user": "<sip:" + "a;" * 4000 + ">",
    "dotted host": "<sip:" + "a." * 4000 + "!>",
    "uri params then ?": "<sip:a@b" + ";a=b" * 2000 + "?>",
    "angle brackets": "<" * 8000,
    "colons in ipv6": "<sip:a@[" + ":" * 8000 + ">",
}


@pytest.mark.parametrize("value", PATHOLOGICAL.values(), ids=list(PATHOLOGICAL))
def test_pathological_values_are_rejected(value: str) -> None:
    # Each would take minutes with a backtracking-prone pattern; here each is one linear pass.
    for parse in (parse_name_addr, parse_via, parse_content_type, parse_cseq):
        with pytest.raises(SipParseError):
            parse(value)
