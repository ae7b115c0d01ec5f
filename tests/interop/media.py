"""Speech fixtures made on the spot with espeak-ng and sox (nothing binary in the repository).

Two different sentences, so a test can tell the caller's audio from the callee's (a wrong
utterance correlates at about 0.02). The derived files are what each peer reads:
raw μ-law for sipp's ``rtp_stream`` (no header: sipp would send a WAV header as noise) and
16-bit 8 kHz WAV padded with silence for baresip's ``aufile`` (it hangs up when the file ends).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.interop.process import PeerError

CALLER_TEXT = (
    "Hello, this is the carrier test call. Please say something back. One two three four five."
)
CALLEE_TEXT = "Good afternoon, you have reached the answering test. Seven eight nine."
VOICE = "en-us"
WORDS_PER_MINUTE = "150"
PHONE_PAD_LEAD_S = "0.5"  # baresip starts sending before the far end listens
PHONE_PAD_TAIL_S = "30"  # keeps baresip's aufile source alive through a long call
TOOL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MediaFiles:
    """Where each fixture is; ``directory`` is the working directory for sipp."""

    directory: Path
    caller_wav: Path  # espeak-ng output (22.05 kHz): the reference for correlation
    callee_wav: Path
    caller_ulaw: Path  # raw μ-law 8 kHz: sipp rtp_stream="caller.ulaw,..." (PT 0)
    callee_ulaw: Path
    caller_phone_wav: Path  # 16-bit 8 kHz mono, padded: baresip's audio source
    callee_phone_wav: Path


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"{argv[0]} failed: {exc}") from None
    if done.returncode != 0:
        raise PeerError(f"{' '.join(argv)} -> rc {done.returncode}: {done.stderr.decode()[-500:]}")


def _speech(directory: Path, name: str, text: str) -> tuple[Path, Path, Path]:
    wav = directory / f"{name}.wav"
    _run(["espeak-ng", "-v", VOICE, "-s", WORDS_PER_MINUTE, "-w", str(wav), text])
    ulaw = directory / f"{name}.ulaw"
    _run(["sox", str(wav), "-r", "8000", "-c", "1", "-t", "ul", str(ulaw)])
    phone = directory / f"{name}8k.wav"
    pad = ["pad", PHONE_PAD_LEAD_S, PHONE_PAD_TAIL_S]
    _run(["sox", str(wav), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", str(phone), *pad])
    return wav, ulaw, phone


def make_media(directory: Path) -> MediaFiles:
    """Write the fixtures into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    caller_wav, caller_ulaw, caller_phone = _speech(directory, "caller", CALLER_TEXT)
    callee_wav, callee_ulaw, callee_phone = _speech(directory, "callee", CALLEE_TEXT)
    return MediaFiles(
        directory=directory,
        caller_wav=caller_wav,
        callee_wav=callee_wav,
        caller_ulaw=caller_ulaw,
        callee_ulaw=callee_ulaw,
        caller_phone_wav=caller_phone,
        callee_phone_wav=callee_phone,
    )
