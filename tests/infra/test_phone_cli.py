"""``agera call`` as users run it: ``python -m infra.cli call ...`` against a node on loopback.

The node runs in the test's event loop and the phone in a child process, so the child's exit
code and its stdout/stderr lines are exactly what a user or a CI script sees.
"""

from __future__ import annotations

import math
import signal
import struct
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from edge_media.node import EdgeNode
from tests.edge_media.test_node import node_settings, running
from tests.interop.ports import free_udp_range

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0  # seconds a child may take, start-up included


def agera_call(*args: str) -> list[str]:
    low, high = free_udp_range(16)
    return [sys.executable, "-m", "infra.cli", "call", *args, "--rtp-ports", f"{low}-{high}"]


@pytest.fixture
async def node() -> AsyncIterator[EdgeNode]:
    async with running(node_settings()) as edge:
        yield edge


def uri(node: EdgeNode, user: str = "echo") -> str:
    return f"sip:{user}@127.0.0.1:{node.endpoint.local_addr[1]}"


def tone_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    samples = (
        round(12000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"".join(struct.pack("<h", s) for s in samples))


async def run_cli(*args: str) -> tuple[int, str, str]:
    with anyio.fail_after(WAIT):
        done = await anyio.run_process(agera_call(*args), cwd=REPO, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.anyio
async def test_a_full_call_exits_0_and_records(node: EdgeNode, tmp_path: Path) -> None:
    tone_wav(tmp_path / "hello.wav")
    code, out, err = await run_cli(
        uri(node),
        "--play", str(tmp_path / "hello.wav"),
        "--record", str(tmp_path / "heard.wav"),
        "--dtmf", "1#",
        "--dtmf-delay", "0.2",
        "--hangup-after", "1.5",
        "--from", "+15550100",
    )  # fmt: skip

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"calling {uri(node)} from sip:+15550100@127.0.0.1:")
    assert "received DTMF 1 (RFC 4733)" in lines and "received DTMF # (RFC 4733)" in lines
    assert "hanging up after 1.5 s" in lines
    with wave.open(str(tmp_path / "heard.wav"), "rb") as heard:
        assert (heard.getnchannels(), heard.getsampwidth(), heard.getframerate()) == (1, 2, 8000)
        assert heard.getnframes() > 8000 // 2  # at least half the tone came back


@pytest.mark.anyio
async def test_unknown_user_exits_1_with_the_cause(node: EdgeNode) -> None:
    code, out, err = await run_cli(uri(node, "nobody"))

    assert code == 1
    assert err == "agera call: not answered: SIP 404 Not Found (NO_ROUTE_DESTINATION)\n"
    assert out.splitlines()[-1] == (
        "not answered: NO_ROUTE_DESTINATION (Q.850 3) by the far end, SIP 404 Not Found"
    )


@pytest.mark.anyio
async def test_ctrl_c_hangs_up_cleanly(node: EdgeNode) -> None:
    async with await anyio.open_process(agera_call(uri(node)), cwd=REPO) as process:
        assert process.stdout is not None
        seen = ""
        with anyio.fail_after(WAIT):
            async for text in TextReceiveStream(process.stdout):
                seen += text
                if "answered:" in seen:
                    break
            process.send_signal(signal.SIGINT)
            rest = [text async for text in TextReceiveStream(process.stdout)]
            code = await process.wait()

    out = seen + "".join(rest)
    assert code == 0
    assert "hanging up on request" in out
    assert "ended: NORMAL_CLEARING (Q.850 16) by us after " in out
    assert await node.ua.wait_idle(WAIT)  # type: ignore[union-attr]  # the node got our BYE


@pytest.mark.anyio
async def test_a_file_that_is_not_a_wav_exits_2_in_one_line(tmp_path: Path) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_text("hello")
    code, out, err = await run_cli("sip:echo@127.0.0.1:9", "--play", str(notes))

    assert (code, out) == (2, "")
    assert err == f"agera call: {notes}: not a WAV file (no RIFF/WAVE header)\n"


@pytest.mark.anyio
async def test_a_missing_wav_exits_2_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    code, out, err = await run_cli("sip:echo@127.0.0.1:9", "--play", str(missing))

    assert (code, out) == (2, "")
    assert err == f"agera call: cannot read {missing}: No such file or directory\n"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sip:echo@127.0.0.1:9", "--dtmf", "12z"], "agera call: not DTMF keys: z (use 0-9, *, #, A-D)\n"),
        (["tel:+15550100"], "agera call: cannot dial a tel: URI; dial a sip: URI (sip:user@host:port)\n"),
        (["sip:echo@127.0.0.1:9", "--user", "carrier"], "agera call: digest login needs both a user name and a password\n"),
    ],
)  # fmt: skip
async def test_bad_arguments_exit_2_in_one_line(args: list[str], message: str) -> None:
    code, out, err = await run_cli(*args)

    assert (code, out, err) == (2, "", message)


@pytest.mark.anyio
async def test_argparse_errors_exit_2() -> None:
    code, _, err = await run_cli("sip:echo@127.0.0.1:9", "--hangup-after", "soon")

    assert code == 2
    assert "argument --hangup-after: invalid float value: 'soon'" in err
