"""Audio conversion between the caller leg (μ-law, 8 kHz) and a native agent's audio formats.

Why per call and per direction: an ElevenLabs agent announces its own input and output formats
(``ulaw_8000`` or 16-bit little-endian mono PCM at 8 to 48 kHz) only once the conversation has
started, and the two may differ. Each direction of each call gets its own converter object,
because resampling is a filter with memory: converting chunk by chunk with fresh state each time
puts a discontinuity (an audible click) at every chunk edge.

Why ``ulaw_8000`` is a passthrough: an agent set up for telephony speaks our wire format, so the
bytes go through untouched (the same object, no copy) and cost nothing beyond base64.

Why `audioop` and lookup tables for μ-law: the code↔linear mapping is fixed. Decoding a chunk is
one `audioop.ulaw2lin` call (C, a fraction of a µs); encoding a filter's float output is one
numpy take from a table computed once at import by `audioop` (as `edge_media.rtp.g711` does),
indexed with ``mode="clip"`` so that a filter overshoot saturates instead of wrapping around.

Why a half-band FIR of our own for ``pcm_16000``: it is ElevenLabs' default format, so it is
the converted path nearly every PCM call takes, 50 frames a second each way. An exact 2:1 ratio
needs no general resampler: with a half-band lowpass every other tap is zero except the centre
one, so going up the even output samples are the input itself (delayed) and only the odd ones
are a convolution, and going down only the odd input samples meet the filter; one
`numpy.convolve` per chunk and direction does it, with the last few input samples kept per call
so chunk edges are seamless. The filter (`HALFBAND_K` = 24: 95 taps, Kaiser β 8) is flat to
3.6 kHz (±0.01 dB), -6 dB at 4 kHz and below -84 dB from 4.6 kHz, so a 16 kHz voice's 4.6-8 kHz
band cannot fold into the telephone band (4-4.6 kHz folds to 3.4-4 kHz, above it). It holds back
a constant 3 ms (going up) or 2.9 ms (down), where soxr's variable-rate engine held 30 and 15 ms,
and costs about 7 and 6 µs per 20 ms frame (up, down) where soxr took 13 and 10, about 4.5 and
4.2 per 20 ms in 40 ms chunks (bench/audio_convert.py, 100 calls interleaved). numpy's
per-call overhead is most of what is left, which is why the driver sends PCM in 40 ms chunks.

Why soxr for the other rates (22.05, 24, 44.1 and 48 kHz, which an agent may be set to): it is
a maintained binding of libsoxr with a streaming API (`soxr.ResampleStream`) that keeps the
filter state per call. `audioop.ratecv` (what g711.Resampler uses for prompts) only interpolates
linearly, with no anti-alias filter, so a 16 kHz voice folds its 4-8 kHz band back into the
telephone band. Measured with 20 ms chunks (soxr 1.1.0): the fixed-ratio qualities ("LQ" to
"VHQ") release output in internal blocks, holding back 10 to 175 ms of audio at times, even for
integer ratios such as 2:1; "LQ" is also -8 dB at 3.4 kHz. The variable-rate engine
(``vr=True``) holds a constant 15 to 30 ms, is flat to 3.8 kHz, rejects aliases by 80 dB and
costs 8-30 µs per frame, so it is the one used there: latency is what a caller hears.

Any resampler holds back a little audio that needs later input to be computed. Caller audio
flows without pause, but an agent's reply ends, so its tail would wait for the next reply:
`AgentToCaller.flush` emits it (the driver calls it when agent audio goes quiet).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import soxr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "CALLER_RATE",
    "FORMATS",
    "HALFBAND_K",
    "ULAW_8000",
    "AgentToCaller",
    "AudioFormat",
    "CallerToAgent",
    "halfband_taps",
    "parse_format",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
]

CALLER_RATE = 8000  # the caller leg is G.711 μ-law at 8 kHz
ULAW_8000 = "ulaw_8000"
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
FORMATS = (ULAW_8000, *(f"pcm_{rate}" for rate in PCM_RATES))
SAMPLE_WIDTH = 2  # bytes per PCM sample (16-bit)
RESAMPLER_QUALITY = "HQ"  # the variable-rate engine below ignores it; named for the record
RESAMPLER_VARIABLE_RATE = True  # see the module docstring: constant, low latency
HALFBAND_RATE = 2 * CALLER_RATE  # the rate the half-band FIR converts to and from
HALFBAND_K = 24  # the filter has 4K-1 taps, 2K of them non-zero besides the centre
HALFBAND_BETA = 8.0  # Kaiser window: ~84 dB stopband, ±0.01 dB passband
INT16_MIN, INT16_MAX = -32768.0, 32767.0
ULAW_SILENCE = b"\xff"  # the μ-law code of 0

# Little-endian int16 is what the agents send and expect; numpy converts on big-endian hosts.
_PCM_DTYPE = np.dtype("<i2")
_BIG_ENDIAN = sys.byteorder == "big"
_EMPTY = np.zeros(0, dtype=np.int16)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    codes = bytes(range(256))
    linear = np.frombuffer(audioop.ulaw2lin(codes, SAMPLE_WIDTH), dtype=np.int16).copy()
    # Every 16-bit sample, indexed by its bit pattern read as unsigned.
    every = np.arange(65536, dtype=np.uint16).view(np.int16)
    encoded = np.frombuffer(audioop.lin2ulaw(every.tobytes(), SAMPLE_WIDTH), dtype=np.uint8)
    return linear, encoded.copy()


ULAW_TO_LINEAR, LINEAR_TO_ULAW = _tables()


def halfband_taps(k: int = HALFBAND_K, beta: float = HALFBAND_BETA) -> np.ndarray:
    """The 2K non-zero side taps of a (4K-1)-tap Kaiser-windowed half-band lowpass at offsets
    -(2K-1), ..., -1, 1, ..., 2K-1 from its centre (whose tap is 0.5, and every other even
    offset's 0). Normalised so they sum to 0.5: the DC gain is exactly 1, so silence and a
    constant stay exact and the two phases of the interpolator match in level."""
    offsets = np.arange(1 - 2 * k, 2 * k, 2)
    window = np.kaiser(4 * k - 1, beta)[offsets + 2 * k - 1]
    taps = 0.5 * np.sinc(offsets / 2) * window
    return taps * (0.5 / taps.sum())


def _doubled_ulaw_table() -> np.ndarray:
    """μ-law codes indexed by twice a sample, truncated, taken with ``mode="wrap"``: index i in
    [-2**17, 2**17) (a negative one wraps to the top half) holds the code of i / 2 saturated to
    int16. The downsampler's output is twice the sample (its taps are doubled, so the centre
    tap is a plain add), stays within 1.82 times full scale (its taps' magnitudes sum to 1.82,
    so no input can drive it further) and so indexes it with no shift, scale or clip of its own."""
    index = np.arange(1 << 18)
    doubled = np.where(index >= 1 << 17, index - (1 << 18), index)
    samples = np.clip(doubled // 2, -32768, 32767).astype(np.int16)
    return LINEAR_TO_ULAW.take(samples.view(np.uint16))


_SIDE_TAPS = halfband_taps()
_UP_TAPS = 2.0 * _SIDE_TAPS  # zero-stuffing halves the level: the odd phase gets gain 2
_ULAW_BY_DOUBLED = _doubled_ulaw_table()
# μ-law codes so loud that the interpolated samples near them may exceed int16: only a window
# holding one needs the saturating path (speech rarely comes within 2 dB of full scale).
_SAFE_PEAK = INT16_MAX / float(np.abs(_UP_TAPS).sum())
_LOUD_CODES = bytes(int(abs(int(value)) > _SAFE_PEAK) for value in ULAW_TO_LINEAR)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One of the agent formats: ``ulaw`` at 8 kHz, or ``pcm`` (16-bit LE mono) at ``rate``."""

    name: str
    encoding: str  # "ulaw" | "pcm"
    rate: int

    @property
    def bytes_per_second(self) -> int:
        return self.rate * (1 if self.encoding == "ulaw" else SAMPLE_WIDTH)


