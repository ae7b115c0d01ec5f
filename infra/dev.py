"""``agera dev``: the whole gateway on one machine, on 127.0.0.1.

What runs: moto (DynamoDB, SQS and KMS) in a child process on a free port with the template's table
and queues and a KMS key that seals stored secrets (infra/dev_kms.py; infra/moto_process.py says why a child: moto's store and its transactions, which copy the
table, would otherwise hold this process's GIL and stall the node's 20 ms media clock); in this
process, the REST API under uvicorn (same Starlette app as on Lambda); the two SQS workers, invoked by
local pollers with Lambda-shaped events; the reaper, run every ``AGERA_REAPER_INTERVAL_SECONDS``
by a local schedule (infra/scheduler.py); and an edge media node (SIP and RTP on the same host,
UDP and TCP, port 5060 by default) with the echo line. Everything reaches moto through
``AWS_ENDPOINT_URL``, exactly as it would reach AWS.

Ctrl-C (or SIGTERM) stops the API first, then the edge node (live calls are hung up), then the
pollers and the schedule, then moto, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from infra.bootstrap import Bootstrap, bootstrap_default_account
from infra.local_aws import (
    DEFAULT_TEMPLATE,
    LocalResources,
    apply_env,
    aws_env,
    provision,
    sealing_repository,
)
from infra.moto_process import MotoProcess
from infra.scheduler import PeriodicRunner
from infra.sqs_poller import SqsPoller
from shared.settings import Settings, SettingsError

if TYPE_CHECKING:
    from edge_media.node import EdgeNode

logger = logging.getLogger("agera.dev")

# Where the demo number's calls go unless --socket-url says otherwise: examples/echo_bot.py's
# default address, so "make your first call" needs no configuration.
DEMO_SOCKET_URL = "ws://127.0.0.1:8765/"


class DevError(Exception):
    """The local stack cannot start; the message is one line saying what to do."""


@dataclass
class DevOptions:
    host: str = "127.0.0.1"
    api_port: int = 8000
    sip_port: int = 5060
    ws_port: int = 8080
    moto_port: int = 0
    template: Path = DEFAULT_TEMPLATE
    api_key: str | None = None
    admin_key: str | None = None
    webhook_url: str | None = None
    socket_url: str | None = None
    demo_number: str = "+15550001000"
    show_metrics: bool = False
    out: TextIO = field(default=sys.stdout)


def _check_port_free(host: str, port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # Same option uvicorn sets: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise DevError(
                f"{what} port {host}:{port} is in use; choose another with {option}"
            ) from None


def _check_sip_port_free(host: str, port: int) -> None:
    """SIP needs UDP and TCP on one port; say which option moves it if either is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                raise DevError(
                    f"SIP port {host}:{port} is in use; choose another with --sip-port"
                ) from None


def _local_environment(options: DevOptions, endpoint: str) -> dict[str, str]:
    env = aws_env(endpoint)
    env.update(
        {
            # The local stack's bots and webhooks live on this machine.
            "AGERA_SSRF_ALLOW_LIST": "127.0.0.0/8,::1/128",
            "AGERA_TRUST_LOOPBACK": "true",
            "POWERTOOLS_SERVICE_NAME": "agera-dev",
            "POWERTOOLS_TRACE_DISABLED": "1",
            # One node, nobody to hand originates to: Ctrl-C should not wait out a 20 s poll.
            "AGERA_ORIGINATE_POLL_SECONDS": os.environ.get("AGERA_ORIGINATE_POLL_SECONDS", "2"),
        }
    )
    if not options.show_metrics:
        env["POWERTOOLS_METRICS_DISABLED"] = "1"
    return env


def banner(
    options: DevOptions,
    boot: Bootstrap,
    endpoint: str,
    resources: LocalResources,
    demo_agent: uuid.UUID,
) -> str:
    api = f"http://{options.host}:{options.api_port}/api"
    lines = [
        "",
        "Agera Voice Gateway: the local stack is up",
        f"  REST API        {api}   (health: {api}/health)",
        f"  moto (AWS)      {endpoint}   (DynamoDB + SQS + KMS, in memory)",
        f"  table           {resources.table_name}",
        f"  SIP (edge node) {options.host}:{options.sip_port} UDP+TCP   "
        f"(test line: sip:echo@{options.host}:{options.sip_port})",
        f"  agent streams   ws://{options.host}:{options.ws_port}/api/v1/agent-stream/...   "
        f"(health: http://{options.host}:{options.ws_port}/health)",
        "",
        f"  account id      {boot.account.account_id}",
        f"  API key         {boot.api_key}",
        f"  admin key       {boot.admin_key}",
        f"  webhook secret  {boot.account.webhook_secret}",
        f"  demo number     {options.demo_number} → {boot.account.socket_url}",
        f"  demo agent      {demo_agent} → {boot.account.socket_url}",
        "",
        "  first call:     python examples/echo_bot.py        (in another terminal)",
        f"                  agera call sip:{options.demo_number}@{options.host}:{options.sip_port}"
        " --hangup-after 10 --record heard.wav",
        "",
        f"  try: curl -s -H 'X-API-KEY: {boot.api_key}' {api}/account",
        "  stop: Ctrl-C",
        "",
    ]
    return "\n".join(lines)


