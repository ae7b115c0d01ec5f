"""Calls: live calls (refreshed every 2 s), history with filters and pages, a call's detail, CSV.

Reads go through ``functions.api.calls`` (``list_calls``, ``get_call``), live commands through
``functions.api.call_control.send_live_command``, the function behind ``POST /api/calls/hangup|
transfer|redirect``: a call of another account is the same 404, an ended call the same 409, a node
that cannot be reached the same 503, a private redirect URL the same SSRF refusal.

History filters the API cannot apply in the query (number, date range) are applied to the pages
``list_calls`` returns, newest first, stopping at the first call older than the range: at most
``MAX_SCANNED_PAGES`` listing pages per request, after which the page ends with a "next" link
that resumes where the scan stopped.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

from anyio import to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.call_bodies import (
    CallListQuery,
    HangupRequest,
    RedirectRequest,
    TransferRequest,
)
from functions.api.call_control import LiveRequest, load_call, send_live_command
from functions.api.calls import get_call, list_calls
from functions.api.errors import ApiError
from functions.context import Context
from functions.dashboard import charts, forms
from functions.dashboard.render import render
from functions.dashboard.session import page
from shared.clock import utc_now
from shared.models import CallStatus, Direction

LIVE_STATUSES = (CallStatus.IN_PROGRESS, CallStatus.RINGING, CallStatus.QUEUED)
PAGE_SIZE = 25
MAX_SCANNED_PAGES = 8
CSV_MAX_ROWS = 5000
CSV_FIELDS = (
    "call_uuid",
    "created_at",
    "direction",
    "from_number",
    "to_number",
    "status",
    "answered_at",
    "ended_at",
    "duration",
    "hangup_cause",
    "sip_status",
)


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "not_found", f"call {raw} not found", "call_uuid") from None


def _seconds_since(value: str | None, now: datetime) -> int | None:
    at = charts._parse(value)
    return None if at is None else max(int((now - at).total_seconds()), 0)


def live_calls(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    """The account's calls that have not ended, answered first, newest first within a status."""
    now = utc_now()
    rows: list[dict[str, Any]] = []
    for status in LIVE_STATUSES:
        query = CallListQuery(status=status, limit=100)
        for view in list_calls(ctx, principal, query)["items"]:
            since = view.get("answered_at") or view["created_at"]
            legs = view.get("media") or []
            row = {
                **view,
                "seconds": _seconds_since(since, now),
                "driver": legs[-1].get("driver") if legs else None,
                "node_id": None,
            }
            if principal.is_admin:  # the node is infrastructure: operators only, as in the API
                row["node_id"] = load_call(ctx, principal, uuid.UUID(view["call_uuid"]))[0].node_id
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- history


class HistoryFilter:
    """The history page's query string, checked; a malformed value is ignored, not an error."""

    def __init__(self, params: Any) -> None:
        self.direction = _enum(Direction, params.get("direction"))
        self.status = _enum(CallStatus, params.get("status"))
        self.number = (params.get("number") or "").strip()[:64]
        self.date_from = _date(params.get("from"))
        self.date_to = _date(params.get("to"))
        cursor = params.get("cursor") or None
        self.cursor = cursor if cursor and len(cursor) <= 2048 else None

    @property
    def start(self) -> datetime | None:
        return datetime.combine(self.date_from, time.min, UTC) if self.date_from else None

    @property
    def end(self) -> datetime | None:
        return (
            datetime.combine(self.date_to, time.min, UTC) + timedelta(days=1)
            if self.date_to
            else None
        )

    def matches(self, view: dict[str, Any]) -> bool:
        created = charts._parse(view["created_at"])
        if created is None or (self.end and created >= self.end):
            return False
        digits = self.number.lstrip("+")
        return not digits or digits in view["from_number"] or digits in view["to_number"]

    def too_old(self, view: dict[str, Any]) -> bool:
        created = charts._parse(view["created_at"])
        return bool(self.start and created is not None and created < self.start)

    def query_string(self, cursor: str | None = None) -> str:
        from urllib.parse import urlencode

        params = {
            "direction": self.direction.value if self.direction else "",
            "status": self.status.value if self.status else "",
            "number": self.number,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
        }
        if cursor:
            params["cursor"] = cursor
        return urlencode({k: v for k, v in params.items() if v})

    def form(self) -> dict[str, str]:
        return {
            "direction": self.direction.value if self.direction else "",
            "status": self.status.value if self.status else "",
            "number": self.number,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
        }


def _enum(kind: Any, value: str | None) -> Any:
    try:
        return kind(value) if value else None
    except ValueError:
        return None


def _date(value: str | None) -> Any:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date() if value else None
    except ValueError:
        return None


