"""The human-task admin: an inbox per role, claim/release/resolve buttons, permissions."""

from __future__ import annotations

import datetime

import factory
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

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
from hotmesh_django.redaction import MASK
from tests.admin.factories import ActivityFactory, JobFactory
from tests.integration import human_defs

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


class HumanTaskFactory(factory.django.DjangoModelFactory):
    """A task with the WAITING human step of a WAITING job behind it."""

    class Meta:
        model = HumanTask
        skip_postgeneration_save = True

    job = factory.SubFactory(JobFactory, status=JobStatus.WAITING)
    step = 1
    role = "approvers"
    data = factory.LazyFunction(lambda: {"amount": 10})

    @factory.post_generation
    def waiting_step(obj: HumanTask, create: bool, extracted: object, **kwargs: object) -> None:
        ActivityFactory(
            job=obj.job,
            seq=obj.step,
            kind=StepKind.HUMAN,
            name=obj.role,
            status=JobStatus.WAITING,
            input={"data": obj.data, "timeout": None},
        )


def staff(name: str, *roles: str, perms: tuple[str, ...] = ("view", "change")) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=True)  # noqa: S106
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="hotmesh_django",
            codename__in=[f"{p}_humantask" for p in perms] + ["view_job"],
        )
    )
    return user


def client_for(user: User, **kwargs: object) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def approver() -> User:
    return staff("approver", "approvers")


@pytest.fixture
def approver_client(approver: User) -> Client:
    return client_for(approver)


@pytest.fixture
def outsider_client() -> Client:
    """Holds the model permissions, but is not in the approvers group."""
    return client_for(staff("outsider", "auditors"))


def url(name: str, task: HumanTask) -> str:
    return reverse(f"admin:hotmesh_django_humantask_{name}", args=[task.pk])


def messages_text(response) -> str:
    return " | ".join(str(m) for m in response.context["messages"])


def fresh(task: HumanTask) -> HumanTask:
    return HumanTask.objects.get(pk=task.pk)


# -- the inbox ---------------------------------------------------------------------------


def test_the_list_shows_open_tasks_of_the_users_roles(approver_client, approver) -> None:
    mine = HumanTaskFactory(data={"what": "mine-to-do"})
    HumanTaskFactory(role="auditors", data={"what": "other-role"})
    HumanTaskFactory(status=HumanTaskStatus.RESOLVED, data={"what": "done-already"})
    claimed = HumanTaskFactory(
        status=HumanTaskStatus.CLAIMED, claimed_by=approver, data={"what": "claimed-by-me"}
    )
    changelist = reverse("admin:hotmesh_django_humantask_changelist")

    inbox = approver_client.get(changelist).content.decode()
    assert "mine-to-do" in inbox and "claimed-by-me" in inbox
    assert "other-role" not in inbox and "done-already" not in inbox

    everything = approver_client.get(changelist + "?status=all").content.decode()
    assert "done-already" in everything and "other-role" not in everything
    resolved = approver_client.get(changelist + "?status=RESOLVED").content.decode()
    assert "done-already" in resolved and "mine-to-do" not in resolved
    by_role = approver_client.get(changelist + "?status=all&role=approvers")
    assert by_role.status_code == 200
    assert mine.pk and claimed.pk


def test_the_job_page_links_its_tasks_and_says_who_it_waits_for(admin_client) -> None:
    task = HumanTaskFactory()
    page = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[task.job_id]))
    html = page.content.decode()
    assert url("change", task) in html
    assert "Waiting for a person in role <code>approvers</code>" in html
    # A human wait is something to wait for: no "no worker will pick it up" warning.
    assert "no worker will pick it up" not in html


# -- claim, release, resolve ---------------------------------------------------------------


