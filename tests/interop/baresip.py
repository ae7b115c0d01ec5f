"""baresip (Debian 1.0.0) as a headless softphone, driven over its ctrl_tcp module.

The config is generated here so each test gets its own ports and directories: everything bound
to 127.0.0.1 (``net_interface lo`` does not work in 1.0.0), a WAV file as the microphone
(``aufile``), and ``sndfile`` writing ``dump-<time>-dec.wav`` (what baresip heard, after its
jitter buffer) and ``-enc.wav`` (what it sent) per call.

ctrl_tcp speaks JSON in netstrings (``<len>:<json>,``): commands are the menu commands without
the slash (``dial``, ``hangup``, ``sndcode``...) and answers carry the command's token; events
(``CALL_ESTABLISHED``, ``CALL_CLOSED``, ``REGISTER_OK``...) are pushed as they happen and never
replayed, so the control connection opens as soon as the port listens, before any call, and a
reader thread keeps every event until a test asks for it.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.interop.ports import (
    HOST,
    bound_udp_ports,
    free_port,
    free_udp_range,
    listening_tcp_ports,
)
from tests.interop.process import ManagedProcess, PeerError

BARESIP_BINARY = "baresip"
START_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 5.0
EVENT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
MAX_NETSTRING = 1 << 20  # a ctrl_tcp message longer than this is a broken stream
RTP_PORTS = 40  # per phone: 4 calls (call_max_calls) with RTP+RTCP and room to spare
DEFAULT_ACCOUNT_PARAMS = ";regint=0;answermode=auto"
REGISTERED = "OK"  # reginfo's state column for a registered account
REGISTRATION_POLL_S = 0.1
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # reginfo colours its state column
MODULE_DIRS = (
    "/usr/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/lib/aarch64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
)


class ControlError(PeerError):
    """The ctrl_tcp connection broke, or a command was refused or not answered."""


@dataclass(frozen=True)
class BaresipEvent:
    type: str
    call_id: str
    param: str
    peer_uri: str
    direction: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> BaresipEvent:
        return cls(
            type=str(message.get("type", "")),
            call_id=str(message.get("id", "")),
            param=str(message.get("param", "")),
            peer_uri=str(message.get("peeruri", "")),
            direction=str(message.get("direction", "")),
            raw=message,
        )


def parse_netstrings(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete ``<len>:<json>,`` messages at the head of ``buffer`` and the unread rest."""
    messages = []
    while True:
        head, colon, rest = buffer.partition(b":")
        if not colon:
            if len(head) > len(str(MAX_NETSTRING)) or (head and not head.isdigit()):
                raise ControlError(f"ctrl_tcp: bad netstring length {head[:20]!r}")
            return messages, buffer
        if not head.isdigit() or int(head) > MAX_NETSTRING:
            raise ControlError(f"ctrl_tcp: bad netstring length {head[:20]!r}")
        size = int(head)
        if len(rest) < size + 1:
            return messages, buffer
        if rest[size : size + 1] != b",":
            raise ControlError("ctrl_tcp: netstring without its trailing comma")
        try:
            message = json.loads(rest[:size])
        except ValueError:
            raise ControlError(f"ctrl_tcp: not JSON: {rest[:size][:200]!r}") from None
        if isinstance(message, dict):
            messages.append(message)
        buffer = rest[size + 1 :]


