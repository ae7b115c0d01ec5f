from __future__ import annotations

import pytest

from edge_media.rtp.playout import PlayedMark as M
from edge_media.rtp.playout import PlayoutQueue

AUDIO = bytes(index % 251 for index in range(2000))


def tick(queue: PlayoutQueue) -> tuple[bytes | None, list[M]]:
    """One pacer tick as the RTP session runs it: take the frame, send it, take the marks."""
    frame = queue.next_frame()
    return frame, queue.take_reached()


def drain(queue: PlayoutQueue, calls: int) -> list[tuple[bytes | None, list[M]]]:
    return [tick(queue) for _ in range(calls)]


def test_idle_queue() -> None:
    queue = PlayoutQueue()
    assert tick(queue) == (None, [])
    assert queue.buffered_ms == 0


def test_media_comes_out_in_20_ms_frames() -> None:
    queue = PlayoutQueue()
    assert queue.push_media(AUDIO[:480]) == 0
    assert queue.buffered_ms == 60
    assert drain(queue, 4) == [
        (AUDIO[:160], []),
        (AUDIO[160:320], []),
        (AUDIO[320:480], []),
        (None, []),
    ]


def test_mark_is_reached_with_the_last_frame_before_it() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:320])
    queue.push_mark("a")
    assert drain(queue, 3) == [(AUDIO[:160], []), (AUDIO[160:320], [M("a", 40)]), (None, [])]


def test_mark_on_an_empty_queue_is_reached_at_the_next_call_having_played_nothing() -> None:
    queue = PlayoutQueue()
    queue.push_mark("now")
    assert drain(queue, 2) == [(None, [M("now", 0)]), (None, [])]


def test_marks_keep_their_order_around_frames() -> None:
    queue = PlayoutQueue()
    queue.push_mark("m1")
    queue.push_media(AUDIO[:160])
    queue.push_mark("m2")
    queue.push_mark("m3")
    queue.push_media(AUDIO[160:320])
    queue.push_mark("m4")
    queue.push_media(AUDIO[320:480])
    assert drain(queue, 4) == [
        (AUDIO[:160], [M("m1", 0), M("m2", 20), M("m3", 0)]),
        (AUDIO[160:320], [M("m4", 20)]),
        (AUDIO[320:480], []),
        (None, []),
    ]


def test_partial_frame_is_held_until_more_audio_comes() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:100])
    assert queue.buffered_ms == 12.5
    assert tick(queue) == (None, [])
    queue.push_media(AUDIO[100:200])
    assert queue.buffered_ms == 25
    assert drain(queue, 2) == [(AUDIO[:160], []), (None, [])]
    assert queue.buffered_ms == 5


def test_partial_frame_is_padded_when_a_mark_follows() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:400])
    queue.push_mark("end")
    assert drain(queue, 4) == [
        (AUDIO[:160], []),
        (AUDIO[160:320], []),
        (AUDIO[320:400] + b"\xff" * 80, [M("end", 60)]),  # the padded frame counts whole
        (None, []),
    ]


def test_flush_pads_the_partial_frame() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:10])
    queue.flush()
    queue.flush()  # nothing left to pad
    assert drain(queue, 2) == [(AUDIO[:10] + b"\xff" * 150, []), (None, [])]


@pytest.mark.parametrize("chunk", [1, 7, 159, 160, 161, 333, 2000])
def test_any_chunking_gives_the_same_frames(chunk: int) -> None:
    queue = PlayoutQueue()
    for start in range(0, 1920, chunk):
        queue.push_media(AUDIO[start : min(start + chunk, 1920)])
    frames = [frame for frame, _ in drain(queue, 13)]
    assert frames == [AUDIO[n * 160 : (n + 1) * 160] for n in range(12)] + [None]