def test_claim_then_resolve_through_the_buttons(approver_client, approver) -> None:
    task = HumanTaskFactory()
    detail = approver_client.get(url("change", task)).content.decode()
    assert url("claim", task) in detail and url("resolve", task) not in detail

    response = approver_client.post(url("claim", task), follow=True)
    assert response.redirect_chain[-1][0] == url("change", task)
    assert f"Task {task.pk} claimed" in messages_text(response)
    assert (fresh(task).status, fresh(task).claimed_by) == (HumanTaskStatus.CLAIMED, approver)
    detail = response.content.decode()
    assert url("resolve", task) in detail and url("release", task) in detail
    assert url("claim", task) not in detail

    response = approver_client.post(
        url("resolve", task), {"answer": '{"approved": true, "note": "ok"}'}, follow=True
    )
    assert f"Task {task.pk} resolved" in messages_text(response)
    done = fresh(task)
    assert (done.status, done.answer, done.resolved_by) == (
        HumanTaskStatus.RESOLVED,
        {"approved": True, "note": "ok"},
        approver,
    )
    step = Activity.objects.get(job=task.job, seq=1)
    assert (step.status, step.output) == (JobStatus.SUCCESSFUL, {"approved": True, "note": "ok"})
    assert Stream.objects.filter(job=task.job, kind=StreamKind.TURN).exists()
    assert "This task is Resolved" in response.content.decode()

    again = approver_client.post(url("resolve", task), {"answer": "1"}, follow=True)
    assert "Refused: Task" in messages_text(again)
    assert "already resolved by approver" in messages_text(again)
    assert fresh(task).answer == {"approved": True, "note": "ok"}


def test_bad_json_is_a_form_error(approver_client, approver) -> None:
    task = HumanTaskFactory(status=HumanTaskStatus.CLAIMED, claimed_by=approver)
    response = approver_client.post(url("resolve", task), {"answer": "{not json"})
    assert response.status_code == 400
    assert "The answer is not valid JSON" in response.content.decode()
    response = approver_client.post(url("resolve", task), {"answer": '{"__hm__": 1}'})
    assert response.status_code == 400
    assert "reserved key" in response.content.decode()
    response = approver_client.post(url("resolve", task), {"answer": ""})
    assert response.status_code == 400
    assert fresh(task).status == HumanTaskStatus.CLAIMED


def test_release_and_a_claim_held_by_someone_else(approver_client, approver) -> None:
    colleague = staff("colleague", "approvers")
    task = HumanTaskFactory(status=HumanTaskStatus.CLAIMED, claimed_by=colleague)
    detail = approver_client.get(url("change", task)).content.decode()
    assert "colleague has claimed this task." in detail
    response = approver_client.post(url("claim", task), follow=True)
    assert "Refused: Task" in messages_text(response)
    assert "claimed by colleague" in messages_text(response)
    response = approver_client.post(url("release", task), follow=True)
    assert "Refused" in messages_text(response)
    assert fresh(task).claimed_by == colleague

    response = client_for(colleague).post(url("release", task), follow=True)
    assert f"Task {task.pk} released" in messages_text(response)
    assert fresh(task).status == HumanTaskStatus.OPEN


def test_a_superuser_may_release_anyones_claim(admin_client, approver) -> None:
    task = HumanTaskFactory(status=HumanTaskStatus.CLAIMED, claimed_by=approver)
    assert "Release approver’s claim" in admin_client.get(url("change", task)).content.decode()
    admin_client.post(url("release", task))
    assert fresh(task).status == HumanTaskStatus.OPEN


def test_bulk_claim(approver_client, approver) -> None:
    tasks = [HumanTaskFactory(), HumanTaskFactory(), HumanTaskFactory(status="EXPIRED")]
    response = approver_client.post(
        reverse("admin:hotmesh_django_humantask_changelist") + "?status=all",
        {"action": "claim_selected", "_selected_action": [t.pk for t in tasks]},
        follow=True,
    )
    text = messages_text(response)
    assert "2 task(s) claimed." in text and "expired" in text
    assert [fresh(t).status for t in tasks] == ["CLAIMED", "CLAIMED", "EXPIRED"]


# -- permissions --------------------------------------------------------------------------


