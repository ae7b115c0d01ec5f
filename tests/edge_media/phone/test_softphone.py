"""The test phone against a real edge node on loopback: its echo line, a 404, digest login.

The node runs in this process (`EdgeNode`, as ``agera edge`` builds it); the phone builds its
own endpoint, user agent and media clock, so every call crosses real UDP (or TCP) sockets.
Audio is compared by its shape, not sample by sample: the per-20-ms level of what was played
against what the echo sent back, and the pitch of each tone segment.
"""

from __future__ import annotations

import array
import asyncio
import io
import itertools
import math
import struct
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from edge_media.node import EdgeNode
from edge_media.phone.phone_options import (
    PhoneError,
    PhoneOptions,
    Target,
    check_options,
    parse_target,
)
from edge_media.phone.phone_result import PhoneResult, ReceivedDigit, q850_of_reason
from edge_media.phone.softphone import run_phone
from edge_media.sip.extensions import StaticDirectory, extension_auth
from tests.edge_media.test_node import node_settings, running
from tests.interop.ports import free_port, free_udp_range

pytestmark = pytest.mark.anyio

WAIT = 10.0  # seconds any one call may take here, far above what it needs
SOURCE_RATE = 16000
SEGMENT = 0.3  # seconds per segment of the test signal
FRAME = 160  # 20 ms at 8 kHz
SOURCE_FRAME = SOURCE_RATE // 50
# (kind, frequency): tones and silences, then a sweep; 1.8 s in all.
SEGMENTS = [("tone", 500.0), ("silence", 0.0), ("tone", 1200.0), ("silence", 0.0),
            ("sweep", 300.0), ("silence", 0.0)]  # fmt: skip


def signal() -> list[float]:
    """The test signal at 16 kHz in [-1, 1)."""
    samples: list[float] = []
    count = int(SEGMENT * SOURCE_RATE)
    for kind, freq in SEGMENTS:
        phase = 0.0
        for n in range(count):
            if kind == "silence":
                samples.append(0.0)
                continue
            f = freq if kind == "tone" else freq + 1700.0 * n / count
            phase += 2 * math.pi * f / SOURCE_RATE
            samples.append(0.5 * math.sin(phase))
    return samples


def stereo_wav(path: Path, samples: list[float]) -> None:
    """16-bit stereo: the signal on the left, the same at half level on the right."""
    frames = b"".join(struct.pack("<hh", round(s * 32767), round(s * 0.5 * 32767)) for s in samples)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(SOURCE_RATE)
        writer.writeframes(frames)


