"""The tables: Job, Activity (a job's durable steps), Stream (the work queue),
Journal (each job's history), Signal (buffered signals), HumanTask (a person's
answer a workflow waits for), Worker and Schedule."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from hotmesh_django.choices import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    OPEN_TASK_STATUSES,
    TRANSITIONS,
    HumanTaskStatus,
    JobKind,
    JobStatus,
    JournalEvent,
    StepKind,
    StreamKind,
    StreamStatus,
    sources_of,
    task_sources_of,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "OPEN_TASK_STATUSES",
    "TRANSITIONS",
    "Activity",
    "HumanTask",
    "HumanTaskStatus",
    "Job",
    "JobKind",
    "JobStatus",
    "Journal",
    "Queue",
    "JournalEvent",
    "Schedule",
    "Signal",
    "StepKind",
    "Stream",
    "StreamKind",
    "StreamStatus",
    "Worker",
    "sources_of",
    "task_sources_of",
]


class SealedJSONField(models.JSONField):
    """A JSONField whose values pass through HOTMESH_CODEC (see `serialization.seal`).

    Sealed on every save path (save, create, update, bulk_create, bulk_update all call
    get_db_prep_save), unsealed when loaded. A value this process cannot unseal loads
    as `serialization.Unreadable` instead of failing the whole row.
    """

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        from hotmesh_django.serialization import Unreadable, seal

        if isinstance(value, Unreadable):
            value = value.stored
        elif value is not None and not hasattr(value, "resolve_expression"):
            value = seal(value)
        return super().get_db_prep_save(value, connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        from hotmesh_django.serialization import Undecodable, open_stored

        try:
            decoded = super().from_db_value(value, expression, connection)
        except RecursionError:  # see serialization.loads_stored
            return Undecodable(len(value))
        return open_stored(decoded)

    def deconstruct(self) -> Any:
        # The column is plain jsonb either way: migrations see a JSONField, so turning
        # the codec on or off never needs a schema change.
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs


def _max_len(choices: type[models.TextChoices]) -> int:
    return max(len(v) for v in choices.values)


def _status_check(model: str, field: str, choices: type[models.TextChoices]) -> Any:
    return models.CheckConstraint(
        condition=Q(**{f"{field}__in": choices.values}),
        name=f"hotmesh_{model}_{field}_valid",
    )


class JobQuerySet(models.QuerySet["Job"]):
    def transition(self, to: str, **fields: Any) -> int:
        """Move the rows in this queryset to `to` where that move is allowed.

        Return how many rows moved. Rows in any other status are left alone, so a
        caller acting on stale data cannot overwrite newer state.
        """
        return self.filter(status__in=sources_of(to)).update(status=to, updated_at=Now(), **fields)

    def active(self) -> JobQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)


class Job(models.Model):
    workflow_id = models.CharField(_("workflow id"), max_length=255, unique=True)
    name = models.CharField(_("name"), max_length=255, db_index=True)
    kind = models.CharField(
        _("kind"),
        max_length=_max_len(JobKind),
        choices=JobKind.choices,
        default=JobKind.WORKFLOW,
    )
    queue = models.CharField(_("queue"), max_length=100, default="default", db_index=True)
    status = models.CharField(
        _("status"),
        max_length=_max_len(JobStatus),
        choices=JobStatus.choices,
        default=JobStatus.READY,
    )
    priority = models.IntegerField(_("priority"), default=0)
    # Copied onto the job's messages, for per-key limits (e.g. a tenant id).
    concurrency_key = models.CharField(_("concurrency key"), max_length=255, null=True, blank=True)
    input = SealedJSONField(_("input"), default=dict)
    output = SealedJSONField(_("output"), null=True, blank=True)
    error = SealedJSONField(_("error"), null=True, blank=True)
    # Plain on purpose, whatever HOTMESH_CODEC says: search attributes exist to be
    # searched (GIN index, admin filter), so they must stay readable by Postgres.
    search = models.JSONField(_("search attributes"), default=dict, blank=True)
    # Published by the workflow with hm.set_state(); read by handle.state() without
    # waking it.
    state = SealedJSONField(_("published state"), default=dict, blank=True)
    # Set by handle.result() while it waits: only then does finishing NOTIFY. A NOTIFY
    # serialises commits server-wide, which would cap throughput for unwatched jobs.
    watched = models.BooleanField(_("watched"), default=False, db_default=False)
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="children",
        verbose_name=_("parent"),
        db_index=False,  # a partial index in Meta: most jobs have no parent
    )
    # The parent's step this child answers, so its outcome lands in the right place.
    parent_step = models.IntegerField(_("parent step"), null=True, blank=True)
    deadline_at = models.DateTimeField(_("deadline"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "-id"], name="hotmesh_job_status_idx"),
            # search also has a GIN index, hotmesh_job_search_gin, created by SQL in
            # migration 0001 so the app does not need django.contrib.postgres.
            # Retention and "finished lately" read finished jobs by age.
            models.Index(
                fields=["finished_at"],
                name="hotmesh_job_finished_idx",
                condition=Q(finished_at__isnull=False),
            ),
            # Partial, so the many jobs without a parent cost the index nothing on
            # every insert and status change (children are looked up by parent).
            models.Index(
                fields=["parent"],
                name="hotmesh_job_parent_idx",
                condition=Q(parent__isnull=False),
            ),
        ]
        constraints = [
            _status_check("job", "status", JobStatus),
            _status_check("job", "kind", JobKind),
        ]

    def __str__(self) -> str:
        return self.workflow_id

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish; for a job still active, until now."""
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class Activity(models.Model):
    """One durable step of a job: an activity call, a timer, a signal wait, a child
    workflow or a recorded value. `(job, seq)` is the step's identity in replay."""

    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="activities",
        verbose_name=_("job"),
        db_index=False,  # the (job, seq) unique index serves lookups by job
    )
    seq = models.IntegerField(_("step"))
    kind = models.CharField(
        _("kind"),
        max_length=_max_len(StepKind),
        choices=StepKind.choices,
        default=StepKind.ACTIVITY,
    )
    name = models.CharField(_("name"), max_length=255)
    queue = models.CharField(_("queue"), max_length=100, default="default")
    status = models.CharField(
        _("status"),
        max_length=_max_len(JobStatus),
        choices=JobStatus.choices,
        default=JobStatus.READY,
    )
    attempts = models.IntegerField(_("attempts"), default=0)
    input = SealedJSONField(_("input"), null=True, blank=True)
    output = SealedJSONField(_("output"), null=True, blank=True)
    error = SealedJSONField(_("error"), null=True, blank=True)
    # When a sleep ends or a signal wait times out.
    wake_at = models.DateTimeField(_("wake at"), null=True, blank=True)
    child = models.ForeignKey(
        Job,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("child job"),
        db_index=False,  # a partial index in Meta: most steps start no child
    )
    # Set by the turn to its database clock, like started_at, so the two compare.
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        ordering = ["job", "seq"]
        indexes = [
            # Partial: only CHILD steps have one (a child's parent step is found by it).
            models.Index(
                fields=["child"],
                name="hotmesh_activity_child_idx",
                condition=Q(child__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["job", "seq"], name="hotmesh_activity_job_seq"),
            _status_check("activity", "status", JobStatus),
            _status_check("activity", "kind", StepKind),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.seq} {self.name}"


class Stream(models.Model):
    """A message on a topic queue: transient, deleted when acknowledged."""

    queue = models.CharField(_("queue"), max_length=100)
    kind = models.CharField(_("kind"), max_length=_max_len(StreamKind), choices=StreamKind.choices)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", verbose_name=_("job"))
    step = models.IntegerField(_("step"), null=True, blank=True)
    name = models.CharField(_("name"), max_length=255, default="")
    payload = SealedJSONField(_("payload"), null=True, blank=True)
    priority = models.IntegerField(_("priority"), default=0)
    # Groups messages for HOTMESH_QUEUES[...]["key_concurrency"] (e.g. a tenant).
    concurrency_key = models.CharField(_("concurrency key"), max_length=255, null=True, blank=True)
    status = models.CharField(
        _("status"),
        max_length=_max_len(StreamStatus),
        choices=StreamStatus.choices,
        default=StreamStatus.READY,
    )
    visible_at = models.DateTimeField(_("visible at"), db_default=Now())
    attempts = models.IntegerField(_("attempts"), default=0)
    worker = models.UUIDField(_("worker"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), db_default=Now())

    class Meta:
        verbose_name = _("stream message")
        verbose_name_plural = _("stream")
        indexes = [
            # The claim: ready rows of one queue, highest priority first, then FIFO.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "id",
                name="hotmesh_stream_ready_idx",
                condition=Q(status="READY"),
            ),
            # Promotion of due timers, retries and delayed starts.
            models.Index(
                fields=["visible_at"],
                name="hotmesh_stream_sched_idx",
                condition=Q(status="SCHEDULED"),
            ),
            # Concurrency limits count what runs on a queue.
            models.Index(
                fields=["queue"],
                name="hotmesh_stream_running_q_idx",
                condition=Q(status="RUNNING"),
            ),
            # Heartbeats extend, and rescue finds, leases of running messages.
            models.Index(
                fields=["worker", "lease_expires_at"],
                name="hotmesh_stream_running_idx",
                condition=Q(status="RUNNING"),
            ),
        ]
        constraints = [
            # At most one ready turn per job: completions collapse into one replay.
            models.UniqueConstraint(
                fields=["job"],
                name="hotmesh_stream_one_ready_turn",
                condition=Q(kind="TURN", status="READY"),
            ),
            _status_check("stream", "status", StreamStatus),
            _status_check("stream", "kind", StreamKind),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.status})"


