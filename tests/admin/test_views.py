"""Every admin page renders, for jobs in every state."""

from __future__ import annotations

import datetime
import re

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from hotmesh_django.models import JobStatus, JournalEvent, StepKind, StreamStatus
from tests.admin.factories import (
    ActivityFactory,
    FailedJobFactory,
    JobFactory,
    JournalFactory,
    SignalFactory,
    StreamFactory,
    WorkerFactory,
)

pytestmark = pytest.mark.django_db


def change_url(job) -> str:
    return reverse("admin:hotmesh_django_job_change", args=[job.pk])


def test_changelist_shows_columns_and_badges(admin_client) -> None:
    job = FailedJobFactory(workflow_id="order-17", queue="orders")
    ActivityFactory(job=job, seq=1, attempts=2)
    ActivityFactory(job=job, seq=2, attempts=3, status=JobStatus.FAILED)
    response = admin_client.get(reverse("admin:hotmesh_django_job_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "order-17" in html
    assert 'class="hm-badge hm-failed"' in html
    assert '<td class="field-attempts">5</td>' in html
    assert "orders" in html
    # Age, as DESIGN.md lists it: how long ago, with the time itself on hover.
    assert 'class="column-age' in html
    assert re.search(
        r'<td class="field-age"><span title="\d{4}-\d\d-\d\d [^"]+">0\xa0minutes</span>', html
    )


@pytest.mark.parametrize(
    "query",
    [
        "status__exact=FAILED",
        "name=admin_tests.approval",
        "queue=orders",
        "kind__exact=WORKFLOW",
        "created_at__gte=2000-01-01+00%3A00%3A00%2B00%3A00",
        "q=order-17",
        "q=customer%3D42",
        "o=2",
        "o=-3",
    ],
)
def test_changelist_filters_render(admin_client, query: str) -> None:
    FailedJobFactory(workflow_id="order-17", queue="orders", search={"customer": 42})
    response = admin_client.get(reverse("admin:hotmesh_django_job_changelist") + "?" + query)
    assert response.status_code == 200
    assert "order-17" in response.content.decode()


def test_filters_list_distinct_names_and_queues(admin_client) -> None:
    JobFactory(name="a.one", queue="q1")
    JobFactory(name="b.two", queue="q2")
    JobFactory(name="a.one", queue="q2")
    html = admin_client.get(reverse("admin:hotmesh_django_job_changelist")).content.decode()
    assert "?name=a.one" in html and "?name=b.two" in html
    assert "?queue=q1" in html and "?queue=q2" in html


def test_search_by_attribute_key_value(admin_client) -> None:
    JobFactory(workflow_id="match-str", search={"customer": "acme", "tier": "gold"})
    JobFactory(workflow_id="match-int", search={"customer": 42})
    JobFactory(workflow_id="other", search={"customer": "globex"})
    url = reverse("admin:hotmesh_django_job_changelist")
    html = admin_client.get(url, {"q": "customer=acme"}).content.decode()
    assert "match-str" in html and "other" not in html and "match-int" not in html
    html = admin_client.get(url, {"q": "customer=42"}).content.decode()
    assert "match-int" in html and "match-str" not in html
    html = admin_client.get(url, {"q": "customer=acme tier=gold"}).content.decode()
    assert "match-str" in html
    html = admin_client.get(url, {"q": "customer=acme tier=silver"}).content.decode()
    assert "match-str" not in html
    html = admin_client.get(url, {"q": "other"}).content.decode()
    assert "other" in html and "match-str" not in html


def test_search_finds_any_workflow_id_typed_whole(admin_client) -> None:
    JobFactory(workflow_id="dGVzdC1vcmRlcg==")
    JobFactory(workflow_id="order 17")
    JobFactory(workflow_id="decoy", search={"dGVzdC1vcmRlcg": "x"})
    url = reverse("admin:hotmesh_django_job_changelist")
    for query, found in [
        ("dGVzdC1vcmRlcg==", "dGVzdC1vcmRlcg=="),
        ("order 17", "order 17"),
        ('"order 17"', "order 17"),
    ]:
        response = admin_client.get(url, {"q": query})
        rows = list(response.context["cl"].result_list.values_list("workflow_id", flat=True))
        assert rows == [found], query
    deep = "k=" + "[" * 5000 + "]" * 5000
    assert admin_client.get(url, {"q": deep}).status_code == 200


@pytest.mark.parametrize(
    "query",
    ["x=NaN", "x=1e999", "x=-Infinity", 'x="\\u0000"', 'x="\\ud800"'],
)
def test_search_for_what_no_row_can_hold_finds_nothing(admin_client, query: str) -> None:
    """Values set_search refuses (NaN, Infinity, NUL, lone surrogates) match no job;
    passed on, Postgres would refuse the query and the page would be a 500."""
    JobFactory(workflow_id="plain", search={"x": "NaN"})
    url = reverse("admin:hotmesh_django_job_changelist")
    response = admin_client.get(url, {"q": query})
    assert response.status_code == 200
    rows = list(response.context["cl"].result_list.values_list("workflow_id", flat=True))
    assert rows == ([] if query != "x=NaN" else ["plain"])


@pytest.mark.parametrize("page", ["activity", "journal", "stream", "signal"])
def test_job_rows_pages_find_a_workflow_id_typed_whole(admin_client, page: str) -> None:
    job = JobFactory(workflow_id="order 17")
    other = JobFactory(workflow_id="order")
    for owner in (job, other):
        {
            "activity": lambda j: ActivityFactory(job=j, seq=1),
            "journal": lambda j: JournalFactory(job=j),
            "stream": lambda j: StreamFactory(job=j),
            "signal": lambda j: SignalFactory(job=j),
        }[page](owner)
    url = reverse(f"admin:hotmesh_django_{page}_changelist")
    for query in ("order 17", '"order 17"'):
        response = admin_client.get(url, {"q": query})
        rows = {row.job.workflow_id for row in response.context["cl"].result_list}
        assert rows == {"order 17"}, query


def _job_in_every_state():
    now = timezone.now()
    jobs = {status: JobFactory(status=status, started_at=now) for status in JobStatus.values}
    failed = jobs[JobStatus.FAILED]
    failed.error = {
        "type": "ValueError",
        "message": "bad",
        "traceback": "Traceback ...\nValueError: bad",
    }
    failed.finished_at = now
    failed.save()
    return jobs


def test_a_value_nested_too_deeply_still_renders(admin_client) -> None:
    from django.db import connection

    job = JobFactory()
    ActivityFactory(job=job, seq=1)
    deep = '{"args": [' + "[" * 5000 + "]" * 5000 + '], "kwargs": {}}'
    with connection.cursor() as cursor:
        for table in ("hotmesh_django_job", "hotmesh_django_activity"):
            column = "id" if table == "hotmesh_django_job" else "job_id"
            cursor.execute(
                f"UPDATE {table} SET input = %s::jsonb WHERE {column} = %s", [deep, job.pk]
            )
    response = admin_client.get(change_url(job))
    assert response.status_code == 200
    assert "nested too deeply" in response.content.decode()


def test_change_view_renders_every_state(admin_client) -> None:
    for status, job in _job_in_every_state().items():
        ActivityFactory(job=job, seq=1)
        JournalFactory(job=job, event=JournalEvent.CREATED)
        response = admin_client.get(change_url(job))
        assert response.status_code == 200, status
        html = response.content.decode()
        assert job.workflow_id in html
        assert 'class="hm-timeline"' in html
        assert "Journal" in html


def test_change_view_shows_json_traceback_inline_journal_children(admin_client) -> None:
    now = timezone.now()
    parent = JobFactory(workflow_id="the-parent", status=JobStatus.RUNNING, started_at=now)
    job = FailedJobFactory(
        workflow_id="the-job",
        parent=parent,
        parent_step=1,
        input={"args": [1], "kwargs": {"x": [1, 2]}},
        output=None,
        search={"customer": "acme"},
    )
    child = JobFactory(workflow_id="the-child", parent=job, parent_step=2)
    ActivityFactory(
        job=job,
        seq=1,
        name="admin_tests.flaky",
        attempts=2,
        started_at=now - datetime.timedelta(seconds=2),
        finished_at=now,
    )
    ActivityFactory(
        job=job,
        seq=2,
        kind=StepKind.CHILD,
        name="admin_tests.steps",
        child=child,
        status=JobStatus.RUNNING,
    )
    ActivityFactory(
        job=job,
        seq=3,
        kind=StepKind.SLEEP,
        name="sleep",
        status=JobStatus.SUCCESSFUL,
        wake_at=now,
        finished_at=now,
    )
    JournalFactory(
        job=job,
        event=JournalEvent.STEP_RETRIED,
        step=1,
        attempt=1,
        data={"error": {"type": "RuntimeError"}, "delay": 0.05},
    )
    html = admin_client.get(change_url(job)).content.decode()
    assert '<pre class="hm-json">{\n  &quot;args&quot;: [\n    1\n  ],' in html
    assert '<pre class="hm-traceback">Traceback' in html
    assert "the-parent" in html and "the-child" in html
    assert "admin_tests.flaky" in html
    assert "Step failed, retry scheduled" in html
    assert "customer" in html and "acme" in html
    assert "hm-tl-backoff" in html and "hm-tl-attempt" in html and "hm-tl-sleep" in html


def test_change_view_links_the_runs_of_a_continued_workflow(admin_client) -> None:
    """hm.continue_as_new: each run links the one before and the one after it."""
    first = JobFactory(workflow_id="poll<&>#run-1", status=JobStatus.SUCCESSFUL)
    second = JobFactory(
        workflow_id="poll<&>#run-2",
        status=JobStatus.SUCCESSFUL,
        search={"previous_run": first.workflow_id},
    )
    current = JobFactory(workflow_id="poll<&>", search={"previous_run": second.workflow_id})
    pages = {
        job.pk: admin_client.get(change_url(job)).content.decode()
        for job in (first, second, current)
    }

    def link(job) -> str:
        return f'<a href="{change_url(job)}">{job.workflow_id.replace("<&>", "&lt;&amp;&gt;")}</a>'

    assert "Continued as new in " + link(second) in pages[first.pk]
    assert "Continues the run " + link(first) in pages[second.pk]
    assert "Continued as new in " + link(current) in pages[second.pk]
    assert "Continues the run " + link(second) in pages[current.pk]
    assert "Continued as new in" not in pages[current.pk]
    plain = JobFactory()
    assert "Continues the run" not in admin_client.get(change_url(plain)).content.decode()


def test_change_view_of_unknown_job_redirects(admin_client) -> None:
    response = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[999999]))
    assert response.status_code == 302


