"""The WebSocket frames of the media path, built and split without websockets' per-frame machinery.

Why not websockets alone: at 200 calls a node sends and receives 10,000 media messages a second
per direction, and websockets' sans-I/O core spends more on each than the TCP syscall does
(py-spy on the node, bench/calls.py at 200 calls):
* sending: `Frame.serialize` builds every frame through ``io.BytesIO`` and draws its 4-byte
  masking key with ``secrets.token_bytes`` — one ``getrandom`` syscall per message, 8 % of the
  node's CPU on its own (10 % with the serialising);
* receiving: its generator-based parser resumes several generators per frame (6 %).

What this module does instead, only for the frames that are the bulk of the traffic:
* `MaskedFrames` builds a masked client data frame (FIN, no RSV bits: no extension is ever
  negotiated on these connections) with websockets' own C ``apply_mask``. The masking keys come
  from ``os.urandom`` as RFC 6455 §5.3 requires ("derived from a strong source of entropy"),
  4 KiB at a time: one syscall per 1,024 frames.
* `DataFrameSplitter` cuts whole, unfragmented TEXT/BINARY frames off the received byte stream,
  masked (from a client, on the agent-stream server) or not (from a server, on bot connections),
  and stops at the first byte it does not take: a control frame, a fragment, a reserved bit or
  opcode, a wrong mask bit, a frame over the size limit. From there the caller hands the bytes to
  websockets' core, which validates, answers and fails connections exactly as before; the
  splitter only takes over again at a frame boundary with the core's buffer empty (see
  `core_at_boundary`). So every rule the core enforces still holds, and frames keep their order.

Sans-I/O: no sockets here; ws_client.py and agent_stream/ws_server.py use it.
"""

from __future__ import annotations

import os
import struct

from websockets.frames import Opcode
from websockets.protocol import OPEN, Protocol

try:  # websockets' C helper; the pure-Python one where the wheel has none
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - every wheel we install ships speedups
    from websockets.utils import apply_mask

__all__ = [
    "CORE",
    "FIN_BINARY",
    "FIN_TEXT",
    "DataFrameSplitter",
    "MaskedFrames",
    "client_frames",
    "core_at_boundary",
    "server_frame",
]

FIN_TEXT = 0x81
FIN_BINARY = 0x82
MASK_BIT = 0x80
LENGTH_16 = 126
LENGTH_64 = 127
KEY_POOL_BYTES = 4096  # 1,024 masking keys per os.urandom call
MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5
# `DataFrameSplitter.split`'s mark for raw bytes websockets' core must read (CONT: never a message).
CORE = Opcode.CONT
_PING_PONG = (0x89, 0x8A)  # FIN ping, FIN pong
_DATA_OPCODES = {FIN_TEXT: Opcode.TEXT, FIN_BINARY: Opcode.BINARY}  # frame head → message kind
MAX_PARSER_DEPTH = 8  # generators between a core's parser and its read; 3 in websockets 15-17

_HEAD_16 = struct.Struct("!BBH")
_LENGTH_16 = struct.Struct("!H")
_LENGTH_64 = struct.Struct("!Q")


