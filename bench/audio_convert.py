"""Per-chunk CPU cost and hold-back of the ElevenLabs driver's audio conversion, in isolation.

Run: .venv/bin/python bench/audio_convert.py [--calls 100] [--seconds 4] [--chunk-ms 20 40]
         [--formats ulaw_8000 pcm_16000 ...] [--root DIR]

Why a micro-benchmark beside bench/calls.py: the call bench gives the figure that matters (node
CPU per call-second, pcm16/ulaw), but a run takes minutes, shares the box with everything else
and mixes the conversion with SIP, RTP and WebSocket costs. This times exactly the driver's
per-chunk audio work, for every agent format and both directions:

* caller→agent: `CallerToAgent.convert` of μ-law 8 kHz caller audio, then
  `ElevenLabsProtocol.user_audio` (base64 + JSON text): what `send_audio` does per chunk;
* agent→caller: `ElevenLabsProtocol.receive_text` of an ``audio`` message in the agent's format
  (JSON + base64 decoding), then `AgentToCaller.convert` to μ-law: what `on_text` does.

Each is timed alone ("convert") and with its message ("+ message"). ``--calls`` converters per
format and direction are fed round-robin, chunk by chunk, as the node interleaves its calls, so
filter states and buffers compete for the caches as they do there. Timings are
`time.perf_counter_ns` around one call; medians and p99 are over every chunk of every call, in
µs per chunk and per 20 ms of audio (so 20 and 40 ms chunks compare).

Hold-back: the audio a converter keeps inside its filter, in ms, after each 20 ms chunk of a
steady stream (the time sent minus the time that came out), after the first 100 ms; min and max
show whether it is constant or released in bursts.

``--root DIR`` imports the converters from another copy of this repository, so one machine can
compare before and after, e.g. ``mkdir ../before && git archive <commit> edge_media shared |
tar -x -C ../before`` then ``--root ../before``; the script needs only the public API both have.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

REPO_ROOT = Path(__file__).resolve().parent.parent
CALLER_RATE = 8000
FRAME_MS = 20
DEFAULT_FORMATS = (
    "ulaw_8000",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
)
WARMUP_MS = 100  # hold-back is read after this much audio (the filters have filled)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a format, a direction, what was timed, and the figures."""

    audio_format: str
    direction: str
    what: str
    chunk_ms: int
    median_us: float
    p99_us: float

    def per_frame(self, value: float) -> float:
        return value * FRAME_MS / self.chunk_ms


def load(root: Path) -> tuple[ModuleType, ModuleType]:
    """The converter and protocol modules from the checkout at ``root``."""
    sys.path.insert(0, str(root))
    audio_format = importlib.import_module("edge_media.drivers.audio_format")
    protocol = importlib.import_module("edge_media.drivers.elevenlabs_protocol")
    return audio_format, protocol