def test_a_queue_only_a_worker_serves_can_be_paused_from_the_queues_page(admin_client) -> None:
    """The page lists the queues workers serve; pausing one said "Unknown queue"."""
    from hotmesh_django.models import Queue

    WorkerFactory(queues=["ghost"])
    html = admin_client.get(reverse("admin:hotmesh_django_job_queues")).content.decode()
    assert "<code>ghost</code>" in html
    response = admin_client.post(
        reverse("admin:hotmesh_django_job_pause_queue"), {"queue": "ghost"}, follow=True
    )
    assert "Queue ghost paused." in " | ".join(str(m) for m in response.context["messages"])
    assert Queue.objects.get(name="ghost").paused


def test_active_job_duration_runs_until_now() -> None:
    """It stopped at the job's last update: a workflow waiting a minute showed 0 ms."""
    started = timezone.now() - datetime.timedelta(seconds=54)
    job = JobFactory(status=JobStatus.WAITING, started_at=started)
    type(job).objects.filter(pk=job.pk).update(updated_at=started)  # its last turn
    job.refresh_from_db()
    assert 54 <= job.duration < 60
    job.finished_at = started + datetime.timedelta(seconds=2)
    assert job.duration == 2.0


def test_queues_page(admin_client) -> None:
    job = JobFactory(queue="emails")
    StreamFactory(job=job, queue="emails")
    StreamFactory(
        job=JobFactory(queue="emails"),
        queue="emails",
        status=StreamStatus.SCHEDULED,
        visible_at=timezone.now() + datetime.timedelta(minutes=1),
    )
    FailedJobFactory(queue="emails")
    WorkerFactory(queues=["emails"], in_flight=1)
    JobFactory(queue="emails", status=JobStatus.SUCCESSFUL, finished_at=timezone.now())
    # Cancelled is not throughput: a bulk cancel of queued jobs made a queue with no
    # worker look busy.
    JobFactory(queue="emails", status=JobStatus.CANCELLED, finished_at=timezone.now())
    response = admin_client.get(reverse("admin:hotmesh_django_job_queues"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>emails</code>" in html
    row = html[html.index("<code>emails</code>") :]
    row = row[: row.index("</tr>")]
    cells = [
        re.sub(r"<[^>]+>", "", c.split("</td>")[0]).strip()
        for c in row.split('<td class="hm-num">')[1:]
    ]
    # messages ready/running/scheduled, oldest ready, jobs ready/running/waiting/failed,
    # finished in 5 min total/per min, live workers, busy/slots
    assert cells[0:3] == ["1", "0", "1"]
    assert cells[4:8] == ["2", "0", "0", "1"]
    assert cells[8] == "2"  # the successful one and the failed one
    assert cells[10:] == ["1", "1 / 4"]


def test_app_index_links_queues_and_workers(admin_client) -> None:
    html = admin_client.get(reverse("admin:app_list", args=["hotmesh_django"])).content.decode()
    assert reverse("admin:hotmesh_django_job_queues") in html
    assert reverse("admin:hotmesh_django_worker_changelist") in html


def test_workers_page_alive_and_stale(admin_client) -> None:
    WorkerFactory(host="fresh-host")
    WorkerFactory(host="old-host", last_seen=timezone.now() - datetime.timedelta(hours=1))
    html = admin_client.get(reverse("admin:hotmesh_django_worker_changelist")).content.decode()
    assert "fresh-host" in html and "old-host" in html
    assert "hm-badge hm-alive" in html and "hm-badge hm-stale" in html


@override_settings(HOTMESH_LEASE_SECONDS=3, HOTMESH_HEARTBEAT_SECONDS=1)
def test_a_worker_is_alive_by_its_own_bound_not_the_web_processs_settings() -> None:
    """A worker that beats every 5 s (and may go 30 s unseen) is alive 10 s after its
    last beat, however short the lease of the process showing it: as the rescue sees
    it (engine.claim.rescue), so the admin never calls stale what is left running."""
    from hotmesh_django.admin_views import is_live, live_workers

    now = timezone.now()
    beating = WorkerFactory(host="slow-beat", stale_seconds=30)
    gone = WorkerFactory(host="gone", stale_seconds=30)
    type(beating).objects.filter(pk=beating.pk).update(
        last_seen=now - datetime.timedelta(seconds=10)
    )
    type(gone).objects.filter(pk=gone.pk).update(last_seen=now - datetime.timedelta(seconds=31))
    beating.refresh_from_db()
    gone.refresh_from_db()
    assert is_live(beating, now) and not is_live(gone, now)
    assert list(live_workers(now)) == [beating]


@pytest.mark.parametrize("model", ["activity", "journal", "stream", "signal", "worker"])
def test_other_admins_render_read_only(admin_client, model: str) -> None:
    job = JobFactory()
    obj = {
        "activity": lambda: ActivityFactory(job=job),
        "journal": lambda: JournalFactory(job=job),
        "stream": lambda: StreamFactory(job=job),
        "signal": lambda: SignalFactory(job=job),
        "worker": lambda: WorkerFactory(),
    }[model]()
    changelist = reverse(f"admin:hotmesh_django_{model}_changelist")
    response = admin_client.get(changelist)
    assert response.status_code == 200
    assert f"/{model}/add/" not in response.content.decode()
    response = admin_client.get(reverse(f"admin:hotmesh_django_{model}_change", args=[obj.pk]))
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    for path in ("add/", f"{obj.pk}/delete/"):
        assert admin_client.get(changelist + path).status_code in (302, 403)