def test_clear_drops_audio_and_returns_pending_marks_in_order() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:160])
    queue.push_mark("played")
    queue.push_media(AUDIO[160:500])
    queue.push_mark("a")
    queue.push_media(AUDIO[500:700])
    queue.push_mark("b")
    queue.push_media(AUDIO[700:750])
    assert tick(queue) == (AUDIO[:160], [M("played", 20)])
    assert queue.clear() == [M("a", 0), M("b", 0)]
    assert queue.buffered_ms == 0
    assert tick(queue) == (None, [])
    # The held partial was dropped too: new audio starts a fresh frame.
    queue.push_media(AUDIO[:160])
    assert tick(queue) == (AUDIO[:160], [])


def test_clear_on_an_empty_queue() -> None:
    assert PlayoutQueue().clear() == []


# -- played_ms ---------------------------------------------------------------------------------


def frames(count: int, first: int = 0) -> bytes:
    return AUDIO[first * 160 : (first + count) * 160]


def test_consecutive_marks_each_count_the_audio_since_the_previous_one() -> None:
    queue = PlayoutQueue()
    queue.push_media(frames(3))
    queue.push_mark("a")
    queue.push_media(frames(5, 3))
    queue.push_mark("b")
    queue.push_mark("c")  # nothing between b and c
    reached = [mark for _, marks in drain(queue, 9) for mark in marks]
    assert reached == [M("a", 60), M("b", 100), M("c", 0)]


def test_idle_ticks_between_utterances_are_not_played_audio() -> None:
    queue = PlayoutQueue()
    queue.push_media(frames(2))
    queue.push_mark("first")
    assert drain(queue, 10)[1] == (frames(1, 1), [M("first", 40)])  # then 8 idle ticks
    queue.push_media(frames(1, 2))
    queue.push_mark("second")
    assert drain(queue, 2) == [(frames(1, 2), [M("second", 20)]), (None, [])]


def test_a_mark_on_an_empty_queue_after_a_mark_played_nothing() -> None:
    queue = PlayoutQueue()
    queue.push_media(frames(2))
    queue.push_mark("spoke")
    drain(queue, 3)
    queue.push_mark("silent")
    assert tick(queue) == (None, [M("silent", 0)])


def test_audio_sent_without_a_mark_counts_towards_the_next_mark() -> None:
    """played_ms is everything played since the previous mark, marked or not."""
    queue = PlayoutQueue()
    queue.push_media(frames(4))
    drain(queue, 6)
    queue.push_mark("late")
    assert tick(queue) == (None, [M("late", 80)])


def test_flushed_partial_frame_counts_as_a_whole_frame() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:170])  # a frame and 10 bytes
    queue.flush()
    queue.push_mark("m")
    assert [marks for _, marks in drain(queue, 3)] == [[], [M("m", 40)], []]


def test_clear_mid_utterance_reports_what_was_heard_on_the_first_pending_mark() -> None:
    queue = PlayoutQueue()
    queue.push_media(frames(2))
    queue.push_mark("before")
    queue.push_media(frames(10, 2))
    queue.push_mark("cut")
    queue.push_media(frames(5, 12))
    queue.push_mark("unheard")
    queue.push_mark("unheard-too")
    assert [marks for _, marks in drain(queue, 5)] == [[], [M("before", 40)], [], [], []]
    assert queue.clear() == [M("cut", 60), M("unheard", 0), M("unheard-too", 0)]
    # The count starts again from the clear: the next mark covers only new audio.
    queue.push_media(frames(1))
    queue.push_mark("next")
    assert tick(queue) == (frames(1), [M("next", 20)])


def test_clear_of_a_mark_whose_audio_all_played_reports_all_of_it() -> None:
    queue = PlayoutQueue()
    queue.push_media(frames(3))
    drain(queue, 3)
    queue.push_mark("done")  # reached at the next tick, but the clear comes first
    assert queue.clear() == [M("done", 60)]


def test_clear_before_anything_played_reports_zero() -> None:
    queue = PlayoutQueue()
    queue.push_media(frames(3))
    queue.push_mark("never")
    assert queue.clear() == [M("never", 0)]


