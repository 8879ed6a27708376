"""The admin's operations console: guarded actions, diagnosis, the queues page.

`JobOperationsMixin` gives the Job admin its buttons (custom URLs, POST + CSRF), its
bulk actions and the queues page. Every operation calls the same guarded engine
function the Python API uses (`hotmesh_django.engine.control`) and reports, with
`message_user`, what moved and what was skipped and why, as `delete_selected` does.

Operating needs the `hotmesh_django.change_job` permission: the admin itself never
edits a job, so that permission means "may operate jobs", and a staff user holding
only `view_job` sees everything but can change nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    QuerySet,
    Value,
)
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from hotmesh_django.conf import settings
from hotmesh_django.engine import control
from hotmesh_django.engine import queues as queue_control
from hotmesh_django.exceptions import JobFinishedError, JobNotFound, NotAWorkflow, StepRunning
from hotmesh_django.forms import RerunForm, SignalForm
from hotmesh_django.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Activity,
    HumanTask,
    Job,
    JobStatus,
    Queue,
    Signal,
    StepKind,
    Stream,
    StreamKind,
    StreamStatus,
    Worker,
)
from hotmesh_django.redaction import redact
from hotmesh_django.serialization import Unreadable
from hotmesh_django.timeline import human_duration

if TYPE_CHECKING:
    from django.urls import URLPattern

logger = logging.getLogger(__name__)

# A bulk action works through at most this many jobs per click, so "select all" on a
# million-row table cannot hold a request open for an hour.
MAX_BULK = 1000

# -- presentation helpers --------------------------------------------------------------


def status_badge(status: str, label: str | None = None) -> SafeString:
    return format_html('<span class="hm-badge hm-{}">{}</span>', status.lower(), label or status)


def pretty_json(value: Any, *, limit: int = 100_000) -> SafeString:
    """Return `value` as indented JSON in a <pre>, escaped and cut at `limit` characters."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return format_html('<pre class="hm-json">{}</pre>', text)


def shown_json(value: Any) -> SafeString:
    """Return a stored value as the admin shows it: unsealed, secrets masked, pretty
    and escaped. A value this process cannot unseal says so instead."""
    if isinstance(value, Unreadable):
        text = _("Cannot decode this value: %(error)s") % {"error": value.error}
        return format_html('<pre class="hm-json hm-unreadable">{}</pre>', text)
    try:
        return pretty_json(redact(value))
    except RecursionError:  # a hand-written value nested past Python's limit
        text = _("This value is nested too deeply to show.")
        return format_html('<pre class="hm-json hm-unreadable">{}</pre>', text)


def shown_error(error: Any) -> dict[str, Any]:
    """Return a stored error dict ({"type", "message", "traceback"}) for display, with
    secrets masked; a stand-in when it cannot be unsealed."""
    if isinstance(error, Unreadable):
        return {
            "type": _("(unreadable)"),
            "message": _("Cannot decode this value: %(error)s") % {"error": error.error},
        }
    if not isinstance(error, dict):
        return {}
    shown: dict[str, Any] = redact(error)
    return shown


def job_url(job_id: int) -> str:
    return reverse("admin:hotmesh_django_job_change", args=[job_id])


def is_live(worker: Worker, now: datetime.datetime) -> bool:
    """Whether `worker` was seen within its own bound (Worker.stale_seconds): the
    workers the rescue leaves alone, whatever this process's settings say."""
    return worker.last_seen >= now - datetime.timedelta(seconds=worker.stale_seconds)


def live_workers(now: datetime.datetime) -> QuerySet[Worker]:
    """The workers is_live() at `now`, filtered in SQL."""
    bound = ExpressionWrapper(
        F("stale_seconds") * Value(datetime.timedelta(seconds=1)), output_field=DurationField()
    )
    return Worker.objects.filter(last_seen__gte=Value(now) - bound)


def serves(worker: Worker, queue: str) -> bool:
    queues = worker.queues or []
    return "*" in queues or queue in queues


# -- "why is this job not running?" ------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reason:
    html: SafeString
    level: str = "info"  # "info" or "warning"


def _info(template: str, *args: Any) -> Reason:
    return Reason(html=format_html(template, *args))


def _warn(template: str, *args: Any) -> Reason:
    return Reason(level="warning", html=format_html(template, *args))


