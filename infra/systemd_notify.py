"""systemd's notify protocol for ``agera edge`` under ``Type=notify`` (infra/edge/agera-edge.service).

``READY=1`` once the node serves, ``WATCHDOG=1`` at half the unit's ``WatchdogSec`` (systemd
passes it as ``WATCHDOG_USEC``), ``STOPPING=1`` when a drain begins. Why hand-written: the
protocol is one datagram on the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a documented,
stable interface, sd_notify(3)), and the packages that wrap it add nothing but a dependency.
Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.

With several media workers the supervisor is the unit's main process and the one that notifies.
Each worker tells it through a pipe (``AGERA_PULSE_FD``): ``R`` once serving, then ``W`` every
`PULSE_SECONDS` from its event loop. The supervisor says READY when every worker did, and pings
the watchdog only while every worker's loop still pulses, so one hung worker gets the unit
restarted although its siblings are fine.
"""

from __future__ import annotations

import os
import socket

__all__ = ["PULSE_ENV", "PULSE_SECONDS", "notify", "watchdog_seconds"]

PULSE_ENV = "AGERA_PULSE_FD"
PULSE_SECONDS = 1.0


def notify(message: str) -> bool:
    """Send ``message`` (``READY=1`` ...) to systemd; False when not under systemd or it failed."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_seconds() -> float | None:
    """The unit's watchdog timeout for this process, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
