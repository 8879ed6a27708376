"""Human tasks: a workflow waits for a person, who claims and resolves its task."""

from __future__ import annotations

import datetime
import decimal
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

import hotmesh_django as hm
from hotmesh_django.engine import control
from hotmesh_django.engine.complete import finish_job
from hotmesh_django.models import (
    Activity,
    HumanTask,
    HumanTaskStatus,
    Job,
    JobStatus,
    StepKind,
    Stream,
    StreamKind,
)
from hotmesh_django.testing import skip_time
from tests.conftest import InProcessWorker, wait_until
from tests.integration import human_defs as h

pytestmark = pytest.mark.django_db(transaction=True)


def member(name: str, *roles: str, **fields: Any) -> User:
    user = User.objects.create_user(name, **fields)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def alice(transactional_db: None) -> User:
    return member("alice", "approvers")


@pytest.fixture
def bob(transactional_db: None) -> User:
    return member("bob", "approvers")


def task_of(handle: hm.JobHandle, step: int | None = None) -> HumanTask:
    """Wait for the job's (open) task at `step`, or its latest, and return it."""

    def find() -> HumanTask | None:
        tasks = HumanTask.objects.filter(job__workflow_id=handle.id)
        if step is not None:
            tasks = tasks.filter(step=step)
        return tasks.order_by("-step").first()

    return wait_until(find)  # type: ignore[no-any-return]


def expect(code: str, call: Callable[[], Any]) -> str:
    with pytest.raises(hm.HumanTaskError) as exc_info:
        call()
    assert exc_info.value.code == code, str(exc_info.value)
    return str(exc_info.value)


def events(handle: hm.JobHandle) -> list[str]:
    return [e["event"] for e in handle.journal()]


# -- the happy path ----------------------------------------------------------------------


def test_claim_and_resolve_resumes_the_workflow(worker: InProcessWorker, alice: User) -> None:
    handle = h.approval.start(250)
    task = task_of(handle)
    assert (task.status, task.role, task.data, task.step) == (
        "OPEN",
        "approvers",
        {"amount": 250},
        1,
    )
    wait_until(lambda: handle.status() == JobStatus.WAITING)

    claimed = hm.claim_task(task.pk, alice)
    assert (claimed.status, claimed.claimed_by, claimed.claimed_at is not None) == (
        HumanTaskStatus.CLAIMED,
        alice,
        True,
    )
    answer = {"ok": True, "limit": decimal.Decimal("99.50"), "on": datetime.date(2026, 1, 2)}
    resolved = hm.resolve_task(task.pk, answer, alice)

    assert handle.result(timeout=30) == {"answer": answer}
    assert resolved.status == hm.HumanTaskStatus.RESOLVED == HumanTaskStatus.RESOLVED
    assert resolved.resolved_by == alice and resolved.resolved_at is not None
    step = Activity.objects.get(job__workflow_id=handle.id, seq=1)
    assert (step.kind, step.status) == (StepKind.HUMAN, JobStatus.SUCCESSFUL)
    journal = handle.journal()
    kinds = [e["event"] for e in journal]
    assert kinds.index("task_created") < kinds.index("task_claimed") < kinds.index("task_resolved")
    resolved_entry = next(e for e in journal if e["event"] == "task_resolved")
    assert resolved_entry["data"] == {"task": task.pk, "by": "alice"}


def test_claiming_twice_is_harmless_and_resolving_twice_is_refused(
    worker: InProcessWorker, alice: User
) -> None:
    handle = h.approval.start(1)
    task = task_of(handle)
    hm.claim_task(task.pk, alice)
    hm.claim_task(task.pk, alice)  # already hers: nothing changes
    hm.resolve_task(task.pk, "first", alice)
    message = expect("resolved", lambda: hm.resolve_task(task.pk, "second", alice))
    assert "already resolved by alice" in message
    expect("resolved", lambda: hm.claim_task(task.pk, alice))
    expect("resolved", lambda: hm.release_task(task.pk, alice))
    assert handle.result(timeout=30) == {"answer": "first"}
    task.refresh_from_db()
    assert task.answer == "first"
    assert events(handle).count("task_resolved") == 1
    assert events(handle).count("task_claimed") == 1


