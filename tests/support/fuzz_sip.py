"""Seeded SIP fuzz datagrams: a small corpus of valid messages, mutated with knowledge of SIP.

Why a corpus of our own and not the RFC 4475 messages: those are tests of their own (the
torture tests in tests/edge_media/sip); here each input is built fresh from a few templates
(INVITE with SDP, REGISTER, OPTIONS, BYE, ACK, CANCEL, INFO, REFER, SUBSCRIBE, responses) so
its Via, ports and tags are ours, then broken on purpose: header duplication and deletion,
huge and numerous headers, lying or doubled Content-Length, odd line endings and folding,
non-UTF-8, numeric overflow in CSeq/Max-Forwards/Expires/status codes, malformed SDP,
mangled start lines and URIs, and blind byte mutations on top. A share of inputs are pure
random bytes.

Why `SipAim.safe`: the node answers a parsed request at the top Via's address (RFC 3261
§18.2.2), honouring ``maddr``, a ``received`` the peer wrote and an ``rport=`` value. A
mutation may rewrite those, so every datagram is checked before it is sent: it names none of
``maddr``/``received`` and no protected port's digits (sipp's SIP and media ports), so the
node can only ever answer the fuzzer itself. An unsafe candidate is regenerated from the same
(seed, index) with the next attempt number, so the stream stays reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.fuzz_mutate import BAD_UTF8, input_rng, interesting_int, mutate_bytes

__all__ = ["SipAim", "sip_datagram"]

MAX_ATTEMPTS = 16
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4
SAFE_FALLBACK = b"\r\n\r\n"  # a keep-alive: what an input becomes if no attempt was safe

Headers = list[tuple[str, str]]

_COMPACT = {
    "via": "v",
    "from": "f",
    "to": "t",
    "call-id": "i",
    "contact": "m",
    "content-length": "l",
    "content-type": "c",
    "supported": "k",
    "subject": "s",
    "event": "o",
    "refer-to": "r",
    "referred-by": "b",
    "session-expires": "x",
}
_METHODS = ("INVITE", "REGISTER", "OPTIONS", "BYE", "ACK", "CANCEL", "INFO", "REFER")
_EXTRA_METHODS = ("SUBSCRIBE", "NOTIFY", "MESSAGE", "UPDATE", "PRACK", "PUBLISH", "FOO")
_RESPONSES = (
    (100, "Trying"),
    (180, "Ringing"),
    (183, "Session Progress"),
    (200, "OK"),
    (401, "Unauthorized"),
    (407, "Proxy Authentication Required"),
    (481, "Call/Transaction Does Not Exist"),
    (486, "Busy Here"),
    (503, "Service Unavailable"),
    (699, "Odd"),
)
_NUMERIC_HEADERS = (
    "CSeq",
    "Max-Forwards",
    "Expires",
    "Content-Length",
    "Session-Expires",
    "Min-SE",
    "Retry-After",
    "RSeq",
    "RAck",
)
_URI_FORMS = (
    "sip:{u}@{h}:{p}",
    "sips:{u}@{h}:{p}",
    "tel:{u}",
    "<sip:{u}@{h}:{p}>",
    "sip:{u}@{h}:{p};transport=tcp;lr;user=phone?X=1&Y=%00",
    "sip:%75%73%65%72@{h}",
    "sip:{u}:pa%zzss@{h}:{p}",
    "sip:[::1]:{p}",
    "sip:[::1:{p}",
    "sip:{u}@@{h}",
    "sip:{u}@{h}:",
    "http://{h}/{u}",
    "sip:{u}@{h}:{p} SIP/2.0 extra",
    "*",
    "",
)


@dataclass(frozen=True, slots=True)
class SipAim:
    """Where fuzz goes and what the node must never be made to answer to.

    ``own_port`` is the fuzzer's source port (its Via and Contact); ``protected_ports`` are
    UDP ports of real peers (the callers) that no datagram may name.
    """

    node_host: str
    node_port: int
    own_port: int
    protected_ports: frozenset[int] = frozenset()

    def safe(self, data: bytes) -> bool:
        """True when the node, answering ``data``, can only reach the fuzzer (see module doc)."""
        low = data.lower()
        if b"maddr" in low or b"received" in low:
            return False
        return not any(str(port).encode() in data for port in self.protected_ports)


def _hex(rng: random.Random, n: int = 12) -> str:
    return rng.randbytes(n // 2 + 1).hex()[:n]


def _sdp(rng: random.Random) -> list[str]:
    port = rng.randrange(20000, 30000, 2)
    return [
        "v=0",
        f"o=fuzz {rng.randrange(10**9)} {rng.randrange(10**9)} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]


_SDP_LINE_SWAPS = (
    "m=audio 99999999999 RTP/AVP 0",
    "m=audio -1 RTP/AVP 0",
    "m=audio 0 RTP/AVP",
    "m=audio 20000/2 RTP/AVP 0 8",
    "m=audio abc RTP/AVP 0",
    "m=audio 20000 RTP/SAVP 0",
    "m=audio 20000 UDP/TLS/RTP/SAVPF 111",
    "m=audio 20000 RTP/AVP 999 -1 x 128",
    "m=video 20002 RTP/AVP 96",
    "m=",
    "c=IN IP6 ::1",
    "c=IN IP4 ",
    "c=IN IP4 127.0.0.1/127/3",
    "c=IN IP4 not_an_address.invalid",
    "c=XX IP9 127.0.0.1",
    "a=rtpmap:101 telephone-event",
    "a=rtpmap:abc PCMU/8000",
    "a=rtpmap:0 PCMU/0",
    "a=rtpmap:0 PCMU/99999999999999999999",
    "a=rtpmap:0 /8000/1/2/3",
    "a=fmtp:101 0-999999",
    "a=fmtp:101 16-0,,,-",
    "a=ptime:0",
    "a=ptime:-20",
    "a=ptime:1e9",
    "a=maxptime:99999999999",
    "a=rtcp:99999 IN IP4 127.0.0.1",
    "a=rtcp:abc",
    "a=rtcp-mux",
    "a=inactive",
    "a=recvonly",
    "a=sendonly",
    "b=AS:99999999999999999999",
    "v=1",
    "o=",
    "t=a b",
    "no equals sign",
    "=novalue",
    "",
)


def _mutate_sdp(rng: random.Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and lines:
            lines[rng.randrange(len(lines))] = rng.choice(_SDP_LINE_SWAPS)
        elif op == 1:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(_SDP_LINE_SWAPS))
        elif op == 2 and lines:
            del lines[rng.randrange(len(lines))]
        elif op == 3:
            lines += [f"a=x-fuzz{i}:{_hex(rng, 8)}" for i in range(rng.choice((50, 500, 2000)))]
        elif op == 4 and lines:
            at = rng.randrange(len(lines))
            lines[at] = lines[at] + "x" * rng.choice((100, 4000, 9000))
        else:
            lines += _sdp(rng)[5:]  # a second media section
    return lines


def _base_headers(rng: random.Random, aim: SipAim, method: str, cseq: int) -> Headers:
    own = f"127.0.0.1:{aim.own_port}"
    node = f"{aim.node_host}:{aim.node_port}"
    return [
        ("Via", f"SIP/2.0/UDP {own};branch=z9hG4bK{_hex(rng)};rport"),
        ("Max-Forwards", "70"),
        ("From", f'"Fuzz {_hex(rng, 4)}" <sip:fuzz@{own}>;tag={_hex(rng, 8)}'),
        ("To", f"<sip:+1999{rng.randrange(10**7):07d}@{node}>"),
        ("Call-ID", f"{_hex(rng, 16)}@fuzz"),
        ("CSeq", f"{cseq} {method}"),
    ]


def _request(rng: random.Random, aim: SipAim) -> tuple[str, Headers, list[str]]:
    method = rng.choice(_METHODS) if rng.random() < 0.9 else rng.choice(_EXTRA_METHODS)
    user = f"+1999{rng.randrange(10**7):07d}" if rng.random() < 0.8 else "fuzz"
    uri = f"sip:{user}@{aim.node_host}:{aim.node_port}"
    headers = _base_headers(rng, aim, method, rng.randint(1, 5000))
    own = f"127.0.0.1:{aim.own_port}"
    body: list[str] = []
    if method in ("INVITE", "UPDATE") or (method == "ACK" and rng.random() < 0.3):
        headers += [
            ("Contact", f"<sip:fuzz@{own}>"),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"),
            ("Supported", "timer, replaces, 100rel"),
            ("Session-Expires", "1800;refresher=uac"),
            ("Content-Type", "application/sdp"),
        ]
        body = _sdp(rng)
    elif method == "REGISTER":
        uri = f"sip:{aim.node_host}:{aim.node_port}"
        headers += [("Contact", f"<sip:fuzz@{own}>;expires=3600"), ("Expires", "3600")]
        if rng.random() < 0.5:
            headers.append(
                (
                    "Authorization",
                    f'Digest username="1001", realm="agera", nonce="{_hex(rng, 32)}", '
                    f'uri="{uri}", response="{_hex(rng, 32)}", algorithm=MD5, '
                    f'qop=auth, nc=00000001, cnonce="{_hex(rng, 8)}"',
                )
            )
    elif method == "INFO":
        headers.append(("Content-Type", "application/dtmf-relay"))
        body = [f"Signal={rng.choice('0123456789*#AZ')}", f"Duration={interesting_int(rng)}"]
    elif method == "REFER":
        headers += [
            ("Refer-To", f"<sip:+1999{rng.randrange(10**7):07d}@{aim.node_host}>"),
            ("Referred-By", f"<sip:fuzz@{own}>"),
        ]
    elif method in ("SUBSCRIBE", "NOTIFY"):
        headers += [("Event", "refer;id=1"), ("Subscription-State", "active;expires=60")]
        if method == "NOTIFY":
            headers.append(("Content-Type", "message/sipfrag"))
            body = ["SIP/2.0 200 OK"]
    return f"{method} {uri} SIP/2.0", headers, body


def _response(rng: random.Random, aim: SipAim) -> tuple[str, Headers, list[str]]:
    code, reason = rng.choice(_RESPONSES)
    method = rng.choice(_METHODS)
    headers = _base_headers(rng, aim, method, rng.randint(1, 5000))
    headers[3] = (headers[3][0], headers[3][1] + f";tag={_hex(rng, 8)}")
    body: list[str] = []
    if code == 401:
        headers.append(("WWW-Authenticate", f'Digest realm="x", nonce="{_hex(rng, 16)}"'))
    if code in (183, 200) and method == "INVITE":
        headers += [("Content-Type", "application/sdp"), ("Contact", "<sip:x@127.0.0.1>")]
        body = _sdp(rng)
    return f"SIP/2.0 {code} {reason}", headers, body


def _numeric(rng: random.Random, start: str, headers: Headers) -> str:
    name = rng.choice(_NUMERIC_HEADERS)
    value = str(interesting_int(rng))
    if name in ("CSeq", "RAck"):
        value = f"{value} {start.split(' ', 1)[0]}"
    for i, (existing, _) in enumerate(headers):
        if existing.lower() == name.lower():
            headers[i] = (existing, value)
            break
    else:
        headers.append((name, value))
    if rng.random() < 0.2 and start.startswith("SIP/2.0 "):
        start = f"SIP/2.0 {interesting_int(rng)} Odd"
    return start


def _structural(
    rng: random.Random, start: str, headers: Headers, body: list[str]
) -> tuple[str, Headers, list[str], str | None]:
    """One SIP-aware mutation; returns a Content-Length override (None: the true length)."""
    length: str | None = None
    op = rng.randrange(11)
    if op == 0 and headers:  # duplicate a header, up to past MAX_HEADERS
        at = rng.randrange(len(headers))
        headers[at + 1 : at + 1] = [headers[at]] * rng.choice((1, 2, 10, 300))
    elif op == 1 and headers:
        del headers[rng.randrange(len(headers))]
    elif op == 2:  # huge header around MAX_LINE_LENGTH, or past the datagram size
        size = rng.choice((1000, 8180, 8192, 8200, 20000, 60000))
        headers.append((rng.choice(("Subject", "X-Huge", "Via", "To")), "x" * size))
    elif op == 3:
        headers += [(f"X-Fuzz-{i}", _hex(rng, 6)) for i in range(rng.choice((100, 255, 400)))]
    elif op == 4:
        length = rng.choice(("-1", "999999", "99999999999999999999", "abc", " 0x10", "1 2", ""))
        if rng.random() < 0.3:
            headers.append(("Content-Length", str(rng.randrange(5000))))
    elif op == 5:
        start = _numeric(rng, start, headers)
    elif op == 6:
        headers = [
            (_COMPACT.get(n.lower(), n) if rng.random() < 0.7 else n.upper(), v) for n, v in headers
        ]
    elif op == 7:  # mangled start line: URI form, version, method case, spacing
        parts = start.split(" ")
        parts += [""] * (3 - len(parts))  # an earlier mutation may have joined the fields
        if start.startswith("SIP/"):
            parts[0] = rng.choice(("SIP/2.1", "SIP/20.0", "sip/2.0", "SIP/2.0/", "SIP/"))
        else:
            form = rng.choice(_URI_FORMS)
            parts[1] = form.format(u="+1999" + _hex(rng, 4), h="127.0.0.1", p=5060)
            if rng.random() < 0.3:
                parts[0] = rng.choice((parts[0].lower(), parts[0] + "\x00", "", "I N V"))
            if rng.random() < 0.3:
                parts[-1] = rng.choice(("SIP/3.0", "SIP/2.0 ", "HTTP/1.1", "SIP/2"))
        start = rng.choice((" ", "  ", "\t")).join(parts)
    elif op == 8 and headers:  # value-level damage: quotes, brackets, params, escapes
        at = rng.randrange(len(headers))
        name, value = headers[at]
        damage = rng.choice(
            (
                '"',
                "<",
                ">",
                ";;;",
                ";branch=",
                ";tag=",
                ",",
                "%",
                "%00",
                "\\",
                ";rport=abc",
                ";ttl=99999",
                " ; = ; ",
                "[::1",
                "@@",
            )
        )
        cut = rng.randrange(len(value) + 1)
        headers[at] = (name, value[:cut] + damage + value[cut:])
    elif op == 9 and body:
        body = _mutate_sdp(rng, body)
    elif op == 10:  # a header whose name is not a token, or with no colon
        headers.insert(
            rng.randrange(len(headers) + 1),
            rng.choice((("Bad Name", "x"), ("", "empty"), ("Via;", "x"), ("X:Y", "z"))),
        )
    return start, headers, body, length


def _serialize(
    rng: random.Random, start: str, headers: Headers, body: list[str], length: str | None
) -> bytes:
    body_text = "\r\n".join(body) + ("\r\n" if body else "")
    body_bytes = body_text.encode("utf-8", "surrogateescape")
    if length is None and not any(n.lower() in ("content-length", "l") for n, _ in headers):
        length = str(len(body_bytes))
    lines = [start, *(f"{n}: {v}" for n, v in headers)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    eol = "\r\n"
    roll = rng.random()
    if roll < 0.08:
        eol = rng.choice(("\n", "\r", "\n\r", "\r\r\n"))
    head = eol.join(lines) + eol + eol
    if 0.08 <= roll < 0.12 and len(lines) > 2:  # folding (obsolete line continuation)
        head = head.replace(": ", ":\r\n  ", rng.randint(1, 3))
    if 0.12 <= roll < 0.15:
        head = rng.choice(("\r\n", "\r\n\r\n", " ", "\t")) + head
    data = head.encode("utf-8", "surrogateescape") + body_bytes
    if rng.random() < 0.1:  # non-UTF-8 in the head
        at = rng.randrange(len(head))
        data = data[:at] + rng.choice(BAD_UTF8) + data[at:]
    return data


def _candidate(rng: random.Random, aim: SipAim) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randint(0, 1500))
    if roll < 0.08:  # SIP-looking text, not SIP
        words = [
            rng.choice((*_METHODS, "SIP/2.0", ":", "sip:", "\r\n", "Via", "200"))
            for _ in range(rng.randint(1, 40))
        ]
        return " ".join(words).encode()
    build: Callable[[random.Random, SipAim], tuple[str, Headers, list[str]]]
    build = _request if rng.random() < 0.8 else _response
    start, headers, body = build(rng, aim)
    length = None
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        start, headers, body, override = _structural(rng, start, headers, body)
        length = override if override is not None else length
    data = _serialize(rng, start, headers, body, length)
    if rng.random() < 0.4:
        data = mutate_bytes(rng, data)
    return data


def sip_datagram(seed: int, index: int, aim: SipAim) -> bytes:
    """Input ``index`` of the SIP stream for ``seed``: the same bytes for the same arguments."""
    for attempt in range(MAX_ATTEMPTS):
        data = _candidate(input_rng(seed, "sip", index, attempt), aim)[:MAX_DATAGRAM]
        if aim.safe(data):
            return data
    return SAFE_FALLBACK
