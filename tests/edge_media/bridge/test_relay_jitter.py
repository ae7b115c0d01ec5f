"""The relay's one-frame jitter buffer, driven tick by tick against a real PlayoutQueue.

A leg whose packets arrive in phase with our pacer, with a little jitter either side, must not
get silence frames in the middle of its speech; a fast sender must not grow the delay without end.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from edge_media.bridge.relay import MAX_RELAY_MS, RelaySink
from edge_media.rtp.playout import FRAME_BYTES, PlayoutQueue

SILENCE = None


class Leg:
    """The far side of a RelaySink: just what it writes to (a playout queue and DTMF out)."""

    def __init__(self) -> None:
        self.playout = PlayoutQueue()
        self.digits: list[str] = []

    def send_dtmf(self, digit: str, duration_ms: float = 100.0) -> bool:
        self.digits.append(digit)
        return True


def frame(n: int) -> bytes:
    return bytes((n % 250,)) * FRAME_BYTES


def tick(leg: Leg) -> int | None:
    """What the pacer sends now: the frame's number, or None for silence/comfort noise."""
    payload = leg.playout.next_frame()
    if payload is None or payload == b"\xff" * FRAME_BYTES:
        return SILENCE
    return payload[0]


def run(arrivals: list[float], ticks: int) -> list[int | None]:
    """Frames 0.. arrive at ``arrivals`` (ms); the pacer ticks every 20 ms from 0."""
    leg = Leg()
    sink = RelaySink(leg)  # type: ignore[arg-type]  # duck-typed far leg
    events = sorted(
        [(t, 1, n) for n, t in enumerate(arrivals)] + [(k * 20.0, 0, -1) for k in range(ticks)]
    )
    sent: list[int | None] = []
    for _, kind, n in events:
        if kind == 1:
            sink.on_frames((frame(n),))
        else:
            sent.append(tick(leg))
    return sent


def test_in_phase_arrivals_with_jitter_never_starve_mid_speech() -> None:
    rng = random.Random(7)
    # Packets due exactly on our ticks, each early or late by up to 3 ms.
    arrivals = [n * 20.0 + 0.5 + rng.uniform(-3.0, 3.0) for n in range(500)]
    sent = run(arrivals, 505)
    first = next(i for i, n in enumerate(sent) if n is not None)
    speech = sent[first : first + 500]
    assert SILENCE not in speech, speech.index(SILENCE)
    assert speech == [n % 250 for n in range(500)]
    # One frame in hand: the first frame waited at most two ticks.
    assert first <= 2


def test_without_priming_the_same_arrivals_would_click() -> None:
    """The scenario above is a real hazard: a bare queue starves in it (the test can fail)."""
    rng = random.Random(7)
    arrivals = [n * 20.0 + 0.5 + rng.uniform(-3.0, 3.0) for n in range(500)]
    queue = PlayoutQueue()
    events = sorted(
        [(t, 1, n) for n, t in enumerate(arrivals)] + [(k * 20.0, 0, -1) for k in range(505)]
    )
    sent = []
    for _, kind, n in events:
        if kind == 1:
            queue.push_media(frame(n))
        else:
            sent.append(queue.next_frame())
    first = next(i for i, f in enumerate(sent) if f is not None)
    assert None in sent[first : first + 400]


def test_a_fast_sender_is_held_to_the_cap() -> None:
    # 1 % fast: 19.8 ms apart, so the queue gains a frame every 100 packets.
    arrivals = [1.0 + n * 19.8 for n in range(3000)]
    leg = Leg()
    sink = RelaySink(leg)  # type: ignore[arg-type]
    events = sorted(
        [(t, 1, n) for n, t in enumerate(arrivals)] + [(k * 20.0, 0, -1) for k in range(2970)]
    )
    depth = 0.0
    for _, kind, n in events:
        if kind == 1:
            sink.on_frames((frame(n),))
            depth = max(depth, leg.playout.buffered_ms)
        else:
            leg.playout.next_frame()
    assert depth <= MAX_RELAY_MS
    assert 20 <= sink.dropped <= 35  # ~30 frames too many over 60 s, minus the cap's headroom


def test_a_new_talkspurt_after_silence_is_primed_again() -> None:
    arrivals = [n * 20.0 + 1.0 for n in range(50)] + [2000.0 + n * 20.0 + 1.0 for n in range(50)]
    sent = run(arrivals, 160)
    spurts = [i for i in range(1, len(sent)) if sent[i] is not None and sent[i - 1] is None]
    assert len(spurts) == 2
    for start in spurts:
        assert SILENCE not in sent[start : start + 50]


def test_digits_cross_to_the_other_leg() -> None:
    leg = Leg()
    pressed = (SimpleNamespace(digit="5"), SimpleNamespace(digit="#"))
    RelaySink(leg).on_digits(pressed)  # type: ignore[arg-type]  # only .digit is read
    assert leg.digits == ["5", "#"]
