"""WAV in (any rate, width, channel count) to 8 kHz μ-law, and μ-law out to a 16-bit WAV.

Input files are built here byte by byte (not with our writer or the stdlib `wave`), so each
header field is what the test says. Conversions are checked by what a listener would notice:
the length, the pitch (zero crossings of a tone) and the level.
"""

from __future__ import annotations

import array
import itertools
import math
import struct
import sys
from pathlib import Path

import pytest

from edge_media.phone.wav import (
    CLOCK_RATE,
    WavError,
    lowpass_taps,
    parse_wav,
    read_wav_as_ulaw,
    to_ulaw,
    ulaw_to_wav,
    write_ulaw_as_wav,
)
from edge_media.rtp.g711 import ulaw_to_pcm16

PCM = 0x0001
FLOAT = 0x0003
MULAW = 0x0007
ALAW = 0x0006
EXTENSIBLE = 0xFFFE
GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
TONE_SECONDS = 0.5
AMPLITUDE = 0.5  # of full scale


def chunk(ident: bytes, body: bytes, *, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return ident + struct.pack("<I", len(body) if size is None else size) + body + pad


def fmt_body(tag: int, channels: int, rate: int, width: int, *, extensible_tag: int = 0) -> bytes:
    block = width * channels
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, width * 8)
    if tag == EXTENSIBLE:
        mask = 0x3 if channels == 2 else 0x4
        sub = struct.pack("<H", extensible_tag) + GUID_TAIL
        body += struct.pack("<HHI", 22, width * 8, mask) + sub
    return body


def wav_bytes(
    fmt: bytes, data: bytes, *, extra: bytes = b"", data_size: int | None = None
) -> bytes:
    chunks = extra + chunk(b"fmt ", fmt) + chunk(b"data", data, size=data_size)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def encode(value: float, width: int) -> bytes:
    """One sample in [-1, 1) as WAV stores it: little-endian signed, 8-bit unsigned."""
    scale = 1 << (8 * width - 1)
    level = max(-scale, min(scale - 1, round(value * scale)))
    if width == 1:
        return bytes((level + 128,))
    return level.to_bytes(width, "little", signed=True)


def tone(freq: float, rate: int, seconds: float = TONE_SECONDS, level: float = AMPLITUDE) -> list:
    return [level * math.sin(2 * math.pi * freq * n / rate) for n in range(int(rate * seconds))]


def interleave(channels: list[list[float]], width: int) -> bytes:
    return b"".join(encode(v, width) for frame in zip(*channels, strict=True) for v in frame)


def pcm_wav(channels: list[list[float]], rate: int, width: int) -> bytes:
    return wav_bytes(fmt_body(PCM, len(channels), rate, width), interleave(channels, width))


def linear(ulaw: bytes) -> list[int]:
    samples = array.array("h", ulaw_to_pcm16(ulaw))
    if sys.byteorder == "big":
        samples.byteswap()
    return list(samples)


def zero_crossings(samples: list[int]) -> int:
    signs = [s >= 0 for s in samples]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


FULL_SCALE = 32768
EXPECTED_RMS = AMPLITUDE / math.sqrt(2) * FULL_SCALE


# -- conversions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_tone_keeps_its_pitch_length_and_level(rate: int, width: int, channels: int) -> None:
    freq = 700.0
    wave = tone(freq, rate)
    ulaw = to_ulaw(parse_wav(pcm_wav([wave] * channels, rate, width)))

    assert abs(len(ulaw) - TONE_SECONDS * CLOCK_RATE) <= 2
    samples = linear(ulaw)
    inner = samples[200:-200]  # away from the filter's start and end
    expected = 2 * freq * len(inner) / CLOCK_RATE
    assert abs(zero_crossings(inner) - expected) <= 3
    # 8-bit input has a coarse level of its own; everything else is within μ-law's error.
    assert rms(inner) == pytest.approx(EXPECTED_RMS, rel=0.06 if width == 1 else 0.03)