async def run_dev(options: DevOptions) -> None:
    """Start everything, serve until interrupted, stop everything."""
    import boto3
    import uvicorn

    from functions.api.app import create_app
    from functions.context import reset_default_context
    from functions.workers import callbacks, events, reaper
    from shared.models import Agent, Number, Route

    Settings.load()  # a malformed AGERA_* variable fails here, before anything starts
    _check_port_free(options.host, options.api_port, "API", "--api-port")
    _check_sip_port_free(options.host, options.sip_port)
    _check_port_free(options.host, options.ws_port, "agent-stream", "--ws-port")
    moto = MotoProcess(options.host, options.moto_port)
    endpoint = moto.start()
    pollers: list[SqsPoller] = []
    schedules: list[PeriodicRunner] = []
    node: EdgeNode | None = None
    try:
        apply_env(_local_environment(options, endpoint))
        resources = provision(endpoint, options.template)
        # settings_env carries the local KMS key: secrets are sealed locally too (docs/secrets.md).
        apply_env(resources.settings_env())
        reset_default_context()
        settings = Settings.load()
        session = boto3.session.Session()
        repo = sealing_repository(settings, session)
        boot = bootstrap_default_account(
            repo,
            api_key=options.api_key,
            admin_key=options.admin_key,
            webhook_url=options.webhook_url,
            socket_url=options.socket_url or DEMO_SOCKET_URL,
        )
        repo.put(
            Number(
                number=options.demo_number,
                account_id=boot.account.account_id,
                route=Route(socket_url=boot.account.socket_url),
                description="demo number of the local stack",
            )
        )
        agent = Agent(
            account_id=boot.account.account_id,
            name="demo agent",
            socket_url=boot.account.socket_url or DEMO_SOCKET_URL,
        )
        repo.put(agent)
        sqs = session.client("sqs")
        pollers = [
            SqsPoller(sqs, settings.events_queue_url, events.handler, "EventsFunction"),
            SqsPoller(sqs, settings.callbacks_queue_url, callbacks.handler, "CallbacksFunction"),
        ]
        for poller in pollers:
            poller.start()
        schedules = [
            PeriodicRunner(reaper.handler, "ReaperFunction", settings.reaper_interval_seconds)
        ]
        for schedule in schedules:
            schedule.start()
        from edge_media.node import EdgeNode

        node = EdgeNode(
            Settings.load(
                sip_host=options.host,
                sip_port=options.sip_port,
                ws_host=options.host,
                ws_port=options.ws_port,
            )
        )
        await node.start()
        config = uvicorn.Config(
            create_app(),
            host=options.host,
            port=options.api_port,
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        server = uvicorn.Server(config)
        print(
            banner(options, boot, endpoint, resources, agent.agent_uuid),
            file=options.out,
            flush=True,
        )
        await server.serve()
    finally:
        cancelled = await _stop_node(node)
        for poller in pollers:
            poller.stop()
        for schedule in schedules:
            schedule.stop()
        moto.stop()
        print("local stack stopped", file=options.out, flush=True)
        if cancelled:
            raise asyncio.CancelledError


async def _stop_node(node: EdgeNode | None) -> bool:
    """Stop the edge node even when Ctrl-C arrives as a cancellation of this task.

    asyncio's runner turns SIGINT into a cancel of the main task once uvicorn hands the signal
    back, which would abandon the node's BYEs half-way. Returns whether a cancel was swallowed,
    so the caller re-raises it after the rest of the cleanup.
    """
    if node is None:
        return False
    stopping = asyncio.ensure_future(node.stop(drain_seconds=0))
    try:
        await asyncio.shield(stopping)
    except asyncio.CancelledError:
        await stopping
        return True
    return False


def options_from_env(**values: object) -> DevOptions:
    """DevOptions with the documented env overrides for keys (scripts fix them this way)."""
    options = DevOptions(**values)  # type: ignore[arg-type]
    options.api_key = options.api_key or os.environ.get("AGERA_DEV_API_KEY") or None
    options.admin_key = options.admin_key or os.environ.get("AGERA_DEV_ADMIN_KEY") or None
    return options


def main(options: DevOptions) -> int:
    import uvloop

    try:
        uvloop.run(run_dev(options))
    except (DevError, SettingsError) as exc:
        print(f"agera dev: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