def _when(moment: datetime.datetime | None, now: datetime.datetime) -> SafeString:
    if moment is None:
        return format_html("{}", "—")
    delta = (moment - now).total_seconds()
    ago = _("in %s") % human_duration(delta) if delta >= 0 else _("%s ago") % human_duration(-delta)
    local = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")
    iso = moment.isoformat()
    return format_html('<time datetime="{}" title="{}">{}</time> ({})', iso, iso, local, ago)


def _cap(html: SafeString) -> SafeString:
    """Capitalize safe markup that starts with a letter (capfirst drops the safe mark)."""
    return mark_safe(html[:1].upper() + html[1:])  # noqa: S308 - a letter, then safe text


def _step_name(step: int | None, name: str) -> SafeString:
    if step is None:
        return format_html("<code>{}</code>", name)
    return format_html("step {} <code>{}</code>", step, name)


def diagnose(job: Job, now: datetime.datetime | None = None) -> list[Reason]:
    """Explain, from the queue's and the steps' rows, what the job is waiting for."""
    now = now or timezone.now()
    if job.status in FINISHED_STATUSES:
        return []
    reasons: list[Reason] = []
    workers = list(live_workers(now))
    messages_ = list(Stream.objects.filter(job=job).order_by("id"))
    open_steps = {s.seq: s for s in Activity.objects.filter(job=job, status__in=ACTIVE_STATUSES)}
    for message in messages_:
        if message.kind == StreamKind.TIMER and message.step in open_steps:
            continue  # a sleep's or a signal wait's timer: described with its step
        reasons.extend(_message_reasons(job, message, workers, now))
    for step in open_steps.values():
        reasons.extend(_step_reasons(step, messages_, now))
    reasons.extend(_children_reasons(job))
    for signal in Signal.objects.filter(job=job, step__isnull=True).order_by("id")[:10]:
        reasons.append(
            _info(
                "Signal <code>{}</code> arrived {} and is buffered until a step waits for it.",
                signal.name,
                _when(signal.created_at, now),
            )
        )
    waits = any(
        s.kind in (StepKind.SIGNAL, StepKind.CHILD, StepKind.HUMAN) for s in open_steps.values()
    )
    if not messages_ and not waits:
        text = _(
            "Nothing is queued for this job and it waits for no signal or child: no worker "
            "will pick it up. Cancel it, or re-run it from a step."
        )
        reasons.append(_warn("{}", text))
    return reasons


def _message_reasons(
    job: Job, message: Stream, workers: list[Worker], now: datetime.datetime
) -> list[Reason]:
    if message.step is not None:
        what = _step_name(message.step, message.name)
    else:
        what = format_html("{}", _("the workflow's next turn"))
    if message.status == StreamStatus.SCHEDULED:
        return [_scheduled_reason(job, message, what, now)]
    if message.status == StreamStatus.RUNNING:
        return _running_reasons(message, what, workers, now)
    return _ready_reasons(message, what, workers, now)


def _scheduled_reason(
    job: Job, message: Stream, what: SafeString, now: datetime.datetime
) -> Reason:
    error = shown_error(job.error)
    at = _when(message.visible_at, now)
    if message.step is None and error.get("type") == "UnknownWorkflow":
        return _warn("Parked: {}. It looks again {}.", error.get("message", ""), at)
    deadline = job.deadline_at
    if (
        message.step is None
        and deadline
        and abs((message.visible_at - deadline).total_seconds()) < 1
    ):
        return _info("Deadline: the workflow fails with WorkflowTimeout if still running {}.", at)
    if message.step is None:
        return _info("Scheduled for {}: a delayed start or a timer.", at)
    if message.kind in (StreamKind.STEP, StreamKind.TASK):
        attempt = message.attempts or "?"
        return _info("Retry of {} scheduled for {}, after attempt {} failed.", what, at, attempt)
    return _info("{} scheduled for {}.", _cap(what), at)