def test_stereo_is_the_average_of_both_channels() -> None:
    left = tone(1000, 16000)
    right = [0.0] * len(left)
    samples = linear(to_ulaw(parse_wav(pcm_wav([left, right], 16000, 2))))[200:-200]
    assert rms(samples) == pytest.approx(EXPECTED_RMS / 2, rel=0.03)


def test_content_above_4khz_is_filtered_not_folded_into_the_band() -> None:
    # Without the low-pass, 6 kHz at 48 kHz resampled to 8 kHz comes out as a loud 2 kHz tone.
    reference = rms(linear(to_ulaw(parse_wav(pcm_wav([tone(1000, 48000)], 48000, 2))))[200:-200])
    folded = rms(linear(to_ulaw(parse_wav(pcm_wav([tone(6000, 48000)], 48000, 2))))[200:-200])
    assert folded < 0.02 * reference


def test_the_top_of_the_telephone_band_passes() -> None:
    low = rms(linear(to_ulaw(parse_wav(pcm_wav([tone(1000, 44100)], 44100, 2))))[200:-200])
    high = rms(linear(to_ulaw(parse_wav(pcm_wav([tone(3300, 44100)], 44100, 2))))[200:-200])
    assert high == pytest.approx(low, rel=0.05)


def test_lowpass_taps_are_symmetric_with_unity_gain() -> None:
    taps = lowpass_taps(48000)
    assert len(taps) == 133  # 3.3 * 48000 / 1200, made odd
    assert taps == tuple(reversed(taps))
    assert sum(taps) == pytest.approx(1.0)
    assert len(lowpass_taps(384000)) == 255  # capped


def test_extensible_24_bit_stereo_is_read() -> None:
    rate, width = 48000, 3
    wave = tone(700, rate)
    fmt = fmt_body(EXTENSIBLE, 2, rate, width, extensible_tag=PCM)
    audio = parse_wav(wav_bytes(fmt, interleave([wave, wave], width)))
    assert (audio.encoding, audio.channels, audio.rate, audio.width) == ("pcm", 2, rate, 3)
    assert audio.frames == len(wave)
    samples = linear(to_ulaw(audio))[200:-200]
    assert abs(zero_crossings(samples) - 2 * 700 * len(samples) / CLOCK_RATE) <= 3


def test_mulaw_8k_mono_passes_through_untouched() -> None:
    data = bytes(range(256)) * 4
    fmt = fmt_body(MULAW, 1, 8000, 1)
    assert to_ulaw(parse_wav(wav_bytes(fmt, data))) == data


def test_alaw_is_decoded() -> None:
    # A-law 0xD5 and 0x55 are the two smallest magnitudes (+8, -8): μ-law 0xFF/0x7F region.
    fmt = fmt_body(ALAW, 1, 8000, 1)
    samples = linear(to_ulaw(parse_wav(wav_bytes(fmt, b"\xd5\x55" * 80))))
    assert len(samples) == 160
    assert all(abs(s) <= 8 for s in samples)


def test_odd_sized_chunk_before_fmt_is_padded_and_skipped() -> None:
    data = interleave([tone(700, 8000, 0.1)], 2)
    raw = wav_bytes(fmt_body(PCM, 1, 8000, 2), data, extra=chunk(b"LIST", b"INFOabc"))
    assert parse_wav(raw).data == data


def test_streamed_wav_with_unknown_data_size_reads_to_the_end() -> None:
    data = interleave([tone(700, 8000, 0.1)], 2)
    raw = wav_bytes(fmt_body(PCM, 1, 8000, 2), data, data_size=0xFFFFFFFF)
    assert parse_wav(raw).data == data


