"""Re-cut a G.711 byte stream into fixed-size packets: peer ptime (10-60 ms) to our 20 ms frames
on receive, and our 20 ms frames to the peer's ptime on send.

Why bytes and not samples: G.711 is one byte per sample at 8 kHz, so cutting the byte stream at
any multiple of 8 bytes (1 ms) is a valid audio boundary; nothing is decoded. The remainder stays
here until the next push so no audio is lost at a packet boundary.
"""

from __future__ import annotations

from edge_media.rtp.g711 import ULAW_SILENCE

BYTES_PER_MS = 8
MIN_PTIME_MS = 10
MAX_PTIME_MS = 60
FRAME_BYTES = 20 * BYTES_PER_MS


def ptime_bytes(ptime_ms: int) -> int:
    """Payload bytes per packet for a G.711 ptime (SDP `a=ptime`, RFC 4566 §6)."""
    if not MIN_PTIME_MS <= ptime_ms <= MAX_PTIME_MS:
        raise ValueError(f"ptime {ptime_ms} ms is outside {MIN_PTIME_MS}..{MAX_PTIME_MS}")
    return ptime_ms * BYTES_PER_MS


class Repacketizer:
    """Accumulates payload bytes and hands out packets of exactly `size` bytes."""

    __slots__ = ("_buffer", "_size")

    def __init__(self, size: int = FRAME_BYTES) -> None:
        if size <= 0:
            raise ValueError(f"packet size {size} must be positive")
        self._size = size
        self._buffer = bytearray()

    @property
    def size(self) -> int:
        return self._size

    @property
    def pending(self) -> int:
        """Bytes held back, less than one packet."""
        return len(self._buffer)

    def push(self, payload: bytes) -> list[bytes]:
        """Add payload bytes; returns every whole packet now available, oldest first."""
        size = self._size
        buffer = self._buffer
        if not buffer and len(payload) == size:
            return [payload]  # the common case: peer ptime equals ours
        buffer += payload
        whole = len(buffer) - len(buffer) % size
        if not whole:
            return []
        view = memoryview(buffer)
        try:
            out = [bytes(view[start : start + size]) for start in range(0, whole, size)]
        finally:
            view.release()
        del buffer[:whole]
        return out

    def flush(self, fill: int = ULAW_SILENCE) -> bytes | None:
        """The held remainder padded to a whole packet with `fill`, or None when nothing is held.

        Use it when a talkspurt ends, so its last few milliseconds still go out.
        """
        if not self._buffer:
            return None
        packet = bytes(self._buffer) + bytes((fill,)) * (self._size - len(self._buffer))
        self._buffer.clear()
        return packet

    def reset(self) -> None:
        """Drop the held remainder (a new stream, or audio that must not be played)."""
        self._buffer.clear()
