"""WAV files for the test phone: any PCM WAV in as 8 kHz μ-law, what was heard out as a WAV.

Why our own RIFF reader and not the stdlib `wave` module: on 3.11 `wave` refuses
WAVE_FORMAT_EXTENSIBLE, which is what sox, ffmpeg and most editors write for 24- and 32-bit
files, and its errors ("unknown format: 85") do not tell a user what to do. Reading the chunks
ourselves takes little code and lets every refusal name the problem: not a WAV, compressed
(MP3, ADPCM, ...), float, too many channels. G.711 WAVs (A-law, μ-law) are read as well: they
are the usual format of telephony prompts and cost one table lookup to decode.

Why a low-pass filter before `audioop.ratecv`: ratecv interpolates linearly between neighbouring
samples and filters nothing, so everything between 4 kHz and the file's Nyquist frequency would
fold back into the telephone band (a 6 kHz sibilant at 48 kHz becomes a 2 kHz whistle at 8 kHz).
A windowed-sinc FIR removes it first. It runs as one multiply-add per tap over the whole signal
with audioop's C primitives, so a Python loop runs per tap (about a hundred), not per sample.

Everything except `read_wav_as_ulaw` and `write_ulaw_as_wav` is pure (bytes in, bytes out).
"""

from __future__ import annotations

import functools
import math
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "CLOCK_RATE",
    "WavAudio",
    "WavError",
    "lowpass_taps",
    "parse_wav",
    "read_wav_as_ulaw",
    "to_ulaw",
    "ulaw_to_wav",
    "write_ulaw_as_wav",
]

CLOCK_RATE = 8000  # G.711: 8000 samples a second, one byte each
MAX_WAV_BYTES = 256 * 1024 * 1024  # a 23-minute 48 kHz stereo 32-bit file; larger is a mistake
MAX_CHANNELS = 2
MAX_SAMPLE_RATE = 384_000
PCM_WIDTHS = (1, 2, 3, 4)  # bytes per sample: 8, 16, 24 and 32-bit integer PCM
LINEAR_WIDTH = 2  # the 16-bit linear PCM every conversion goes through
# The anti-alias filter: flat to the top of the telephone band, down by the stop edge. Between
# 4.0 and 4.6 kHz the little left folds to 3.4-4.0 kHz, above what a phone line carries anyway.
PASS_EDGE_HZ = 3400.0
STOP_EDGE_HZ = 4600.0
HAMMING_TAPS_FACTOR = 3.3  # taps = 3.3 * rate / transition width for a Hamming window (-53 dB)
MAX_FIR_TAPS = 255  # bounds the cost for 192 kHz files (the transition widens a little there)
FILTER_HEADROOM = 4.0  # partial sums of a sinc's lobes can exceed full scale; keep room

# WAVEFORMATEX wFormatTag values (RFC 2361 Appendix A lists the registry).
FORMAT_PCM = 0x0001
FORMAT_IEEE_FLOAT = 0x0003
FORMAT_ALAW = 0x0006
FORMAT_MULAW = 0x0007
FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    FORMAT_IEEE_FLOAT: "IEEE float",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x0064: "G.726 ADPCM",
    0x00FF: "AAC",
    0x1610: "HE-AAC",
    0x2000: "AC-3",
    0xF1AC: "FLAC",
}
# WAVEFORMATEXTENSIBLE SubFormat GUIDs are the format tag followed by this fixed tail
# (KSDATAFORMAT_SUBTYPE_PCM is 00000001-0000-0010-8000-00aa00389b71).
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_FMT_BASE = struct.Struct("<HHIIHH")  # tag, channels, rate, bytes/s, block align, bits
_CHUNK_HEADER = struct.Struct("<4sI")
_RIFF_HEADER_SIZE = 12  # "RIFF", size, "WAVE"
_MAX_RIFF_SIZE = 0xFFFFFFFF
_BIG_ENDIAN = sys.byteorder == "big"


