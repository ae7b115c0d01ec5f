"""audio_format: μ-law tables against audioop, passthrough identity, the half-band filter's
response and its match with the direct-form filter, and resampled tones checked by frequency,
level, aliasing, latency, saturation and seamless chunk edges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soxr

from edge_media.drivers.audio_format import (
    FORMATS,
    HALFBAND_K,
    LINEAR_TO_ULAW,
    ULAW_TO_LINEAR,
    AgentToCaller,
    CallerToAgent,
    halfband_taps,
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
    curvature = left - 2 * centre + right  # 0 when the middle is silent (nothing got through)
    offset = 0.5 * (left - right) / curvature if curvature else 0.0
    return (peak + offset) * rate / len(middle), float(np.sqrt(np.mean(middle**2)))


def sine_fit(samples: np.ndarray, rate: int, *frequencies: float) -> list[float]:
    """Amplitudes of ``frequencies`` in ``samples``, fitted together by least squares: μ-law
    noise averages out, and a strong tone does not leak into a weak one's figure."""
    t = np.arange(len(samples)) / rate
    columns = []
    for frequency in frequencies:
        columns += [np.sin(2 * np.pi * frequency * t), np.cos(2 * np.pi * frequency * t)]
    weights, *_ = np.linalg.lstsq(np.column_stack(columns), samples, rcond=None)
    return [float(np.hypot(a, b)) for a, b in zip(weights[0::2], weights[1::2], strict=True)]


def full_halfband() -> np.ndarray:
    """The (4K-1)-tap filter the converters use, written out in direct form."""
    taps = np.zeros(4 * HALFBAND_K - 1)
    taps[2 * HALFBAND_K - 1] = 0.5
    taps[2 * HALFBAND_K - 1 + np.arange(1 - 2 * HALFBAND_K, 2 * HALFBAND_K, 2)] = halfband_taps()
    return taps


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


# Constant hold-back in ms (after 100 ms) with 20 ms chunks, caller→agent and agent→caller: the
# half-band FIR at 16 kHz holds K samples at 8 kHz (3 ms) and 2K-1 at 16 kHz (2.9 ms); soxr's
# variable-rate engine 25-30 ms. soxr's fixed-rate qualities would release in bursts, holding
# back up to 115-175 ms (audio_format's docstring), and fail the constancy check.
HOLD_BACK_MS = {
    "pcm_8000": (0.0, 0.0),
    "pcm_16000": (3.0, 2.875),
    "pcm_22050": (30.0, 27.2),
    "pcm_24000": (30.0, 25.0),
    "pcm_44100": (30.0, 30.0),
    "pcm_48000": (30.0, 27.5),
}