class Journal(models.Model):
    """Append-only history of a job, in id order."""

    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="journal",
        verbose_name=_("job"),
        db_index=False,  # the (job, id) index serves it
    )
    step = models.IntegerField(_("step"), null=True, blank=True)
    event = models.CharField(_("event"), max_length=32, choices=JournalEvent.choices)
    name = models.CharField(_("name"), max_length=255, default="", blank=True)
    attempt = models.IntegerField(_("attempt"), null=True, blank=True)
    data = SealedJSONField(_("data"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), db_default=Now())

    class Meta:
        verbose_name = _("journal entry")
        verbose_name_plural = _("journal")
        ordering = ["job", "id"]
        indexes = [models.Index(fields=["job", "id"], name="hotmesh_journal_job_idx")]
        constraints = [_status_check("journal", "event", JournalEvent)]

    def __str__(self) -> str:
        return f"{self.job_id} {self.event} {self.name}"


class Signal(models.Model):
    """A signal sent to a job, buffered until a `wait_for_signal` step takes it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="signals", db_index=False)
    name = models.CharField(_("name"), max_length=255)
    payload = SealedJSONField(_("payload"), null=True, blank=True)
    # The step that consumed it; NULL while buffered.
    step = models.IntegerField(_("step"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), db_default=Now())

    class Meta:
        verbose_name = _("signal")
        verbose_name_plural = _("signals")
        indexes = [models.Index(fields=["job", "name", "id"], name="hotmesh_signal_job_idx")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.name}"


class Worker(models.Model):
    """A worker process's roll-call entry, touched by its heartbeat."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.CharField(_("host"), max_length=255)
    pid = models.IntegerField(_("pid"))
    queues = models.JSONField(_("queues"), default=list)
    concurrency = models.IntegerField(_("concurrency"), default=1)
    in_flight = models.IntegerField(_("in flight"), default=0)
    paused = models.BooleanField(_("paused"), default=False)
    started_at = models.DateTimeField(_("started at"), db_default=Now())
    last_seen = models.DateTimeField(_("last seen"), db_default=Now())
    # How long this worker may go without a heartbeat before the others take it for
    # dead and requeue its work: by its own lease and heartbeat settings, which may
    # differ from theirs (a rolling deploy that changes HOTMESH_LEASE_SECONDS).
    stale_seconds = models.FloatField(_("presumed gone after (s)"), default=30.0, db_default=30.0)

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["host", "pid"]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class Queue(models.Model):
    """Cluster-wide state of a queue: paused or not, and its rate-limit bucket."""

    name = models.CharField(_("name"), max_length=100, primary_key=True)
    paused = models.BooleanField(_("paused"), default=False)
    # Token bucket for HOTMESH_QUEUES[name]["rate"], refilled on each claim.
    tokens = models.FloatField(_("rate tokens"), null=True, blank=True)
    refilled_at = models.DateTimeField(_("tokens refilled at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("queue")
        verbose_name_plural = _("queues")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Schedule(models.Model):
    """A cron start of a workflow, fired once per slot by whichever worker wins."""

    name = models.CharField(_("name"), max_length=255, unique=True)
    workflow = models.CharField(_("workflow"), max_length=255)
    # Operator configuration, edited in the admin: stored plain (see README, "Payload
    # codec"). The jobs a schedule starts have their input sealed like any other.
    args = models.JSONField(_("arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)
    cron = models.CharField(_("cron expression"), max_length=255)
    timezone = models.CharField(_("timezone"), max_length=64, default="UTC")
    enabled = models.BooleanField(_("enabled"), default=True)
    # Made from a workflow's schedule= (engine/schedules.sync_declared), so it goes
    # when the code stops declaring it; a row made in the admin is the admin's.
    declared = models.BooleanField(
        _("declared in code"), default=False, db_default=False, editable=False
    )
    next_run_at = models.DateTimeField(_("next run at"), null=True, blank=True)
    last_run_at = models.DateTimeField(_("last run at"), null=True, blank=True)

    class Meta:
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """What a worker needs to fire this row: a cron expression and timezone that
        parse, a list of arguments and an object of keyword arguments. The admin form
        runs this; code that writes rows should call full_clean() too."""
        # engine.schedules imports this module.
        from hotmesh_django.engine.schedules import validate_cron, validate_timezone

        errors: dict[str, Any] = {}
        for field, validate in (("cron", validate_cron), ("timezone", validate_timezone)):
            try:
                validate(getattr(self, field))
            except ValueError as exc:
                errors[field] = str(exc)
        if not isinstance(self.args, list):
            errors["args"] = _('Arguments must be a JSON list, e.g. [1, "two"].')
        if not isinstance(self.kwargs, dict):
            errors["kwargs"] = _('Keyword arguments must be a JSON object, e.g. {"a": 1}.')
        if errors:
            raise ValidationError(errors)


class HumanTaskQuerySet(models.QuerySet["HumanTask"]):
    def transition(self, to: str, **fields: Any) -> int:
        """Move the tasks in this queryset to `to` where that move is allowed; return
        how many moved (as JobQuerySet.transition)."""
        return self.filter(status__in=task_sources_of(to)).update(
            status=to, updated_at=Now(), **fields
        )

    def open(self) -> HumanTaskQuerySet:
        return self.filter(status__in=OPEN_TASK_STATUSES)

    def in_roles_of(self, user: Any) -> HumanTaskQuerySet:
        """Tasks whose role is one of `user`'s groups; all of them for a superuser."""
        if not getattr(user, "is_active", False):
            return self.none()
        if getattr(user, "is_superuser", False):
            return self
        groups = getattr(user, "groups", None)
        if groups is None:  # a custom user model without groups
            return self.none()
        return self.filter(role__in=groups.values("name"))

    def actionable_by(self, user: Any) -> HumanTaskQuerySet:
        """Tasks `user` can act on now: open ones in their roles, and their claims."""
        mine = Q(status=HumanTaskStatus.CLAIMED, claimed_by_id=getattr(user, "pk", None))
        claimable = Q(status=HumanTaskStatus.OPEN) & (Q(due_at__isnull=True) | Q(due_at__gt=Now()))
        return self.in_roles_of(user).filter(mine | claimable)


class HumanTask(models.Model):
    """A question a workflow asks a person in a role (hm.wait_for_human).

    The workflow's step `step` waits until someone in the Django auth group `role`
    claims the task and resolves it with an answer, which the step then returns.
    """

    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="human_tasks",
        verbose_name=_("job"),
        db_index=False,  # the (job, step) unique index serves lookups by job
    )
    step = models.IntegerField(_("step"))
    # The name of the django.contrib.auth Group whose members may act on it.
    role = models.CharField(_("role"), max_length=150)
    # Sealed like every other user value: the data a workflow hands a person and
    # their answer are as private as the job's arguments and result.
    data = SealedJSONField(_("data"), null=True, blank=True)
    answer = SealedJSONField(_("answer"), null=True, blank=True)
    status = models.CharField(
        _("status"),
        max_length=_max_len(HumanTaskStatus),
        choices=HumanTaskStatus.choices,
        default=HumanTaskStatus.OPEN,
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("claimed by"),
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("resolved by"),
    )
    created_at = models.DateTimeField(_("created at"), db_default=Now())
    updated_at = models.DateTimeField(_("updated at"), db_default=Now())
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    # When the workflow stops waiting (HumanTaskTimeout); NULL: it waits for ever.
    due_at = models.DateTimeField(_("due at"), null=True, blank=True)

    objects = HumanTaskQuerySet.as_manager()

    class Meta:
        verbose_name = _("human task")
        verbose_name_plural = _("human tasks")
        ordering = ["-id"]
        indexes = [
            # The inbox: open tasks of a person's roles, oldest first.
            models.Index(
                fields=["role", "id"],
                name="hotmesh_task_open_role_idx",
                condition=Q(status__in=["OPEN", "CLAIMED"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="hotmesh_task_job_step"),
            _status_check("humantask", "status", HumanTaskStatus),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.role} ({self.status})"
