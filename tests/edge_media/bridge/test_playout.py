from __future__ import annotations

import pytest

from edge_media.bridge.playout import PlayoutQueue

AUDIO = bytes(index % 251 for index in range(2000))


def drain(queue: PlayoutQueue, calls: int) -> list[tuple[bytes | None, list[str]]]:
    return [queue.next_frame() for _ in range(calls)]


def test_idle_queue() -> None:
    queue = PlayoutQueue()
    assert queue.next_frame() == (None, [])
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
    assert drain(queue, 3) == [(AUDIO[:160], []), (AUDIO[160:320], ["a"]), (None, [])]


def test_mark_on_an_empty_queue_is_reached_at_the_next_call() -> None:
    queue = PlayoutQueue()
    queue.push_mark("now")
    assert drain(queue, 2) == [(None, ["now"]), (None, [])]


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
        (AUDIO[:160], ["m1", "m2", "m3"]),
        (AUDIO[160:320], ["m4"]),
        (AUDIO[320:480], []),
        (None, []),
    ]


def test_partial_frame_is_held_until_more_audio_comes() -> None:
    queue = PlayoutQueue()
    queue.push_media(AUDIO[:100])
    assert queue.buffered_ms == 12.5
    assert queue.next_frame() == (None, [])
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
        (AUDIO[320:400] + b"\xff" * 80, ["end"]),
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
    assert queue.next_frame() == (AUDIO[:160], ["played"])
    assert queue.clear() == ["a", "b"]
    assert queue.buffered_ms == 0
    assert queue.next_frame() == (None, [])
    # The held partial was dropped too: new audio starts a fresh frame.
    queue.push_media(AUDIO[:160])
    assert queue.next_frame() == (AUDIO[:160], [])


def test_clear_on_an_empty_queue() -> None:
    assert PlayoutQueue().clear() == []


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
    assert drain(queue, 3) == [(AUDIO[:160], []), (AUDIO[160:320], ["m"]), (None, [])]


def test_room_frees_up_as_frames_play() -> None:
    queue = PlayoutQueue(capacity_seconds=0.04)
    assert queue.push_media(AUDIO[:480]) == 160
    queue.next_frame()
    assert queue.push_media(AUDIO[:160]) == 0
    assert queue.buffered_ms == 40


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity 0 s must be positive"):
        PlayoutQueue(capacity_seconds=0)
