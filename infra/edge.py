"""``agera edge``: run an edge media node in the foreground until SIGTERM or Ctrl-C.

Settings come from ``AGERA_*`` variables (``agera settings`` lists them). A bad setting or a
busy port fails in one line with exit code 2; a stop signal drains live calls first (up to
``AGERA_DRAIN_SECONDS``) and exits 0.

With ``AGERA_MEDIA_WORKERS=N`` (one per core, docs/performance.md) this process supervises N
worker processes. Each binds the SIP port with SO_REUSEPORT and takes its own slice of the RTP
range; the kernel hands a datagram to the worker its source hashes to, which passes it on to
the worker owning its Call-ID (edge_media/sip/worker_spread.py), so the calls of one carrier
spread over every worker. A stop signal is passed on to all of them. The supervisor resolves the node's id once
(edge_media/control/identity.py) and each worker is ``<node id>-w<index>``.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time

from edge_media.loop import run
from edge_media.node_capacity import worker_share
from infra.systemd_notify import PULSE_ENV, PULSE_SECONDS, notify, watchdog_seconds
from shared.settings import Settings, SettingsError

logger = logging.getLogger("agera.edge")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


async def serve(settings: Settings, *, lifecycle: bool = True) -> int:
    """Run one node until a stop: SIGTERM, SIGINT, or (``lifecycle``) a scale-in."""
    from edge_media.control.lifecycle import LifecycleWatcher
    from edge_media.node import EdgeNode

    node = EdgeNode(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # A worker starts with SIGTERM blocked (see `supervise`); one sent meanwhile lands here.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        await node.start()
    except OSError as error:
        print(
            f"agera edge: cannot listen on {settings.sip_host}:{settings.sip_port}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        await node.stop(drain_seconds=0)
        return 2
    # A scale-in stops the node exactly as SIGTERM does: the watcher calls the same stop.set.
    watcher = (
        LifecycleWatcher.from_settings(settings, lambda: loop.call_soon_threadsafe(stop.set))
        if lifecycle
        else None
    )
    if watcher is not None:
        watcher.start()
    pulse = asyncio.ensure_future(_pulse())
    # What start-up built (modules, the SDK's service models, settings) lives as long as the
    # process; frozen, it is never walked again, so a full collection during calls looks at
    # per-call objects only: ~25 ms less in the RTP ticks it delays.
    gc.collect()
    gc.freeze()
    await stop.wait()
    logger.info("stop requested")
    notify("STOPPING=1")
    await node.stop()
    pulse.cancel()
    if watcher is not None:
        await asyncio.to_thread(watcher.finish)
    return 0


async def _pulse() -> None:
    """Tell whoever watches this process that it serves and its loop turns: the supervisor
    through the pulse pipe, else systemd (READY, then the watchdog) (infra/systemd_notify.py)."""
    fd_text = os.environ.get(PULSE_ENV, "")
    if fd_text.isdigit():
        fd = int(fd_text)
        beat = b"R"
        while True:
            try:
                os.write(fd, beat)
            except OSError:  # the supervisor is gone; it will not read again
                return
            beat = b"W"
            await asyncio.sleep(PULSE_SECONDS)
    notify("READY=1")
    watchdog = watchdog_seconds()
    while watchdog is not None:
        notify("WATCHDOG=1")
        await asyncio.sleep(watchdog / 2)


WORKER_ENV = "AGERA_WORKER_INDEX"
SUPERVISOR_GRACE = 10.0  # seconds on top of the drain time before workers are killed
# However short the drain, a worker's stop waits out the shared originate queue's long poll (up
# to 20 s, then 5 s of margin and 5 of grace: edge_media/control/consumer.py) before it
# deregisters; killing it sooner leaves its registry item to the TTL and exits 1.
WORKER_STOP_FLOOR = 30.0


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s share: an even-aligned slice of the RTP range, its part of the node's
    ``max_calls``, its own node id."""
    count = settings.media_workers
    span = (settings.rtp_port_max - settings.rtp_port_min + 1) // count
    span -= span % 2
    low = settings.rtp_port_min + index * span
    high = settings.rtp_port_max if index == count - 1 else low + span - 1
    node_id = f"{settings.node_id}-w{index}" if settings.node_id else ""
    return settings.model_copy(
        update={
            "rtp_port_min": low,
            "rtp_port_max": high,
            "node_id": node_id,
            "worker_index": index,
            "max_calls": worker_share(settings.max_calls, count, index),
        }
    )


def _block_sigterm() -> None:
    """In the forked worker before exec: the mask survives exec, so a stop signal that comes
    before the worker's handler exists waits for it instead of killing the worker."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def worker_environment(
    settings: Settings, overrides: dict[str, object], environ: dict[str, str] | None = None
) -> dict[str, str]:
    """The workers' environment: ours, the overrides, and the node's identity resolved once here
    (one IMDS lookup, one state file), to which each worker appends -w<index> (worker_settings),
    so worker ids are distinct and as stable as the node's."""
    from edge_media.control.identity import resolve_identity

    base = dict(os.environ if environ is None else environ)
    env = {**base, **{f"AGERA_{k.upper()}": str(v) for k, v in overrides.items()}}
    control = bool(settings.originate_queue_url and settings.events_queue_url)
    env["AGERA_NODE_ID"] = resolve_identity(settings, control=control).node_id
    env["AGERA_NODE_ID_FROM_IMDS"] = "false"
    return env


