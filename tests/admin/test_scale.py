"""The job list stays cheap: a bounded number of queries and no full COUNT(*)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hotmesh_django.admin import EstimatedCountPaginator, distinct_values
from hotmesh_django.models import Job, JobStatus
from tests.admin.factories import ActivityFactory, JobFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:hotmesh_django_job_changelist"


@pytest.fixture
def fifty_jobs() -> list[Job]:
    jobs = []
    for i in range(50):
        job = JobFactory(
            name=f"n{i % 5}",
            queue=f"q{i % 3}",
            status=JobStatus.FAILED if i % 2 else JobStatus.SUCCESSFUL,
        )
        ActivityFactory(job=job, seq=1, attempts=1)
        ActivityFactory(job=job, seq=2, attempts=2, kind="SLEEP")
        jobs.append(job)
    return jobs


@pytest.mark.parametrize("query", ["", "?status__exact=FAILED", "?q=customer%3D1", "?p=2"])
def test_changelist_query_count_is_bounded(
    admin_client, fifty_jobs, query, django_assert_max_num_queries
) -> None:
    # session, user, count, rows, distinct names, distinct queues (+ savepoints)
    with django_assert_max_num_queries(10):
        response = admin_client.get(reverse(CHANGELIST) + query)
    assert response.status_code == 200


def test_attempts_are_summed_without_n_plus_one(admin_client, fifty_jobs) -> None:
    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert html.count('<td class="field-attempts">3</td>') == 50
    activity_table = Job._meta.db_table.replace("job", "activity")
    reads = [q["sql"] for q in queries if activity_table in q["sql"]]
    assert len(reads) == 1  # one correlated subquery inside the page's query


def test_detail_query_count_is_bounded(admin_client, django_assert_max_num_queries) -> None:
    job = JobFactory(status=JobStatus.RUNNING)
    for seq in range(1, 41):
        ActivityFactory(job=job, seq=seq)
    with django_assert_max_num_queries(25):
        response = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    assert response.status_code == 200


def test_unfiltered_count_uses_the_planner_estimate(fifty_jobs, monkeypatch) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Job._meta.db_table}")
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 10)
    Job.objects.filter(pk__in=[j.pk for j in fifty_jobs[:5]]).delete()  # estimate lags
    with CaptureQueriesContext(connection) as queries:
        count = EstimatedCountPaginator(Job.objects.all(), 20).count
    assert count == 50
    assert not any("COUNT(" in q["sql"].upper() for q in queries)


def test_small_or_filtered_counts_are_exact_and_capped(fifty_jobs, monkeypatch) -> None:
    assert EstimatedCountPaginator(Job.objects.all(), 20).count == 50  # never analyzed
    failed = Job.objects.filter(status=JobStatus.FAILED)
    assert EstimatedCountPaginator(failed, 20).count == 25
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 10)
    with CaptureQueriesContext(connection) as queries:
        count = EstimatedCountPaginator(failed, 20).count
    assert count >= 11
    assert "LIMIT 11" in queries[0]["sql"]


def test_distinct_values_use_a_loose_index_scan(fifty_jobs) -> None:
    assert distinct_values(Job, "name") == ["n0", "n1", "n2", "n3", "n4"]
    assert distinct_values(Job, "queue", limit=2) == ["q0", "q1"]
