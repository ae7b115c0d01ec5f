"""The calls' own media figures, read back from their records (PROTOCOL.md, "Call figures").

Why from the records: two of the issue's latency goals have no clean view from outside. "Bot
`media` into an idle queue → RTP on the wire" starts at the moment the node takes a talkspurt's
first message off the socket, which no capture shows apart from the bot's queued audio; and the
node's own "RTP in → bot" is what a customer reads in `call.completed`. The node measures both
per call (`edge_media/bridge/call_slo.py`); this module summarises them across the run's calls:
the median and the largest of the calls' p99s, so one call's bad second is visible as the max.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.lib.budget import BUDGET_BOT_TO_WIRE_P99_MS

PAGE = 100
FIGURES = ("rtp_to_bot_ms_p99", "bot_to_wire_ms_p99", "pacing_error_ms_p99")


def call_slos(repo: Any, account_id: str) -> list[dict[str, Any]]:
    """Every finished call's ``stats.slo`` of the account (the bench makes one per run)."""
    from shared.dynamo import mapping
    from shared.models import Call

    partition = mapping.account_partition(account_id, mapping.COLLECTIONS[Call])
    slos: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = repo.list(partition, Call, limit=PAGE, cursor=cursor)
        for call in page.items:
            slo = (call.stats or {}).get("slo")
            if isinstance(slo, dict):
                slos.append(slo)
        cursor = page.next_cursor
        if cursor is None:
            return slos


def summarise(slos: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure: median and max over the calls that have it, and how many do."""
    out: dict[str, dict[str, float]] = {}
    for name in FIGURES:
        values = [float(s[name]) for s in slos if isinstance(s.get(name), int | float)]
        if values:
            out[name] = {
                "median": round(statistics.median(values), 2),
                "max": round(max(values), 2),
                "calls": len(values),
            }
    return out


def slo_lines(summary: dict[str, dict[str, float]] | None) -> list[str]:
    """The report's lines; empty when no record carried figures."""
    if not summary:
        return []
    labels = {
        "rtp_to_bot_ms_p99": "RTP in → bot (node)",
        "bot_to_wire_ms_p99": "bot → wire",
        "pacing_error_ms_p99": "pacing (node)",
    }
    lines = ["per-call p99s from the records (median / max over calls):"]
    for name, figure in summary.items():
        verdict = ""
        if name == "bot_to_wire_ms_p99":
            ok = figure["median"] <= BUDGET_BOT_TO_WIRE_P99_MS
            verdict = "  ok" if ok else f"  OVER {BUDGET_BOT_TO_WIRE_P99_MS:g}"
        lines.append(
            f"  {labels[name]:<20} {figure['median']:.2f} / {figure['max']:.2f} ms over "
            f"{figure['calls']:.0f} calls{verdict}"
        )
    return lines
