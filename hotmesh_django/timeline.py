"""Draw a job's steps as an SVG Gantt chart, server-side, from Activity and Journal rows.

Each step is a lane. An activity shows the time it waited for a worker, the time it
ran, and for every failed attempt the attempt and the back-off before the next one.
Sleeps, signal waits and child workflows have colours of their own. The claim does
not journal the start of every attempt, only the last one (`Activity.started_at`), so
an earlier failed attempt is drawn from the moment it became visible to the moment it
failed: queueing and running are not told apart for it.

Every value that comes from a user (step names, signal names, workflow ids) goes
through `format_html`, so the picture is as safe to inline as the rest of the page.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from hotmesh_django.models import Activity, Job, JobStatus, Journal, JournalEvent, StepKind

# Colours; text and axes use currentColor, so the chart follows the admin's theme.
COLOURS: dict[str, tuple[str, str]] = {
    # kind: (fill, legend label)
    "queued": ("#b8c2cc", "waiting for a worker"),
    "running": ("#2f7fc1", "running"),
    "succeeded": ("#3a9b4f", "ran, succeeded"),
    "failed": ("#ba2121", "ran, failed"),
    "attempt": ("#e59a9a", "failed attempt (retried)"),
    "backoff": ("#f2b24d", "retry back-off"),
    "sleep": ("#8e6bbf", "sleep"),
    "signal": ("#2aa198", "waiting for a signal"),
    "child": ("#5c6bc0", "child workflow"),
    "job": ("#d6e4f0", "job active"),
}

LABEL_WIDTH = 230
CHART_WIDTH = 660
ROW_HEIGHT = 22
BAR_HEIGHT = 12
TOP = 24
MAX_LANES = 200
MAX_LABEL = 32

_NICE_STEPS = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
]


def human_duration(seconds: float | None) -> str:
    """Return `seconds` as a short reading like '850 ms', '12.5 s', '3 min 20 s'."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _tick_label(seconds: float, step: float) -> str:
    if step < 1:
        return f"+{seconds * 1000:.0f} ms" if seconds < 1 else f"+{seconds:.1f} s"
    if step < 60:
        return f"+{seconds:.0f} s"
    if step < 3600:
        return f"+{seconds / 60:.0f} min"
    if step < 86400:
        return f"+{seconds / 3600:.0f} h"
    return f"+{seconds / 86400:.0f} d"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Span:
    kind: str
    start: datetime.datetime
    end: datetime.datetime
    title: str


@dataclasses.dataclass(kw_only=True)
class Lane:
    label: str
    title: str
    href: str | None = None
    spans: list[Span] = dataclasses.field(default_factory=list)
    # (moment, symbol, title): events drawn as marks on the lane.
    marks: list[tuple[datetime.datetime, str, str]] = dataclasses.field(default_factory=list)
    clipped: bool = False


def _n(value: float) -> str:
    """Format a coordinate; format_html escapes its arguments to text first."""
    return f"{value:.1f}"