def parse_format(name: str) -> AudioFormat:
    """The format named ``name`` (``ulaw_8000``, ``pcm_16000`` ...); `ValueError` otherwise."""
    if name == ULAW_8000:
        return AudioFormat(name, "ulaw", CALLER_RATE)
    if isinstance(name, str) and name.startswith("pcm_"):
        digits = name[4:]
        if digits.isdigit() and int(digits) in PCM_RATES and digits == str(int(digits)):
            return AudioFormat(name, "pcm", int(digits))
    raise ValueError(f"unsupported audio format {name!r} (supported: {', '.join(FORMATS)})")


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """μ-law bytes to 16-bit little-endian PCM at the same rate."""
    return _to_le_bytes(_decode(ulaw))


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """16-bit little-endian PCM (even length) to μ-law bytes at the same rate."""
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError(f"PCM16 must have an even length, got {len(pcm)} bytes")
    return _encode(_from_le_bytes(pcm))


def _decode(ulaw: bytes) -> np.ndarray:
    """μ-law to native int16 samples: audioop's C loop, ~10x cheaper than a numpy take."""
    return np.frombuffer(audioop.ulaw2lin(ulaw, SAMPLE_WIDTH), dtype=np.int16)


def _encode(samples: np.ndarray) -> bytes:
    native = samples.astype(np.int16, copy=False)
    return LINEAR_TO_ULAW.take(native.view(np.uint16)).tobytes()


