"""audio_format: μ-law tables against audioop, passthrough identity, and resampled tones checked
by frequency, level, aliasing, latency and seamless chunk edges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soxr

from edge_media.drivers.audio_format import (
    FORMATS,
    LINEAR_TO_ULAW,
    ULAW_TO_LINEAR,
    AgentToCaller,
    CallerToAgent,
    parse_format,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from tests.support.fake_elevenlabs import FORMAT_RATES, decode_audio, tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCM_FORMATS = [name for name in FORMATS if name.startswith("pcm_")]
FRAME = 160  # 20 ms of caller μ-law


def frequency_and_level(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Dominant frequency (Hz, interpolated FFT peak) and RMS level of the steady middle."""
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    window = np.hanning(len(middle))
    spectrum = np.abs(np.fft.rfft(middle * window))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    offset = 0.5 * (left - right) / (left - 2 * centre + right)
    return (peak + offset) * rate / len(middle), float(np.sqrt(np.mean(middle**2)))


def caller_frames(ms: int, frequency: float = 1000.0, level: float = 0.5) -> list[bytes]:
    audio = tone("ulaw_8000", frequency, ms, level=level)
    return [audio[index : index + FRAME] for index in range(0, len(audio), FRAME)]


# -- formats and tables --------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_every_agent_format_parses(name: str) -> None:
    parsed = parse_format(name)
    assert parsed.name == name
    assert parsed.rate == FORMAT_RATES[name]
    assert parsed.encoding == ("ulaw" if name == "ulaw_8000" else "pcm")


@pytest.mark.parametrize(
    "name", ["", "mp3_44100", "pcm_11025", "pcm_016000", "ulaw_16000", "pcm_", "PCM_16000"]
)
def test_unknown_formats_are_value_errors(name: str) -> None:
    with pytest.raises(ValueError, match="unsupported audio format"):
        parse_format(name)
    with pytest.raises(ValueError):
        CallerToAgent(name)
    with pytest.raises(ValueError):
        AgentToCaller(name)


def test_tables_match_audioop_for_every_code_and_sample() -> None:
    codes = bytes(range(256))
    assert ULAW_TO_LINEAR.tobytes() == audioop.ulaw2lin(codes, 2)
    every = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    assert LINEAR_TO_ULAW.take(np.arange(65536)).size == 65536
    assert pcm16_to_ulaw(every) == audioop.lin2ulaw(every, 2)
    assert ulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)
    with pytest.raises(ValueError, match="even length"):
        pcm16_to_ulaw(b"\x00")


# -- caller → agent ------------------------------------------------------------------------


def test_ulaw_caller_audio_passes_through_as_the_same_object() -> None:
    converter = CallerToAgent("ulaw_8000")
    frame = bytes(range(160))
    assert converter.passthrough
    assert converter.convert(frame) is frame


def test_pcm_8000_is_a_table_lookup() -> None:
    converter = CallerToAgent("pcm_8000")
    frame = bytes(range(96, 256))
    assert converter.convert(frame) == audioop.ulaw2lin(frame, 2)


def test_caller_audio_to_pcm_16000_keeps_frequency_level_and_has_no_chunk_edges() -> None:
    frames = caller_frames(1000)
    converter = CallerToAgent("pcm_16000")
    chunked = b"".join(converter.convert(frame) for frame in frames)
    one_go = CallerToAgent("pcm_16000").convert(b"".join(frames))
    samples = decode_audio("pcm_16000", chunked)
    frequency, level = frequency_and_level(samples, 16000)
    assert frequency == pytest.approx(1000, abs=2)
    assert level == pytest.approx(0.5 / np.sqrt(2), rel=0.03)
    # Chunk by chunk equals all at once (to rounding): the filter state carries over, so the
    # 20 ms edges add nothing.
    reference = decode_audio("pcm_16000", one_go)
    size = min(len(samples), len(reference))
    assert size > 15000
    assert np.max(np.abs(samples[:size] - reference[:size])) < 4 / 32768
    # The check can fail: resampling each frame on its own (no state) clicks at every edge.
    stateless = np.concatenate(
        [
            soxr.resample(ULAW_TO_LINEAR.take(np.frombuffer(f, np.uint8)), 8000, 16000)
            for f in frames
        ]
    )
    broken = stateless[:size].astype(np.float64) / 32768
    assert np.max(np.abs(broken - reference[:size])) > 0.02


