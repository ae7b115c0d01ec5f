"""A minimal Twilio-Media-Streams bot: every caller hears themselves back.

Start it, then route a number to it (``ws://<this host>:8765/``):

    python examples/echo_bot.py --port 8765

The gateway connects to the bot (the bot is the WebSocket *server*) and speaks Twilio's
Media Streams protocol: ``connected``, ``start`` (call details in ``start.customParameters``),
then ``media`` with base64 μ-law audio, ``dtmf`` for key presses, ``mark`` echoes, and ``stop``.
This bot sends each caller audio payload straight back, and after every second of echoed audio
a ``mark``: the gateway echoes a mark once the caller has *heard* the audio before it, which is
how real bots know what was actually played. Needs only ``pip install websockets``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import signal
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ULAW_BYTES_PER_SECOND = 8000  # 8 kHz, one byte per sample

log = logging.getLogger("echo_bot")


class EchoCall:
    """One gateway connection (one phone call)."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.stream_sid: str | None = None
        self.call = "?"
        self.echoed_bytes = 0
        self.marks_sent = 0

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    await self.handle(message)
        except ConnectionClosed:
            pass
        log.info("[%s] connection closed (code %s)", self.call, self.ws.close_code)

    async def handle(self, text: str) -> None:
        try:
            message: Any = json.loads(text)
        except ValueError:
            log.warning("[%s] not JSON: %.80s", self.call, text)
            return
        if not isinstance(message, dict):
            return
        event = message.get("event")
        if event == "connected":
            log.info("connected: protocol %s %s", message.get("protocol"), message.get("version"))
        elif event == "start":
            start = message.get("start", {})
            self.stream_sid = start.get("streamSid")  # the nested copy, as real bots read it
            params = start.get("customParameters", {})
            self.call = params.get("call_uuid", "?")
            log.info(
                "[%s] start: from %s to %s (%s)",
                self.call,
                params.get("from_number"),
                params.get("to_number"),
                params.get("direction"),
            )
            if params.get("resumed_from"):  # the call survived our crash: pick up where it was
                log.info(
                    "[%s] resumed from %s after %s ms",
                    self.call,
                    params["resumed_from"],
                    params.get("resume_gap_ms"),
                )
        elif event == "media":
            await self.echo(message.get("media", {}).get("payload", ""))
        elif event == "mark":
            log.info("[%s] mark %s played", self.call, message.get("mark", {}).get("name"))
        elif event == "dtmf":
            log.info("[%s] dtmf %s", self.call, message.get("dtmf", {}).get("digit"))
        elif event == "stop":
            log.info("[%s] stop", self.call)

    async def echo(self, payload: str) -> None:
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            log.warning("[%s] media payload is not base64", self.call)
            return
        await self.send(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )
        self.echoed_bytes += len(audio)
        while self.echoed_bytes >= (self.marks_sent + 1) * ULAW_BYTES_PER_SECOND:
            self.marks_sent += 1
            name = f"second-{self.marks_sent}"
            await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            log.info("[%s] mark %s sent", self.call, name)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))


async def handler(ws: ServerConnection) -> None:
    await EchoCall(ws).run()


async def main(host: str, port: int) -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with serve(handler, host, port, compression=None) as server:
        bound = next(iter(server.sockets)).getsockname()
        log.info("listening on ws://%s:%d/", bound[0], bound[1])
        await stop.wait()
    log.info("bye")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Echo bot for the Twilio Media Streams protocol")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(main(args.host, args.port))