def _running_reasons(
    message: Stream, what: SafeString, workers: list[Worker], now: datetime.datetime
) -> list[Reason]:
    worker = Worker.objects.filter(id=message.worker).first() if message.worker else None
    name = str(worker) if worker else str(message.worker)
    lease = message.lease_expires_at
    reasons = [
        _info(
            "{} is running: lease held by worker <code>{}</code> until {} "
            "(claimed {}, attempt {}).",
            _cap(what),
            name,
            _when(lease, now),
            _when(message.claimed_at, now),
            message.attempts,
        )
    ]
    if lease is not None and lease < now:
        reasons.append(
            _warn("The lease expired {}: the next rescue pass re-queues it.", _when(lease, now))
        )
    if worker is None or worker.id not in {w.id for w in workers}:
        seen = _when(worker.last_seen, now) if worker else format_html("{}", _("never"))
        reasons.append(_warn("Worker <code>{}</code> is stale (last heartbeat {}).", name, seen))
    return reasons


def _ready_reasons(
    message: Stream, what: SafeString, workers: list[Worker], now: datetime.datetime
) -> list[Reason]:
    queue = message.queue
    earlier = Q(priority__gt=message.priority) | Q(priority=message.priority, id__lt=message.id)
    ahead = Stream.objects.filter(earlier, queue=queue, status=StreamStatus.READY).count()
    reasons = [
        _info(
            "{} is ready in queue <code>{}</code> since {}: {} ahead of it.",
            _cap(what),
            queue,
            _when(message.visible_at, now),
            ngettext("%(n)d item", "%(n)d items", ahead) % {"n": ahead},
        )
    ]
    state = Queue.objects.filter(name=queue).first()
    if state is not None and state.paused:
        reasons.append(
            _warn(
                "Queue <code>{}</code> is paused (since {}): no worker claims from it. Resume "
                "it on the Queues page or with <code>manage.py hotmesh_ctl resume {}</code>.",
                queue,
                _when(state.updated_at, now),
                queue,
            )
        )
    reasons.extend(_limit_reasons(queue, state, now))
    serving = [w for w in workers if serves(w, queue)]
    active = [w for w in serving if not w.paused]
    if not serving:
        reasons.append(
            _warn(
                "No live worker serves queue <code>{}</code>. Start one with "
                "<code>manage.py hotmesh_worker --queues {}</code>.",
                queue,
                queue,
            )
        )
    elif not active:
        reasons.append(
            _warn(
                "Every worker serving queue <code>{}</code> is stopping: each finishes "
                "what it holds and claims nothing more.",
                queue,
            )
        )
    elif sum(w.in_flight for w in active) >= sum(w.concurrency for w in active):
        slots = sum(w.concurrency for w in active)
        reasons.append(
            _warn("All {} worker slots serving queue <code>{}</code> are busy.", slots, queue)
        )
    return reasons


def _limit_reasons(queue: str, state: Queue | None, now: datetime.datetime) -> list[Reason]:
    """Say whether HOTMESH_QUEUES's concurrency or rate limit holds the queue back."""
    try:
        limits = queue_control.limits_for(queue)
    except ValueError:
        return []  # a bad setting; the hotmesh.E008 system check reports it
    if limits is None:
        return []
    reasons = []
    if limits.concurrency is not None:
        running = Stream.objects.filter(queue=queue, status=StreamStatus.RUNNING).count()
        if running >= limits.concurrency:
            reasons.append(
                _warn(
                    "Concurrency limit reached on queue <code>{}</code>: {} of {} running.",
                    queue,
                    running,
                    limits.concurrency,
                )
            )
    rate = limits.rate
    if rate is not None and state is not None and state.tokens is not None:
        elapsed = (now - state.refilled_at).total_seconds() if state.refilled_at else 0.0
        tokens = min(float(rate.count), state.tokens + max(0.0, elapsed) * rate.per_second)
        if tokens < 1:
            reasons.append(
                _warn(
                    "Rate limit reached on queue <code>{}</code> ({}): the next start is "
                    "allowed in about {}.",
                    queue,
                    (settings.queues.get(queue) or {}).get("rate"),
                    human_duration((1 - tokens) / rate.per_second),
                )
            )
    return reasons


