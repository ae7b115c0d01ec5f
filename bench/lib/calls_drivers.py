"""The bots bench/calls.py can bridge to, and what differs between them in a run's figures.

Why a driver option at all: the native ElevenLabs driver converts audio when the agent does not
speak the caller's μ-law 8 kHz (soxr resampling and μ-law tables, both ways, per 20 ms frame).
The question the bench answers is what that conversion costs the node: the same load against an
agent in ``pcm_16000`` and in ``ulaw_8000`` (passthrough) gives the ratio, and the Twilio-stream
echo bot stays as the reference the node's budget (docs/performance.md) was set against.

Each driver is a peer process (so /proc gives the node's CPU alone) with a media target for the
number's route: the Twilio-stream bot (bench/peers/echo_bot_fast.py) by its ws:// URL; the
ElevenLabs fake (bench/peers/elevenlabs_fast.py) as ``elevenlabs``, the account holding its
``elevenlabs.agent_id`` and an ``api_key`` (so every call also takes the signed-URL REST step,
as a private agent does), and the node's ``AGERA_ELEVENLABS_API_BASE`` pointing at the fake.

What is measured on the wire for ElevenLabs: the node's ``user_audio_chunk`` messages replace
Twilio's ``media``. In ``ulaw_8000`` a chunk is one RTP payload, untouched, so "RTP in → bot"
is matched as for Twilio (the call is named by the ``caller_number`` dynamic variable instead of
the ``start`` message). In ``pcm_16000`` a chunk is resampled audio that no RTP payload equals,
so that figure is not measured. Nor is "clear → last stale": the fake sends no interruption.
"""

from __future__ import annotations

import binascii
import json
import secrets
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.calls_wire import CaptureIn, WsFlow, _answer, _rtp_audio, read_pcap
from tests.interop.ports import HOST, free_port, listening_tcp_ports
from tests.interop.process import ManagedProcess