def test_only_the_claimant_resolves_or_releases(
    worker: InProcessWorker, alice: User, bob: User
) -> None:
    handle = h.approval.start(2)
    task = task_of(handle)
    expect("not_claimant", lambda: hm.resolve_task(task.pk, "unclaimed", alice))
    hm.claim_task(task.pk, alice)
    assert "claimed by alice" in expect("claimed", lambda: hm.claim_task(task.pk, bob))
    expect("not_claimant", lambda: hm.resolve_task(task.pk, "bob's", bob))
    expect("not_claimant", lambda: hm.release_task(task.pk, bob))

    released = hm.release_task(task.pk, alice)
    assert (released.status, released.claimed_by, released.claimed_at) == ("OPEN", None, None)
    hm.claim_task(task.pk, bob)
    hm.resolve_task(task.pk, "bob's", bob)
    assert handle.result(timeout=30) == {"answer": "bob's"}
    assert "task_released" in events(handle)


def test_users_outside_the_role_are_refused(worker: InProcessWorker, alice: User) -> None:
    carol = member("carol", "auditors")
    inactive = member("dave", "approvers", is_active=False)
    root = User.objects.create_superuser("root")
    handle = h.approval.start(3)
    task = task_of(handle)

    message = expect("not_allowed", lambda: hm.claim_task(task.pk, carol))
    assert "carol is not in role 'approvers'" in message
    expect("not_allowed", lambda: hm.claim_task(task.pk, inactive))
    hm.claim_task(task.pk, alice)
    expect("not_allowed", lambda: hm.resolve_task(task.pk, "x", carol))
    expect("not_allowed", lambda: hm.release_task(task.pk, carol))
    # A superuser needs no group, and may free a claim someone else holds.
    hm.release_task(task.pk, root)
    hm.claim_task(task.pk, root)
    hm.resolve_task(task.pk, "by root", root)
    assert handle.result(timeout=30) == {"answer": "by root"}
    expect("not_found", lambda: hm.claim_task(task.pk + 1000, alice))


def test_a_second_wait_gets_its_own_task_and_replay_keeps_the_first_answer(
    worker: InProcessWorker, alice: User
) -> None:
    auditor = member("erin", "auditors")
    handle = h.two_steps.start()
    first = task_of(handle, step=1)
    hm.claim_task(first.pk, alice)
    hm.resolve_task(first.pk, {"approved": 1}, alice)
    second = task_of(handle, step=3)
    assert second.role == "auditors"
    assert second.data == {"stage": 2, "first": {"approved": 1}}
    expect("not_allowed", lambda: hm.claim_task(second.pk, alice))
    hm.claim_task(second.pk, auditor)
    hm.resolve_task(second.pk, "audited", auditor)
    assert handle.result(timeout=30) == [{"approved": 1}, 3, "audited"]
    assert HumanTask.objects.filter(job__workflow_id=handle.id).count() == 2


# -- timeouts ----------------------------------------------------------------------------


def test_timeout_expires_the_task(worker: InProcessWorker, alice: User) -> None:
    handle = h.approval.start(4, 0.3)
    task = task_of(handle)
    assert task.due_at is not None
    result = handle.result(timeout=30)
    assert "No one in role 'approvers' answered" in result["timed_out"]
    task.refresh_from_db()
    assert task.status == HumanTaskStatus.EXPIRED
    assert "task_expired" in events(handle)
    expect("expired", lambda: hm.claim_task(task.pk, alice))
    expect("expired", lambda: hm.resolve_task(task.pk, "late", alice))


def test_the_due_time_holds_while_no_worker_runs(start_worker: Any, alice: User) -> None:
    first = start_worker()
    handle = h.approval.start(5, 0.5)
    task = task_of(handle)
    hm.claim_task(task.pk, alice)
    wait_until(lambda: Stream.objects.filter(kind=StreamKind.TIMER).exists())
    first.stop()
    time.sleep(0.7)  # past due, and no worker has expired the task
    assert HumanTask.objects.get(pk=task.pk).status == HumanTaskStatus.CLAIMED
    assert "past its due time" in expect("expired", lambda: hm.resolve_task(task.pk, "x", alice))
    start_worker()
    assert "timed_out" in handle.result(timeout=30)
    assert HumanTask.objects.get(pk=task.pk).status == HumanTaskStatus.EXPIRED


