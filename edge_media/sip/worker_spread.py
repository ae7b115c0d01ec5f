"""Spreads the SIP calls that reach the node's one UDP port over its media workers, by Call-ID.

Why: with ``AGERA_MEDIA_WORKERS`` > 1 every worker binds the SIP port with SO_REUSEPORT, and the
kernel gives each datagram to the worker its source address and port hash to. A carrier sends all
of its calls from one address and port, so every call from it landed on one worker (one core)
while the others idled: the node's capacity was one core's for its biggest customer.

How: the worker that receives a datagram hands it to the worker that owns its Call-ID
(``crc32(Call-ID) % workers``) over a Unix datagram socket in the abstract namespace (nothing on
disk to clean up after a crash). Every request and response of a dialog carries its Call-ID, so
one worker sees all of them; a Call-ID a worker makes itself (an outbound INVITE, a REGISTER to a
trunk) is drawn until it hashes to that worker (`own_call_id`), so the answers come home. The
owner answers from its own socket on the shared port: the peer sees the address and port it
sent to. RTP needs nothing: the owner's SDP names its own RTP ports.

What stays where it lands: the per-source admission (rate limit, bans) runs in the receiving
worker before anything is forwarded (a source always reaches the same first worker, so its count
is whole there, and a flood is not forwarded); a datagram without a findable Call-ID is handled
where it landed (the parser answers it); TCP is not spread (a connection's responses must leave
on that connection, which only the accepting worker has). When the owner's socket is gone (a
worker restarting), the datagram is handled where it landed rather than dropped.

Cost: finding the Call-ID is one regular-expression search over the header block; a forwarded
datagram is one ``sendto`` and one receive on a local socket. SIP is a few dozen messages per
call, against 100 RTP packets a second.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import zlib
from collections.abc import Callable
from typing import Any, TypeAlias

SipAddress: TypeAlias = tuple[str, int]  # as edge_media.sip.transport has it

__all__ = ["WorkerSpread", "call_id_of", "own_call_id", "owner_of"]

logger = logging.getLogger("agera.sip.spread")

# The Call-ID header, long or compact form (RFC 3261 §7.3.3: "i"), at the start of a line.
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
MAX_OWN_CALL_ID_DRAWS = 10_000  # the chance a draw misses is (n-1)/n: never near this
_FRAME_SEPARATOR = b"\n"


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID of a raw SIP message (its header block only), or None."""
    end = data.find(b"\r\n\r\n")
    found = _CALL_ID.search(data if end < 0 else data[: end + 2])
    if found is None:
        return None
    value = found.group(1).strip()
    return value or None


def owner_of(call_id: bytes, workers: int) -> int:
    """Which worker owns a Call-ID: the same answer in every worker (crc32, not ``hash``, whose
    seed differs per process)."""
    return zlib.crc32(call_id) % workers


def own_call_id(index: int, workers: int, make: Callable[[], str]) -> str:
    """A new Call-ID from ``make`` that worker ``index`` owns."""
    for _ in range(MAX_OWN_CALL_ID_DRAWS):
        candidate = make()
        if owner_of(candidate.encode(), workers) == index:
            return candidate
    raise RuntimeError(f"no Call-ID for worker {index} of {workers} in {MAX_OWN_CALL_ID_DRAWS}")


def mesh_address(mesh: str, index: int) -> str:
    """Worker ``index``'s socket: abstract (leading NUL), so it vanishes with the process."""
    return f"\0agera-sip-{mesh}-{index}"


def encode_frame(data: bytes, remote: SipAddress) -> bytes:
    host, port = remote
    return host.encode() + _FRAME_SEPARATOR + str(port).encode() + _FRAME_SEPARATOR + data


def decode_frame(frame: bytes) -> tuple[bytes, SipAddress] | None:
    host, sep, rest = frame.partition(_FRAME_SEPARATOR)
    port, sep2, data = rest.partition(_FRAME_SEPARATOR)
    if not (sep and sep2 and port.isdigit()):
        return None
    return data, (host.decode("ascii", "replace"), int(port))


class _MeshProtocol(asyncio.DatagramProtocol):
    def __init__(self, spread: WorkerSpread) -> None:
        self.spread = spread

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.spread._received(data)


class WorkerSpread:
    """This worker's end of the mesh: `forward` what another worker owns; `start` to receive
    what others forward here (handed to ``deliver`` as if it came from the peer directly)."""

    def __init__(self, index: int, workers: int, mesh: str) -> None:
        if not 0 <= index < workers:
            raise ValueError(f"worker index {index} outside 0..{workers - 1}")
        self.index = index
        self.workers = workers
        self.mesh = mesh
        self.forwarded = 0
        self.received = 0
        self.undeliverable = 0  # forwards that failed: handled here instead
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._deliver: Callable[[bytes, SipAddress], None] | None = None
        self._warned: set[int] = set()

    def new_call_id(self, make: Callable[[], str] = lambda: secrets.token_hex(16)) -> str:
        return own_call_id(self.index, self.workers, make)

    async def start(self, deliver: Callable[[bytes, SipAddress], None]) -> None:
        self._deliver = deliver
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(mesh_address(self.mesh, self.index))
        sock.setblocking(False)
        self._sock = sock
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _MeshProtocol(self), sock=sock
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def forward(self, data: bytes, remote: SipAddress) -> bool:
        """Send a datagram another worker owns to it; False when it is ours (or has no Call-ID,
        or the owner cannot be reached): handle it here."""
        call_id = call_id_of(data)
        if call_id is None:
            return False
        owner = owner_of(call_id, self.workers)
        if owner == self.index or self._sock is None:
            return False
        try:
            self._sock.sendto(encode_frame(data, remote), mesh_address(self.mesh, owner))
        except OSError as error:
            self.undeliverable += 1
            if owner not in self._warned:
                self._warned.add(owner)
                logger.warning(
                    "worker %d cannot reach worker %d (%s): its calls are handled here",
                    self.index,
                    owner,
                    error.strerror or error,
                )
            return False
        self._warned.discard(owner)
        self.forwarded += 1
        return True

    def _received(self, frame: bytes) -> None:
        decoded = decode_frame(frame)
        if decoded is None or self._deliver is None:
            return
        self.received += 1
        self._deliver(*decoded)
