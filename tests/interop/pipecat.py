"""A real pipecat bot (pipecat_echo_bot.py) as a peer process: the far end of a media stream.

The gateway plays Twilio's part and connects to the bot as a WebSocket client, so the bot is a
server here: it runs on a free loopback port with the interpreter of ``.venv-pipecat``, a
virtualenv of its own made by ``infra/setup/pipecat-venv.sh`` (``make test`` runs it), because
pipecat and its ~600 MB of dependencies must stay out of the project's ``.venv``. A missing
virtualenv fails the test with the command to run; it never skips it, since CI must exercise a
real bot. ``AGERA_PIPECAT_VENV`` points at another virtualenv.

What the bot understood of each call is read back from its log (the ``parsed`` and ``ended``
lines documented in pipecat_echo_bot.py), which is how a test proves pipecat accepted the
``start`` message and not merely that audio came back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.interop.ports import HOST, free_port
from tests.interop.process import ManagedProcess, PeerError, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
BOT_SCRIPT = Path(__file__).resolve().with_name("pipecat_echo_bot.py")
VENV_ENV = "AGERA_PIPECAT_VENV"
DEFAULT_VENV = REPO_ROOT / ".venv-pipecat"
SETUP_SCRIPT = "infra/setup/pipecat-venv.sh"
LOG_PREFIX = "pipecat-echo-bot:"  # as in pipecat_echo_bot.py, which this module cannot import
WS_PATH = "/ws"
START_TIMEOUT_S = 60.0  # importing pipecat takes ~5 s on an idle machine, much more under load
STOP_TIMEOUT_S = 10.0
DEFAULT_OUT_10MS_CHUNKS = 4  # pipecat's default: 40 ms media messages


def pipecat_venv() -> Path:
    """The pipecat virtualenv: ``$AGERA_PIPECAT_VENV`` or ``.venv-pipecat`` in the repository."""
    configured = os.environ.get(VENV_ENV)
    return Path(configured) if configured else DEFAULT_VENV


@dataclass(frozen=True)
class ParsedCall:
    """What pipecat's ``parse_telephony_websocket`` returned for one connection."""

    transport: str  # "twilio" when the start message was recognised
    stream_id: str | None
    call_id: str | None
    from_number: str | None
    to_number: str | None
    body: dict[str, Any]  # start.customParameters


def _events(text: str, event: str) -> list[dict[str, Any]]:
    """The JSON detail of every ``LOG_PREFIX event {json}`` line; other lines are skipped."""
    marker = f"{LOG_PREFIX} {event} "
    found = []
    for line in text.splitlines():
        if not line.startswith(marker):
            continue
        try:
            detail = json.loads(line[len(marker) :])
        except json.JSONDecodeError:
            continue
        if isinstance(detail, dict):
            found.append(detail)
    return found


def parse_calls(text: str) -> list[ParsedCall]:
    """The ``parsed`` lines of a bot log, in order."""
    calls = []
    for detail in _events(text, "parsed"):
        body = detail.get("body")
        calls.append(
            ParsedCall(
                transport=str(detail.get("transport")),
                stream_id=detail.get("stream_id"),
                call_id=detail.get("call_id"),
                from_number=detail.get("from_number"),
                to_number=detail.get("to_number"),
                body=body if isinstance(body, dict) else {},
            )
        )
    return calls


def ended_calls(text: str) -> list[str | None]:
    """The call ids of the ``ended`` lines of a bot log (a call whose pipeline finished)."""
    return [detail.get("call_id") for detail in _events(text, "ended")]


class PipecatBot:
    """One pipecat echo bot process on a free loopback port; ``start`` waits until it listens."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        out_10ms_chunks: int = DEFAULT_OUT_10MS_CHUNKS,
        venv: Path | None = None,
    ) -> None:
        self.port = port if port is not None else free_port(tcp=True)
        self.venv = venv if venv is not None else pipecat_venv()
        self.python = self.venv / "bin" / "python"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.python),
            str(BOT_SCRIPT),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--out-10ms-chunks",
            str(out_10ms_chunks),
        ]
        self.process = ManagedProcess(
            f"pipecat-{self.port}",
            argv,
            log_path=workdir / "pipecat.log",
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}{WS_PATH}"

    def start(self, *, timeout: float = START_TIMEOUT_S) -> PipecatBot:
        if not self.python.is_file():
            raise PeerError(
                f"pipecat virtualenv not found ({self.python} is missing): run `make test`, "
                f"which installs it, or `bash {SETUP_SCRIPT}` (${VENV_ENV} overrides the place)"
            )
        ready = f"{LOG_PREFIX} listening {self.url}"
        self.process.start()
        self.process.wait_until(
            lambda: ready in self.log_text(), timeout=timeout, what=f"logging {ready!r}"
        )
        return self

    def log_text(self) -> str:
        try:
            return self.process.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def parsed_calls(self) -> list[ParsedCall]:
        """Every handshake pipecat has parsed so far (the line is written before any echo)."""
        return parse_calls(self.log_text())

    def ended_calls(self) -> list[str | None]:
        return ended_calls(self.log_text())

    def wait_ended(self, call_id: str, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """Block until the bot logs that the pipeline of ``call_id`` has finished."""
        self.process.wait_until(
            lambda: call_id in self.ended_calls(),
            timeout=timeout,
            what=f"ending call {call_id!r}",
        )

    def report(self) -> str:
        """The tail of the bot's log, for a failed test's output."""
        return f"----- {self.process.name}: {self.process.log_path} -----\n" + (
            tail(self.process.log_path) or "(empty log)"
        )

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (uvicorn shuts down), then SIGKILL of its process group after ``timeout``."""
        return self.process.stop(timeout)

    def __enter__(self) -> PipecatBot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
