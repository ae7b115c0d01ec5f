"""A real pipecat bot for interop tests: Twilio Media Streams in, the caller's own audio out.

Run it with the separate pipecat virtualenv (infra/setup/pipecat-venv.sh), never the project's:

    .venv-pipecat/bin/python tests/interop/pipecat_echo_bot.py --port 20123

The point is to face the gateway with pipecat exactly as shipped, set up the way pipecat's
telephony bots are: the handshake is read by pipecat's own ``parse_telephony_websocket`` (which
decides "twilio" only from a ``start`` carrying nested ``streamSid`` and ``callSid``), and the
socket is driven by ``FastAPIWebsocketTransport`` with ``TwilioFrameSerializer``. Only the
pipeline is ours: no VAD, STT, LLM or TTS (so no API keys), just an echo processor between input
and output. ``auto_hang_up=False`` because a hang-up would POST to Twilio's REST API.

What the test reads from stdout, one line each, prefixed with ``LOG_PREFIX``:
``listening ws://HOST:PORT/ws`` once the socket is bound (connections made after it queue in the
backlog until uvicorn accepts them), ``parsed {json}`` with what pipecat understood of the
handshake, and ``ended {json}`` when a call's pipeline has finished.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts this directory first on sys.path, where the harness module
# ``pipecat.py`` would shadow the real pipecat package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402

import uvicorn  # noqa: E402
from fastapi import FastAPI, WebSocket  # noqa: E402
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.runner.utils import parse_telephony_websocket  # noqa: E402
from pipecat.serializers.twilio import TwilioFrameSerializer  # noqa: E402
from pipecat.transports.websocket.fastapi import (  # noqa: E402
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner  # noqa: E402

LOG_PREFIX = "pipecat-echo-bot:"
WS_PATH = "/ws"
LOOPBACK_HOSTS = ("127.0.0.1", "::1")
SAMPLE_RATE = 8000  # Twilio streams 8 kHz μ-law; running the pipeline at 8 kHz avoids resampling
DEFAULT_OUT_10MS_CHUNKS = 4  # pipecat's default: the bot sends 40 ms (320 byte) media messages
LISTEN_BACKLOG = 64


def say(event: str, detail: object = None) -> None:
    """One line on stdout for the harness: the prefix, the event, then its detail if any."""
    text = f"{LOG_PREFIX} {event}" if detail is None else f"{LOG_PREFIX} {event} {detail}"
    print(text, flush=True)


class EchoProcessor(FrameProcessor):
    """Turns every input audio frame into an output audio frame, which the transport plays.

    Other frames pass on unchanged, so pipecat's own start/end/cancel handling is untouched.
    Input audio is not passed on as well: the output transport would ignore it.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio,
                    sample_rate=frame.sample_rate,
                    num_channels=frame.num_channels,
                )
            )
        else:
            await self.push_frame(frame, direction)


async def run_call(websocket: WebSocket, out_10ms_chunks: int) -> None:
    """One call: pipecat's handshake parsing, then the echo pipeline until the socket closes."""
    transport_type, call_data = await parse_telephony_websocket(websocket)
    say(
        "parsed",
        json.dumps(
            {
                "transport": transport_type,
                "stream_id": call_data.stream_id,
                "call_id": call_data.call_id,
                "from_number": call_data.from_number,
                "to_number": call_data.to_number,
                "body": call_data.body,
            },
            sort_keys=True,
        ),
    )
    serializer = TwilioFrameSerializer(
        stream_sid=call_data.stream_id,  # None if not understood: pipecat then sends null
        call_sid=call_data.call_id,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            audio_out_10ms_chunks=out_10ms_chunks,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    worker = PipelineWorker(
        Pipeline([transport.input(), EchoProcessor(), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: object, _websocket: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    say("ended", json.dumps({"call_id": call_data.call_id}))


def make_app(out_10ms_chunks: int) -> FastAPI:
    app = FastAPI()

    @app.websocket(WS_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_call(websocket, out_10ms_chunks)

    return app


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen before announcing it, so the ready line is true when printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK_HOSTS[0], choices=LOOPBACK_HOSTS)
    parser.add_argument(
        "--out-10ms-chunks",
        type=int,
        default=DEFAULT_OUT_10MS_CHUNKS,
        help="size of the media messages the bot sends, in 10 ms units (pipecat default 4)",
    )
    args = parser.parse_args(argv)
    sock = listen(args.host, args.port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    config = uvicorn.Config(make_app(args.out_10ms_chunks), log_level="info", lifespan="off")
    server = uvicorn.Server(config)
    say("listening", f"ws://{shown_host}:{bound_port}{WS_PATH}")
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
