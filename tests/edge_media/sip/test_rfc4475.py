"""RFC 4475 torture messages: which parse (with what content) and which are rejected (and how).

The table follows RFC 4475's own classification by section. Where the RFC has the UA rather
than the parser reject a message (§3.3), the message must parse and `validate_request` must give
the status the RFC names. Three §3.3 messages are rejected by the parser itself because
`message_parse` makes the mandatory-header and framing checks part of parsing: insuf
(§3.3.1, missing To/From/Call-ID), multi01 (§3.3.8, duplicated single-value headers) and mcl01
(§3.3.9, two Content-Length values). All three still end in the 400 the RFC asks for, via
`answer_parse_error`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge_media.sip.errors import SipParseError
from edge_media.sip.header_values import CSeq
from edge_media.sip.message import SipRequest, SipResponse, answer_parse_error, make_response
from edge_media.sip.message_bodies import body_of_type, split_multipart
from edge_media.sip.message_parse import parse_message
from edge_media.sip.message_policy import validate_request, validate_response
from edge_media.sip.uri import AbsoluteUri, SipUri, parse_uri, uri_equal

# name -> (status, words the reason must contain, answerable with an error response)
REJECTED: dict[str, tuple[int, str, bool]] = {
    # §3.1.2 invalid messages
    "badinv01": (400, "Via", False),  # the Via itself is broken: nowhere to answer
    "clerr": (400, "Content-Length 9999 exceeds", True),
    "ncl": (400, "Content-Length '-999'", True),
    "scalar02": (400, "CSeq number out of range", True),
    "scalarlg": (400, "CSeq number out of range", False),  # a response: dropped
    "quotbal": (400, "Unterminated quoted string in To", True),
    "ltgtruri": (400, "Request-URI must not be enclosed in <>", True),
    "lwsruri": (400, "Whitespace inside the Request-URI", True),
    "lwsstart": (400, "single SP", True),
    "trws": (400, "Trailing whitespace in Request-Line", True),
    "escruri": (400, "Request-URI must not contain URI headers", True),
    "baddate": (400, "Date header is not an RFC 1123 date in GMT", True),
    "regbadct": (400, "URI with headers must be enclosed in <> in Contact", True),
    "badaspec": (400, "Whitespace inside <> in To", True),
    "baddn": (400, "Display name with non-token characters must be quoted in From", True),
    "badvers": (505, "SIP version 7.0 not supported", True),
    "mismatch01": (400, "CSeq method INVITE does not match request method OPTIONS", True),
    "mismatch02": (400, "CSeq method INVITE does not match request method NEWMETHOD", True),
    "bigcode": (400, "Malformed status code '4294967301'", False),
    # §3.3 application layer, rejected while parsing (see the module docstring)
    "insuf": (400, "Missing To, From, Call-ID header field", True),
    "multi01": (400, "Duplicate To, From, CSeq, Call-ID, Max-Forwards header fields", True),
    "mcl01": (400, "Multiple Content-Length header fields", True),
}


def _wsinv(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    assert m.method == "INVITE"
    assert str(m.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.to.uri == SipUri("chair-dnrc.example.com", "vivekg")
    assert m.to_tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.cseq == CSeq(9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (route,) = m.route
    assert route.uri.params.items == (
        ("lr", None),
        ("unknownwith", "value"),
        ("unknown-no-value", None),
    )
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params.items == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150


def _intmeth(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method
    assert m.cseq == CSeq(139122385, method)
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params.get("fromParam''~+*_!.-%") == "работающий"
    assert m.from_tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.max_forwards == 255
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    # Answering copies the To with its NUL inside a quoted-pair untouched.
    response = make_response(m, 501, to_tag="x")
    assert response.headers.get("To") == m.headers.get("To") + ";tag=x"
    assert parse_message(response.serialize()) == response


def _esc01(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest) and isinstance(m.uri, SipUri)
    assert m.uri.user == "sips%3Auser%40example.com"
    assert m.uri.unescaped_user == "sips:user@example.com"
    assert m.uri.host == "example.net"
    assert uri_equal(m.to.uri, SipUri.parse("sip:user@example.com"))
    assert isinstance(m.from_.uri, SipUri) and m.from_.uri.unescaped_user == "I have spaces"
    contact_uri = m.contacts[0].uri
    assert isinstance(contact_uri, SipUri)
    assert "lr" in contact_uri.params  # %6C%72
    assert contact_uri.param("name") == "value%41"  # n%61me=v%61lue%25%34%31
    assert uri_equal(contact_uri, SipUri.parse("sip:caller@host5.example.net;lr;name=value%2541"))


def _escnull(m: SipRequest | SipResponse) -> None:
    assert isinstance(m.to.uri, SipUri) and m.to.uri.unescaped_user == "null-\x00-null"
    users = [c.uri.user for c in m.contacts if isinstance(c.uri, SipUri)]
    assert users == ["%00", "%00%00"]


def _esc02(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    assert m.method == "RE%47IST%45R"  # a token, not REGISTER
    assert m.cseq.method == "RE%47IST%45R"
    assert m.headers.get_all("Contact") == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.from_.display_name == "%Z%45"
    assert m.branch == "z9hG4bK209%fzsnel234"
    rejection = validate_request(m)
    assert rejection is not None and rejection.status == 501


def _lwsdisp(m: SipRequest | SipResponse) -> None:
    assert m.from_.display_name == "caller"
    assert m.from_tag == "323"


def _longreq(m: SipRequest | SipResponse) -> None:
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:3]] == [
        "sip33.example.com",
        "sip32.example.com",
        "sip31.example.com",
    ]
    assert m.vias[-1].received == "192.0.2.5"
    assert m.vias[-1].branch is not None and m.vias[-1].branch.endswith("longbranchvalue")
    assert m.to.display_name is not None and m.to.display_name.endswith("extreme proportion")
    assert isinstance(m.to.uri, SipUri) and m.to.uri.port == 6000
    assert "very" + "long" * 25 + "ParameterNameWithNoValue" in m.to.uri.params
    assert m.from_tag is not None and len(m.from_tag) == 155
    assert len(m.body) == 150


def _dblreq(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest) and m.method == "REGISTER"
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert m.body == b""  # the second message in the datagram is ignored


def _semiuri(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest) and isinstance(m.uri, SipUri)
    assert m.uri.user == "user;par=u%40example.net"
    assert m.uri.host == "example.com"
    assert not m.uri.params
    assert m.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def _transports(m: SipRequest | SipResponse) -> None:
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _mpart01(m: SipRequest | SipResponse) -> None:
    assert m.content_type == "multipart/mixed"
    parts = split_multipart(m.body, m.headers.get("Content-Type") or "")
    assert [(p.content_type, len(p.body)) for p in parts] == [
        ("text/plain", 5),
        ("application/octet-stream", 342),
    ]
    assert parts[0].body == b"Hello"
    assert parts[1].body.startswith(b"\x30\x82\x01\x52")  # a DER SEQUENCE of 0x152 octets
    assert body_of_type(m, "text/plain") == b"Hello"
    assert isinstance(m, SipRequest)
    allowed = ("MESSAGE",)
    types = ("multipart/mixed",)
    assert validate_request(m, allowed_methods=allowed, accepted_content_types=types) is None


def _unreason(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipResponse)
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def _noreason(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipResponse)
    assert (m.status, m.reason) == (100, "")


def _badbranch(m: SipRequest | SipResponse) -> None:
    assert m.branch == "z9hG4bK"  # only the magic cookie: the transaction layer copes


def _rejects(
    status: int, reason: str, **options: object
) -> Callable[[SipRequest | SipResponse], None]:
    def check(m: SipRequest | SipResponse) -> None:
        assert isinstance(m, SipRequest)
        rejection = validate_request(m, **options)  # type: ignore[arg-type]
        assert rejection is not None
        assert (rejection.status, rejection.reason) == (status, reason)

    return check


def _unkscm(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    assert m.uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    assert m.uri_scheme == "nobodyknowsthisscheme"
    _rejects(416, "Unsupported URI Scheme")(m)


def _novelsc(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    assert m.uri_scheme == "soap.beep"
    _rejects(416, "Unsupported URI Scheme")(m)


def _unksm2(m: SipRequest | SipResponse) -> None:
    assert m.to.uri == AbsoluteUri("isbn", "2983792873")
    assert m.from_.uri == AbsoluteUri("http", "//www.example.com")
    contacts = m.contacts
    assert contacts != "*" and contacts[0].uri == AbsoluteUri("name", "John_Smith")
    # A registrar answers 400: the To of a REGISTER must be a SIP or SIPS URI (§10.2).
    _rejects(400, "REGISTER To must be a SIP or SIPS URI")(m)


def _bext01(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    rejection = validate_request(m, supported=("timer",))
    assert rejection is not None
    assert rejection.status == 420
    # Proxy-Require is for proxies: a UAS lists only its unsupported Require tags.
    assert rejection.headers == (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),)


def _invut(m: SipRequest | SipResponse) -> None:
    assert m.content_type == "application/unknownformat"
    assert isinstance(m, SipRequest)
    rejection = validate_request(m)
    assert rejection is not None
    assert (rejection.status, rejection.headers) == (415, (("Accept", "application/sdp"),))


def _regaut01(m: SipRequest | SipResponse) -> None:
    assert m.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert isinstance(m, SipRequest) and validate_request(m) is None  # 401 is the auth layer's


def _bcast(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipResponse)
    assert [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]
    assert validate_response(m) == "Response has 2 Via values, expected 1"


def _zeromf(m: SipRequest | SipResponse) -> None:
    assert m.max_forwards == 0
    assert isinstance(m, SipRequest) and validate_request(m) is None  # only proxies send 483


def _cparam01(m: SipRequest | SipResponse) -> None:
    (contact,) = m.contacts
    assert "unknownparam" in contact.params
    assert isinstance(contact.uri, SipUri) and not contact.uri.params


def _cparam02(m: SipRequest | SipResponse) -> None:
    (contact,) = m.contacts
    assert not contact.params
    assert isinstance(contact.uri, SipUri) and "unknownparam" in contact.uri.params


def _regescrt(m: SipRequest | SipResponse) -> None:
    (contact,) = m.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert isinstance(m, SipRequest) and validate_request(m) is None


def _sdp01(m: SipRequest | SipResponse) -> None:
    assert isinstance(m, SipRequest)
    assert validate_request(m) is None  # the offer itself is fine ...
    rejection = validate_request(m, answer_content_type="application/sdp")
    assert rejection is not None and rejection.status == 406  # ... the answer is unacceptable


def _inv2543(m: SipRequest | SipResponse) -> None:
    assert m.branch is None
    assert m.from_tag is None
    assert m.max_forwards is None
    assert "Content-Length" not in m.headers
    assert m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")  # the rest of the datagram
    assert len(m.body) == 105
    assert isinstance(m, SipRequest) and validate_request(m) is None


PARSED: dict[str, Callable[[SipRequest | SipResponse], None]] = {
    # §3.1.1 valid messages
    "wsinv": _wsinv,
    "intmeth": _intmeth,
    "esc01": _esc01,
    "escnull": _escnull,
    "esc02": _esc02,
    "lwsdisp": _lwsdisp,
    "longreq": _longreq,
    "dblreq": _dblreq,
    "semiuri": _semiuri,
    "transports": _transports,
    "mpart01": _mpart01,
    "unreason": _unreason,
    "noreason": _noreason,
    # §3.2 transaction layer
    "badbranch": _badbranch,
    # §3.3 application layer
    "unkscm": _unkscm,
    "novelsc": _novelsc,
    "unksm2": _unksm2,
    "bext01": _bext01,
    "invut": _invut,
    "regaut01": _regaut01,
    "bcast": _bcast,
    "zeromf": _zeromf,
    "cparam01": _cparam01,
    "cparam02": _cparam02,
    "regescrt": _regescrt,
    "sdp01": _sdp01,
    # §3.4 backward compatibility
    "inv2543": _inv2543,
}


def test_table_covers_every_message(torture_dir: Path) -> None:
    on_disk = {path.stem for path in torture_dir.glob("*.dat")}
    assert len(on_disk) == 49
    assert on_disk == PARSED.keys() | REJECTED.keys()
    assert not PARSED.keys() & REJECTED.keys()


@pytest.mark.parametrize("name", sorted(PARSED))
def test_parses(name: str, torture: dict[str, bytes]) -> None:
    message = parse_message(torture[name])
    assert message is not None
    PARSED[name](message)


@pytest.mark.parametrize("name", sorted(PARSED))
def test_round_trip(name: str, torture: dict[str, bytes]) -> None:
    message = parse_message(torture[name])
    assert message is not None
    wire = message.serialize()
    again = parse_message(wire)
    assert again == message
    assert again is not None and again.serialize() == wire


@pytest.mark.parametrize("name", sorted(PARSED))
def test_every_accessor_works_after_a_successful_parse(
    name: str, torture: dict[str, bytes]
) -> None:
    # The parser checks From/To/Contact without building them; building must then succeed.
    message = parse_message(torture[name])
    assert message is not None
    views = (message.from_, message.to, message.contacts, message.vias, message.cseq)
    assert all(view is not None for view in views)
    assert message.call_id == message.headers.get("Call-ID")
    if isinstance(message, SipRequest):
        assert parse_uri(str(message.uri)) == message.uri


@pytest.mark.parametrize("name", sorted(PARSED))
def test_every_request_can_be_answered(name: str, torture: dict[str, bytes]) -> None:
    message = parse_message(torture[name])
    if not isinstance(message, SipRequest):
        return
    response = make_response(message, 200, to_tag="answer1")
    assert response.headers.get_lines("Via") == message.headers.get_lines("Via")
    assert response.cseq == message.cseq and response.call_id == message.call_id
    assert response.to_tag == (message.to_tag or "answer1")
    assert parse_message(response.serialize()) == response


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected(name: str, torture: dict[str, bytes]) -> None:
    status, reason, answerable = REJECTED[name]
    with pytest.raises(SipParseError) as caught:
        parse_message(torture[name])
    error = caught.value
    assert error.status == status
    assert reason in error.reason
    response = answer_parse_error(error, to_tag="t0rture")
    assert (response is not None) == answerable
    if response is not None:
        assert response.status == status
        assert response.reason == error.reason
        original = error.request_headers
        assert original is not None
        assert response.headers.get_lines("Via") == original.get_lines("Via")
        for name in ("From", "Call-ID", "CSeq"):
            assert response.headers.get_lines(name) == original.get_lines(name)[:1]