def test_clear_without_pending_marks_keeps_counting_towards_the_next_mark() -> None:
    """Dropped audio and the dropped partial frame never count; what played before does."""
    queue = PlayoutQueue()
    queue.push_media(frames(5) + AUDIO[:30])
    drain(queue, 2)
    assert queue.clear() == []
    queue.push_media(frames(1, 7))
    queue.push_mark("after")
    assert tick(queue) == (frames(1, 7), [M("after", 60)])


def test_capacity_drops_are_not_played_audio() -> None:
    queue = PlayoutQueue(capacity_seconds=0.06)  # three frames
    queue.push_media(frames(5))
    queue.push_mark("capped")
    assert [marks for _, marks in drain(queue, 3)][-1] == [M("capped", 60)]


def test_capacity_cap_drops_excess_and_flags_once() -> None:
    queue = PlayoutQueue(capacity_seconds=0.1)  # five frames
    assert queue.push_media(AUDIO[:1120]) == 320
    assert queue.buffered_ms == 100
    assert (queue.overflowed, queue.dropped_bytes) == (True, 320)
    assert queue.take_overflow_warning() is True
    assert queue.take_overflow_warning() is False
    assert queue.push_media(AUDIO[:50]) == 0  # a partial frame is still held
    assert queue.push_media(AUDIO[50:400]) == 400
    assert queue.dropped_bytes == 720
    frames = [frame for frame, _ in drain(queue, 6)]
    assert frames == [AUDIO[n * 160 : (n + 1) * 160] for n in range(5)] + [None]
    assert queue.take_overflow_warning() is False


def test_capacity_counts_padded_partials() -> None:
    queue = PlayoutQueue(capacity_seconds=0.04)  # two frames
    queue.push_media(AUDIO[:320])
    queue.push_media(AUDIO[:10])
    queue.push_mark("m")  # the padded partial does not fit: dropped, the mark still queued
    assert queue.dropped_bytes == 160
    assert drain(queue, 3) == [(AUDIO[:160], []), (AUDIO[160:320], [M("m", 40)]), (None, [])]


def test_room_frees_up_as_frames_play() -> None:
    queue = PlayoutQueue(capacity_seconds=0.04)
    assert queue.push_media(AUDIO[:480]) == 160
    queue.next_frame()
    assert queue.push_media(AUDIO[:160]) == 0
    assert queue.buffered_ms == 40


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity 0 s must be positive"):
        PlayoutQueue(capacity_seconds=0)


def test_reached_marks_wait_for_take_and_a_clear_returns_them_first() -> None:
    """A mark reached by a tick whose packet has not left yet is not lost or reordered by a
    clear that comes in between: the clear returns it ahead of the pending ones, once."""
    queue = PlayoutQueue()
    queue.push_media(frames(1))
    queue.push_mark("reached")
    queue.push_media(frames(2, 1))
    queue.push_mark("pending")
    assert queue.next_frame() == frames(1)
    assert queue.has_reached
    assert queue.clear() == [M("reached", 20), M("pending", 0)]
    assert not queue.has_reached
    assert queue.take_reached() == []


def test_pending_marks_counts_marks_until_taken_or_cleared() -> None:
    """What a driver's mark cap bounds (PROTOCOL.md §6): marks held, reached or not."""
    queue = PlayoutQueue()
    queue.push_mark("a")  # nothing ahead: reached on the next tick
    queue.push_media(frames(1))
    queue.push_mark("b")
    queue.push_media(frames(1, 1))
    queue.push_mark("c")
    assert queue.pending_marks == 3
    assert queue.next_frame() == frames(1)  # reaches a and b
    assert queue.pending_marks == 3  # reached, not yet taken: still held
    assert queue.take_reached() == [M("a", 0), M("b", 20)]
    assert queue.pending_marks == 1
    queue.push_mark("d")
    assert [m.name for m in queue.clear()] == ["c", "d"]
    assert queue.pending_marks == 0