def read_recording(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        samples = array.array("h", reader.readframes(reader.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    return list(samples)


def envelope(samples: list[float] | list[int], frame: int) -> list[float]:
    return [
        math.sqrt(sum(s * s for s in samples[i : i + frame]) / frame)
        for i in range(0, len(samples) - frame + 1, frame)
    ]


def correlation(a: list[float], b: list[float]) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    mean_a, mean_b = sum(a) / n, sum(b) / n
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    return cov / math.sqrt(var_a * var_b) if var_a and var_b else 0.0


def zero_crossings(samples: list[int]) -> int:
    signs = [s >= 0 for s in samples]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


@pytest.fixture
async def node() -> AsyncIterator[EdgeNode]:
    async with running(node_settings()) as edge:
        yield edge


def echo_uri(node: EdgeNode, user: str = "echo") -> str:
    return f"sip:{user}@127.0.0.1:{node.endpoint.local_addr[1]}"


def options(uri: str, **values: object) -> PhoneOptions:
    return PhoneOptions(uri, rtp_ports=free_udp_range(16), **values)  # type: ignore[arg-type]


async def call(opts: PhoneOptions, out: io.StringIO | None = None) -> PhoneResult:
    with anyio.fail_after(WAIT):
        return await run_phone(opts, out=out or io.StringIO())


async def until_printed(out: io.StringIO, text: str) -> None:
    with anyio.fail_after(WAIT):
        while text not in out.getvalue():  # noqa: ASYNC110 - the phone prints from its own task
            await anyio.sleep(0.02)


# -- calls to the echo line -----------------------------------------------------------------------


async def test_echo_sends_back_what_was_played(node: EdgeNode, tmp_path: Path) -> None:
    played = signal()
    stereo_wav(tmp_path / "played.wav", played)
    out = io.StringIO()
    result = await call(
        options(
            echo_uri(node),
            wav_in=tmp_path / "played.wav",
            wav_out=tmp_path / "heard.wav",
            hangup_after=2.6,
        ),
        out,
    )

    assert result.answered and result.ok
    assert (result.cause, result.cause_code, result.by) == ("NORMAL_CLEARING", 16, "local")
    heard = read_recording(tmp_path / "heard.wav")
    assert len(heard) == result.bytes_heard
    assert len(heard) >= len(played) // 2  # the whole 1.8 s came back (the echo adds silence)
    # What was played as mono (left + half-level right, averaged), per 20 ms, against the echo.
    mono = [s * 0.75 * 32767 for s in played]
    reference = envelope(mono, SOURCE_FRAME)
    echoed = envelope(heard, FRAME)
    best, lag = max((correlation(reference, echoed[lag:]), lag) for lag in range(10))
    assert best > 0.95, (best, lag)
    # Each tone came back at its own pitch; the silences came back silent.
    segment = int(SEGMENT * 8000)
    start = lag * FRAME
    for index, (kind, freq) in enumerate(SEGMENTS):
        middle = heard[start + index * segment + 400 : start + (index + 1) * segment - 400]
        if kind == "tone":
            expected = 2 * freq * len(middle) / 8000
            assert abs(zero_crossings(middle) - expected) <= 0.05 * expected, (freq, expected)
        elif kind == "silence":
            assert max(abs(s) for s in middle) < 200
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"calling {echo_uri(node)} from sip:agera-phone@127.0.0.1:")
    assert lines[1:4] == [
        "ringing",
        lines[2],  # the RTP port varies
        f"playing {tmp_path / 'played.wav'} (1.80 s)",
    ]
    assert lines[2].startswith("answered: PCMU, RTP to 127.0.0.1:")
    assert lines[2].endswith(", DTMF payload type 101")
    assert lines[4:6] == [
        "hanging up after 2.6 s",
        lines[5],
    ]
    assert lines[5].startswith("ended: NORMAL_CLEARING (Q.850 16) by us after ")
    assert lines[6] == f"recorded {len(heard) / 8000:.2f} s to {tmp_path / 'heard.wav'}"
    assert lines[7].startswith("stats: ")
    assert result.rtp_stats["packets_in"] * FRAME == result.bytes_heard
    assert result.rtp_stats["packets_out"] > 100


async def test_dtmf_comes_back_from_the_echo(node: EdgeNode) -> None:
    out = io.StringIO()
    result = await call(
        options(echo_uri(node), digits="12#", digit_delay=0.2, hangup_after=1.5), out
    )

    assert result.ok
    assert result.digits_sent == ("1", "2", "#")
    assert [(d.digit, d.via) for d in result.digits_received] == [
        ("1", "RFC 4733"),
        ("2", "RFC 4733"),
        ("#", "RFC 4733"),
    ]
    assert all(isinstance(d, ReceivedDigit) and d.at > 0 for d in result.digits_received)
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "DTMF" in line and "payload" not in line] == [
        "sent DTMF 1 (RFC 4733)",
        "received DTMF 1 (RFC 4733)",
        "sent DTMF 2 (RFC 4733)",
        "received DTMF 2 (RFC 4733)",
        "sent DTMF # (RFC 4733)",
        "received DTMF # (RFC 4733)",
    ]
    assert result.rtp_stats["dtmf_in"] == 3


async def test_hangup_after_ends_the_call_with_normal_clearing_by_us(node: EdgeNode) -> None:
    result = await call(options(echo_uri(node), hangup_after=0.5))

    assert (result.answered, result.cause, result.by, result.status) == (
        True,
        "NORMAL_CLEARING",
        "local",
        None,
    )
    assert result.codec == "PCMU"
    assert await node.ua.wait_idle(WAIT)  # type: ignore[union-attr]  # the node saw our BYE


async def test_silence_keeps_the_stream_going_without_a_wav(node: EdgeNode) -> None:
    result = await call(options(echo_uri(node), hangup_after=1.0))

    # Without the silence there would be no packet at all (the pacer sends only what is queued).
    assert result.rtp_stats["packets_out"] > 10
    assert result.rtp_stats["packets_in"] > 10
    assert result.bytes_heard == result.rtp_stats["packets_in"] * FRAME


async def test_the_far_ends_bye_ends_the_call_with_its_reason(node: EdgeNode) -> None:
    out = io.StringIO()
    phone = asyncio.ensure_future(call(options(echo_uri(node)), out))
    await until_printed(out, "answered:")
    assert node.ua is not None
    await node.ua.hangup_all("SYSTEM_SHUTDOWN")  # BYE with Reason: Q.850;cause=41
    result = await phone

    assert (result.answered, result.by) == (True, "remote")
    assert (result.cause, result.cause_code) == ("SYSTEM_SHUTDOWN", 41)
    assert not result.ok
    assert "ended: SYSTEM_SHUTDOWN (Q.850 41) by the far end after " in out.getvalue()


async def test_stop_after_the_answer_hangs_up(node: EdgeNode) -> None:
    out = io.StringIO()
    stop = asyncio.Event()
    phone = asyncio.ensure_future(run_phone(options(echo_uri(node)), out=out, stop=stop))
    await until_printed(out, "answered:")
    stop.set()
    with anyio.fail_after(WAIT):
        result = await phone

    assert result.ok
    assert (result.cause, result.by) == ("NORMAL_CLEARING", "local")
    assert "hanging up on request" in out.getvalue()
    assert await node.ua.wait_idle(WAIT)  # type: ignore[union-attr]


async def test_a_cancelled_phone_still_hangs_up(node: EdgeNode) -> None:
    out = io.StringIO()
    phone = asyncio.ensure_future(run_phone(options(echo_uri(node)), out=out))
    await until_printed(out, "answered:")
    phone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await phone
    assert await node.ua.wait_idle(WAIT)  # type: ignore[union-attr]  # our BYE arrived


async def test_stop_while_ringing_cancels() -> None:
    async with running(node_settings(echo_ring_seconds=30.0)) as ringing_node:
        out = io.StringIO()
        stop = asyncio.Event()
        phone = asyncio.ensure_future(
            run_phone(options(echo_uri(ringing_node)), out=out, stop=stop)
        )
        await until_printed(out, "ringing")
        stop.set()
        with anyio.fail_after(WAIT):
            result = await phone
        assert await ringing_node.ua.wait_idle(WAIT)  # type: ignore[union-attr]  # CANCEL seen

    assert (result.answered, result.cause, result.by) == (False, "ORIGINATOR_CANCEL", "local")
    assert out.getvalue().splitlines()[1:] == [
        "ringing",
        "cancelling on request",
        "not answered: ORIGINATOR_CANCEL (Q.850 16) by us",
    ]


async def test_no_answer_in_time_cancels_with_no_answer() -> None:
    async with running(node_settings(echo_ring_seconds=30.0)) as ringing_node:
        result = await call(options(echo_uri(ringing_node), answer_timeout=0.5))
        assert await ringing_node.ua.wait_idle(WAIT)  # type: ignore[union-attr]

    assert (result.answered, result.cause, result.cause_code, result.by) == (
        False,
        "NO_ANSWER",
        19,
        "local",
    )


async def test_unknown_user_is_not_answered_with_no_route(node: EdgeNode) -> None:
    out = io.StringIO()
    result = await call(options(echo_uri(node, "nobody")), out)

    assert not result.answered and not result.ok
    assert (result.status, result.reason, result.by) == (404, "Not Found", "remote")
    assert (result.cause, result.cause_code) == ("NO_ROUTE_DESTINATION", 3)
    assert out.getvalue().splitlines()[1:] == [
        "not answered: NO_ROUTE_DESTINATION (Q.850 3) by the far end, SIP 404 Not Found"
    ]
    assert result.rtp_stats == {} and result.bytes_heard == 0


async def test_nobody_listening_over_tcp_fails_at_once() -> None:
    out = io.StringIO()
    result = await call(options(f"sip:echo@127.0.0.1:{free_port()}", transport="tcp"), out)

    assert (result.answered, result.status, result.by) == (False, 503, "error")
    assert result.cause == "NORMAL_TEMPORARY_FAILURE"
    assert out.getvalue().splitlines()[1] == (
        "not answered: NORMAL_TEMPORARY_FAILURE (Q.850 41) (no answer from the network), "
        "SIP 503 Service Unavailable (transport error)"
    )


async def test_call_over_tcp(node: EdgeNode) -> None:
    out = io.StringIO()
    result = await call(options(echo_uri(node), transport="tcp", hangup_after=0.5), out)

    assert result.ok
    assert out.getvalue().splitlines()[0].endswith(" over tcp")


async def test_digest_login_to_a_node_that_challenges() -> None:
    directory = StaticDirectory()
    async with running(node_settings(trust_loopback=False), directory=directory) as edge:
        directory.add(extension_auth("acc_1", "201", "carrier", "s3cret", edge.settings.sip_realm))
        good = await call(
            options(echo_uri(edge), username="carrier", password="s3cret", hangup_after=0.3)
        )
        bad = await call(options(echo_uri(edge), username="carrier", password="wrong"))

    assert good.ok
    assert (bad.answered, bad.status, bad.cause) == (False, 403, "CALL_REJECTED")


# -- options and dial strings (no sockets) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tcp", "target"),
    [
        ("sip:echo@127.0.0.1:5060", False, Target("sip:echo@127.0.0.1:5060", "127.0.0.1", 5060, "udp")),
        ("echo@127.0.0.1", False, Target("sip:echo@127.0.0.1", "127.0.0.1", 5060, "udp")),
        ("127.0.0.1:5070", True, Target("sip:127.0.0.1:5070", "127.0.0.1", 5070, "tcp")),
        ("sip:+15550100@[::1]:5080", False, Target("sip:+15550100@[::1]:5080", "::1", 5080, "udp")),
        ("sip:echo@gw.example;transport=TCP", False, Target("sip:echo@gw.example;transport=TCP", "gw.example", 5060, "tcp")),
        ("  SIP:echo@127.0.0.1  ", False, Target("sip:echo@127.0.0.1", "127.0.0.1", 5060, "udp")),
    ],
)  # fmt: skip
def test_dial_strings(text: str, tcp: bool, target: Target) -> None:
    assert parse_target(text, tcp=tcp) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sips:echo@127.0.0.1",
            "sips: needs TLS, which this phone does not speak; dial a sip: URI",
        ),
        ("tel:+15550100", "cannot dial a tel: URI; dial a sip: URI (sip:user@host:port)"),
        ("sip:echo@127.0.0.1;transport=tls", "transport=tls is not supported (udp or tcp)"),
        ("sip:echo@@127.0.0.1", "not a SIP URI: sip:echo@@127.0.0.1"),
    ],
)
def test_bad_dial_strings(text: str, message: str) -> None:
    with pytest.raises(PhoneError) as caught:
        parse_target(text)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"digits": "12x#!"}, "not DTMF keys: !x (use 0-9, *, #, A-D)"),
        ({"hangup_after": 0.0}, "--hangup-after must be more than 0 seconds"),
        ({"answer_timeout": -1.0}, "the answer timeout must be more than 0 seconds"),
        ({"digit_delay": -0.1}, "the DTMF delay cannot be negative"),
        ({"username": "carrier"}, "digest login needs both a user name and a password"),
        ({"transport": "sctp"}, "transport 'sctp' is not supported (udp or tcp)"),
        ({"local_port": 70000}, "local port 70000 is not a port number"),
        ({"local_host": "localhost"}, "local host localhost is not an IP address"),
        ({"rtp_ports": (30001, 30001)}, "RTP port range 30001-30001 must hold"),
        ({"from_user": ""}, "the From user cannot be empty"),
        ({"wav_out": Path("/nonexistent-folder/heard.wav")}, "cannot record to "),
    ],
)
def test_bad_options_are_refused_before_dialling(values: dict[str, object], message: str) -> None:
    with pytest.raises(PhoneError) as caught:
        check_options(PhoneOptions("sip:echo@127.0.0.1", **values))  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("values", "cause"),
    [
        (['Q.850;cause=3;text="NO_ROUTE_DESTINATION"'], ("NO_ROUTE_DESTINATION", 3)),
        (['Q.850 ;cause=16 ;text="Terminated"'], ("NORMAL_CLEARING", 16)),
        (['Q.850;cause=41;text="SYSTEM_SHUTDOWN"'], ("SYSTEM_SHUTDOWN", 41)),
        (['Q.850;cause=41;text="USER_BUSY"'], ("NORMAL_TEMPORARY_FAILURE", 41)),
        (['SIP;cause=200;text="Call completed elsewhere"', "q.850;cause=17"], ("USER_BUSY", 17)),
        (["Q.850;cause=99"], ("Q850_CAUSE_99", 99)),
        (["Q.850;cause=abc", "Q.850;cause=1234", "Q.850", 'Q.850;cause="16'], None),
        ([], None),
    ],
)
def test_reason_header_causes(values: list[str], cause: tuple[str, int] | None) -> None:
    assert q850_of_reason(values) == cause