def test_users_outside_the_role_get_403(outsider_client) -> None:
    task = HumanTaskFactory()
    assert outsider_client.get(url("change", task)).status_code == 403
    assert outsider_client.post(url("claim", task)).status_code == 403
    assert outsider_client.post(url("release", task)).status_code == 403
    assert outsider_client.post(url("resolve", task), {"answer": "1"}).status_code == 403
    inbox = outsider_client.get(
        reverse("admin:hotmesh_django_humantask_changelist") + "?status=all"
    )
    assert url("change", task) not in inbox.content.decode()
    assert fresh(task).status == HumanTaskStatus.OPEN


def test_group_members_without_the_change_permission_only_view() -> None:
    viewer = client_for(staff("viewer", "approvers", perms=("view",)))
    task = HumanTaskFactory()
    page = viewer.get(url("change", task))
    assert page.status_code == 200
    assert "You can view this task but not act on it" in page.content.decode()
    assert viewer.post(url("claim", task)).status_code == 403
    assert fresh(task).status == HumanTaskStatus.OPEN


def test_actions_need_post_and_csrf(approver) -> None:
    task = HumanTaskFactory()
    assert client_for(approver).get(url("claim", task)).status_code == 405
    strict = client_for(approver, enforce_csrf_checks=True)
    assert strict.post(url("claim", task)).status_code == 403
    assert fresh(task).status == HumanTaskStatus.OPEN


def test_unknown_task_is_404(approver_client) -> None:
    assert approver_client.post("/admin/hotmesh_django/humantask/999999/claim/").status_code == 404


# -- escaping ----------------------------------------------------------------------------


@override_settings(HOTMESH_REDACT_KEYS=["password", "^iban$"])
def test_task_pages_mask_secrets_in_data_and_answer(admin_client) -> None:
    secret = "s3cr3t-in-a-task"
    task = HumanTaskFactory(
        data={"customer": "acme", "iban": secret},
        status=HumanTaskStatus.RESOLVED,
        answer={"ok": True, "password": secret},
    )
    for page in (
        reverse("admin:hotmesh_django_humantask_changelist") + "?status=all",
        url("change", task),
    ):
        html = admin_client.get(page).content.decode()
        assert secret not in html, page
        assert MASK in html and "acme" in html, page
    assert fresh(task).answer == {"ok": True, "password": secret}  # stored as it was


def test_task_pages_escape_user_data(admin_client) -> None:
    job = JobFactory(workflow_id=f"wid-{XSS}", status=JobStatus.WAITING)
    task = HumanTaskFactory(
        job=job,
        role=f"role-{XSS}",
        data={"html": XSS, XSS: [XSS]},
        due_at=timezone.now() + datetime.timedelta(hours=1),
    )
    admin_client.post(url("claim", task))
    pages = [
        reverse("admin:hotmesh_django_humantask_changelist"),
        reverse("admin:hotmesh_django_humantask_changelist") + "?status=all&role=" + XSS,
        url("change", task),
        reverse("admin:hotmesh_django_job_change", args=[job.pk]),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert "<script>alert" not in html, page
    detail = admin_client.get(url("change", task)).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail  # shown, as text
    bad = admin_client.post(url("resolve", task), {"answer": XSS})
    assert bad.status_code == 400
    assert "<script>alert" not in bad.content.decode()


# -- with real workers ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_workflow_resumes_with_the_answer_given_in_the_admin(drain) -> None:
    approver = staff("approver", "approvers")
    client = client_for(approver)
    handle = human_defs.approval.start(120)
    drain()
    assert handle.status() == JobStatus.WAITING
    task = HumanTask.objects.get(job__workflow_id=handle.id)
    client.post(url("claim", task))
    client.post(url("resolve", task), {"answer": '{"approved": false}'})
    drain()
    assert handle.result(timeout=5) == {"answer": {"approved": False}}
    job = Job.objects.get(workflow_id=handle.id)
    assert job.status == JobStatus.SUCCESSFUL