def netstring(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return str(len(body)).encode() + b":" + body + b","


class BaresipControl:
    """A ctrl_tcp client: commands wait for their answer; events wait in a list until taken."""

    def __init__(self, port: int, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
        self._sock = socket.create_connection((HOST, port), timeout=timeout)
        self._sock.settimeout(None)
        self._lock = threading.Condition()
        self._responses: dict[str, dict[str, Any]] = {}
        self.events: list[BaresipEvent] = []  # every event, in arrival order
        self._taken: set[int] = set()
        self._token = 0
        self._closed: str | None = None
        self._reader = threading.Thread(target=self._read, name=f"baresip-ctrl-{port}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        reason = "closed by baresip"
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                messages, buffer = parse_netstrings(buffer + chunk)
                with self._lock:
                    for message in messages:
                        if message.get("response"):
                            self._responses[str(message.get("token", ""))] = message
                        elif message.get("event"):
                            self.events.append(BaresipEvent.from_message(message))
                    self._lock.notify_all()
        except (OSError, ControlError) as exc:
            reason = str(exc)
        with self._lock:
            self._closed = reason
            self._lock.notify_all()

    def command(self, command: str, params: str = "", *, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Send a menu command; return its answer's ``data`` (fails if baresip says not ok)."""
        with self._lock:
            self._token += 1
            token = str(self._token)
        message = {"command": command, "params": params, "token": token}
        try:
            self._sock.sendall(netstring(message))
        except OSError as exc:
            raise ControlError(f"ctrl_tcp send {command!r}: {exc}") from None
        answer = self._wait(
            lambda: self._responses.pop(token, None), timeout, f"answer to {command}"
        )
        if not answer.get("ok", False):
            raise ControlError(f"baresip refused {command} {params!r}: {answer.get('data')!r}")
        return str(answer.get("data", ""))

    def wait_event(
        self, event_type: str, *, timeout: float = EVENT_TIMEOUT_S, call_id: str | None = None
    ) -> BaresipEvent:
        """The oldest not yet taken event of ``event_type`` (and ``call_id``), waiting for it."""

        def find() -> BaresipEvent | None:
            for index, event in enumerate(self.events):
                if index in self._taken or event.type != event_type:
                    continue
                if call_id is not None and event.call_id != call_id:
                    continue
                self._taken.add(index)
                return event
            return None

        return self._wait(find, timeout, f"event {event_type}")

    def _wait(self, found: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                result = found()
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if self._closed is not None:
                    raise ControlError(f"ctrl_tcp closed ({self._closed}) while waiting for {what}")
                if left <= 0:
                    seen = ", ".join(e.type for e in self.events[-15:])
                    raise ControlError(f"no {what} within {timeout:.1f} s (last events: {seen})")
                self._lock.wait(left)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(COMMAND_TIMEOUT_S)


def module_dir() -> Path:
    """Where baresip's modules (g711.so...) are installed."""
    for candidate in MODULE_DIRS:
        if (Path(candidate) / "g711.so").is_file():
            return Path(candidate)
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "baresip-core"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    for line in listing.splitlines():
        if line.endswith("/g711.so"):
            return Path(line).parent
    raise PeerError("baresip modules (g711.so) not found: is the baresip package installed?")


def write_config(
    directory: Path,
    *,
    sip_port: int,
    ctrl_port: int,
    rtp_ports: tuple[int, int],
    audio_source: Path,
    recordings: Path,
    account: str,
) -> None:
    """The config and accounts files of make_baresip_conf.sh, for one phone."""
    directory.mkdir(parents=True, exist_ok=True)
    recordings.mkdir(parents=True, exist_ok=True)
    settings = [
        ("poll_method", "epoll"),
        ("sip_listen", f"{HOST}:{sip_port}"),
        ("net_interface", HOST),
        ("call_local_timeout", "120"),
        ("call_max_calls", "4"),
        ("audio_player", "alsa,null"),
        ("audio_alert", "alsa,null"),
        ("audio_source", f"aufile,{audio_source.resolve()}"),
        ("ausrc_srate", "8000"),
        ("auplay_srate", "8000"),
        ("ausrc_channels", "1"),
        ("auplay_channels", "1"),
        ("audio_buffer", "20"),
        ("rtp_ports", f"{rtp_ports[0]}-{rtp_ports[1]}"),
        ("jitter_buffer_delay", "1-10"),
        ("rtp_stats", "yes"),
        ("module_path", str(module_dir())),
        ("module", "g711.so"),
        ("module", "alsa.so"),
        ("module", "aufile.so"),
        ("module", "sndfile.so"),
        ("module", "ctrl_tcp.so"),
        ("module_tmp", "uuid.so"),
        ("module_tmp", "account.so"),
        ("module_app", "menu.so"),
        ("ctrl_tcp_listen", f"{HOST}:{ctrl_port}"),
        ("snd_path", str(recordings.resolve())),
    ]
    (directory / "config").write_text("".join(f"{k}\t\t{v}\n" for k, v in settings))
    (directory / "accounts").write_text(account + "\n")


class Baresip:
    """One baresip phone: start, control, recordings, stop.

    ``account_params`` go after the AOR, e.g. ``";auth_pass=s3cret;regint=60;answermode=auto"``
    with ``domain`` set to the registrar's ``host:port`` for a phone that registers, or
    ``";regint=0;answermode=manual"`` for one that rings until told to ``accept``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        audio_source: Path,
        user: str = "peer",
        domain: str | None = None,
        account_params: str = DEFAULT_ACCOUNT_PARAMS,
        sip_port: int | None = None,
        ctrl_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.sip_port = sip_port if sip_port is not None else free_port()
        self.ctrl_port = ctrl_port if ctrl_port is not None else free_port()
        self.rtp_ports = rtp_ports if rtp_ports is not None else free_udp_range(RTP_PORTS)
        self.user = user
        self.domain = domain or f"{HOST}:{self.sip_port}"
        self.recordings_dir = workdir / "recordings"
        self.config_dir = workdir / "config"
        write_config(
            self.config_dir,
            sip_port=self.sip_port,
            ctrl_port=self.ctrl_port,
            rtp_ports=self.rtp_ports,
            audio_source=audio_source,
            recordings=self.recordings_dir,
            account=f"<sip:{user}@{self.domain}>{account_params}",
        )
        self.process = ManagedProcess(
            f"baresip-{user}-{self.sip_port}",
            [BARESIP_BINARY, "-f", str(self.config_dir)],
            log_path=workdir / "baresip.log",
            cwd=workdir,
        )
        self._control: BaresipControl | None = None

    @property
    def address(self) -> str:
        """``host:port`` of this phone's SIP listener."""
        return f"{HOST}:{self.sip_port}"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def control(self) -> BaresipControl:
        if self._control is None:
            raise PeerError("baresip is not started")
        return self._control

    def start(self, *, timeout: float = START_TIMEOUT_S) -> Baresip:
        """Return once SIP listens and the control connection is open (before any call)."""
        self.process.start()
        self.process.wait_until(
            lambda: self.ctrl_port in listening_tcp_ports() and self.sip_port in bound_udp_ports(),
            timeout=timeout,
            what=f"listening (SIP {self.sip_port}, ctrl_tcp {self.ctrl_port})",
        )
        try:
            self._control = BaresipControl(self.ctrl_port)
        except OSError as exc:
            raise self.process.failure(f"ctrl_tcp connect failed: {exc}") from None
        return self

    def stop(self) -> int | None:
        """SIGTERM (baresip hangs up and unregisters), then kill if it lingers."""
        rc = self.process.stop()
        if self._control is not None:
            self._control.close()
        return rc

    def command(self, command: str, params: str = "") -> str:
        return self.control.command(command, params)

    def wait_event(self, event_type: str, *, timeout: float = EVENT_TIMEOUT_S) -> BaresipEvent:
        return self.control.wait_event(event_type, timeout=timeout)

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def accept(self) -> None:
        self.command("accept")

    def hangup(self) -> None:
        self.command("hangup")

    def send_digits(self, digits: str) -> None:
        """RFC 4733 events on the negotiated PT, same SSRC as the audio, ~180 ms per digit."""
        self.command("sndcode", digits)

    def transfer(self, uri: str) -> None:
        """Blind transfer of the current call: baresip sends REFER."""
        self.command("transfer", uri)

    def hold(self) -> None:
        self.command("hold")

    def resume(self) -> None:
        self.command("resume")

    def registration_state(self) -> str:
        """This phone's registration as ``reginfo`` shows it: ``OK``, ``ERR``, ``zzz`` (idle)...

        A REGISTER_OK event is no use for the first registration: baresip registers while
        starting, before the control connection exists, and never replays events.
        """
        for line in _ANSI.sub("", self.command("reginfo")).splitlines():
            fields = line.lstrip("> ").split()
            if fields and fields[0] == self.aor and len(fields) > 1:
                return fields[1]
        return ""

    def wait_registered(self, *, timeout: float = EVENT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.registration_state()) != REGISTERED:
            if time.monotonic() >= deadline:
                raise self.process.failure(f"not registered after {timeout:.1f} s ({state!r})")
            time.sleep(REGISTRATION_POLL_S)

    def recordings(self) -> list[Path]:
        """Every ``dump-*-dec.wav`` (what baresip heard), oldest first."""
        return sorted(self.recordings_dir.glob("dump-*-dec.wav"))

    def heard(self) -> Path:
        """The newest decoded-audio recording (complete once its call has closed)."""
        found = self.recordings()
        if not found:
            raise PeerError(f"baresip wrote no dump-*-dec.wav in {self.recordings_dir}")
        return found[-1]

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
