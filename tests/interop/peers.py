"""Real SIP peers for interop tests: one import for the drivers and a per-test owner of them.

The drivers live in modules named after the peer (sipp, baresip, kamailio, capture, edge) plus
audio correlation and the speech fixtures; this module re-exports what tests use and adds
``Peers``, which creates drivers inside one test's directory and stops all of them at the end,
whatever happened, printing their log tails when the test failed.

Everything binds 127.0.0.1, on ports picked at run time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from tests.interop.audio import Correlation, SegmentMatch, correlate, find_segments, write_wav
from tests.interop.baresip import Baresip, BaresipControl, BaresipEvent
from tests.interop.capture import (
    LOAD_SNAPLEN,
    Capture,
    CaptureSummary,
    DtmfSeen,
    Percentiles,
    RtpSeen,
    StreamKey,
    StreamStats,
    all_stream_stats,
    dtmf_digits,
    dtmf_events,
    grid_errors_ms,
    heard_pcm,
    inter_departure_ms,
    percentiles,
    read_rtp,
    split_streams,
    stream_stats,
)
from tests.interop.edge import EdgeNode
from tests.interop.kamailio import Kamailio, Registration
from tests.interop.media import MediaFiles, make_media
from tests.interop.ports import HOST, free_port, free_udp_range
from tests.interop.process import PeerError, tail
from tests.interop.sipp import (
    CallTiming,
    ShortMessage,
    SippResult,
    SippRun,
    SippStats,
    call_timings,
    default_peers_dir,
)

__all__ = [
    "HOST",
    "LOAD_SNAPLEN",
    "Baresip",
    "BaresipControl",
    "BaresipEvent",
    "CallTiming",
    "Capture",
    "CaptureSummary",
    "Correlation",
    "DtmfSeen",
    "EdgeNode",
    "Kamailio",
    "MediaFiles",
    "PeerError",
    "Peers",
    "Percentiles",
    "Registration",
    "RtpSeen",
    "SegmentMatch",
    "ShortMessage",
    "SippResult",
    "SippRun",
    "SippStats",
    "StreamKey",
    "StreamStats",
    "all_stream_stats",
    "call_timings",
    "correlate",
    "default_peers_dir",
    "dtmf_digits",
    "dtmf_events",
    "find_segments",
    "free_port",
    "free_udp_range",
    "grid_errors_ms",
    "heard_pcm",
    "inter_departure_ms",
    "make_media",
    "percentiles",
    "read_rtp",
    "split_streams",
    "stream_stats",
    "write_wav",
]


class _Stoppable(Protocol):
    def stop(self) -> Any: ...


class Peers:
    """Creates peer drivers under ``root`` for one test and stops them all in ``close``.

    sipp runs in the media directory (its ``rtp_stream`` files are relative to it); every log,
    trace and capture goes under ``root`` (pytest's ``tmp_path``).
    """

    def __init__(self, root: Path, media: MediaFiles, peers_dir: Path) -> None:
        self.root = root
        self.media = media
        self.peers_dir = peers_dir
        self._owned: list[tuple[str, _Stoppable, list[Path]]] = []

    def _own(self, name: str, peer: _Stoppable, logs: Iterable[Path]) -> None:
        self._owned.append((name, peer, list(logs)))

    def sipp(self, scenario: str, **options: Any) -> SippRun:
        """A sipp run of ``<peers_dir>/sipp/<scenario>`` (tests/interop/peers/ by default); options
        as SippRun's keywords."""
        run = SippRun(
            scenario,
            workdir=self.media.directory,
            artifacts=self.root / "sipp",
            peers_dir=self.peers_dir,
            **options,
        )
        logs = [run.process.log_path, run.short_path, run.errors_path, run.messages_path]
        self._own(run.process.name, run, logs)
        return run

    def baresip(self, name: str = "phone", **options: Any) -> Baresip:
        """A baresip phone in ``root/<name>``; plays the caller's speech unless told otherwise."""
        options.setdefault("audio_source", self.media.caller_phone_wav)
        phone = Baresip(self.root / name, **options)
        self._own(phone.process.name, phone, [phone.process.log_path])
        return phone

    def kamailio(self, name: str = "kamailio", **options: Any) -> Kamailio:
        proxy = Kamailio(self.root / name, peers_dir=self.peers_dir, **options)
        self._own(proxy.process.name, proxy, [proxy.process.log_path])
        return proxy

    def capture(self, name: str, *, ports: Iterable[int], **options: Any) -> Capture:
        """tshark on lo for UDP to/from ``ports``, written to ``root/<name>.pcapng``."""
        options.setdefault("capture_filter", Capture.udp_ports_filter(ports))
        cap = Capture(self.root / f"{name}.pcapng", **options)
        self._own(cap.process.name, cap, [cap.process.log_path])
        return cap

    def edge(self, name: str = "edge", **options: Any) -> EdgeNode:
        node = EdgeNode(self.root / name, **options)
        self._own(node.process.name, node, [node.process.log_path])
        return node

    def close(self) -> None:
        """Stop every peer, newest first; a peer that fails to stop does not keep others up."""
        for _, peer, _ in reversed(self._owned):
            with contextlib.suppress(Exception):
                peer.stop()

    def report(self) -> str:
        """Log tails of every peer, for a failed test's output."""
        parts = []
        for name, _, logs in self._owned:
            for log in logs:
                text = tail(log)
                if text:
                    parts.append(f"----- {name}: {log} -----\n{text}")
        return "\n".join(parts) or "(no peer logs)"