def test_an_uncaught_timeout_fails_the_workflow(worker: InProcessWorker) -> None:
    handle = h.uncaught.start()
    with pytest.raises(hm.WorkflowFailed) as exc_info:
        handle.result(timeout=30)
    assert exc_info.value.type == "HumanTaskTimeout"
    assert task_of(handle).status == HumanTaskStatus.EXPIRED


def test_a_zero_timeout_is_a_signal_timeout_at_once(worker: InProcessWorker) -> None:
    handle = h.as_signal_timeout.start()
    assert handle.result(timeout=30) == "HumanTaskTimeout"
    assert task_of(handle).status == HumanTaskStatus.EXPIRED
    assert not Stream.objects.filter(job__workflow_id=handle.id).exists()


def test_skip_time_fires_human_timeouts(worker: InProcessWorker) -> None:
    with skip_time(timeouts=True):
        handle = h.approval.start(6, 3600)
        assert "timed_out" in handle.result(timeout=30)
    assert task_of(handle).status == HumanTaskStatus.EXPIRED


# -- cancel, retry, re-run ---------------------------------------------------------------


def test_cancelling_the_job_cancels_its_open_task(worker: InProcessWorker, alice: User) -> None:
    handle = h.approval.start(7)
    task = task_of(handle)
    hm.claim_task(task.pk, alice)
    assert handle.cancel()
    task.refresh_from_db()
    assert task.status == HumanTaskStatus.CANCELLED
    assert "its job is CANCELLED" in expect("cancelled", lambda: hm.resolve_task(task.pk, 1, alice))
    expect("cancelled", lambda: hm.claim_task(task.pk, alice))
    assert handle.status() == JobStatus.CANCELLED


def test_a_retried_job_reopens_its_cancelled_task(worker: InProcessWorker, alice: User) -> None:
    handle = h.approval.start(8, 3600)
    task = task_of(handle)
    hm.claim_task(task.pk, alice)
    wait_until(lambda: handle.status() == JobStatus.WAITING)
    job = Job.objects.get(workflow_id=handle.id)
    # A failure from outside (an operator, a bug) while the task is open.
    assert finish_job(job.pk, JobStatus.FAILED, error={"type": "Boom", "message": "boom"})
    assert HumanTask.objects.get(pk=task.pk).status == HumanTaskStatus.CANCELLED

    assert control.retry_job(handle.id)
    reopened = HumanTask.objects.get(pk=task.pk)
    assert (reopened.status, reopened.claimed_by) == (HumanTaskStatus.OPEN, None)
    # Its timeout is armed again.
    assert Stream.objects.filter(job=job, kind=StreamKind.TIMER, step=1).exists()
    hm.claim_task(task.pk, alice)
    hm.resolve_task(task.pk, "after retry", alice)
    assert handle.result(timeout=30) == {"answer": "after retry"}


def test_rerun_from_a_step_replaces_its_task(worker: InProcessWorker, alice: User) -> None:
    handle = h.two_steps.start()
    first = task_of(handle, step=1)
    hm.claim_task(first.pk, alice)
    hm.resolve_task(first.pk, "one", alice)
    old = task_of(handle, step=3)
    wait_until(lambda: handle.status() == JobStatus.WAITING)

    assert control.rerun_from_step(handle.id, 3)
    assert not HumanTask.objects.filter(pk=old.pk).exists()
    new = wait_until(lambda: HumanTask.objects.filter(job__workflow_id=handle.id, step=3).first())
    assert new.pk != old.pk and new.status == HumanTaskStatus.OPEN
    auditor = member("frank", "auditors")
    hm.claim_task(new.pk, auditor)
    hm.resolve_task(new.pk, "two", auditor)
    assert handle.result(timeout=30) == ["one", 3, "two"]
    assert HumanTask.objects.get(pk=first.pk).status == HumanTaskStatus.RESOLVED


# -- bad input ---------------------------------------------------------------------------


def test_bad_input() -> None:
    with pytest.raises(hm.HotmeshError, match="inside a running workflow"):
        hm.wait_for_human("approvers")
    for role in ("", "   ", "x" * 151, None):
        with pytest.raises(ValueError, match="role must be the name of an auth Group"):
            hm.wait_for_human(role)  # type: ignore[arg-type]
    expect("not_found", lambda: hm.claim_task("nope", None))  # type: ignore[arg-type]
    expect("not_found", lambda: hm.claim_task(True, None))


