"""``agera call``: the test phone from the command line (edge_media/phone does the calling).

Exit codes, for scripts and CI: 0 when the call was answered and ended normally (either side
hung up with NORMAL_CLEARING), 1 when it was not answered or ended with another cause (one line
on stderr says why), 2 for bad arguments or a WAV that cannot be played (one line on stderr).
Ctrl-C or SIGTERM hangs up cleanly: CANCEL before the answer, BYE after.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TextIO

from edge_media.loop import run
from edge_media.phone.phone_options import (
    DEFAULT_ANSWER_TIMEOUT,
    DEFAULT_DIGIT_DELAY,
    DEFAULT_FROM_USER,
    DEFAULT_RTP_PORTS,
    PhoneError,
    PhoneOptions,
)
from edge_media.phone.phone_result import PhoneResult
from edge_media.phone.softphone import run_phone
from edge_media.phone.wav import WavError

__all__ = ["add_arguments", "describe_failure", "main", "options_from_args"]

PROG = "agera call"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _port_range(text: str) -> tuple[int, int]:
    low, dash, high = text.partition("-")
    if not dash or not low.isdigit() or not high.isdigit():
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, e.g. 30000-30099, got {text!r}")
    return int(low), int(high)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``call`` subcommand's flags."""
    parser.add_argument("uri", help="who to call, e.g. sip:echo@127.0.0.1:5060")
    parser.add_argument("--play", type=Path, metavar="WAV", help="WAV to play once answered")
    parser.add_argument("--record", type=Path, metavar="WAV", help="record what is heard here")
    parser.add_argument("--dtmf", default="", metavar="KEYS", help="DTMF keys to send, e.g. 123#")
    parser.add_argument(
        "--dtmf-delay",
        type=float,
        default=DEFAULT_DIGIT_DELAY,
        metavar="S",
        help=f"seconds before and between DTMF keys (default {DEFAULT_DIGIT_DELAY:g})",
    )
    parser.add_argument(
        "--hangup-after",
        type=float,
        metavar="S",
        help="hang up this many seconds after the answer (default: wait for the far end)",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=DEFAULT_ANSWER_TIMEOUT,
        metavar="S",
        help=f"give up when not answered in this time (default {DEFAULT_ANSWER_TIMEOUT:g})",
    )
    parser.add_argument(
        "--from",
        dest="from_user",
        default=DEFAULT_FROM_USER,
        metavar="USER",
        help=f"caller user part or number (default {DEFAULT_FROM_USER})",
    )
    parser.add_argument("--from-name", metavar="NAME", help="caller display name")
    parser.add_argument("--user", help="digest user name, for a gateway that challenges")
    parser.add_argument("--password", help="digest password (with --user)")
    parser.add_argument("--tcp", action="store_true", help="SIP over TCP (default UDP)")
    parser.add_argument(
        "--local-host", metavar="ADDR", help="local IP address to use (default: the route's)"
    )
    parser.add_argument(
        "--local-port",
        type=int,
        default=0,
        metavar="PORT",
        help="local SIP port (default: any free port)",
    )
    low, high = DEFAULT_RTP_PORTS
    parser.add_argument(
        "--rtp-ports",
        type=_port_range,
        default=DEFAULT_RTP_PORTS,
        metavar="LOW-HIGH",
        help=f"local RTP port range (default {low}-{high})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log SIP and RTP events")


def options_from_args(args: argparse.Namespace) -> PhoneOptions:
    return PhoneOptions(
        uri=args.uri,
        wav_in=args.play,
        wav_out=args.record,
        digits=args.dtmf,
        digit_delay=args.dtmf_delay,
        hangup_after=args.hangup_after,
        answer_timeout=args.answer_timeout,
        from_user=args.from_user,
        from_display=args.from_name,
        local_host=args.local_host,
        local_port=args.local_port,
        username=args.user,
        password=args.password,
        transport="tcp" if args.tcp else "udp",
        rtp_ports=args.rtp_ports,
    )


def describe_failure(result: PhoneResult) -> str:
    """Why the call did not end normally, in one line."""
    if not result.answered:
        status = f"SIP {result.status} {result.reason} " if result.status else ""
        return f"not answered: {status}({result.cause})"
    return f"call ended with {result.cause}, not NORMAL_CLEARING"


async def _call(options: PhoneOptions, out: TextIO) -> PhoneResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run_phone(options, out=out, stop=stop)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def main(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    out = out or sys.stdout
    try:
        result = run(_call(options_from_args(args), out))
    except (PhoneError, WavError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if result.ok:
        return 0
    print(f"{PROG}: {describe_failure(result)}", file=sys.stderr)
    return 1
