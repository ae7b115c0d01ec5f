from __future__ import annotations

import io
import math
import struct
import wave

import pytest

from edge_media.rtp import g711

ALL_CODES = bytes(range(256))


# Reference G.711 codecs written from the ITU-T G.711 segment tables, independent of audioop.
def ref_ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def ref_alaw_decode(code: int) -> int:
    code ^= 0x55
    mantissa = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    magnitude = mantissa + 8 if segment == 0 else (mantissa + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for index, end in enumerate(ends):
        if value <= end:
            return index
    return len(ends)


def ref_alaw_encode(sample: int) -> int:
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = _segment(value, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> 1) & 0x0F if segment < 2 else (value >> segment) & 0x0F
    return code ^ mask


def ref_ulaw_encode(sample: int) -> int:
    value = sample >> 2
    if value < 0:
        value = -value
        mask = 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + 0x21
    segment = _segment(value, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _pcm(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def test_ulaw_to_pcm16_matches_the_reference_for_every_code() -> None:
    assert g711.ulaw_to_pcm16(ALL_CODES) == _pcm([ref_ulaw_decode(c) for c in ALL_CODES])


def test_alaw_to_pcm16_matches_the_reference_for_every_code() -> None:
    assert g711.alaw_to_pcm16(ALL_CODES) == _pcm([ref_alaw_decode(c) for c in ALL_CODES])


def test_ulaw_to_alaw_is_decode_then_encode() -> None:
    expected = bytes(ref_alaw_encode(ref_ulaw_decode(c)) for c in ALL_CODES)
    assert g711.ulaw_to_alaw(ALL_CODES) == expected


def test_alaw_to_ulaw_is_decode_then_encode() -> None:
    expected = bytes(ref_ulaw_encode(ref_alaw_decode(c)) for c in ALL_CODES)
    assert g711.alaw_to_ulaw(ALL_CODES) == expected


def test_silence_codes() -> None:
    assert ref_ulaw_decode(g711.ULAW_SILENCE) == 0
    assert ref_alaw_decode(g711.ALAW_SILENCE) == 8
    assert g711.ulaw_to_alaw(g711.ULAW_SILENCE_FRAME) == g711.ALAW_SILENCE_FRAME
    # A-law's quietest code is +8, which μ-law can represent exactly (0xfe), not as 0.
    assert g711.alaw_to_ulaw(g711.ALAW_SILENCE_FRAME) == b"\xfe" * 160
    assert ref_ulaw_decode(0xFE) == 8
    assert len(g711.ULAW_SILENCE_FRAME) == 160


def test_pcm16_round_trip_through_ulaw() -> None:
    # Every code survives except 0x7f, μ-law's negative zero, which comes back as 0xff.
    expected = ALL_CODES.replace(b"\x7f", b"\xff")
    assert g711.pcm16_to_ulaw(g711.ulaw_to_pcm16(ALL_CODES)) == expected


def test_pcm16_to_alaw_matches_the_reference() -> None:
    samples = [-32768, -1000, -9, -8, -1, 0, 1, 7, 8, 1000, 32767]
    assert g711.pcm16_to_alaw(_pcm(samples)) == bytes(ref_alaw_encode(s) for s in samples)
    assert g711.pcm16_to_ulaw(_pcm(samples)) == bytes(ref_ulaw_encode(s) for s in samples)


def test_odd_pcm16_length_is_refused() -> None:
    with pytest.raises(g711.G711Error, match=r"^PCM16 data must have an even length, got 3 bytes$"):
        g711.pcm16_to_ulaw(b"\x00\x01\x02")


def _tone(rate: int, seconds: float, amplitude: int = 8000) -> list[int]:
    count = int(rate * seconds)
    return [int(amplitude * math.sin(2 * math.pi * 440 * i / rate)) for i in range(count)]


def test_resampler_keeps_state_across_chunks() -> None:
    pcm = _pcm(_tone(16000, 0.04))
    whole = g711.Resampler(16000).convert(pcm)
    chunked = g711.Resampler(16000)
    halves = chunked.convert(pcm[:640]) + chunked.convert(pcm[640:])
    assert len(whole) == 640  # 40 ms at 8 kHz, 2 bytes a sample
    assert halves == whole


def test_resampler_passes_8k_through() -> None:
    pcm = _pcm([1, -2, 3, -4])
    assert g711.Resampler(8000).convert(pcm) == pcm


def test_resampler_rejects_bad_rate() -> None:
    with pytest.raises(g711.G711Error, match=r"^sample rate must be positive, got 0$"):
        g711.Resampler(0)


def _wav(rate: int, width: int, channels: int, frames: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return buffer.getvalue()


def test_wav_8k_mono_is_plain_encoding() -> None:
    samples = [0, 1000, -1000, 32767, -32768]
    assert g711.wav_to_ulaw(_wav(8000, 2, 1, _pcm(samples))) == bytes(
        ref_ulaw_encode(s) for s in samples
    )


def test_wav_16k_is_resampled_to_8k() -> None:
    assert len(g711.wav_to_ulaw(_wav(16000, 2, 1, _pcm(_tone(16000, 0.5))))) == 4000
    assert len(g711.wav_to_ulaw(_wav(44100, 2, 1, _pcm(_tone(44100, 0.5))))) == 4000


def test_wav_stereo_with_equal_channels_equals_mono() -> None:
    mono = _tone(8000, 0.1)
    stereo = [value for sample in mono for value in (sample, sample)]
    assert g711.wav_to_ulaw(_wav(8000, 2, 2, _pcm(stereo))) == g711.wav_to_ulaw(
        _wav(8000, 2, 1, _pcm(mono))
    )


def test_wav_8_bit_unsigned_midpoint_is_silence() -> None:
    assert g711.wav_to_ulaw(_wav(8000, 1, 1, bytes([128]) * 160)) == g711.ULAW_SILENCE_FRAME


def test_wav_24_bit() -> None:
    # 24-bit little-endian bytes 00 00 10 are 0x100000; its top 16 bits are 0x1000 = 4096.
    frames = bytes.fromhex("000010") * 4
    assert g711.wav_to_ulaw(_wav(8000, 3, 1, frames)) == bytes([ref_ulaw_encode(4096)]) * 4


def test_garbage_is_not_a_wav() -> None:
    with pytest.raises(g711.G711Error, match=r"^not a readable PCM WAV file: "):
        g711.wav_to_ulaw(b"RIFF\x00\x00")