def _step_reasons(step: Activity, messages_: list[Stream], now: datetime.datetime) -> list[Reason]:
    if step.kind == StepKind.SIGNAL:
        timeout = format_html("; it times out {}", _when(step.wake_at, now)) if step.wake_at else ""
        since = _when(step.created_at, now)
        template = "Waiting for signal <code>{}</code> since {} (step {}){}."
        return [_info(template, step.name, since, step.seq, timeout)]
    if step.kind == StepKind.SLEEP:
        return [_info("Sleeping until {} (step {}).", _when(step.wake_at, now), step.seq)]
    if step.kind == StepKind.HUMAN:
        return [_human_reason(step, now)]
    if step.kind == StepKind.ACTIVITY and not any(m.step == step.seq for m in messages_):
        what = _cap(_step_name(step.seq, step.name))
        return [_warn("{} is {} but no message is queued for it.", what, step.status)]
    return []


def _human_reason(step: Activity, now: datetime.datetime) -> Reason:
    timeout = format_html("; it times out {}", _when(step.wake_at, now)) if step.wake_at else ""
    task = HumanTask.objects.filter(job_id=step.job_id, step=step.seq).first()
    if task is None:
        return _warn(
            "Waiting for role <code>{}</code> (step {}), but its task is missing.",
            step.name,
            step.seq,
        )
    url = reverse("admin:hotmesh_django_humantask_change", args=[task.pk])
    holder = (
        format_html(", claimed by <code>{}</code>", task.claimed_by) if task.claimed_by_id else ""
    )
    return _info(
        "Waiting for a person in role <code>{}</code> since {} (step {}): "
        '<a href="{}">task {}</a> is {}{}{}.',
        step.name,
        _when(step.created_at, now),
        step.seq,
        url,
        task.pk,
        task.status,
        holder,
        timeout,
    )


def _children_reasons(job: Job) -> list[Reason]:
    active = Job.objects.filter(parent=job, status__in=ACTIVE_STATUSES).order_by("id")
    count = active.count()
    if not count:
        return []
    first = ((job_url(c.pk), c.workflow_id, c.status) for c in active[:5])
    links = format_html_join(", ", '<a href="{}">{}</a> ({})', first)
    more = format_html(" and {} more", count - 5) if count > 5 else ""
    children = ngettext("%(n)d child workflow", "%(n)d child workflows", count) % {"n": count}
    return [_info("Waiting for {}: {}{}.", children, links, more)]


# -- queues page ---------------------------------------------------------------------------