def voice_like(rate: int, seconds: float, seed: int) -> np.ndarray:
    """Float samples in [-1, 1]: a few harmonics of a wandering pitch plus noise, so a filter
    sees broadband content up to the Nyquist frequency, as speech has, and not silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 12))
    signal = 0.25 * signal + 0.05 * rng.standard_normal(len(t))
    return np.clip(signal, -1.0, 1.0)


def pcm16(samples: np.ndarray) -> bytes:
    return np.round(samples * 32767).astype("<i2").tobytes()


def caller_audio(seconds: float, seed: int) -> bytes:
    return audioop.lin2ulaw(pcm16(voice_like(CALLER_RATE, seconds, seed)), 2)


def agent_audio(audio_format: str, seconds: float, seed: int) -> bytes:
    rate = int(audio_format.split("_")[1])
    linear = pcm16(voice_like(rate, seconds, seed))
    return audioop.lin2ulaw(linear, 2) if audio_format == "ulaw_8000" else linear


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[index : index + size] for index in range(0, len(data) - size + 1, size)]


def audio_message(chunk: bytes, event_id: int) -> str:
    """An agent ``audio`` event as ElevenLabs sends it (what the node's `on_text` gets)."""
    payload = base64.b64encode(chunk).decode("ascii")
    return (
        '{"type":"audio","audio_event":{"audio_base_64":"' + payload + '","event_id":'
        f"{event_id}}}}}"
    )


def time_round_robin(
    workers: Sequence[Callable[[Any], object]], inputs: Sequence[Sequence[Any]]
) -> list[int]:
    """ns per call, feeding chunk i to every worker before chunk i + 1 (as calls interleave)."""
    clock = time.perf_counter_ns
    spent: list[int] = []
    for index in range(len(inputs[0])):
        for worker, stream in zip(workers, inputs, strict=True):
            chunk = stream[index]
            start = clock()
            worker(chunk)
            spent.append(clock() - start)
    return spent


def figures(spent: list[int]) -> tuple[float, float]:
    ordered = sorted(spent)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def measure(
    af: ModuleType,
    proto: ModuleType,
    audio_format: str,
    chunk_ms: int,
    calls: int,
    seconds: float,
) -> list[Row]:
    """The four timings (two directions, with and without the message) of one format."""
    rows: list[Row] = []
    caller_bytes = CALLER_RATE * chunk_ms // 1000
    rate = int(audio_format.split("_")[1])
    width = 1 if audio_format == "ulaw_8000" else 2
    agent_bytes = rate * chunk_ms // 1000 * width
    caller = [chunks(caller_audio(seconds, seed), caller_bytes) for seed in range(calls)]
    agent = [chunks(agent_audio(audio_format, seconds, seed), agent_bytes) for seed in range(calls)]

    user_audio = proto.ElevenLabsProtocol.user_audio
    converters = [af.CallerToAgent(audio_format) for _ in range(calls)]
    spent = time_round_robin([c.convert for c in converters], caller)
    rows.append(Row(audio_format, "caller→agent", "convert", chunk_ms, *figures(spent)))
    converters = [af.CallerToAgent(audio_format) for _ in range(calls)]

    def to_agent(converter: Any) -> Callable[[bytes], object]:
        convert = converter.convert
        return lambda chunk: user_audio(convert(chunk))

    spent = time_round_robin([to_agent(c) for c in converters], caller)
    rows.append(Row(audio_format, "caller→agent", "+ message", chunk_ms, *figures(spent)))

    converters = [af.AgentToCaller(audio_format) for _ in range(calls)]
    spent = time_round_robin([c.convert for c in converters], agent)
    rows.append(Row(audio_format, "agent→caller", "convert", chunk_ms, *figures(spent)))

    info = proto.CallInfo(
        call_uuid="bench",
        account_id="acc_bench",
        direction="inbound",
        from_number="+15005550006",
        to_number="+15005550001",
        extra={},
    )
    metadata = (
        '{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":'
        f'{{"conversation_id":"c","agent_output_audio_format":"{audio_format}",'
        f'"user_input_audio_format":"{audio_format}"}}}}'
    )
    workers = []
    for _ in range(calls):
        protocol = proto.ElevenLabsProtocol(info)
        protocol.receive_text(metadata)
        workers.append(_from_agent(protocol, af.AgentToCaller(audio_format)))
    messages = [
        [audio_message(chunk, index + 1) for index, chunk in enumerate(stream)] for stream in agent
    ]
    spent = time_round_robin(workers, messages)
    rows.append(Row(audio_format, "agent→caller", "+ message", chunk_ms, *figures(spent)))
    return rows


def _from_agent(protocol: Any, converter: Any) -> Callable[[str], object]:
    receive, convert = protocol.receive_text, converter.convert

    def work(text: str) -> object:
        [event] = receive(text)
        return convert(event.audio)

    return work


def hold_back(af: ModuleType, audio_format: str, seconds: float = 1.0) -> tuple[str, str]:
    """Min..max ms held back after each 20 ms chunk, caller→agent and agent→caller."""
    rate = int(audio_format.split("_")[1])
    width = 1 if audio_format == "ulaw_8000" else 2
    to_agent, to_caller = af.CallerToAgent(audio_format), af.AgentToCaller(audio_format)
    up = chunks(caller_audio(seconds, 1), CALLER_RATE * FRAME_MS // 1000)
    down = chunks(agent_audio(audio_format, seconds, 2), rate * FRAME_MS // 1000 * width)
    sent = produced_up = produced_down = 0
    held_up: list[float] = []
    held_down: list[float] = []
    for caller_chunk, agent_chunk in zip(up, down, strict=False):
        sent += FRAME_MS
        produced_up += len(to_agent.convert(caller_chunk)) // width
        produced_down += len(to_caller.convert(agent_chunk))
        if sent > WARMUP_MS:
            held_up.append(sent - produced_up * 1000 / rate)
            held_down.append(sent - produced_down * 1000 / CALLER_RATE)
    return _span(held_up), _span(held_down)


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if abs(high - low) < 0.05 else f"{low:.1f}..{high:.1f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="converters interleaved (100)")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per call (4)")
    parser.add_argument(
        "--chunk-ms", type=int, nargs="+", default=[20, 40], help="chunk lengths (20 40)"
    )
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS))
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="checkout to import from")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    af, proto = load(args.root.resolve())
    print(f"converters from {args.root}; {args.calls} calls interleaved, {args.seconds:g} s each")
    print("µs per chunk and per 20 ms of audio; hold-back in ms after each 20 ms chunk")
    print(
        f"{'format':<10} {'direction':<13} {'timed':<10} {'chunk':>6} {'median':>8} {'p99':>8}"
        f" {'med/20ms':>9} {'p99/20ms':>9}"
    )
    for audio_format in args.formats:
        for chunk_ms in args.chunk_ms:
            for row in measure(af, proto, audio_format, chunk_ms, args.calls, args.seconds):
                print(
                    f"{row.audio_format:<10} {row.direction:<13} {row.what:<10}"
                    f" {row.chunk_ms:>4}ms {row.median_us:>8.2f} {row.p99_us:>8.2f}"
                    f" {row.per_frame(row.median_us):>9.2f} {row.per_frame(row.p99_us):>9.2f}"
                )
    print()
    print(f"{'format':<10} {'hold-back caller→agent ms':>26} {'agent→caller ms':>16}")
    for audio_format in args.formats:
        up, down = hold_back(af, audio_format)
        print(f"{audio_format:<10} {up:>26} {down:>16}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