def history(
    ctx: Context, principal: Principal, filt: HistoryFilter, want: int, max_pages: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``want`` matching calls and the cursor to resume after them (None at the end)."""
    found: list[dict[str, Any]] = []
    cursor = filt.cursor
    for _ in range(max_pages):
        query = CallListQuery(
            limit=100 if (filt.number or filt.end) else min(want - len(found), 100),
            cursor=cursor,
            status=filt.status,
            direction=filt.direction,
        )
        listing = list_calls(ctx, principal, query)
        cursor = listing["next_cursor"]
        for view in listing["items"]:
            if filt.too_old(view):
                return found, None
            if filt.matches(view):
                found.append(view)
        # A page may overshoot ``want``; the extra matches are shown rather than skipped.
        if cursor is None or len(found) >= want:
            break
    return found, cursor


def _csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: no formula from a caller name or number."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "@", "\t", "\r") or (text[:1] in ("+", "-") and not text[1:2].isdigit()):
        return "'" + text
    return text


def csv_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow([_csv_cell(row.get(name)) for name in CSV_FIELDS])
    yield buffer.getvalue()


# --------------------------------------------------------------------------- detail


def detail_charts(view: dict[str, Any]) -> dict[str, Any]:
    """The detail page's two pictures: the timeline and the media figures."""
    marks: list[charts.Mark] = []
    for key, label, colour in (
        ("created_at", "created", charts.NEUTRAL),
        ("answered_at", "answered", charts.OK),
        ("ended_at", f"ended ({view.get('hangup_cause') or view['status']})", charts.BAD),
    ):
        at = charts._parse(view.get(key))
        if at is not None:
            marks.append(charts.Mark(at, label, colour))
    for attempt in view.get("callback_attempts") or []:
        at = charts._parse(attempt.get("at") or attempt.get("attempted_at"))
        if at is not None:
            marks.append(charts.Mark(at, f"callback {attempt.get('event_type', '')}".strip()))
    spans = []
    end_default = charts._parse(view.get("ended_at")) or utc_now()
    for leg in view.get("media") or []:
        begin = charts._parse(leg.get("started_at"))
        if begin is not None:
            finish = charts._parse(leg.get("ended_at")) or end_default
            spans.append(
                (begin, max(finish, begin), f"{leg.get('driver') or 'bot'} {leg['target']}")
            )
    figures = charts.media_figures(view.get("stats") or {})
    return {
        "timeline_svg": charts.timeline(marks, spans),
        "media_svg": charts.media_bars(figures),
        "figures": figures,
        "marks": marks,
    }


# --------------------------------------------------------------------------- routes


def run_command(
    ctx: Context, principal: Principal, action: str, call_uuid: uuid.UUID, form: dict[str, str]
) -> dict[str, Any]:
    """A row's button as the API's request body, applied through the API's own function."""
    body: LiveRequest
    if action == "transfer":
        fields = {
            "call_uuid": str(call_uuid),
            "destination_number": forms.text(form, "destination"),
        }
        body = validate(TransferRequest, fields)
    elif action == "redirect":
        fields = {"call_uuid": str(call_uuid), "media_server": forms.text(form, "media_server")}
        body = validate(RedirectRequest, fields)
    else:
        body = HangupRequest(call_uuid=call_uuid)
    return send_live_command(ctx, principal, body)


def call_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    @guarded
    async def live(request: Request, ctx: Context, principal: Principal) -> Response:
        rows = await to_thread.run_sync(live_calls, ctx, principal)
        template = "_live_rows.html" if request.headers.get("hx-request") else "live_calls.html"
        return render(request, template, {"calls": rows})

    @guarded
    async def command(request: Request, ctx: Context, principal: Principal) -> Response:
        action = request.path_params["action"]
        if action not in ("hangup", "transfer", "redirect"):
            raise ApiError(404, "not_found", "There is no such page.")
        call_uuid = _uuid(request.path_params["call_uuid"])
        form = await forms.read(request)
        try:
            result = await to_thread.run_sync(run_command, ctx, principal, action, call_uuid, form)
            message, ok = f"{action.capitalize()} sent (command {result['command_id']}).", True
        except (ApiError, ValidationError) as exc:
            if isinstance(exc, ApiError) and exc.status == 404:
                raise
            text = exc.message if isinstance(exc, ApiError) else str(exc)
            message, ok = f"{action.capitalize()} refused: {text}", False
        if request.headers.get("hx-request"):
            return render(
                request,
                "_command_result.html",
                {"message": message, "ok": ok},
                status=200 if ok else 409,
            )
        return RedirectResponse(request.app.url_path_for("live_calls"), status_code=303)

    @guarded
    async def history_page(request: Request, ctx: Context, principal: Principal) -> Response:
        filt = HistoryFilter(request.query_params)
        rows, cursor = await to_thread.run_sync(
            history, ctx, principal, filt, PAGE_SIZE, MAX_SCANNED_PAGES
        )
        context = {
            "calls": rows,
            "filters": filt.form(),
            "next_query": filt.query_string(cursor) if cursor else None,
            "csv_query": filt.query_string(),
            "statuses": [s.value for s in CallStatus],
        }
        return render(request, "call_history.html", context)

    @guarded
    async def export(request: Request, ctx: Context, principal: Principal) -> Response:
        filt = HistoryFilter(request.query_params)
        rows, _ = await to_thread.run_sync(
            history, ctx, principal, filt, CSV_MAX_ROWS, CSV_MAX_ROWS // 100 + 1
        )
        name = f"calls-{utc_now():%Y%m%d-%H%M%S}.csv"
        return StreamingResponse(
            csv_lines(rows),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    @guarded
    async def detail(request: Request, ctx: Context, principal: Principal) -> Response:
        call_uuid = _uuid(request.path_params["call_uuid"])
        view = await to_thread.run_sync(get_call, ctx, principal, call_uuid)
        return render(request, "call_detail.html", {"call": view, **detail_charts(view)})

    return [
        Route("/calls/live", live, methods=["GET"], name="live_calls"),
        Route("/calls", history_page, methods=["GET"], name="call_history"),
        Route("/calls.csv", export, methods=["GET"], name="call_export"),
        Route("/calls/{call_uuid}", detail, methods=["GET"], name="call_detail"),
        Route("/calls/{call_uuid}/{action}", command, methods=["POST"], name="call_command"),
    ]
