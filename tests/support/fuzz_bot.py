"""Seeded fuzz messages a Twilio-stream bot sends: mutated media/mark/clear and worse.

Why these: a bot is a tenant's program, so everything it sends is untrusted input parsed on the
loop that paces every call (PROTOCOL.md, "3." and "6."). The mutations aim at what the
Twilio-stream driver reads: ``event`` and ``streamSid`` of the wrong type or missing, media
payloads that are not base64 (or are, but huge), mark names that are huge, not strings or
full of escapes and lone surrogates, unknown events (including the ones only *we* may send),
text that is not JSON or is JSON nested past the parser's depth, numbers past Python's
int-string limit, and binary frames.

Why the size cap: a message over the node's AGERA_BOT_MAX_MESSAGE_BYTES closes the bot with
1009 and ends the call by design, which would end the fuzzing too; every message stays below
`MAX_MESSAGE_CHARS`. Each input is a pure function of (seed, index), like the SIP stream.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from tests.support.fuzz_mutate import input_rng, interesting_int, mutate_bytes

__all__ = ["MAX_MESSAGE_CHARS", "bot_message"]

MAX_MESSAGE_CHARS = 200_000  # under the default 262144-byte limit, escapes included

_EVENTS = ("media", "mark", "clear")
_OTHER_EVENTS = ("start", "stop", "connected", "dtmf", "MEDIA", "", "media ", "mark\x00", "x" * 300)
_WRONG_TYPES: tuple[Any, ...] = (None, 1, -1.5, True, [], {}, [1, 2], {"a": 1}, "", 10**30)


def _valid(rng: random.Random, stream_sid: str) -> dict[str, Any]:
    event = rng.choice(_EVENTS)
    message: dict[str, Any] = {"event": event, "streamSid": stream_sid}
    if event == "media":
        audio = rng.randbytes(rng.choice((160, 160, 320, 800, 1, 0)))
        message["media"] = {"payload": base64.b64encode(audio).decode("ascii")}
    elif event == "mark":
        message["mark"] = {"name": f"fuzz-{rng.getrandbits(32):x}"}
    return message


def _bad_payload(rng: random.Random) -> Any:
    valid = base64.b64encode(rng.randbytes(160)).decode("ascii")
    return rng.choice(
        (
            valid[:-1],
            valid + "=",
            "====",
            "!!notbase64!!",
            valid.replace("A", "é", 1),
            valid[:10] + " " + valid[10:],
            valid + "\n",
            base64.b64encode(rng.randbytes(rng.choice((60_000, 120_000)))).decode("ascii"),
            "",
            rng.choice(_WRONG_TYPES),
        )
    )


def _bad_name(rng: random.Random) -> Any:
    return rng.choice(
        (
            "n" * rng.choice((256, 257, 5000, 100_000)),
            "\ud800",
            "\udfff\ud800x",
            "\x00\x01\x1f",
            "é\u2028\u2029🎉",
            "",
            rng.choice(_WRONG_TYPES),
        )
    )


def _mutate_object(rng: random.Random, message: dict[str, Any], stream_sid: str) -> Any:
    op = rng.randrange(10)
    if op == 0:
        message["event"] = rng.choice(_WRONG_TYPES + _OTHER_EVENTS)
    elif op == 1:
        message.pop(rng.choice(list(message)), None)
    elif op == 2:
        message["streamSid"] = rng.choice((*_WRONG_TYPES, stream_sid + "x", "MZ" + "0" * 32))
    elif op == 3:
        message["event"] = "media"
        message["media"] = rng.choice(({"payload": _bad_payload(rng)}, *_WRONG_TYPES))
    elif op == 4:
        message["event"] = "mark"
        message["mark"] = rng.choice(({"name": _bad_name(rng)}, *_WRONG_TYPES))
    elif op == 5:  # fields Twilio would tolerate, some huge, some numeric past the limits
        message[rng.choice(("extra", "sequenceNumber", "media", "x" * 100))] = rng.choice(
            (interesting_int(rng), "x" * 50_000, {"nested": list(range(1000))}, None)
        )
    elif op == 6:  # another top-level JSON type
        return rng.choice(([message], "media", 42, None, [], True))
    elif op == 7:
        message = {f"k{i}": i for i in range(rng.choice((100, 5000)))} | message
    elif op == 8:
        message["event"] = rng.choice(_OTHER_EVENTS)
    else:
        message["media" if rng.random() < 0.5 else "mark"] = {"payload": "", "name": "", "x": None}
    return message


def _text(rng: random.Random, stream_sid: str) -> str:
    roll = rng.random()
    if roll < 0.04:  # nested past the decoder's recursion limit, or just under it
        depth = rng.choice((50, 900, 5000, 60_000))
        opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
        return opener * depth + "1" + closer * rng.choice((depth, depth - 1, 0))
    if roll < 0.07:  # an int past sys.get_int_max_str_digits, or a float that overflows
        return rng.choice(
            ('{"event":"media","n":' + "9" * 5000 + "}", '{"event":1e999999}', "[NaN, Infinity]")
        )
    if roll < 0.12:  # not JSON
        return rng.choice(
            (
                "",
                " ",
                "hello",
                "{",
                '{"event":"media"',
                "null",
                "\x00" * 10,
                "}{",
                '{"event":"media",}',
                "'single'",
                rng.randbytes(rng.randint(1, 200)).decode("latin-1"),
            )
        )
    message = _mutate_object(rng, _valid(rng, stream_sid), stream_sid)
    text = json.dumps(message, ensure_ascii=rng.random() < 0.5)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only as a JSON escape (frames are UTF-8)
        text = json.dumps(message)
    if rng.random() < 0.25:  # blind damage, kept a valid str (a text frame must be UTF-8)
        text = mutate_bytes(rng, text.encode("utf-8", "surrogatepass"), rounds=2).decode(
            "utf-8", "replace"
        )
    return text


def bot_message(seed: int, index: int, stream_sid: str) -> str | bytes:
    """Input ``index`` of the bot stream for ``seed``: a text frame (str) or a binary one."""
    rng = input_rng(seed, "bot", index)
    if rng.random() < 0.05:
        return rng.randbytes(rng.choice((0, 1, 160, 4000)))
    text = _text(rng, stream_sid)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS]
    return text
