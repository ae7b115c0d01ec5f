"""G.711 helpers: μ-law/A-law conversion, PCM16 conversion, and resampling prompts to 8 kHz.

Why this shape: bots speak μ-law at 8 kHz, so μ-law is passed through untouched and only PCMA
peers pay for a conversion. μ-law→A-law and back are byte-for-byte mappings, so they run as one
`bytes.translate` over a 256-entry table (computed once at import by stdlib `audioop`, decoding to
16-bit linear and re-encoding), which is several times cheaper per packet than two audioop calls.

`audioop` is deprecated on 3.11-3.12 and gone in 3.13, where the `audioop-lts` package provides
the same module name; the import below hides only the deprecation warning.
"""

from __future__ import annotations

import io
import sys
import warnings
import wave

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

CLOCK_RATE = 8000
SAMPLE_WIDTH = 2  # bytes per linear PCM sample we produce and accept
FRAME_MS = 20
FRAME_SAMPLES = CLOCK_RATE * FRAME_MS // 1000  # 160: one 20 ms G.711 frame is 160 bytes
ULAW_SILENCE = 0xFF  # μ-law code for linear 0 (positive zero)
ALAW_SILENCE = 0xD5  # A-law code for linear +8, its quietest positive value
ULAW_SILENCE_FRAME = bytes((ULAW_SILENCE,)) * FRAME_SAMPLES
ALAW_SILENCE_FRAME = bytes((ALAW_SILENCE,)) * FRAME_SAMPLES
PAYLOAD_TYPE_PCMU = 0  # RFC 3551 §6 static payload types
PAYLOAD_TYPE_PCMA = 8
MAX_WAV_CHANNELS = 2

_BIG_ENDIAN = sys.byteorder == "big"
_ALL_CODES = bytes(range(256))
ULAW_TO_ALAW_TABLE = audioop.lin2alaw(audioop.ulaw2lin(_ALL_CODES, SAMPLE_WIDTH), SAMPLE_WIDTH)
ALAW_TO_ULAW_TABLE = audioop.lin2ulaw(audioop.alaw2lin(_ALL_CODES, SAMPLE_WIDTH), SAMPLE_WIDTH)


class G711Error(Exception):
    """Audio that cannot be converted (odd PCM16 length, unsupported WAV)."""


def ulaw_to_alaw(data: bytes) -> bytes:
    """μ-law bytes to A-law bytes, one byte per sample."""
    return data.translate(ULAW_TO_ALAW_TABLE)


def alaw_to_ulaw(data: bytes) -> bytes:
    """A-law bytes to μ-law bytes, one byte per sample."""
    return data.translate(ALAW_TO_ULAW_TABLE)


def ulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law to signed 16-bit little-endian linear PCM (the WAV byte order on every host)."""
    pcm = audioop.ulaw2lin(data, SAMPLE_WIDTH)
    return audioop.byteswap(pcm, SAMPLE_WIDTH) if _BIG_ENDIAN else pcm


def alaw_to_pcm16(data: bytes) -> bytes:
    """A-law to signed 16-bit little-endian linear PCM."""
    pcm = audioop.alaw2lin(data, SAMPLE_WIDTH)
    return audioop.byteswap(pcm, SAMPLE_WIDTH) if _BIG_ENDIAN else pcm


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Signed 16-bit little-endian linear PCM to μ-law."""
    return audioop.lin2ulaw(_native_pcm16(data), SAMPLE_WIDTH)


def pcm16_to_alaw(data: bytes) -> bytes:
    """Signed 16-bit little-endian linear PCM to A-law."""
    return audioop.lin2alaw(_native_pcm16(data), SAMPLE_WIDTH)


class Resampler:
    """Streaming conversion of mono PCM16 at any rate to 8 kHz, chunk by chunk.

    Why a class: `audioop.ratecv` carries filter state between calls; without it every chunk
    boundary clicks. Feed consecutive chunks of one stream to one instance.
    """

    __slots__ = ("_rate", "_state")

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise G711Error(f"sample rate must be positive, got {rate}")
        self._rate = rate
        self._state: tuple[object, ...] | None = None

    def convert(self, pcm16: bytes) -> bytes:
        """Little-endian mono PCM16 at the source rate in, little-endian PCM16 at 8 kHz out."""
        native = _native_pcm16(pcm16)
        if self._rate == CLOCK_RATE:
            out = native
        else:
            out, self._state = audioop.ratecv(
                native, SAMPLE_WIDTH, 1, self._rate, CLOCK_RATE, self._state
            )
        return audioop.byteswap(out, SAMPLE_WIDTH) if _BIG_ENDIAN else out


def wav_to_ulaw(data: bytes) -> bytes:
    """A whole PCM WAV file (any rate, 8/16/24/32-bit, mono or stereo) as 8 kHz μ-law bytes.

    For prompts and hold music loaded once, not the per-packet path. Only WAVE_FORMAT_PCM is
    read (the stdlib `wave` module's limit on 3.11): float, A-law/μ-law and EXTENSIBLE WAVs are
    refused with G711Error.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, OSError, ValueError) as exc:
        raise G711Error(f"not a readable PCM WAV file: {exc}") from exc
    if channels < 1 or channels > MAX_WAV_CHANNELS:
        raise G711Error(f"WAV has {channels} channels, only mono or stereo is supported")
    if width not in (1, 2, 3, 4):
        raise G711Error(f"WAV sample width {width} bytes is not supported")
    if rate <= 0:
        raise G711Error(f"WAV sample rate {rate} is not valid")
    frames = frames[: len(frames) - len(frames) % (width * channels)]
    if _BIG_ENDIAN and width > 1:
        frames = audioop.byteswap(frames, width)
    if width == 1:
        # WAV stores 8-bit samples unsigned; audioop treats width 1 as signed.
        frames = audioop.bias(frames, 1, -128)
    if width != SAMPLE_WIDTH:
        frames = audioop.lin2lin(frames, width, SAMPLE_WIDTH)
    if channels == MAX_WAV_CHANNELS:
        frames = audioop.tomono(frames, SAMPLE_WIDTH, 0.5, 0.5)
    if rate != CLOCK_RATE:
        frames, _ = audioop.ratecv(frames, SAMPLE_WIDTH, 1, rate, CLOCK_RATE, None)
    return audioop.lin2ulaw(frames, SAMPLE_WIDTH)


def _native_pcm16(data: bytes) -> bytes:
    if len(data) % SAMPLE_WIDTH:
        raise G711Error(f"PCM16 data must have an even length, got {len(data)} bytes")
    return audioop.byteswap(data, SAMPLE_WIDTH) if _BIG_ENDIAN else data
