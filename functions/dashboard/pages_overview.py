"""The overview (calls per hour and the answer/failure split of the last 24 hours) and the fleet.

The overview reads the last day's calls through ``functions.api.calls.list_calls``, newest first,
and stops at the first call older than 24 hours or after ``MAX_PAGES`` pages (then the pictures
say they are partial). The fleet page is for admin keys: edge nodes with their heartbeat age,
draining state and active calls, read from the nodes' heartbeat items (there is no REST endpoint
for nodes; ``GET /api/health`` only counts them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from functions.api.auth import Principal
from functions.api.call_bodies import CallListQuery
from functions.api.calls import list_calls
from functions.api.node_notify import NODES_PARTITION
from functions.context import Context
from functions.dashboard import charts
from functions.dashboard.render import render
from functions.dashboard.session import page
from shared.clock import utc_now
from shared.models import EdgeNode

MAX_PAGES = 10
MAX_NODES = 100


def last_day(ctx: Context, principal: Principal) -> tuple[list[dict[str, Any]], bool]:
    """The calls created in the last 24 hours, and whether the scan reached all of them."""
    since = utc_now() - timedelta(hours=24)
    calls: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        listing = list_calls(ctx, principal, CallListQuery(limit=100, cursor=cursor))
        for view in listing["items"]:
            created = charts._parse(view["created_at"])
            if created is not None and created < since:
                return calls, True
            calls.append(view)
        cursor = listing["next_cursor"]
        if cursor is None:
            return calls, True
    return calls, False


def fleet(ctx: Context) -> list[dict[str, Any]]:
    now = utc_now()
    nodes = ctx.repo.list(NODES_PARTITION, EdgeNode, limit=MAX_NODES, newest_first=False).items
    return [
        {
            **node.model_dump(
                mode="json", include={"node_id", "sip_address", "status", "active_calls"}
            ),
            "heartbeat_age": max(int((now - node.heartbeat_at).total_seconds()), 0),
            "expired": node.expires_at <= now,
        }
        for node in nodes
    ]


def overview_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    @guarded
    async def overview(request: Request, ctx: Context, principal: Principal) -> Response:
        calls, complete = await to_thread.run_sync(last_day, ctx, principal)
        buckets = charts.hourly(calls, utc_now())
        answered = sum(b.answered for b in buckets)
        failed = sum(b.failed for b in buckets)
        other = sum(b.other for b in buckets)
        context = {
            "per_hour_svg": charts.calls_per_hour(buckets),
            "split_svg": charts.answer_split(answered, failed, other),
            "buckets": buckets,
            "split": {"answered": answered, "failed": failed, "other": other},
            "complete": complete,
        }
        return render(request, "overview.html", context)

    @page(ctx_provider, admin=True)
    async def fleet_page(request: Request, ctx: Context, principal: Principal) -> Response:
        nodes = await to_thread.run_sync(fleet, ctx)
        return render(request, "fleet.html", {"nodes": nodes})

    return [
        Route("/", overview, methods=["GET"], name="overview"),
        Route("/fleet", fleet_page, methods=["GET"], name="fleet"),
    ]