def test_a_partial_last_frame_is_dropped() -> None:
    raw = wav_bytes(fmt_body(PCM, 2, 8000, 2), b"\x01\x00\x02\x00\x03\x00")
    assert parse_wav(raw).data == b"\x01\x00\x02\x00"


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"hello, this is not audio", "not a WAV file (no RIFF/WAVE header)"),
        (b"RIFX\x00\x00\x00\x00WAVE", "RIFX WAV files are not supported, only RIFF"),
        (
            wav_bytes(fmt_body(0x0011, 1, 8000, 1), b"\x00" * 64),
            "the WAV is compressed (IMA ADPCM); only PCM, A-law and μ-law are supported",
        ),
        (
            wav_bytes(fmt_body(0x0055, 2, 44100, 1), b"\x00" * 64),
            "the WAV is compressed (MPEG Layer 3); only PCM, A-law and μ-law are supported",
        ),
        (
            wav_bytes(fmt_body(EXTENSIBLE, 1, 8000, 2, extensible_tag=0x0011), b"\x00" * 64),
            "the WAV is compressed (IMA ADPCM); only PCM, A-law and μ-law are supported",
        ),
        (wav_bytes(fmt_body(FLOAT, 1, 8000, 4), b"\x00" * 64), "IEEE float samples"),
        (
            wav_bytes(fmt_body(PCM, 3, 8000, 2), b"\x00" * 60),
            "the WAV has 3 channels; only mono and stereo are supported",
        ),
        (
            wav_bytes(fmt_body(PCM, 1, 8000, 5), b"\x00" * 60),
            "the WAV has 40-bit samples; 8, 16, 24 and 32-bit are supported",
        ),
        (wav_bytes(fmt_body(PCM, 1, 8000, 2), b""), "the WAV holds no audio"),
        (wav_bytes(fmt_body(PCM, 1, 0, 2), b"\x00" * 8), "sample rate 0 Hz is not supported"),
        (
            b"RIFF\x0c\x00\x00\x00WAVE" + chunk(b"data", b"\x00" * 8),
            "the WAV has no fmt chunk",
        ),
        (
            b"RIFF\x0c\x00\x00\x00WAVE" + chunk(b"fmt ", fmt_body(PCM, 1, 8000, 2)),
            "the WAV has no data chunk",
        ),
        (
            b"RIFF\x0c\x00\x00\x00WAVE"
            + chunk(b"fmt ", b"\x01\x00\x01\x00")
            + chunk(b"data", b"\x00\x00"),
            "the WAV's fmt chunk is truncated",
        ),
    ],
)
def test_unplayable_files_are_refused_with_a_clear_message(raw: bytes, message: str) -> None:
    with pytest.raises(WavError) as caught:
        parse_wav(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(WavError) as caught:
        read_wav_as_ulaw(missing)
    assert str(caught.value) == f"cannot read {missing}: No such file or directory"


def test_file_errors_carry_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(WavError) as caught:
        read_wav_as_ulaw(path)
    assert str(caught.value) == f"{path}: not a WAV file (no RIFF/WAVE header)"


def test_read_wav_as_ulaw_converts_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(pcm_wav([tone(700, 16000)], 16000, 2))
    assert len(read_wav_as_ulaw(path)) == pytest.approx(TONE_SECONDS * CLOCK_RATE, abs=2)


# -- writing --------------------------------------------------------------------------------------


def test_recording_is_a_16_bit_8khz_mono_wav() -> None:
    # μ-law 0x80 is the largest positive value (+32124), 0x00 the largest negative, 0xFF zero.
    assert ulaw_to_wav(b"\x80\x00\xff\xff") == (
        b"RIFF" + struct.pack("<I", 36 + 8) + b"WAVE"
        b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
        + b"data" + struct.pack("<I", 8)
        + struct.pack("<hhhh", 32124, -32124, 0, 0)
    )  # fmt: skip


def test_recording_reads_back_as_the_same_mulaw() -> None:
    heard = bytes(code for code in range(256) if code != 0x7F) * 3  # 0x7F is μ-law's "-0"
    assert to_ulaw(parse_wav(ulaw_to_wav(heard))) == heard


def test_write_into_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "heard.wav"
    with pytest.raises(WavError) as caught:
        write_ulaw_as_wav(target, b"\xff" * 160)
    assert str(caught.value) == f"cannot write {target}: No such file or directory"


def test_write_then_read(tmp_path: Path) -> None:
    target = tmp_path / "heard.wav"
    write_ulaw_as_wav(target, b"\x80" * 160)
    assert read_wav_as_ulaw(target) == b"\x80" * 160