__all__ = [
    "BOT_SCRIPT",
    "DEFAULT_DRIVERS",
    "DRIVERS",
    "GOAL_PCM_RATIO",
    "BenchBot",
    "BenchPeer",
    "ElevenLabsFake",
    "driver_label",
    "driver_notes",
    "el_format",
    "ratio_lines",
    "read_capture_in_elevenlabs",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BOT_SCRIPT = REPO_ROOT / "bench" / "peers" / "echo_bot_fast.py"
FAKE_SCRIPT = REPO_ROOT / "bench" / "peers" / "elevenlabs_fast.py"
TWILIO = "twilio"
EL_ULAW = "elevenlabs-ulaw"
EL_PCM16 = "elevenlabs-pcm16"
DRIVERS = (TWILIO, EL_ULAW, EL_PCM16)
DEFAULT_DRIVERS = (TWILIO,)  # the bench's figure before drivers existed, and its run time
EL_FORMATS = {EL_ULAW: "ulaw_8000", EL_PCM16: "pcm_16000"}
LABELS = {TWILIO: "twilio", EL_ULAW: "el-ulaw", EL_PCM16: "el-pcm16"}
GOAL_PCM_RATIO = 1.3  # node CPU of the converted path over the passthrough path, at most
AGENT_ID = "agent_bench"
PING_EVERY_S = 3.0
START_TIMEOUT_S = 15.0
PROTO_TCP = 6
PROTO_UDP = 17
CHUNK_PREFIX = b'{"user_audio_chunk":"'
INITIATION = b"conversation_initiation_client_data"
INITIATION_WITHIN = 60  # bytes from the start of the message where its type is looked for
TONE_STAGGER_S = 0.137  # between clear calls, so clears land on different pacer phases


def el_format(driver: str) -> str | None:
    """The ElevenLabs agent's audio format for a driver name, None for the Twilio bot."""
    return EL_FORMATS.get(driver)


def driver_label(driver: str) -> str:
    return LABELS.get(driver, driver)


def read_sessions(path: Path) -> list[dict[str, Any]]:
    """A peer's JSON lines, one per connection; a torn last line (peer killed) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class BenchPeer:
    """A bot process on a free loopback port, its sessions read back from JSON lines."""

    def __init__(self, name: str, workdir: Path, argv: list[str], *, port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.out = workdir / "bot_sessions.jsonl"
        argv = [*argv, "--host", HOST, "--port", str(port), "--out", str(self.out)]
        self.process = ManagedProcess(
            f"{name}-{port}", argv, log_path=workdir / "bot.log", cwd=REPO_ROOT
        )

    @property
    def target(self) -> str:
        """The media target a number's route names to reach this peer."""
        raise NotImplementedError

    def node_env(self) -> dict[str, str]:
        """Settings the node needs to reach this peer (beyond the route)."""
        return {}

    def account_settings(self) -> dict[str, Any]:
        """Fields of the account that owns the number (its credentials for this peer)."""
        return {}

    def start(self) -> BenchPeer:
        self.process.start()
        self.process.wait_until(
            lambda: self.port in listening_tcp_ports(),
            timeout=START_TIMEOUT_S,
            what=f"listening on TCP {self.port}",
        )
        return self

    def stop(self) -> None:
        self.process.stop()

    def sessions(self) -> list[dict[str, Any]]:
        return read_sessions(self.out)


class BenchBot(BenchPeer):
    """bench/peers/echo_bot_fast.py as a process; its sessions are read back from JSON lines."""

    def __init__(
        self,
        workdir: Path,
        *,
        clear_every: int,
        tone_at: float,
        clear_after: float,
        tone_per_call: bool = False,
    ) -> None:
        """``tone_per_call``: ``tone_at`` counts from each clear call's start (bench/soak.py),
        not from the first call's."""
        argv = [sys.executable, str(BOT_SCRIPT), "--clear-every", str(clear_every)]
        argv += ["--tone-at", f"{tone_at:.3f}", "--clear-after", f"{clear_after:g}"]
        argv += ["--tone-stagger", f"{TONE_STAGGER_S:g}"]
        if tone_per_call:
            argv.append("--tone-per-call")
        super().__init__("bot", workdir, argv, port=free_port(tcp=True))

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    @property
    def target(self) -> str:
        return self.url


class ElevenLabsFake(BenchPeer):
    """bench/peers/elevenlabs_fast.py as a private agent in one audio format."""

    def __init__(self, workdir: Path, *, audio_format: str) -> None:
        self.audio_format = audio_format
        self.api_key = "bench-" + secrets.token_hex(12)
        argv = [sys.executable, str(FAKE_SCRIPT), "--format", audio_format]
        argv += ["--agent-id", AGENT_ID, "--api-key", self.api_key]
        argv += ["--ping-every", f"{PING_EVERY_S:g}"]
        super().__init__("elevenlabs", workdir, argv, port=free_port(tcp=True))

    @property
    def target(self) -> str:
        return "elevenlabs"  # the account's agent: the route form a customer would use

    def node_env(self) -> dict[str, str]:
        return {"AGERA_ELEVENLABS_API_BASE": f"http://{HOST}:{self.port}"}

    def account_settings(self) -> dict[str, Any]:
        from shared.models import ElevenLabsSettings

        return {"elevenlabs": ElevenLabsSettings(agent_id=AGENT_ID, api_key=self.api_key)}


def agent_summary(sessions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What only the ElevenLabs fake records: pings answered, signed sockets, conversations."""
    rtts = [s["pong_rtt_ms_max"] for s in sessions if s.get("pong_rtt_ms_max") is not None]
    return {
        "pings": sum(s.get("pings", 0) for s in sessions),
        "pongs": sum(s.get("pongs", 0) for s in sessions),
        "pong_rtt_ms_max": max(rtts) if rtts else None,
        "signed": sum(1 for s in sessions if s.get("signed")),
        "conversations": len({s.get("conversation_id") for s in sessions} - {None}),
        "with_caller_number": sum(1 for s in sessions if s.get("from_number")),
        "events": _merged_counts(s.get("events", {}) for s in sessions),
    }


def _merged_counts(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for one in counts:
        for name, value in one.items():
            out[name] = out.get(name, 0) + int(value)
    return out


# -- the wire ----------------------------------------------------------------------------------


@dataclass
class ElevenLabsFlow(WsFlow):
    """The node → agent half of one conversation socket (or of a signed-URL request, which
    has no frames). ``match_audio``: hash chunks for matching, only when they are RTP payloads."""

    match_audio: bool = True

    def _text(self, time: float, text: bytes) -> None:
        self.texts += 1
        if text.startswith(CHUNK_PREFIX):
            if not self.match_audio:
                return
            start = len(CHUNK_PREFIX)
            try:
                audio = _b64decode(text[start : text.find(b'"', start)])
            except ValueError:
                return
            self.media.append((time, hash(audio)))
        elif self.start is None and INITIATION in text[:INITIATION_WITHIN]:
            try:
                variables = json.loads(text)["dynamic_variables"]
                caller = variables["caller_number"]
            except (ValueError, KeyError, TypeError):
                return
            self.start = {"from_number": str(caller)}


def _b64decode(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error as error:
        raise ValueError(str(error)) from None


def read_capture_in_elevenlabs(
    path: Path, *, caller_media_port: int, node_sip_port: int, bot_port: int, match_audio: bool
) -> CaptureIn:
    """bench/calls_wire.py's `read_capture_in` with the node's writes read as ElevenLabs
    conversation messages: the same pass over the same capture, another flow reader."""
    result = CaptureIn(rtp_in={}, answers={}, flows={})
    rtp_in, flows = result.rtp_in, result.flows
    for time, ip in read_pcap(path):
        result.packets += 1
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        body = ip[ihl : int.from_bytes(ip[2:4], "big")]
        if len(body) < 8:
            continue
        sport, dport = struct.unpack_from("!HH", body, 0)
        if ip[9] == PROTO_UDP:
            data = body[8:]
            if sport == caller_media_port:
                payload = _rtp_audio(data)
                if payload is not None:
                    rtp_in.setdefault(dport, {}).setdefault(hash(payload), []).append(time)
            elif sport == node_sip_port:
                _answer(data, result.answers)
        elif ip[9] == PROTO_TCP and dport == bot_port and len(body) >= 20:
            flow = flows.get(sport)
            if flow is None:
                flow = flows[sport] = ElevenLabsFlow(sport, match_audio=match_audio)
            offset = (body[12] >> 4) * 4
            flow.segment(time, int.from_bytes(body[4:8], "big"), body[13], bytes(body[offset:]))
    # The signed-URL requests' connections carry no frame: they are not conversations.
    result.flows = {port: flow for port, flow in flows.items() if flow.texts}
    return result


# -- output ------------------------------------------------------------------------------------


class _Run(Protocol):
    calls: int
    driver: str
    cpu_ms_per_call_s: float | None


def driver_notes(drivers: Sequence[str]) -> list[str]:
    """What the table's ElevenLabs columns mean where they differ from the Twilio column."""
    notes = []
    if EL_ULAW in drivers:
        notes.append(
            "el-ulaw RTP in→media: the node's user_audio_chunk (one RTP payload, passthrough) "
            "matched like Twilio's media; the call is named by its caller_number variable"
        )
    if EL_PCM16 in drivers:
        notes.append(
            "el-pcm16 RTP in→media: n/a, each chunk is resampled PCM that no RTP payload equals"
        )
    if set(drivers) & set(EL_FORMATS):
        notes.append(
            "ElevenLabs clear→last stale: n/a, the fake agent sends no interruption; its "
            "socket is opened from a signed URL (REST step) on every call"
        )
    return notes


def ratio_lines(reports: Sequence[_Run]) -> list[str]:
    """Node CPU per call-second side by side per N, and the converted / passthrough ratio."""
    by_n: dict[int, dict[str, float | None]] = {}
    for r in reports:
        by_n.setdefault(r.calls, {})[r.driver] = r.cpu_ms_per_call_s
    drivers = [d for d in DRIVERS if any(d in row for row in by_n.values())]
    if not set(drivers) & set(EL_FORMATS):
        return []
    head = f"{'N':>6}" + "".join(f"{driver_label(d):>11}" for d in drivers)
    head += f"{'pcm16/ulaw':>13}{'ulaw/twilio':>13}"
    lines = [
        f"node CPU ms per call-second by driver; goal: el-pcm16 ≤ {GOAL_PCM_RATIO:g} x el-ulaw",
        head,
    ]
    for n, row in sorted(by_n.items()):
        cells = "".join(f"{'n/a' if row.get(d) is None else f'{row[d]:.3f}':>11}" for d in drivers)
        pcm = _ratio(row.get(EL_PCM16), row.get(EL_ULAW))
        verdict = "" if pcm is None else ("  ok" if pcm <= GOAL_PCM_RATIO else "  OVER")
        pcm_text = "n/a" if pcm is None else f"{pcm:.2f}{verdict}"
        ulaw = _ratio(row.get(EL_ULAW), row.get(TWILIO))
        ulaw_text = "n/a" if ulaw is None else f"{ulaw:.2f}"
        lines.append(f"{n:>6}{cells}{pcm_text:>13}{ulaw_text:>13}")
    return lines


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b