def supervise(settings: Settings, overrides: dict[str, object]) -> int:
    """Start the workers, pass stop signals (and a scale-in) on, speak for them to systemd, and
    exit 0 only if every worker did."""
    from edge_media.control.lifecycle import LifecycleWatcher

    if settings.sip_port == 0:
        print("agera edge: several workers need a fixed AGERA_SIP_PORT", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "infra.cli", "edge"]
    env = worker_environment(settings, overrides)
    env.pop("NOTIFY_SOCKET", None)  # the supervisor speaks for the workers
    workers: list[subprocess.Popen[bytes]] = []
    pulses = WorkerPulses()
    for index in range(settings.media_workers):
        write_end = pulses.add()
        workers.append(
            subprocess.Popen(  # noqa: S603 - our own argv
                argv,
                env={**env, WORKER_ENV: str(index), PULSE_ENV: str(write_end)},
                preexec_fn=_block_sigterm,
                pass_fds=(write_end,),
            )
        )
        os.close(write_end)
    stopping = False
    signalled: set[int] = set()

    def forward(signum: int, frame: object) -> None:
        # Once per worker: a second SIGTERM could land after the worker's loop let go of its
        # handler and kill it mid-exit.
        nonlocal stopping
        if not stopping:
            notify("STOPPING=1")
        stopping = True
        for worker in workers:
            if worker.poll() is None and worker.pid not in signalled:
                signalled.add(worker.pid)
                worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A scale-in stops the workers exactly as SIGTERM does (the watcher calls `forward`).
    watcher = LifecycleWatcher.from_settings(settings, lambda: forward(signal.SIGTERM, None))
    if watcher is not None:
        watcher.start()
    watchdog = watchdog_seconds()
    ready = False
    last_ping = 0.0

    def beat() -> None:
        """READY once every worker serves; WATCHDOG while every live worker's loop turns."""
        nonlocal ready, last_ping
        now = time.monotonic()
        pulses.read(now)
        if not ready and pulses.all_ready():
            notify("READY=1")
            ready = True
        if watchdog is not None and ready and now - last_ping >= watchdog / 2:
            alive = [worker.poll() is None for worker in workers]
            if pulses.all_alive(now, watchdog, alive):
                notify("WATCHDOG=1")
                last_ping = now
            else:
                logger.error("a worker stopped pulsing: the watchdog is left to expire")

    while not stopping and all(worker.poll() is None for worker in workers):
        time.sleep(0.2)
        beat()
    forward(signal.SIGTERM, None)  # one worker died on its own: stop the others too
    # Workers drain for up to drain_seconds; the watchdog is fed meanwhile (a drain outlasts
    # WatchdogSec), as long as the workers still draining keep pulsing.
    deadline = time.monotonic() + max(settings.drain_seconds, WORKER_STOP_FLOOR) + SUPERVISOR_GRACE
    while time.monotonic() < deadline and any(worker.poll() is None for worker in workers):
        time.sleep(0.2)
        beat()
    codes = []
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        codes.append(worker.wait())
    pulses.close()
    if watcher is not None:
        watcher.finish()
    return 0 if all(code == 0 for code in codes) else 1


class WorkerPulses:
    """The read ends of the workers' pulse pipes (infra/systemd_notify.py): who is serving, and
    when each worker's loop last turned."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._ready: list[bool] = []
        self._seen: list[float] = []

    def add(self) -> int:
        """A pipe for the next worker; returns the end the worker writes."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        self._fds.append(read_end)
        self._ready.append(False)
        self._seen.append(time.monotonic())
        return write_end

    def read(self, now: float) -> None:
        for index, fd in enumerate(self._fds):
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if data:
                self._seen[index] = now
                self._ready[index] = self._ready[index] or b"R" in data

    def all_ready(self) -> bool:
        return all(self._ready)

    def all_alive(self, now: float, within: float, running: list[bool]) -> bool:
        """Every worker still running has pulsed within ``within`` seconds (one that exited is
        judged by its exit code, not here)."""
        return all(now - seen < within for seen, up in zip(self._seen, running, strict=True) if up)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def main(overrides: dict[str, object] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    overrides = overrides or {}
    try:
        settings = Settings.load(**overrides)
    except SettingsError as error:
        print(f"agera edge: {error}", file=sys.stderr)
        return 2
    index = os.environ.get(WORKER_ENV)
    if index is None and settings.public_address_from_imds and not settings.public_address:
        address = public_address(settings)
        if address is None:
            return 2
        overrides = {**overrides, "public_address": address}  # the workers' too
        settings = settings.model_copy(update={"public_address": address})
    if settings.media_workers > 1 and index is None:
        return supervise(settings, overrides)
    if index is not None:
        settings = worker_settings(settings, int(index))
    return run(serve(settings, lifecycle=index is None))


def public_address(settings: Settings) -> str | None:
    """``public-ipv4`` from IMDSv2, read once at start: the boot script claims the instance's
    Elastic IP before the node starts (infra/edge-fleet.yaml), so this is the address carriers
    allowlist. None (with the reason printed) when IMDS has none: a node that would put a private
    address in its SDP must not take calls."""
    from edge_media.control.imds import ImdsError, imds_get

    try:
        address = imds_get(settings.imds_base_url, "public-ipv4")
        ipaddress.ip_address(address)
    except (ImdsError, ValueError) as error:
        print(f"agera edge: no public address from instance metadata: {error}", file=sys.stderr)
        return None
    logger.info("public address %s (instance metadata)", address)
    return address
