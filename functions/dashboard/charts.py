"""Small inline SVG charts drawn on the server: no chart library, no script, nothing to load.

Each function takes plain figures and returns ``Markup`` holding one ``<svg role="img">`` with a
``<title>`` that says in words what it shows (screen readers read it; the figures are also in a
table beside every chart). Colours are presentation attributes, not ``style``: the dashboard's
Content-Security-Policy allows no inline styles. Text is escaped with ``markupsafe.escape``.

Pure functions of their arguments (``now`` is passed in), so tests read the geometry back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

OK = "#1a7f37"
BAD = "#b42318"
NEUTRAL = "#0b5cad"
GRID = "#d0d7de"
TEXT = "#59636e"
FAILED_STATUSES = frozenset({"failed", "busy", "no-answer", "canceled"})


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    return Markup(  # noqa: S704 (every piece of text inside went through escape)
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{TEXT}" '
        f'text-anchor="{anchor}">{escape(text)}</text>'
    )


# --------------------------------------------------------------------------- overview


@dataclass(frozen=True, slots=True)
class HourBucket:
    start: datetime
    answered: int = 0
    failed: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.answered + self.failed + self.other


def hourly(calls: Sequence[dict[str, Any]], now: datetime, hours: int = 24) -> list[HourBucket]:
    """Calls of the last ``hours`` per hour (oldest first), split answered / failed / other.

    Answered: the call has ``answered_at``. Failed: it ended without an answer in a failure
    status. Other: still ringing or queued, or completed without an answer.
    """
    top = now.replace(minute=0, second=0, microsecond=0)
    starts = [top - timedelta(hours=hours - 1 - i) for i in range(hours)]
    counts = [[0, 0, 0] for _ in starts]
    for call in calls:
        created = _parse(call.get("created_at"))
        if created is None or created < starts[0] or created >= top + timedelta(hours=1):
            continue
        index = int((created - starts[0]).total_seconds() // 3600)
        if call.get("answered_at"):
            counts[index][0] += 1
        elif call.get("status") in FAILED_STATUSES:
            counts[index][1] += 1
        else:
            counts[index][2] += 1
    return [HourBucket(s, *c) for s, c in zip(starts, counts, strict=True)]


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def calls_per_hour(buckets: Sequence[HourBucket]) -> Markup:
    """Stacked bars per hour: answered (green), failed (red), other (blue)."""
    width, height, left, bottom, top = 480, 160, 28, 20, 10
    plot_h = height - bottom - top
    peak = max([b.total for b in buckets] + [1])
    bar_w = (width - left) / max(len(buckets), 1)
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        f'stroke="{GRID}"/>',
        _text(left - 4, top + 8, str(peak), "end"),
        _text(left - 4, height - bottom, "0", "end"),
    ]
    for i, bucket in enumerate(buckets):
        x = left + i * bar_w
        y = float(height - bottom)
        for count, colour, label in (
            (bucket.answered, OK, "answered"),
            (bucket.failed, BAD, "failed"),
            (bucket.other, NEUTRAL, "other"),
        ):
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            body.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}" data-count="{count}">'
                f"<title>{escape(f'{bucket.start:%H}:00 {count} {label}')}</title></rect>"
            )
        if i % 6 == 0:
            body.append(_text(x + bar_w / 2, height - 5, f"{bucket.start:%H}h", "middle"))
    total = sum(b.total for b in buckets)
    return _svg(width, height, f"Calls per hour, last {len(buckets)} hours: {total} calls", body)


def answer_split(answered: int, failed: int, other: int) -> Markup:
    """One horizontal bar split into answered / failed / other, with the counts."""
    width, height = 480, 48
    total = answered + failed + other
    body: list[str] = []
    x = 0.0
    for count, colour, label in (
        (answered, OK, "answered"),
        (failed, BAD, "failed"),
        (other, NEUTRAL, "other"),
    ):
        if not total or not count:
            continue
        w = width * count / total
        body.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="24" fill="{colour}" '
            f'data-count="{count}"><title>{count} {label}</title></rect>'
        )
        x += w
    if not total:
        body.append(f'<rect x="0" y="0" width="{width}" height="24" fill="{GRID}"/>')
    legend = f"{answered} answered · {failed} failed · {other} other"
    body.append(_text(0, 42, legend))
    return _svg(width, height, f"Last 24 hours: {legend}", body)


# --------------------------------------------------------------------------- call detail


@dataclass(frozen=True, slots=True)
class Mark:
    at: datetime
    label: str
    colour: str = NEUTRAL


def timeline(marks: Sequence[Mark], spans: Sequence[tuple[datetime, datetime, str]]) -> Markup:
    """Events as ticks on one time axis, and bot connections as bars under it."""
    width, left, right = 480, 8, 8
    height = 40 + 18 * len(spans) + 20
    moments = [m.at for m in marks] + [t for s in spans for t in s[:2]]
    if not moments:
        return _svg(width, 30, "No events recorded", [_text(0, 20, "No events recorded")])
    start, end = min(moments), max(moments)
    if end <= start:
        end = start + timedelta(seconds=1)
    scale = (width - left - right) / (end - start).total_seconds()

    def x_of(at: datetime) -> float:
        return left + (at - start).total_seconds() * scale

    body = [f'<line x1="{left}" y1="20" x2="{width - right}" y2="20" stroke="{GRID}"/>']
    for mark in marks:
        x = x_of(mark.at)
        offset = (mark.at - start).total_seconds()
        body.append(
            f'<circle cx="{x:.1f}" cy="20" r="5" fill="{mark.colour}">'
            f"<title>{escape(f'{mark.label} at +{offset:.1f} s')}</title></circle>"
        )
    for row, (begin, finish, label) in enumerate(spans):
        y = 36 + row * 18
        w = max(x_of(finish) - x_of(begin), 2)
        body.append(
            f'<rect x="{x_of(begin):.1f}" y="{y}" width="{w:.1f}" height="12" fill="{NEUTRAL}">'
            f"<title>{escape(label)}</title></rect>"
        )
    body.append(_text(left, height - 4, "0 s"))
    body.append(_text(width - right, height - 4, f"{(end - start).total_seconds():.1f} s", "end"))
    labels = ", ".join(m.label for m in marks)
    return _svg(width, height, f"Timeline: {labels}", body)


# (stats key, label, unit, the value from which the bar turns red)
MEDIA_FIGURES = (
    ("loss_percent", "Packet loss", "%", 3.0),
    ("jitter_ms", "Jitter", "ms", 30.0),
    ("pacing_error_p99_ms", "Pacing error p99", "ms", 10.0),
    ("bot_rtt_ms", "Bot round trip", "ms", 800.0),
)


def media_figures(stats: dict[str, Any]) -> list[tuple[str, float, str, float]]:
    """``(label, value, unit, limit)`` for the figures a call recorded; loss from lost/packets."""
    figures = dict(stats)
    lost, received = stats.get("lost"), stats.get("packets_in")
    if isinstance(lost, int | float) and isinstance(received, int | float) and lost + received:
        figures["loss_percent"] = round(100 * lost / (lost + received), 2)
    out = []
    for key, label, unit, limit in MEDIA_FIGURES:
        value = figures.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((label, float(value), unit, limit))
    return out


def media_bars(figures: Sequence[tuple[str, float, str, float]]) -> Markup:
    """One bar per figure against twice its limit; red past the limit."""
    width, row = 480, 26
    label_w = 150
    height = max(row * len(figures), row)
    body: list[str] = []
    if not figures:
        return _svg(
            width, 30, "No media figures recorded", [_text(0, 20, "No media figures recorded")]
        )
    for i, (label, value, unit, limit) in enumerate(figures):
        y = i * row
        span = width - label_w - 80
        w = span * min(value / (2 * limit), 1.0) if limit else 0
        colour = BAD if value > limit else OK
        body.append(_text(0, y + 15, label))
        body.append(f'<rect x="{label_w}" y="{y + 4}" width="{span}" height="14" fill="{GRID}"/>')
        body.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{max(w, 1):.1f}" height="14" '
            f'fill="{colour}" data-value="{value}"/>'
        )
        body.append(_text(label_w + span + 6, y + 15, f"{value:g} {unit}"))
    summary = "; ".join(f"{label} {value:g} {unit}" for label, value, unit, _ in figures)
    return _svg(width, height, f"Media: {summary}", body)
