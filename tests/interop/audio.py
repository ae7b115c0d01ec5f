"""Did the far end hear the reference utterance? Normalised cross-correlation, without numpy.

Both signals go through sox (8 kHz mono, 300-3400 Hz band-pass, the telephone band) and the
reference is slid over the recording with stdlib ``audioop.findfit``, which minimises
``|R|^2 (1 - ncc^2)`` over every offset in C: the offset of the highest correlation. The peak is
then computed exactly at that offset. A 7 s reference over a 10 s recording takes about 1 s; for
longer recordings the search first runs on 2 kHz copies and then refines at 8 kHz around the
coarse lag, keeping the cost bounded.

Measured on this machine (speech from media.py): sipp echo heard from the capture 0.995 at lag
0; baresip's dec.wav of sipp's audio 0.994; through kamailio 0.93 whole, 12 of 13 segments; the
wrong sentence 0.10; a resampling path (8k -> 16k -> 8k μ-law, half gain, 0.37 s delay) 0.995 at
lag 0.370. A path that loses frames or mixes audio spoils a whole-utterance match:
``find_segments`` looks for each voiced half second on its own.
"""

from __future__ import annotations

import math
import operator
import statistics
import subprocess
import sys
import warnings
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # audioop-lts provides it on Python >= 3.13

RATE = 8000
SAMPLE_WIDTH = 2
BAND = "300-3400"
COARSE_RATE = 2000
COARSE_FACTOR = RATE // COARSE_RATE
FULL_SEARCH_BUDGET = 2_000_000_000  # offsets x reference samples; ~1.3 s of findfit here
FINE_SLACK_SAMPLES = 256  # 32 ms either side of the coarse lag
SEGMENT_S = 0.5
SEGMENT_MATCH = 0.8  # a segment counts as found at this correlation or above
VOICED_RMS = 300  # below this (16-bit, band-passed) a segment is silence and not looked for
SOX_TIMEOUT_S = 60.0
DITHER = (1, -1)  # the smallest non-silent signal: see _dither

AudioInput = Path | bytes  # a file sox can read, or 16-bit native-endian 8 kHz mono PCM


class AudioError(RuntimeError):
    """sox could not read or filter the audio."""


@dataclass(frozen=True)
class Correlation:
    """``peak``: normalised cross-correlation at the best lag (1.0 identical, ~0 unrelated).

    ``lag_s``: where the reference starts in the recording.
    """

    peak: float
    lag_s: float


@dataclass(frozen=True)
class SegmentMatch:
    voiced: int  # segments of the reference loud enough to look for
    found: int  # of those, how many matched at SEGMENT_MATCH or above
    median_offset_s: float | None  # median (lag - position in reference) of the found ones

    @property
    def fraction(self) -> float:
        return self.found / self.voiced if self.voiced else 0.0


def _sox(argv: list[str], data: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["sox", *argv], input=data, capture_output=True, timeout=SOX_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"sox failed: {exc}") from None
    if done.returncode != 0:
        raise AudioError(f"sox {' '.join(argv)}: {done.stderr.decode(errors='replace')[-400:]}")
    return done.stdout


_RAW_8K = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(RATE)]


def telephone_band(source: AudioInput) -> bytes:
    """16-bit 8 kHz mono PCM of ``source``, band-passed to the telephone band."""
    if isinstance(source, bytes):
        if not source:
            return b""
        return _sox([*_RAW_8K, "-", *_RAW_8K, "-", "sinc", BAND], source)
    return _sox([str(source), *_RAW_8K, "-", "sinc", BAND])


def _downsample(pcm: bytes) -> bytes:
    raw_coarse = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(COARSE_RATE)]
    return _sox([*_RAW_8K, "-", *raw_coarse, "-"], pcm) if pcm else b""


def _ncc_at(recording: bytes, reference: bytes, offset: int) -> float:
    rec = array("h", recording[offset * SAMPLE_WIDTH : offset * SAMPLE_WIDTH + len(reference)])
    ref = array("h", reference)
    dot = sum(map(operator.mul, rec, ref))
    energy = sum(map(operator.mul, rec, rec)) * sum(map(operator.mul, ref, ref))
    return dot / math.sqrt(energy) if energy else 0.0


