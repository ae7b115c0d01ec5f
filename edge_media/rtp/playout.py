"""Bot→caller playout queue: bot audio of any length in, exactly one 20 ms frame out per pacer
tick, with Twilio-stream `mark` and `clear` semantics (PROTOCOL.md, "5. Playout, marks and
clear").

Why marks live in the same FIFO as the audio: a mark must be echoed when playout *reaches* it,
not when it arrives, because bots count outstanding marks to know whether the caller is still
hearing them and to cut their transcript on barge-in. A mark is reached once every byte of
media pushed before it has been taken by `next_frame`. `clear` drops all audio and returns the
pending marks in order, so the bot learns those chunks were never played.

Why reached marks wait in the queue until `take_reached`: the frame that reaches a mark is
only on the wire once the pacer tick has sent it, and the tick sends its packets after it has
pulled every stream's frame. A mark echoed from inside `next_frame` would leave before the
packet it vouches for; under load (a preempted process, a garbage collection mid-tick) the bot
heard the echo milliseconds before the caller could hear the audio. The RTP session takes the
reached marks once the tick's packets are out. A `clear` in between returns them first, so
the bot still receives every echo once, in queue order.

Why each reached mark carries ``played_ms``: a bot that is interrupted must know how much of
its reply the caller actually heard, to cut its transcript at the right word. Counting is in
whole frames, since that is what the pacer sends: a partial frame padded with silence counts as
20 ms played, an idle tick (nothing queued) counts as nothing, and neither do frames dropped
for capacity or by a clear. `clear` reports the audio heard since the previous mark on the first
pending mark and 0 on the later ones, whose audio was never reached.

Cost: audio is cut into 160-byte frames once, on push, and kept in a deque next to the marks,
so `next_frame` is a couple of `popleft`s: O(1) per frame whatever the chunk sizes. Played audio
is not counted per frame either: each mark records how many frames were queued ahead of it
(the queue's running frame position, advanced once per push), so reaching a mark is one
subtraction and taking a frame costs what it did before marks had a duration.

The queue holds whatever marks it is given: how many a bot may have pending is the driver's
limit (drivers/twilio_driver.py, PROTOCOL.md §6), since the driver is the one that would echo
them. `pending_marks` (kept as a count, O(1)) lets the node and tests see what is held.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
FRAME_MS = 20
BYTES_PER_MS = FRAME_BYTES // FRAME_MS
ULAW_SILENCE = 0xFF
DEFAULT_CAPACITY_SECONDS = 60.0


class PlayedMark(NamedTuple):
    """A mark reached by playout, or dropped by a clear, with how much bot audio was heard.

    ``played_ms`` is the bot audio actually played between the previous mark (or the start) and
    this one; for marks dropped by a clear, the first says how much of its audio was heard before
    the clear and the later ones 0.
    """

    name: str
    played_ms: int


class _Mark:
    """A mark in the FIFO, told apart from audio frames (bytes) by its type.

    ``end`` is the queue's frame position when the mark was pushed: once it is reached, every
    frame up to that position has been played.
    """

    __slots__ = ("end", "name")

    def __init__(self, name: str, end: int) -> None:
        self.name = name
        self.end = end


class PlayoutQueue:
    """FIFO of 20 ms μ-law frames and marks for one call; pure, with no clock of its own."""

    __slots__ = (
        "_capacity",
        "_dropped_bytes",
        "_frames",
        "_items",
        "_marks",
        "_overflow_reported",
        "_overflowed",
        "_partial",
        "_position",
        "_reached",
        "_reached_marks",
        "_starved",
        "audio_since",
    )

    def __init__(self, *, capacity_seconds: float = DEFAULT_CAPACITY_SECONDS) -> None:
        if capacity_seconds <= 0:
            raise ValueError(f"capacity {capacity_seconds} s must be positive")
        self._capacity = max(1, int(capacity_seconds * 1000 / FRAME_MS))  # in frames
        self._items: deque[bytes | _Mark] = deque()
        self._frames = 0  # frames in _items
        self._marks = 0  # marks in _items and _reached_marks: pushed, not yet taken or cleared
        # Frame positions: _position counts frames ever queued and not cleared, so frames played
        # so far are _position - _frames; _reached is the position of the last mark reported.
        self._position = 0
        self._reached = 0
        self._reached_marks: list[PlayedMark] = []  # reached by next_frame, not yet taken
        self._partial = bytearray()  # trailing bytes short of a whole frame
        self._dropped_bytes = 0
        self._overflowed = False
        self._overflow_reported = False
        self._starved = True
        # When audio was pushed into this queue while it was idle (`idle`), on the pusher's
        # clock; 0.0 when none waits to be played. The queue has no clock: the bridge sets it,
        # the RTP session reads and resets it when that audio starts playing (its bot → wire
        # figure, rtp/session.py).
        self.audio_since = 0.0

    @property
    def idle(self) -> bool:
        """Nothing queued, and the last `next_frame` had no audio (or a clear came since):
        audio pushed now starts a talkspurt on the wire."""
        return self._starved and not self._frames and not self._partial

    @property
    def starved(self) -> bool:
        """True when the last `next_frame` had no audio to give (and before the first one):
        whatever is pushed now starts a new talkspurt rather than continuing one."""
        return self._starved

    @property
    def buffered_ms(self) -> float:
        """Audio waiting to be played, including a held partial frame."""
        return self._frames * FRAME_MS + len(self._partial) / BYTES_PER_MS

    @property
    def pending_marks(self) -> int:
        """Marks pushed and not yet handed back by `take_reached` or `clear`."""
        return self._marks

    @property
    def dropped_bytes(self) -> int:
        """Audio refused because the queue was full, over the queue's lifetime."""
        return self._dropped_bytes

    @property
    def overflowed(self) -> bool:
        """True once any audio has been dropped for capacity."""
        return self._overflowed

    def take_overflow_warning(self) -> bool:
        """True exactly once, after the first overflow: the caller logs one warning per call
        (Twilio's 31931 is once per stream too)."""
        if self._overflowed and not self._overflow_reported:
            self._overflow_reported = True
            return True
        return False

    def push_media(self, payload: bytes) -> int:
        """Queue μ-law audio of any length; returns the bytes dropped for capacity (a held
        partial frame that this call completes counts with them)."""
        partial = self._partial
        data = memoryview(payload)
        try:
            if partial:
                need = FRAME_BYTES - len(partial)
                partial += data[:need]
                data = data[need:]
                if len(partial) < FRAME_BYTES:
                    return 0
                frame = bytes(partial)
                partial.clear()
                if not self._append_frame(frame):
                    return self._refuse(FRAME_BYTES + len(data))
            whole = len(data) - len(data) % FRAME_BYTES
            room = (self._capacity - self._frames) * FRAME_BYTES
            if whole > room:
                dropped = len(data) - room
                whole = room
                data = data[:room]
                self._append_frames(data, whole)
                return self._refuse(dropped)
            self._append_frames(data, whole)
            partial += data[whole:]
            return 0
        finally:
            data.release()

    def push_mark(self, name: str) -> None:
        """Queue a mark behind all audio pushed so far; a held partial frame is padded with
        silence and queued first, so the mark is reached right after that audio plays."""
        self._pad_partial()
        self._items.append(_Mark(name, self._position))
        self._marks += 1

    def flush(self) -> None:
        """The bot's utterance is over: pad and queue a held partial frame so it plays."""
        self._pad_partial()

    def clear(self) -> list[PlayedMark]:
        """Drop all queued audio; returns every mark not yet taken, oldest first: those already
        reached (with their own ``played_ms``), then the pending ones.

        The first pending mark gets the audio played since the previous mark (what the caller
        heard of it before the clear), the later ones 0. With no mark pending the count runs
        on, so the bot's next mark still covers all audio played since its previous one.
        """
        played = self._position - self._frames
        marks: list[PlayedMark] = []
        for item in self._items:
            if type(item) is _Mark:
                heard = 0 if marks else (played - self._reached) * FRAME_MS
                marks.append(PlayedMark(item.name, heard))
        if marks:
            self._reached = played
        marks[:0] = self.take_reached()
        self._items.clear()
        self._frames = 0
        self._marks = 0
        self._position = played
        self._partial.clear()
        self._starved = True  # what comes next starts a new talkspurt
        self.audio_since = 0.0
        return marks

    @property
    def has_reached(self) -> bool:
        """True when marks reached by `next_frame` wait to be taken."""
        return bool(self._reached_marks)

    def take_reached(self) -> list[PlayedMark]:
        """The marks reached since the last call, oldest first; call once the frames taken
        with them have been sent."""
        marks = self._reached_marks
        if not marks:
            return []
        self._reached_marks = []
        self._marks -= len(marks)
        return marks

    def next_frame(self) -> bytes | None:
        """The 20 ms payload to send now (None when idle); marks reached with it are kept for
        `take_reached`."""
        items = self._items
        frame: bytes | None = None
        while items:
            item = items[0]
            if type(item) is _Mark:
                items.popleft()
                reached = PlayedMark(item.name, (item.end - self._reached) * FRAME_MS)
                self._reached_marks.append(reached)
                self._reached = item.end
            elif frame is None:
                frame = items.popleft()  # type: ignore[assignment]  # a frame, by elimination
                self._frames -= 1
            else:
                break
        self._starved = frame is None
        return frame

    # -- internals -----------------------------------------------------------------------------

    def _append_frame(self, frame: bytes) -> bool:
        if self._frames >= self._capacity:
            return False
        self._items.append(frame)
        self._frames += 1
        self._position += 1
        return True

    def _append_frames(self, data: memoryview, whole: int) -> None:
        append = self._items.append
        for start in range(0, whole, FRAME_BYTES):
            append(bytes(data[start : start + FRAME_BYTES]))
        count = whole // FRAME_BYTES
        self._frames += count
        self._position += count

    def _pad_partial(self) -> None:
        partial = self._partial
        if not partial:
            return
        frame = bytes(partial) + bytes((ULAW_SILENCE,)) * (FRAME_BYTES - len(partial))
        partial.clear()
        if not self._append_frame(frame):
            self._refuse(FRAME_BYTES)

    def _refuse(self, dropped: int) -> int:
        self._dropped_bytes += dropped
        self._overflowed = True
        return dropped
