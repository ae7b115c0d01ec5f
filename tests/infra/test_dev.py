"""``agera dev`` as a user runs it: a subprocess on free ports, health answered, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk_live_" + "A" * 43
ADMIN_KEY = "sk_live_" + "B" * 43


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, deadline: float, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    last: Exception | None = None
    request = urllib.request.Request(url, headers=headers or {})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status, json.loads(response.read())
        except (OSError, ValueError) as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


@pytest.fixture
def dev_process():
    port = free_port()
    sip = free_port()
    ws = free_port()
    env = dict(os.environ, AGERA_DEV_API_KEY=API_KEY, AGERA_DEV_ADMIN_KEY=ADMIN_KEY)
    env.pop("AWS_ENDPOINT_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "dev",
            "--api-port",
            str(port),
            "--sip-port",
            str(sip),
            "--ws-port",
            str(ws),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc, port, sip, ws
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_dev_serves_health_prints_keys_and_stops_cleanly(dev_process, stop_signal) -> None:
    proc, port, sip, ws = dev_process
    status, body = wait_for(f"http://127.0.0.1:{port}/api/health", time.monotonic() + 60)
    assert status == 200
    assert body["status"] == "ok"
    assert body["components"]["dynamodb"]["status"] == "ok"
    assert body["components"]["sqs"]["status"] == "ok"
    status, account = wait_for(
        f"http://127.0.0.1:{port}/api/account", time.monotonic() + 10, {"X-API-KEY": API_KEY}
    )
    assert status == 200 and account["name"] == "Local development"
    # The edge node answers SIP on the same host: an OPTIONS ping gets 200 with our methods.
    options = (
        f"OPTIONS sip:127.0.0.1:{sip} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKdevtest;rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
        "Call-ID: devtest\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ping:
        ping.settimeout(5)
        ping.bind(("127.0.0.1", 0))
        ping.sendto(options.encode(), ("127.0.0.1", sip))
        answer = ping.recv(4096).decode()
    assert answer.startswith("SIP/2.0 200 OK\r\n")
    # The node's stream port answers load balancers (and takes agent streams).
    status, health = wait_for(f"http://127.0.0.1:{ws}/health", time.monotonic() + 10)
    assert (status, health["status"], health["control_plane"]) == (200, "ok", True)
    assert "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS" in answer
    proc.send_signal(stop_signal)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert f"API key         {API_KEY}" in out
    assert f"admin key       {ADMIN_KEY}" in out
    assert "webhook secret  whsec_" in out
    assert f"account id      {account['account_id']}" in out
    assert "local stack stopped" in out
    assert f"sip:echo@127.0.0.1:{sip}" in out
    assert f"ws://127.0.0.1:{ws}/api/v1/agent-stream/" in out
    assert "demo agent" in out
    assert "Traceback" not in out


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "infra.cli", "dev", "--api-port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"agera dev: API port 127.0.0.1:{port} is in use; choose another with --api-port"
    )


def test_bad_setting_is_one_line_naming_it() -> None:
    env = dict(os.environ, AGERA_API_KEY_CACHE_SECONDS="soon")
    proc = subprocess.run(
        [sys.executable, "-m", "infra.cli", "dev", "--api-port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("agera dev: AGERA_API_KEY_CACHE_SECONDS:")


def test_sip_port_in_use_is_one_clear_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        sip = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "infra.cli",
                "dev",
                "--api-port",
                str(free_port()),
                "--sip-port",
                str(sip),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"agera dev: SIP port 127.0.0.1:{sip} is in use; choose another with --sip-port"
    )
