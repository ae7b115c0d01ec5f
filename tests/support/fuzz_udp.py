"""Send seeded SIP, RTP and RTCP fuzz datagrams at a node on loopback, paced and bounded.

Run as ``python -m tests.support.fuzz_udp PLAN_JSON``; it prints one JSON `UdpResult` line.
Why a process of its own: generating and sending thousands of datagrams a second is CPU work
that must not share an event loop (or the GIL) with the bots and callers whose timing the test
judges the node by.

What goes where: SIP to the node's SIP port, mostly from 127.0.0.1 and, when the plan names
them, a share from other loopback addresses (127.0.0.x, untrusted by the node under test, so
its rate limiter and guard see fuzz too); RTP and RTCP half to the live calls' media ports and
half to random ports of the node's RTP range. Every input is rebuilt from (seed, kind, index):
``replay`` sends chosen inputs again, one at a time, to find which one a node failed on. With
``log_path`` each send is recorded as (wall time, kind, index, SIP socket) for that search.
"""

from __future__ import annotations

import array
import json
import pickle
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.support.fuzz_media import rtcp_datagram, rtp_datagram
from tests.support.fuzz_mutate import input_rng
from tests.support.fuzz_sip import SipAim, sip_datagram

__all__ = ["KINDS", "SendLog", "UdpPlan", "UdpResult", "UdpSender", "main"]

KINDS = ("sip", "rtp", "rtcp")
TICK_S = 0.005  # sends are paced in batches this far apart
DRAIN_PER_TICK = 512  # answers read (and counted) per socket per tick, at most
_TARGET_BIT = 1 << 31  # input_rng(..., index | bit): the target choice, apart from the bytes


@dataclass
class UdpPlan:
    """What to send; counts per kind are upper bounds, ``seconds`` is a hard bound."""

    seed: int
    host: str
    sip_port: int
    rtp_range: tuple[int, int]
    live_ports: list[int] = field(default_factory=list)
    protected_ports: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"sip": 0, "rtp": 0, "rtcp": 0})
    seconds: float = 30.0
    rate: float = 4000.0  # datagrams a second, all kinds together
    untrusted_sources: list[str] = field(default_factory=list)
    untrusted_share: float = 0.0  # of SIP datagrams
    log_path: str | None = None


@dataclass
class UdpResult:
    sent: dict[str, int]
    send_errors: int
    answers: int  # datagrams the node sent back to our SIP sockets
    elapsed: float
    sip_sockets: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(self.sent.values())


@dataclass
class SendLog:
    """One row per datagram sent, in order; compact arrays, since a bench run sends millions."""

    times: array.array[float] = field(default_factory=lambda: array.array("d"))
    kinds: array.array[int] = field(default_factory=lambda: array.array("B"))
    indices: array.array[int] = field(default_factory=lambda: array.array("I"))
    sockets: array.array[int] = field(default_factory=lambda: array.array("B"))

    def add(self, kind: int, index: int, sock: int) -> None:
        self.times.append(time.time())
        self.kinds.append(kind)
        self.indices.append(index)
        self.sockets.append(sock)

    def between(self, start: float, end: float) -> list[tuple[str, int, int]]:
        """(kind, index, socket) of every send in [start, end] (wall clock)."""
        return [
            (KINDS[self.kinds[i]], self.indices[i], self.sockets[i])
            for i, at in enumerate(self.times)
            if start <= at <= end
        ]

    def save(self, path: Path) -> None:
        path.write_bytes(pickle.dumps(self))

    @staticmethod
    def load(path: Path) -> SendLog:
        log = pickle.loads(path.read_bytes())
        assert isinstance(log, SendLog)
        return log


