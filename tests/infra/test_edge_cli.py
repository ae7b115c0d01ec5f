"""``agera edge`` as users run it: one process, or a supervisor of workers sharing the port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
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


def two_workers(port: int, rtp: tuple[int, int], **settings: str) -> subprocess.Popen[str]:
    """``agera edge`` with two media workers on ``port``, stderr piped."""
    env = dict(
        os.environ,
        AGERA_SIP_PORT=str(port),
        AGERA_MEDIA_WORKERS="2",
        AGERA_RTP_PORT_MIN=str(rtp[0]),
        AGERA_RTP_PORT_MAX=str(rtp[1]),
        AGERA_DRAIN_SECONDS="0",
        **settings,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "edge"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_workers_answer_on_one_port_and_stop_cleanly() -> None:
    port = free_port()
    proc = two_workers(port, (33000, 33099))
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


INVITE = (
    "INVITE sip:echo@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bK{branch};rport\r\n"
    "From: <sip:spread@127.0.0.1>;tag=f{n}\r\nTo: <sip:echo@127.0.0.1>{to_tag}\r\n"
    "Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
    "Contact: <sip:spread@127.0.0.1:{src}>\r\n{body_headers}\r\n{body}"
)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {src} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _request(method: str, port: int, src: int, n: int, call_id: str, **parts: str) -> bytes:
    body = parts.get("body", "")
    body_headers = f"Content-Length: {len(body)}\r\n"
    if body:
        body_headers = "Content-Type: application/sdp\r\n" + body_headers
    cseq = {"INVITE": 1, "ACK": 1, "BYE": 2}[method]
    text = INVITE.replace("INVITE sip:", f"{method} sip:", 1).format(
        port=port,
        src=src,
        branch=f"{method}{n}x{src}",
        n=n,
        to_tag=parts.get("to_tag", ""),
        call_id=call_id,
        cseq=cseq,
        method=method,
        body_headers=body_headers,
        body=body,
    )
    return text.encode()


def _final(probe: socket.socket, call_id: str, method: str, resend: bytes, port: int) -> bytes:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            answer = probe.recv(65535)
        except TimeoutError:
            probe.sendto(resend, ("127.0.0.1", port))
            continue
        ours = f"Call-ID: {call_id}".encode() in answer and f" {method}\r\n".encode() in answer
        if ours and int(answer[8:11]) >= 200:
            return answer
    raise AssertionError(f"no final answer to {method} of {call_id}")


def test_calls_from_one_source_are_spread_over_the_workers_by_call_id() -> None:
    """One carrier address and port (one 4-tuple, which SO_REUSEPORT keeps on one worker): each
    call is answered by the worker owning its Call-ID, which the RTP slice in its SDP shows."""
    from edge_media.sip.worker_spread import owner_of

    port = free_port()
    proc = two_workers(port, (33100, 33199), AGERA_TRUST_LOOPBACK="true", AGERA_ECHO_ENABLED="true")
    slices = [(33100, 33149), (33150, 33199)]
    owners = []
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while sum(" up: SIP " in line for line in list(lines)) < 2:  # both workers serve
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            probe.settimeout(0.5)
            src = probe.getsockname()[1]
            for n in range(16):
                call_id = f"spread-{n}@test"
                invite = _request("INVITE", port, src, n, call_id, body=OFFER.format(src=src))
                probe.sendto(invite, ("127.0.0.1", port))
                answer = _final(probe, call_id, "INVITE", invite, port)
                assert answer.startswith(b"SIP/2.0 200"), answer[:200]
                media_port = int(re.search(rb"m=audio (\d+)", answer).group(1))  # type: ignore[union-attr]
                worker = next(
                    i for i, (low, high) in enumerate(slices) if low <= media_port <= high
                )
                owners.append((worker, owner_of(call_id.encode(), 2)))
                to_tag = re.search(rb"\r\nTo: [^\r\n]*(;tag=[^\r\n;]+)", answer).group(1).decode()  # type: ignore[union-attr]
                probe.sendto(
                    _request("ACK", port, src, n, call_id, to_tag=to_tag), ("127.0.0.1", port)
                )
                bye = _request("BYE", port, src, n, call_id, to_tag=to_tag)
                probe.sendto(bye, ("127.0.0.1", port))
                assert _final(probe, call_id, "BYE", bye, port).startswith(b"SIP/2.0 200")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=5)
        proc.stderr.close()  # type: ignore[union-attr]
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert all(worker == owner for worker, owner in owners), (owners, err)
    assert {worker for worker, _ in owners} == {0, 1}, owners  # both workers took calls
