"""Scale-in drain end to end: a real ``agera edge`` process, a real softphone call to its echo
line, the instance metadata and the Auto Scaling API as loopback fakes (tests/support/fake_ec2.py).

The node learns its public address from IMDSv2 (token required), tells systemd it is ready
(``NOTIFY_SOCKET`` is a datagram socket of the test), and when its target lifecycle state turns
``Terminated`` it drains exactly as on SIGTERM: a call that ends by itself ends normally, one that
outlasts ``AGERA_DRAIN_SECONDS`` is hung up with SYSTEM_SHUTDOWN; lifecycle heartbeats go out
while it waits, and ``CompleteLifecycleAction`` (CONTINUE, by instance id) only after the call
ended. Why not botocore's Stubber: it needs the exact number of heartbeats in advance, which
depends on how long the drain takes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_media.phone.phone_result import PhoneResult
from tests.infra.test_edge_cli import free_port
from tests.interop.gateway import phone_call
from tests.support.fake_ec2 import FakeAutoScaling, FakeImds

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
INSTANCE = "i-0123456789abcdef0"
GROUP, HOOK = "agera-edge-asg", "agera-edge-drain"


@contextmanager
def notify_socket(tmp: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp / "notify"))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def notifications(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


@contextmanager
def edge_node(
    tmp: Path,
    imds: FakeImds,
    autoscaling: FakeAutoScaling,
    *,
    drain: float,
    public_address: str | None = None,
    workers: int = 1,
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    rtp = 34000 + (os.getpid() % 50) * 40
    env = dict(
        os.environ,
        AGERA_SIP_HOST="127.0.0.1",
        AGERA_SIP_PORT=str(port),
        AGERA_WS_PORT="0",
        AGERA_RTP_PORT_MIN=str(rtp),
        AGERA_RTP_PORT_MAX=str(rtp + 38),
        AGERA_TRUST_LOOPBACK="true",
        AGERA_ECHO_RING_SECONDS="0",
        AGERA_DRAIN_SECONDS=str(drain),
        AGERA_IMDS_BASE_URL=imds.base_url,
        AGERA_PUBLIC_ADDRESS_FROM_IMDS="true",
        AGERA_AUTOSCALING_GROUP_NAME=GROUP,
        AGERA_LIFECYCLE_HOOK_NAME=HOOK,
        AGERA_LIFECYCLE_POLL_SECONDS="0.2",
        AGERA_LIFECYCLE_HEARTBEAT_SECONDS="0.3",
        AGERA_STATE_DIR=str(tmp / "state"),
        AWS_ENDPOINT_URL_AUTO_SCALING=autoscaling.base_url,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        NOTIFY_SOCKET=str(tmp / "notify"),
        WATCHDOG_USEC="1000000",
    )
    for name in ("AGERA_ORIGINATE_QUEUE_URL", "AGERA_EVENTS_QUEUE_URL"):
        env.pop(name, None)  # a standalone node: the drain is what is tested
    if public_address is not None:
        env.update(AGERA_PUBLIC_ADDRESS=public_address, AGERA_NODE_ID="test-node")
    env["AGERA_MEDIA_WORKERS"] = str(workers)
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "edge"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


async def wait_ready(sock: socket.socket, proc: subprocess.Popen[str], seen: list[str]) -> None:
    async with asyncio.timeout(20):
        while "READY=1" not in seen:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            seen += notifications(sock)
            await asyncio.sleep(0.05)


async def call(port: int, hangup_after: float | None) -> PhoneResult:
    return await phone_call(f"sip:echo@127.0.0.1:{port}", hangup_after=hangup_after)


async def exit_code(proc: subprocess.Popen[str], seconds: float = 20.0) -> int:
    async with asyncio.timeout(seconds):
        while proc.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return proc.returncode


@pytest.mark.parametrize(
    ("hangup_after", "drain", "cause"),
    [(3.0, 20.0, "NORMAL_CLEARING"), (None, 1.5, "SYSTEM_SHUTDOWN")],
    ids=["call-ends-within-the-drain", "call-outlasts-the-drain"],
)
async def test_scale_in_drains_then_completes_the_lifecycle_action(
    tmp_path: Path, hangup_after: float | None, drain: float, cause: str
) -> None:
    values = {"instance-id": INSTANCE, "autoscaling/target-lifecycle-state": "InService"}
    with (
        FakeImds(values) as imds,
        FakeAutoScaling() as autoscaling,
        notify_socket(tmp_path) as sock,
    ):
        imds.values["public-ipv4"] = "127.0.0.1"  # the Elastic IP the boot script claimed
        autoscaling.no_action_yet = 2  # the group is still deregistering it from the ALB
        with edge_node(tmp_path, imds, autoscaling, drain=drain) as (proc, port):
            seen: list[str] = []
            await wait_ready(sock, proc, seen)
            phone = asyncio.ensure_future(call(port, hangup_after))
            await asyncio.sleep(1.0)  # the call is up
            terminated_at = time.monotonic()
            imds.values["autoscaling/target-lifecycle-state"] = "Terminated"
            result = await phone
            call_ended_at = time.monotonic()
            code = await exit_code(proc)
            log = proc.stderr.read() if proc.stderr else ""
            seen += notifications(sock)

    assert code == 0, log
    assert result.answered and result.cause == cause, result
    assert "STOPPING=1" in seen and "WATCHDOG=1" in seen, seen
    assert "public address 127.0.0.1 (instance metadata)" in log
    assert ("public-ipv4", True) in imds.reads and all(valid for _, valid in imds.reads)
    actions = autoscaling.actions()
    # Refused twice (no action yet: still deregistering), then completed; heartbeats before.
    assert actions[-3:] == ["CompleteLifecycleAction"] * 3, actions
    assert set(actions[:-3]) == {"RecordLifecycleActionHeartbeat"}, actions
    completed_at, _, complete = autoscaling.calls[-1]
    assert complete == {
        "LifecycleHookName": HOOK,
        "AutoScalingGroupName": GROUP,
        "InstanceId": INSTANCE,
        "LifecycleActionResult": "CONTINUE",
    }
    assert completed_at >= call_ended_at > terminated_at
    # Heartbeats every 0.3 s from the moment the drain began until the call ended.
    assert len(actions) - 3 >= int((call_ended_at - terminated_at) / 0.3) - 2


async def test_a_node_without_a_public_address_does_not_start(tmp_path: Path) -> None:
    with (
        FakeImds({"instance-id": INSTANCE}) as imds,
        FakeAutoScaling() as autoscaling,
        edge_node(tmp_path, imds, autoscaling, drain=0) as (proc, _),
    ):
        code = await exit_code(proc)
        log = proc.stderr.read() if proc.stderr else ""
    assert code == 2
    assert "no public address from instance metadata" in log and "HTTP 404" in log


def children_of(pid: int) -> list[int]:
    """Direct children, from /proc (the workers of a supervisor)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