def _fmt(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _span(kind: str, start: datetime.datetime, end: datetime.datetime, what: str) -> Span:
    end = max(start, end)
    title = f"{what}: {human_duration((end - start).total_seconds())} ({_fmt(start)} → {_fmt(end)})"
    return Span(kind=kind, start=start, end=end, title=title)


def _activity_spans(
    step: Activity,
    events: Sequence[Journal],
    operator_retries: Sequence[datetime.datetime],
    now: datetime.datetime,
) -> list[Span]:
    spans: list[Span] = []
    visible = step.created_at
    for event in events:
        failed_at = max(event.created_at, visible)
        if event.event in (
            JournalEvent.STEP_RETRIED,
            JournalEvent.LEASE_EXPIRED,
            JournalEvent.RELEASED,
        ):
            ended = "released" if event.event == JournalEvent.RELEASED else "failed"
            spans.append(
                _span("attempt", visible, failed_at, f"attempt {event.attempt or '?'} {ended}")
            )
            data = event.data if isinstance(event.data, dict) else {}  # or Unreadable
            delay = float(data.get("delay") or 0)
            visible = failed_at + datetime.timedelta(seconds=delay)
            if delay:
                spans.append(_span("backoff", failed_at, visible, "retry back-off"))
        elif event.event == JournalEvent.STEP_FAILED and (
            step.started_at is not None and step.started_at > event.created_at
        ):
            # Failed for good, then revived by an operator's retry: the step rested
            # until then, and the drawing goes on from the retry.
            spans.append(
                _span(
                    "failed", visible, failed_at, f"attempt {event.attempt or '?'} failed for good"
                )
            )
            visible = next((t for t in operator_retries if t >= failed_at), failed_at)
    end = step.finished_at or now
    started = step.started_at
    if started is not None and started >= visible:
        spans.append(_span("queued", visible, started, "waiting for a worker"))
        kind = "running"
        if step.status == JobStatus.SUCCESSFUL:
            kind = "succeeded"
        elif step.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            kind = "failed"
        spans.append(_span(kind, started, end, f"attempt {step.attempts} {kind}"))
    else:
        spans.append(_span("queued", visible, end, "waiting for a worker"))
    return spans


def _step_lane(
    step: Activity,
    events: Sequence[Journal],
    operator_retries: Sequence[datetime.datetime],
    now: datetime.datetime,
    child_url: str | None,
) -> Lane:
    label = f"{step.seq}. {step.name}"
    if len(label) > MAX_LABEL:
        label = label[: MAX_LABEL - 1] + "…"
    if step.attempts > 1:
        label += f" ×{step.attempts}"
    lane = Lane(label=label, title=f"step {step.seq} {step.kind} {step.name} ({step.status})")
    end = step.finished_at or now
    if step.kind == StepKind.ACTIVITY:
        lane.spans = _activity_spans(step, events, operator_retries, now)
    elif step.kind == StepKind.SLEEP:
        planned = step.wake_at or end
        lane.spans = [
            _span(
                "sleep",
                step.created_at,
                step.finished_at or planned,
                f"sleep until {_fmt(planned)}",
            )
        ]
    elif step.kind == StepKind.SIGNAL:
        what = f"waiting for signal {step.name}"
        if step.status == JobStatus.FAILED:
            what += " (timed out)"
        lane.spans = [_span("signal", step.created_at, end, what)]
        if step.status == JobStatus.SUCCESSFUL and step.finished_at:
            lane.marks.append((step.finished_at, "▲", f"signal {step.name} received"))
    elif step.kind == StepKind.HUMAN:
        what = f"waiting for a person in role {step.name}"
        if step.status == JobStatus.FAILED:
            what += " (timed out)"
        lane.spans = [_span("signal", step.created_at, end, what)]
        if step.status == JobStatus.SUCCESSFUL and step.finished_at:
            lane.marks.append((step.finished_at, "▲", f"task for {step.name} resolved"))
    elif step.kind == StepKind.CHILD:
        lane.spans = [_span("child", step.created_at, end, f"child workflow {step.name}")]
        lane.href = child_url
    else:
        lane.marks.append((step.created_at, "◆", f"recorded value {step.name}"))
    return lane


def _job_lane(job: Job, events: Iterable[Journal], now: datetime.datetime) -> Lane:
    lane = Lane(label="job", title=f"job {job.workflow_id} ({job.status})")
    end = job.finished_at or now
    started = job.started_at or end
    lane.spans.append(_span("queued", job.created_at, started, "waiting to start"))
    if job.started_at is not None:
        lane.spans.append(_span("job", job.started_at, end, "job active"))
    symbols = {
        JournalEvent.SIGNAL_RECEIVED: "▲",
        JournalEvent.RETRIED: "↻",
        JournalEvent.CANCELLED: "✕",
        JournalEvent.FAILED: "✕",
        JournalEvent.PARKED: "‖",
    }
    for event in events:
        symbol = symbols.get(event.event)  # type: ignore[call-overload]
        if symbol is not None:
            title = f"{event.get_event_display()} {event.name}".strip()
            lane.marks.append((event.created_at, symbol, f"{title} at {_fmt(event.created_at)}"))
    return lane


def build_lanes(
    job: Job,
    steps: Sequence[Activity],
    journal: Sequence[Journal],
    now: datetime.datetime,
    child_urls: dict[int, str] | None = None,
) -> list[Lane]:
    """Return the job's lane followed by one lane per step, in step order."""
    by_step: dict[int | None, list[Journal]] = defaultdict(list)
    for event in journal:
        by_step[event.step].append(event)
    child_urls = child_urls or {}
    lanes = [_job_lane(job, by_step.get(None, []), now)]
    retries = [e.created_at for e in journal if e.event == JournalEvent.RETRIED]
    for step in steps[:MAX_LANES]:
        url = child_urls.get(step.child_id) if step.child_id else None
        lanes.append(_step_lane(step, by_step.get(step.seq, []), retries, now, url))
    return lanes


def render(
    job: Job,
    steps: Sequence[Activity],
    journal: Sequence[Journal],
    now: datetime.datetime,
    child_urls: dict[int, str] | None = None,
) -> SafeString:
    """Return the timeline of `job` as inline SVG markup."""
    lanes = build_lanes(job, steps, journal, now, child_urls)
    start = job.created_at
    end = job.finished_at or now
    for lane in lanes:
        for span in lane.spans:
            start = min(start, span.start)
        for moment, _symbol, _title in lane.marks:
            start = min(start, moment)
    total = max((end - start).total_seconds(), 0.001)

    def x(moment: datetime.datetime) -> float:
        offset = (min(moment, end) - start).total_seconds()
        return LABEL_WIDTH + max(0.0, min(1.0, offset / total)) * CHART_WIDTH

    height = TOP + ROW_HEIGHT * len(lanes) + 30 + 18 * len(_legend_rows())
    width = LABEL_WIDTH + CHART_WIDTH + 10
    parts: list[SafeString] = [
        format_html(
            '<svg class="hm-timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" '
            'width="{}" role="img" aria-label="{}">',
            width,
            height,
            width,
            f"Timeline of job {job.workflow_id}",
        )
    ]
    parts.extend(_axis(total, len(lanes)))
    for row, lane in enumerate(lanes):
        parts.extend(_lane(lane, row, x, end))
    if len(steps) > MAX_LANES:
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="hm-tl-note">{} more steps not drawn</text>',
                LABEL_WIDTH,
                TOP + ROW_HEIGHT * len(lanes) + 14,
                len(steps) - MAX_LANES,
            )
        )
    parts.extend(_legend(TOP + ROW_HEIGHT * len(lanes) + 30))
    parts.append(mark_safe("</svg>"))  # noqa: S308 - a constant
    return mark_safe("".join(parts))  # noqa: S308 - every part is built by format_html


