"""kamailio (Debian 5.6) as the registrar and Record-Routing proxy in front of a test peer.

The shared ``kamailio-registrar.cfg`` listens on 127.0.0.1:25060 and puts its binrpc control
socket in the working directory. Each run gets a copy with a free port and its own socket path;
a substitution that no longer matches the shared file fails loudly rather than starting kamailio
on the fixed port. Registrations are read back with ``kamcmd ul.dump`` over that socket.

What the config does: REGISTER must pass digest (realm ``test.local``, any user, password
``s3cret``); other requests are proxied to the registered contact (404 otherwise) with
Record-Route, so in-dialog requests go through the proxy as they do through a carrier;
``challenge_invite`` turns on 407 for INVITEs too.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.interop.ports import HOST, bound_udp_ports, free_port
from tests.interop.process import ManagedProcess, PeerError
from tests.interop.sipp import default_peers_dir

KAMAILIO_BINARY = "kamailio"
KAMCMD_BINARY = "kamcmd"
CONFIG_NAME = "kamailio-registrar.cfg"
CONFIG_PORT = "25060"  # the port written in the shared config
CONFIG_CTL = "unix:kamailio_test_ctl"
CHALLENGE_OFF = "#!define CHALLENGE_INVITE 0"
CHALLENGE_ON = "#!define CHALLENGE_INVITE 1"
REALM = "test.local"
PASSWORD = "s3cret"
START_TIMEOUT_S = 15.0
TOOL_TIMEOUT_S = 10.0
SHARED_MEMORY_MB = "64"
PRIVATE_MEMORY_MB = "8"
POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Registration:
    aor: str  # the AoR as usrloc keys it (the user part, with use_domain off)
    contact: str  # the registered Contact URI
    expires: int | None  # seconds left


def parse_ul_dump(text: str) -> list[Registration]:
    """Registrations from ``kamcmd ul.dump`` output (indented ``Name: value`` lines)."""
    found = []
    aor: str | None = None
    contact: str | None = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "AoR":
            aor, contact = value, None
        elif key == "Address" and aor is not None:
            contact = value
        elif key == "Expires" and aor is not None and contact is not None:
            expires = int(value) if value.lstrip("-").isdigit() else None
            found.append(Registration(aor, contact, expires))
            contact = None
    return found


class Kamailio:
    """One kamailio process with a copy of a shared config on a free port."""

    def __init__(
        self,
        workdir: Path,
        *,
        config_name: str = CONFIG_NAME,
        peers_dir: Path | None = None,
        port: int | None = None,
        challenge_invite: bool = False,
    ) -> None:
        source = (peers_dir or default_peers_dir()) / "kamailio" / config_name
        if not source.is_file():
            raise PeerError(f"kamailio config {source} not found (set AGERA_SIP_PEERS_DIR)")
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.ctl_socket = workdir / "kamailio.ctl"
        text = source.read_text()
        for needle in (CONFIG_PORT, CONFIG_CTL) + ((CHALLENGE_OFF,) if challenge_invite else ()):
            if needle not in text:
                raise PeerError(f"{source}: expected {needle!r} to substitute; has it changed?")
        text = text.replace(CONFIG_PORT, str(self.port))
        text = text.replace(CONFIG_CTL, f"unix:{self.ctl_socket}")
        if challenge_invite:
            text = text.replace(CHALLENGE_OFF, CHALLENGE_ON)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / config_name
        self.config.write_text(text)
        memory = ["-m", SHARED_MEMORY_MB, "-M", PRIVATE_MEMORY_MB]
        dirs = ["-Y", str(workdir), "-w", str(workdir)]
        self.process = ManagedProcess(
            f"kamailio-{self.port}",
            [KAMAILIO_BINARY, "-f", str(self.config), "-DD", "-E", *memory, *dirs],
            log_path=workdir / "kamailio.log",
            cwd=workdir,
        )

    @property
    def address(self) -> str:
        """``host:port`` to register with and to send calls through."""
        return f"{HOST}:{self.port}"

    def check_config(self) -> None:
        """``kamailio -c``: a config error is reported here, with kamailio's own words."""
        done = self._tool([KAMAILIO_BINARY, "-c", "-f", str(self.config)])
        if done.returncode != 0:
            raise PeerError(f"kamailio -c {self.config}:\n{done.stdout[-2000:]}")

    def start(self, *, timeout: float = START_TIMEOUT_S) -> Kamailio:
        """Return once SIP is bound and the control socket answers."""
        self.check_config()
        self.process.start()
        self.process.wait_until(
            lambda: self.port in bound_udp_ports() and self.ctl_socket.exists(),
            timeout=timeout,
            what=f"listening on UDP {self.port} with {self.ctl_socket}",
        )
        return self

    def stop(self) -> int | None:
        return self.process.stop()

    def kamcmd(self, *command: str) -> str:
        done = self._tool([KAMCMD_BINARY, "-s", f"unix:{self.ctl_socket}", *command])
        if done.returncode != 0:
            raise PeerError(f"kamcmd {' '.join(command)}: rc {done.returncode}: {done.stdout}")
        return done.stdout

    def registrations(self) -> list[Registration]:
        return parse_ul_dump(self.kamcmd("ul.dump"))

    def wait_registered(self, user: str, *, timeout: float = TOOL_TIMEOUT_S) -> Registration:
        """The registration of ``user`` (AoR ``user`` or ``user@...``), waiting for it."""
        pattern = re.compile(rf"^{re.escape(user)}(@|$)")
        deadline = time.monotonic() + timeout
        while True:
            for registration in self.registrations():
                if pattern.match(registration.aor):
                    return registration
            if time.monotonic() >= deadline:
                raise self.process.failure(f"no registration for {user!r} after {timeout:.1f} s")
            time.sleep(POLL_INTERVAL_S)

    @staticmethod
    def _tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=TOOL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerError(f"{argv[0]}: {exc}") from None

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