def test_data_that_is_not_json_fails_the_workflow(worker: InProcessWorker) -> None:
    handle = h.bad_data.start()
    with pytest.raises(hm.WorkflowFailed, match="TypeError: the human task's data"):
        handle.result(timeout=30)
    assert not HumanTask.objects.exists()


def test_an_answer_that_is_not_json_changes_nothing(worker: InProcessWorker, alice: User) -> None:
    handle = h.approval.start(9)
    task = task_of(handle)
    hm.claim_task(task.pk, alice)
    with pytest.raises(TypeError, match="the answer"):
        hm.resolve_task(task.pk, {"x": object()}, alice)
    assert HumanTask.objects.get(pk=task.pk).status == HumanTaskStatus.CLAIMED
    hm.resolve_task(task.pk, None, alice)
    assert handle.result(timeout=30) == {"answer": None}


def test_anonymous_users_are_refused(worker: InProcessWorker) -> None:
    from django.contrib.auth.models import AnonymousUser

    handle = h.approval.start(10)
    task = task_of(handle)
    expect("not_allowed", lambda: hm.claim_task(task.pk, AnonymousUser()))
    expect("not_allowed", lambda: hm.claim_task(task.pk, None))
    handle.cancel()


def test_the_inbox_lists_what_a_user_can_act_on(
    worker: InProcessWorker, alice: User, bob: User
) -> None:
    carol = member("carol", "auditors")
    one, two = h.approval.start(11), h.approval.start(12)
    t1, t2 = task_of(one), task_of(two)
    hm.claim_task(t1.pk, bob)
    assert list(HumanTask.objects.actionable_by(alice)) == [t2]
    assert set(HumanTask.objects.actionable_by(bob)) == {t1, t2}
    assert not HumanTask.objects.actionable_by(carol).exists()
    assert set(HumanTask.objects.in_roles_of(alice)) == {t1, t2}
    one.cancel()
    two.cancel()
    assert not HumanTask.objects.actionable_by(bob).exists()


def test_the_inbox_query_uses_the_open_tasks_index(alice: User) -> None:
    from django.db import connection

    job = Job.objects.create(workflow_id="many", name="t.human.approval")
    HumanTask.objects.bulk_create(
        HumanTask(
            job=job,
            step=i,
            role=("approvers", "auditors", "clerks")[i % 3],
            status=HumanTaskStatus.OPEN if i % 100 == 0 else HumanTaskStatus.RESOLVED,
        )
        for i in range(1, 6001)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {HumanTask._meta.db_table}")
    inbox = HumanTask.objects.actionable_by(alice).order_by("-id")[:50]
    plan = inbox.explain()
    assert "hotmesh_task_open_role_idx" in plan, plan
    assert len(inbox) == 20  # i = 300, 600, ... are the approvers' open ones


def test_resolve_waits_for_a_turn_holding_the_job(worker: InProcessWorker, alice: User) -> None:
    """An answer takes the job's row lock as a turn does, so a turn that is expiring
    the task and the answer run one after the other, never interleaved."""
    import threading

    from django.db import connections

    from hotmesh_django.engine.notify import connect_raw

    handle = h.approval.start(13)
    task = task_of(handle)
    hm.claim_task(task.pk, alice)
    wait_until(lambda: handle.status() == JobStatus.WAITING)
    job = Job.objects.get(workflow_id=handle.id)
    done = threading.Event()

    def answer() -> None:
        try:
            hm.resolve_task(task.pk, "after the turn", alice)
            done.set()
        finally:
            connections.close_all()

    # The raw connection stands in for a worker mid-turn.
    with connect_raw() as turn, turn.transaction():
        turn.execute(
            f"SELECT 1 FROM {Job._meta.db_table} WHERE id = %s FOR NO KEY UPDATE", [job.pk]
        )
        thread = threading.Thread(target=answer)
        thread.start()
        assert not done.wait(0.5)
        assert HumanTask.objects.get(pk=task.pk).status == HumanTaskStatus.CLAIMED
    thread.join(10)
    assert done.is_set()
    assert handle.result(timeout=30) == {"answer": "after the turn"}