class UdpSender:
    """The sockets and the input stream of one plan."""

    def __init__(self, plan: UdpPlan) -> None:
        self.plan = plan
        self.sip_sockets = [_bound(plan.host)]
        self.sip_sockets += [_bound(source) for source in plan.untrusted_sources]
        self.media_socket = _bound(plan.host)
        protected = frozenset(plan.protected_ports)
        self.aims = [
            SipAim(plan.host, plan.sip_port, s.getsockname()[1], protected)
            for s in self.sip_sockets
        ]
        self.answers = 0
        self.send_errors = 0

    def datagram(self, kind: str, index: int, sock: int | None = None) -> tuple[bytes, int, int]:
        """(bytes, socket number, destination port) of input ``index`` of ``kind``."""
        plan = self.plan
        pick = input_rng(plan.seed, kind, index | _TARGET_BIT)
        if kind == "sip":
            if sock is None:
                untrusted = len(self.sip_sockets) > 1 and pick.random() < plan.untrusted_share
                sock = pick.randrange(1, len(self.sip_sockets)) if untrusted else 0
            return sip_datagram(plan.seed, index, self.aims[sock]), sock, plan.sip_port
        low, high = plan.rtp_range
        live = plan.live_ports
        if kind == "rtp":
            data = rtp_datagram(plan.seed, index)
            ports = [p for p in live if p % 2 == 0] or live
        else:
            data = rtcp_datagram(plan.seed, index)
            odd = [p for p in live if p % 2 == 1]
            ports = odd if odd and pick.random() < 0.8 else live
        port = pick.choice(ports) if ports and pick.random() < 0.5 else pick.randint(low, high)
        return data, -1, port

    def send(self, kind: str, index: int, sock: int | None = None) -> int:
        data, chosen, port = self.datagram(kind, index, sock)
        out = self.sip_sockets[chosen] if chosen >= 0 else self.media_socket
        try:
            out.sendto(data, (self.plan.host, port))
        except OSError:  # EMSGSIZE, ENOBUFS, ICMP errors reported late
            self.send_errors += 1
        return chosen

    def drain(self) -> None:
        for sock in (*self.sip_sockets, self.media_socket):
            for _ in range(DRAIN_PER_TICK):
                try:
                    sock.recv(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ECONNREFUSED from an earlier send: not an answer
                    continue
                self.answers += 1

    def run(self, log: SendLog | None = None) -> UdpResult:
        plan = self.plan
        left = {kind: plan.counts.get(kind, 0) for kind in KINDS}
        sent = dict.fromkeys(KINDS, 0)
        schedule = input_rng(plan.seed, "sip", _TARGET_BIT - 1)
        started = time.monotonic()
        deadline = started + plan.seconds
        per_tick = max(1, round(plan.rate * TICK_S))
        due = started
        while any(left.values()) and time.monotonic() < deadline:
            for _ in range(per_tick):
                total = sum(left.values())
                if not total:
                    break
                pick = schedule.randrange(total)
                for kind in KINDS:
                    if pick < left[kind]:
                        break
                    pick -= left[kind]
                index = sent[kind]
                chosen = self.send(kind, index)
                if log is not None:
                    log.add(KINDS.index(kind), index, max(chosen, 0))
                sent[kind] += 1
                left[kind] -= 1
            self.drain()
            due += TICK_S
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            elif pause < -1.0:
                due = time.monotonic()  # behind by a second: stop trying to catch up
        self.drain()
        return UdpResult(
            sent=sent,
            send_errors=self.send_errors,
            answers=self.answers,
            elapsed=time.monotonic() - started,
            sip_sockets=[s.getsockname()[:2] for s in self.sip_sockets],
        )

    def replay(self, inputs: Iterable[tuple[str, int, int]], gap: float) -> None:
        """Send each (kind, index, socket) again, ``gap`` seconds apart."""
        for kind, index, sock in inputs:
            self.send(kind, index, sock if kind == "sip" else None)
            time.sleep(gap)
            self.drain()

    def close(self) -> None:
        for sock in (*self.sip_sockets, self.media_socket):
            sock.close()


def _bound(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def main(argv: list[str]) -> int:
    raw = json.loads(argv[1])
    raw["rtp_range"] = tuple(raw["rtp_range"])
    plan = UdpPlan(**raw)
    sender = UdpSender(plan)
    log = SendLog() if plan.log_path else None
    try:
        result = sender.run(log)
    finally:
        sender.close()
    if log is not None and plan.log_path:
        log.save(Path(plan.log_path))
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