def queue_stats(now: datetime.datetime) -> list[dict[str, Any]]:
    """Return per-queue depths, job counts, oldest ready age and recent throughput."""
    rows: dict[str, dict[str, Any]] = {}

    def row(queue: str) -> dict[str, Any]:
        return rows.setdefault(
            queue,
            {
                "queue": queue,
                "stream": Counter(),
                "jobs": Counter(),
                "finished": Counter(),
                "oldest_ready": None,
                "workers": 0,
                "slots": 0,
                "in_flight": 0,
                "limits": settings.queues.get(queue) or {},
                "state": None,
            },
        )

    for depth in (
        Stream.objects.values("queue", "status")
        .annotate(n=Count("id"), oldest=Min("visible_at"))
        .order_by()
    ):
        r = row(depth["queue"])
        r["stream"][depth["status"]] = depth["n"]
        if depth["status"] == StreamStatus.READY:
            r["oldest_ready"] = now - depth["oldest"]
    # Active and failed jobs only: counting finished ones would read the whole table.
    for item in (
        Job.objects.filter(status__in=[*ACTIVE_STATUSES, JobStatus.FAILED])
        .values("queue", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        row(item["queue"])["jobs"][item["status"]] = item["n"]
    # Throughput is work the workers did: a bulk cancel of queued jobs is not.
    for item in (
        Job.objects.filter(
            finished_at__gte=now - datetime.timedelta(minutes=5),
            status__in=[JobStatus.SUCCESSFUL, JobStatus.FAILED],
        )
        .values("queue", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        row(item["queue"])["finished"][item["status"]] = item["n"]
    workers = list(live_workers(now))
    for queue in settings.queues:
        row(queue)
    for state in Queue.objects.all():
        row(state.name)["state"] = state
    for worker in workers:
        for queue in worker.queues or []:
            if queue != "*":
                row(queue)
    for r in rows.values():
        serving = [w for w in workers if serves(w, r["queue"])]
        r["workers"] = len(serving)
        r["queue_paused"] = bool(r["state"] and r["state"].paused)
        r["slots"] = sum(w.concurrency for w in serving)
        r["in_flight"] = sum(w.in_flight for w in serving)
        r["finished_total"] = sum(r["finished"].values())
        r["per_minute"] = r["finished_total"] / 5
        r["oldest_ready_text"] = (
            human_duration(r["oldest_ready"].total_seconds()) if r["oldest_ready"] else "—"
        )
    return sorted(rows.values(), key=lambda r: r["queue"])


# -- operations --------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Outcome:
    moved: int = 0
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    truncated: int = 0
    # Jobs that moved along with the chosen ones (a cancelled parent's children).
    with_children: int = 0

    def message(self, verb: str) -> str:
        """Say what moved and what was skipped, e.g. '2 jobs re-queued; 1 skipped (…)'."""
        text = ngettext("%(n)d job %(verb)s", "%(n)d jobs %(verb)s", self.moved) % {
            "n": self.moved,
            "verb": verb,
        }
        if self.with_children:
            text += " " + ngettext(
                "(and %(n)d child job with them)",
                "(and %(n)d child jobs with them)",
                self.with_children,
            ) % {"n": self.with_children}
        total = sum(self.skipped.values())
        if total:
            if len(self.skipped) == 1:
                reasons = next(iter(self.skipped))
            else:
                reasons = "; ".join(f"{n} {why}" for why, n in self.skipped.most_common())
            text += "; " + _("%(n)d skipped (%(why)s)") % {"n": total, "why": reasons}
        if self.truncated:
            text += "; " + _(
                "only the first %(max)d selected were processed, %(left)d left: "
                "run the action again for the rest"
            ) % {"max": MAX_BULK, "left": self.truncated}
        return text + "."

    @property
    def level(self) -> int:
        if not self.skipped and not self.truncated:
            return messages.SUCCESS
        return messages.WARNING if self.moved else messages.ERROR


# An operation takes a workflow_id and the actor, and returns None when the job moved,
# the reason it was skipped, or how many jobs moved when it moved others with it (a
# cancel takes the job's active children along).
Operation = Callable[[str, str], "str | int | None"]


def _status_of(workflow_id: str) -> str:
    status = Job.objects.filter(workflow_id=workflow_id).values_list("status", flat=True).first()
    return status or "deleted"


def op_retry(workflow_id: str, actor: str) -> str | None:
    if control.retry_job(workflow_id, actor=actor):
        return None
    return _("not FAILED: it is %(status)s") % {"status": _status_of(workflow_id)}


def op_cancel(workflow_id: str, actor: str) -> str | int | None:
    cancelled = control.cancel_tree(workflow_id, actor=actor)
    if cancelled:
        return cancelled
    return _("already finished: %(status)s") % {"status": _status_of(workflow_id)}


def op_signal(name: str, payload: Any) -> Operation:
    def send(workflow_id: str, actor: str) -> str | None:
        try:
            control.send_signal(workflow_id, name, payload, actor=actor)
        except JobFinishedError:
            return _("finished: %(status)s") % {"status": _status_of(workflow_id)}
        except NotAWorkflow:
            return _("an activity job takes no signals")
        return None

    return send


def op_rerun(step: int) -> Operation:
    def rerun(workflow_id: str, actor: str) -> str | None:
        try:
            if control.rerun_from_step(workflow_id, step, actor=actor):
                return None
        except ValueError:
            return _("no step %(step)d") % {"step": step}
        except StepRunning:
            return _("a step from %(step)d on is running") % {"step": step}
        status = _status_of(workflow_id)
        if status == JobStatus.READY:
            return _("already queued: READY")
        return _("final: %(status)s") % {"status": status}

    return rerun


def apply(workflow_ids: Iterable[str], operation: Operation, actor: str) -> Outcome:
    """Run `operation` on each job, each in its own guarded transaction."""
    outcome = Outcome()
    for workflow_id in workflow_ids:
        try:
            reason = operation(workflow_id, actor)
        except JobNotFound:
            reason = _("no longer exists")
        if reason is None or isinstance(reason, int):
            outcome.moved += 1
            outcome.with_children += (reason or 1) - 1
        else:
            outcome.skipped[reason] += 1
    return outcome


def selected_ids(queryset: QuerySet[Job]) -> tuple[list[str], int]:
    """Return up to MAX_BULK workflow_ids of the selection and how many were left out."""
    ids = list(queryset.order_by("id").values_list("workflow_id", flat=True)[: MAX_BULK + 1])
    if len(ids) <= MAX_BULK:
        return ids, 0
    return ids[:MAX_BULK], queryset.count() - MAX_BULK


class JobOperationsMixin:
    """Buttons, bulk actions and the queues page of the Job admin."""

    admin_site: admin.AdminSite
    model: type[Job]
    opts: Any
    message_user: Callable[..., None]
    get_object: Callable[..., Job | None]
    get_actions: Callable[..., Any]
    has_view_permission: Callable[..., bool]
    log_change: Callable[..., Any]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May this user run actions? The admin never edits a job, so change = operate."""
        return bool(request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}"))

    def operation_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        urls = [
            path("queues/", wrap(self.queues_view), name=f"{prefix}_queues"),
            path("queues/pause/", wrap(self.pause_queue_view), name=f"{prefix}_pause_queue"),
            path("queues/resume/", wrap(self.resume_queue_view), name=f"{prefix}_resume_queue"),
        ]
        for name, view in (
            ("retry", self.retry_view),
            ("cancel", self.cancel_view),
            ("signal", self.signal_view),
            ("rerun", self.rerun_view),
        ):
            urls.append(path(f"<path:object_id>/{name}/", wrap(view), name=f"{prefix}_{name}"))
        return urls

    # -- single-job views -----------------------------------------------------------------

    def _operable(self, request: HttpRequest, object_id: str) -> Job:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(_("No job has id %(id)s.") % {"id": object_id})
        return job

    def _done(self, request: HttpRequest, job: Job, outcome: Outcome, verb: str) -> HttpResponse:
        self.message_user(request, outcome.message(verb), outcome.level)
        return HttpResponseRedirect(job_url(job.pk))

    def _actor(self, request: HttpRequest) -> str:
        return str(request.user.get_username())

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._retry)(request, object_id)

    def _retry(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable(request, object_id)
        outcome = apply([job.workflow_id], op_retry, self._actor(request))
        return self._done(request, job, outcome, _("re-queued"))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._cancel)(request, object_id)

    def _cancel(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable(request, object_id)
        outcome = apply([job.workflow_id], op_cancel, self._actor(request))
        return self._done(request, job, outcome, _("cancelled"))

    def rerun_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._rerun)(request, object_id)

    def _rerun(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable(request, object_id)
        form = RerunForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(str(e) for e in form.errors.get("step", []))
            self.message_user(
                request, _("Not re-run: %(errors)s") % {"errors": errors}, messages.ERROR
            )
            return HttpResponseRedirect(job_url(job.pk))
        step = form.cleaned_data["step"]
        outcome = apply([job.workflow_id], op_rerun(step), self._actor(request))
        return self._done(request, job, outcome, _("re-run from step %(step)d") % {"step": step})

    def signal_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET shows the form; POST validates it and sends the signal."""
        job = self._operable(request, object_id)
        if request.method == "POST":
            form = SignalForm(request.POST)
            if form.is_valid():
                name, payload = form.cleaned_data["name"], form.cleaned_data["payload"]
                outcome = apply([job.workflow_id], op_signal(name, payload), self._actor(request))
                return self._done(request, job, outcome, _("sent signal %(name)s") % {"name": name})
        else:
            form = SignalForm()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": job,
            "form": form,
            "title": _("Send a signal to %(job)s") % {"job": job.workflow_id},
            "action_url": reverse("admin:hotmesh_django_job_signal", args=[job.pk]),
            "targets": [job],
            "has_view_permission": self.has_view_permission(request, job),
            "submit_label": _("Send signal"),
            "media": self.media,  # type: ignore[attr-defined]
        }
        return TemplateResponse(
            request,
            "admin/hotmesh_django/job/operation_form.html",
            context,
            status=400 if form.errors else 200,
        )

    # -- bulk actions ---------------------------------------------------------------------

    def _bulk(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        operation: Operation,
        verb: str,
        *,
        newest_first: bool = False,
    ) -> None:
        ids, left = selected_ids(queryset)
        if newest_first:
            ids.reverse()
        outcome = apply(ids, operation, self._actor(request))
        outcome.truncated = left
        self.message_user(request, outcome.message(verb), outcome.level)

    @admin.action(description=_("Retry selected failed jobs"), permissions=["operate"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk(request, queryset, op_retry, _("re-queued"))

    @admin.action(description=_("Cancel selected jobs"), permissions=["operate"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        # Newest first: a child (started after its parent) is then cancelled before
        # the parent's cancel takes it along, so it is not reported as skipped.
        self._bulk(request, queryset, op_cancel, _("cancelled"), newest_first=True)

    @admin.action(description=_("Send a signal to selected jobs…"), permissions=["operate"])
    def send_signal(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        form = SignalForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            name, payload = form.cleaned_data["name"], form.cleaned_data["payload"]
            self._bulk(
                request,
                queryset,
                op_signal(name, payload),
                _("sent signal %(name)s") % {"name": name},
            )
            return None
        return self._intermediate(
            request,
            queryset,
            form,
            "send_signal",
            _("Send a signal to these jobs"),
            _("Send signal"),
        )

    @admin.action(description=_("Re-run selected jobs from a step…"), permissions=["operate"])
    def rerun_from_step(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        form = RerunForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            step = form.cleaned_data["step"]
            self._bulk(
                request, queryset, op_rerun(step), _("re-run from step %(step)d") % {"step": step}
            )
            return None
        return self._intermediate(
            request,
            queryset,
            form,
            "rerun_from_step",
            _("Re-run these jobs from a step"),
            _("Re-run"),
        )

    def _intermediate(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        form: Any,
        action: str,
        title: str,
        submit: str,
    ) -> HttpResponse:
        select_across = request.POST.get("select_across") == "1"
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        targets = list(queryset.order_by("id")[:50])
        total = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": title,
            "targets": targets,
            "total": total,
            "more": total - len(targets),
            "max_bulk": MAX_BULK,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            # "Select all N" re-selects by the changelist's filters (the form posts back
            # to the same URL), so it sends back one id, which Django needs to see an
            # action at all, not thousands: they would pass
            # DATA_UPLOAD_MAX_NUMBER_FIELDS and the post would be refused with a 400.
            "selected": selected[:1] if select_across else selected,
            "submit_label": submit,
            "select_across": select_across,
            "has_view_permission": True,
            "media": self.media,  # type: ignore[attr-defined]
        }
        return TemplateResponse(
            request,
            "admin/hotmesh_django/job/operation_form.html",
            context,
            status=400 if form.errors else 200,
        )

    # -- queues page ----------------------------------------------------------------------

    def queues_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Queues"),
            "queues": queue_stats(now),
            "now": now,
            "statuses": [JobStatus.READY, JobStatus.RUNNING, JobStatus.WAITING, JobStatus.FAILED],
            "workers_url": reverse("admin:hotmesh_django_worker_changelist"),
            "can_operate": self.has_operate_permission(request),
            "jobs_url": reverse("admin:hotmesh_django_job_changelist"),
            "media": self.media,  # type: ignore[attr-defined]
        }
        return TemplateResponse(request, "admin/hotmesh_django/queues.html", context)

    def pause_queue_view(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._set_paused)(request, paused=True)

    def resume_queue_view(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._set_paused)(request, paused=False)

    def _set_paused(self, request: HttpRequest, *, paused: bool) -> HttpResponse:
        """Pause or resume the queue named in the POST, on every worker."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        name = request.POST.get("queue", "")
        verb = _("paused") if paused else _("resumed")
        try:
            changed = queue_control.set_paused(name, paused, actor=request.user.get_username())
        except (queue_control.UnknownQueue, ValueError) as exc:
            # ValueError: what cannot name a queue (empty, too long), from a hand-made
            # POST; the queue pages only post names they list.
            self.message_user(request, str(exc), messages.ERROR)
        else:
            if changed:
                # A queue is not a job, so it has no journal: the admin's own log
                # (LogEntry, "Recent actions") records who paused it and when.
                queue = Queue.objects.get(name=name)
                self.log_change(request, queue, "Paused." if paused else "Resumed.")
                self.message_user(
                    request,
                    _("Queue %(queue)s %(verb)s.") % {"queue": name, "verb": verb},
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    _("Queue %(queue)s was already %(verb)s.") % {"queue": name, "verb": verb},
                    messages.WARNING,
                )
        return HttpResponseRedirect(reverse("admin:hotmesh_django_job_queues"))
