"""The edge node (``agera edge``) as a process under test, configured the way a user would.

Settings go in through the environment (``AGERA_`` + setting name, see shared/settings.py):
SIP on a free loopback port, a free RTP port block, the echo application on, loopback trusted,
the agent-stream listener moved off its default 8080, and no drain on SIGTERM so a test ends
quickly. The node is ready when it logs ``SIP listening on 127.0.0.1:<port>``; it must exit 0 on
SIGTERM.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.interop.ports import HOST, free_port, free_udp_range
from tests.interop.process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TEXT = "SIP listening on {host}:{port}"
START_TIMEOUT_S = 30.0
# A stopping node lets the originate queue's long poll end rather than cut it (its messages are
# handed back, not hidden for a visibility timeout: edge_media/control/consumer.py), then
# deregisters: up to 3 + 20 + 5 + 10 s against a busy local table (edge_media/node_control.py).
STOP_TIMEOUT_S = 45.0
RTP_PORTS_PER_CALL = 2  # RTP + RTCP (RFC 3550 §11)
DEFAULT_MAX_CALLS = 50
# Not a setting yet: the name the bench and tests pass for "media workers per node".
WORKERS_ENV = "AGERA_MEDIA_WORKERS"


def edge_command() -> list[str]:
    """``python -m infra.cli edge`` with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "infra.cli", "edge"]


class EdgeNode:
    """One ``agera edge`` process with its own ports; ``start`` waits for its ready line."""

    def __init__(
        self,
        workdir: Path,
        *,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        max_calls: int = DEFAULT_MAX_CALLS,
        echo: bool = True,
        trust_loopback: bool = True,
        workers: int | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.sip_port = sip_port if sip_port is not None else free_port()
        self.rtp_ports = (
            rtp_ports
            if rtp_ports is not None
            else free_udp_range(max(64, RTP_PORTS_PER_CALL * max_calls * 2))
        )
        self.ws_port = free_port(tcp=True)
        settings = {
            "AGERA_SIP_HOST": HOST,
            "AGERA_SIP_PORT": str(self.sip_port),
            "AGERA_RTP_PORT_MIN": str(self.rtp_ports[0]),
            "AGERA_RTP_PORT_MAX": str(self.rtp_ports[1]),
            "AGERA_ECHO_ENABLED": "true" if echo else "false",
            "AGERA_TRUST_LOOPBACK": "true" if trust_loopback else "false",
            "AGERA_WS_HOST": HOST,
            "AGERA_WS_PORT": str(self.ws_port),
            "AGERA_DRAIN_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        if workers is not None:
            settings[WORKERS_ENV] = str(workers)
        settings.update(env or {})
        self.settings = settings
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            f"edge-{self.sip_port}",
            list(command) if command is not None else edge_command(),
            log_path=workdir / "edge.log",
            cwd=REPO_ROOT,
            env={**os.environ, **settings},
        )

    @property
    def address(self) -> str:
        return f"{HOST}:{self.sip_port}"

    @property
    def echo_uri(self) -> str:
        return f"sip:echo@{self.address}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, *, timeout: float = START_TIMEOUT_S) -> EdgeNode:
        ready = READY_TEXT.format(host=HOST, port=self.sip_port)
        self.process.start()
        self.process.wait_until(
            lambda: ready in self.process.log_path.read_text(errors="replace"),
            timeout=timeout,
            what=f"logging {ready!r}",
        )
        return self

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; the return code is the node's (0 expected), -9 if it was killed."""
        return self.process.stop(timeout)

    def __enter__(self) -> EdgeNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
