"""``agera edge``: run one edge media node in the foreground until SIGTERM or Ctrl-C.

Settings come from ``AGERA_*`` variables (``agera settings`` lists them). A bad setting or a
busy port fails in one line with exit code 2; a stop signal drains live calls first (up to
``AGERA_DRAIN_SECONDS``) and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from edge_media.loop import run
from shared.settings import Settings, SettingsError

logger = logging.getLogger("agera.edge")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


async def serve(settings: Settings) -> int:
    from edge_media.node import EdgeNode

    node = EdgeNode(settings)
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stop requested")
    await node.stop()
    return 0


def main(overrides: dict[str, object] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        settings = Settings.load(**(overrides or {}))
    except SettingsError as error:
        print(f"agera edge: {error}", file=sys.stderr)
        return 2
    return run(serve(settings))
