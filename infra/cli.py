"""The ``agera`` command: ``agera dev`` (local stack), ``agera settings`` (every setting).

``agera edge`` runs an edge media node; ``agera call`` is a test phone (infra/phone.py);
``agera stream-token`` prints a token for an agent that requires one (infra/stream_token.py). Exit
codes: 0 success, 2 bad usage or configuration (one line on stderr naming what to fix); ``call``
adds 1 for a call that was not answered or failed.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from infra.local_aws import DEFAULT_TEMPLATE


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM gets the same clean shutdown as Ctrl-C (systemd, CI and tests send it).
    raise KeyboardInterrupt


def _dev(args: argparse.Namespace) -> int:
    from infra import dev

    options = dev.options_from_env(
        host=args.host,
        api_port=args.api_port,
        sip_port=args.sip_port,
        ws_port=args.ws_port,
        moto_port=args.moto_port,
        template=args.template,
        api_key=args.api_key,
        admin_key=args.admin_key,
        webhook_url=args.webhook_url,
        socket_url=args.socket_url,
        show_metrics=args.metrics,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    return dev.main(options)


def _settings(args: argparse.Namespace) -> int:
    from shared.settings import describe

    rows = describe()
    width = max(len(r[0]) for r in rows)
    for name, default, text in rows:
        print(f"{name:<{width}}  {default or '(empty)':<22}  {text}")
    return 0


def _edge(args: argparse.Namespace) -> int:
    from infra import edge

    overrides: dict[str, object] = {}
    if args.sip_port is not None:
        overrides["sip_port"] = args.sip_port
    if args.sip_host is not None:
        overrides["sip_host"] = args.sip_host
    return edge.main(overrides)


def _stream_token(args: argparse.Namespace) -> int:
    from infra import stream_token

    return stream_token.main(args.agent_uuid, args.ttl, args.base_url)


def _call(args: argparse.Namespace) -> int:
    from infra import phone

    return phone.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agera", description="Agera Voice Gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole gateway locally (moto for DynamoDB and SQS)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--api-port", type=int, default=8000, help="REST API port (default 8000)")
    dev.add_argument("--sip-port", type=int, default=5060, help="SIP port (default 5060)")
    dev.add_argument(
        "--ws-port", type=int, default=8080, help="agent-stream and health port (default 8080)"
    )
    dev.add_argument("--moto-port", type=int, default=0, help="moto port (default: a free one)")
    dev.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template")
    dev.add_argument("--api-key", help="fix the default account's key (or AGERA_DEV_API_KEY)")
    dev.add_argument("--admin-key", help="fix the admin key (or AGERA_DEV_ADMIN_KEY)")
    dev.add_argument("--webhook-url", help="the default account's webhook_url")
    dev.add_argument("--socket-url", help="the default account's default socket_url")
    dev.add_argument("--metrics", action="store_true", help="print EMF metric lines")
    dev.set_defaults(func=_dev)

    edge = sub.add_parser("edge", help="run an edge media node (SIP/RTP) in the foreground")
    edge.add_argument("--sip-host", help="address to bind (default AGERA_SIP_HOST or 127.0.0.1)")
    edge.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default AGERA_SIP_PORT)")
    edge.set_defaults(func=_edge)

    call = sub.add_parser("call", help="a test phone: dial a SIP URI, play, record, send DTMF")
    from infra.phone import add_arguments

    add_arguments(call)
    call.set_defaults(func=_call)

    token = sub.add_parser(
        "stream-token", help="print an agent-stream token for an agent that requires one"
    )
    token.add_argument("agent_uuid", help="the agent's UUID")
    token.add_argument(
        "--ttl", type=int, default=30 * 24 * 3600, help="seconds the token lives (default 30 days)"
    )
    token.add_argument("--base-url", help="the edge's public wss:// URL, for the printed example")
    token.set_defaults(func=_stream_token)

    settings = sub.add_parser("settings", help="list every setting with its default")
    settings.set_defaults(func=_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