class WavError(Exception):
    """A file that is not a WAV we can play; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class WavAudio:
    """The samples of a WAV file as stored: little-endian, interleaved, whole frames only."""

    encoding: str  # "pcm", "alaw" or "ulaw"
    channels: int
    rate: int
    width: int  # bytes per sample
    data: bytes

    @property
    def frames(self) -> int:
        return len(self.data) // (self.width * self.channels)

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def _format_name(tag: int) -> str:
    return _FORMAT_NAMES.get(tag, f"format 0x{tag:04X}")


def _chunks(data: bytes) -> dict[bytes, bytes]:
    """The first chunk of each id after the RIFF/WAVE header.

    RIFF (Multimedia Programming Interface and Data Specifications 1.0, 1991): a chunk is a
    4-byte id, a 32-bit little-endian size and the data, "followed by a pad byte if the chunk
    size is odd". Writers that stream (no seek back) leave the data size at 0xFFFFFFFF; a size
    past the end of the file is read as "to the end".
    """
    found: dict[bytes, bytes] = {}
    pos = _RIFF_HEADER_SIZE
    while pos + _CHUNK_HEADER.size <= len(data):
        ident, size = _CHUNK_HEADER.unpack_from(data, pos)
        start = pos + _CHUNK_HEADER.size
        end = min(start + size, len(data))
        found.setdefault(ident, data[start:end])
        pos = end + (size & 1)
    return found


def _fmt_of(fmt: bytes) -> tuple[str, int, int, int]:
    """(encoding, channels, rate, width) from a fmt chunk, or WavError naming what is wrong."""
    if len(fmt) < _FMT_BASE.size:
        raise WavError("the WAV's fmt chunk is truncated")
    tag, channels, rate, _, block_align, bits = _FMT_BASE.unpack_from(fmt)
    if tag == FORMAT_EXTENSIBLE:
        # WAVEFORMATEXTENSIBLE: cbSize (2), valid bits (2), channel mask (4), SubFormat (16).
        if len(fmt) < 40 or fmt[26:40] != _GUID_TAIL:
            raise WavError("the WAV uses an extensible format this phone does not know")
        tag = int.from_bytes(fmt[24:26], "little")
    if tag == FORMAT_PCM:
        encoding = "pcm"
    elif tag == FORMAT_ALAW:
        encoding = "alaw"
    elif tag == FORMAT_MULAW:
        encoding = "ulaw"
    elif tag == FORMAT_IEEE_FLOAT:
        raise WavError(
            "the WAV holds IEEE float samples; convert it to integer PCM first "
            "(e.g. sox in.wav -b 16 out.wav)"
        )
    else:
        raise WavError(
            f"the WAV is compressed ({_format_name(tag)}); only PCM, A-law and μ-law are supported"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise WavError(f"the WAV has {channels} channels; only mono and stereo are supported")
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise WavError(f"the WAV's sample rate {rate} Hz is not supported")
    width = (bits + 7) // 8
    if encoding != "pcm" and width != 1:
        raise WavError(f"a G.711 WAV must have 8-bit samples, this one has {bits}")
    if width not in PCM_WIDTHS:
        raise WavError(f"the WAV has {bits}-bit samples; 8, 16, 24 and 32-bit are supported")
    if block_align != width * channels:
        raise WavError(
            f"the WAV's block size {block_align} does not match {channels} x {bits}-bit samples"
        )
    return encoding, channels, rate, width


def parse_wav(data: bytes) -> WavAudio:
    """The audio of a WAV file's bytes; WavError when it is not one we can convert."""
    if len(data) < _RIFF_HEADER_SIZE or data[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    if data[:4] != b"RIFF":
        container = data[:4].decode("ascii", "replace")
        raise WavError(f"{container} WAV files are not supported, only RIFF")
    chunks = _chunks(data)
    fmt = chunks.get(b"fmt ")
    samples = chunks.get(b"data")
    if fmt is None:
        raise WavError("the WAV has no fmt chunk")
    if samples is None:
        raise WavError("the WAV has no data chunk")
    encoding, channels, rate, width = _fmt_of(fmt)
    frame = width * channels
    samples = samples[: len(samples) - len(samples) % frame]
    if not samples:
        raise WavError("the WAV holds no audio")
    return WavAudio(encoding, channels, rate, width, samples)


def _linear16(audio: WavAudio) -> bytes:
    """Native-endian 16-bit linear PCM, still at the file's rate and channel count."""
    data = audio.data
    if audio.encoding == "ulaw":
        return audioop.ulaw2lin(data, LINEAR_WIDTH)
    if audio.encoding == "alaw":
        return audioop.alaw2lin(data, LINEAR_WIDTH)
    width = audio.width
    if width == 1:
        # WAV stores 8-bit PCM unsigned (offset 128); audioop's width 1 is signed.
        return audioop.lin2lin(audioop.bias(data, 1, -128), 1, LINEAR_WIDTH)
    if _BIG_ENDIAN:
        data = audioop.byteswap(data, width)
    return data if width == LINEAR_WIDTH else audioop.lin2lin(data, width, LINEAR_WIDTH)


@functools.lru_cache(maxsize=16)
def lowpass_taps(rate: int) -> tuple[float, ...]:
    """A linear-phase low-pass for ``rate`` Hz: passes `PASS_EDGE_HZ`, stops `STOP_EDGE_HZ`.

    Windowed sinc (Hamming), cutoff midway between the edges, odd length, unity gain at DC.
    """
    transition = STOP_EDGE_HZ - PASS_EDGE_HZ
    count = min(int(HAMMING_TAPS_FACTOR * rate / transition), MAX_FIR_TAPS) | 1
    cutoff = (PASS_EDGE_HZ + STOP_EDGE_HZ) / 2 / rate  # cycles per sample
    middle = count // 2
    half = []  # taps 0..middle; the rest mirror them exactly (linear phase)
    for k in range(middle + 1):
        x = k - middle
        ideal = 2 * cutoff if x == 0 else math.sin(2 * math.pi * cutoff * x) / (math.pi * x)
        window = 0.54 - 0.46 * math.cos(2 * math.pi * k / (count - 1))
        half.append(ideal * window)
    taps = half + half[-2::-1]
    gain = sum(taps)
    return tuple(tap / gain for tap in taps)


def _lowpass(pcm: bytes, rate: int) -> bytes:
    """Filter native 16-bit mono PCM with `lowpass_taps`; same length, no delay.

    The sum runs in 32-bit samples scaled down by `FILTER_HEADROOM`, so neither the products'
    rounding nor a partial sum's overshoot is heard; symmetric taps share one multiply.
    """
    taps = lowpass_taps(rate)
    width = 4
    signal = audioop.mul(audioop.lin2lin(pcm, LINEAR_WIDTH, width), width, 1 / FILTER_HEADROOM)
    length = len(signal)
    middle = len(taps) // 2
    pad = bytes(middle * width)
    padded = memoryview(pad + signal + pad)
    last = len(taps) - 1
    total = audioop.mul(padded[middle * width : middle * width + length], width, taps[middle])
    for k in range(middle):
        early = padded[k * width : k * width + length]
        late = padded[(last - k) * width : (last - k) * width + length]
        pair = audioop.add(early, late, width)
        total = audioop.add(total, audioop.mul(pair, width, taps[k]), width)
    padded.release()
    return audioop.lin2lin(audioop.mul(total, width, FILTER_HEADROOM), width, LINEAR_WIDTH)


def to_ulaw(audio: WavAudio) -> bytes:
    """8 kHz mono μ-law of ``audio``: channels averaged, band-limited, resampled."""
    if audio.encoding == "ulaw" and audio.channels == 1 and audio.rate == CLOCK_RATE:
        return audio.data
    pcm = _linear16(audio)
    if audio.channels == MAX_CHANNELS:
        pcm = audioop.tomono(pcm, LINEAR_WIDTH, 0.5, 0.5)
    if audio.rate > CLOCK_RATE:
        pcm = _lowpass(pcm, audio.rate)
    if audio.rate != CLOCK_RATE:
        pcm, _ = audioop.ratecv(pcm, LINEAR_WIDTH, 1, audio.rate, CLOCK_RATE, None)
    return audioop.lin2ulaw(pcm, LINEAR_WIDTH)


def read_wav_as_ulaw(path: str | Path) -> bytes:
    """The WAV file at ``path`` as 8 kHz μ-law; WavError (with the path) when it cannot be."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_WAV_BYTES:
            raise WavError(f"{path}: {size} bytes is more than the {MAX_WAV_BYTES} allowed")
        data = path.read_bytes()
    except OSError as error:
        raise WavError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return to_ulaw(parse_wav(data))
    except WavError as error:
        raise WavError(f"{path}: {error}") from None


def ulaw_to_wav(ulaw: bytes) -> bytes:
    """A 16-bit 8 kHz mono PCM WAV file of μ-law samples (plays everywhere, unlike G.711 WAVs)."""
    pcm = audioop.ulaw2lin(ulaw, LINEAR_WIDTH)
    if _BIG_ENDIAN:
        pcm = audioop.byteswap(pcm, LINEAR_WIDTH)
    header_size = 36  # the RIFF size counts everything after itself: "WAVE", fmt, data header
    if header_size + len(pcm) > _MAX_RIFF_SIZE:
        raise WavError("the recording is too long for a WAV file (4 GiB)")
    block_align = LINEAR_WIDTH
    fmt = _FMT_BASE.pack(
        FORMAT_PCM, 1, CLOCK_RATE, CLOCK_RATE * block_align, block_align, 8 * LINEAR_WIDTH
    )
    return b"".join(
        (
            _CHUNK_HEADER.pack(b"RIFF", header_size + len(pcm)),
            b"WAVE",
            _CHUNK_HEADER.pack(b"fmt ", len(fmt)),
            fmt,
            _CHUNK_HEADER.pack(b"data", len(pcm)),
            pcm,
        )
    )


def write_ulaw_as_wav(path: str | Path, ulaw: bytes) -> None:
    """Write μ-law samples to ``path`` as a 16-bit 8 kHz mono WAV; WavError when it fails."""
    path = Path(path)
    try:
        path.write_bytes(ulaw_to_wav(ulaw))
    except OSError as error:
        raise WavError(f"cannot write {path}: {error.strerror or error}") from None