@pytest.mark.parametrize("name", PCM_FORMATS)
def test_resampling_holds_back_little_and_steadily(name: str) -> None:
    rate = FORMAT_RATES[name]
    to_agent = CallerToAgent(name)
    to_caller = AgentToCaller(name)
    sent_ms = 0
    up = down = 0  # samples produced
    held_up: list[float] = []
    held_down: list[float] = []
    for index, frame in enumerate(caller_frames(600)):
        sent_ms += 20
        up += len(to_agent.convert(frame)) // 2
        down += len(to_caller.convert(tone(name, 500, 20, start=index * rate // 50)))
        if sent_ms >= 100:
            held_up.append(sent_ms - up * 1000 / rate)
            held_down.append(sent_ms - down / 8)
    expected_up, expected_down = HOLD_BACK_MS[name]
    assert max(held_up) - min(held_up) < 0.1  # constant: no bursts held back
    assert max(held_down) - min(held_down) < 0.1
    assert np.mean(held_up) == pytest.approx(expected_up, abs=0.2)
    assert np.mean(held_down) == pytest.approx(expected_down, abs=0.2)


def test_the_half_band_filter_keeps_the_phone_band_and_stops_what_would_fold() -> None:
    """The design figures in audio_format's docstring: flat to 3.6 kHz, -6 dB at 4 kHz (the
    half-band point), below -80 dB from 4.6 kHz, so only 4-4.6 kHz folds, to 3.4-4 kHz."""
    taps = full_halfband()
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(taps, taps[::-1])  # linear phase: every frequency delayed alike
    frequencies = np.arange(0, 8001, 10)  # at 16 kHz
    response = np.abs(
        np.exp(-2j * np.pi * np.outer(frequencies / 16000, np.arange(len(taps)))) @ taps
    )
    db = 20 * np.log10(response + 1e-15)
    assert np.all(np.abs(db[frequencies <= 3600]) < 0.02)
    assert db[frequencies == 4000][0] == pytest.approx(-6.02, abs=0.05)
    assert np.all(db[frequencies >= 4600] < -80)


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


@pytest.mark.parametrize("frequency", [4700, 5500, 6500, 7900])
def test_16_khz_agent_audio_folds_into_the_phone_band_below_60_db(frequency: int) -> None:
    converter = AgentToCaller("pcm_16000")
    out = converter.convert(tone("pcm_16000", frequency, 500, level=0.9)) + converter.flush()
    heard = decode_audio("ulaw_8000", out)[400:-400]  # without the tone's switch-on and -off
    [alias] = sine_fit(heard, 8000, 8000 - frequency)
    assert alias < 0.9e-3


@pytest.mark.parametrize("frequency", [300, 1000, 2500, 3400])
def test_16_khz_agent_audio_in_the_phone_band_keeps_its_level(frequency: int) -> None:
    converter = AgentToCaller("pcm_16000")
    out = converter.convert(tone("pcm_16000", frequency, 500, level=0.5)) + converter.flush()
    heard = decode_audio("ulaw_8000", out)[400:-400]
    [level] = sine_fit(heard, 8000, frequency)
    assert level == pytest.approx(0.5, rel=0.005)  # ±0.05 dB


@pytest.mark.parametrize("frequency", [300, 1000, 3000, 3400])
def test_caller_audio_at_16_khz_keeps_its_level_and_has_no_image(frequency: int) -> None:
    """Going up, the filter removes the mirror image at 8 kHz - f that zero-stuffing creates
    (an ASR would hear it as a whistle above the voice)."""
    converter = CallerToAgent("pcm_16000")
    out = b"".join(converter.convert(f) for f in caller_frames(500, frequency, level=0.5))
    heard = decode_audio("pcm_16000", out)[800:-800]
    level, image = sine_fit(heard, 16000, frequency, 8000 - frequency)
    assert level == pytest.approx(0.5, rel=0.01)  # μ-law input
    assert image < 1e-4  # below -74 dB


def test_the_16_khz_converters_match_the_direct_form_filter() -> None:
    """The polyphase shortcuts (input samples as the even outputs going up, only odd inputs at
    the side taps going down) compute exactly the (4K-1)-tap filter, aligned: output sample i
    is input sample i at the other rate. Odd chunk sizes split pairs and samples."""
    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal(3200) * 4000).astype("<i2")
    down = AgentToCaller("pcm_16000")
    raw = pcm.tobytes()
    out = b"".join(down.convert(raw[i : i + 333]) for i in range(0, len(raw), 333))
    out += down.flush()
    centre = 2 * HALFBAND_K - 1
    direct = np.convolve(pcm.astype(np.float64), full_halfband())[centre::2][: len(pcm) // 2]
    expected = audioop.lin2ulaw(np.trunc(direct).astype("<i2").tobytes(), 2)
    assert len(out) == len(expected) == 1600
    assert np.mean(np.frombuffer(out, np.uint8) != np.frombuffer(expected, np.uint8)) < 0.01
    assert (
        np.max(np.abs(decode_audio("ulaw_8000", out) - decode_audio("ulaw_8000", expected))) < 0.02
    )

    ulaw = audioop.lin2ulaw(pcm[:1600].tobytes(), 2)
    up = CallerToAgent("pcm_16000")
    out = b"".join(up.convert(ulaw[i : i + 77]) for i in range(0, len(ulaw), 77))
    stuffed = np.zeros(2 * len(ulaw))
    stuffed[0::2] = np.frombuffer(audioop.ulaw2lin(ulaw, 2), np.int16)
    direct = np.convolve(stuffed, 2 * full_halfband())[centre : centre + len(stuffed)]
    produced = np.frombuffer(out, "<i2")
    assert len(produced) == len(stuffed) - 2 * HALFBAND_K  # the last K pairs are held back
    assert np.array_equal(produced, np.trunc(direct[: len(produced)]).astype(np.int16))


def test_full_scale_overshoot_saturates_instead_of_wrapping_around() -> None:
    """A lowpass overshoots the edges of a full-scale square wave by up to 18 % (Gibbs): cast
    to int16 unclipped, those samples would wrap to the opposite sign, a loud click each."""
    square = np.where(np.arange(1600) % 40 < 20, 32767, -32768).astype("<i2")
    down = AgentToCaller("pcm_16000")
    heard = decode_audio("ulaw_8000", down.convert(square.tobytes()) + down.flush())
    expected_sign = np.sign(square[::2].astype(np.float64))
    steady = np.abs(heard) > 0.5  # away from the edges, where the filter crosses zero
    assert np.all(np.sign(heard[steady]) == expected_sign[steady])
    assert np.max(heard) == pytest.approx(32124 / 32768)  # μ-law's largest step, clipped
    ulaw = audioop.lin2ulaw(square[:800].tobytes(), 2)
    up = CallerToAgent("pcm_16000")
    produced = decode_audio("pcm_16000", up.convert(ulaw))
    reference = np.repeat(np.sign(square[:800].astype(np.float64)), 2)[: len(produced)]
    steady = np.abs(produced) > 0.5
    assert np.all(np.sign(produced[steady]) == reference[steady])
    assert np.max(produced) == pytest.approx(32767 / 32768)
    assert np.min(produced) == -1.0


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


@pytest.mark.parametrize("name", ["pcm_16000", "pcm_24000"])
def test_flush_plays_the_tail_and_reset_forgets_it(name: str) -> None:
    converter = AgentToCaller(name)
    audio = tone(name, 800, 200)
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
