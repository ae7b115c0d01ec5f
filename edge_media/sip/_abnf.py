"""RFC 3261 §25 grammar pieces and the parser's limits, kept together (after h11's ``_abnf.py``).

Keeping every regex next to the ABNF it implements makes it possible to review the grammar in one
place. After unfolding (§7.3.1) linear white space is only SP and HTAB, so ``LWS``/``SWS`` below
are ``[ \\t]``. A peer controls every byte we match, so a failed match must cost linear time:
repetitions that could split the same text two ways are possessive (``*+``, ``++``, new in
Python 3.11) and escapes are checked by a separate search instead of an alternation per
character. ``[0-9]`` is used instead of ``\\d``, which would also accept non-ASCII digits.
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------------------------------------
# Limits. A SIP message over UDP fits one datagram (RFC 3261 §18.1.1), so 65535 also bounds what
# a stream connection may buffer for one message.
# ---------------------------------------------------------------------------------------------
MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256
MAX_LINE_LENGTH = 8192
MAX_REQUEST_URI_LENGTH = 4096
# §8.1.1.5: "The sequence number value MUST be expressible as a 32-bit unsigned integer and
# MUST be less than 2**31."
MAX_CSEQ = 2**31 - 1
# §20.22: "The Max-Forwards value is an integer in the range 0-255".
MAX_MAX_FORWARDS = 255
MAX_PORT = 65535
MAX_TTL = 255
# Content-Length digits we read before declaring the value absurd (no int() of huge strings).
MAX_CONTENT_LENGTH_DIGITS = 10

SIP_VERSION = "SIP/2.0"

# ---------------------------------------------------------------------------------------------
# Basic rules (§25.1)
# ---------------------------------------------------------------------------------------------
# WSP = SP / HTAB ; LWS = [*WSP CRLF] 1*WSP ; SWS = [LWS]
# "the line break and the whitespace at the beginning of the next line are treated as a single
# SP character" (§7.3.1).
FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
WS = "[ \t]"

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"  # noqa: S105 (grammar, not a secret)
TOKEN = rf"[{TOKEN_CHARS}]+"
# Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
# header-name = token  (extension-header = header-name HCOLON header-value)
TOKEN_RE = re.compile(TOKEN)

# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
# callid = word [ "@" word ]
WORD = rf"[{TOKEN_CHARS}()<>:\\\"/\[\]?{{}}]+"
CALL_ID_RE = re.compile(rf"{WORD}(?:@{WORD})?")

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]++|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*+"'
QUOTED_PAIR_RE = re.compile(r"\\([\x00-\x09\x0b\x0c\x0e-\x7f])")

# ---------------------------------------------------------------------------------------------
# Start lines (§25.1: Request-Line, Status-Line)
# ---------------------------------------------------------------------------------------------
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT   (ABNF literals are case-insensitive)
SIP_VERSION_RE = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
# Status-Code = 3DIGIT (extension-code = 3DIGIT); classes 1xx-6xx exist (§7.2)
STATUS_CODE_RE = re.compile(r"[1-6][0-9][0-9]")
# Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
REASON_PHRASE_RE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")

# ---------------------------------------------------------------------------------------------
# URIs (§25.1 SIP-URI, SIPS-URI; RFC 3966 tel; RFC 2396 absoluteURI)
# ---------------------------------------------------------------------------------------------
# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# escaped = "%" HEXDIG HEXDIG
# Character classes below admit "%" and BAD_ESCAPE_RE rejects a "%" not followed by two hex
# digits: one class per component matches several times faster than an alternation per char.
BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER = rf"[{UNRESERVED}&=+$,;?/%]+"
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = rf"[{UNRESERVED}&=+$,%]*"
# host = hostname / IPv4address / IPv6reference
# hostname = *( domainlabel "." ) toplabel [ "." ]   -- relaxed to one character class so a
# failed match cannot backtrack; IPv4address is a subset of it.
HOSTNAME = r"[A-Za-z0-9][A-Za-z0-9.\-]*+"
# IPv6reference = "[" IPv6address "]"
IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]++\]"
IPV6_ADDRESS = r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]+"
HOST = rf"(?:{HOSTNAME}|{IPV6_REFERENCE})"
HOST_RE = re.compile(HOST)
IPV6_ADDRESS_RE = re.compile(IPV6_ADDRESS)
# port = 1*DIGIT, bounded here to 0-65535 so a match needs no range check afterwards.
PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
# other-param = pname [ "=" pvalue ] ; pname = 1*paramchar ; pvalue = 1*paramchar
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
PARAMCHAR = rf"[{UNRESERVED}\[\]/:&+$%]"
URI_PARAMS = rf"(?:;{PARAMCHAR}++(?:={PARAMCHAR}++)?)*+"
# headers = "?" header *( "&" header ) ; header = hname "=" hvalue
# hname = 1*( hnv-unreserved / unreserved / escaped ) ; hvalue = *( ... )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNV = rf"[{UNRESERVED}\[\]/?:+$%]"
URI_HEADERS = rf"\?{HNV}++={HNV}*+(?:&{HNV}++={HNV}*+)*+"
# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
# A user part cannot hold an unescaped "@", so userinfo ends at the first "@".
SIP_URI = rf"sips?:(?:{USER}(?::{PASSWORD})?@)?{HOST}(?::{PORT})?{URI_PARAMS}(?:{URI_HEADERS})?"
SIP_URI_RE = re.compile(
    rf"(sips?):(?:({USER})(?::({PASSWORD}))?@)?({HOST})(?::({PORT}))?"
    rf"({URI_PARAMS})({URI_HEADERS})?",
    re.IGNORECASE,
)
# telephoneuri = "tel:" telephone-subscriber (RFC 3966); the subscriber is kept opaque apart
# from its ";"-separated parameters.
TEL_SUBSCRIBER = r"[0-9A-Fa-f*#+().\-]++"
TEL_URI = rf"tel:{TEL_SUBSCRIBER}{URI_PARAMS}"
TEL_URI_RE = re.compile(rf"tel:({TEL_SUBSCRIBER})({URI_PARAMS})", re.IGNORECASE)
# absoluteURI = scheme ":" ( hier-part / opaque-part )
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ; uric = reserved / unreserved / escaped
# reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+"
ABSOLUTE_URI = rf"{SCHEME}:[{UNRESERVED};/?:@&=+$,\[\]%]++"
ABSOLUTE_URI_RE = re.compile(rf"({SCHEME}):([{UNRESERVED};/?:@&=+$,\[\]%]++)")
# Any URI, the scheme choosing the grammar: a broken sip: URI must not pass as absoluteURI.
ANY_URI = rf"(?:(?=sips?:){SIP_URI}|(?=tel:){TEL_URI}|(?!sips?:|tel:){ABSOLUTE_URI})"
# addr-spec outside <>: "the name-addr form MUST be used if the addr-spec contains a comma,
# semicolon, or question mark" (§20.10), so those end the bare URI (and ";" starts the
# header parameters, RFC 4475 §3.3.12).
BARE_URI = (
    rf"(?:(?=sips?:)sips?:(?:[{UNRESERVED}&=+$/%]+(?::[{UNRESERVED}&=+$%]*)?@)?{HOST}(?::{PORT})?"
    rf"|(?=tel:)tel:{TEL_SUBSCRIBER}"
    rf"|(?!sips?:|tel:){SCHEME}:[{UNRESERVED}/:@&=+$\[\]%]++)"
)

# ---------------------------------------------------------------------------------------------
# Header field pieces (§25.1, §20)
# ---------------------------------------------------------------------------------------------
# generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string
# SEMI = SWS ";" SWS ; EQUAL = SWS "=" SWS.  IPv6address is allowed bare because
# via-received = "received" EQUAL (IPv4address / IPv6address).
GEN_VALUE = rf"{IPV6_REFERENCE}|{IPV6_ADDRESS}|{TOKEN}|{QUOTED_STRING}"
GENERIC_PARAM = rf"{WS}*+;{WS}*+{TOKEN}(?:{WS}*+={WS}*+(?:{GEN_VALUE}))?"
GENERIC_PARAM_RE = re.compile(rf"{WS}*+;{WS}*+({TOKEN})(?:{WS}*+={WS}*+({GEN_VALUE}))?")
GENERIC_PARAMS_RE = re.compile(rf"(?:{GENERIC_PARAM})*+{WS}*+")

# from-spec / to-spec / contact-param / rec-route / route-param ... all are
#   ( name-addr / addr-spec ) *( SEMI generic-param )
# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
# display-name = *(token LWS)/ quoted-string ; LAQUOT = SWS "<" ; RAQUOT = ">" SWS
# RFC 4475 §3.1.1.6 accepts a token display name with no LWS before "<"; nothing may sit
# between "<" and the URI (§3.1.2.14). Groups: quoted display name, token display name,
# URI inside <>, bare URI, parameters.
NAME_ADDR_RE = re.compile(
    rf"(?:(?:({QUOTED_STRING})|({TOKEN}(?:{WS}++{TOKEN})*+))?{WS}*+<({ANY_URI})>|({BARE_URI}))"
    rf"((?:{GENERIC_PARAM})*+){WS}*+",
    re.IGNORECASE,
)

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport ; SLASH = SWS "/" SWS
# sent-by = host [ COLON port ] ; COLON = SWS ":" SWS
# Groups: protocol-name, protocol-version, transport, host, port, parameters.
VIA_PARM_RE = re.compile(
    rf"{WS}*+({TOKEN}){WS}*+/{WS}*+({TOKEN}){WS}*+/{WS}*+({TOKEN}){WS}++({HOST})"
    rf"(?:{WS}*+:{WS}*+({PORT}))?((?:{GENERIC_PARAM})*+){WS}*+"
)

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
CSEQ_RE = re.compile(rf"([0-9]+){WS}+({TOKEN})")
DIGITS_RE = re.compile(r"[0-9]+")

# media-type = m-type SLASH m-subtype *(SEMI m-parameter)
MEDIA_TYPE_RE = re.compile(rf"({TOKEN}){WS}*/{WS}*({TOKEN})")

# rfc1123-date = wkday "," SP date1 SP time SP "GMT" ; date1 = 2DIGIT SP month SP 4DIGIT
# time = 2DIGIT ":" 2DIGIT ":" 2DIGIT
RFC1123_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
    re.IGNORECASE,
)