def test_resampling_holds_back_little_and_steadily() -> None:
    """The variable-rate engine was picked for this (audio_format's docstring): a constant
    30 ms up to 16 kHz and 15 ms down to 8 kHz, where the fixed-rate ones hold up to 115 ms."""
    to_agent = CallerToAgent("pcm_16000")
    to_caller = AgentToCaller("pcm_16000")
    sent_ms = 0
    up = down = 0  # samples produced
    for frame in caller_frames(600):
        sent_ms += 20
        up += len(to_agent.convert(frame)) // 2
        down += len(to_caller.convert(tone("pcm_16000", 500, 20)))
        if sent_ms >= 100:
            assert sent_ms - up / 16 <= 31
            assert sent_ms - down / 8 <= 16


# -- agent → caller ------------------------------------------------------------------------


def test_ulaw_agent_audio_passes_through_as_the_same_object() -> None:
    converter = AgentToCaller("ulaw_8000")
    chunk = bytes(range(255))
    assert converter.convert(chunk) is chunk
    assert not converter.holds_audio
    assert converter.flush() == b""


def test_pcm_8000_agent_audio_with_odd_chunks_keeps_the_odd_byte() -> None:
    pcm = tone("pcm_8000", 700, 100)
    converter = AgentToCaller("pcm_8000")
    pieces = [pcm[index : index + 33] for index in range(0, len(pcm), 33)]
    out = b"".join(converter.convert(piece) for piece in pieces)
    assert out == audioop.lin2ulaw(pcm, 2)
    # One half sample waits for its other half.
    assert converter.convert(b"\x00") == b""
    assert converter.convert(b"\x10") == audioop.lin2ulaw(b"\x00\x10", 2)


@pytest.mark.parametrize("name", PCM_FORMATS)
def test_agent_tone_reaches_the_caller_at_its_frequency_and_level(name: str) -> None:
    rate = FORMAT_RATES[name]
    audio = tone(name, 1000, 1000, level=0.5)
    converter = AgentToCaller(name)
    step = 333  # odd: chunks split samples
    out = b"".join(converter.convert(audio[i : i + step]) for i in range(0, len(audio), step))
    out += converter.flush()
    assert len(out) == pytest.approx(8000, abs=2)  # nothing lost: 1 s at 8 kHz
    frequency, level = frequency_and_level(decode_audio("ulaw_8000", out), 8000)
    assert frequency == pytest.approx(1000, abs=2), rate
    assert level == pytest.approx(0.5 / np.sqrt(2), rel=0.03)


@pytest.mark.parametrize("name", ["pcm_16000", "pcm_24000", "pcm_48000"])
def test_agent_audio_above_4_khz_does_not_fold_into_the_phone_band(name: str) -> None:
    converter = AgentToCaller(name)
    out = converter.convert(tone(name, 5500, 500, level=0.5)) + converter.flush()
    _, level = frequency_and_level(decode_audio("ulaw_8000", out), 8000)
    assert level < 0.005  # the 2.5 kHz alias is below -40 dB (linear interpolation: ~-6 dB)


def test_agent_audio_chunk_edges_are_seamless() -> None:
    audio = tone("pcm_16000", 440, 600, level=0.6)
    chunked_converter = AgentToCaller("pcm_16000")
    chunked = b"".join(
        chunked_converter.convert(audio[i : i + 641]) for i in range(0, len(audio), 641)
    )
    chunked += chunked_converter.flush()
    one_go_converter = AgentToCaller("pcm_16000")
    one_go = one_go_converter.convert(audio) + one_go_converter.flush()
    assert len(chunked) == len(one_go) == 4800
    difference = decode_audio("ulaw_8000", chunked) - decode_audio("ulaw_8000", one_go)
    assert np.max(np.abs(difference)) < 0.002  # one μ-law step at most, from rounding
    # The check can fail: a filter restarted at every chunk edge leaves a mark there.
    restarted_converter = AgentToCaller("pcm_16000")
    restarted = b"".join(
        restarted_converter.convert(audio[i : i + 640]) + restarted_converter.flush()
        for i in range(0, len(audio), 640)
    )
    broken = decode_audio("ulaw_8000", restarted) - decode_audio("ulaw_8000", one_go)
    assert np.max(np.abs(broken)) > 0.1


def test_flush_plays_the_tail_and_reset_forgets_it() -> None:
    converter = AgentToCaller("pcm_24000")
    audio = tone("pcm_24000", 800, 200)
    out = converter.convert(audio)
    assert converter.holds_audio
    assert len(out) < 1600  # the resampler keeps some back ...
    tail = converter.flush()
    assert len(out) + len(tail) == 1600  # ... which flush hands over: 200 ms at 8 kHz
    assert converter.flush() == b""
    # After a flush the converter starts afresh; reset drops what it held and an odd byte.
    converter.convert(audio[:4001])
    converter.reset()
    assert converter.flush() == b""
    assert len(converter.convert(audio) + converter.flush()) == 1600