def _best_offset(recording: bytes, reference: bytes) -> int:
    """Offset (samples) in ``recording`` where ``reference`` fits best; len(rec) >= len(ref)."""
    n_ref = len(reference) // SAMPLE_WIDTH
    offsets = len(recording) // SAMPLE_WIDTH - n_ref + 1
    if offsets * n_ref <= FULL_SEARCH_BUDGET or n_ref < 4 * COARSE_FACTOR:
        return int(audioop.findfit(recording, reference)[0])
    coarse_rec, coarse_ref = _downsample(recording), _downsample(reference)
    if len(coarse_rec) < len(coarse_ref):
        coarse_rec += bytes(len(coarse_ref) - len(coarse_rec))
    coarse = int(audioop.findfit(coarse_rec, coarse_ref)[0]) * COARSE_FACTOR
    stop = min(offsets - 1, coarse + FINE_SLACK_SAMPLES)
    start = min(stop, max(0, coarse - FINE_SLACK_SAMPLES))
    window = recording[start * SAMPLE_WIDTH : (stop + n_ref) * SAMPLE_WIDTH]
    return start + int(audioop.findfit(window, reference)[0])


def _correlate_pcm(reference: bytes, recording: bytes) -> tuple[int, float]:
    """(lag in samples, peak); the lag is negative when the recording starts mid-reference.

    The recording is padded with silence one reference long on both sides, so a recording
    that holds only part of the utterance (a call cut short, a late start) is still found;
    its peak is then at most the share of the reference's energy that it holds.
    """
    if not reference or not recording:
        return 0, 0.0
    if audioop.rms(reference, SAMPLE_WIDTH) == 0 or audioop.rms(recording, SAMPLE_WIDTH) == 0:
        return 0, 0.0
    pad = bytes(len(reference))
    padded = _dither(pad + recording + pad)
    offset = _best_offset(padded, reference)
    return offset - len(reference) // SAMPLE_WIDTH, _ncc_at(padded, reference, offset)


def _dither(pcm: bytes) -> bytes:
    """Add +-1 LSB so that no window is digital silence.

    ``findfit`` divides by each window's energy: on an all-zero first window it gets NaN, no
    later window compares better than NaN, and it returns offset 0. Padding and lost packets
    are exact zeros, and so is the start of many recordings.
    """
    samples = len(pcm) // SAMPLE_WIDTH
    noise = array("h", DITHER * (samples // len(DITHER) + 1))[:samples].tobytes()
    return audioop.add(pcm[: samples * SAMPLE_WIDTH], noise, SAMPLE_WIDTH)


def correlate(reference: AudioInput, recording: AudioInput) -> Correlation:
    """Best normalised cross-correlation of the whole reference anywhere in the recording."""
    offset, peak = _correlate_pcm(telephone_band(reference), telephone_band(recording))
    return Correlation(peak=peak, lag_s=offset / RATE)


def find_segments(
    reference: AudioInput, recording: AudioInput, *, segment_s: float = SEGMENT_S
) -> SegmentMatch:
    """Look for each voiced ``segment_s`` piece of the reference separately in the recording.

    Survives gaps, jitter-buffer drops and DTMF muting that spoil a whole-utterance match.
    """
    ref, rec = telephone_band(reference), telephone_band(recording)
    step = int(segment_s * RATE) * SAMPLE_WIDTH
    voiced, offsets = 0, []
    for start in range(0, len(ref) - step + 1, step):
        piece = ref[start : start + step]
        if audioop.rms(piece, SAMPLE_WIDTH) < VOICED_RMS:
            continue
        voiced += 1
        offset, peak = _correlate_pcm(piece, rec)
        if peak >= SEGMENT_MATCH:
            offsets.append((offset - start // SAMPLE_WIDTH) / RATE)
    median = statistics.median(offsets) if offsets else None
    return SegmentMatch(voiced=voiced, found=len(offsets), median_offset_s=median)


def write_wav(path: Path, pcm: bytes, *, rate: int = RATE) -> Path:
    """Write 16-bit native-endian mono PCM as a WAV (little-endian, as the format wants)."""
    data = pcm if sys.byteorder == "little" else audioop.byteswap(pcm, SAMPLE_WIDTH)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(rate)
        out.writeframes(data)
    return path
