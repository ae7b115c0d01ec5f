"""Sans-I/O framing of SIP over a byte stream (TCP, TLS): RFC 3261 §18.3 and RFC 5626 §3.5.1.

On a stream there is no datagram boundary, so Content-Length is mandatory and a message may
arrive in any number of pieces, or several in one piece. `SipStreamReader.feed` takes whatever
the socket produced and returns the complete items found so far; the transport writes
`PONG` for every `KeepAlivePing` and closes the connection after a fatal `InvalidMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from edge_media.sip import _abnf
from edge_media.sip.errors import SipParseError
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.message_parse import _Head, _parse_head

__all__ = [
    "PING",
    "PONG",
    "InvalidMessage",
    "KeepAlivePing",
    "KeepAlivePong",
    "SipStreamReader",
    "StreamEvent",
]

# RFC 5626 §3.5.1: "the client sends a CRLF CRLF (the 'ping') and the server answers with a
# single CRLF (the 'pong')".
PING: Final = b"\r\n\r\n"
PONG: Final = b"\r\n"


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """The peer sent a double-CRLF keep-alive: answer with `PONG`."""


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """The peer sent a single CRLF: the answer to our ping (or a bare keep-alive)."""


@dataclass(frozen=True, slots=True)
class InvalidMessage:
    """A message that could not be accepted.

    ``fatal`` means framing is lost (no usable Content-Length, oversize, garbage header section):
    the reader ignores further input and the connection should be closed, after answering
    the error if `answer_parse_error` allows. A non-fatal error concerns one message only.
    """

    error: SipParseError
    fatal: bool


StreamEvent: TypeAlias = SipRequest | SipResponse | KeepAlivePing | KeepAlivePong | InvalidMessage

_HEADER_END = b"\r\n\r\n"


class SipStreamReader:
    """Incremental reader for one connection.

    ``max_message_size`` bounds what one message may make us buffer (413 beyond it).
    ``expects_pongs`` is for the side that sends pings (the RFC 5626 client): a lone CRLF is
    then reported as a pong at once. Otherwise a lone CRLF at the end of the input is held
    back until the next byte shows whether it begins a ping.
    """

    def __init__(
        self, *, max_message_size: int = _abnf.MAX_MESSAGE_SIZE, expects_pongs: bool = False
    ) -> None:
        self._buffer = bytearray()
        self._max = max_message_size
        self._expects_pongs = expects_pongs
        self._head: _Head | None = None
        self._body_start = 0
        self._body_length = 0
        self._scan_from = 0
        self._failed: SipParseError | None = None

    @property
    def failed(self) -> SipParseError | None:
        """The fatal error that stopped the reader, if any."""
        return self._failed

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as an event."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add received octets; return the messages and keep-alives now complete, in order."""
        if self._failed is not None:
            return []
        self._buffer += data
        events: list[StreamEvent] = []
        while self._next(events):
            pass
        return events

    def _fail(self, events: list[StreamEvent], error: SipParseError) -> bool:
        self._failed = error
        self._buffer.clear()
        self._head = None
        events.append(InvalidMessage(error, fatal=True))
        return False

    def _next(self, events: list[StreamEvent]) -> bool:
        """Try to produce one event; False when more input is needed (or after a failure)."""
        buffer = self._buffer
        if self._head is None:
            if not buffer:
                return False
            if buffer[0] in b"\r\n":
                return self._keepalive(events)
            end = buffer.find(_HEADER_END, self._scan_from)
            if end < 0:
                if len(buffer) > self._max:
                    return self._fail(events, SipParseError(413, "Header section too large"))
                self._scan_from = max(0, len(buffer) - 3)
                return False
            self._scan_from = 0
            if end + 4 > self._max:
                return self._fail(events, SipParseError(413, "Header section too large"))
            try:
                head = _parse_head(buffer, 0, end)
                length = head.content_length()
            except SipParseError as error:
                return self._fail(events, error)
            if length is None:
                # §18.3: "the Content-Length header field MUST be used with stream oriented
                # transports"; without it the next message cannot be found.
                return self._fail(events, head.fail(400, "Missing Content-Length on a stream"))
            if end + 4 + length > self._max:
                return self._fail(events, head.fail(413, "Message too large"))
            self._head = head
            self._body_start = end + 4
            self._body_length = length
        stop = self._body_start + self._body_length
        if len(buffer) < stop:
            return False
        body = bytes(buffer[self._body_start : stop])
        del buffer[:stop]
        head, self._head = self._head, None
        try:
            events.append(head.build(body))
        except SipParseError as error:
            events.append(InvalidMessage(error, fatal=False))
        return True

    def _keepalive(self, events: list[StreamEvent]) -> bool:
        # §7.5: CRLFs before a start-line are ignored; RFC 5626 gives them meaning as pings.
        buffer = self._buffer
        if buffer.startswith(PING):
            del buffer[:4]
            events.append(KeepAlivePing())
            return True
        if buffer.startswith(PONG):
            waiting = len(buffer) == 2 or (len(buffer) == 3 and buffer[2] == 0x0D)
            if waiting and not self._expects_pongs:
                return False
            del buffer[:2]
            events.append(KeepAlivePong())
            return True
        if len(buffer) == 1 and buffer[0] == 0x0D:
            return False
        del buffer[:1]  # a stray CR or LF: ignored like the CRLFs of §7.5
        return True
