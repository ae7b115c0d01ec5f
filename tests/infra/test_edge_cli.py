"""``agera edge`` as users run it: one process, or a supervisor of workers sharing the port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from infra.edge import worker_settings
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
OPTIONS = (
    "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bK{branch};rport\r\n"
    "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
    "Call-ID: edge-cli-{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def free_port() -> int:
    """A port free for both UDP and TCP (SIP binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP")


def test_rtp_range_is_split_between_workers_without_overlap() -> None:
    settings = Settings.load(
        {}, rtp_port_min=20000, rtp_port_max=20999, media_workers=3, node_id="n"
    )
    slices = [worker_settings(settings, i) for i in range(3)]
    ranges = [(s.rtp_port_min, s.rtp_port_max) for s in slices]
    assert ranges == [(20000, 20331), (20332, 20663), (20664, 20999)]
    assert [s.node_id for s in slices] == ["n-w0", "n-w1", "n-w2"]


def test_two_workers_answer_on_one_port_and_stop_cleanly() -> None:
    port = free_port()
    env = dict(
        os.environ,
        AGERA_SIP_PORT=str(port),
        AGERA_MEDIA_WORKERS="2",
        AGERA_RTP_PORT_MIN="33000",
        AGERA_RTP_PORT_MAX="33099",
        AGERA_DRAIN_SECONDS="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "edge"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answers = 0
        deadline = time.monotonic() + 20
        # Different source ports hash to either worker; every probe must be answered.
        for n in range(40):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                probe.settimeout(0.5)
                src = probe.getsockname()[1]
                message = OPTIONS.format(port=port, src=src, branch=f"{n}x{src}")
                while time.monotonic() < deadline:
                    probe.sendto(message.encode(), ("127.0.0.1", port))
                    try:
                        if probe.recv(4096).startswith(b"SIP/2.0 200 OK"):
                            answers += 1
                            break
                    except TimeoutError:
                        continue
        assert answers == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(re.findall(r"edge node \S+ stopped", err)) == 2, err