def _axis(total: float, rows: int) -> list[SafeString]:
    step = next((s for s in _NICE_STEPS if total / s <= 8), _NICE_STEPS[-1])
    bottom = TOP + ROW_HEIGHT * rows
    parts = []
    tick = 0.0
    while tick <= total + 1e-9:
        px = LABEL_WIDTH + tick / total * CHART_WIDTH
        parts.append(
            format_html(
                '<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" class="hm-tl-grid"/>'
                '<text x="{0}" y="{3}" text-anchor="{5}" class="hm-tl-tick">{4}</text>',
                _n(px),
                TOP - 4,
                bottom,
                TOP - 9,
                _tick_label(tick, step),
                "start" if tick == 0 else "middle",
            )
        )
        tick += step
    return parts


def _lane(lane: Lane, row: int, x: Any, end: datetime.datetime) -> list[SafeString]:
    y = TOP + row * ROW_HEIGHT
    bar_y = y + (ROW_HEIGHT - BAR_HEIGHT) / 2
    parts = []
    if row % 2 == 0:
        parts.append(
            format_html(
                '<rect x="0" y="{}" width="{}" height="{}" class="hm-tl-stripe"/>',
                y,
                LABEL_WIDTH + CHART_WIDTH,
                ROW_HEIGHT,
            )
        )
    label = format_html(
        '<text x="6" y="{}" class="hm-tl-label"><title>{}</title>{}</text>',
        _n(y + ROW_HEIGHT / 2 + 4),
        lane.title,
        lane.label,
    )
    if lane.href:
        label = format_html('<a href="{}">{}</a>', lane.href, label)
    parts.append(label)
    for span in lane.spans:
        x0 = x(span.start)
        width = max(x(span.end) - x0, 1.5)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" rx="2" fill="{}" '
                'class="hm-tl-{}"><title>{}</title></rect>',
                _n(x0),
                _n(bar_y),
                _n(width),
                BAR_HEIGHT,
                COLOURS[span.kind][0],
                span.kind,
                span.title,
            )
        )
    for moment, symbol, title in lane.marks:
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" class="hm-tl-mark">'
                "<title>{}</title>{}</text>",
                _n(x(moment)),
                _n(y + ROW_HEIGHT / 2 + 4),
                title,
                symbol,
            )
        )
    return parts


LEGEND = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "attempt",
    "backoff",
    "sleep",
    "signal",
    "child",
)


def _legend_rows() -> list[list[tuple[int, str]]]:
    """Lay the legend out in rows that fit the chart's width."""
    rows: list[list[tuple[int, str]]] = [[]]
    px = 6
    for kind in LEGEND:
        needed = 14 + int(len(COLOURS[kind][1]) * 6.2) + 16
        if px + needed > LABEL_WIDTH + CHART_WIDTH and rows[-1]:
            rows.append([])
            px = 6
        rows[-1].append((px, kind))
        px += needed
    return rows


def _legend(y: int) -> list[SafeString]:
    parts = []
    for line, row in enumerate(_legend_rows()):
        for px, kind in row:
            fill, label = COLOURS[kind]
            top = y + line * 18
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="10" height="10" rx="2" fill="{}"/>'
                    '<text x="{}" y="{}" class="hm-tl-legend">{}</text>',
                    px,
                    top,
                    fill,
                    px + 14,
                    top + 9,
                    label,
                )
            )
    return parts