class MaskedFrames:
    """Masked client frames (RFC 6455 §5.2-5.3) for one connection or many: the key pool is
    the only state."""

    __slots__ = ("_offset", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._offset = KEY_POOL_BYTES

    def forget_keys(self) -> None:
        """Draw a fresh pool before the next frame (after a fork)."""
        self._pool = b""
        self._offset = KEY_POOL_BYTES

    def text(self, payload: bytes) -> bytes:
        """One FIN text frame carrying ``payload`` (UTF-8 already)."""
        return self._frame(FIN_TEXT, payload)

    def binary(self, payload: bytes) -> bytes:
        """One FIN binary frame carrying ``payload``."""
        return self._frame(FIN_BINARY, payload)

    def _frame(self, head: int, payload: bytes) -> bytes:
        offset = self._offset
        if offset >= KEY_POOL_BYTES:
            self._pool = os.urandom(KEY_POOL_BYTES)
            offset = 0
        key = self._pool[offset : offset + 4]
        self._offset = offset + 4
        length = len(payload)
        if length < LENGTH_16:
            header = bytes((head, MASK_BIT | length))
        elif length < 65536:
            header = _HEAD_16.pack(head, MASK_BIT | LENGTH_16, length)
        else:
            header = bytes((head, MASK_BIT | LENGTH_64)) + _LENGTH_64.pack(length)
        return b"".join((header, key, apply_mask(payload, key)))


def server_frame(head: int, payload: bytes) -> bytes:
    """One unmasked frame (a server's, RFC 6455 §5.1): ``head`` is `FIN_TEXT` or `FIN_BINARY`."""
    length = len(payload)
    if length < LENGTH_16:
        return bytes((head, length)) + payload
    if length < 65536:
        return _HEAD_16.pack(head, LENGTH_16, length) + payload
    return b"".join((bytes((head, LENGTH_64)), _LENGTH_64.pack(length), payload))


client_frames = MaskedFrames()  # one pool per process: keys are drawn, never shared
# A forked media worker must not reuse the keys its parent had drawn.
os.register_at_fork(after_in_child=client_frames.forget_keys)


class DataFrameSplitter:
    """Whole unfragmented data frames off a byte stream; see the module docstring.

    ``masked``: whether frames must carry a mask (a server reading a client) or must not (a
    client reading a server). ``max_size``: the largest payload taken; a bigger one is left to
    the core, which refuses it with 1009.
    """

    __slots__ = ("_buffer", "_masked", "_max_size")

    def __init__(self, *, masked: bool, max_size: int | None) -> None:
        self._masked = masked
        self._max_size = max_size if max_size is not None else 1 << 62
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes held back: the start of a frame that has not fully arrived."""
        return len(self._buffer)

    def take_pending(self) -> bytes:
        """The bytes held back, handed over: the core takes the stream from here."""
        held, self._buffer = self._buffer, b""
        return held

    def split(self, data: bytes) -> list[tuple[Opcode, bytes]]:
        """Add ``data``; return, in stream order, ``(Opcode, payload)`` for each whole data
        frame now complete (payload unmasked) and ``(CORE, raw bytes)`` for what websockets'
        core must read. The core gets whole ping and pong frames, so it stays at a frame
        boundary; anything else it gets (a close, a fragment, a frame this module does not
        judge) comes with every byte after it, and the caller gives the core the stream until
        `core_at_boundary` says it is back at a boundary. The start of a frame that has not
        fully arrived is held back for the next call."""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        items: list[tuple[Opcode, bytes]] = []
        masked = self._masked
        size = len(buffer)
        position = 0
        while size - position >= 2:
            head = buffer[position]
            second = buffer[position + 1]
            length = second & 0x7F
            start = position + 2
            if length == LENGTH_16:
                start += 2
                if start > size:
                    break  # the length is not all here yet
                (length,) = _LENGTH_16.unpack_from(buffer, position + 2)
            elif length == LENGTH_64:
                start += 8
                if start > size:
                    break
                (length,) = _LENGTH_64.unpack_from(buffer, position + 2)
            mask_ok = bool(second & MASK_BIT) is masked
            opcode = _DATA_OPCODES.get(head)
            if not mask_ok or not (
                (opcode is not None and length <= self._max_size)
                or (head in _PING_PONG and length <= MAX_CONTROL_PAYLOAD)
            ):
                items.append((CORE, buffer[position:]))  # the core judges it, and the rest
                return items
            payload_at = start + 4 if masked else start
            end = payload_at + length
            if end > size:
                break
            if opcode is None:
                items.append((CORE, buffer[position:end]))
            elif masked:
                key = buffer[start:payload_at]
                items.append((opcode, apply_mask(buffer[payload_at:end], key)))
            else:
                items.append((opcode, buffer[payload_at:end]))
            position = end
        if position < size:
            self._buffer = buffer[position:]
        return items


def core_at_boundary(core: Protocol) -> bool:
    """True when the splitter may take the stream back from websockets' core: the connection is
    open, no extension is in use, no fragmented message is in progress, and the core's parser
    waits for the next frame's first byte with nothing buffered.

    The last test looks into the parser generators: the core can have read a frame's header and
    wait for its payload with an empty buffer, and only the innermost generator it is suspended
    in (``at_eof`` between frames, ``read_exact`` inside one) tells that apart from a boundary. Any other shape (a websockets that parses differently) answers
    False, which leaves every byte to the core: slower, never wrong.
    """
    if (
        core.state is not OPEN
        or core.extensions
        or core.current_size is not None
        or core.reader.buffer
    ):
        return False
    waiting = core.parser  # the client's and server's parsers delegate to the frame parser
    for _ in range(MAX_PARSER_DEPTH):
        inner = getattr(waiting, "gi_yieldfrom", None)
        if inner is None:
            break
        waiting = inner
    return getattr(getattr(waiting, "gi_code", None), "co_name", None) == "at_eof"