async def test_the_supervisor_pings_the_watchdog_only_while_every_worker_pulses(
    tmp_path: Path,
) -> None:
    """Two workers: READY once both serve; a worker whose loop stops (SIGSTOP) stops the
    watchdog pings, so systemd would restart the unit although the other worker is fine."""
    with (
        FakeImds({}) as imds,
        FakeAutoScaling() as autoscaling,
        notify_socket(tmp_path) as sock,
    ):
        node = edge_node(
            tmp_path, imds, autoscaling, drain=0, public_address="127.0.0.1", workers=2
        )
        with node as (proc, _):
            seen: list[str] = []
            await wait_ready(sock, proc, seen)
            await asyncio.sleep(1.2)
            pings_before = notifications(sock).count("WATCHDOG=1")
            worker = children_of(proc.pid)[0]
            os.kill(worker, signal.SIGSTOP)
            await asyncio.sleep(1.5)  # the stopped worker's last pulse ages past 1 s
            notifications(sock)
            await asyncio.sleep(1.0)
            pings_while_stopped = notifications(sock).count("WATCHDOG=1")
            os.kill(worker, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            code = await exit_code(proc)
            log = proc.stderr.read() if proc.stderr else ""
    assert pings_before >= 2 and pings_while_stopped == 0, log
    assert "a worker stopped pulsing" in log
    assert code == 0, log