def _from_le_bytes(pcm: bytes) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype=_PCM_DTYPE)
    return samples.astype(np.int16) if _BIG_ENDIAN else samples


def _to_le_bytes(samples: np.ndarray) -> bytes:
    if _BIG_ENDIAN:
        return samples.astype(_PCM_DTYPE).tobytes()
    return samples.tobytes()


def _resampler(source: int, target: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(
        source,
        target,
        1,
        dtype="int16",
        quality=RESAMPLER_QUALITY,
        vr=RESAMPLER_VARIABLE_RATE,
    )


class _Upsampler:
    """8 kHz μ-law → 16 kHz int16, by the half-band FIR (see the module docstring).

    Output pair j is (x[j-K], the interpolated sample halfway to x[j-K+1]): the even sample is
    the input itself, the odd one the 2K side taps over x[j-2K+1 .. j]. The last 2K-1 μ-law
    codes are kept for the next chunk and decoded again with it (one `audioop` call on bytes
    is cheaper than joining arrays). The first K pairs (the filter filling from silence) are
    dropped after a reset, so output sample 2i is input sample i and the hold-back is a
    constant K input samples (3 ms).
    """

    __slots__ = ("_skip", "_tail")

    HISTORY = 2 * HALFBAND_K - 1

    def __init__(self) -> None:
        self._tail = ULAW_SILENCE * self.HISTORY
        self._skip = 2 * HALFBAND_K

    def process(self, ulaw: bytes) -> np.ndarray:
        """μ-law at 8 kHz in, native int16 at 16 kHz out: twice as many (fewer at first)."""
        count = len(ulaw)
        if not count:  # convolve would swap its operands for a window shorter than the taps
            return _EMPTY
        codes = self._tail + ulaw
        self._tail = codes[count:]
        buf = np.frombuffer(audioop.ulaw2lin(codes, SAMPLE_WIDTH), dtype=np.int16)
        odd = np.convolve(buf, _UP_TAPS, "valid")  # float64, one per input sample
        out = np.empty(2 * count, dtype=np.int16)
        out[0::2] = buf[HALFBAND_K - 1 : HALFBAND_K - 1 + count]
        if 1 in codes.translate(_LOUD_CODES):
            # Saturate straight into the odd slots: near full scale the lowpass overshoots,
            # and a sample that wrapped around would be a loud click.
            np.minimum(odd, INT16_MAX, out=odd)
            np.maximum(odd, INT16_MIN, out=out[1::2], casting="unsafe")
        else:
            out[1::2] = odd  # truncated toward 0: under 1 LSB, far below μ-law's own steps
        if self._skip:
            skip, self._skip = min(self._skip, len(out)), max(self._skip - len(out), 0)
            return out[skip:]
        return out


class _Downsampler:
    """16 kHz PCM16 LE → 8 kHz μ-law, by the half-band FIR (see the module docstring).

    Output j is 0.5·x[2j-2K+2] (the centre tap) plus the 2K side taps over the odd samples
    x[2j-4K+3 .. 2j+1]: one output per input pair, computed doubled (`_doubled_ulaw_table`).
    The last 4K-2 samples (and one still waiting for its pair) are kept, as bytes, for the next
    chunk. The first K-1 outputs after a reset are dropped, so output sample i is input sample
    2i and the hold-back is a constant 2K-1 input samples (2.9 ms), which `flush` hands over.
    """

    __slots__ = ("_skip", "_tail")

    HISTORY = 4 * HALFBAND_K - 2

    def __init__(self) -> None:
        self.clear()

    def process(self, pcm: bytes) -> bytes:
        """PCM16 LE at 16 kHz (even length) in, μ-law at 8 kHz out: half as many samples."""
        data = self._tail + pcm
        buf = np.frombuffer(data, dtype=_PCM_DTYPE)
        pairs = (len(buf) - self.HISTORY) // 2
        if pairs <= 0:
            self._tail = data
            return b""
        self._tail = data[2 * SAMPLE_WIDTH * pairs :]
        end = self.HISTORY + 2 * pairs
        doubled = np.convolve(buf[1:end:2], _UP_TAPS, "valid")  # float64, one per pair
        doubled += buf[2 * HALFBAND_K : 2 * HALFBAND_K + 2 * pairs : 2]
        codes = _ULAW_BY_DOUBLED.take(doubled.astype(np.intp), mode="wrap")
        if self._skip:
            skip, self._skip = min(self._skip, len(codes)), max(self._skip - len(codes), 0)
            codes = codes[skip:]
        return codes.tobytes()

    def flush(self) -> bytes:
        """The held-back tail (zeros pushed through the filter), then a fresh filter."""
        unpaired = (len(self._tail) // SAMPLE_WIDTH - self.HISTORY) % 2
        tail = self.process(bytes(SAMPLE_WIDTH * (2 * (HALFBAND_K - 1) + unpaired)))
        self.clear()
        return tail

    def clear(self) -> None:
        self._tail = bytes(SAMPLE_WIDTH * self.HISTORY)
        self._skip = HALFBAND_K - 1


class CallerToAgent:
    """Caller audio (μ-law 8 kHz frames) to the agent's ``user_input_audio_format``.

    One instance per call: it carries the resampler's state from frame to frame.
    """

    __slots__ = ("_resampler", "_upsampler", "format", "passthrough")

    def __init__(self, name: str) -> None:
        self.format = parse_format(name)
        self.passthrough = self.format.encoding == "ulaw"
        rate = self.format.rate
        self._upsampler = _Upsampler() if rate == HALFBAND_RATE else None
        self._resampler = (
            None if rate in (CALLER_RATE, HALFBAND_RATE) else _resampler(CALLER_RATE, rate)
        )

    def convert(self, ulaw: bytes) -> bytes:
        """One chunk of caller audio in the agent's format. A passthrough returns ``ulaw``
        itself; a resampling format may return fewer bytes than the duration (or none) while
        its filter fills, and catches up on later frames."""
        if self.passthrough:
            return ulaw
        if self._upsampler is not None:
            return _to_le_bytes(self._upsampler.process(ulaw))
        samples = _decode(ulaw)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return _to_le_bytes(samples)


class AgentToCaller:
    """Agent audio in its ``agent_output_audio_format`` to μ-law 8 kHz for the caller.

    Chunks may have any length: a PCM chunk that ends in the middle of a sample keeps that odd
    byte for the next chunk. One instance per call.
    """

    __slots__ = ("_downsampler", "_odd", "_resampler", "format", "passthrough")

    def __init__(self, name: str) -> None:
        self.format = parse_format(name)
        self.passthrough = self.format.encoding == "ulaw"
        rate = self.format.rate
        self._downsampler = _Downsampler() if rate == HALFBAND_RATE else None
        self._resampler = (
            None if rate in (CALLER_RATE, HALFBAND_RATE) else _resampler(rate, CALLER_RATE)
        )
        self._odd = b""

    @property
    def holds_audio(self) -> bool:
        """True when converting may keep audio back until `flush` (a resampling format)."""
        return self._resampler is not None or self._downsampler is not None

    def convert(self, data: bytes) -> bytes:
        """One chunk of agent audio as μ-law 8 kHz (possibly empty while a filter fills)."""
        if self.passthrough:
            return data
        if self._odd:
            data = self._odd + data
            self._odd = b""
        if len(data) % SAMPLE_WIDTH:
            self._odd = data[-1:]
            data = data[:-1]
        if not data:
            return b""
        if self._downsampler is not None:
            return self._downsampler.process(data)
        if self._resampler is not None:
            return _encode(self._resampler.resample_chunk(_from_le_bytes(data)))
        if _BIG_ENDIAN:
            return _encode(_from_le_bytes(data))
        return audioop.lin2ulaw(data, SAMPLE_WIDTH)

    def flush(self) -> bytes:
        """The audio still inside the resampler, as μ-law, when the agent's speech paused; the
        next chunk then starts a fresh filter. A pending odd byte (half a sample) is dropped."""
        self._odd = b""
        if self._downsampler is not None:
            return self._downsampler.flush()
        resampler = self._resampler
        if resampler is None:
            return b""
        tail = resampler.resample_chunk(_EMPTY, last=True)
        resampler.clear()
        return _encode(tail) if len(tail) else b""

    def reset(self) -> None:
        """Forget everything held back (the agent was interrupted: that audio is stale)."""
        self._odd = b""
        if self._downsampler is not None:
            self._downsampler.clear()
        if self._resampler is not None:
            self._resampler.clear()
