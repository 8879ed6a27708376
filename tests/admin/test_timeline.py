"""The SVG timeline: spans per step kind, retries, links, limits, escaping."""

from __future__ import annotations

import datetime
import re

import pytest
from django.utils import timezone

from hotmesh_django import timeline
from hotmesh_django.models import Activity, Job, JobStatus, Journal, JournalEvent, StepKind

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def job(**kwargs) -> Job:
    fields = {
        "pk": 1,
        "workflow_id": "wf",
        "name": "w",
        "status": JobStatus.SUCCESSFUL,
        "created_at": T0,
        "started_at": at(1),
        "finished_at": at(100),
        "updated_at": at(100),
    }
    return Job(**{**fields, **kwargs})


def step(seq: int, **kwargs) -> Activity:
    fields = {
        "job_id": 1,
        "seq": seq,
        "kind": StepKind.ACTIVITY,
        "name": f"s{seq}",
        "status": JobStatus.SUCCESSFUL,
        "attempts": 1,
        "created_at": at(2),
    }
    return Activity(**{**fields, **kwargs})


def spans(svg: str, kind: str) -> list[tuple[float, float]]:
    found = re.findall(
        rf'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*class="hm-tl-{kind}"', svg
    )
    return [(float(x), float(w)) for x, w in found]


def test_activity_with_retries_shows_attempts_backoff_queue_and_run() -> None:
    s = step(1, attempts=3, started_at=at(30), finished_at=at(40))
    events = [
        Journal(
            job_id=1,
            step=1,
            event=JournalEvent.STEP_RETRIED,
            attempt=1,
            created_at=at(5),
            data={"delay": 5},
        ),
        Journal(
            job_id=1,
            step=1,
            event=JournalEvent.STEP_RETRIED,
            attempt=2,
            created_at=at(15),
            data={"delay": 10},
        ),
    ]
    svg = str(timeline.render(job(), [s], events, at(100)))
    assert len(spans(svg, "attempt")) == 2
    assert len(spans(svg, "backoff")) == 2
    queued = spans(svg, "queued")  # the job's wait to start, then the step's last wait
    assert len(queued) == 2
    ((x, w),) = spans(svg, "succeeded")
    scale = timeline.CHART_WIDTH / 100
    assert x == pytest.approx(timeline.LABEL_WIDTH + 30 * scale, abs=0.2)
    assert w == pytest.approx(10 * scale, abs=0.2)
    assert "s1 ×3" in svg


def test_kinds_have_their_own_colours_and_child_links() -> None:
    steps = [
        step(1, kind=StepKind.SLEEP, name="sleep", wake_at=at(20), finished_at=at(20)),
        step(2, kind=StepKind.SIGNAL, name="approved", finished_at=at(50)),
        step(3, kind=StepKind.CHILD, name="kid", child_id=7, finished_at=at(60)),
        step(4, kind=StepKind.VALUE, name="now"),
        step(5, status=JobStatus.FAILED, started_at=at(60), finished_at=at(70)),
    ]
    svg = str(timeline.render(job(), steps, [], at(100), {7: "/admin/job/7/change/"}))
    for kind in ("sleep", "signal", "child", "failed"):
        assert spans(svg, kind), kind
    assert '<a href="/admin/job/7/change/">' in svg
    assert "◆" in svg and "▲" in svg  # the recorded value, the signal's arrival
    assert svg.startswith('<svg class="hm-timeline"') and svg.endswith("</svg>")


def test_running_job_is_drawn_up_to_now() -> None:
    running = job(status=JobStatus.RUNNING, finished_at=None)
    s = step(1, status=JobStatus.RUNNING, started_at=at(10), finished_at=None)
    svg = str(timeline.render(running, [s], [], at(20)))
    ((x, w),) = spans(svg, "running")
    assert x + w == pytest.approx(timeline.LABEL_WIDTH + timeline.CHART_WIDTH, abs=0.2)


def test_many_steps_are_cut_with_a_note() -> None:
    steps = [step(i) for i in range(1, timeline.MAX_LANES + 11)]
    svg = str(timeline.render(job(), steps, [], at(100)))
    assert "10 more steps not drawn" in svg
    assert svg.count('class="hm-tl-label"') == timeline.MAX_LANES + 1


def test_names_are_escaped() -> None:
    s = step(1, name="<script>alert(1)</script>")
    svg = str(
        timeline.render(
            job(workflow_id="<b>x</b>"),
            [s],
            [
                Journal(
                    job_id=1,
                    event=JournalEvent.SIGNAL_RECEIVED,
                    name="<i>sig</i>",
                    created_at=at(3),
                )
            ],
            at(100),
        )
    )
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg
    assert "&lt;script&gt;" in svg


def test_zero_length_job_and_future_times() -> None:
    now = timezone.now()
    instant = job(created_at=now, started_at=now, finished_at=now, updated_at=now)
    s = step(
        1,
        kind=StepKind.SLEEP,
        created_at=now,
        wake_at=now + datetime.timedelta(days=1),
        status=JobStatus.WAITING,
        finished_at=None,
    )
    svg = str(timeline.render(instant, [s], [], now))
    assert spans(svg, "sleep")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.25, "250 ms"),
        (3.21, "3.2 s"),
        (42, "42 s"),
        (200, "3 min 20 s"),
        (7200, "2 h"),
        (90000, "25 h"),
        (200000, "2 d 7 h"),
    ],
)
def test_human_duration(seconds, text) -> None:
    assert timeline.human_duration(seconds) == text


def test_operator_retry_resumes_the_lane_at_the_retry() -> None:
    s = step(1, attempts=1, started_at=at(60), finished_at=at(70))
    events = [
        Journal(job_id=1, step=1, event=JournalEvent.STEP_FAILED, attempt=1, created_at=at(10)),
        Journal(job_id=1, event=JournalEvent.RETRIED, created_at=at(50)),
    ]
    svg = str(timeline.render(job(), [s], events, at(100)))
    scale = timeline.CHART_WIDTH / 100
    ((fx, fw),) = spans(svg, "failed")
    assert fx + fw == pytest.approx(timeline.LABEL_WIDTH + 10 * scale, abs=0.2)
    step_queued = spans(svg, "queued")[-1]
    assert step_queued[0] == pytest.approx(timeline.LABEL_WIDTH + 50 * scale, abs=0.2)
    assert "↻" in svg
