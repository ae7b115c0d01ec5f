"""Audio conversion between the caller leg (μ-law, 8 kHz) and a native agent's audio formats.

Why per call and per direction: an ElevenLabs agent announces its own input and output formats
(``ulaw_8000`` or 16-bit little-endian mono PCM at 8 to 48 kHz) only once the conversation has
started, and the two may differ. Each direction of each call gets its own converter object,
because resampling is a filter with memory: converting chunk by chunk with fresh state each time
puts a discontinuity (an audible click) at every chunk edge.

Why ``ulaw_8000`` is a passthrough: an agent set up for telephony speaks our wire format, so the
bytes go through untouched (the same object, no copy) and cost nothing beyond base64.

Why lookup tables for μ-law: the code↔linear mapping is fixed, so it is computed once at import
(by stdlib `audioop`, as `edge_media.rtp.g711` does) and applied with one numpy take per chunk:
256 entries for decoding, 65,536 for encoding (one byte per possible 16-bit sample).

Why soxr: it is a maintained binding of libsoxr with a streaming API (`soxr.ResampleStream`)
that keeps the filter state per call, works on int16 directly and costs a few microseconds per
20 ms frame. `audioop.ratecv` (what g711.Resampler uses for prompts) only interpolates
linearly, with no anti-alias filter, so a 16 kHz voice folds its 4-8 kHz band back into the
telephone band. Measured with 20 ms chunks (soxr 1.1.0): the fixed-ratio qualities ("LQ" to
"VHQ") release output in internal blocks, holding back 10 to 157 ms of audio at times; "LQ"
is also -8 dB at 3.4 kHz. The variable-rate engine (``vr=True``) holds a constant 15 ms
(downsampling to 8 kHz) or 30 ms (8 → 16 kHz), is flat to 3.8 kHz, rejects aliases by 80 dB
and costs 8-30 µs per frame, so it is the one used here: latency is what a caller hears.

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
    "ULAW_8000",
    "AgentToCaller",
    "AudioFormat",
    "CallerToAgent",
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
    return _encode(np.frombuffer(pcm, dtype=_PCM_DTYPE))


def _decode(ulaw: bytes) -> np.ndarray:
    return ULAW_TO_LINEAR.take(np.frombuffer(ulaw, dtype=np.uint8))


def _encode(samples: np.ndarray) -> bytes:
    native = samples.astype(np.int16, copy=False)
    return LINEAR_TO_ULAW.take(native.view(np.uint16)).tobytes()


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


class CallerToAgent:
    """Caller audio (μ-law 8 kHz frames) to the agent's ``user_input_audio_format``.

    One instance per call: it carries the resampler's state from frame to frame.
    """

    __slots__ = ("_resampler", "format", "passthrough")

    def __init__(self, name: str) -> None:
        self.format = parse_format(name)
        self.passthrough = self.format.encoding == "ulaw"
        rate = self.format.rate
        self._resampler = None if rate == CALLER_RATE else _resampler(CALLER_RATE, rate)

    def convert(self, ulaw: bytes) -> bytes:
        """One chunk of caller audio in the agent's format. A passthrough returns ``ulaw``
        itself; a resampling format may return fewer bytes than the duration (or none) while
        its filter fills, and catches up on later frames."""
        if self.passthrough:
            return ulaw
        samples = _decode(ulaw)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return _to_le_bytes(samples)


class AgentToCaller:
    """Agent audio in its ``agent_output_audio_format`` to μ-law 8 kHz for the caller.

    Chunks may have any length: a PCM chunk that ends in the middle of a sample keeps that odd
    byte for the next chunk. One instance per call.
    """

    __slots__ = ("_odd", "_resampler", "format", "passthrough")

    def __init__(self, name: str) -> None:
        self.format = parse_format(name)
        self.passthrough = self.format.encoding == "ulaw"
        rate = self.format.rate
        self._resampler = None if rate == CALLER_RATE else _resampler(rate, CALLER_RATE)
        self._odd = b""

    @property
    def holds_audio(self) -> bool:
        """True when converting may keep audio back until `flush` (a resampling format)."""
        return self._resampler is not None

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
        samples = np.frombuffer(data, dtype=_PCM_DTYPE)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples.astype(np.int16, copy=False))
        return _encode(samples)

    def flush(self) -> bytes:
        """The audio still inside the resampler, as μ-law, when the agent's speech paused; the
        next chunk then starts a fresh filter. A pending odd byte (half a sample) is dropped."""
        self._odd = b""
        resampler = self._resampler
        if resampler is None:
            return b""
        tail = resampler.resample_chunk(_EMPTY, last=True)
        resampler.clear()
        return _encode(tail) if len(tail) else b""

    def reset(self) -> None:
        """Forget everything held back (the agent was interrupted: that audio is stale)."""
        self._odd = b""
        if self._resampler is not None:
            self._resampler.clear()
