"""Loopback ports for peer processes, picked at run time and read back from /proc.

Ports come from below the kernel's ephemeral range (32768-60999 on Linux), so a port handed to a
peer is not also handed to some process's outgoing socket a moment later. Another session on the
same machine may hold any fixed port (5080 was seen taken), hence nothing here is well known.

Whether a peer has bound its port is read from /proc/net/{udp,tcp}: probing by binding the port
ourselves would race with the peer and could make its own bind fail.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
PORT_LOW = 20000  # first port we hand out
PORT_HIGH = 32000  # one past the last, below /proc/sys/net/ipv4/ip_local_port_range
MAX_PICK_ATTEMPTS = 500
TCP_LISTEN_STATE = "0A"  # include/net/tcp_states.h TCP_LISTEN, as /proc/net/tcp prints it

_handed_out: set[int] = set()  # never hand the same port out twice in one process
_random = random.Random()


def release_all() -> None:
    """Forget the ports handed out so far (after a test, its peers are gone and the ports free).

    Without this the random blocks of a long suite fragment the 12,000 ports until no block of
    200 is left, which the bridge tests reached."""
    _handed_out.clear()


class PortError(RuntimeError):
    """No free port (or range) could be found in the bounded number of attempts."""


def _can_bind(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _all_free(first: int, count: int, *, tcp: bool) -> bool:
    taken = bound_udp_ports() | (listening_tcp_ports() if tcp else set())
    for port in range(first, first + count):
        if port in _handed_out or port in taken or not _can_bind(port, socket.SOCK_DGRAM):
            return False
        if tcp and not _can_bind(port, socket.SOCK_STREAM):
            return False
    return True


def free_port(*, span: int = 1, even: bool = False, tcp: bool = True) -> int:
    """First of ``span`` consecutive free ports on 127.0.0.1 (UDP, and TCP when ``tcp``).

    ``span`` covers peers that take neighbours: sipp's ``-rtp_echo`` also binds ``-mp`` + 2 for
    video, and RTP peers keep RTCP on the next port (RFC 3550 §11).
    """
    for _ in range(MAX_PICK_ATTEMPTS):
        first = _random.randrange(PORT_LOW, PORT_HIGH - span)
        if even:
            first -= first % 2
        if _all_free(first, span, tcp=tcp):
            _handed_out.update(range(first, first + span))
            return first
    raise PortError(f"no {span} free consecutive port(s) in {PORT_LOW}-{PORT_HIGH}")


def free_udp_range(size: int) -> tuple[int, int]:
    """An even-aligned block of ``size`` UDP ports that nothing has bound: (first, last).

    For an RTP port range setting. Only /proc is read (binding thousands of ports one by one
    would be slow), and the block is reserved against later picks in this process.
    """
    for _ in range(MAX_PICK_ATTEMPTS):
        first = _random.randrange(PORT_LOW, PORT_HIGH - size)
        first -= first % 2
        block = set(range(first, first + size))
        if block & (bound_udp_ports() | _handed_out):
            continue
        _handed_out.update(block)
        return first, first + size - 1
    raise PortError(f"no free block of {size} UDP ports in {PORT_LOW}-{PORT_HIGH}")


def _local_ports(table: str, *, state: str | None = None) -> set[int]:
    ports: set[int] = set()
    for name in (table, table + "6"):
        path = Path("/proc/net") / name
        try:
            lines = path.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or (state is not None and fields[3] != state):
                continue
            _, _, port_hex = fields[1].rpartition(":")
            try:
                ports.add(int(port_hex, 16))
            except ValueError:
                continue
    return ports


def bound_udp_ports() -> set[int]:
    """Every local UDP port some socket on this machine has bound (IPv4 and IPv6)."""
    return _local_ports("udp")


def listening_tcp_ports() -> set[int]:
    """Every local TCP port in the LISTEN state (IPv4 and IPv6)."""
    return _local_ports("tcp", state=TCP_LISTEN_STATE)
